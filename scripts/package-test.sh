#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# package-test.sh: the packaging test. On a Debian machine, as root:
#   1. installs the packaging tools and build dependencies that are missing
#      (apt-get; they stay installed, like scripts/setup.sh's),
#   2. copies this tree (tracked and untracked, not ignored, files) to a
#      scratch directory and makes the release tarball there (make dist),
#      which proves the tarball is complete; or takes the tarball given,
#   3. builds kinlake + kinlake-dev with dpkg-buildpackage -b (deb/ as
#      debian/) and kinlake + kinlake-devel with rpmbuild -tb, from that
#      tarball,
#   4. inspects them: lintian (errors fail, and so does any warning that
#      deb/README does not justify), contents (dpkg-deb -c, rpm -qlp),
#      conffiles, computed dependencies, RPM scriptlets, versions,
#   5. installs the .debs and checks the installed system: versions, user,
#      directories and modes, check-config (78 on the pristine config, 0 on
#      a filled-in copy), plugin list, the example plugin built out of tree
#      with pkg-config and run by plugin test (by path, then by name from
#      /usr/lib/kinlake/plugins), the units (systemd-analyze verify and
#      security), and the maintainer scripts' decisions (start only with a
#      config that passes check-config; stop on removal) run in a private
#      mount namespace against stand-in systemctl tools,
#   6. purges the packages and checks that nothing of kinlake is left but
#      the kinlake user and group (Debian policy keeps them; this script then
#      removes them again if it created them).
# Whatever happens, it leaves no kinlake package installed. It refuses to
# start when kinlake is installed already. It takes about 1.5 minutes on 2
# cores, plus the apt-get installs of a first run (lintian, rpm, debhelper).
#
# Usage: scripts/package-test.sh [kinlake-VERSION.tar.gz]
# KL_PKG_KEEP=1 keeps the scratch directory (it is kept anyway on failure).
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
start=$(date +%s)
jobs=2
tarball_arg=${1:-}

step() { printf '\n=== package-test: %s (%ds)\n' "$*" $(( $(date +%s) - start )); }
die() { echo "package-test: FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

# Every path on the system named like kinlake (the purge check compares two).
scan_kinlake() {
	find /etc /usr /lib /var /opt /srv -xdev \
		\( -path /var/cache -o -path /var/tmp -o -path /var/log \) -prune -o \
		-name '*kinlake*' -print 2>/dev/null | sort
}
pkg_state() { dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true; }
is_present() { case $(pkg_state "$1") in "" | not-installed) return 1 ;; *) return 0 ;; esac; }

[ "$(id -u)" = 0 ] || die "run as root: it installs and purges the kinlake packages"
command -v apt-get >/dev/null 2>&1 || die "needs a Debian machine (apt-get)"
for p in kinlake kinlake-dev; do
	if is_present "$p"; then
		die "$p is on this machine already ($(pkg_state "$p")); not touching it: purge it first"
	fi
done
if [ -n "$tarball_arg" ]; then
	[ -f "$tarball_arg" ] || die "no such tarball: $tarball_arg"
	tarball_arg=$(cd "$(dirname "$tarball_arg")" && pwd)/$(basename "$tarball_arg")
fi

work=$(mktemp -d /tmp/kinlake-package-test.XXXXXX)
chmod 0755 "$work"
touched_packages=0
user_existed=0
getent passwd kinlake >/dev/null && user_existed=1
group_existed=0
getent group kinlake >/dev/null && group_existed=1

cleanup() {
	local rc=$?
	set +e
	if [ "$touched_packages" = 1 ]; then
		for p in kinlake-dev kinlake; do
			if is_present "$p"; then
				echo "package-test: purging $p"
				dpkg --purge "$p" >/dev/null
			fi
		done
		rm -f /usr/lib/kinlake/plugins/example.so
		# What a failed purge left: paths named kinlake that appeared
		# since the install (the scan before it is the reference).
		if [ -f "$work/before.list" ]; then
			scan_kinlake | comm -13 "$work/before.list" - | sort -r |
				while IFS= read -r left; do
					echo "package-test: removing leftover $left"
					rm -rf -- "$left"
				done
		fi
		if [ "$user_existed" = 0 ] && getent passwd kinlake >/dev/null; then
			userdel kinlake
		fi
		if [ "$group_existed" = 0 ] && getent group kinlake >/dev/null; then
			groupdel kinlake
		fi
	fi
	if [ "$rc" = 0 ] && [ "${KL_PKG_KEEP:-0}" != 1 ]; then
		rm -rf "$work"
	else
		echo "package-test: scratch directory kept: $work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Prints the last lines of a build log and fails.
log_fail() {
	echo "----- last lines of $1"
	tail -n 60 "$1"
	die "$2"
}

missing_debs() {
	local p out=""
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			out="$out $p"
	done
	echo "$out"
}

apt_updated=0
apt_install() {
	export DEBIAN_FRONTEND=noninteractive
	if [ "$apt_updated" = 0 ]; then
		apt-get update -qq
		apt_updated=1
	fi
	apt-get install -y -qq --no-install-recommends "$@" >"$work/apt.log" 2>&1 ||
		log_fail "$work/apt.log" "apt-get install $*"
}

step "tools"
tools="dpkg-dev debhelper lintian rpm systemd man-db pkg-config make gcc
	autoconf automake libtool git xz-utils util-linux passwd"
# shellcheck disable=SC2086
missing=$(missing_debs $tools)
if [ -n "$missing" ]; then
	echo "package-test: installing:$missing"
	# shellcheck disable=SC2086
	apt_install $missing
fi
# The build dependencies, read from deb/control (tests are not run in the
# package builds: scripts/test.sh runs them).
export DEB_BUILD_PROFILES=nocheck
unmet=$(dpkg-checkbuilddeps "$top/deb/control" 2>&1 | sed -n 's/.*Unmet build dependencies: //p' |
	sed -e 's/([^)]*)//g' -e 's/\[[^]]*\]//g' -e 's/<[^>]*>//g' -e 's/|[^,]*//g' | tr -d ',' || true)
if [ -n "$unmet" ]; then
	echo "package-test: installing build dependencies: $unmet"
	# shellcheck disable=SC2086
	apt_install $unmet
fi
dpkg-checkbuilddeps "$top/deb/control" || die "build dependencies still unmet"
ok "tools and build dependencies present"

step "release tarball"
if [ -n "$tarball_arg" ]; then
	tarball=$tarball_arg
else
	command -v git >/dev/null 2>&1 && git -C "$top" rev-parse --git-dir >/dev/null 2>&1 ||
		die "$top is not a git checkout: pass a tarball made by 'make dist'"
	mkdir "$work/src" "$work/dist"
	(cd "$top" && git ls-files -z --cached --others --exclude-standard) |
		while IFS= read -r -d '' f; do
			[ -e "$top/$f" ] && printf '%s\0' "$f"
		done | tar -C "$top" --null -T - -cf - | tar -C "$work/src" -xf -
	(cd "$work/src" && autoreconf -fi) >"$work/autoreconf.log" 2>&1 ||
		log_fail "$work/autoreconf.log" "autoreconf"
	(cd "$work/dist" && ../src/configure) >"$work/configure.log" 2>&1 ||
		log_fail "$work/configure.log" "configure"
	make -C "$work/dist" dist >"$work/dist.log" 2>&1 || log_fail "$work/dist.log" "make dist"
	tarball=$(ls "$work"/dist/kinlake-*.tar.gz)
fi
version=$(basename "$tarball" .tar.gz)
version=${version#kinlake-}
src_version=$(tar -xOzf "$tarball" "kinlake-$version/configure.ac" |
	sed -n 's/^AC_INIT(\[kinlake\], *\[\([^]]*\)\].*/\1/p')
[ "$src_version" = "$version" ] ||
	die "tarball $(basename "$tarball") holds AC_INIT version '$src_version'"
ok "$(basename "$tarball") ($(du -k "$tarball" | cut -f1) KiB), version $version"

step "build the .debs (dpkg-buildpackage -us -uc -b)"
mkdir "$work/deb"
tar -C "$work/deb" -xzf "$tarball"
debsrc=$work/deb/kinlake-$version
cp -a "$debsrc/deb" "$debsrc/debian"
rm -f "$debsrc/debian/changelog.in"
(cd "$debsrc" && DEB_BUILD_OPTIONS="nocheck parallel=$jobs" dpkg-buildpackage -us -uc -b) \
	>"$work/deb-build.log" 2>&1 || log_fail "$work/deb-build.log" "dpkg-buildpackage"
deb_main=$(ls "$work"/deb/kinlake_"$version"-*_*.deb)
deb_dev=$(ls "$work"/deb/kinlake-dev_"$version"-*_*.deb)
changes=$(ls "$work"/deb/kinlake_"$version"-*_*.changes)
ok "built $(cd "$work/deb" && ls ./*.deb | tr '\n' ' ')"

step "build the .rpms (rpmbuild -tb)"
mkdir "$work/rpm"
rpmbuild -tb --nodeps --without check --define "_topdir $work/rpm" "$tarball" \
	>"$work/rpm-build.log" 2>&1 || log_fail "$work/rpm-build.log" "rpmbuild"
rpm_main=$(ls "$work"/rpm/RPMS/*/kinlake-"$version"-*.rpm)
rpm_dev=$(ls "$work"/rpm/RPMS/*/kinlake-devel-"$version"-*.rpm)
ok "built $(basename "$rpm_main") $(basename "$rpm_dev")"

step "sizes"
ls -l "$deb_main" "$deb_dev" "$rpm_main" "$rpm_dev" | sed "s|$work/||"

step "lintian"
lintian --fail-on error --display-info --tag-display-limit 0 "$changes" >"$work/lintian.log" 2>&1 ||
	{ cat "$work/lintian.log"; die "lintian reports errors"; }
sed 's/^/  /' "$work/lintian.log"
unjustified=""
for tag in $(sed -n 's/^W: [^:]*: \([^ ]*\).*/\1/p' "$work/lintian.log" | sort -u); do
	grep -q -w -- "$tag" "$top/deb/README" || unjustified="$unjustified $tag"
done
[ -z "$unjustified" ] || die "lintian warnings not justified in deb/README:$unjustified"
ok "lintian: no errors; $(grep -c '^W:' "$work/lintian.log" || true) warning(s), each justified in deb/README"

step "inspect the .debs"
triplet=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
# Every path a package must hold (a leading "./" as dpkg-deb -c prints).
expect_in() {
	local list=$1 what=$2 path
	shift 2
	for path in "$@"; do
		grep -q -x -F -- "$path" "$list" || die "$what lacks $path"
	done
}
for d in "$deb_main" "$deb_dev"; do
	echo "$(basename "$d"):"
	dpkg-deb -c "$d" | sed 's/^/  /'
done
dpkg-deb -c "$deb_main" | awk '{print $6}' | sed 's|/$||' >"$work/deb-main.list"
dpkg-deb -c "$deb_dev" | awk '{print $6}' | sed 's|/$||' >"$work/deb-dev.list"
expect_in "$work/deb-main.list" "kinlake.deb" \
	./usr/bin/kinlake \
	"./usr/lib/$triplet/kinlake/plugins/identity.so" \
	"./usr/lib/$triplet/kinlake/plugins/clickstream.so" \
	./usr/lib/kinlake/plugins \
	./lib/systemd/system/kinlake.service \
	./lib/systemd/system/kinlake@.service \
	./usr/lib/sysusers.d/kinlake.conf \
	./usr/lib/tmpfiles.d/kinlake.conf \
	./etc/kinlake/kinlake.conf \
	./usr/share/man/man5/kinlake.conf.5.gz \
	./usr/share/man/man8/kinlake.8.gz \
	./usr/share/doc/kinlake/copyright
grep -q -E '^\./usr/share/doc/kinlake/README\.operators(\.gz)?$' "$work/deb-main.list" ||
	die "kinlake.deb lacks README.operators"
expect_in "$work/deb-dev.list" "kinlake-dev.deb" \
	./usr/include/kinlake/transform.h \
	"./usr/lib/$triplet/pkgconfig/kinlake.pc" \
	./usr/share/doc/kinlake-dev/examples/plugin/Makefile \
	./usr/share/doc/kinlake-dev/examples/plugin/README \
	./usr/share/doc/kinlake-dev/examples/plugin/example.c
if grep -h '\.la$' "$work/deb-main.list" "$work/deb-dev.list"; then
	die "a .deb ships libtool archives"
fi
dpkg-deb --ctrl-tarfile "$deb_main" | tar -xOf - ./conffiles >"$work/conffiles"
grep -q -x /etc/kinlake/kinlake.conf "$work/conffiles" ||
	die "/etc/kinlake/kinlake.conf is not a conffile"
depends=$(dpkg-deb -f "$deb_main" Depends)
for lib in 'libc6' 'libcurl[0-9a-z]*' 'libjson-c[0-9a-z]*' 'libconfig[0-9a-z]*' 'libsqlite3-[0-9a-z]*'; do
	echo "$depends" | grep -q -E "(^|, )$lib( |,|$)" ||
		die "kinlake Depends lacks $lib (\${shlibs:Depends} not computed?): $depends"
done
deb_version=$(dpkg-deb -f "$deb_main" Version)
[ "${deb_version%-*}" = "$version" ] || die ".deb version $deb_version is not $version-N"
ok "contents, conffile, Depends: $depends"

step "inspect the .rpms"
rpm -qlp "$rpm_main" >"$work/rpm-main.list"
rpm -qlp "$rpm_dev" >"$work/rpm-dev.list"
for r in "$rpm_main" "$rpm_dev"; do
	echo "$(basename "$r"):"
	rpm -qlvp "$r" | sed 's/^/  /'
done
rpmlibdir=$(rpm --eval '%{_libdir}')
expect_in "$work/rpm-main.list" "kinlake.rpm" \
	/usr/bin/kinlake \
	"$rpmlibdir/kinlake/plugins/identity.so" \
	"$rpmlibdir/kinlake/plugins/clickstream.so" \
	/usr/lib/kinlake/plugins \
	/usr/lib/systemd/system/kinlake.service \
	/usr/lib/systemd/system/kinlake@.service \
	/usr/lib/sysusers.d/kinlake.conf \
	/usr/lib/tmpfiles.d/kinlake.conf \
	/etc/kinlake/kinlake.conf \
	/var/lib/kinlake
grep -q '^/usr/share/man/man5/kinlake\.conf\.5' "$work/rpm-main.list" || die "kinlake.rpm lacks kinlake.conf.5"
grep -q '^/usr/share/man/man8/kinlake\.8' "$work/rpm-main.list" || die "kinlake.rpm lacks kinlake.8"
expect_in "$work/rpm-dev.list" "kinlake-devel.rpm" \
	/usr/include/kinlake/transform.h \
	"$rpmlibdir/pkgconfig/kinlake.pc"
grep -q '/example\.c$' "$work/rpm-dev.list" || die "kinlake-devel.rpm lacks the example plugin"
if grep -h '\.la$' "$work/rpm-main.list" "$work/rpm-dev.list"; then
	die "an .rpm ships libtool archives"
fi
rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]' \
	"$rpm_main" >"$work/rpm-main.flags"
grep -q '^cn -rw-r----- root:kinlake /etc/kinlake/kinlake.conf$' "$work/rpm-main.flags" ||
	die "kinlake.conf is not %config(noreplace) 0640 root:kinlake: $(grep kinlake.conf "$work/rpm-main.flags")"
for s in PREIN POSTIN PREUN POSTUN; do
	rpm -qp --qf "%{$s}" "$rpm_main" >"$work/rpm-$s.sh"
	[ -s "$work/rpm-$s.sh" ] && [ "$(cat "$work/rpm-$s.sh")" != "(none)" ] || die "kinlake.rpm has no $s scriptlet"
	if grep -n '%' "$work/rpm-$s.sh"; then
		die "kinlake.rpm $s scriptlet holds an unexpanded macro"
	fi
	sh -n "$work/rpm-$s.sh" || die "kinlake.rpm $s scriptlet is not valid sh"
done
grep -q 'useradd .* kinlake' "$work/rpm-PREIN.sh" || die "kinlake.rpm %pre does not create the user"
grep -q 'preset kinlake.service\|install-system-units kinlake.service' "$work/rpm-POSTIN.sh" ||
	die "kinlake.rpm %post does not apply the systemd preset"
if grep -q 'start' "$work/rpm-POSTIN.sh"; then
	die "kinlake.rpm %post starts something"
fi
rpm -qp --requires "$rpm_main" >"$work/rpm-requires"
grep -q '^libcurl\.so\.4' "$work/rpm-requires" || die "kinlake.rpm does not require libcurl.so.4 (automatic dependencies?)"
[ "$(rpm -qp --qf '%{VERSION}' "$rpm_main")" = "$version" ] || die "rpm version is not $version"
[ "$(rpm -qp --qf '%{VERSION}' "$rpm_dev")" = "$version" ] || die "rpm -devel version is not $version"
ok "contents, %config(noreplace), scriptlets (expanded, valid sh), requires, version"

step "install the .debs"
scan_kinlake >"$work/before.list"
touched_packages=1
# Their dependencies are in place (the build needed them): no apt-get
# update unless apt cannot resolve them.
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	"$deb_main" "$deb_dev" >"$work/apt.log" 2>&1; then
	apt_install "$deb_main" "$deb_dev"
fi
[ "$(pkg_state kinlake)" = installed ] && [ "$(pkg_state kinlake-dev)" = installed ] ||
	die "kinlake/kinlake-dev not installed after apt-get install"
ok "installed kinlake $(dpkg-query -W -f='${Version}' kinlake), kinlake-dev"

step "check the installed system"
got=$(kinlake --version)
[ "$got" = "kinlake $version" ] || die "kinlake --version says '$got', not 'kinlake $version'"
ok "kinlake --version: $got"
getent passwd kinlake >/dev/null || die "no kinlake user"
[ "$(stat -c '%U:%G %a' /var/lib/kinlake)" = "kinlake:kinlake 750" ] ||
	die "/var/lib/kinlake is $(stat -c '%U:%G %a' /var/lib/kinlake), not kinlake:kinlake 750"
[ "$(stat -c '%U:%G %a' /etc/kinlake/kinlake.conf)" = "root:kinlake 640" ] ||
	die "/etc/kinlake/kinlake.conf is $(stat -c '%U:%G %a' /etc/kinlake/kinlake.conf), not root:kinlake 640"
setpriv --reuid=kinlake --regid=kinlake --init-groups test -r /etc/kinlake/kinlake.conf ||
	die "the kinlake user cannot read /etc/kinlake/kinlake.conf"
ok "user kinlake; /var/lib/kinlake kinlake:kinlake 750; kinlake.conf root:kinlake 640"

rc=0
kinlake check-config /etc/kinlake/kinlake.conf >"$work/check.out" 2>&1 || rc=$?
[ "$rc" = 78 ] || { cat "$work/check.out"; die "check-config on the pristine config exited $rc, not 78"; }
grep -q 'CHANGE-ME' "$work/check.out" || { cat "$work/check.out"; die "check-config did not name the placeholders"; }
ok "check-config /etc/kinlake/kinlake.conf: exit 78, placeholders named"
sed 's/"CHANGE-ME"/"kinlake-ci"/g' /etc/kinlake/kinlake.conf >"$work/filled.conf"
out=$(kinlake check-config "$work/filled.conf" 2>&1) || die "check-config on the filled-in copy: $out"
ok "check-config on a filled-in copy: $out"

kinlake plugin list >"$work/plugins.out" 2>&1 || { cat "$work/plugins.out"; die "kinlake plugin list"; }
sed 's/^/  /' "$work/plugins.out"
grep -q -x "# /usr/lib/$triplet/kinlake/plugins" "$work/plugins.out" &&
	grep -q -x '# /usr/lib/kinlake/plugins' "$work/plugins.out" &&
	grep -q '^identity ' "$work/plugins.out" && grep -q '^clickstream ' "$work/plugins.out" ||
	die "plugin list does not show both directories and the built-in plugins"
if grep -q 'UNUSABLE' "$work/plugins.out"; then
	die "plugin list shows an unusable plugin"
fi
ok "plugin list: both directories, identity and clickstream"

step "the example plugin, out of tree, against kinlake-dev"
[ "$(pkg-config --modversion kinlake)" = "$version" ] || die "pkg-config --modversion kinlake is not $version"
mkdir -m 0755 "$work/example"
cp /usr/share/doc/kinlake-dev/examples/plugin/* "$work/example/"
for f in "$work"/example/*.gz; do
	[ ! -e "$f" ] || gunzip "$f"
done
make -C "$work/example" >"$work/example.log" 2>&1 || log_fail "$work/example.log" "building the example plugin"
chmod 0755 "$work/example/example.so"
out=$(printf 'ERROR disk full\ninfo all good\n\n' | kinlake plugin test "$work/example/example.so" 2>&1) ||
	die "plugin test ./example.so: $out"
echo "$out" | sed 's/^/  /'
echo "$out" | grep -q '^1 OK' && echo "$out" | grep -q '^2 DROPPED' && echo "$out" | grep -q '^3 FAILED' ||
	die "plugin test ./example.so: expected 1 OK, 2 DROPPED, 3 FAILED"
make -C "$work/example" install PLUGINDIR=/usr/lib/kinlake/plugins >>"$work/example.log" 2>&1 ||
	log_fail "$work/example.log" "make install PLUGINDIR=/usr/lib/kinlake/plugins"
kinlake plugin list | grep -q '^example ' || die "plugin list does not show /usr/lib/kinlake/plugins/example.so"
printf 'WARN low disk\n' | kinlake plugin test example 2>/dev/null | grep -q '^1 OK' ||
	die "plugin test example (by name, from /usr/lib/kinlake/plugins) did not pass the record"
rm -f /usr/lib/kinlake/plugins/example.so
ok "example.so built with pkg-config, run by path and by name from /usr/lib/kinlake/plugins"

step "systemd units"
unitdir=/lib/systemd/system
mkdir "$work/units"
ln -s "$unitdir/kinlake@.service" "$work/units/kinlake@ci.service"
for u in "$unitdir/kinlake.service" "$work/units/kinlake@ci.service"; do
	out=$(systemd-analyze verify "$u" 2>&1) || die "systemd-analyze verify $(basename "$u"): $out"
	[ -z "$out" ] || die "systemd-analyze verify $(basename "$u") is not clean: $out"
	ok "systemd-analyze verify $(basename "$u"): clean"
	# The threshold is the exposure times ten: fail above 2.0 ("OK" is below 4).
	systemd-analyze security --offline=true --threshold=20 "$u" >"$work/security.out" 2>&1 ||
		{ cat "$work/security.out"; die "systemd-analyze security $(basename "$u"): exposure above 2.0"; }
	ok "systemd-analyze security $(basename "$u"): $(grep -a 'Overall exposure level' "$work/security.out" |
		sed 's/.*: //')"
done

step "maintainer scripts: when is the worker started and stopped"
# Runs a maintainer script in a private mount namespace where
# /run/systemd/system exists (as under systemd) and systemctl,
# deb-systemd-invoke and deb-systemd-helper are stand-ins that log their
# arguments; config, if not empty, is bind-mounted over kinlake.conf there.
# Nothing outside the namespace changes but what the script itself does
# again (sysusers, tmpfiles, modes: already done by the install).
mkdir "$work/stubs"
for t in systemctl deb-systemd-invoke deb-systemd-helper; do
	printf '#!/bin/sh\necho "%s $*" >>"$KL_STUB_LOG"\nexit 0\n' "$t" >"$work/stubs/$t"
	chmod 0755 "$work/stubs/$t"
done
run_script() {
	local config=$1 log=$2
	shift 2
	: >"$log"
	KL_STUB_LOG=$log PATH="$work/stubs:$PATH" unshare -m --propagation private sh -ec '
		config=$1; shift
		if [ -d /run/systemd ]; then mount -t tmpfs kl-test /run/systemd; else mount -t tmpfs kl-test /run; fi
		mkdir -p /run/systemd/system
		if [ -n "$config" ]; then mount --bind "$config" /etc/kinlake/kinlake.conf; fi
		"$@"' sh "$config" "$@" >"$log.out" 2>&1
}
if ! unshare -m --propagation private true 2>/dev/null; then
	die "unshare -m is not permitted here: cannot test the maintainer scripts' start decision"
fi
cp "$work/filled.conf" "$work/filled-ns.conf"
run_script "" "$work/postinst-fresh.log" /var/lib/dpkg/info/kinlake.postinst configure "" ||
	log_fail "$work/postinst-fresh.log.out" "postinst configure (pristine config)"
if grep -q 'start' "$work/postinst-fresh.log"; then
	cat "$work/postinst-fresh.log"
	die "postinst starts the worker with the pristine config"
fi
grep -q 'deb-systemd-helper enable kinlake.service' "$work/postinst-fresh.log" ||
	die "postinst does not enable kinlake.service: $(cat "$work/postinst-fresh.log")"
grep -q 'not starting kinlake.service' "$work/postinst-fresh.log.out" ||
	die "postinst did not say why it does not start the worker"
ok "fresh install, pristine config: enabled, not started, says why"
run_script "$work/filled-ns.conf" "$work/postinst-filled.log" /var/lib/dpkg/info/kinlake.postinst configure "" ||
	log_fail "$work/postinst-filled.log.out" "postinst configure (filled-in config)"
grep -q -x 'deb-systemd-invoke start kinlake.service' "$work/postinst-filled.log" ||
	die "postinst does not start the worker with a config that passes check-config: $(cat "$work/postinst-filled.log")"
ok "fresh install, filled-in config: started"
run_script "$work/filled-ns.conf" "$work/postinst-upgrade.log" /var/lib/dpkg/info/kinlake.postinst configure "0.0.1-1" ||
	log_fail "$work/postinst-upgrade.log.out" "postinst configure (upgrade)"
grep -q -x 'deb-systemd-invoke try-restart kinlake.service' "$work/postinst-upgrade.log" &&
	grep -q -x 'systemctl try-restart kinlake@\*.service' "$work/postinst-upgrade.log" ||
	die "postinst on upgrade does not try-restart the worker and its instances: $(cat "$work/postinst-upgrade.log")"
ok "upgrade: kinlake.service and kinlake@*.service try-restarted"
run_script "" "$work/prerm.log" /var/lib/dpkg/info/kinlake.prerm remove ||
	log_fail "$work/prerm.log.out" "prerm remove"
grep -q -x 'deb-systemd-invoke stop kinlake.service' "$work/prerm.log" &&
	grep -q -x 'systemctl stop kinlake@\*.service' "$work/prerm.log" ||
	die "prerm remove does not stop the worker and its instances: $(cat "$work/prerm.log")"
run_script "" "$work/prerm-upgrade.log" /var/lib/dpkg/info/kinlake.prerm upgrade "$deb_version" ||
	log_fail "$work/prerm-upgrade.log.out" "prerm upgrade"
if grep -q 'stop' "$work/prerm-upgrade.log"; then
	die "prerm upgrade stops the worker"
fi
ok "remove: stopped (with instances); upgrade: left running"

step "purge"
dpkg --purge kinlake-dev kinlake >"$work/purge.log" 2>&1 || log_fail "$work/purge.log" "dpkg --purge"
for p in kinlake kinlake-dev; do
	! is_present "$p" || die "$p is still $(pkg_state "$p") after purge"
done
scan_kinlake >"$work/after.list"
if ! diff "$work/before.list" "$work/after.list" >"$work/left.diff"; then
	cat "$work/left.diff"
	die "purge left these behind (>) or removed these (<)"
fi
getent passwd kinlake >/dev/null || die "purge removed the kinlake user (Debian policy keeps it)"
ok "purged: nothing of kinlake left but the kinlake user and group (kept by policy)"
if [ "$user_existed" = 0 ]; then
	userdel kinlake
	ok "removed the kinlake user this test created"
fi
if [ "$group_existed" = 0 ] && getent group kinlake >/dev/null; then
	groupdel kinlake
fi
touched_packages=0

step "package test passed"
