#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# run.sh SECONDS: builds tests/fuzz/fuzz_kpl.c with clang's libFuzzer plus
# ASan and UBSan (outside automake) and fuzzes the KPL decoder for SECONDS
# (default 60). Exits 0 when nothing was found, 1 on a finding (the crash
# input is copied to $KL_FUZZ_ARTIFACTS, default the current directory),
# 77 (skip) when clang or its libFuzzer runtime is missing; on Debian the
# runtime is in the package libclang-rt-14-dev (or libclang-rt-dev).
set -eu

secs=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cc=${CLANG:-clang}

if ! command -v "$cc" >/dev/null 2>&1; then
	echo "skip: $cc not found"
	exit 77
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/kl-fuzz-kpl.XXXXXX")
trap 'rm -rf "$work"' EXIT

printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' \
	>"$work/probe.c"
if ! "$cc" -fsanitize=fuzzer,address "$work/probe.c" -o "$work/probe" >"$work/probe.log" 2>&1; then
	echo "skip: $cc cannot link -fsanitize=fuzzer (Debian: apt-get install libclang-rt-14-dev)"
	exit 77
fi

# The sources include config.h; outside a configured tree this suffices.
printf '#define _GNU_SOURCE 1\n' >"$work/config.h"
"$cc" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-I"$work" -I"$top/src/util" -I"$top/src/consumer" $(pkg-config --cflags libcrypto) \
	"$here/fuzz_kpl.c" "$top/src/consumer/kpl.c" "$top/src/util/buf.c" \
	"$top/src/util/util.c" "$top/src/util/kl_err.c" \
	-o "$work/fuzz_kpl" $(pkg-config --libs libcrypto)

# Seeds: mode byte, then (mode 1) an AggregatedRecord body or (mode 0) a
# whole record. Key tables, records, a tag, an EHK, unknown fields.
mkdir "$work/corpus"
body='\x0a\x02pk\x28\x01\x1a\x07\x08\x00\x1a\x03abc\x1a\x0b\x08\x00\x1a\x01x\x22\x04\x0a\x02tg'
printf "\\x01$body" >"$work/corpus/agg"
printf '\x03\x0a\x01a\x12\x0242\x1a\x07\x08\x00\x10\x00\x1a\x01d\x1a\x05\x08\x00\x1a\x01e' >"$work/corpus/ehk"
printf '\x09\x0a\x01a\x0a\x01b\x1a\x05\x08\x01\x1a\x01z' >"$work/corpus/norange"
printf '\x00{"event":"click"}' >"$work/corpus/plain"
printf '\x00\xf3\x89\x9a\xc2\x0a\x02pk\x1a\x07\x08\x00\x1a\x03abc\xa0\xde\x68\xe0\xbc\x09\x74\xe2\x8d\x06\x5f\x47\x81\x43\x3d\x85' \
	>"$work/corpus/framed"
printf '\x00340282366920938463463374607431768211455' >"$work/corpus/u128"

echo "fuzz_kpl: fuzzing for ${secs}s"
set +e
(cd "$work" && ./fuzz_kpl -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
	-print_final_stats=1 -artifact_prefix="$work/" corpus) >"$work/fuzz.log" 2>&1
rc=$?
set -e
grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$work/fuzz.log" || true
if [ $rc -ne 0 ]; then
	tail -n 60 "$work/fuzz.log"
	dest=${KL_FUZZ_ARTIFACTS:-.}
	for f in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
		[ -e "$f" ] && cp "$f" "$dest/" && echo "fuzz_kpl: finding saved as $dest/$(basename "$f")"
	done
	exit 1
fi
echo "fuzz_kpl: no findings"
