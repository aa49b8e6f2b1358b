#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# setup.sh: installs what kinlake needs to build, test and demo on a fresh
# Debian machine, and nothing that is already there:
#   - Debian packages, with apt-get, only the missing ones;
#   - the local AWS emulators, with `npm ci` from tests/emu/package-lock.json.
# Idempotent; run as root (apt-get). Prints what it installs.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)

debs="autoconf automake libtool pkg-config make gcc curl ca-certificates python3
	libcurl4-openssl-dev libjson-c-dev libssl-dev libsqlite3-dev libconfig-dev
	libcunit1-dev zlib1g-dev libzstd-dev valgrind clang libclang-rt-14-dev"
# Node.js for the emulators: any node >= 18 on PATH will do.
command -v node >/dev/null 2>&1 || debs="$debs nodejs"
command -v npm >/dev/null 2>&1 || debs="$debs npm"

missing=""
for p in $debs; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
if [ -n "$missing" ]; then
	echo "setup: installing Debian packages:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

emu="$top/tests/emu"
if ! (cd "$emu" && npm ls --omit=dev >/dev/null 2>&1); then
	echo "setup: installing the local AWS emulators (npm ci)"
	(cd "$emu" && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "setup: ready"
