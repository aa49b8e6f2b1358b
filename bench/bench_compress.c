/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_compress.c: the record path with batching and compression, next to
 * the compressor alone on the same bytes (DESIGN.md section 8, issue 8).
 *
 *   path   recorded GetRecords bodies -> kinesis_parse_get_records() ->
 *          kpl_decode() -> xform_run() (built identity or clickstream
 *          plugin) -> delivery_push() -> spool (compress, SHA-256, write)
 *          -> delivery_flush(): seal (fsync, rename), intent in a memory
 *          lease + a real journal, "upload" (a stub: the upload is measured
 *          end to end, bench/e2e.sh), checkpoint, spool removed.
 *   lib    the library alone on exactly the bytes the spool was given
 *          (plugin outputs + "\n"): zlib deflate (gzip wrapper) or
 *          ZSTD_compressStream2 (checksum on), fed in SPOOL_DEFAULT_BUFFER
 *          chunks into an output buffer of the same size, output discarded.
 *   memory the record path without a sink (outputs joined in memory): what
 *          the path costs before batching and compression.
 *
 * Path and lib runs alternate (a busy machine slows both alike); figures
 * are medians of MB/s per CPU second of the thread (= per core), where
 * MB = 10^6 bytes given to the spool. Each path run is a fresh delivery:
 * batches of the default 64 MiB, the last one sealed by the flush.
 *
 *   bench_compress [-n runs] [-p identity|clickstream] [-P pages]
 *                  [-c none,gzip1,gzip6,zstd1,zstd3] [--dump FILE]
 *   bench_compress --lib FILE -c CODEC   compress FILE with the library
 *                  alone (whole-process timing against the gzip/zstd CLIs)
 * Built by `make bench`; make check never runs it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>
#ifdef HAVE_ZSTD
#include <zstd.h>
#endif

#include "buf.h"
#include "delivery.h"
#include "gen.h"
#include "harness.h"
#include "journal.h"
#include "keytmpl.h"
#include "kinesis.h"
#include "kpl.h"
#include "lease_clock.h"
#include "lease_coord.h"
#include "lease_store_mem.h"
#include "spool.h"
#include "util.h"
#include "xform.h"

#ifndef KL_BENCH_BUILDDIR
#error "KL_BENCH_BUILDDIR must name the build tree"
#endif

#define MAX_RUNS HARNESS_MAX_RUNS
#define MAX_PAGES 64
#define SHARD "shardId-000000000000"

/* ------------------------------------------------------------ data */

struct sample {
	struct buf body[MAX_PAGES];
	int n_pages;
	size_t n_user;                /* user records after de-aggregation */
	size_t payload;               /* user record bytes */
};

/* n_pages GetRecords bodies of <= 10000 records / 10 MB; every 5th record
 * a KPL aggregate of 20 events (gen.h; the "mixed" sample of
 * bench_recordpath). */
static void gen_sample(struct sample *smp, int n_pages, uint64_t seed)
{
	struct gen g;

	memset(smp, 0, sizeof(*smp));
	smp->n_pages = n_pages;
	gen_init(&g, seed, 5, 20);
	for (int pg = 0; pg < n_pages; pg++)
		harness_check(gen_page(&g, &smp->body[pg], "AAAAAAAAAAGq1cHhO9X5b8Yp"),
			      "cannot generate the sample");
	smp->n_user = g.n_user;
	smp->payload = g.payload;
	gen_done(&g);
}

/* ------------------------------------------------------------ codecs */

struct codec {
	const char *name;
	enum spool_codec codec;
	int level;
};

static const struct codec all_codecs[] = {
	{ "none", SPOOL_CODEC_NONE, 0 },   { "gzip1", SPOOL_CODEC_GZIP, 1 },
	{ "gzip6", SPOOL_CODEC_GZIP, 6 },  { "zstd1", SPOOL_CODEC_ZSTD, 1 },
	{ "zstd3", SPOOL_CODEC_ZSTD, 3 },
};

static const struct codec *find_codec(const char *name)
{
	for (size_t i = 0; i < KL_ARRAY_LEN(all_codecs); i++)
		if (strcmp(all_codecs[i].name, name) == 0)
			return &all_codecs[i];
	return NULL;
}

/*
 * The library alone: data[0..len) in chunk-sized pieces through the
 * compressor into an out buffer of the same size, output thrown away
 * (its size returned). The spool's settings: gzip wrapper, windowBits 15,
 * memLevel 8; zstd with the content checksum.
 */
static uint64_t lib_compress(const struct codec *c, const uint8_t *data, size_t len,
			     uint8_t *out, size_t chunk)
{
	uint64_t total = 0;

	if (c->codec == SPOOL_CODEC_GZIP) {
		z_stream zs;
		size_t off = 0;

		memset(&zs, 0, sizeof(zs));
		if (deflateInit2(&zs, c->level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
			harness_die("deflateInit2");
		for (;;) {
			size_t n = len - off > chunk ? chunk : len - off;
			int flush = off + n == len ? Z_FINISH : Z_NO_FLUSH;
			int zr;

			zs.next_in = (Bytef *)(uintptr_t)(data + off);
			zs.avail_in = (uInt)n;
			do {
				zs.next_out = out;
				zs.avail_out = (uInt)chunk;
				zr = deflate(&zs, flush);
				total += chunk - zs.avail_out;
			} while (zs.avail_out == 0 || (flush == Z_FINISH && zr != Z_STREAM_END));
			off += n;
			if (flush == Z_FINISH)
				break;
		}
		deflateEnd(&zs);
		return total;
	}
#ifdef HAVE_ZSTD
	if (c->codec == SPOOL_CODEC_ZSTD) {
		ZSTD_CCtx *zc = ZSTD_createCCtx();
		size_t off = 0;

		if (!zc || ZSTD_isError(ZSTD_CCtx_setParameter(zc, ZSTD_c_compressionLevel, c->level)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(zc, ZSTD_c_checksumFlag, 1)))
			harness_die("zstd context");
		for (;;) {
			size_t n = len - off > chunk ? chunk : len - off;
			bool last = off + n == len;
			ZSTD_inBuffer ib = { data + off, n, 0 };
			size_t zr;

			do {
				ZSTD_outBuffer ob = { out, chunk, 0 };

				zr = ZSTD_compressStream2(zc, &ob, &ib, last ? ZSTD_e_end : ZSTD_e_continue);
				if (ZSTD_isError(zr))
					harness_die("zstd");
				total += ob.pos;
			} while (last ? zr != 0 : ib.pos < ib.size);
			off += n;
			if (last)
				break;
		}
		ZSTD_freeCCtx(zc);
		return total;
	}
#endif
	harness_die("lib_compress: no such codec");
	return 0;
}

/* ------------------------------------------------------------ the path */

struct outcome {
	size_t user, ok, dropped, failed;
};

/* Stub uploader: the object is not sent (see the top of the file). */
static enum kl_err stub_upload(void *ctx, const struct delivery_upload *up,
			       struct delivery_upload_result *ret, struct kl_errinfo *info)
{
	uint64_t *bytes = ctx;

	(void)info;
	*bytes += up->bytes;
	ret->bytes = up->bytes;
	ret->n_parts = 0;
	return KL_OK;
}

static enum kl_err stub_remove(void *ctx, const char *key, struct kl_errinfo *info)
{
	(void)ctx;
	(void)key;
	(void)info;
	return KL_OK;
}

static const struct delivery_uploader_ops stub_ops = { stub_upload, stub_remove };

struct env {
	char dir[256];
	char spool_dir[300];
	struct journal *journal;
	struct keytmpl *dt, *et;
	struct kpl_decoder *dec;
	struct xform *x;
};

struct path_ctx {
	struct delivery *d;            /* NULL: join into mem */
	struct buf *mem;
	struct outcome *oc;
};

static void path_one(void *arg, const struct kl_transform_record *rec,
		     const struct xform_result *res)
{
	struct path_ctx *pc = arg;
	struct kl_errinfo info;

	pc->oc->user++;
	pc->oc->ok += res->result == KL_TRANSFORM_OK;
	pc->oc->dropped += res->result == KL_TRANSFORM_DROPPED;
	pc->oc->failed += res->result == KL_TRANSFORM_FAILED;
	if (pc->d) {
		harness_check_info(delivery_push(pc->d, rec, res, &info), &info, "push");
	} else if (res->result == KL_TRANSFORM_OK) {
		for (size_t k = 0; k < res->noutputs; k++) {
			harness_check(buf_append(pc->mem, res->outputs[k].data, res->outputs[k].len),
				      "output cap");
			harness_check(buf_append_byte(pc->mem, '\n'), "output cap");
		}
	}
}

/*
 * One pass over the sample. sink NULL: outputs joined into mem (the
 * "memory" case, and how the spool's input is captured); else pushed into
 * a fresh delivery with codec c, flushed at the end.
 */
static void run_path(struct env *e, const struct sample *smp, const struct codec *c,
		     struct buf *mem, struct outcome *oc, uint64_t *ret_object_bytes,
		     uint64_t *ret_spooled)
{
	struct lease_coord_config lcfg = { .worker_id = "bench", .failover_ms = 600000, .seed = 1 };
	struct lease_clock clock;
	struct lease_mem_table *table = NULL;
	struct lease_store *store = NULL;
	struct lease_coord *coord = NULL;
	struct lease_grant *grants = NULL;
	struct delivery *d = NULL;
	struct delivery_opts o;
	struct delivery_stats st;
	struct kl_errinfo info;
	struct path_ctx pc;
	size_t n_grants = 0;
	uint64_t uploaded = 0;

	memset(oc, 0, sizeof(*oc));
	if (c) {
		struct lease l;

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
		    lease_coord_grants(coord, &grants, &n_grants) != KL_OK || n_grants != 1)
			harness_die("cannot take the lease");
		memset(&o, 0, sizeof(o));
		o.grant = &grants[0];
		o.coord = coord;
		o.journal = e->journal;
		o.spool_dir = e->spool_dir;
		o.data_tmpl = e->dt;
		o.error_tmpl = e->et;
		o.spool.codec = c->codec;
		o.spool.level = c->level;
		o.uploader.ops = &stub_ops;
		o.uploader.ctx = &uploaded;
		/* batches sealed at the default 64 MiB and by the final flush, never by age */
		o.buffer_ms = 24 * 3600 * 1000;
		harness_check_info(delivery_new(&o, &d, &info), &info, "delivery_new");
	}
	pc.d = d;
	pc.mem = mem;
	pc.oc = oc;
	for (int pg = 0; pg < smp->n_pages; pg++)
		harness_run_body(&smp->body[pg], e->dec, e->x, SHARD, path_one, &pc);
	if (d) {
		harness_check_info(delivery_flush(d, &info), &info, "flush");
		delivery_get_stats(d, &st);
		if (st.batches_committed < 1 || st.in_flight)
			harness_die("the batch was not committed");
		*ret_object_bytes = uploaded;
		*ret_spooled = st.bytes_out;
		delivery_free(d);
		lease_grants_free(grants, n_grants);
		lease_coord_free(coord);
		lease_store_free(store);
		lease_mem_table_free(table);
	}
}

/* ------------------------------------------------------------ set-up */

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	return type == FTW_DP ? rmdir(path) : unlink(path);
}

static int read_file(const char *path, struct buf *out)
{
	int fd = open(path, O_RDONLY);
	struct stat sb;
	ssize_t n;

	if (fd < 0 || fstat(fd, &sb) != 0)
		return -1;
	buf_init(out, (size_t)sb.st_size + 1);
	if (buf_reserve(out, (size_t)sb.st_size + 1) != KL_OK)
		return -1;
	while ((n = read(fd, out->data + out->len, (size_t)sb.st_size - out->len)) > 0)
		out->len += (size_t)n;
	close(fd);
	return out->len == (size_t)sb.st_size ? 0 : -1;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: bench_compress [-n runs (1..%d, default 9)] [-p identity|clickstream]\n"
		"           [-P pages (1..%d, default 8)] [-s seed] [-c none,gzip1,gzip6,zstd1,zstd3]\n"
		"           [--dump FILE]\n"
		"       bench_compress --lib FILE -c CODEC [-n repeats (default 1)]\n",
		MAX_RUNS, MAX_PAGES);
	exit(2);
}

/* --lib: the library alone on a file's bytes, for whole-process timing. */
static int lib_only(const char *path, const char *codecs, int repeats)
{
	const struct codec *c = find_codec(codecs);
	struct buf data;
	uint8_t *out = malloc(SPOOL_DEFAULT_BUFFER);
	uint64_t z = 0;

	if (!c || c->codec == SPOOL_CODEC_NONE || !out)
		usage();
	if (read_file(path, &data) != 0)
		harness_die("cannot read the --lib file");
	for (int i = 0; i < repeats; i++)
		z = lib_compress(c, (const uint8_t *)data.data, data.len, out, SPOOL_DEFAULT_BUFFER);
	printf("%s: %zu bytes -> %" PRIu64 "\n", c->name, data.len, z);
	buf_done(&data);
	free(out);
	return 0;
}

int main(int argc, char **argv)
{
	const char *plugin = "clickstream", *codec_list = "none,gzip1,gzip6,zstd1";
	const char *dump = NULL, *lib_file = NULL;
	const struct codec *codecs[KL_ARRAY_LEN(all_codecs)];
	size_t n_codecs = 0;
	struct xform_plugin *xp;
	struct kl_errinfo info;
	struct sample smp;
	struct outcome oc;
	struct env e;
	struct buf joined;
	uint8_t *lib_out;
	uint64_t seed = 42;
	int runs = 9, n_pages = 8;
	bool runs_given = false;

	harness_init("bench_compress");
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
			runs = atoi(argv[++i]);
			runs_given = true;
		} else if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) {
			plugin = argv[++i];
		} else if (strcmp(argv[i], "-P") == 0 && i + 1 < argc) {
			n_pages = atoi(argv[++i]);
		} else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
			seed = strtoull(argv[++i], NULL, 10);
		} else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			codec_list = argv[++i];
		} else if (strcmp(argv[i], "--dump") == 0 && i + 1 < argc) {
			dump = argv[++i];
		} else if (strcmp(argv[i], "--lib") == 0 && i + 1 < argc) {
			lib_file = argv[++i];
		} else {
			usage();
		}
	}
	if (runs < 1 || runs > MAX_RUNS || n_pages < 1 || n_pages > MAX_PAGES)
		usage();
	if (lib_file)
		return lib_only(lib_file, codec_list, runs_given ? runs : 1);
	if (strcmp(plugin, "identity") != 0 && strcmp(plugin, "clickstream") != 0)
		usage();
	{
		char list[128], *save = NULL;

		snprintf(list, sizeof(list), "%s", codec_list);
		for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			const struct codec *c = find_codec(t);

			if (!c || n_codecs == KL_ARRAY_LEN(codecs))
				usage();
			if (!spool_codec_available(c->codec))
				harness_die("this build has no zstd (configure --with-zstd)");
			codecs[n_codecs++] = c;
		}
	}

	memset(&e, 0, sizeof(e));
	snprintf(e.dir, sizeof(e.dir), "%s/kl-bench-compress-XXXXXX",
		 getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(e.dir))
		harness_die("mkdtemp");
	snprintf(e.spool_dir, sizeof(e.spool_dir), "%s/spool", e.dir);
	if (mkdir(e.spool_dir, 0750) != 0)
		harness_die("mkdir spool");
	{
		char jpath[320];

		snprintf(jpath, sizeof(jpath), "%s/journal.db", e.dir);
		harness_check_info(journal_open(jpath, &e.journal, &info), &info, "journal");
	}
	harness_check_info(keytmpl_compile("!{timestamp:yyyy/MM/dd/HH}/", KEYTMPL_DATA, &e.dt, &info), &info,
		   "template");
	harness_check_info(keytmpl_compile("errors/!{firehose:error-output-type}/", KEYTMPL_ERROR, &e.et,
				   &info), &info, "template");
	harness_check_info(kpl_decoder_new(&info, &e.dec), &info, "kpl_decoder_new");
	xp = harness_load_plugin(KL_BENCH_BUILDDIR, e.dir, plugin);
	harness_check_info(xform_new(xp, NULL, &info, &e.x), &info, "plugin instance");

	gen_sample(&smp, n_pages, seed);
	/* What the spool is given: capture it once. */
	buf_init(&joined, (size_t)1 << 30);
	run_path(&e, &smp, NULL, &joined, &oc, NULL, NULL);
	if (oc.user != smp.n_user)
		harness_die("user record count differs");
	if (dump) {
		FILE *f = fopen(dump, "w");

		if (!f || fwrite(joined.data, 1, joined.len, f) != joined.len || fclose(f) != 0)
			harness_die("cannot write --dump file");
	}
	lib_out = malloc(SPOOL_DEFAULT_BUFFER);
	if (!lib_out)
		harness_die("out of memory");

	printf("bench_compress: %s plugin, %d GetRecords bodies, %zu user records (%.2f MB events,"
	       " 1 Kinesis record in 5 a KPL aggregate of 20), ok %zu dropped %zu failed %zu;\n"
	       "spool input %.2f MB; buffers %zu KiB; single thread, median of %d runs;\n"
	       "MB/s = 10^6 bytes of spool input per CPU second of the thread (per core)\n",
	       plugin, n_pages, smp.n_user, (double)smp.payload / 1e6, oc.ok, oc.dropped, oc.failed,
	       (double)joined.len / 1e6, SPOOL_DEFAULT_BUFFER >> 10, runs);
	printf("%-6s %10s %10s %10s %8s %12s %8s\n", "codec", "path", "lib alone", "path/lib",
	       "ratio", "path wall", "records/s");
	for (size_t ci = 0; ci < n_codecs; ci++) {
		const struct codec *c = codecs[ci];
		double cpu[2][MAX_RUNS], wall[MAX_RUNS];
		uint64_t obj = 0, spooled = 0, z = 0;

		for (int i = -1; i < runs; i++) {   /* run -1 warms up */
			double t0 = harness_cpu_now(), w0 = harness_wall_now(), t1, w1, t2;

			run_path(&e, &smp, c, NULL, &oc, &obj, &spooled);
			t1 = harness_cpu_now();
			w1 = harness_wall_now();
			if (spooled != joined.len)
				harness_die("the spool was given other bytes than captured");
			if (c->codec != SPOOL_CODEC_NONE) {
				z = lib_compress(c, (const uint8_t *)joined.data, joined.len, lib_out,
						 SPOOL_DEFAULT_BUFFER);
			}
			t2 = harness_cpu_now();
			if (i >= 0) {
				cpu[0][i] = t1 - t0;
				cpu[1][i] = t2 - t1;
				wall[i] = w1 - w0;
			}
		}
		{
			double mb = (double)joined.len / 1e6;
			double p = mb / harness_median(cpu[0], runs);
			double l = c->codec != SPOOL_CODEC_NONE ? mb / harness_median(cpu[1], runs) : 0;
			double ratios[MAX_RUNS];

			/* the ratio pair by pair (same round), then its median */
			for (int i = 0; i < runs; i++)
				ratios[i] = cpu[1][i] / cpu[0][i];
			if (c->codec != SPOOL_CODEC_NONE) {
				printf("%-6s %10.1f %10.1f %9.0f%% %8.2f %12.1f %9.0f\n", c->name, p, l,
				       100 * harness_median(ratios, runs), (double)joined.len / (double)obj,
				       mb / harness_median(wall, runs),
				       (double)smp.n_user / harness_median(cpu[0], runs));
				if (z != obj)
					printf("       (library output %" PRIu64 " B, object %" PRIu64
					       " B)\n", z, obj);
			} else {
				printf("%-6s %10.1f %10s %10s %8.2f %12.1f %9.0f\n", c->name, p, "-", "-",
				       1.0, mb / harness_median(wall, runs),
				       (double)smp.n_user / harness_median(cpu[0], runs));
			}
			fflush(stdout);
		}
	}
	{
		double cpu[MAX_RUNS];

		for (int i = -1; i < runs; i++) {
			double t0 = harness_cpu_now();

			buf_reset(&joined);
			run_path(&e, &smp, NULL, &joined, &oc, NULL, NULL);
			if (i >= 0)
				cpu[i] = harness_cpu_now() - t0;
		}
		printf("memory %10.1f   (record path without a sink: outputs joined in memory)\n",
		       (double)joined.len / 1e6 / harness_median(cpu, runs));
	}

	free(lib_out);
	buf_done(&joined);
	for (int pg = 0; pg < smp.n_pages; pg++)
		buf_done(&smp.body[pg]);
	xform_free(e.x);
	xform_plugin_free(xp);
	kpl_decoder_free(e.dec);
	keytmpl_free(e.dt);
	keytmpl_free(e.et);
	journal_close(e.journal);
	if (nftw(e.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
		fprintf(stderr, "bench_compress: could not remove %s\n", e.dir);
	return 0;
}
