#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# demo.sh: the README's first command. On a fresh Debian machine (as root)
# it installs what is missing, builds kinlake, and runs the whole job on a
# local embedded default: local AWS emulators on 127.0.0.1 (kinesalite,
# dynalite, s3rver), a 4-shard stream, the lease table and a bucket, a fleet
# of two workers with the clickstream plugin, demo traffic, `kinlake status`
# while it flows, a shard split midway, and finally the objects written
# (keys, sizes, a decompressed sample, the error objects). Everything it
# starts is stopped when it ends; nothing is left running.
#
#   bash scripts/demo.sh [--seconds N]     (default 60 s of traffic)
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
seconds=60
if [ "${1:-}" = "--seconds" ] && [ -n "${2:-}" ]; then
	seconds=$2
fi

if [ "${KL_DEMO_INNER:-}" != 1 ]; then
	cd "$top"
	export AWS_EC2_METADATA_DISABLED=true
	echo "== setup (packages, emulators)"
	bash scripts/setup.sh
	echo "== build"
	[ -x configure ] || autoreconf -fi >/dev/null 2>&1
	mkdir -p build/demo
	(cd build/demo && { [ -f Makefile ] || ../../configure -q; } && make -j"$(nproc)" >/dev/null)
	echo "== starting local AWS emulators on 127.0.0.1"
	KL_DEMO_INNER=1 exec tests/emu/emulators.sh --no-moto -- bash "$0" --seconds "$seconds"
fi

# ---- inside the emulator harness (endpoints in KL_TEST_*) ----
kinlake="$top/build/demo/kinlake"
work="$KL_TEST_EMU_DIR/demo"
mkdir -p "$work"
plugin_dir="$top/build/demo/plugins/clickstream/.libs"
stream=clicks
bucket=kinlake-demo
pids=()
stop_all() {
	local p
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pids=()
}
trap stop_all EXIT

write_config() { # name
	mkdir -p "$work/$1/state"
	chmod 700 "$work/$1"
	cat >"$work/$1.conf" <<CONF
application = "kinlake-demo";
worker_id = "$1";
stream = "$stream";
state_dir = "$work/$1/state";
shutdown_grace_ms = 15000;
lease = { failover_ms = 6000; };
consumer = { idle_ms = 500; };
plugin = {
  name = "clickstream";
  search_path = "$plugin_dir";
  settings = {
    timestamp_field = "ts";
    required_fields = [ "event_id", "session_id", "user_id", "action", "ts" ];
  };
};
s3 = {
  bucket = "$bucket";
  prefix = "clicks/dt=!{partitionKeyFromLambda:dt}/hour=!{partitionKeyFromLambda:hour}/";
  error_prefix = "errors/!{firehose:error-output-type}/dt=!{timestamp:yyyy-MM-dd}/";
  compression = "gzip";
  buffer_seconds = 20;
};
credentials = { access_key_id = "S3RVER"; secret_access_key = "S3RVER"; disable_imds = true; };
endpoints = {
  kinesis = "$KL_TEST_KINESIS_ENDPOINT";
  dynamodb = "$KL_TEST_DYNAMODB_ENDPOINT";
  s3 = "$KL_TEST_S3_ENDPOINT";
};
log = { level = "info"; file = "$work/$1.log"; };
metrics = { file = "$work/$1.prom"; interval_ms = 5000; };
CONF
	chmod 600 "$work/$1.conf"
}

write_config worker-a
write_config worker-b
"$kinlake" check-config -c "$work/worker-a.conf" >/dev/null

echo "== creating bucket '$bucket' and a 4-shard stream '$stream'"
curl -sf -X PUT "$KL_TEST_S3_ENDPOINT/$bucket" >/dev/null
"$kinlake" demo produce -c "$work/worker-a.conf" --create-shards 4 --count 1 --quiet --seed 1 \
	>"$work/produce0.out"

echo "== starting a fleet of two workers (logs in $work/worker-*.log)"
for w in worker-a worker-b; do
	"$kinlake" run -c "$work/$w.conf" &
	pids+=($!)
done

echo "== producing demo clickstream for ${seconds}s at 400 events/s"
"$kinlake" demo produce -c "$work/worker-a.conf" --rate 400 --duration "$seconds" \
	--seed 2 --kpl --malformed-pct 1 --bot-pct 5 --quiet >"$work/produce.out" &
producer=$!

half=$((seconds / 2))
for t in $(seq 1 "$seconds"); do
	sleep 1
	if [ "$t" -eq 10 ] || [ "$t" -eq $((seconds - 5)) ]; then
		echo "== kinlake status (t=${t}s)"
		"$kinlake" status -c "$work/worker-a.conf" || echo "(status exit $?)"
	fi
	if [ "$t" -eq "$half" ]; then
		echo "== splitting a shard while traffic flows (t=${t}s)"
		"$kinlake" demo split -c "$work/worker-a.conf" --stream "$stream"
	fi
done
wait "$producer"
echo "== producer: $(cat "$work/produce.out")"

echo "== letting the fleet drain, then stopping it gracefully (SIGTERM)"
sleep 30
"$kinlake" status -c "$work/worker-a.conf" || echo "(status exit $?)"
stop_all

echo "== objects written to s3://$bucket"
s3dir="$(dirname "$KL_TEST_EMU_DIR")/s3/$bucket"
list_objects() { # prefix
	(cd "$s3dir" && find "$1" -name '*._S3rver_object' -type f 2>/dev/null | sort |
	 while read -r f; do
		printf '%10d  %s\n' "$(stat -c %s "$f")" "${f%._S3rver_object}"
	 done)
}
data=$(list_objects clicks)
errors=$(list_objects errors)
printf '%s\n' "$data" | head -n 20
echo "... $(printf '%s\n' "$data" | grep -c . || true) data objects"
echo "== a decompressed sample (first 3 records of the first data object)"
first=$(printf '%s\n' "$data" | awk 'NR==1{print $2}')
[ -n "$first" ] && gzip -dc "$s3dir/$first._S3rver_object" | head -n 3
echo "== error objects (malformed events, with the reason)"
printf '%s\n' "$errors" | head -n 10
efirst=$(printf '%s\n' "$errors" | awk 'NR==1{print $2}')
[ -n "$efirst" ] && gzip -dc "$s3dir/$efirst._S3rver_object" | head -n 2
echo "== exactly once? every event id, counted across data and error objects"
python3 - "$s3dir" "$work/produce0.out" "$work/produce.out" <<'PY'
import base64, collections, gzip, json, os, re, sys
root, runs = sys.argv[1], sys.argv[2:]
want = collections.Counter()
expected = 0
for r in runs:
    f = dict(kv.split("=", 1) for kv in open(r).read().split() if "=" in kv)
    expected += int(f["ok"]) + int(f["malformed"])   # bots are DROPPED by the plugin
seen = collections.Counter()
for d, _, files in os.walk(root):
    for n in files:
        if not n.endswith("._S3rver_object"):
            continue
        for line in gzip.open(os.path.join(d, n)).read().splitlines():
            if "/errors/" in d + "/" or d.startswith(os.path.join(root, "errors")):
                line = base64.b64decode(json.loads(line)["rawData"])
            m = re.search(rb'"event_id":"([0-9]+-[0-9]+)"', line)
            seen[m.group(1) if m else b"?"] += 1
dups = sum(c - 1 for c in seen.values() if c > 1)
print(f"events expected {expected}, distinct ids in S3 {len(seen)}, duplicates {dups}, "
      f"missing {expected - len(seen)}")
sys.exit(0 if dups == 0 and len(seen) == expected else 1)
PY
echo "== done; the emulators are stopped next, nothing keeps running"
