/* SPDX-License-Identifier: Apache-2.0 */
/*
 * main.c: the kinlake command line. Subcommands are a table (smtpctl
 * style); each entry's function gets argv starting at the subcommand name
 * and returns the process exit status.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "athena.h"
#include "cfg.h"
#include "demo.h"
#include "plugin_cmd.h"
#include "status.h"
#include "worker.h"

static int version_main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("kinlake %s\n", PACKAGE_VERSION);
	return 0;
}

static int help_main(int argc, char **argv);

static const struct subcommand {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *usage;
} subcommands[] = {
	{ "run", worker_main, "run [-c FILE]                    run a worker (until SIGTERM)" },
	{ "status", status_main, "status [-c FILE] [--json] [--watch SECONDS]  lease health; exit 0/1/2/3" },
	{ "check-config", cfg_check_main, "check-config [-c FILE] [--dump]  validate the configuration" },
	{ "plugin", plugin_cmd_main, "plugin list | plugin test NAME|PATH [--config FILE] [--binary]" },
	{ "demo", demo_main, "demo produce --stream NAME ...   write demo clickstream to a stream" },
	{ "athena-ddl", athena_main, "athena-ddl [-c FILE] [--table T] ...  print the Athena tables (projection)" },
	{ "version", version_main, "version                          print the version" },
	{ "help", help_main, "help                             this list" },
};

static int help_main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("usage: kinlake COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
		printf("  %s\n", subcommands[i].usage);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		help_main(argc, argv);
		return 64;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)
		return version_main(argc - 1, argv + 1);
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
		return help_main(argc - 1, argv + 1);
	for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
		if (strcmp(argv[1], subcommands[i].name) == 0)
			return subcommands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "kinlake: unknown command '%s' (try 'kinlake help')\n", argv[1]);
	return 64;
}
