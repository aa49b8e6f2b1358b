/* SPDX-License-Identifier: Apache-2.0 */
/*
 * main.c: the kinlake command line. Subcommands are a table.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
	if (argc > 1 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0)) {
		printf("kinlake %s\n", PACKAGE_VERSION);
		return 0;
	}
	fprintf(stderr, "usage: kinlake --version\n");
	return 64;
}
