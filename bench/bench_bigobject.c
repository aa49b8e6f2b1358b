/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_bigobject.c: memory and throughput of the S3 sink on big objects
 * (DESIGN.md section 8: "peak RSS while writing a 1 GiB object"). Generated
 * clickstream JSON goes through delivery_push() -> spool (gzip or zstd) ->
 * the exactly-once protocol (memory lease store, real journal) ->
 * s3_upload_file() to s3rver. Two kinds of run, each in its own child
 * process so that VmHWM (peak RSS, /proc/self/status) is its own:
 *   big      one batch whose compressed object reaches --object-mib
 *            (default 1024), then flush: one multipart upload
 *   default  --raw-mib (default 1024) of records with the default
 *            settings (64 MiB batches, 16 MiB threshold and parts):
 *            S3 requests and lease writes per GB
 * Run under the emulators (needs KL_TEST_S3_ENDPOINT and the keys):
 *   tests/emu/emulators.sh --no-moto -- ./bench/bench_bigobject [--codec gzip|zstd|both]
 *       [--object-mib N] [--raw-mib N] [--only big|default]
 * Built by `make bench`; make check never runs it.
 */
#include "config.h"

#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aws.h"
#include "creds.h"
#include "delivery.h"
#include "http.h"
#include "journal.h"
#include "keytmpl.h"
#include "lease_clock.h"
#include "lease_coord.h"
#include "lease_store_mem.h"
#include "s3.h"
#include "spool.h"
#include "util.h"

#define BUCKET "kl-bench-bigobject"
#define SHARD "shardId-000000000000"
#define MiB ((uint64_t)1 << 20)

/* ---------------------------------------------------------------- records */

static const char *const pages[] = {
	"/", "/search", "/cart", "/checkout", "/checkout/payment", "/account/orders",
	"/products/shoes/running", "/products/shoes/trail", "/products/jackets/rain",
	"/products/bags/backpacks", "/blog/how-to-choose-running-shoes", "/help/returns",
};
static const char *const events[] = {
	"page_view", "click", "scroll", "add_to_cart", "remove_from_cart", "search",
	"begin_checkout", "purchase", "video_play", "newsletter_signup",
};
static const char *const agents[] = {
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
	"Chrome/124.0.0.0 Safari/537.36",
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4_1) AppleWebKit/605.1.15 (KHTML, like Gecko) "
	"Version/17.4.1 Safari/605.1.15",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
	"(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
	"Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
};
static const char *const countries[] = { "DE", "US", "FR", "GB", "NL", "SE", "JP", "BR" };

/* One clickstream event of ~350-450 bytes for record n. */
static size_t make_event(struct kl_rng *rng, uint64_t n, int64_t ts_ms, char *out, size_t size)
{
	uint64_t user = kl_rng_below(rng, 200000);
	int len = snprintf(out, size,
			   "{\"id\":%" PRIu64 ",\"ts\":%" PRId64 ",\"event_type\":\"%s\","
			   "\"user_id\":\"u-%06" PRIu64 "\",\"session_id\":\"s-%08" PRIx64 "\","
			   "\"page\":\"%s\",\"referrer\":\"https://www.example.com%s?q=%" PRIu64 "\","
			   "\"country\":\"%s\",\"price_cents\":%" PRIu64 ",\"items\":%" PRIu64 ","
			   "\"ua\":\"%s\"}",
			   n, ts_ms, events[kl_rng_below(rng, KL_ARRAY_LEN(events))], user,
			   kl_rng_next(rng) & 0xffffffffu, pages[kl_rng_below(rng, KL_ARRAY_LEN(pages))],
			   pages[kl_rng_below(rng, KL_ARRAY_LEN(pages))], kl_rng_below(rng, 100000),
			   countries[user % KL_ARRAY_LEN(countries)], kl_rng_below(rng, 50000),
			   kl_rng_below(rng, 9) + 1, agents[user % KL_ARRAY_LEN(agents)]);

	return len < 0 ? 0 : (size_t)len;
}

/* ---------------------------------------------------------------- measuring */

static long vm_hwm_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static double cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

/* The S3 uploader, timed. */
struct timed {
	struct delivery_s3 s3;
	struct delivery_uploader real;
	int64_t upload_ms;
	uint64_t upload_bytes;
	unsigned max_parts;
	char **keys;
	size_t n_keys;
};

static enum kl_err timed_upload(void *ctx, const struct delivery_upload *up,
				struct delivery_upload_result *ret, struct kl_errinfo *info)
{
	struct timed *t = ctx;
	int64_t t0 = kl_mono_ms();
	enum kl_err err = t->real.ops->upload(t->real.ctx, up, ret, info);
	char **nk;

	t->upload_ms += kl_mono_ms() - t0;
	if (err)
		return err;
	t->upload_bytes += ret->bytes;
	if (ret->n_parts > t->max_parts)
		t->max_parts = ret->n_parts;
	nk = realloc(t->keys, (t->n_keys + 1) * sizeof(*nk));
	if (nk) {
		t->keys = nk;
		t->keys[t->n_keys] = strdup(up->key);
		if (t->keys[t->n_keys])
			t->n_keys++;
	}
	return KL_OK;
}

static enum kl_err timed_remove(void *ctx, const char *key, struct kl_errinfo *info)
{
	struct timed *t = ctx;

	return t->real.ops->remove(t->real.ctx, key, info);
}

static const struct delivery_uploader_ops timed_ops = { timed_upload, timed_remove };

/* ---------------------------------------------------------------- one run */

struct run_cfg {
	const char *mode;          /* "big" or "default" */
	enum spool_codec codec;
	uint64_t object_bytes;     /* big: seal when the compressed object reaches it */
	uint64_t raw_bytes;        /* default: records to push (uncompressed) */
};

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	return type == FTW_DP ? rmdir(path) : unlink(path);
}

/* Removes our own temporary directory (made by mkdtemp below). */
static void rm_rf(const char *dir)
{
	if (nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
		fprintf(stderr, "bench: could not remove %s\n", dir);
}

static int fail(const char *what, enum kl_err err, const struct kl_errinfo *info)
{
	char msg[700];

	fprintf(stderr, "bench: %s: %s\n", what, kl_errinfo_format(err, info, msg, sizeof(msg)));
	return 1;
}

static int run_one(const struct run_cfg *rc)
{
	const char *endpoint = getenv("KL_TEST_S3_ENDPOINT");
	const char *tmpbase = getenv("KL_TEST_EMU_DIR");
	struct creds_config cc = {
		.access_key_id = getenv("KL_TEST_ACCESS_KEY_ID"),
		.secret_access_key = getenv("KL_TEST_SECRET_ACCESS_KEY"),
		.disable_imds = 1,
	};
	struct aws_client_config acfg = {
		.service = "s3", .region = "us-east-1", .endpoint = endpoint,
		.http = { .timeout_ms = 600000 },
	};
	struct lease_coord_config lcfg = { .worker_id = "bench", .failover_ms = 600000, .seed = 1 };
	struct creds_chain *creds = NULL;
	struct aws_client client;
	struct lease_clock clock;
	struct lease_mem_table *table = NULL;
	struct lease_store *store = NULL;
	struct lease_coord *coord = NULL;
	struct lease_grant *grants = NULL;
	struct journal *journal = NULL;
	struct keytmpl *dt = NULL, *et = NULL;
	struct delivery *d = NULL;
	struct delivery_opts o;
	struct delivery_stats st;
	struct lease_mem_stats ls;
	struct aws_stats base;
	struct timed up;
	struct kl_errinfo info;
	struct kl_rng rng;
	struct lease l;
	char dir[256], spool_dir[300], jpath[300], tmpl[256], event[1024], seq[64];
	size_t n_grants = 0;
	uint64_t n = 0, raw = 0;
	int64_t t0, t_push_end, t_end, arrival0 = 1795291116903;
	double cpu0, cpu1;
	enum kl_err err;
	int rcode = 1;

	memset(&client, 0, sizeof(client));
	memset(&up, 0, sizeof(up));
	kl_errinfo_clear(&info);
	snprintf(dir, sizeof(dir), "%s/kl-bench-XXXXXX", tmpbase && *tmpbase ? tmpbase : "/tmp");
	if (!mkdtemp(dir)) {
		perror("bench: mkdtemp");
		return 1;
	}
	snprintf(spool_dir, sizeof(spool_dir), "%s/spool", dir);
	snprintf(jpath, sizeof(jpath), "%s/journal.db", dir);
	mkdir(spool_dir, 0750);
	if (http_global_init() != KL_OK || creds_chain_new(&cc, &creds) != KL_OK ||
	    aws_client_init(&client, &acfg, creds) != KL_OK) {
		fprintf(stderr, "bench: cannot set up the S3 client\n");
		goto out;
	}
	err = s3_create_bucket(&client, BUCKET, &info);
	if (err && err != KL_EEXISTS) {
		fail("CreateBucket", err, &info);
		goto out;
	}
	lease_clock_real(&clock);
	table = lease_mem_table_new();
	lease_init(&l);
	lease_set_str(&l.key, SHARD);
	l.checkpoint = lease_esn_sentinel(LEASE_ESN_TRIM_HORIZON);
	lease_mem_table_put(table, &l);
	lease_done(&l);
	store = lease_store_mem_new(table, &clock);
	if (!store || lease_coord_new(&lcfg, store, &clock, NULL, &coord, &info) != KL_OK ||
	    lease_coord_tick(coord, &info) != KL_OK ||
	    lease_coord_grants(coord, &grants, &n_grants) != KL_OK || n_grants != 1) {
		fprintf(stderr, "bench: cannot take the lease\n");
		goto out;
	}
	if ((err = journal_open(jpath, &journal, &info)) != KL_OK) {
		fail("journal", err, &info);
		goto out;
	}
	snprintf(tmpl, sizeof(tmpl), "bench/%d/%s-%s/!{timestamp:yyyy/MM/dd/HH}/", (int)getpid(),
		 rc->mode, spool_codec_name(rc->codec));
	if (keytmpl_compile(tmpl, KEYTMPL_DATA, &dt, &info) != KL_OK ||
	    keytmpl_compile("bench-errors/!{firehose:error-output-type}/", KEYTMPL_ERROR, &et,
			    &info) != KL_OK) {
		fail("template", KL_ECONFIG, &info);
		goto out;
	}
	up.s3.client = &client;
	up.s3.bucket = BUCKET;
	/* threshold and part size: the defaults (16 MiB) in both kinds of run */
	delivery_s3_uploader(&up.s3, &up.real);
	memset(&o, 0, sizeof(o));
	o.grant = &grants[0];
	o.coord = coord;
	o.journal = journal;
	o.spool_dir = spool_dir;
	o.data_tmpl = dt;
	o.error_tmpl = et;
	o.spool.codec = rc->codec;
	o.uploader.ops = &timed_ops;
	o.uploader.ctx = &up;
	o.buffer_ms = 24 * 3600 * 1000;   /* never on age: the bench pushes as fast as it can */
	if (strcmp(rc->mode, "big") == 0)
		o.buffer_bytes = UINT64_MAX / 2;   /* only the flush seals */
	/* else: the default 64 MiB */
	if ((err = delivery_new(&o, &d, &info)) != KL_OK) {
		fail("delivery_new", err, &info);
		goto out;
	}

	kl_rng_seed_value(&rng, 20261121);
	base = client.stats;   /* CreateBucket is not part of the figures */
	cpu0 = cpu_seconds();
	t0 = kl_mono_ms();
	for (;;) {
		struct kl_transform_record r;
		struct xform_output out;
		struct xform_result res;
		int64_t ts = arrival0 + (int64_t)(n / 4);
		size_t len = make_event(&rng, n, ts, event, sizeof(event));

		memset(&r, 0, sizeof(r));
		snprintf(seq, sizeof(seq), "4959033827149025660855969253%028" PRIu64, 1000 + n);
		r.data = (const uint8_t *)event;
		r.len = len;
		r.partition_key = "user";
		r.sequence_number = seq;
		r.shard_id = SHARD;
		r.approximate_arrival_ms = ts;
		memset(&out, 0, sizeof(out));
		out.data = r.data;
		out.len = len;
		memset(&res, 0, sizeof(res));
		res.result = KL_TRANSFORM_OK;
		res.outputs = &out;
		res.noutputs = 1;
		err = delivery_push(d, &r, &res, &info);
		if (err) {
			fail("push", err, &info);
			goto out;
		}
		n++;
		raw += len + 1;
		if ((n & 8191) == 0) {
			if (kl_mono_ms() >= lease_coord_next_due(coord))
				lease_coord_tick(coord, NULL);
			if (strcmp(rc->mode, "big") == 0) {
				delivery_get_stats(d, &st);
				if (st.open_spool_bytes >= rc->object_bytes)
					break;
			} else if (raw >= rc->raw_bytes) {
				break;
			}
		}
	}
	t_push_end = kl_mono_ms();
	if ((err = delivery_flush(d, &info)) != KL_OK) {
		fail("flush", err, &info);
		goto out;
	}
	t_end = kl_mono_ms();
	cpu1 = cpu_seconds();
	delivery_get_stats(d, &st);
	lease_store_mem_get_stats(store, &ls);
	{
		double gb_raw = (double)raw / 1e9;
		double secs = (double)(t_end - t0) / 1000.0;
		double up_secs = (double)up.upload_ms / 1000.0;
		uint64_t lease_writes = ls.applied[LEASE_MEM_OP_PREPARE] +
					ls.applied[LEASE_MEM_OP_CHECKPOINT];

		printf("%-7s %-4s records %" PRIu64 ", raw %.1f MiB -> objects %" PRIu64 " (%.1f MiB,"
		       " ratio %.2f, largest multipart %u parts), batches %" PRIu64 "\n",
		       rc->mode, spool_codec_name(rc->codec), n, (double)raw / MiB, st.objects_uploaded,
		       (double)st.bytes_uploaded / MiB, (double)raw / (double)st.bytes_uploaded,
		       up.max_parts, st.batches_committed);
		printf("        peak RSS (VmHWM) %.1f MiB\n", vm_hwm_kb() / 1024.0);
		printf("        wall %.1f s (push+spool %.1f s, final flush %.1f s), CPU %.1f s;"
		       " records->S3 %.1f MB/s of raw data per wall second, %.1f per CPU second\n",
		       secs, (double)(t_push_end - t0) / 1000.0, (double)(t_end - t_push_end) / 1000.0,
		       cpu1 - cpu0, (double)raw / 1e6 / secs, (double)raw / 1e6 / (cpu1 - cpu0));
		printf("        upload: %.1f MiB in %.1f s = %.1f MB/s (s3_upload_file to s3rver)\n",
		       (double)up.upload_bytes / MiB, up_secs,
		       up_secs > 0 ? (double)up.upload_bytes / 1e6 / up_secs : 0.0);
		uint64_t reqs = client.stats.attempts - base.attempts;

		printf("        S3 HTTP requests %" PRIu64 " (%" PRIu64 " calls, %" PRIu64 " retries):"
		       " %.1f per GB raw, %.1f per GB stored\n",
		       reqs, client.stats.calls - base.calls, client.stats.retries - base.retries,
		       (double)reqs / gb_raw, (double)reqs / ((double)st.bytes_uploaded / 1e9));
		printf("        lease writes (intent + checkpoint) %" PRIu64 ": %.1f per GB raw"
		       " (+ %" PRIu64 " renewals, time-driven)\n",
		       lease_writes, (double)lease_writes / gb_raw, ls.applied[LEASE_MEM_OP_RENEW]);
	}
	/* Clean up the bucket so repeated runs do not fill the emulator's disk. */
	for (size_t i = 0; i < up.n_keys; i++)
		s3_delete_object(&client, BUCKET, up.keys[i], NULL);
	rcode = 0;
out:
	delivery_free(d);
	for (size_t i = 0; i < up.n_keys; i++)
		free(up.keys[i]);
	free(up.keys);
	keytmpl_free(dt);
	keytmpl_free(et);
	journal_close(journal);
	lease_grants_free(grants, n_grants);
	lease_coord_free(coord);
	lease_store_free(store);
	lease_mem_table_free(table);
	aws_client_done(&client);
	creds_chain_free(creds);
	http_global_cleanup();
	rm_rf(dir);
	fflush(stdout);
	return rcode;
}

static int usage(void)
{
	fprintf(stderr, "usage: bench_bigobject [--codec gzip|zstd|both] [--object-mib N]"
		" [--raw-mib N] [--only big|default]\n");
	return 64;
}

int main(int argc, char **argv)
{
	const char *codec = "both", *only = NULL;
	uint64_t object_mib = 1024, raw_mib = 1024;
	enum spool_codec codecs[2];
	size_t n_codecs = 0;
	int failed = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--codec") == 0 && i + 1 < argc)
			codec = argv[++i];
		else if (strcmp(argv[i], "--object-mib") == 0 && i + 1 < argc)
			object_mib = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--raw-mib") == 0 && i + 1 < argc)
			raw_mib = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
			only = argv[++i];
		else
			return usage();
	}
	if (!getenv("KL_TEST_S3_ENDPOINT") || !getenv("KL_TEST_ACCESS_KEY_ID")) {
		fprintf(stderr, "bench_bigobject: run it under tests/emu/emulators.sh\n");
		return 77;
	}
	if (strcmp(codec, "gzip") == 0 || strcmp(codec, "both") == 0)
		codecs[n_codecs++] = SPOOL_CODEC_GZIP;
	if ((strcmp(codec, "zstd") == 0 || strcmp(codec, "both") == 0) &&
	    spool_codec_available(SPOOL_CODEC_ZSTD))
		codecs[n_codecs++] = SPOOL_CODEC_ZSTD;
	if (!n_codecs)
		return usage();
	printf("bench_bigobject: gzip level 6 / zstd level 3 (the config defaults), 1 shard, "
	       "one process per run\n");
	for (int mode = 0; mode < 2; mode++) {
		const char *name = mode == 0 ? "big" : "default";

		if (only && strcmp(only, name) != 0)
			continue;
		for (size_t c = 0; c < n_codecs; c++) {
			struct run_cfg rc = { name, codecs[c], object_mib * MiB, raw_mib * MiB };
			pid_t pid;
			int status = 0;

			fflush(stdout);
			pid = fork();
			if (pid < 0) {
				perror("fork");
				return 1;
			}
			if (pid == 0)
				_exit(run_one(&rc));
			if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
			    WEXITSTATUS(status) != 0)
				failed = 1;
		}
	}
	return failed;
}
