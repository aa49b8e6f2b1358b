/* SPDX-License-Identifier: Apache-2.0 */
/*
 * plugin_cmd.h: the `kinlake plugin` subcommand: `plugin test` runs a
 * transform plugin over records read from stdin and prints OK / DROPPED /
 * FAILED per record; `plugin list` shows the plugins on the search path.
 */
#ifndef KL_PLUGIN_CMD_H
#define KL_PLUGIN_CMD_H

/*
 * Runs `kinlake plugin ARGS...`. argv[0] is the word "plugin" (main passes
 * argc - 1, argv + 1); argv is not modified. Usage:
 *
 *   plugin test NAME|PATH [--config FILE] [--binary] [--partition-key K]
 *               [--shard-id ID] [--arrival-ms MS] [--plugin-path DIRS]
 *   plugin list [--plugin-path DIRS]
 *
 * test: each line of stdin is one record (without its newline), or with
 * --binary all of stdin is one record; a KPL aggregate is de-aggregated
 * first. FILE is a libconfig file whose top-level settings are the
 * plugin's. The plugin search path is --plugin-path, else the environment
 * variable KINLAKE_PLUGIN_PATH, else the built-in default.
 *
 * Results go to stdout, diagnostics and a summary to stderr. Returns the
 * exit code: 0 done (whatever the per-record results), 1 the plugin could
 * not be loaded or initialized or input could not be read, 64 bad usage.
 * Not thread-safe (uses stdin/stdout); call from the main thread.
 */
int plugin_cmd_main(int argc, char **argv);

#endif
