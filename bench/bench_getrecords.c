/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_getrecords.c: how fast a GetRecords response body turns into a
 * struct kinesis_records. It generates clickstream events (JSON of a few
 * hundred bytes: users, sessions, pages, actions, user agents), wraps them
 * as Kinesis records into AWS-shaped GetRecords bodies of up to 10 MB /
 * 10000 records, and times json-c's parse alone (the floor of any json-c
 * based path) and kinesis_parse_get_records() (scan, base64 decode, the
 * allocation and its free). Each run is checked against what was generated.
 * Prints medians. Built by `make bench`; make check never runs it.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "buf.h"
#include "kinesis.h"
#include "util.h"

#define BODY_CAP ((size_t)10 * 1000 * 1000)  /* GetRecords returns at most 10 MB */
#define MAX_RUNS 101

/* One generated response: the body and what a parser must find in it. */
struct sample {
	const char *name;
	struct buf body;
	struct buf payload;           /* every record's data, back to back */
	size_t n_records;
	size_t *data_len;             /* per record */
	int64_t *arrival_ms;          /* per record */
};

static const char *const pages[] = {
	"/", "/search", "/cart", "/checkout", "/checkout/payment", "/account/orders",
	"/products/shoes/running", "/products/shoes/trail", "/products/jackets/rain",
	"/products/bags/backpacks", "/blog/how-to-choose-running-shoes", "/help/returns",
};
static const char *const actions[] = {
	"page_view", "click", "scroll", "add_to_cart", "remove_from_cart", "search",
	"begin_checkout", "purchase", "video_play", "newsletter_signup",
};
static const char *const user_agents[] = {
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
	"Chrome/124.0.0.0 Safari/537.36",
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4_1) AppleWebKit/605.1.15 (KHTML, like Gecko) "
	"Version/17.4.1 Safari/605.1.15",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
	"(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
	"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
	"Chrome/124.0.6367.82 Mobile Safari/537.36",
	"Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
};
static const char *const referrers[] = {
	"https://www.google.com/", "https://www.bing.com/", "https://t.co/x8Yq2", "",
	"https://news.ycombinator.com/", "https://www.instagram.com/",
};
static const char *const countries[] = { "DE", "US", "FR", "GB", "NL", "SE", "JP", "BR" };
static const char *const devices[] = { "desktop", "mobile", "tablet" };

#define PICK(rng, a) ((a)[kl_rng_below((rng), KL_ARRAY_LEN(a))])

static void die(const char *what)
{
	fprintf(stderr, "bench_getrecords: %s\n", what);
	exit(1);
}

static void check(enum kl_err err, const char *what)
{
	if (err != KL_OK)
		die(what);
}

/* Appends one clickstream event (one JSON object, no newline) to out. */
static void gen_event(struct kl_rng *rng, int64_t ms, struct buf *out)
{
	uint64_t id = kl_rng_next(rng), id2 = kl_rng_next(rng);
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	char when[32];

	gmtime_r(&secs, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	check(buf_printf(out,
			 "{\"event_id\":\"%08" PRIx64 "-%04" PRIx64 "-4%03" PRIx64 "-a%03" PRIx64
			 "-%012" PRIx64 "\",\"ts\":\"%s.%03dZ\",\"type\":\"%s\","
			 "\"user_id\":\"u-%07" PRIu64 "\",\"session_id\":\"s-%012" PRIx64 "\","
			 "\"page\":\"%s\",\"referrer\":\"%s\",\"ua\":\"%s\","
			 "\"ip\":\"198.51.%d.%d\",\"country\":\"%s\",\"device\":\"%s\","
			 "\"value_cents\":%d,\"props\":{\"sku\":\"SKU-%05d\",\"qty\":%d}}",
			 id >> 32, (id >> 16) & 0xffff, (id >> 4) & 0xfff, id2 & 0xfff,
			 (id2 >> 16) & UINT64_C(0xffffffffffff), when, (int)(ms % 1000),
			 PICK(rng, actions), kl_rng_below(rng, 5000000), id2 >> 16,
			 PICK(rng, pages), PICK(rng, referrers), PICK(rng, user_agents),
			 (int)kl_rng_below(rng, 256), (int)kl_rng_below(rng, 256),
			 PICK(rng, countries), PICK(rng, devices), (int)kl_rng_below(rng, 20000),
			 (int)kl_rng_below(rng, 100000), 1 + (int)kl_rng_below(rng, 4)),
	      "out of memory");
}

/*
 * Builds a GetRecords body the way AWS writes one: 56-digit sequence
 * numbers, timestamps in E notation, EncryptionType, a long iterator.
 * Each record holds events joined by '\n' until it reaches record_target
 * bytes (0: one event per record); records are added while the body stays
 * under 10 MB and there are fewer than 10000.
 */
static void gen_sample(struct sample *smp, const char *name, size_t record_target, uint64_t seed)
{
	struct kl_rng rng;
	struct buf rec, b64;
	int64_t ms = INT64_C(1795291116903);
	size_t cap_lens = KINESIS_GET_RECORDS_MAX;

	memset(smp, 0, sizeof(*smp));
	smp->name = name;
	buf_init(&smp->body, 64 << 20);
	buf_init(&smp->payload, 64 << 20);
	buf_init(&rec, 0);
	buf_init(&b64, 0);
	smp->data_len = calloc(cap_lens, sizeof(*smp->data_len));
	smp->arrival_ms = calloc(cap_lens, sizeof(*smp->arrival_ms));
	if (!smp->data_len || !smp->arrival_ms)
		die("out of memory");
	kl_rng_seed_value(&rng, seed);
	check(buf_append_str(&smp->body, "{\"Records\":["), "out of memory");
	while (smp->n_records < KINESIS_GET_RECORDS_MAX) {
		size_t mark = smp->body.len;

		buf_reset(&rec);
		do {
			if (rec.len)
				check(buf_append_byte(&rec, '\n'), "out of memory");
			gen_event(&rng, ms, &rec);
			ms += (int64_t)kl_rng_below(&rng, 7);
		} while (rec.len < record_target);
		buf_reset(&b64);
		check(buf_reserve(&b64, KL_B64_ENCLEN(rec.len) + 1), "out of memory");
		kl_b64_encode((const uint8_t *)rec.data, rec.len, b64.data);
		check(buf_printf(&smp->body,
				 "%s{\"SequenceNumber\":\"49590338271490256608559692538361571095921575989"
				 "%09zu\",\"ApproximateArrivalTimestamp\":%" PRId64 ".%012" PRId64 "E9,"
				 "\"Data\":\"%s\",\"PartitionKey\":\"u-%07" PRIu64 "\","
				 "\"EncryptionType\":\"NONE\"}",
				 smp->n_records ? "," : "", smp->n_records, ms / INT64_C(1000000000000),
				 ms % INT64_C(1000000000000), b64.data, kl_rng_below(&rng, 5000000)),
		      "out of memory");
		if (smp->body.len > BODY_CAP - 400) {
			smp->body.len = mark;
			smp->body.data[mark] = '\0';
			break;
		}
		check(buf_append(&smp->payload, rec.data, rec.len), "out of memory");
		smp->arrival_ms[smp->n_records] = ms;
		smp->data_len[smp->n_records++] = rec.len;
	}
	check(buf_printf(&smp->body,
			 "],\"NextShardIterator\":\"AAAAAAAAAAGq1cHhO9X5b8Yp+jW3bZp7u1JQ8zK3mR2w"
			 "Vd0e4yT6nF5cL9hB2aG7kE1sD3fX8qP4tU6vI0oM5rN9lJ2yC7wA1zS3xH6gK8iE0uY4"
			 "bR5tQ7pO9nM2lK1jH3gF5dS7aZ9xC2vB4nM6qW8eR0tY3uI5oP7aS9dF1gH3jK5lZ7xC"
			 "9vB1nM3qW5eR7tY9uI1oP3aS5dF7gH9jK1lZ3xC5vB7nM9qW1eR3tY5uI7oP9aS1dF3g"
			 "==\",\"MillisBehindLatest\":0}"),
	      "out of memory");
	buf_done(&rec);
	buf_done(&b64);
}

static void free_sample(struct sample *smp)
{
	buf_done(&smp->body);
	buf_done(&smp->payload);
	free(smp->data_len);
	free(smp->arrival_ms);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* json-c's tokenizer over the whole body, then the tree freed. */
static double run_jsonc(const struct sample *smp)
{
	json_tokener *tok = json_tokener_new();
	json_object *obj;
	double t0 = now_s(), t;

	if (!tok)
		die("out of memory");
	obj = json_tokener_parse_ex(tok, smp->body.data, (int)smp->body.len);
	if (!obj || json_tokener_get_error(tok) != json_tokener_success)
		die("json-c rejected the generated body");
	json_object_put(obj);
	t = now_s() - t0;
	json_tokener_free(tok);
	return t;
}

/* The scanner, checked against the sample after the clock stopped. */
static double run_scanner(const struct sample *smp)
{
	struct kinesis_records *r = NULL;
	struct kl_errinfo info;
	double t0 = now_s(), t;
	enum kl_err err;
	size_t off = 0;

	err = kinesis_parse_get_records(smp->body.data, smp->body.len, &r, &info);
	t = now_s() - t0;
	if (err) {
		fprintf(stderr, "%s\n", info.message);
		die("the scanner rejected the generated body");
	}
	if (r->n_records != smp->n_records || r->data_bytes != smp->payload.len ||
	    !r->next_iterator || r->millis_behind_latest != 0)
		die("the scanner's result differs from the sample");
	for (size_t i = 0; i < r->n_records; i++) {
		if (r->records[i].data_len != smp->data_len[i] ||
		    r->records[i].arrival_ms != smp->arrival_ms[i] ||
		    memcmp(r->records[i].data, smp->payload.data + off, smp->data_len[i]) != 0)
			die("a record's data differs from the sample");
		off += smp->data_len[i];
	}
	t0 = now_s();
	kinesis_records_free(r);
	return t + (now_s() - t0);
}

static void report(const char *what, const struct sample *smp, double secs, int runs)
{
	printf("  %-26s %8.1f MB/s body %8.1f MB/s payload %10.0f records/s  (%.2f ms, median of %d)\n",
	       what, (double)smp->body.len / secs / 1e6, (double)smp->payload.len / secs / 1e6,
	       (double)smp->n_records / secs, secs * 1e3, runs);
}

static void bench(const struct sample *smp, int runs)
{
	double jsonc[MAX_RUNS], scanner[MAX_RUNS];

	printf("%s: %zu records, body %.2f MB, payload %.2f MB (avg record %zu bytes)\n",
	       smp->name, smp->n_records, (double)smp->body.len / 1e6,
	       (double)smp->payload.len / 1e6, smp->payload.len / smp->n_records);
	run_jsonc(smp);                    /* warm-up: page in, grow the heap */
	run_scanner(smp);
	for (int i = 0; i < runs; i++) {
		jsonc[i] = run_jsonc(smp);
		scanner[i] = run_scanner(smp);
	}
	report("json-c parse only", smp, median(jsonc, runs), runs);
	report("scanner + base64 decode", smp, median(scanner, runs), runs);
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_getrecords [-n runs (1..%d, default 11)] [-s seed]\n", MAX_RUNS);
	exit(2);
}

int main(int argc, char **argv)
{
	struct sample small, large;
	uint64_t seed = 42;
	int runs = 11;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
			runs = atoi(argv[++i]);
		else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 10);
		else
			usage();
	}
	if (runs < 1 || runs > MAX_RUNS)
		usage();
	printf("MB = 10^6 bytes; body = the HTTP response body, payload = decoded Data bytes\n");
	gen_sample(&small, "clickstream, one event per record (Limit 10000)", 0, seed);
	bench(&small, runs);
	free_sample(&small);
	gen_sample(&large, "clickstream, ~2 KB records (10 MB page)", 2048, seed + 1);
	bench(&large, runs);
	free_sample(&large);
	return 0;
}
