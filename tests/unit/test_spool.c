/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_spool.c: the spool writer. Every file written is decoded again
 * with zlib / libzstd here and compared byte for byte; the streaming test
 * writes 200 MB per codec (less under ASan / valgrind, see big_total) and checks
 * that peak RSS does not grow with it; disk-full is simulated with
 * RLIMIT_FSIZE (works without root); verify is checked against intact,
 * truncated and bit-flipped files. Each test works in its own temp dir.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <zlib.h>
#ifdef HAVE_ZSTD
#include <zstd.h>
#endif

#include "esn.h"
#include "kl_err.h"
#include "spool.h"
#include "testutil.h"
#include "util.h"

/* ---------------------------------------------------------------- helpers */

static char *make_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	char tmpl[512];
	char *d;

	snprintf(tmpl, sizeof(tmpl), "%s/kl-spool-XXXXXX", base && *base ? base : "/tmp");
	d = mkdtemp(tmpl);
	CU_ASSERT_PTR_NOT_NULL_FATAL(d);
	return strdup(d);
}

static void rm_tmpdir(char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char p[1024];

	if (d) {
		while ((de = readdir(d)) != NULL) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
			unlink(p);
		}
		closedir(d);
	}
	CU_ASSERT_EQUAL(rmdir(dir), 0);
	free(dir);
}

static bool file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static uint8_t *read_file(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *p = NULL;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	p = malloc((size_t)n + 1);
	if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
		free(p);
		p = NULL;
	}
	fclose(f);
	*ret_len = (size_t)n;
	return p;
}

static void sha256_hex(const void *p, size_t n, char *out)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
	kl_hex(md, len, out);
}

/*
 * Decodes a whole gzip file in memory the way `gzip -t` would check it:
 * one member, CRC and length trailer verified by zlib, nothing after it.
 * Returns a malloc'd buffer or NULL when the stream is invalid.
 */
static uint8_t *gunzip(const uint8_t *in, size_t in_len, size_t *ret_len)
{
	z_stream zs;
	size_t cap = in_len * 4 + 1024, len = 0;
	uint8_t *out = malloc(cap);
	int zr;

	memset(&zs, 0, sizeof(zs));
	if (!out || inflateInit2(&zs, 16 + 15) != Z_OK) {
		free(out);
		return NULL;
	}
	zs.next_in = (Bytef *)(uintptr_t)in;
	zs.avail_in = (uInt)in_len;
	do {
		if (len == cap) {
			cap *= 2;
			out = realloc(out, cap);
		}
		zs.next_out = out + len;
		zs.avail_out = (uInt)(cap - len);
		zr = inflate(&zs, Z_NO_FLUSH);
		len = cap - zs.avail_out;
	} while (zr == Z_OK);
	inflateEnd(&zs);
	if (zr != Z_STREAM_END || zs.avail_in != 0) {
		free(out);
		return NULL;
	}
	*ret_len = len;
	return out;
}

#ifdef HAVE_ZSTD
static uint8_t *unzstd(const uint8_t *in, size_t in_len, size_t *ret_len)
{
	ZSTD_DCtx *dc = ZSTD_createDCtx();
	ZSTD_inBuffer ib = { in, in_len, 0 };
	size_t cap = in_len * 4 + 1024, zr = 1;
	uint8_t *out = malloc(cap);
	ZSTD_outBuffer ob = { out, cap, 0 };

	while (ib.pos < ib.size || zr != 0) {
		if (ob.pos == ob.size) {
			cap *= 2;
			out = realloc(out, cap);
			ob.dst = out;
			ob.size = cap;
		}
		zr = ZSTD_decompressStream(dc, &ob, &ib);
		if (ZSTD_isError(zr) || (zr != 0 && ib.pos == ib.size && ob.pos < ob.size))
			break;
	}
	ZSTD_freeDCtx(dc);
	if (ZSTD_isError(zr) || zr != 0) {
		free(out);
		return NULL;
	}
	*ret_len = ob.pos;
	return out;
}
#endif

/* Decodes a spool file of codec; NULL when it is not a valid stream. */
static uint8_t *decode_file(const char *path, enum spool_codec codec, size_t *ret_len)
{
	size_t n = 0;
	uint8_t *raw = read_file(path, &n), *out = NULL;

	if (!raw)
		return NULL;
	switch (codec) {
	case SPOOL_CODEC_NONE:
		*ret_len = n;
		return raw;
	case SPOOL_CODEC_GZIP:
		out = gunzip(raw, n, ret_len);
		break;
	case SPOOL_CODEC_ZSTD:
#ifdef HAVE_ZSTD
		out = unzstd(raw, n, ret_len);
#endif
		break;
	}
	free(raw);
	return out;
}

static struct esn mkesn(const char *seq, uint64_t sub)
{
	struct esn e;

	CU_ASSERT_EQUAL_FATAL(esn_set(seq, sub, &e, NULL), KL_OK);
	return e;
}

/* A deterministic pseudo-random clickstream event; returns its length. */
static size_t gen_event(struct kl_rng *rng, uint64_t i, char *out, size_t cap)
{
	static const char *const pages[] = { "/", "/search", "/product", "/cart", "/checkout",
					     "/account", "/help/shipping", "/category/shoes" };
	static const char *const events[] = { "page_view", "click", "add_to_cart", "scroll",
					      "purchase" };
	uint64_t r = kl_rng_next(rng);
	int n;

	n = snprintf(out, cap,
		     "{\"event_id\":\"%016llx\",\"ts\":%llu,\"event\":\"%s\",\"user_id\":\"u%07u\","
		     "\"session\":\"%08x\",\"page\":\"%s\",\"item\":%u,\"referrer\":"
		     "\"https://www.example.com/search?q=item%u&page=%u\",\"ua\":\"Mozilla/5.0 "
		     "(X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/%u.0\","
		     "\"x\":%u,\"y\":%u,\"country\":\"%c%c\"}",
		     (unsigned long long)r, (unsigned long long)(1795291116000ull + i * 7),
		     events[r % 5], (unsigned)(r >> 8) % 500000, (unsigned)(r >> 20),
		     pages[(r >> 12) % 8], (unsigned)(r >> 30) % 20000, (unsigned)(r >> 40) % 1000,
		     (unsigned)(r >> 50) % 10, 100 + (unsigned)(r >> 33) % 30,
		     (unsigned)(r >> 16) % 1920, (unsigned)(r >> 24) % 1080,
		     'A' + (int)(r >> 44) % 26, 'A' + (int)(r >> 48) % 26);
	return (size_t)n;
}

/* ---------------------------------------------------------------- round trips */

/*
 * Writes a mix of records (empty, small, several times the 4 KiB buffer)
 * with codec and delimiter, seals, and checks metadata and content.
 */
static void roundtrip(enum spool_codec codec, const char *delim, size_t delim_len)
{
	char *dir = make_tmpdir();
	struct spool_opts opts = { .codec = codec, .buffer_bytes = 4096 };
	struct kl_errinfo info;
	struct spool_meta meta;
	struct spool *sp = NULL;
	struct kl_rng rng;
	size_t exp_cap = 4 << 20, exp_len = 0, got_len = 0, file_len = 0;
	uint8_t *expect = malloc(exp_cap), *got, *file;
	char rec[20000], seq[64], sha[SPOOL_SHA256_HEX], part[600];
	const char *dl = delim ? delim : "\n";
	size_t dlen = delim ? delim_len : 1;
	int nrec = 3000;

	opts.delim = delim;
	opts.delim_len = delim_len;
	kl_rng_seed_value(&rng, 42);
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL_FATAL(spool_new(dir, "shardId-000000000001-batch", &opts, &sp, &info), KL_OK);
	snprintf(part, sizeof(part), "%s%s", spool_path(sp), SPOOL_PART_SUFFIX);
	CU_ASSERT_TRUE(file_exists(part));
	for (int i = 0; i < nrec; i++) {
		size_t n;
		struct esn e;

		if (i % 997 == 5) {
			/* Larger than the buffer: streamed straight through. */
			n = 9000 + (size_t)i % 5000;
			for (size_t k = 0; k < n; k++)
				rec[k] = (char)('a' + (kl_rng_next(&rng) % 26));
		} else if (i % 101 == 7) {
			n = 0;
		} else {
			n = gen_event(&rng, (uint64_t)i, rec, sizeof(rec));
		}
		snprintf(seq, sizeof(seq), "4959%052d", i / 3);
		e = mkesn(seq, (uint64_t)(i % 3));
		CU_ASSERT_EQUAL_FATAL(spool_append(sp, rec, n, &e, 1795291116000 + i, &info), KL_OK);
		CU_ASSERT_FATAL(exp_len + n + dlen <= exp_cap);
		memcpy(expect + exp_len, rec, n);
		memcpy(expect + exp_len + n, dl, dlen);
		exp_len += n + dlen;
	}
	CU_ASSERT_EQUAL(spool_records(sp), (uint64_t)nrec);
	CU_ASSERT_EQUAL(spool_raw_bytes(sp), exp_len);
	CU_ASSERT_EQUAL_FATAL(spool_seal(sp, &meta, &info), KL_OK);
	CU_ASSERT_FALSE(file_exists(part));
	CU_ASSERT_TRUE(file_exists(spool_path(sp)));
	CU_ASSERT_EQUAL(meta.codec, codec);
	CU_ASSERT_EQUAL(meta.records, (uint64_t)nrec);
	CU_ASSERT_EQUAL(meta.raw_bytes, exp_len);
	CU_ASSERT_STRING_EQUAL(meta.first.seq, "4959" "0000000000000000000000000000000000000000000000000000");
	CU_ASSERT_EQUAL(meta.first.sub, 0);
	snprintf(seq, sizeof(seq), "4959%052d", (nrec - 1) / 3);
	CU_ASSERT_STRING_EQUAL(meta.last.seq, seq);
	CU_ASSERT_EQUAL(meta.last.sub, (uint64_t)((nrec - 1) % 3));
	CU_ASSERT_EQUAL(meta.first_arrival_ms, 1795291116000);

	/* The path carries the codec's extension. */
	{
		const char *p = spool_path(sp), *ext = spool_codec_ext(codec);

		CU_ASSERT_EQUAL(strcmp(p + strlen(p) - strlen(ext), ext), 0);
	}
	file = read_file(spool_path(sp), &file_len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(file);
	CU_ASSERT_EQUAL(meta.file_bytes, file_len);
	sha256_hex(file, file_len, sha);
	CU_ASSERT_STRING_EQUAL(meta.sha256, sha);
	if (codec == SPOOL_CODEC_GZIP) {
		CU_ASSERT(file_len > 10 && file[0] == 0x1f && file[1] == 0x8b && file[2] == 8);
	}
	if (codec != SPOOL_CODEC_NONE) {
		CU_ASSERT(file_len < exp_len);
	}
	free(file);
	got = decode_file(spool_path(sp), codec, &got_len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(got);
	CU_ASSERT_EQUAL(got_len, exp_len);
	CU_ASSERT(got_len == exp_len && memcmp(got, expect, exp_len) == 0);
	CU_ASSERT_EQUAL(spool_verify(spool_path(sp), meta.file_bytes, meta.sha256, &info), KL_OK);

	/* Sealed: no more records, no second seal; free keeps the file. */
	{
		struct esn e = mkesn("99999999999999999999999999999999999999999999999999999999", 0);
		char path[600];

		CU_ASSERT_EQUAL(spool_append(sp, "x", 1, &e, 0, &info), KL_ESTATE);
		CU_ASSERT_EQUAL(spool_seal(sp, &meta, &info), KL_ESTATE);
		snprintf(path, sizeof(path), "%s", spool_path(sp));
		spool_free(sp);
		CU_ASSERT_TRUE(file_exists(path));
		CU_ASSERT_EQUAL(spool_remove(path, &info), KL_OK);
		CU_ASSERT_FALSE(file_exists(path));
		CU_ASSERT_EQUAL(spool_remove(path, &info), KL_OK);
	}
	free(got);
	free(expect);
	rm_tmpdir(dir);
}

static void test_roundtrip_none(void)
{
	roundtrip(SPOOL_CODEC_NONE, NULL, 0);
}

static void test_roundtrip_gzip(void)
{
	roundtrip(SPOOL_CODEC_GZIP, NULL, 0);
}

static void test_roundtrip_zstd(void)
{
#ifdef HAVE_ZSTD
	roundtrip(SPOOL_CODEC_ZSTD, NULL, 0);
#else
	CU_PASS("zstd not built");
#endif
}

static void test_roundtrip_delimiters(void)
{
	roundtrip(SPOOL_CODEC_GZIP, "\r\n", 2);
	roundtrip(SPOOL_CODEC_NONE, "", 0);        /* no delimiter */
	roundtrip(SPOOL_CODEC_NONE, "\x1e|", 2);
}

static void test_levels_and_defaults(void)
{
	char *dir = make_tmpdir();
	struct kl_errinfo info;
	struct spool_meta m1, m9;
	struct spool *s1 = NULL, *s9 = NULL, *bad = NULL;
	struct spool_opts o1 = { .codec = SPOOL_CODEC_GZIP, .level = 1 };
	struct spool_opts o9 = { .codec = SPOOL_CODEC_GZIP, .level = 9 };
	struct spool_opts o10 = { .codec = SPOOL_CODEC_GZIP, .level = 10 };
	struct kl_rng rng;
	char rec[2048];

	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL(spool_new(dir, "b", &o10, &bad, &info), KL_EINVAL);
	CU_ASSERT_PTR_NULL(bad);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "gzip level 10"));
	CU_ASSERT_EQUAL_FATAL(spool_new(dir, "l1", &o1, &s1, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(spool_new(dir, "l9", &o9, &s9, &info), KL_OK);
	kl_rng_seed_value(&rng, 7);
	for (int i = 0; i < 20000; i++) {
		size_t n = gen_event(&rng, (uint64_t)i, rec, sizeof(rec));
		struct esn e = mkesn("1", (uint64_t)i);

		CU_ASSERT_EQUAL_FATAL(spool_append(s1, rec, n, &e, 5, &info), KL_OK);
		CU_ASSERT_EQUAL_FATAL(spool_append(s9, rec, n, &e, 5, &info), KL_OK);
	}
	CU_ASSERT_EQUAL_FATAL(spool_seal(s1, &m1, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(spool_seal(s9, &m9, &info), KL_OK);
	/* The level reaches zlib: level 9 is smaller than level 1. */
	CU_ASSERT(m9.file_bytes < m1.file_bytes);
	CU_ASSERT_EQUAL(m1.raw_bytes, m9.raw_bytes);
	spool_free(s1);
	spool_free(s9);
#ifdef HAVE_ZSTD
	{
		struct spool_opts oz = { .codec = SPOOL_CODEC_ZSTD, .level = 1000 };

		CU_ASSERT_EQUAL(spool_new(dir, "z", &oz, &bad, &info), KL_EINVAL);
		oz.level = -5;     /* zstd's fast levels are allowed */
		CU_ASSERT_EQUAL(spool_new(dir, "z", &oz, &bad, &info), KL_OK);
		spool_free(bad);
		bad = NULL;
		oz.level = 1;
		oz.window_log = 5;
		CU_ASSERT_EQUAL(spool_new(dir, "z", &oz, &bad, &info), KL_EINVAL);
		CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "window log 5"));
		CU_ASSERT_PTR_NULL(bad);
	}
	/* The window reaches zstd: a reader limited to 2^16 decodes the
	 * window_log 16 object and refuses the default one (2^19 at level 1). */
	for (int wl = 0; wl <= 16; wl += 16) {
		struct spool_opts oz = { .codec = SPOOL_CODEC_ZSTD, .level = 1, .window_log = wl };
		struct spool *sz = NULL;
		struct spool_meta mz;
		size_t raw_n = 0;
		uint8_t *raw, *out;
		ZSTD_DCtx *dc = ZSTD_createDCtx();
		ZSTD_inBuffer ib;
		ZSTD_outBuffer ob;
		size_t zr;

		CU_ASSERT_EQUAL_FATAL(spool_new(dir, "w", &oz, &sz, &info), KL_OK);
		kl_rng_seed_value(&rng, 8);
		for (int i = 0; i < 5000; i++) {
			size_t len = gen_event(&rng, (uint64_t)i, rec, sizeof(rec));
			struct esn e = mkesn("1", (uint64_t)i);

			CU_ASSERT_EQUAL_FATAL(spool_append(sz, rec, len, &e, 5, &info), KL_OK);
		}
		CU_ASSERT_EQUAL_FATAL(spool_seal(sz, &mz, &info), KL_OK);
		CU_ASSERT_FATAL(mz.raw_bytes > (1u << 20));
		raw = read_file(spool_path(sz), &raw_n);
		CU_ASSERT_FATAL(raw != NULL && dc != NULL);
		out = malloc(mz.raw_bytes);
		CU_ASSERT_FATAL(out != NULL);
		CU_ASSERT(!ZSTD_isError(ZSTD_DCtx_setParameter(dc, ZSTD_d_windowLogMax, 16)));
		ib = (ZSTD_inBuffer){ raw, raw_n, 0 };
		ob = (ZSTD_outBuffer){ out, mz.raw_bytes, 0 };
		do
			zr = ZSTD_decompressStream(dc, &ob, &ib);
		while (!ZSTD_isError(zr) && zr != 0 && ib.pos < ib.size);
		if (wl == 16) {
			CU_ASSERT(!ZSTD_isError(zr) && zr == 0);
			CU_ASSERT_EQUAL(ob.pos, mz.raw_bytes);
		} else {
			CU_ASSERT(ZSTD_isError(zr));
		}
		free(out);
		free(raw);
		ZSTD_freeDCtx(dc);
		spool_free(sz);
	}
#endif
	rm_tmpdir(dir);
}

static void test_helpers(void)
{
	struct kl_errinfo info;
	enum spool_codec c = SPOOL_CODEC_NONE;
	struct spool_opts crlf = { .delim = "\r\n", .delim_len = 2 };

	CU_ASSERT_STRING_EQUAL(spool_codec_ext(SPOOL_CODEC_NONE), "");
	CU_ASSERT_STRING_EQUAL(spool_codec_ext(SPOOL_CODEC_GZIP), ".gz");
	CU_ASSERT_STRING_EQUAL(spool_codec_ext(SPOOL_CODEC_ZSTD), ".zst");
	CU_ASSERT_PTR_NULL(spool_codec_encoding(SPOOL_CODEC_NONE));
	CU_ASSERT_STRING_EQUAL(spool_codec_encoding(SPOOL_CODEC_GZIP), "gzip");
	CU_ASSERT_STRING_EQUAL(spool_codec_encoding(SPOOL_CODEC_ZSTD), "zstd");
	CU_ASSERT_STRING_EQUAL(spool_content_type(NULL), "application/x-ndjson");
	CU_ASSERT_STRING_EQUAL(spool_content_type(&crlf), "application/octet-stream");
	CU_ASSERT_EQUAL(spool_codec_parse("GZIP", &c, &info), KL_OK);
	CU_ASSERT_EQUAL(c, SPOOL_CODEC_GZIP);
	CU_ASSERT_EQUAL(spool_codec_parse("uncompressed", &c, &info), KL_OK);
	CU_ASSERT_EQUAL(c, SPOOL_CODEC_NONE);
	CU_ASSERT_EQUAL(spool_codec_parse("snappy", &c, &info), KL_ECONFIG);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "'snappy'"));
	CU_ASSERT_EQUAL(c, SPOOL_CODEC_NONE);
#ifdef HAVE_ZSTD
	CU_ASSERT_EQUAL(spool_codec_parse("zstd", &c, &info), KL_OK);
	CU_ASSERT_EQUAL(c, SPOOL_CODEC_ZSTD);
#else
	CU_ASSERT_EQUAL(spool_codec_parse("zstd", &c, &info), KL_ECONFIG);
#endif
}

static void test_misuse(void)
{
	char *dir = make_tmpdir();
	struct kl_errinfo info;
	struct spool *sp = NULL;
	struct spool_meta meta;
	struct esn e5 = mkesn("500", 2), e4 = mkesn("0000499", 9), e5b = mkesn("500", 2);
	struct spool_opts longdelim = { .delim = "12345678901234567", .delim_len = 17 };
	struct spool_opts tiny = { .buffer_bytes = 100 };
	char part[600];

	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL(spool_new(dir, "a/b", NULL, &sp, &info), KL_EINVAL);
	CU_ASSERT_EQUAL(spool_new(dir, ".hidden", NULL, &sp, &info), KL_EINVAL);
	CU_ASSERT_EQUAL(spool_new(dir, "", NULL, &sp, &info), KL_EINVAL);
	CU_ASSERT_EQUAL(spool_new(dir, "x", &longdelim, &sp, &info), KL_EINVAL);
	CU_ASSERT_EQUAL(spool_new(dir, "x", &tiny, &sp, &info), KL_EINVAL);
	CU_ASSERT_EQUAL(spool_new("/nonexistent/kinlake", "x", NULL, &sp, &info), KL_EIO);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "/nonexistent/kinlake/x.part"));
	CU_ASSERT_PTR_NULL(sp);

	CU_ASSERT_EQUAL_FATAL(spool_new(dir, "x", NULL, &sp, &info), KL_OK);
	CU_ASSERT_EQUAL(spool_seal(sp, &meta, &info), KL_ESTATE);   /* empty */
	CU_ASSERT_EQUAL(spool_append(sp, "a", 1, &e5, 10, &info), KL_OK);
	CU_ASSERT_EQUAL(spool_append(sp, "b", 1, &e5b, 20, &info), KL_OK);  /* same ESN: fine */
	CU_ASSERT_EQUAL(spool_append(sp, "c", 1, &e4, 30, &info), KL_EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "lower than the previous"));
	CU_ASSERT_EQUAL(spool_append(sp, "c", 1, NULL, 30, &info), KL_EINVAL);
	CU_ASSERT_EQUAL(spool_records(sp), 2);
	CU_ASSERT_EQUAL(spool_raw_bytes(sp), 4);
	/* Freeing an unsealed spool discards its file. */
	snprintf(part, sizeof(part), "%s%s", spool_path(sp), SPOOL_PART_SUFFIX);
	CU_ASSERT_TRUE(file_exists(part));
	spool_free(sp);
	CU_ASSERT_FALSE(file_exists(part));
	spool_free(NULL);
	rm_tmpdir(dir);
}

static void test_esn(void)
{
	struct kl_errinfo info;
	struct esn a, b;
	char key[ESN_KEY_MAX], digits[200];

	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL(esn_set("", 0, &a, &info), KL_EINVAL);
	CU_ASSERT_EQUAL(esn_set("12a", 0, &a, &info), KL_EINVAL);
	memset(digits, '7', 130);
	digits[130] = '\0';
	CU_ASSERT_EQUAL(esn_set(digits, 0, &a, &info), KL_EINVAL);
	digits[129] = '\0';
	CU_ASSERT_EQUAL(esn_set(digits, 0, &a, &info), KL_OK);
	CU_ASSERT_EQUAL(esn_key(&a, key), 129 + 1 + 10);
	CU_ASSERT_EQUAL(esn_set("000", 3, &a, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(a.seq, "0");
	CU_ASSERT_EQUAL(esn_set("0099", 0, &b, &info), KL_OK);
	CU_ASSERT_STRING_EQUAL(b.seq, "99");
	CU_ASSERT(esn_cmp(&a, &b) < 0);
	CU_ASSERT_EQUAL(esn_set("100", 0, &a, &info), KL_OK);
	CU_ASSERT(esn_cmp(&a, &b) > 0);      /* by value, not bytes */
	CU_ASSERT_EQUAL(esn_set("100", 1, &b, &info), KL_OK);
	CU_ASSERT(esn_cmp(&a, &b) < 0);
	CU_ASSERT_EQUAL(esn_cmp(&b, &b), 0);
	CU_ASSERT_EQUAL(esn_key(&b, key), 67);
	CU_ASSERT_STRING_EQUAL(key, "00000000000000000000000000000000000000000000000000000100-0000000001");
}

/* ---------------------------------------------------------------- big input */

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

/*
 * Bytes for the streaming tests: 200 MB; 100 MB under ASan (instrumented
 * test code is slower); 8 MB under valgrind (LD_PRELOAD has its
 * vgpreload) or with KL_TEST_QUICK set.
 */
static uint64_t big_total(void)
{
	const char *pre = getenv("LD_PRELOAD");
	const char *q = getenv("KL_TEST_QUICK");

	if ((q && *q && strcmp(q, "0") != 0) || (pre && strstr(pre, "vgpreload")))
		return (uint64_t)8 << 20;
#ifdef __SANITIZE_ADDRESS__
	return (uint64_t)100 << 20;
#else
	return (uint64_t)200 << 20;
#endif
}

static void big_stream(enum spool_codec codec, int level, uint64_t total)
{
	char *dir = make_tmpdir();
	struct spool_opts opts = { .codec = codec, .level = level };
	struct kl_errinfo info;
	struct spool_meta meta;
	struct spool *sp = NULL;
	struct kl_rng rng;
	EVP_MD_CTX *want = EVP_MD_CTX_new(), *got = EVP_MD_CTX_new();
	unsigned char mw[EVP_MAX_MD_SIZE], mg[EVP_MAX_MD_SIZE];
	unsigned int lw = 0, lg = 0;
	uint64_t raw = 0, nrec = 0, dec = 0;
	long hwm0, hwm1;
	char rec[2048], seq[64];
	FILE *clear;

	/* Reset the peak-RSS mark so this test measures only itself. */
	clear = fopen("/proc/self/clear_refs", "w");
	if (clear) {
		fputs("5", clear);
		fclose(clear);
	}
	hwm0 = vm_hwm_kb();
	EVP_DigestInit_ex(want, EVP_sha256(), NULL);
	EVP_DigestInit_ex(got, EVP_sha256(), NULL);
	kl_rng_seed_value(&rng, 1234);
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL_FATAL(spool_new(dir, "big", &opts, &sp, &info), KL_OK);
	while (raw < total) {
		size_t n = gen_event(&rng, nrec, rec, sizeof(rec) - 1);
		struct esn e;

		snprintf(seq, sizeof(seq), "%llu", 1000000000ull + nrec / 4);
		/* Checked without CU_ASSERT: millions of records. */
		if (esn_set(seq, nrec % 4, &e, NULL) != KL_OK ||
		    spool_append(sp, rec, n, &e, 1, &info) != KL_OK)
			CU_FAIL_FATAL("append failed");
		rec[n] = '\n';
		EVP_DigestUpdate(want, rec, n + 1);
		raw += n + 1;
		nrec++;
	}
	CU_ASSERT_EQUAL_FATAL(spool_seal(sp, &meta, &info), KL_OK);
	hwm1 = vm_hwm_kb();
	CU_ASSERT_EQUAL(meta.raw_bytes, raw);
	CU_ASSERT_EQUAL(meta.records, nrec);
	if (hwm0 > 0 && hwm1 > 0) {
		/* Two 128 KiB buffers plus the compressor: a few MB, not total. */
		if (hwm1 - hwm0 > 16 * 1024)
			fprintf(stderr, "\npeak RSS grew by %ld kB for %llu MB\n", hwm1 - hwm0,
				(unsigned long long)(total >> 20));
		CU_ASSERT(hwm1 - hwm0 < 16 * 1024);
	}

	/* Decode in chunks and compare the digest of what comes out. */
	{
		int fd = open(spool_path(sp), O_RDONLY);
		uint8_t *ibuf = malloc(1 << 16), *obuf = malloc(1 << 18);
		bool ok = true, end = false;
		z_stream zs;
#ifdef HAVE_ZSTD
		ZSTD_DCtx *dc = codec == SPOOL_CODEC_ZSTD ? ZSTD_createDCtx() : NULL;
#endif
		memset(&zs, 0, sizeof(zs));
		if (codec == SPOOL_CODEC_GZIP)
			ok = inflateInit2(&zs, 16 + 15) == Z_OK;
		CU_ASSERT_FATAL(fd >= 0 && ibuf && obuf);
		for (;;) {
			ssize_t r = read(fd, ibuf, 1 << 16);

			if (r <= 0)
				break;
			if (codec == SPOOL_CODEC_NONE) {
				EVP_DigestUpdate(got, ibuf, (size_t)r);
				dec += (uint64_t)r;
				continue;
			}
			if (codec == SPOOL_CODEC_GZIP) {
				zs.next_in = ibuf;
				zs.avail_in = (uInt)r;
				while (ok && zs.avail_in > 0 && !end) {
					int zr;

					zs.next_out = obuf;
					zs.avail_out = 1 << 18;
					zr = inflate(&zs, Z_NO_FLUSH);
					EVP_DigestUpdate(got, obuf, (1 << 18) - zs.avail_out);
					dec += (1 << 18) - zs.avail_out;
					end = zr == Z_STREAM_END;
					ok = zr == Z_OK || zr == Z_STREAM_END || zr == Z_BUF_ERROR;
				}
				ok = ok && zs.avail_in == 0;
			}
#ifdef HAVE_ZSTD
			if (codec == SPOOL_CODEC_ZSTD) {
				ZSTD_inBuffer ib = { ibuf, (size_t)r, 0 };

				while (ok && ib.pos < ib.size) {
					ZSTD_outBuffer ob = { obuf, 1 << 18, 0 };
					size_t zr = ZSTD_decompressStream(dc, &ob, &ib);

					ok = !ZSTD_isError(zr);
					EVP_DigestUpdate(got, obuf, ob.pos);
					dec += ob.pos;
					end = zr == 0;
				}
			}
#endif
		}
		if (codec != SPOOL_CODEC_NONE)
			CU_ASSERT_TRUE(end);
		CU_ASSERT_TRUE(ok);
		if (codec == SPOOL_CODEC_GZIP)
			inflateEnd(&zs);
#ifdef HAVE_ZSTD
		ZSTD_freeDCtx(dc);
#endif
		close(fd);
		free(ibuf);
		free(obuf);
	}
	EVP_DigestFinal_ex(want, mw, &lw);
	EVP_DigestFinal_ex(got, mg, &lg);
	CU_ASSERT_EQUAL(dec, raw);
	CU_ASSERT(lw == lg && memcmp(mw, mg, lw) == 0);
	EVP_MD_CTX_free(want);
	EVP_MD_CTX_free(got);
	CU_ASSERT_EQUAL(spool_verify(spool_path(sp), meta.file_bytes, meta.sha256, &info), KL_OK);
	spool_free(sp);
	rm_tmpdir(dir);
}

static void test_big_gzip(void)
{
	big_stream(SPOOL_CODEC_GZIP, 1, big_total());
}

static void test_big_zstd(void)
{
#ifdef HAVE_ZSTD
	big_stream(SPOOL_CODEC_ZSTD, 1, big_total());
#else
	CU_PASS("zstd not built");
#endif
}

/* ---------------------------------------------------------------- disk full */

/*
 * RLIMIT_FSIZE makes write(2) fail with EFBIG past the limit (SIGXFSZ is
 * ignored for the test), which the spool reports as KL_ENOSPC like a real
 * full disk. The soft limit is raised back afterwards.
 */
static void set_fsize(rlim_t limit)
{
	struct rlimit rl;

	CU_ASSERT_EQUAL_FATAL(getrlimit(RLIMIT_FSIZE, &rl), 0);
	rl.rlim_cur = limit == RLIM_INFINITY ? rl.rlim_max : limit;
	CU_ASSERT_EQUAL_FATAL(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

static void enospc_case(enum spool_codec codec)
{
	char *dir = make_tmpdir();
	struct spool_opts opts = { .codec = codec, .buffer_bytes = 4096 };
	struct kl_errinfo info;
	struct spool_meta meta;
	struct spool *sp = NULL;
	struct kl_rng rng;
	size_t exp_len = 0, exp_cap = 1 << 20, got_len = 0;
	uint8_t *expect = malloc(exp_cap), *got;
	uint8_t rec[300];
	int i, failures = 0;
	enum kl_err err = KL_OK;
	void (*old)(int) = signal(SIGXFSZ, SIG_IGN);

	kl_rng_seed_value(&rng, 99);
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL_FATAL(spool_new(dir, "full", &opts, &sp, &info), KL_OK);
	set_fsize((64 << 10) + 1001);   /* not a multiple of the buffer: partial writes */
	/* Incompressible records so that the file really grows. */
	for (i = 0; i < 2000; i++) {
		struct esn e = mkesn("77", (uint64_t)i);

		for (size_t k = 0; k < sizeof(rec); k++)
			rec[k] = (uint8_t)kl_rng_next(&rng);
		err = spool_append(sp, rec, sizeof(rec), &e, 1, &info);
		if (err == KL_ENOSPC) {
			uint64_t before = spool_records(sp);

			failures++;
			CU_ASSERT_EQUAL(info.sys_errno, EFBIG);
			CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "retry later"));
			/* Still full: refused again, nothing counted twice. */
			CU_ASSERT_EQUAL(spool_append(sp, rec, sizeof(rec), &e, 1, &info), KL_ENOSPC);
			CU_ASSERT_EQUAL(spool_records(sp), before);
			/* Space comes back: the same record goes in. */
			set_fsize(RLIM_INFINITY);
			err = spool_append(sp, rec, sizeof(rec), &e, 1, &info);
			CU_ASSERT_EQUAL_FATAL(err, KL_OK);
			CU_ASSERT_EQUAL(spool_records(sp), before + 1);
			/* The next limit again falls inside a buffer. */
			set_fsize((rlim_t)spool_file_bytes(sp) + 50077);
		}
		CU_ASSERT_EQUAL_FATAL(err, KL_OK);
		memcpy(expect + exp_len, rec, sizeof(rec));
		expect[exp_len + sizeof(rec)] = '\n';
		exp_len += sizeof(rec) + 1;
	}
	CU_ASSERT(failures >= 3);
	/* The tail cannot be written: seal fails and can be retried. */
	set_fsize(spool_file_bytes(sp) > 4096 ? spool_file_bytes(sp) - 4096 : 1);
	err = spool_seal(sp, &meta, &info);
	set_fsize(RLIM_INFINITY);
	CU_ASSERT_EQUAL(err, KL_ENOSPC);
	CU_ASSERT_EQUAL_FATAL(spool_seal(sp, &meta, &info), KL_OK);
	CU_ASSERT_EQUAL(meta.records, 2000);
	got = decode_file(spool_path(sp), codec, &got_len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(got);
	CU_ASSERT_EQUAL(got_len, exp_len);
	CU_ASSERT(got_len == exp_len && memcmp(got, expect, exp_len) == 0);
	CU_ASSERT_EQUAL(spool_verify(spool_path(sp), meta.file_bytes, meta.sha256, &info), KL_OK);
	free(got);
	spool_free(sp);

	/* A record larger than the buffer that hits the limit fails the spool. */
	CU_ASSERT_EQUAL_FATAL(spool_new(dir, "huge", &opts, &sp, &info), KL_OK);
	{
		size_t big = 200000;
		uint8_t *blob = malloc(big);
		struct esn e = mkesn("78", 0);
		char part[600];

		for (size_t k = 0; k < big; k++)
			blob[k] = (uint8_t)kl_rng_next(&rng);
		set_fsize(50000);
		err = spool_append(sp, blob, big, &e, 1, &info);
		set_fsize(RLIM_INFINITY);
		CU_ASSERT_EQUAL(err, KL_ENOSPC);
		CU_ASSERT_EQUAL(spool_append(sp, "x", 1, &e, 1, &info), KL_ESTATE);
		CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "discard"));
		CU_ASSERT_EQUAL(spool_seal(sp, &meta, &info), KL_ESTATE);
		snprintf(part, sizeof(part), "%s%s", spool_path(sp), SPOOL_PART_SUFFIX);
		CU_ASSERT_TRUE(file_exists(part));
		spool_free(sp);
		CU_ASSERT_FALSE(file_exists(part));
		free(blob);
	}
	signal(SIGXFSZ, old);
	free(expect);
	rm_tmpdir(dir);
}

static void test_enospc_none(void)
{
	enospc_case(SPOOL_CODEC_NONE);
}

static void test_enospc_gzip(void)
{
	enospc_case(SPOOL_CODEC_GZIP);
}

static void test_enospc_zstd(void)
{
#ifdef HAVE_ZSTD
	enospc_case(SPOOL_CODEC_ZSTD);
#else
	CU_PASS("zstd not built");
#endif
}

/* ---------------------------------------------------------------- verify */

static void test_verify(void)
{
	char *dir = make_tmpdir();
	struct spool_opts opts = { .codec = SPOOL_CODEC_GZIP };
	struct kl_errinfo info;
	struct spool_meta meta;
	struct spool *sp = NULL;
	struct kl_rng rng;
	char rec[2048], path[600], bad_sha[SPOOL_SHA256_HEX];
	int fd;
	uint8_t byte;

	kl_rng_seed_value(&rng, 5);
	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL_FATAL(spool_new(dir, "v", &opts, &sp, &info), KL_OK);
	for (int i = 0; i < 2000; i++) {
		size_t n = gen_event(&rng, (uint64_t)i, rec, sizeof(rec));
		struct esn e = mkesn("3", (uint64_t)i);

		CU_ASSERT_EQUAL_FATAL(spool_append(sp, rec, n, &e, 1, &info), KL_OK);
	}
	CU_ASSERT_EQUAL_FATAL(spool_seal(sp, &meta, &info), KL_OK);
	snprintf(path, sizeof(path), "%s", spool_path(sp));
	spool_free(sp);

	CU_ASSERT_EQUAL(spool_verify(path, meta.file_bytes, meta.sha256, &info), KL_OK);
	/* Wrong expectations. */
	CU_ASSERT_EQUAL(spool_verify(path, meta.file_bytes + 1, meta.sha256, &info), KL_ECONFLICT);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "truncated"));
	snprintf(bad_sha, sizeof(bad_sha), "%s", meta.sha256);
	bad_sha[10] = bad_sha[10] == '0' ? '1' : '0';
	CU_ASSERT_EQUAL(spool_verify(path, meta.file_bytes, bad_sha, &info), KL_ECONFLICT);
	CU_ASSERT_EQUAL(spool_verify("/nonexistent/x.gz", 1, meta.sha256, &info), KL_ENOTFOUND);

	/* One flipped bit in the middle. */
	fd = open(path, O_RDWR);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(pread(fd, &byte, 1, (off_t)meta.file_bytes / 2), 1);
	byte ^= 0x10;
	CU_ASSERT_EQUAL(pwrite(fd, &byte, 1, (off_t)meta.file_bytes / 2), 1);
	CU_ASSERT_EQUAL(spool_verify(path, meta.file_bytes, meta.sha256, &info), KL_ECONFLICT);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "damaged"));
	byte ^= 0x10;
	CU_ASSERT_EQUAL(pwrite(fd, &byte, 1, (off_t)meta.file_bytes / 2), 1);
	CU_ASSERT_EQUAL(spool_verify(path, meta.file_bytes, meta.sha256, &info), KL_OK);
	/* Truncated by one byte. */
	CU_ASSERT_EQUAL(ftruncate(fd, (off_t)meta.file_bytes - 1), 0);
	close(fd);
	CU_ASSERT_EQUAL(spool_verify(path, meta.file_bytes, meta.sha256, &info), KL_ECONFLICT);
	CU_ASSERT_PTR_NOT_NULL(strstr(info.message, "truncated"));
	rm_tmpdir(dir);
}

static void test_sweep(void)
{
	char *dir = make_tmpdir();
	struct kl_errinfo info;
	struct spool *open1 = NULL, *open2 = NULL, *sealed = NULL;
	struct esn e = mkesn("1", 0);
	size_t removed = 99;
	char p1[600], p2[600];

	kl_errinfo_clear(&info);
	CU_ASSERT_EQUAL_FATAL(spool_new(dir, "one", NULL, &open1, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(spool_new(dir, "two", NULL, &open2, &info), KL_OK);
	CU_ASSERT_EQUAL_FATAL(spool_new(dir, "three", NULL, &sealed, &info), KL_OK);
	CU_ASSERT_EQUAL(spool_append(sealed, "r", 1, &e, 1, &info), KL_OK);
	CU_ASSERT_EQUAL(spool_seal(sealed, NULL, &info), KL_OK);
	snprintf(p1, sizeof(p1), "%s%s", spool_path(open1), SPOOL_PART_SUFFIX);
	snprintf(p2, sizeof(p2), "%s%s", spool_path(open2), SPOOL_PART_SUFFIX);
	/* As after a crash: the open spools' files are left behind. */
	CU_ASSERT_EQUAL(spool_sweep(dir, &removed, &info), KL_OK);
	CU_ASSERT_EQUAL(removed, 2);
	CU_ASSERT_FALSE(file_exists(p1));
	CU_ASSERT_FALSE(file_exists(p2));
	CU_ASSERT_TRUE(file_exists(spool_path(sealed)));
	CU_ASSERT_EQUAL(spool_sweep("/nonexistent/kinlake", &removed, &info), KL_EIO);
	spool_free(open1);
	spool_free(open2);
	spool_free(sealed);
	rm_tmpdir(dir);
}

int main(void)
{
	static const struct kl_test t[] = {
		/* First, so that nothing earlier has raised the RSS peak. */
		KL_TEST(test_big_gzip),
		KL_TEST(test_big_zstd),
		KL_TEST(test_esn),
		KL_TEST(test_helpers),
		KL_TEST(test_roundtrip_none),
		KL_TEST(test_roundtrip_gzip),
		KL_TEST(test_roundtrip_zstd),
		KL_TEST(test_roundtrip_delimiters),
		KL_TEST(test_levels_and_defaults),
		KL_TEST(test_misuse),
		KL_TEST(test_enospc_none),
		KL_TEST(test_enospc_gzip),
		KL_TEST(test_enospc_zstd),
		KL_TEST(test_verify),
		KL_TEST(test_sweep),
		{ 0 },
	};

	return kl_test_run("spool", t);
}
