/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_lease_taker.c: the take/steal arithmetic of lease_taker_compute(),
 * table-driven. Each case describes one worker's view of the table in a
 * compact string and the plan expected from the rules in lease_taker.h
 * (worked out by hand in the comments), plus a pure-arithmetic
 * convergence check of repeated passes.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lease_taker.h"
#include "testutil.h"

/*
 * View syntax: space-separated leases. "-" unowned; "-*" unowned and very
 * old; "A" owned by live worker A; "A!" owned by A but expired; "A!*"
 * expired and very old; "xN" after a token repeats it N times.
 */
struct view {
	struct lease_taker_item items[64];
	char names[64][16];
	size_t n;
};

static void parse_view(const char *spec, struct view *v)
{
	char buf[512], *save = NULL, *tok;

	memset(v, 0, sizeof(*v));
	snprintf(buf, sizeof(buf), "%s", spec);
	for (tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		if (tok[0] == 'x') {
			int rep = atoi(tok + 1);

			CU_ASSERT_FATAL(v->n > 0);
			for (int r = 1; r < rep; r++) {
				CU_ASSERT_FATAL(v->n < 64);
				memcpy(v->names[v->n], v->names[v->n - 1], sizeof(v->names[0]));
				v->items[v->n] = v->items[v->n - 1];
				v->items[v->n].owner = v->items[v->n].owner ? v->names[v->n] : NULL;
				v->n++;
			}
			continue;
		}
		CU_ASSERT_FATAL(v->n < 64);
		struct lease_taker_item *it = &v->items[v->n];
		size_t len = strcspn(tok, "!*");

		it->very_old = strchr(tok, '*') != NULL;
		it->expired = strchr(tok, '!') != NULL;
		if (!(len == 1 && tok[0] == '-')) {
			memcpy(v->names[v->n], tok, len);
			it->owner = v->names[v->n];
		}
		v->n++;
	}
}

struct taker_case {
	const char *name;
	const char *me;
	const char *view;
	uint32_t max_leases;
	uint32_t max_steal;
	bool allow_steal;
	uint32_t want_workers;
	uint32_t want_target;
	uint32_t want_take;      /* all takes, steals included */
	uint32_t want_steal;
	const char *want_victim; /* NULL: no steal */
};

static const struct taker_case cases[] = {
	/* Nothing to do on an empty table. */
	{ "empty table", "W", "", 0, 1, true, 1, 0, 0, 0, NULL },
	/* Alone with 4 new leases: workers 1, target 4, take all. */
	{ "alone, new leases", "W", "-* x4", 0, 1, true, 1, 4, 4, 0, NULL },
	/* A holds all 16: workers {A,W}, target 8, nothing available:
	 * steal min(8, 16-8) = 8, capped by max_steal 1. */
	{ "steal one from the only owner", "W", "A x16", 0, 1, true, 2, 8, 1, 1, "A" },
	{ "max_steal 3", "W", "A x16", 0, 3, true, 2, 8, 3, 3, "A" },
	/* Quick passes never steal. */
	{ "quick pass does not steal", "W", "A x16", 0, 1, false, 2, 8, 0, 0, NULL },
	/* More workers than leases: 4 workers >= 3 leases, target 1; the
	 * most loaded has exactly target and needed is 1: no steal. */
	{ "more workers than leases, all busy", "D", "A B C", 0, 1, true, 4, 1, 0, 0, NULL },
	/* Workers {A,B,D} >= 3 leases: target 1; A has 2 > 1: steal 1. */
	{ "more workers than leases, one doubled", "D", "A A B", 0, 1, true, 3, 1, 1, 1, "A" },
	/* Cap: ceil(10/1) = 10 capped to 3. */
	{ "max_leases caps the target", "W", "-* x10", 3, 1, true, 1, 3, 3, 0, NULL },
	{ "max_leases reached", "W", "W W W -", 3, 1, true, 1, 3, 0, 0, NULL },
	/* Vanished worker A (all expired) is not counted: workers {B,W}, 6
	 * leases, target 3; 4 available, 2 of them very old: this pass takes
	 * just the very old ones. */
	{ "very old first", "W", "B B - -* A!* A!", 0, 1, true, 2, 3, 2, 0, NULL },
	/* Very old leases ignore the target: workers {W,A}, target 3, mine 2,
	 * needed 1, yet both very old leases are taken ... */
	{ "very old ignore the target", "W", "W W A A -* -*", 0, 1, true, 2, 3, 2, 0, NULL },
	/* ... but not max_leases: 3 - 2 = 1. */
	{ "very old capped by max_leases", "W", "W W A A -* -*", 3, 1, true, 2, 3, 1, 0, NULL },
	/* A starving lease is taken even when over target. */
	{ "very old when over target", "W", "W W W W A -*", 0, 1, true, 2, 3, 1, 0, NULL },
	/* Leases of a vanished worker: workers {B,C}, target 3, take 3 of 4. */
	{ "vanished worker's leases", "C", "A! x4 B B", 0, 1, true, 2, 3, 3, 0, NULL },
	/* 5 leases, workers {A,B,W}, target 2, mine 1, needed 1; most loaded
	 * has exactly target and needed is 1: balanced enough, no steal. */
	{ "within one: no steal", "W", "A A B B W", 0, 1, true, 3, 2, 0, 0, NULL },
	/* needed 2, most loaded 3 > target 2: min(2, 1) = 1. */
	{ "steal the excess", "W", "A A A B B B", 0, 1, true, 3, 2, 1, 1, NULL },
	/* needed 2, most loaded exactly at target: KCL steals 1 anyway. */
	{ "needed 2, victim at target", "W", "A A B B", 0, 1, true, 3, 2, 1, 1, "A" },
	/* Over target: take nothing, not even an unowned lease. */
	{ "over target takes nothing", "W", "W W W W A -", 0, 1, true, 2, 3, 0, 0, NULL },
	/* My own expired leases are available like any other. */
	{ "own expired leases", "W", "W! W! A A", 0, 1, true, 2, 2, 2, 0, NULL },
	/* 2 workers >= 2 leases: target 1; one available: take it. */
	{ "target 1 when workers >= leases", "W", "A -", 0, 1, true, 2, 1, 1, 0, NULL },
	/* Available leases exist but fewer than needed: take them, no steal
	 * in the same pass: workers {A,W}, target 5, needed 5, 1 available. */
	{ "available first, no steal in the same pass", "W", "A x9 -", 0, 1, true, 2, 5, 1, 0, NULL },
	/* Ties between most loaded workers without rng: first name. */
	{ "tie broken by name", "A", "C C B B", 0, 1, true, 3, 2, 1, 1, "B" },
};

static void check_plan(const struct taker_case *tc, const struct view *v,
		       const struct lease_taker_plan *p)
{
	uint32_t very_old_avail = 0, very_old_taken = 0, avail_taken;

	if (p->workers != tc->want_workers || p->target != tc->want_target ||
	    p->n_take != tc->want_take || p->n_steal != tc->want_steal)
		fprintf(stderr, "\n  case '%s': workers %u target %u take %zu steal %zu\n", tc->name,
			p->workers, p->target, p->n_take, p->n_steal);
	CU_ASSERT_EQUAL(p->workers, tc->want_workers);
	CU_ASSERT_EQUAL(p->target, tc->want_target);
	CU_ASSERT_EQUAL(p->n_take, tc->want_take);
	CU_ASSERT_EQUAL(p->n_steal, tc->want_steal);
	if (tc->want_victim) {
		CU_ASSERT_PTR_NOT_NULL_FATAL(p->steal_from);
		CU_ASSERT_STRING_EQUAL(p->steal_from, tc->want_victim);
	}
	if (!p->n_steal)
		CU_ASSERT_PTR_NULL(p->steal_from);
	CU_ASSERT(p->n_steal <= (tc->max_steal ? tc->max_steal : 1));

	/* No index twice; takes are available leases, steals the victim's. */
	for (size_t i = 0; i < p->n_take; i++) {
		const struct lease_taker_item *it = &v->items[p->take[i]];
		bool avail = !it->owner || it->expired;

		CU_ASSERT_FATAL(p->take[i] < v->n);
		for (size_t j = 0; j < i; j++)
			CU_ASSERT(p->take[j] != p->take[i]);
		if (i < p->n_take - p->n_steal) {
			CU_ASSERT(avail);
			very_old_taken += it->very_old;
		} else {
			CU_ASSERT(!avail);
			CU_ASSERT_STRING_EQUAL(it->owner, p->steal_from);
			CU_ASSERT(strcmp(it->owner, tc->me) != 0);
		}
	}
	/* When very old leases exist, a pass takes only those. */
	for (size_t i = 0; i < v->n; i++)
		very_old_avail += (!v->items[i].owner || v->items[i].expired) && v->items[i].very_old;
	avail_taken = (uint32_t)(p->n_take - p->n_steal);
	if (very_old_avail) {
		CU_ASSERT_EQUAL(very_old_taken, avail_taken);
		CU_ASSERT_EQUAL(p->n_steal, 0);
	}
}

static void test_taker_table(void)
{
	for (size_t k = 0; k < KL_ARRAY_LEN(cases); k++) {
		const struct taker_case *tc = &cases[k];
		struct lease_taker_params params = { tc->me, tc->max_leases, tc->max_steal,
						     tc->allow_steal };
		struct lease_taker_plan plan;
		struct view v;

		parse_view(tc->view, &v);
		CU_ASSERT_EQUAL_FATAL(lease_taker_compute(v.items, v.n, &params, NULL, &plan), KL_OK);
		check_plan(tc, &v, &plan);
		lease_taker_plan_done(&plan);
	}
}

static unsigned owner_count(const struct view *v, const char *owner)
{
	unsigned n = 0;

	for (size_t i = 0; i < v->n; i++)
		n += v->items[i].owner && !v->items[i].expired &&
		     strcmp(v->items[i].owner, owner) == 0;
	return n;
}

/* The same table with shuffling on: the counts and the rules must not
 * depend on the random choices. */
static void test_taker_table_shuffled(void)
{
	struct kl_rng rng;

	kl_rng_seed_value(&rng, 4242);
	for (int round = 0; round < 20; round++) {
		for (size_t k = 0; k < KL_ARRAY_LEN(cases); k++) {
			const struct taker_case *tc = &cases[k];
			struct lease_taker_params params = { tc->me, tc->max_leases, tc->max_steal,
							     tc->allow_steal };
			struct lease_taker_plan plan;
			struct view v;

			parse_view(tc->view, &v);
			CU_ASSERT_EQUAL_FATAL(lease_taker_compute(v.items, v.n, &params, &rng, &plan),
					      KL_OK);
			/* On ties the victim may be any of the most loaded;
			 * everything else must not change. */
			struct taker_case loose = *tc;

			if (plan.n_steal && tc->want_victim && plan.steal_from &&
			    owner_count(&v, plan.steal_from) == owner_count(&v, tc->want_victim))
				loose.want_victim = plan.steal_from;
			check_plan(&loose, &v, &plan);
			lease_taker_plan_done(&plan);
		}
	}
}

/*
 * Repeated full passes in the pure model (ownership changes at once,
 * nothing expires): from "one worker holds everything" the fleet must end
 * within one of target, and stay there.
 */
static unsigned converge(unsigned workers, unsigned leases, unsigned max_steal, struct kl_rng *rng)
{
	char names[8][8];
	const char *owner[128];
	struct lease_taker_item items[128];
	unsigned passes = 0;

	for (unsigned w = 0; w < workers; w++)
		snprintf(names[w], sizeof(names[w]), "w%u", w);
	for (unsigned i = 0; i < leases; i++)
		owner[i] = names[0];
	for (passes = 1; passes < 100; passes++) {
		unsigned counts[8] = { 0 }, target = (leases + workers - 1) / workers;
		bool ok = true;

		for (unsigned w = 0; w < workers; w++) {
			struct lease_taker_params p = { names[w], 0, max_steal, true };
			struct lease_taker_plan plan;

			for (unsigned i = 0; i < leases; i++) {
				items[i].owner = owner[i];
				items[i].expired = items[i].very_old = false;
			}
			CU_ASSERT_EQUAL_FATAL(lease_taker_compute(items, leases, &p, rng, &plan), KL_OK);
			for (size_t t = 0; t < plan.n_take; t++)
				owner[plan.take[t]] = names[w];
			lease_taker_plan_done(&plan);
		}
		for (unsigned i = 0; i < leases; i++)
			for (unsigned w = 0; w < workers; w++)
				counts[w] += owner[i] == names[w];
		for (unsigned w = 0; w < workers; w++)
			ok = ok && counts[w] + 1 >= target && counts[w] <= target + 1;
		if (ok)
			return passes;
	}
	return passes;
}

static void test_taker_convergence(void)
{
	struct kl_rng rng;
	unsigned p3 = 0, p5 = 0;

	kl_rng_seed_value(&rng, 7);
	/* Each under-target worker steals one per pass from the most loaded:
	 * a worker starting at 0 needs about target - 1 passes. */
	for (int r = 0; r < 10; r++) {
		unsigned a = converge(3, 16, 1, &rng), b = converge(5, 40, 1, &rng);

		p3 = a > p3 ? a : p3;
		p5 = b > p5 ? b : p5;
	}
	printf("\n  pure model: 3 workers/16 leases converge in <= %u passes, "
	       "5 workers/40 leases in <= %u\n", p3, p5);
	CU_ASSERT(p3 <= 6);   /* target 6: at most target passes */
	CU_ASSERT(p5 <= 8);   /* target 8 */
	/* max_steal 3 converges faster. */
	CU_ASSERT(converge(3, 16, 3, &rng) <= 3);
}

int main(void)
{
	static const struct kl_test t[] = {
		KL_TEST(test_taker_table),
		KL_TEST(test_taker_table_shuffled),
		KL_TEST(test_taker_convergence),
		{ 0 },
	};

	return kl_test_run("lease_taker", t);
}
