// Registration of `hc` subcommands. Each Add* function adds its commands to
// `app`; their callbacks store the process exit code in *exit_code.
#pragma once

#include <CLI/CLI.hpp>

namespace hc::cli {

void AddVolumeCommands(CLI::App& app, int* exit_code);
void AddDemoCommand(CLI::App& app, int* exit_code);
void AddLocalCommands(CLI::App& app, int* exit_code);
void AddClusterCommands(CLI::App& app, int* exit_code);

}  // namespace hc::cli
