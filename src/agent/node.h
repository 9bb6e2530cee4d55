// One node's daemon (hcd): ties etcd, the lease, the agent, the leader and
// the REST API together. Run() blocks until Shutdown() (SIGTERM/SIGINT).
//
// Shutdown leaves the apps running (their supervisors outlive hcd), revokes
// the lease (the node leaves the member list at once) and resigns leadership.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "agent/config.h"
#include "common/status.h"

namespace hc::agent {

// Reads <data_dir>/node-id, or creates it (from cfg.node_id if given, else
// "n" + 10 random hex digits). A configured id that differs from the stored
// one is an error: a node's id must not change under its data.
Result<std::string> LoadOrCreateNodeId(const Config& cfg);

class Node {
 public:
  explicit Node(Config cfg);
  ~Node();
  // Starts everything and blocks until Shutdown(); errors at start-up are
  // returned (bad data dir, another hcd on it, API port taken, ...).
  Status Run();
  void Shutdown();  // async-signal-safe enough: sets a flag and writes a pipe

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hc::agent
