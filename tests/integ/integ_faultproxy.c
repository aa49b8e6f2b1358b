/* SPDX-License-Identifier: Apache-2.0 */
/*
 * integ_faultproxy.c: tests/tools/faultproxy between kinlake's own AWS
 * clients and the real emulators (kinesalite, dynalite, s3rver, started by
 * tests/emu/emulators.sh; without them this exits 77). First that the proxy
 * is invisible when it injects nothing (bodies byte-exact, keep-alive,
 * chunked framing, a 48 MiB upload in bounded memory), then that each
 * fault does what the chaos tests will rely on: throttles are retried and
 * counted, a write failed *after* it landed is visible in the emulator, a
 * reset mid-response is retried, a held upload waits for its release.
 * Every check of what landed reads the emulator directly, not through the
 * proxy. Run:
 *   tests/emu/emulators.sh --no-moto -- ./tests/integ/integ_faultproxy
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aws.h"
#include "creds.h"
#include "ddb.h"
#include "faultctl.h"
#include "http.h"
#include "kinesis.h"
#include "s3.h"
#include "testutil.h"

#define BUCKET "kl-integ-faultproxy"
#define MIB ((size_t)1 << 20)

/* Direct clients (no proxy) for set-up and for checking what landed. */
static struct {
	const char *kinesis_ep, *ddb_ep, *s3_ep;
	struct creds_chain *creds;
	struct aws_client kin, ddb, s3;
	unsigned seq;
} fx;

static void report(const char *what, enum kl_err err, const struct kl_errinfo *info)
{
	char buf[768];

	if (err)
		fprintf(stderr, "\n  %s: %s\n", what, kl_errinfo_format(err, info, buf, sizeof(buf)));
}

/* Asserts a call succeeded, printing the error detail when it did not. */
#define CHECK_OK(call)                                 \
	do {                                           \
		enum kl_err e_ = (call);               \
		report(#call, e_, &info);              \
		CU_ASSERT_EQUAL_FATAL(e_, KL_OK);      \
	} while (0)

/* A fresh name: prefix-pid-seq. */
static void unique(char *out, size_t cap, const char *prefix)
{
	snprintf(out, cap, "%s-%ld-%u", prefix, (long)getpid(), ++fx.seq);
}

/*
 * A client of service at endpoint (normally the proxy) with fast retries:
 * what matters here is whether and how often it retries, not how long.
 */
static void client_init(struct aws_client *c, const char *service, const char *endpoint,
			int max_attempts, long timeout_ms)
{
	struct aws_client_config ac = { 0 };

	ac.service = service;
	ac.region = "us-east-1";
	ac.endpoint = endpoint;
	ac.http.timeout_ms = timeout_ms ? timeout_ms : 60000;
	ac.retry.max_attempts = max_attempts;
	ac.retry.base_delay_ms = 10;
	ac.retry.throttle_base_delay_ms = 20;
	ac.retry.max_delay_ms = 200;
	CU_ASSERT_EQUAL_FATAL(aws_client_init(c, &ac, fx.creds), KL_OK);
}

static struct faultctl *proxy_for(const char *upstream)
{
	struct faultctl *fp = NULL;

	CU_ASSERT_EQUAL_FATAL(faultctl_start(upstream, &fp), KL_OK);
	return fp;
}

/* Stops the proxy and asserts it exited cleanly (status 0). */
static void proxy_done(struct faultctl *fp)
{
	CU_ASSERT_EQUAL(faultctl_stop(fp), 0);
}

static void set_rules(struct faultctl *fp, const char *text)
{
	CU_ASSERT_EQUAL_FATAL(faultctl_set_rules(fp, text), KL_OK);
}

static uint64_t counter(struct faultctl *fp, const char *section, const char *name,
			const char *field)
{
	uint64_t v = UINT64_MAX;

	CU_ASSERT_EQUAL(faultctl_counter(fp, section, name, field, &v), KL_OK);
	return v;
}

static uint8_t pattern_byte(size_t i)
{
	return (uint8_t)((i * 131 + (i >> 13)) & 255);
}

static uint8_t *pattern(size_t n)
{
	uint8_t *p = malloc(n ? n : 1);

	CU_ASSERT_FATAL(p != NULL);
	for (size_t i = 0; i < n; i++)
		p[i] = pattern_byte(i);
	return p;
}

/*
 * A new unlinked temporary file of n bytes: a 1 MiB pattern block repeated,
 * each copy stamped with its index so that lost, repeated or reordered
 * blocks show.
 */
static int pattern_file(size_t n)
{
	char name[] = "/tmp/kl-integ-fp-XXXXXX";
	int fd = mkstemp(name);
	uint8_t *block = pattern(MIB);

	CU_ASSERT_FATAL(fd >= 0);
	unlink(name);
	for (size_t off = 0, idx = 0; off < n; off += MIB, idx++) {
		size_t m = n - off < MIB ? n - off : MIB;
		memcpy(block, &idx, sizeof(idx));
		CU_ASSERT_FATAL(write(fd, block, m) == (ssize_t)m);
	}
	free(block);
	return fd;
}

static int empty_file(void)
{
	char name[] = "/tmp/kl-integ-fp-get-XXXXXX";
	int fd = mkstemp(name);

	CU_ASSERT_FATAL(fd >= 0);
	unlink(name);
	return fd;
}

/* True when fd holds exactly the len bytes of src. */
static int same_file(int fd, int src, uint64_t len)
{
	uint8_t *a = malloc(MIB), *b = malloc(MIB);
	int same = a && b && lseek(fd, 0, SEEK_END) == (off_t)len;

	for (uint64_t off = 0; same && off < len; off += MIB) {
		size_t m = len - off < MIB ? (size_t)(len - off) : MIB;
		if (pread(fd, a, m, (off_t)off) != (ssize_t)m ||
		    pread(src, b, m, (off_t)off) != (ssize_t)m || memcmp(a, b, m) != 0)
			same = 0;
	}
	free(a);
	free(b);
	return same;
}

/* Creates a one-shard stream directly and returns its shard id. */
static void make_stream(char *stream, size_t cap, char shard[KINESIS_SHARD_ID_MAX + 1])
{
	struct kinesis_shard *shards = NULL;
	struct kl_errinfo info;
	size_t n = 0;

	unique(stream, cap, "kl-fp");
	CHECK_OK(kinesis_create_stream(&fx.kin, stream, 1, &info));
	CHECK_OK(kinesis_wait_active(&fx.kin, stream, 10000, NULL, &info));
	CHECK_OK(kinesis_list_shards(&fx.kin, stream, NULL, &shards, &n, &info));
	CU_ASSERT_EQUAL_FATAL(n, 1);
	snprintf(shard, KINESIS_SHARD_ID_MAX + 1, "%s", shards[0].shard_id);
	free(shards);
}

/* Reads the whole shard from TRIM_HORIZON with client c. */
static enum kl_err read_shard(struct aws_client *c, const char *stream, const char *shard,
			      struct kinesis_records **ret, struct kl_errinfo *info)
{
	struct kinesis_position pos = { .type = KINESIS_ITER_TRIM_HORIZON };
	char *iter = NULL;
	enum kl_err err = kinesis_get_shard_iterator(c, stream, shard, &pos, &iter, info);

	if (err)
		return err;
	err = kinesis_get_records(c, iter, 1000, ret, info);
	free(iter);
	return err;
}

/* Creates a table directly with hash key "pk" (S). */
static void make_table(char *table, size_t cap)
{
	struct kl_errinfo info;

	unique(table, cap, "kl-fp");
	CHECK_OK(ddb_create_table(&fx.ddb, table, "pk", "S", &info));
	CHECK_OK(ddb_wait_table_active(&fx.ddb, table, 10000, NULL, &info));
}

/* The item's counter as read directly from dynalite (-1: no item). */
static int64_t direct_counter(const char *table, const char *pk)
{
	json_object *key = ddb_key_s("pk", pk), *item = NULL;
	struct kl_errinfo info;
	int64_t v = -1;

	CHECK_OK(ddb_get_item(&fx.ddb, table, key, true, &item, &info));
	if (item)
		CU_ASSERT_EQUAL(ddb_get_n_i64(item, "counter", &v), KL_OK);
	json_object_put(item);
	json_object_put(key);
	return v;
}

/* Polls dynalite (up to 5 s) until the counter is want; returns the last value. */
static int64_t wait_counter(const char *table, const char *pk, int64_t want)
{
	int64_t v = -1;

	for (int i = 0; i < 100 && (v = direct_counter(table, pk)) != want; i++)
		kl_sleep_ms(50);
	return v;
}

static void put_counter(const char *table, const char *pk, int64_t v)
{
	json_object *item = json_object_new_object();
	struct kl_errinfo info;

	CU_ASSERT_EQUAL_FATAL(ddb_set(item, "pk", ddb_s(pk)), KL_OK);
	CU_ASSERT_EQUAL_FATAL(ddb_set(item, "counter", ddb_n_i64(v)), KL_OK);
	CHECK_OK(ddb_put_item(&fx.ddb, table, item, NULL, NULL, &info));
	json_object_put(item);
}

/* UpdateItem counter from -> to, conditional on counter == from. */
static enum kl_err cas_counter(struct aws_client *c, const char *table, const char *pk,
			       int64_t from, int64_t to, struct kl_errinfo *info)
{
	json_object *key = ddb_key_s("pk", pk), *names = json_object_new_object();
	json_object *values = json_object_new_object();
	struct ddb_write_opts o = { .condition = "#c = :old", .names = names, .values = values };
	enum kl_err err;

	json_object_object_add(names, "#c", json_object_new_string("counter"));
	ddb_set(values, ":old", ddb_n_i64(from));
	ddb_set(values, ":new", ddb_n_i64(to));
	err = ddb_update_item(c, table, key, "SET #c = :new", &o, NULL, info);
	json_object_put(key);
	json_object_put(names);
	json_object_put(values);
	return err;
}

/* ------------------------------------------------------------ set-up */

static void test_refuses_non_loopback(void)
{
	static const char *const bad[] = {
		"http://10.1.2.3:4567", "http://192.168.0.1:80", "https://127.0.0.1:4567",
		"http://127.0.0.1:4567/base", "http://example.com:80", "http://127.0.0.1",
		"http://0.0.0.0:4567",
	};
	struct faultctl *fp = NULL;

	/* the same binary starts with a loopback upstream ... */
	fp = proxy_for(fx.s3_ep);
	proxy_done(fp);
	/* ... and refuses anything else (exit status 64) */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fp = NULL;
		CU_ASSERT_EQUAL(faultctl_start(bad[i], &fp), KL_ECONFIG);
		CU_ASSERT_PTR_NULL(fp);
	}
#ifdef KL_FAULTPROXY_PATH
	/* and a listen address off loopback: exit 64 before listening */
	pid_t pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, STDOUT_FILENO);
		dup2(devnull, STDERR_FILENO);
		execl(KL_FAULTPROXY_PATH, KL_FAULTPROXY_PATH, "--listen", "0.0.0.0:0", "--upstream",
		      fx.s3_ep, (char *)NULL);
		_exit(127);
	}
	int st = 0;
	CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
	CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 64);
#endif
}

static void test_rule_syntax(void)
{
	static const char *const bad[] = {
		"x action=nope",
		"x op=Kinesis_20131202.GetRecords",
		"x first=abc action=reset",
		"x prob=1.5 action=reset",
		"a action=reset\na action=reset",
		"x action=respond",
		"x action=delay",
		"x action=reset status=500",
		"x action=respond status=500 body=%zz",
		"bad/name action=reset",
		"x action=reset action=hold",
		"x frist=1 action=reset",
		"x action=after:hold",
		"x action=respond status=99",
	};
	struct faultctl *fp = proxy_for(fx.kinesis_ep);
	json_object *stats = NULL, *rules, *r, *v;

	set_rules(fp, "# comment\n\n"
		      "thr target=Kinesis_20131202.GetRecords first=3 action=throttle-kinesis\n"
		      "  slow op=S3 method=PUT path=/b/ query=partNumber prob=0.25 for=1000 "
		      "action=s3-slowdown ; "
		      "teapot every=2 skip=1 max=4 action=respond status=418 "
		      "body=%7B%22__type%22%3A%22Teapot%22%7D ctype=application/x-amz-json-1.1\n"
		      "late op=DynamoDB_20120810 action=after:reset\n"
		      "h action=hold ms=5000\n");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CU_ASSERT_EQUAL(faultctl_set_rules(fp, bad[i]), KL_EINVAL);
	/* a rejected set leaves the rules in force alone */
	CU_ASSERT_EQUAL_FATAL(faultctl_stats(fp, &stats), KL_OK);
	CU_ASSERT_FATAL(json_object_object_get_ex(stats, "rules", &rules));
	CU_ASSERT_EQUAL(json_object_object_length(rules), 5);
	CU_ASSERT_FATAL(json_object_object_get_ex(rules, "teapot", &r));
	CU_ASSERT_FATAL(json_object_object_get_ex(r, "action", &v));
	CU_ASSERT_STRING_EQUAL(json_object_get_string(v), "respond");
	CU_ASSERT_TRUE(json_object_object_get_ex(rules, "late", &r));
	json_object_put(stats);

	set_rules(fp, "");
	CU_ASSERT_EQUAL(faultctl_stats(fp, &stats), KL_OK);
	CU_ASSERT_TRUE(json_object_object_get_ex(stats, "rules", &rules) &&
		       json_object_object_length(rules) == 0);
	json_object_put(stats);
	proxy_done(fp);
}

/* ------------------------------------------------------------ pass-through */

static void test_kinesis_passthrough(void)
{
	struct faultctl *fp = proxy_for(fx.kinesis_ep);
	static const uint8_t bin[] = { 0, 1, 2, 0xff, 0xfe, '\r', '\n', 0, '"', '\\' };
	struct kinesis_put_entry e[3] = {
		{ .data = "first", .data_len = 5, .partition_key = "a" },
		{ .data = bin, .data_len = sizeof(bin), .partition_key = "b" },
		{ .data = "", .data_len = 0, .partition_key = "c" },
	};
	struct kinesis_put_results *res = NULL;
	struct kinesis_records *recs = NULL;
	struct kinesis_shard *shards = NULL;
	struct kl_errinfo info;
	struct aws_client c;
	char stream[64];
	size_t n = 0;

	client_init(&c, "kinesis", faultctl_url(fp), 1, 0);
	unique(stream, sizeof(stream), "kl-fp-pass");
	CHECK_OK(kinesis_create_stream(&c, stream, 1, &info));
	CHECK_OK(kinesis_wait_active(&c, stream, 10000, NULL, &info));
	CHECK_OK(kinesis_put_records(&c, stream, e, 3, &res, &info));
	CU_ASSERT_EQUAL(res->failed_count, 0);
	free(res);
	CHECK_OK(kinesis_list_shards(&c, stream, NULL, &shards, &n, &info));
	CU_ASSERT_EQUAL_FATAL(n, 1);
	CHECK_OK(read_shard(&c, stream, shards[0].shard_id, &recs, &info));
	CU_ASSERT_EQUAL_FATAL(recs->n_records, 3);
	for (size_t i = 0; i < 3; i++) {
		CU_ASSERT_EQUAL(recs->records[i].data_len, e[i].data_len);
		CU_ASSERT(memcmp(recs->records[i].data, e[i].data, e[i].data_len) == 0);
		CU_ASSERT_STRING_EQUAL(recs->records[i].partition_key, e[i].partition_key);
	}
	kinesis_records_free(recs);
	/* an AWS error passes through intact */
	CU_ASSERT_EQUAL(kinesis_describe_stream_summary(&c, "kl-fp-no-such-stream", NULL, &info),
			KL_ENOTFOUND);
	CU_ASSERT_EQUAL(info.http_status, 400);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "ResourceNotFoundException");

	/* every call went through the proxy, none was faulted */
	CU_ASSERT_EQUAL(counter(fp, "ops", "Kinesis_20131202.PutRecords", "requests"), 1);
	CU_ASSERT_EQUAL(counter(fp, "ops", "Kinesis_20131202.GetRecords", "requests"), 1);
	CU_ASSERT_EQUAL(counter(fp, NULL, NULL, "requests"), c.stats.attempts);
	CU_ASSERT_EQUAL(counter(fp, NULL, NULL, "faults"), 0);
	free(shards);
	aws_client_done(&c);
	proxy_done(fp);
}

static void test_ddb_conditional_passthrough(void)
{
	struct faultctl *fp = proxy_for(fx.ddb_ep);
	struct kl_errinfo info;
	struct aws_client c;
	char table[64];

	client_init(&c, "dynamodb", faultctl_url(fp), 1, 0);
	unique(table, sizeof(table), "kl-fp-pass");
	CHECK_OK(ddb_create_table(&c, table, "pk", "S", &info));
	CHECK_OK(ddb_wait_table_active(&c, table, 10000, NULL, &info));
	put_counter(table, "k", 1);
	CHECK_OK(cas_counter(&c, table, "k", 1, 2, &info));
	/* a stale condition fails through the proxy as it does without it */
	CU_ASSERT_EQUAL(cas_counter(&c, table, "k", 1, 5, &info), KL_ECONFLICT);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "ConditionalCheckFailedException");
	CU_ASSERT_EQUAL(direct_counter(table, "k"), 2);
	CU_ASSERT_EQUAL(counter(fp, "ops", "DynamoDB_20120810.UpdateItem", "requests"), 2);
	CU_ASSERT_EQUAL(counter(fp, NULL, NULL, "faults"), 0);
	aws_client_done(&c);
	proxy_done(fp);
}

static void test_s3_multipart_passthrough(void)
{
	const size_t len = 20 * MIB;
	struct faultctl *fp = proxy_for(fx.s3_ep);
	struct s3_upload_opts uo = { .multipart_threshold = 5 * MIB, .part_size = 5 * MIB };
	struct s3_put_result res;
	struct kl_errinfo info;
	struct aws_client c;
	int src = pattern_file(len), got = empty_file(), direct = empty_file();

	client_init(&c, "s3", faultctl_url(fp), 1, 0);
	CHECK_OK(s3_upload_file(&c, BUCKET, "mp/twenty", src, 0, len, &uo, &res, &info));
	CU_ASSERT_EQUAL(res.n_parts, 4);
	CHECK_OK(s3_get_object_to_fd(&c, BUCKET, "mp/twenty", got, NULL, &info));
	CU_ASSERT_TRUE(same_file(got, src, len));
	CHECK_OK(s3_get_object_to_fd(&fx.s3, BUCKET, "mp/twenty", direct, NULL, &info));
	CU_ASSERT_TRUE(same_file(direct, src, len));
	CU_ASSERT_EQUAL(counter(fp, "ops", "S3.CreateMultipartUpload", "requests"), 1);
	CU_ASSERT_EQUAL(counter(fp, "ops", "S3.UploadPart", "requests"), 4);
	CU_ASSERT_EQUAL(counter(fp, "ops", "S3.CompleteMultipartUpload", "requests"), 1);
	CU_ASSERT_EQUAL(counter(fp, "ops", "S3.GetObject", "requests"), 1);
	close(src);
	close(got);
	close(direct);
	aws_client_done(&c);
	proxy_done(fp);
}

/* Peak resident memory of pid in KiB, from /proc (0 when unknown). */
static long peak_rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* A 48 MiB object up and down through the proxy: byte-exact, and the
 * proxy's peak memory stays far below the object's size (it measured
 * 2 MiB, 7.6 MiB under ASan). Large enough to prove streaming, small
 * enough not to tie up s3rver for long. */
static void test_large_object_bounded_memory(void)
{
	const size_t len = 48 * MIB;
	struct faultctl *fp = proxy_for(fx.s3_ep);
	struct s3_put_opts po = { .unsigned_payload = 1 };
	struct s3_put_result res;
	struct kl_errinfo info;
	struct aws_client c;
	int src = pattern_file(len), got = empty_file();
	long peak;

	client_init(&c, "s3", faultctl_url(fp), 1, 600000);
	CHECK_OK(s3_put_object_file(&c, BUCKET, "big/object", src, 0, len, &po, &res, &info));
	CHECK_OK(s3_get_object_to_fd(&c, BUCKET, "big/object", got, NULL, &info));
	CU_ASSERT_TRUE(same_file(got, src, len));
	peak = peak_rss_kib(faultctl_pid(fp));
	fprintf(stderr, "\n  faultproxy peak RSS after 2 x 48 MiB: %ld KiB\n", peak);
	CU_ASSERT(peak > 0 && peak < 16 * 1024);
	CU_ASSERT_EQUAL(counter(fp, "ops", "S3.PutObject", "requests"), 1);
	close(src);
	close(got);
	aws_client_done(&c);
	proxy_done(fp);
}

/* ------------------------------------------------------------ raw HTTP */

static int connect_port(unsigned short port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct timeval tv = { .tv_sec = 20 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	CU_ASSERT_FATAL(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	CU_ASSERT_FATAL(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	return fd;
}

static unsigned short url_port(const char *url)
{
	const char *colon = strrchr(url, ':');

	return colon ? (unsigned short)atoi(colon + 1) : 0;
}

static void send_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
		CU_ASSERT_FATAL(w > 0);
		c += w;
		n -= (size_t)w;
	}
}

/* A buffer of what a raw socket received. */
struct rxbuf {
	char *p;
	size_t len, cap;
};

/* Receives into b until it holds at least want bytes, or EOF (want 0 = EOF). */
static void rx_until(int fd, struct rxbuf *b, size_t want)
{
	while (want == 0 || b->len < want) {
		if (b->cap - b->len < 65536) {
			b->cap = b->cap ? b->cap * 2 : 262144;
			b->p = realloc(b->p, b->cap + 1);
			CU_ASSERT_FATAL(b->p != NULL);
		}
		ssize_t n = recv(fd, b->p + b->len, b->cap - b->len, 0);
		CU_ASSERT_FATAL(n >= 0);
		if (n == 0)
			break;
		b->len += (size_t)n;
	}
	if (b->p)
		b->p[b->len] = '\0';
}

/* Receives a head; returns its length (through "\r\n\r\n"). */
static size_t rx_head(int fd, struct rxbuf *b)
{
	for (;;) {
		char *end = b->p ? strstr(b->p, "\r\n\r\n") : NULL;
		if (end)
			return (size_t)(end + 4 - b->p);
		size_t had = b->len;
		rx_until(fd, b, b->len + 1);
		CU_ASSERT_FATAL(b->len > had);
	}
}

/* Drops the first n bytes of b. */
static void rx_consume(struct rxbuf *b, size_t n)
{
	memmove(b->p, b->p + n, b->len - n + 1);
	b->len -= n;
}

/* The chunked body an upstream of our own sends: odd sizes, an extension,
 * a chunk larger than the proxy's buffer, and a trailer. */
static size_t chunked_wire(char **ret)
{
	static const size_t sizes[] = { 1, 4096, 70000, 3 };
	size_t cap = 90000, o = 0, k = 0;
	char *w = malloc(cap);

	CU_ASSERT_FATAL(w != NULL);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		o += (size_t)sprintf(w + o, i == 0 ? "%zx;ext=1\r\n" : "%zx\r\n", sizes[i]);
		for (size_t j = 0; j < sizes[i]; j++)
			w[o++] = (char)pattern_byte(k++);
		o += (size_t)sprintf(w + o, "\r\n");
	}
	o += (size_t)sprintf(w + o, "0\r\nX-Trailer: done\r\n\r\n");
	*ret = w;
	return o;
}

/* An upstream of our own (not AWS: the emulators never answer chunked). */
struct chunky {
	int lfd;
	unsigned short port;
	pthread_t th;
	int served;
};

static void *chunky_main(void *arg)
{
	struct chunky *u = arg;
	static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
				   "Transfer-Encoding: chunked\r\n\r\n";
	static const char eof_head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
				       "Connection: close\r\n\r\n";
	char *wire, req[4096];
	size_t wire_len = chunked_wire(&wire), have = 0;
	int fd = accept(u->lfd, NULL, NULL);

	while (fd >= 0 && u->served < 3) {
		char *end;
		ssize_t n = recv(fd, req + have, sizeof(req) - 1 - have, 0);
		if (n <= 0)
			break;
		have += (size_t)n;
		req[have] = '\0';
		while ((end = strstr(req, "\r\n\r\n")) != NULL) {
			size_t used = (size_t)(end + 4 - req);
			memmove(req, req + used, have - used + 1);
			have -= used;
			u->served++;
			if (u->served < 3) {
				send(fd, head, sizeof(head) - 1, MSG_NOSIGNAL);
				/* in small pieces, so the proxy sees partial chunks */
				for (size_t off = 0; off < wire_len; off += 1000)
					send(fd, wire + off, wire_len - off < 1000 ? wire_len - off : 1000,
					     MSG_NOSIGNAL);
			} else {
				send(fd, eof_head, sizeof(eof_head) - 1, MSG_NOSIGNAL);
				send(fd, wire, wire_len, MSG_NOSIGNAL);
				break;
			}
		}
	}
	if (fd >= 0)
		close(fd);
	free(wire);
	return NULL;
}

static void test_chunked_and_until_close(void)
{
	struct chunky u = { 0 };
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	struct rxbuf b = { 0 };
	char upstream[64], *wire;
	size_t wire_len = chunked_wire(&wire), hl;
	struct faultctl *fp;
	int fd;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	u.lfd = socket(AF_INET, SOCK_STREAM, 0);
	CU_ASSERT_FATAL(u.lfd >= 0 && bind(u.lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
			listen(u.lfd, 4) == 0 &&
			getsockname(u.lfd, (struct sockaddr *)&sa, &sl) == 0);
	u.port = ntohs(sa.sin_port);
	snprintf(upstream, sizeof(upstream), "http://127.0.0.1:%u", u.port);
	CU_ASSERT_FATAL(pthread_create(&u.th, NULL, chunky_main, &u) == 0);
	fp = proxy_for(upstream);
	fd = connect_port(url_port(faultctl_url(fp)));

	/* two chunked answers on one kept-alive connection, framing verbatim */
	for (int i = 0; i < 2; i++) {
		static const char get[] = "GET /chunky HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
		send_all(fd, get, sizeof(get) - 1);
		hl = rx_head(fd, &b);
		CU_ASSERT(strncmp(b.p, "HTTP/1.1 200 OK\r\n", 17) == 0);
		CU_ASSERT(strcasestr(b.p, "\r\nTransfer-Encoding: chunked\r\n") != NULL);
		CU_ASSERT(strcasestr(b.p, "\r\nConnection: close\r\n") == NULL);
		rx_consume(&b, hl);
		rx_until(fd, &b, wire_len);
		CU_ASSERT_EQUAL_FATAL(b.len, wire_len);
		CU_ASSERT(memcmp(b.p, wire, wire_len) == 0);
		rx_consume(&b, wire_len);
	}
	/* an answer delimited by the upstream closing: relayed, then closed */
	static const char get3[] = "GET /eof HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
	send_all(fd, get3, sizeof(get3) - 1);
	hl = rx_head(fd, &b);
	CU_ASSERT(strcasestr(b.p, "\r\nConnection: close\r\n") != NULL);
	rx_consume(&b, hl);
	rx_until(fd, &b, 0);
	CU_ASSERT_EQUAL(b.len, wire_len);
	CU_ASSERT(b.len == wire_len && memcmp(b.p, wire, wire_len) == 0);
	close(fd);
	pthread_join(u.th, NULL);
	CU_ASSERT_EQUAL(u.served, 3);
	close(u.lfd);
	proxy_done(fp);
	free(b.p);
	b = (struct rxbuf){ 0 };

	/* a chunked upload with Expect: 100-continue to s3rver (anonymous) */
	fp = proxy_for(fx.s3_ep);
	fd = connect_port(url_port(faultctl_url(fp)));
	char head[512];
	int hn = snprintf(head, sizeof(head),
			  "PUT /%s/chunked/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
			  "x-amz-content-sha256: UNSIGNED-PAYLOAD\r\nExpect: 100-continue\r\n"
			  "Transfer-Encoding: chunked\r\n\r\n",
			  BUCKET);
	send_all(fd, head, (size_t)hn);
	hl = rx_head(fd, &b);
	CU_ASSERT(strncmp(b.p, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0);
	rx_consume(&b, hl);
	uint8_t *data = pattern(100000);
	for (size_t off = 0; off < 100000; off += 30000) {
		size_t m = 100000 - off < 30000 ? 100000 - off : 30000;
		hn = snprintf(head, sizeof(head), "%zx\r\n", m);
		send_all(fd, head, (size_t)hn);
		send_all(fd, data + off, m);
		send_all(fd, "\r\n", 2);
	}
	send_all(fd, "0\r\n\r\n", 5);
	hl = rx_head(fd, &b);
	CU_ASSERT(strncmp(b.p, "HTTP/1.1 200 ", 13) == 0);
	close(fd);
	char *obj = NULL;
	size_t obj_len = 0;
	struct kl_errinfo info;
	CHECK_OK(s3_get_object(&fx.s3, BUCKET, "chunked/upload", 1 << 20, &obj, &obj_len, NULL,
			       &info));
	CU_ASSERT(obj_len == 100000 && memcmp(obj, data, 100000) == 0);
	free(obj);
	obj = NULL;

	/* an error answered to a client that waits for 100 Continue: no 100,
	 * the error, and a clean close although the body never came */
	set_rules(fp, "e op=S3.PutObject path=/" BUCKET "/expect/ action=s3-slowdown\n"
		      "k op=S3.PutObject path=/" BUCKET "/keep/ first=1 action=s3-slowdown\n");
	fd = connect_port(url_port(faultctl_url(fp)));
	hn = snprintf(head, sizeof(head),
		      "PUT /%s/expect/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
		      "x-amz-content-sha256: UNSIGNED-PAYLOAD\r\nExpect: 100-continue\r\n"
		      "Content-Length: 5000\r\n\r\n",
		      BUCKET);
	send_all(fd, head, (size_t)hn);
	free(b.p);
	b = (struct rxbuf){ 0 };
	rx_until(fd, &b, 0);
	CU_ASSERT(strncmp(b.p, "HTTP/1.1 503 ", 13) == 0);
	CU_ASSERT(strcasestr(b.p, "\r\nConnection: close\r\n") != NULL);
	CU_ASSERT(strstr(b.p, "<Code>SlowDown</Code>") != NULL);
	close(fd);

	/* an error answered after reading the body away keeps the
	 * connection: the next request on it is forwarded */
	fd = connect_port(url_port(faultctl_url(fp)));
	for (int i = 0; i < 2; i++) {
		hn = snprintf(head, sizeof(head),
			      "PUT /%s/keep/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
			      "x-amz-content-sha256: UNSIGNED-PAYLOAD\r\nContent-Length: 100000\r\n\r\n",
			      BUCKET);
		send_all(fd, head, (size_t)hn);
		send_all(fd, data, 100000);
		free(b.p);
		b = (struct rxbuf){ 0 };
		hl = rx_head(fd, &b);
		const char *cl = strcasestr(b.p, "\r\nContent-Length: ");
		CU_ASSERT_FATAL(cl != NULL);
		rx_until(fd, &b, hl + (size_t)atol(cl + 18));
		CU_ASSERT(strncmp(b.p, i == 0 ? "HTTP/1.1 503 " : "HTTP/1.1 200 ", 13) == 0);
		CU_ASSERT(strcasestr(b.p, "\r\nConnection: close\r\n") == NULL);
	}
	close(fd);
	CHECK_OK(s3_get_object(&fx.s3, BUCKET, "keep/x", 1 << 20, &obj, &obj_len, NULL, &info));
	CU_ASSERT(obj_len == 100000 && memcmp(obj, data, 100000) == 0);
	free(obj);
	CU_ASSERT_EQUAL(counter(fp, "rules", "k", "matched"), 2);
	CU_ASSERT_EQUAL(counter(fp, "rules", "k", "faults"), 1);
	free(data);
	free(b.p);
	free(wire);
	proxy_done(fp);
}

/* ------------------------------------------------------------ faults */

static void test_presets_classified(void)
{
	static const struct {
		const char *rule;
		enum kl_err want;
		long status;
		const char *code;
	} cases[] = {
		{ "p op=Kinesis_20131202.DescribeStreamSummary action=throttle-kinesis", KL_ETHROTTLED,
		  400, "ProvisionedThroughputExceededException" },
		{ "p op=Kinesis_20131202 action=kinesis-500", KL_ESERVER, 500, "InternalFailure" },
		{ "p action=respond status=400 ctype=application/x-amz-json-1.1 "
		  "body=%7B%22__type%22%3A%22AccessDeniedException%22%7D",
		  KL_EAUTH, 400, "AccessDeniedException" },
	};
	struct faultctl *kp = proxy_for(fx.kinesis_ep), *dp = proxy_for(fx.ddb_ep);
	struct faultctl *sp = proxy_for(fx.s3_ep);
	struct aws_client kc, dc, sc;
	struct kl_errinfo info;
	json_object *key = ddb_key_s("pk", "x"), *item = NULL;
	struct s3_put_result res;

	client_init(&kc, "kinesis", faultctl_url(kp), 1, 0);
	client_init(&dc, "dynamodb", faultctl_url(dp), 1, 0);
	client_init(&sc, "s3", faultctl_url(sp), 1, 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		set_rules(kp, cases[i].rule);
		CU_ASSERT_EQUAL(kinesis_describe_stream_summary(&kc, "any", NULL, &info), cases[i].want);
		CU_ASSERT_EQUAL(info.http_status, cases[i].status);
		CU_ASSERT_STRING_EQUAL(info.aws_code, cases[i].code);
	}
	set_rules(dp, "t op=DynamoDB_20120810.GetItem action=throttle-ddb");
	CU_ASSERT_EQUAL(ddb_get_item(&dc, "any", key, true, &item, &info), KL_ETHROTTLED);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "ProvisionedThroughputExceededException");
	set_rules(dp, "t op=DynamoDB_20120810.GetItem action=ddb-500");
	CU_ASSERT_EQUAL(ddb_get_item(&dc, "any", key, true, &item, &info), KL_ESERVER);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "InternalServerError");
	set_rules(sp, "s op=S3.GetObject action=s3-slowdown");
	char *data = NULL;
	size_t len = 0;
	CU_ASSERT_EQUAL(s3_get_object(&sc, BUCKET, "any", 100, &data, &len, NULL, &info),
			KL_ETHROTTLED);
	CU_ASSERT_EQUAL(info.http_status, 503);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "SlowDown");
	set_rules(sp, "s op=S3.PutObject action=s3-500");
	CU_ASSERT_EQUAL(s3_put_object(&sc, BUCKET, "any", "x", 1, NULL, &res, &info), KL_ESERVER);
	CU_ASSERT_EQUAL(info.http_status, 500);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "InternalError");
	/* nothing reached the emulators */
	CU_ASSERT_EQUAL(counter(kp, NULL, NULL, "faults"), counter(kp, NULL, NULL, "requests"));
	CU_ASSERT_EQUAL(counter(dp, NULL, NULL, "faults"), 2);
	CU_ASSERT_EQUAL(counter(sp, NULL, NULL, "faults"), 2);
	json_object_put(key);
	aws_client_done(&kc);
	aws_client_done(&dc);
	aws_client_done(&sc);
	proxy_done(kp);
	proxy_done(dp);
	proxy_done(sp);
}

/* every=, skip=/first=, prob= and max=, on calls that are not retried. */
static void test_triggers(void)
{
	struct faultctl *fp = proxy_for(fx.kinesis_ep);
	struct kinesis_stream_summary sum;
	struct kl_errinfo info;
	struct aws_client c;
	char stream[64], shard[KINESIS_SHARD_ID_MAX + 1], failed[16];
	unsigned fails = 0;

	make_stream(stream, sizeof(stream), shard);
	client_init(&c, "kinesis", faultctl_url(fp), 1, 0);

	set_rules(fp, "e op=Kinesis_20131202.DescribeStreamSummary every=3 action=kinesis-500");
	for (int i = 0; i < 9; i++)
		failed[i] = kinesis_describe_stream_summary(&c, stream, &sum, &info) != KL_OK ? 'x' : '.';
	failed[9] = '\0';
	CU_ASSERT_STRING_EQUAL(failed, "..x..x..x");

	set_rules(fp, "s op=Kinesis_20131202.DescribeStreamSummary skip=2 first=2 action=kinesis-500");
	for (int i = 0; i < 6; i++)
		failed[i] = kinesis_describe_stream_summary(&c, stream, &sum, &info) != KL_OK ? 'x' : '.';
	failed[6] = '\0';
	CU_ASSERT_STRING_EQUAL(failed, "..xx..");
	CU_ASSERT_EQUAL(counter(fp, "rules", "s", "matched"), 6);
	CU_ASSERT_EQUAL(counter(fp, "rules", "s", "faults"), 2);

	/* the first rule that fires wins; a rule that does not fire passes the
	 * request on to the next */
	set_rules(fp, "never op=Kinesis_20131202 prob=0 action=reset\n"
		      "half op=Kinesis_20131202.DescribeStreamSummary prob=0.5 max=40 "
		      "action=kinesis-500\n");
	for (int i = 0; i < 200; i++)
		if (kinesis_describe_stream_summary(&c, stream, &sum, &info) != KL_OK)
			fails++;
	CU_ASSERT_EQUAL(counter(fp, "rules", "never", "matched"), 200);
	CU_ASSERT_EQUAL(counter(fp, "rules", "never", "faults"), 0);
	CU_ASSERT_EQUAL(counter(fp, "rules", "half", "faults"), fails);
	/* prob=0.5 over 200 tries reaches the cap of 40 */
	CU_ASSERT_EQUAL(fails, 40);
	CU_ASSERT_EQUAL(counter(fp, "ops", "Kinesis_20131202.DescribeStreamSummary", "faults"),
			3 + 2 + 40);
	aws_client_done(&c);
	proxy_done(fp);
}

static void test_getrecords_throttled(void)
{
	struct faultctl *fp = proxy_for(fx.kinesis_ep);
	struct kinesis_put_entry e[3] = {
		{ .data = "r0", .data_len = 2, .partition_key = "a" },
		{ .data = "r1", .data_len = 2, .partition_key = "a" },
		{ .data = "r2", .data_len = 2, .partition_key = "a" },
	};
	struct kinesis_position pos = { .type = KINESIS_ITER_TRIM_HORIZON };
	struct kinesis_put_results *res = NULL;
	struct kinesis_records *recs = NULL;
	struct aws_stats before;
	struct kl_errinfo info;
	struct aws_client c;
	char stream[64], shard[KINESIS_SHARD_ID_MAX + 1], *iter = NULL;

	make_stream(stream, sizeof(stream), shard);
	CHECK_OK(kinesis_put_records(&fx.kin, stream, e, 3, &res, &info));
	free(res);
	client_init(&c, "kinesis", faultctl_url(fp), 8, 0);
	CHECK_OK(kinesis_get_shard_iterator(&c, stream, shard, &pos, &iter, &info));

	set_rules(fp, "thr target=Kinesis_20131202.GetRecords first=3 action=throttle-kinesis");
	before = c.stats;
	CHECK_OK(kinesis_get_records(&c, iter, 100, &recs, &info));
	CU_ASSERT_EQUAL_FATAL(recs->n_records, 3);
	CU_ASSERT(memcmp(recs->records[2].data, "r2", 2) == 0);
	kinesis_records_free(recs);
	CU_ASSERT_EQUAL(c.stats.throttles - before.throttles, 3);
	CU_ASSERT_EQUAL(c.stats.retries - before.retries, 3);
	CU_ASSERT_EQUAL(c.stats.attempts - before.attempts, 4);
	CU_ASSERT_EQUAL(c.stats.errors - before.errors, 0);
	CU_ASSERT_EQUAL(counter(fp, "rules", "thr", "matched"), 4);
	CU_ASSERT_EQUAL(counter(fp, "rules", "thr", "faults"), 3);
	CU_ASSERT_EQUAL(counter(fp, "ops", "Kinesis_20131202.GetRecords", "requests"), 4);
	CU_ASSERT_EQUAL(counter(fp, "ops", "Kinesis_20131202.GetRecords", "faults"), 3);

	/* throttled on every attempt: the client gives up with KL_ETHROTTLED */
	aws_client_done(&c);
	client_init(&c, "kinesis", faultctl_url(fp), 3, 0);
	set_rules(fp, "all target=Kinesis_20131202.GetRecords action=throttle-kinesis");
	CU_ASSERT_EQUAL(kinesis_get_records(&c, iter, 100, &recs, &info), KL_ETHROTTLED);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "ProvisionedThroughputExceededException");
	CU_ASSERT_EQUAL(c.stats.attempts, 3);
	CU_ASSERT_EQUAL(counter(fp, "rules", "all", "faults"), 3);
	free(iter);
	aws_client_done(&c);
	proxy_done(fp);
}

static void test_s3_slowdown_period(void)
{
	const size_t len = 12 * MIB;
	struct faultctl *fp = proxy_for(fx.s3_ep);
	struct s3_upload_opts uo = { .multipart_threshold = 5 * MIB, .part_size = 5 * MIB };
	struct aws_client_config ac = { 0 };
	struct s3_object_info obj = { 0 };
	struct s3_put_result res;
	struct kl_errinfo info;
	struct aws_client c;
	int src = pattern_file(len), direct = empty_file();
	uint64_t slow, part;

	/* enough attempts that a 600 ms SlowDown period cannot outlast them */
	ac.service = "s3";
	ac.region = "us-east-1";
	ac.endpoint = faultctl_url(fp);
	ac.http.timeout_ms = 60000;
	ac.retry.max_attempts = 15;
	ac.retry.throttle_base_delay_ms = 50;
	ac.retry.max_delay_ms = 1000;
	CU_ASSERT_EQUAL_FATAL(aws_client_init(&c, &ac, fx.creds), KL_OK);
	/* every S3 call slows down for 600 ms (the upload's first calls);
	 * then the first two part uploads once more, so a part body is
	 * certainly sent again */
	set_rules(fp, "slow op=S3 for=600 action=s3-slowdown\n"
		      "part op=S3.UploadPart first=2 action=s3-slowdown\n");
	CHECK_OK(s3_upload_file(&c, BUCKET, "slow/object", src, 0, len, &uo, &res, &info));
	CU_ASSERT_EQUAL(res.n_parts, 3);
	slow = counter(fp, "rules", "slow", "faults");
	part = counter(fp, "rules", "part", "faults");
	CU_ASSERT(slow >= 1);
	CU_ASSERT_EQUAL(part, 2);
	CU_ASSERT_EQUAL(c.stats.throttles, slow + part);
	CU_ASSERT_EQUAL(c.stats.errors, 0);
	CU_ASSERT_EQUAL(counter(fp, "ops", "S3.UploadPart", "requests"),
			3 + counter(fp, "ops", "S3.UploadPart", "faults"));
	/* the period is over: no more slow-downs */
	CHECK_OK(s3_head_object(&c, BUCKET, "slow/object", &obj, &info));
	CU_ASSERT_EQUAL(obj.size, len);
	s3_object_info_done(&obj);
	CU_ASSERT_EQUAL(counter(fp, "rules", "slow", "faults"), slow);
	CHECK_OK(s3_get_object_to_fd(&fx.s3, BUCKET, "slow/object", direct, NULL, &info));
	CU_ASSERT_TRUE(same_file(direct, src, len));
	close(src);
	close(direct);
	aws_client_done(&c);
	proxy_done(fp);
}

/*
 * A conditional UpdateItem that reaches dynalite and is applied, but whose
 * answer is replaced by a 500 (or a reset): the client sees a failure
 * although the write landed. Retried, the same write then fails its own
 * condition, which is what the lease code must be ready for.
 */
static void test_ddb_after_forward_failure(void)
{
	struct faultctl *fp = proxy_for(fx.ddb_ep);
	struct kl_errinfo info;
	struct aws_client c;
	char table[64];

	make_table(table, sizeof(table));
	put_counter(table, "lease", 1);

	/* no retry: the caller is told it failed; the item says otherwise */
	client_init(&c, "dynamodb", faultctl_url(fp), 1, 0);
	set_rules(fp, "lost op=DynamoDB_20120810.UpdateItem first=1 action=after:ddb-500");
	CU_ASSERT_EQUAL(cas_counter(&c, table, "lease", 1, 2, &info), KL_ESERVER);
	CU_ASSERT_EQUAL(info.http_status, 500);
	CU_ASSERT_STRING_EQUAL(info.aws_code, "InternalServerError");
	CU_ASSERT_EQUAL(direct_counter(table, "lease"), 2);
	CU_ASSERT_EQUAL(counter(fp, "rules", "lost", "faults"), 1);
	aws_client_done(&c);

	/* with retries: the retry finds its own write and fails the condition */
	client_init(&c, "dynamodb", faultctl_url(fp), 3, 0);
	set_rules(fp, "lost op=DynamoDB_20120810.UpdateItem first=1 action=after:ddb-500");
	CU_ASSERT_EQUAL(cas_counter(&c, table, "lease", 2, 3, &info), KL_ECONFLICT);
	CU_ASSERT_EQUAL(c.stats.retries, 1);
	CU_ASSERT_EQUAL(direct_counter(table, "lease"), 3);
	aws_client_done(&c);

	/* the answer is a reset instead: a connection error, and it landed */
	client_init(&c, "dynamodb", faultctl_url(fp), 1, 0);
	set_rules(fp, "cut op=DynamoDB_20120810.UpdateItem first=1 action=after:reset");
	CU_ASSERT_EQUAL(cas_counter(&c, table, "lease", 3, 4, &info), KL_ECONNECT);
	CU_ASSERT_EQUAL(direct_counter(table, "lease"), 4);
	CU_ASSERT_EQUAL(counter(fp, "ops", "DynamoDB_20120810.UpdateItem", "requests"), 4);
	aws_client_done(&c);
	proxy_done(fp);
}

/* A reset before forwarding: the write never landed, and a retry lands it once. */
static void test_reset_before_forward(void)
{
	struct faultctl *fp = proxy_for(fx.kinesis_ep);
	struct kinesis_put_entry e = { .data = "once", .data_len = 4, .partition_key = "k" };
	struct kinesis_put_results *res = NULL;
	struct kinesis_records *recs = NULL;
	struct kl_errinfo info;
	struct aws_client c;
	char stream[64], shard[KINESIS_SHARD_ID_MAX + 1];

	make_stream(stream, sizeof(stream), shard);
	set_rules(fp, "rst op=Kinesis_20131202.PutRecords first=1 action=reset");
	client_init(&c, "kinesis", faultctl_url(fp), 1, 0);
	CU_ASSERT_EQUAL(kinesis_put_records(&c, stream, &e, 1, &res, &info), KL_ECONNECT);
	aws_client_done(&c);
	CHECK_OK(read_shard(&fx.kin, stream, shard, &recs, &info));
	CU_ASSERT_EQUAL(recs->n_records, 0);
	kinesis_records_free(recs);

	set_rules(fp, "rst op=Kinesis_20131202.PutRecords first=1 action=reset");
	client_init(&c, "kinesis", faultctl_url(fp), 4, 0);
	CHECK_OK(kinesis_put_records(&c, stream, &e, 1, &res, &info));
	free(res);
	CU_ASSERT_EQUAL(c.stats.retries, 1);
	CHECK_OK(read_shard(&fx.kin, stream, shard, &recs, &info));
	CU_ASSERT_EQUAL(recs->n_records, 1);
	kinesis_records_free(recs);
	CU_ASSERT_EQUAL(counter(fp, "rules", "rst", "faults"), 1);
	aws_client_done(&c);
	proxy_done(fp);
}

static void test_reset_mid_response(void)
{
	const size_t len = MIB;
	struct faultctl *fp = proxy_for(fx.s3_ep);
	uint8_t *data = pattern(len);
	struct s3_put_result res;
	struct kl_errinfo info;
	struct aws_client c;
	char *got = NULL;
	size_t got_len = 0;

	CHECK_OK(s3_put_object(&fx.s3, BUCKET, "mid/object", data, len, NULL, &res, &info));

	/* the head and 1000 body bytes arrive, then a reset */
	set_rules(fp, "mid op=S3.GetObject first=1 action=reset-mid bytes=1000");
	client_init(&c, "s3", faultctl_url(fp), 1, 0);
	CU_ASSERT_EQUAL(s3_get_object(&c, BUCKET, "mid/object", 2 * len, &got, &got_len, NULL, &info),
			KL_ECONNECT);
	CU_ASSERT_TRUE(kl_err_retryable(KL_ECONNECT));
	aws_client_done(&c);

	set_rules(fp, "mid op=S3.GetObject first=1 action=reset-mid bytes=1000");
	client_init(&c, "s3", faultctl_url(fp), 4, 0);
	CHECK_OK(s3_get_object(&c, BUCKET, "mid/object", 2 * len, &got, &got_len, NULL, &info));
	CU_ASSERT(got_len == len && memcmp(got, data, len) == 0);
	CU_ASSERT_EQUAL(c.stats.retries, 1);
	CU_ASSERT_EQUAL(counter(fp, "rules", "mid", "faults"), 1);
	free(got);
	free(data);
	aws_client_done(&c);
	proxy_done(fp);
}

struct put_job {
	const char *endpoint;
	const char *key;
	const uint8_t *data;
	size_t len;
	enum kl_err err;
	struct kl_errinfo info;
};

static void *put_thread(void *arg)
{
	struct put_job *j = arg;
	struct aws_client_config ac = { 0 };
	struct s3_put_result res;
	struct aws_client c;

	ac.service = "s3";
	ac.region = "us-east-1";
	ac.endpoint = j->endpoint;
	ac.http.timeout_ms = 60000;
	ac.retry.max_attempts = 1;
	j->err = aws_client_init(&c, &ac, fx.creds);
	if (j->err == KL_OK)
		j->err = s3_put_object(&c, BUCKET, j->key, j->data, j->len, NULL, &res, &j->info);
	aws_client_done(&c);
	return NULL;
}

static void test_hold_release_s3_put(void)
{
	const size_t len = 256 * 1024;
	struct faultctl *fp = proxy_for(fx.s3_ep);
	uint8_t *data = pattern(len);
	struct put_job job = { .endpoint = faultctl_url(fp), .key = "held/object", .data = data,
			       .len = len };
	struct s3_object_info obj = { 0 };
	struct kl_errinfo info;
	unsigned released = 99;
	pthread_t th;
	char *got = NULL;
	size_t got_len = 0;

	set_rules(fp, "h op=S3.PutObject path=/" BUCKET "/held/ action=hold");
	CU_ASSERT_EQUAL(faultctl_release(fp, NULL, 0, &released), KL_OK);
	CU_ASSERT_EQUAL(released, 0);
	CU_ASSERT_FATAL(pthread_create(&th, NULL, put_thread, &job) == 0);
	CU_ASSERT_EQUAL_FATAL(faultctl_wait_held(fp, "h", 1, 20000), KL_OK);
	/* frozen in flight: nothing has reached s3rver */
	usleep(100000);
	CU_ASSERT_EQUAL(s3_head_object(&fx.s3, BUCKET, "held/object", &obj, &info), KL_ENOTFOUND);
	CU_ASSERT_EQUAL(counter(fp, NULL, NULL, "held"), 1);
	CU_ASSERT_EQUAL(faultctl_release(fp, "other", 0, &released), KL_OK);
	CU_ASSERT_EQUAL(released, 0);
	CU_ASSERT_EQUAL(faultctl_release(fp, "h", 1, &released), KL_OK);
	CU_ASSERT_EQUAL(released, 1);
	pthread_join(th, NULL);
	report("held PutObject", job.err, &job.info);
	CU_ASSERT_EQUAL(job.err, KL_OK);
	CHECK_OK(s3_get_object(&fx.s3, BUCKET, "held/object", len, &got, &got_len, NULL, &info));
	CU_ASSERT(got_len == len && memcmp(got, data, len) == 0);
	free(got);
	CU_ASSERT_EQUAL(counter(fp, "rules", "h", "held"), 0);
	CU_ASSERT_EQUAL(counter(fp, "rules", "h", "faults"), 1);

	/* replacing the rules releases what is held */
	job.key = "held/second";
	CU_ASSERT_FATAL(pthread_create(&th, NULL, put_thread, &job) == 0);
	CU_ASSERT_EQUAL_FATAL(faultctl_wait_held(fp, NULL, 1, 20000), KL_OK);
	set_rules(fp, "");
	pthread_join(th, NULL);
	CU_ASSERT_EQUAL(job.err, KL_OK);
	CHECK_OK(s3_head_object(&fx.s3, BUCKET, "held/second", &obj, &info));
	CU_ASSERT_EQUAL(obj.size, len);
	s3_object_info_done(&obj);
	free(data);
	proxy_done(fp);
}

static void test_delays(void)
{
	struct faultctl *fp = proxy_for(fx.ddb_ep);
	json_object *key = ddb_key_s("pk", "d"), *item = NULL;
	struct kl_errinfo info;
	struct aws_client c;
	char table[64];
	int64_t t0;

	make_table(table, sizeof(table));
	put_counter(table, "d", 1);
	client_init(&c, "dynamodb", faultctl_url(fp), 1, 0);
	set_rules(fp, "d op=DynamoDB_20120810.GetItem first=1 action=delay ms=300");
	t0 = kl_mono_ms();
	CHECK_OK(ddb_get_item(&c, table, key, true, &item, &info));
	CU_ASSERT(kl_mono_ms() - t0 >= 300);
	json_object_put(item);
	CHECK_OK(ddb_get_item(&c, table, key, true, &item, &info));
	json_object_put(item);
	CU_ASSERT_EQUAL(counter(fp, "rules", "d", "matched"), 2);
	CU_ASSERT_EQUAL(counter(fp, "rules", "d", "faults"), 1);
	aws_client_done(&c);

	/* delay-response: the write lands at once, the client times out */
	client_init(&c, "dynamodb", faultctl_url(fp), 1, 300);
	set_rules(fp, "dr op=DynamoDB_20120810.UpdateItem first=1 action=delay-response ms=2000");
	CU_ASSERT_EQUAL(cas_counter(&c, table, "d", 1, 2, &info), KL_ETIMEOUT);
	CU_ASSERT_EQUAL(wait_counter(table, "d", 2), 2);
	aws_client_done(&c);

	/* delay before forwarding: the client times out before anything
	 * landed, and the late request still arrives afterwards */
	client_init(&c, "dynamodb", faultctl_url(fp), 1, 300);
	set_rules(fp, "dl op=DynamoDB_20120810.UpdateItem first=1 action=delay ms=1500");
	t0 = kl_mono_ms();
	CU_ASSERT_EQUAL(cas_counter(&c, table, "d", 2, 3, &info), KL_ETIMEOUT);
	if (kl_mono_ms() - t0 < 1200)
		CU_ASSERT_EQUAL(direct_counter(table, "d"), 2);
	CU_ASSERT_EQUAL(wait_counter(table, "d", 3), 3);
	json_object_put(key);
	aws_client_done(&c);
	proxy_done(fp);
}

/* ------------------------------------------------------------ main */

static int setup(void)
{
	struct creds_config cc = { 0 };
	struct aws_client_config ac = { 0 };
	struct kl_errinfo info;
	enum kl_err err;

	fx.kinesis_ep = kl_test_env_or_skip("KL_TEST_KINESIS_ENDPOINT");
	fx.ddb_ep = kl_test_env_or_skip("KL_TEST_DYNAMODB_ENDPOINT");
	fx.s3_ep = kl_test_env_or_skip("KL_TEST_S3_ENDPOINT");
	cc.access_key_id = kl_test_env_or_skip("KL_TEST_ACCESS_KEY_ID");
	cc.secret_access_key = kl_test_env_or_skip("KL_TEST_SECRET_ACCESS_KEY");
	cc.disable_imds = 1;
	if (http_global_init() != KL_OK || creds_chain_new(&cc, &fx.creds) != KL_OK)
		return -1;
	ac.region = "us-east-1";
	ac.http.timeout_ms = 60000;
	ac.retry.max_attempts = 3;
	ac.service = "kinesis";
	ac.endpoint = fx.kinesis_ep;
	if (aws_client_init(&fx.kin, &ac, fx.creds) != KL_OK)
		return -1;
	ac.service = "dynamodb";
	ac.endpoint = fx.ddb_ep;
	if (aws_client_init(&fx.ddb, &ac, fx.creds) != KL_OK)
		return -1;
	ac.service = "s3";
	ac.endpoint = fx.s3_ep;
	if (aws_client_init(&fx.s3, &ac, fx.creds) != KL_OK)
		return -1;
	err = s3_create_bucket(&fx.s3, BUCKET, &info);
	if (err != KL_OK && err != KL_EEXISTS) {
		report("CreateBucket", err, &info);
		return -1;
	}
	return 0;
}

static void teardown(void)
{
	aws_client_done(&fx.kin);
	aws_client_done(&fx.ddb);
	aws_client_done(&fx.s3);
	creds_chain_free(fx.creds);
	http_global_cleanup();
}

int main(void)
{
	static const struct kl_test tests[] = {
		KL_TEST(test_refuses_non_loopback),
		KL_TEST(test_rule_syntax),
		KL_TEST(test_kinesis_passthrough),
		KL_TEST(test_ddb_conditional_passthrough),
		KL_TEST(test_s3_multipart_passthrough),
		KL_TEST(test_large_object_bounded_memory),
		KL_TEST(test_chunked_and_until_close),
		KL_TEST(test_presets_classified),
		KL_TEST(test_triggers),
		KL_TEST(test_getrecords_throttled),
		KL_TEST(test_s3_slowdown_period),
		KL_TEST(test_ddb_after_forward_failure),
		KL_TEST(test_reset_before_forward),
		KL_TEST(test_reset_mid_response),
		KL_TEST(test_hold_release_s3_put),
		KL_TEST(test_delays),
		{ NULL, NULL },
	};
	int rc;

	if (setup() != 0) {
		fprintf(stderr, "integ_faultproxy: set-up failed\n");
		teardown();
		return 1;
	}
	rc = kl_test_run("faultproxy", tests);
	teardown();
	return rc;
}
