#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# run-test.sh: automake's LOG_COMPILER. Unit tests run as they are; every
# integration test (tests/integ/*, tests/chaos/*) gets emulators of its own
# from emulators.sh (fresh kinesalite, dynalite, s3rver on free loopback
# ports, and moto_server for the tests that verify signatures), so tests
# that run in parallel never share, or starve, an emulator. Without the
# emulators installed (npm ci in tests/emu), integration tests are skipped
# (77). Under an outer emulators.sh (KL_TEST_KINESIS_ENDPOINT set) the test
# uses that one instead.
set -u

here=$(cd "$(dirname "$0")" && pwd)
test=$1
shift

case "$test" in
*/integ/* | */chaos/*)
	if [ -n "${KL_TEST_KINESIS_ENDPOINT:-}" ]; then
		exec "$test" "$@"
	fi
	if [ ! -d "$here/node_modules/kinesalite" ]; then
		echo "skip: local AWS emulators not installed (scripts/setup.sh runs npm ci in tests/emu)"
		exit 77
	fi
	moto=--no-moto
	case "$test" in
	*integ_moto* | *integ_s3*) moto= ;;
	esac
	exec "$here/emulators.sh" $moto -- "$test" "$@"
	;;
*)
	exec "$test" "$@"
	;;
esac
