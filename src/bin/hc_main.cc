// hc: the HybridCluster command-line client.
#include <signal.h>

#include <CLI/CLI.hpp>

#include "cli/commands.h"

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  CLI::App app{
      "hc - HybridCluster command-line client.\n"
      "Apps on a HybridCluster (hc app, hc cluster), and on this machine: volumes with "
      "snapshots (hc volume) and apps in containers (hc local). hc demo starts a local cluster."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "hc 0.1.0");
  int exit_code = 0;
  hc::cli::AddVolumeCommands(app, &exit_code);
  hc::cli::AddClusterCommands(app, &exit_code);
  hc::cli::AddLocalCommands(app, &exit_code);
  hc::cli::AddDemoCommand(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}
