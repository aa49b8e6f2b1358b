/* SPDX-License-Identifier: Apache-2.0 */
/*
 * plugin_cmd.c: `kinlake plugin test` and `kinlake plugin list`. The test
 * runs records exactly as the consumer will: KPL de-aggregation, then one
 * plugin instance built from the same libconfig settings, then the host's
 * checks on every result; only the source (stdin) and sink (stdout) differ.
 * Subcommands are a table; options are parsed by hand (no getopt state).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libconfig.h>

#include "buf.h"
#include "kl_err.h"
#include "kpl.h"
#include "log.h"
#include "plugin_cmd.h"
#include "util.h"
#include "xform.h"

#define EXIT_USAGE 64
#define BINARY_INPUT_CAP ((size_t)64 << 20)

struct test_opts {
	const char *plugin;
	const char *config_file;
	const char *plugin_path;
	const char *partition_key;
	const char *shard_id;
	int64_t arrival_ms;
	bool binary;
};

struct test_counts {
	uint64_t inputs, records, ok, dropped, failed, outputs;
};

static void usage(void)
{
	fprintf(stderr,
		"usage: kinlake plugin test NAME|PATH [--config FILE] [--binary]\n"
		"                           [--partition-key KEY] [--shard-id ID]\n"
		"                           [--arrival-ms MS] [--plugin-path DIRS]\n"
		"       kinlake plugin list [--plugin-path DIRS]\n");
}

static const char *search_path(const char *opt)
{
	const char *env = getenv("KINLAKE_PLUGIN_PATH");

	if (opt)
		return opt;
	return env && *env ? env : XFORM_DEFAULT_PATH;
}

/* Prints data escaped: printable ASCII as is, the rest as \n, \t or \xNN
 * (bytes >= 0x80 pass through in text mode, where input is UTF-8 text). */
static void print_escaped(const uint8_t *p, size_t len, bool binary)
{
	for (size_t i = 0; i < len; i++) {
		uint8_t c = p[i];

		if (c == '\\')
			fputs("\\\\", stdout);
		else if (c == '\n')
			fputs("\\n", stdout);
		else if (c == '\t')
			fputs("\\t", stdout);
		else if ((c >= 0x20 && c < 0x7f) || (c >= 0x80 && !binary))
			putchar(c);
		else
			printf("\\x%02x", c);
	}
}

/* Runs one user record through the plugin and prints its result. */
static int run_one(struct xform *x, const struct test_opts *o, const struct kl_transform_record *rec,
		   const char *label, struct test_counts *n)
{
	struct xform_result res;
	enum kl_err err;

	err = xform_run(x, rec, &res);
	if (err != KL_OK) {
		fprintf(stderr, "kinlake: record %s: %s\n", label, kl_strerror(err));
		return -1;
	}
	n->records++;
	printf("%s %s", label, xform_result_str(res.result));
	switch (res.result) {
	case KL_TRANSFORM_OK:
		n->ok++;
		n->outputs += res.noutputs;
		if (res.noutputs == 0)
			printf(" (no output)");
		putchar('\n');
		for (size_t i = 0; i < res.noutputs; i++) {
			const struct xform_output *out = &res.outputs[i];

			printf("  ->");
			for (size_t k = 0; k < out->nkeys; k++)
				printf(" %s=%s", out->keys[k].name, out->keys[k].value);
			printf(" ");
			print_escaped(out->data, out->len, o->binary);
			putchar('\n');
		}
		break;
	case KL_TRANSFORM_DROPPED:
		n->dropped++;
		putchar('\n');
		break;
	case KL_TRANSFORM_FAILED:
		n->failed++;
		printf(" %s\n", res.reason);
		break;
	}
	return 0;
}

/* De-aggregates one input record and runs each user record. */
static int run_input(struct xform *x, struct kpl_decoder *dec, const struct test_opts *o,
		     const uint8_t *data, size_t len, struct test_counts *n)
{
	char seq[32], label[64], pk[257];
	struct kl_errinfo info;
	struct kpl_result kr;
	enum kl_err err;

	n->inputs++;
	snprintf(seq, sizeof(seq), "%" PRIu64, n->inputs);
	kl_errinfo_clear(&info);
	err = kpl_decode(dec, data, len, NULL, &info, &kr);
	if (err != KL_OK) {
		fprintf(stderr, "kinlake: record %s: %s\n", seq, info.message);
		return -1;
	}
	for (size_t i = 0; i < kr.nrecords; i++) {
		const struct kpl_record *r = &kr.records[i];
		char ehk[KPL_U128_DEC_SIZE];
		struct kl_transform_record rec = {
			.data = r->data,
			.len = r->len,
			.partition_key = o->partition_key,
			.sequence_number = seq,
			.sub_sequence_number = r->sub_sequence_number,
			.shard_id = o->shard_id,
			.approximate_arrival_ms = o->arrival_ms,
		};

		if (kr.verdict == KPL_AGGREGATE) {
			/* Kinesis keys are at most 256 bytes; longer ones are cut here only. */
			snprintf(pk, sizeof(pk), "%.*s", (int)r->partition_key_len, r->partition_key);
			rec.partition_key = pk;
			if (r->explicit_hash_key) {
				kpl_u128_format(r->hash_key, ehk);
				rec.explicit_hash_key = ehk;
			}
			snprintf(label, sizeof(label), "%s.%" PRIu64, seq, r->sub_sequence_number);
		} else {
			snprintf(label, sizeof(label), "%s", seq);
		}
		if (run_one(x, o, &rec, label, n) != 0)
			return -1;
	}
	return 0;
}

static int run_lines(struct xform *x, struct kpl_decoder *dec, const struct test_opts *o,
		     struct test_counts *n)
{
	char *line = NULL;
	size_t alloc = 0;
	ssize_t got;
	int rc = 0;

	while (rc == 0 && (got = getline(&line, &alloc, stdin)) >= 0) {
		if (got > 0 && line[got - 1] == '\n')
			got--;
		rc = run_input(x, dec, o, (const uint8_t *)line, (size_t)got, n);
	}
	if (rc == 0 && ferror(stdin)) {
		fprintf(stderr, "kinlake: reading stdin: %s\n", strerror(errno));
		rc = -1;
	}
	free(line);
	return rc;
}

static int run_binary(struct xform *x, struct kpl_decoder *dec, const struct test_opts *o,
		      struct test_counts *n)
{
	struct buf in;
	char chunk[65536];
	size_t got;
	int rc = 0;

	buf_init(&in, BINARY_INPUT_CAP);
	while ((got = fread(chunk, 1, sizeof(chunk), stdin)) > 0)
		if (buf_append(&in, chunk, got) != KL_OK) {
			fprintf(stderr, "kinlake: stdin is larger than %zu bytes\n", BINARY_INPUT_CAP);
			rc = -1;
			break;
		}
	if (rc == 0 && ferror(stdin)) {
		fprintf(stderr, "kinlake: reading stdin: %s\n", strerror(errno));
		rc = -1;
	}
	if (rc == 0)
		rc = run_input(x, dec, o, (const uint8_t *)(in.data ? in.data : ""), in.len, n);
	buf_done(&in);
	return rc;
}

/* Parses "--name VALUE" at argv[*i]; returns the value or NULL (usage error). */
static const char *opt_value(int argc, char **argv, int *i)
{
	if (*i + 1 >= argc) {
		fprintf(stderr, "kinlake: %s needs a value\n", argv[*i]);
		return NULL;
	}
	return argv[++*i];
}

static int parse_test_opts(int argc, char **argv, struct test_opts *o)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char **dst = NULL;

		if (strcmp(a, "--binary") == 0) {
			o->binary = true;
			continue;
		}
		if (strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0)
			dst = &o->config_file;
		else if (strcmp(a, "--plugin-path") == 0)
			dst = &o->plugin_path;
		else if (strcmp(a, "--partition-key") == 0)
			dst = &o->partition_key;
		else if (strcmp(a, "--shard-id") == 0)
			dst = &o->shard_id;
		else if (strcmp(a, "--arrival-ms") == 0) {
			const char *v = opt_value(argc, argv, &i);
			char *end;

			if (!v)
				return -1;
			errno = 0;
			o->arrival_ms = strtoll(v, &end, 10);
			if (errno || *end || end == v || o->arrival_ms < 0) {
				fprintf(stderr, "kinlake: --arrival-ms needs milliseconds since "
					"the epoch, not '%s'\n", v);
				return -1;
			}
			continue;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "kinlake: unknown option '%s'\n", a);
			return -1;
		} else if (!o->plugin) {
			o->plugin = a;
			continue;
		} else {
			fprintf(stderr, "kinlake: unexpected argument '%s'\n", a);
			return -1;
		}
		*dst = opt_value(argc, argv, &i);
		if (!*dst)
			return -1;
	}
	if (!o->plugin) {
		fprintf(stderr, "kinlake: plugin test needs a plugin name or path\n");
		return -1;
	}
	return 0;
}

static int cmd_test(int argc, char **argv)
{
	struct test_opts o = {
		.partition_key = "partition-key",
		.shard_id = "shardId-000000000000",
		.arrival_ms = kl_wall_ms(),
	};
	struct xform_plugin *plugin = NULL;
	struct kpl_decoder *dec = NULL;
	struct test_counts n = { 0 };
	struct kl_errinfo info;
	struct xform *x = NULL;
	config_t cfg;
	int rc = 1;

	if (parse_test_opts(argc, argv, &o) != 0) {
		usage();
		return EXIT_USAGE;
	}
	config_init(&cfg);
	kl_errinfo_clear(&info);
	if (o.config_file && config_read_file(&cfg, o.config_file) != CONFIG_TRUE) {
		if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
			fprintf(stderr, "kinlake: cannot read %s: %s\n", o.config_file,
				config_error_text(&cfg));
		else
			fprintf(stderr, "kinlake: %s:%d: %s\n",
				config_error_file(&cfg) ? config_error_file(&cfg) : o.config_file,
				config_error_line(&cfg), config_error_text(&cfg));
		goto out;
	}
	if (xform_plugin_load(o.plugin, search_path(o.plugin_path), &info, &plugin) != KL_OK ||
	    xform_new(plugin, o.config_file ? config_root_setting(&cfg) : NULL, &info, &x) != KL_OK ||
	    kpl_decoder_new(&info, &dec) != KL_OK) {
		fprintf(stderr, "kinlake: %s\n", info.message);
		goto out;
	}
	if ((o.binary ? run_binary(x, dec, &o, &n) : run_lines(x, dec, &o, &n)) == 0)
		rc = 0;
	fflush(stdout);
	fprintf(stderr,
		"plugin %s: %" PRIu64 " input(s), %" PRIu64 " record(s): %" PRIu64 " OK (%" PRIu64
		" output(s)), %" PRIu64 " DROPPED, %" PRIu64 " FAILED\n",
		xform_plugin_desc(plugin)->name, n.inputs, n.records, n.ok, n.outputs, n.dropped,
		n.failed);
out:
	kpl_decoder_free(dec);
	xform_free(x);
	xform_plugin_free(plugin);
	config_destroy(&cfg);
	return rc;
}

static int so_filter(const struct dirent *d)
{
	size_t n = strlen(d->d_name);

	return d->d_name[0] != '.' && n > 3 && strcmp(d->d_name + n - 3, ".so") == 0;
}

static void list_dir(const char *dir, size_t dir_len)
{
	struct dirent **ents = NULL;
	char *d = strndup(dir, dir_len);
	int n;

	if (!d)
		return;
	n = scandir(d, &ents, so_filter, alphasort);
	if (n < 0) {
		printf("# %s: %s\n", d, strerror(errno));
		free(d);
		return;
	}
	printf("# %s\n", d);
	for (int i = 0; i < n; i++) {
		struct xform_plugin *p = NULL;
		struct kl_errinfo info;
		char *path = NULL;
		size_t stem = strlen(ents[i]->d_name) - 3;

		kl_errinfo_clear(&info);
		if (asprintf(&path, "%s/%s", d, ents[i]->d_name) < 0)
			path = NULL;
		if (path && xform_plugin_load(path, NULL, &info, &p) == KL_OK) {
			const struct kl_transform_plugin *desc = xform_plugin_desc(p);

			printf("%-16.*s %-10s ABI %u.%u  %-11s %s\n", (int)stem, ents[i]->d_name,
			       desc->version ? desc->version : "-", desc->abi_major, desc->abi_minor,
			       desc->flags & KL_TRANSFORM_F_THREAD_SAFE ? "thread-safe" : "one-thread",
			       desc->description ? desc->description : "");
			xform_plugin_free(p);
		} else {
			printf("%-16.*s UNUSABLE: %s\n", (int)stem, ents[i]->d_name,
			       path ? info.message : "out of memory");
		}
		free(path);
		free(ents[i]);
	}
	free(ents);
	free(d);
}

static int cmd_list(int argc, char **argv)
{
	const char *opt = NULL, *p;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--plugin-path") == 0 && i + 1 < argc) {
			opt = argv[++i];
		} else {
			fprintf(stderr, "kinlake: unexpected argument '%s'\n", argv[i]);
			usage();
			return EXIT_USAGE;
		}
	}
	p = search_path(opt);
	while (*p) {
		const char *colon = strchr(p, ':');
		size_t len = colon ? (size_t)(colon - p) : strlen(p);

		if (len)
			list_dir(p, len);
		p += len + (colon ? 1 : 0);
	}
	fflush(stdout);
	return 0;
}

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} subcommands[] = {
	{ "test", cmd_test },
	{ "list", cmd_list },
};

int plugin_cmd_main(int argc, char **argv)
{
	if (argc < 2) {
		usage();
		return EXIT_USAGE;
	}
	for (size_t i = 0; i < KL_ARRAY_LEN(subcommands); i++)
		if (strcmp(argv[1], subcommands[i].name) == 0)
			return subcommands[i].fn(argc - 1, argv + 1);
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
		usage();
		return 0;
	}
	fprintf(stderr, "kinlake: unknown plugin subcommand '%s'\n", argv[1]);
	usage();
	return EXIT_USAGE;
}
