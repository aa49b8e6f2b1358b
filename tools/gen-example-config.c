/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gen-example-config.c: writes packaging/kinlake.conf.example (default)
 * or, with --man, packaging/kinlake.conf.5 to stdout, from the option
 * tables in src/cli/cfg.c. `make update-config-docs` runs it; test_cfg
 * fails when the committed files differ from its output.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "cfg.h"

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--man") == 0)
		return cfg_write_man(stdout) == 0 ? 0 : 1;
	if (argc == 1)
		return cfg_write_example(stdout) == 0 ? 0 : 1;
	fprintf(stderr, "usage: gen-example-config [--man]\n");
	return 64;
}
