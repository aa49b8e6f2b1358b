#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# bench/e2e.sh: end to end through the local emulators (DESIGN.md section
# 8, issue 8). Fills a stream with `kinlake demo produce` first, then starts
# ONE `kinlake run` worker under /usr/bin/time (the worker's own rusage:
# user + system CPU seconds and peak RSS of that process alone, not of the
# emulators, the proxies or the producer), waits until the worker has read
# every produced record (its metrics file), stops it with SIGTERM (the
# graceful stop seals and uploads what is open), and prints:
#   records/s      records taken by the transform / seconds from the
#                  worker's start until all were taken (includes start-up
#                  and the first lease take)
#   CPU-s per GB   (user + sys of the worker, whole life) / GB (10^9 B) of
#                  uncompressed record bytes written to objects
#   peak RSS       VmHWM of the worker (GNU time's maximum resident size)
#   API calls      per operation, counted by tests/tools/faultproxy (no
#                  fault rules: a plain pass-through) put between the worker
#                  and each emulator, per GB
# Everything listens on 127.0.0.1. Run from a build tree (after `make bench`):
#   /path/to/src/bench/e2e.sh [--shards N] [--events N] [--kpl K] [--codec C]
#       [--level L] [--window-log W (zstd)] [--pages N] [--plugin identity|clickstream] [--buffer-bytes SIZE]
#       [--part-size SIZE] [--threshold SIZE] [--buffer-seconds S]
#       [--threads N] [--limit N (GetRecords Limit)] [--timeout S] [--check]
# KL_E2E_PERF=FILE: also `perf record -g` the worker into FILE.
# --check also runs tests/tools/lakecheck against the producer's manifest
# (every event exactly once); it reads every object back (slow for GBs).
# Starts tests/emu/emulators.sh --no-moto itself when not already inside it.
set -euo pipefail

src_top="$(cd "$(dirname "$0")/.." && pwd)"
build="${KL_BUILD:-$PWD}"
if [ -z "${KL_TEST_KINESIS_ENDPOINT:-}" ]; then
	exec "$src_top/tests/emu/emulators.sh" --no-moto -- env KL_BUILD="$build" bash "$0" "$@"
fi
export AWS_EC2_METADATA_DISABLED=true

shards=8 events=200000 kpl=20 codec=zstd level="" window_log="" pages="" plugin=identity
buffer_bytes="64MiB" part_size="16MiB" threshold="16MiB" buffer_seconds=300
threads=0 timeout=1800 check=0 limit=10000
while [ $# -gt 0 ]; do
	case "$1" in
	--shards) shards=$2; shift 2 ;;
	--events) events=$2; shift 2 ;;
	--kpl) kpl=$2; shift 2 ;;
	--codec) codec=$2; shift 2 ;;
	--level) level=$2; shift 2 ;;
	--window-log) window_log=$2; shift 2 ;;
	--pages) pages=$2; shift 2 ;;
	--plugin) plugin=$2; shift 2 ;;
	--buffer-bytes) buffer_bytes=$2; shift 2 ;;
	--part-size) part_size=$2; shift 2 ;;
	--threshold) threshold=$2; shift 2 ;;
	--buffer-seconds) buffer_seconds=$2; shift 2 ;;
	--threads) threads=$2; shift 2 ;;
	--limit) limit=$2; shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--check) check=1; shift ;;
	*) echo "usage: see the top of $0" >&2; exit 64 ;;
	esac
done

kinlake="$build/kinlake"
proxy="$build/tests/tools/faultproxy"
lakecheck="$build/tests/tools/lakecheck"
for f in "$kinlake" "$proxy" "$build/plugins/$plugin/.libs/$plugin.so"; do
	[ -x "$f" ] || [ -f "$f" ] || { echo "e2e: $f missing: run from a build tree after make bench" >&2; exit 1; }
done
work="$KL_TEST_EMU_DIR/e2e"
mkdir -p "$work/state" "$work/plugins"
chmod 700 "$work" "$work/plugins"
# the plugin host refuses plugin directories writable by others: stage a copy
cp "$build/plugins/$plugin/.libs/$plugin.so" "$work/plugins/" && chmod 755 "$work/plugins/$plugin.so"
stream="e2e-$$"
bucket="kl-e2e-$$"

pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# One pass-through proxy per service, to count the worker's requests by operation.
start_proxy() { # name upstream
	"$proxy" --listen 127.0.0.1:0 --upstream "$2" >"$work/$1.out" 2>"$work/$1.log" &
	pids+=($!)
	until grep -q '^CONTROL' "$work/$1.out" 2>/dev/null; do sleep 0.1; done
}
start_proxy pk "$KL_TEST_KINESIS_ENDPOINT"
start_proxy pd "$KL_TEST_DYNAMODB_ENDPOINT"
start_proxy ps "$KL_TEST_S3_ENDPOINT"
port() { sed -n "s/^$2 //p" "$work/$1.out"; }

levels=""
case "$codec" in
gzip) [ -n "$level" ] && levels="gzip_level = $level;" ;;
zstd) [ -n "$level" ] && levels="zstd_level = $level;"
	[ -n "$window_log" ] && levels="$levels zstd_window_log = $window_log;" ;;
esac
write_config() { # file kinesis dynamodb s3
	cat >"$1" <<CONF
application = "kl-e2e-$$";
worker_id = "e2e";
stream = "$stream";
state_dir = "$work/state";
lease = { failover_ms = 10000; };
consumer = { threads = $threads; idle_ms = 200; get_records_limit = $limit; ${pages:+max_pages_in_memory = $pages;} };
plugin = { name = "$plugin"; search_path = "$work/plugins"; };
s3 = {
  bucket = "$bucket";
  prefix = "data/!{timestamp:yyyy/MM/dd/HH}/";
  error_prefix = "errors/!{firehose:error-output-type}/";
  compression = "$codec"; $levels
  buffer_bytes = "$buffer_bytes";
  buffer_seconds = $buffer_seconds;
  multipart_threshold = "$threshold";
  part_size = "$part_size";
};
credentials = { access_key_id = "$KL_TEST_ACCESS_KEY_ID"; secret_access_key = "$KL_TEST_SECRET_ACCESS_KEY"; disable_imds = true; };
endpoints = { kinesis = "$2"; dynamodb = "$3"; s3 = "$4"; };
log = { level = "info"; file = "$work/worker.log"; };
metrics = { file = "$work/worker.prom"; interval_ms = 1000; };
CONF
	chmod 600 "$1"
}
write_config "$work/direct.conf" "$KL_TEST_KINESIS_ENDPOINT" "$KL_TEST_DYNAMODB_ENDPOINT" "$KL_TEST_S3_ENDPOINT"
write_config "$work/worker.conf" "http://127.0.0.1:$(port pk PORT)" \
	"http://127.0.0.1:$(port pd PORT)" "http://127.0.0.1:$(port ps PORT)"
"$kinlake" check-config -c "$work/worker.conf" >/dev/null
curl -sf -X PUT "$KL_TEST_S3_ENDPOINT/$bucket" >/dev/null

kplarg=()
[ "$kpl" -gt 0 ] && kplarg=(--kpl --kpl-per-record "$kpl")
manifest=()
[ "$check" = 1 ] && manifest=(--manifest "$work/manifest")
echo "== filling stream $stream ($shards shards) with $events events (kpl $kpl per record)"
t0=$(date +%s.%N)
"$kinlake" demo produce -c "$work/direct.conf" --stream "$stream" --create-shards "$shards" \
	--count "$events" --rate 0 "${kplarg[@]}" --malformed-pct 0 --bot-pct 0 --seed 1 \
	"${manifest[@]}" --quiet >"$work/produce.out"
t1=$(date +%s.%N)
echo "   producer: $(cat "$work/produce.out") ($(echo "$t1 - $t0" | bc) s)"

metric() { # name: the worker-level sample (no shard label)
	awk -v n="kinlake_$1" '$1 ~ "^"n"({|$)" && $1 !~ /shard=/ {v=$2} END {print v+0}' \
		"$work/worker.prom" 2>/dev/null || echo 0
}
echo "== one worker: codec $codec${level:+ level $level}, plugin $plugin, buffer_bytes $buffer_bytes, part_size $part_size"
/usr/bin/time -v -o "$work/time.txt" "$kinlake" run -c "$work/worker.conf" &
timer=$!
pids+=($timer)
ws=$(date +%s.%N)
sleep 0.5
worker=$(pgrep -P "$timer")
if [ -n "${KL_E2E_PERF:-}" ]; then
	perf record -q -F 499 -g -p "$worker" -o "$KL_E2E_PERF" 2>/dev/null &
fi
rss_max=0
while :; do
	sleep 1
	now=$(date +%s.%N)
	in=$(metric records_in_total)
	hwm=$(awk '/VmHWM/ {print $2}' "/proc/$worker/status" 2>/dev/null || echo 0)
	[ "${hwm:-0}" -gt "$rss_max" ] && rss_max=$hwm
	[ "$in" -ge "$events" ] && break
	if [ "$(echo "$now - $ws > $timeout" | bc)" = 1 ]; then
		echo "e2e: timed out with $in of $events records read" >&2
		break
	fi
done
wr=$(date +%s.%N)
read_secs=$(echo "$wr - $ws" | bc)
kill -TERM "$worker"
wait "$timer" || true
we=$(date +%s.%N)

in=$(metric records_in_total)
out=$(metric records_out_total)
bytes_in=$(metric bytes_in_total)
bytes_out=$(metric bytes_out_total)
objs=$(metric objects_uploaded_total)
up=$(metric bytes_uploaded_total)
user=$(awk -F': ' '/User time/ {print $2}' "$work/time.txt")
sys=$(awk -F': ' '/System time/ {print $2}' "$work/time.txt")
rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$work/time.txt")
cpu=$(echo "$user + $sys" | bc)
gb=$(echo "scale=6; $bytes_out / 1000000000" | bc)
echo "== results"
echo "records read by the worker  $in (records out $out)"
echo "bytes in / out (uncompressed) $bytes_in / $bytes_out; objects $objs, $up bytes uploaded"
printf 'wall: %.1f s until every record was read, %.1f s until the worker exited\n' \
	"$read_secs" "$(echo "$we - $ws" | bc)"
printf 'records/s %.0f   MB/s (uncompressed) %.1f\n' "$(echo "$in / $read_secs" | bc -l)" \
	"$(echo "$bytes_out / 1000000 / $read_secs" | bc -l)"
printf 'worker CPU user %s s + sys %s s = %s s;  CPU-s per GB delivered %.2f\n' "$user" "$sys" \
	"$cpu" "$(echo "$cpu / $gb" | bc -l)"
printf 'peak RSS of the worker %.1f MiB (time -v), VmHWM seen while running %.1f MiB\n' \
	"$(echo "$rss / 1024" | bc -l)" "$(echo "$rss_max / 1024" | bc -l)"
echo "API requests by operation (per GB of uncompressed record bytes):"
for p in pk pd ps; do
	curl -s "http://127.0.0.1:$(port "$p" CONTROL)/stats" |
		python3 -c 'import json,sys
gb=float(sys.argv[1])
for op,v in sorted(json.load(sys.stdin)["ops"].items()):
    print("  %-44s %8d  %10.1f / GB" % (op, v["requests"], v["requests"]/gb))' "$gb"
done
if [ "$check" = 1 ]; then
	echo "== lakecheck"
	AWS_ACCESS_KEY_ID=$KL_TEST_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$KL_TEST_SECRET_ACCESS_KEY \
		"$lakecheck" --endpoint "$KL_TEST_S3_ENDPOINT" --bucket "$bucket" --data-prefix data/ \
		--error-prefix errors/ --manifest "$work/manifest" --quiet || echo "lakecheck failed ($?)"
fi
