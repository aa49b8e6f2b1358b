/* SPDX-License-Identifier: Apache-2.0 */
/*
 * testutil.h: shared glue for the CUnit test programs: register a table
 * of tests, run them, turn the result into an exit code automake reads
 * (0 pass, 1 fail, 77 skip), and read emulator endpoints from the
 * environment (set by tests/emu/emulators.sh).
 */
#ifndef KL_TESTUTIL_H
#define KL_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

struct kl_test {
	const char *name;
	void (*fn)(void);
};

#define KL_TEST(fn) { #fn, fn }

/* Runs every test of tests[] (terminated by {NULL, NULL}) as one suite.
 * Returns the process exit code. */
static inline int kl_test_run(const char *suite_name, const struct kl_test *tests)
{
	CU_pSuite suite;
	unsigned failures;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 1;
	suite = CU_add_suite(suite_name, NULL, NULL);
	if (!suite) {
		CU_cleanup_registry();
		return 1;
	}
	for (const struct kl_test *t = tests; t->name; t++)
		if (!CU_add_test(suite, t->name, t->fn)) {
			CU_cleanup_registry();
			return 1;
		}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
	CU_cleanup_registry();
	return failures ? 1 : 0;
}

/*
 * How much slower than normal this process runs: 10 under valgrind (its
 * preload library is in LD_PRELOAD), else 1; KL_TEST_SLOWDOWN overrides.
 * Tests that wait on real time scale their deadlines by it, so a slow
 * checker does not turn into a false failure.
 */
static inline int kl_test_slowdown(void)
{
	const char *v = getenv("KL_TEST_SLOWDOWN"), *pre = getenv("LD_PRELOAD");

	if (v && atoi(v) > 0)
		return atoi(v);
	return pre && strstr(pre, "vgpreload") ? 10 : 1;
}

/* Returns the value of the environment variable name, or exits 77 (skip)
 * with a note when it is not set: integration tests need the emulators. */
static inline const char *kl_test_env_or_skip(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v) {
		fprintf(stderr, "skip: %s is not set (run under tests/emu/emulators.sh)\n", name);
		exit(77);
	}
	return v;
}

#endif
