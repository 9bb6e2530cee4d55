// Shared helpers of the `hc` subcommands: store selection and error exits.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "storage/store.h"

namespace hc::cli {

// --backend/--root/--dataset, with HC_STORE_BACKEND, HC_STORE_ROOT and
// HC_ZFS_DATASET as defaults.
struct StoreFlags {
  std::string backend;
  std::string root;
  std::string dataset;
  bool no_sync = false;
  void AddTo(CLI::App& app);
  Result<std::unique_ptr<storage::Store>> Open() const;
};

// The default root of the dir store: /var/lib/hybridcluster/store for root,
// else $XDG_DATA_HOME or ~/.local/share/hybridcluster/store.
std::string DefaultStoreRoot();

// Prints "hc: <message>" to stderr and returns the exit code for `s`.
int Fail(const Status& s);

// Prints progress of long transfers on stderr when it is a terminal.
class Progress {
 public:
  Progress(std::string what, bool enabled);
  void Add(uint64_t bytes);
  void Done();

 private:
  std::string what_;
  bool enabled_;
  uint64_t bytes_ = 0;
  int64_t start_ms_ = 0;
  int64_t last_ms_ = 0;
};

std::string FormatBytes(uint64_t n);
std::string FormatTime(int64_t unix_ns);

}  // namespace hc::cli
