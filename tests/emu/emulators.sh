#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# emulators.sh: runs a command with local AWS emulators on 127.0.0.1.
#
#   tests/emu/emulators.sh [--no-moto] [--keep-logs] -- COMMAND [ARG...]
#
# Starts kinesalite, dynalite and s3rver (npm, from tests/emu/node_modules)
# and moto_server when it is installed, each on a free loopback port in a
# private temporary directory, waits until each answers, exports
#   KL_TEST_KINESIS_ENDPOINT KL_TEST_DYNAMODB_ENDPOINT KL_TEST_S3_ENDPOINT
#   KL_TEST_ACCESS_KEY_ID KL_TEST_SECRET_ACCESS_KEY (valid for all three)
#   KL_TEST_MOTO_ENDPOINT KL_TEST_MOTO_ACCESS_KEY_ID KL_TEST_MOTO_SECRET_ACCESS_KEY
#   KL_TEST_EMU_DIR (scratch space) KL_TEST_EMU_SERVE (command to start more)
# runs COMMAND, then stops exactly the processes it started, even when the
# command fails or the script is interrupted. Exits with COMMAND's status.
# Two runs at once never collide: ports are chosen by the kernel, and
# every run has its own directory.
set -u

here=$(cd "$(dirname "$0")" && pwd)
use_moto=1
keep_logs=0
while [ $# -gt 0 ]; do
	case "$1" in
	--no-moto) use_moto=0; shift ;;
	--keep-logs) keep_logs=1; shift ;;
	--) shift; break ;;
	*) break ;;
	esac
done
if [ $# -eq 0 ]; then
	echo "usage: $0 [--no-moto] [--keep-logs] -- COMMAND [ARG...]" >&2
	exit 64
fi
if [ ! -d "$here/node_modules/kinesalite" ]; then
	echo "emulators.sh: $here/node_modules is missing; run scripts/setup.sh (npm ci) first" >&2
	exit 69
fi

# Nothing started under this harness may leave the machine: no instance
# metadata lookups (169.254.169.254), no proxies for loopback, and
# credentials that the emulators accept for anything that uses the
# standard chain.
export AWS_EC2_METADATA_DISABLED=true
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1
unset AWS_SESSION_TOKEN AWS_PROFILE AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN \
	AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_CREDENTIALS_FULL_URI
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"

work=$(mktemp -d "${TMPDIR:-/tmp}/kinlake-emu.XXXXXX")
pids=()

names=()
rc=0

# After a failed command: which emulator died, what it said, and the tail
# of every log the test left in the scratch dir (workers' logs), so that a
# failure in CI explains itself.
report_failure() {
	local i f
	echo "emulators.sh: the command failed ($rc); emulators at that moment:" >&2
	for i in "${!pids[@]}"; do
		if kill -0 "${pids[$i]}" 2>/dev/null; then
			echo "  ${names[$i]}: running" >&2
		else
			echo "  ${names[$i]}: DEAD" >&2
		fi
		f="$work/${names[$i]}.err"
		if [ -s "$f" ]; then
			echo "  --- tail of ${names[$i]}'s stderr" >&2
			tail -n 20 "$f" | sed 's/^/  /' >&2
		fi
	done
	find "$work/scratch" -name '*.log' -type f 2>/dev/null | sort | while read -r f; do
		echo "  --- tail of ${f#"$work"/}" >&2
		tail -n 15 "$f" | sed 's/^/  /' >&2
	done
}

cleanup() {
	local pid
	if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then
		report_failure
	fi
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	for pid in "${pids[@]}"; do
		for _ in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	if [ "$keep_logs" = 1 ]; then
		echo "emulators.sh: logs kept in $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_node NAME KIND DIR: starts serve.js, waits for "PORT n", sets $port.
start_node() {
	local name=$1 kind=$2 dir=$3 out="$work/$1.out"
	: >"$out"
	(cd "$here" && NODE_OPTIONS=--openssl-legacy-provider exec node serve.js "$kind" "$dir") \
		>"$out" 2>"$work/$name.err" &
	pids+=($!)
	names+=("$name")
	for _ in $(seq 1 300); do
		port=$(sed -n 's/^PORT \([0-9]*\)$/\1/p' "$out")
		[ -n "$port" ] && return 0
		if ! kill -0 "${pids[-1]}" 2>/dev/null; then
			echo "emulators.sh: $name failed to start:" >&2
			cat "$work/$name.err" >&2
			exit 70
		fi
		sleep 0.1
	done
	echo "emulators.sh: $name did not report a port within 30 s" >&2
	exit 70
}

# wait_http URL: until something answers HTTP at URL (any status).
wait_http() {
	for _ in $(seq 1 300); do
		if curl -s -o /dev/null --max-time 2 "$1"; then
			return 0
		fi
		sleep 0.1
	done
	echo "emulators.sh: nothing answers at $1" >&2
	exit 70
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

mkdir -p "$work/s3" "$work/scratch"
start_node kinesalite kinesis -
export KL_TEST_KINESIS_ENDPOINT="http://127.0.0.1:$port"
start_node dynalite dynamodb -
export KL_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$port"
start_node s3rver s3 "$work/s3"
export KL_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
export KL_TEST_ACCESS_KEY_ID=S3RVER KL_TEST_SECRET_ACCESS_KEY=S3RVER
export KL_TEST_EMU_DIR="$work/scratch"
export KL_TEST_EMU_SERVE="env NODE_OPTIONS=--openssl-legacy-provider node $here/serve.js"
wait_http "$KL_TEST_KINESIS_ENDPOINT/"
wait_http "$KL_TEST_DYNAMODB_ENDPOINT/"
wait_http "$KL_TEST_S3_ENDPOINT/"

if [ "$use_moto" = 1 ] && command -v moto_server >/dev/null 2>&1; then
	mport=$(free_port)
	# The first three requests need no signature: they mint an IAM user
	# with a key, so everything after that is signed and verified.
	INITIAL_NO_AUTH_ACTION_COUNT=3 moto_server -H 127.0.0.1 -p "$mport" \
		>"$work/moto.out" 2>&1 &
	pids+=($!)
	names+=(moto)
	export KL_TEST_MOTO_ENDPOINT="http://127.0.0.1:$mport"
	wait_http "$KL_TEST_MOTO_ENDPOINT/moto-api/"
	keys=$(python3 - "$KL_TEST_MOTO_ENDPOINT" <<'PY'
import json, sys, boto3
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam.create_user(UserName="kinlake-test")
iam.put_user_policy(UserName="kinlake-test", PolicyName="all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
k = iam.create_access_key(UserName="kinlake-test")["AccessKey"]
print(k["AccessKeyId"], k["SecretAccessKey"])
PY
	) || { echo "emulators.sh: could not mint a moto access key" >&2; cat "$work/moto.out" >&2; exit 70; }
	export KL_TEST_MOTO_ACCESS_KEY_ID=${keys%% *}
	export KL_TEST_MOTO_SECRET_ACCESS_KEY=${keys#* }
else
	unset KL_TEST_MOTO_ENDPOINT
fi

"$@" || rc=$?
exit "$rc"
