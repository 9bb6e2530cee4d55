// The scheduler's home: one node at a time is elected (leader key bound to
// the node's lease) and turns the desired state into placements. It keeps a
// view of nodes/, apps/ and placement/ fed by watches, asks the pure planner
// (scheduler/placement.h) what to change, and writes the plan with
// compare-and-swap guarded by its leadership, so a deposed leader's late
// writes fail. When its lease or key goes, it steps down and campaigns again.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster_store.h"

namespace hc::agent {

struct LeaderOptions {
  std::string api_token;              // for the calls to other nodes' APIs ("" = none)
  int max_moves = 3;                  // live migrations at once
  int max_drain_moves = 2;            // of which started by drains
  int64_t replica_grace_ms = 60'000;  // scheduler::PlanOptions
};

struct LeaderStats {
  bool leading = false;
  int64_t terms = 0;        // times elected
  int64_t plans = 0;        // planning rounds
  int64_t writes = 0;       // placement writes applied
  int64_t conflicts = 0;    // CAS failures (re-read and re-planned)
  int64_t placed_apps = 0;  // placements in the view
  int64_t failovers = 0;    // apps given a new primary because theirs was gone
  int64_t moves = 0;        // moves run to their end (done or failed)
};

class Leader {
 public:
  Leader(cluster::ClusterStore* cs, std::string node_id, std::function<int64_t()> lease,
         LeaderOptions opts = {});
  ~Leader();  // Stop()
  void Start();
  // Stops campaigning/leading and resigns (the key goes at once).
  void Stop();
  // The lease changed (the old one was lost): step down and campaign again.
  void LeaseChanged();
  LeaderStats stats() const;

 private:
  void Run();
  void Lead(cluster::Election* election);
  // Newest snapshot (ns) of each candidate app on each of its live
  // replicas, asked from those nodes (a node that does not answer is
  // simply unknown).
  std::map<std::string, std::map<std::string, int64_t>> AskNewest(
      const std::map<std::string, std::vector<std::string>>& candidates,
      const std::map<std::string, cluster::NodeInfo>& nodes);
  Result<std::string> CallNode(const cluster::NodeInfo& n, const std::string& path,
                               const std::string& body, std::chrono::milliseconds timeout);

  cluster::ClusterStore* cs_;
  std::string node_id_;
  std::function<int64_t()> lease_;
  LeaderOptions opts_;
  // Moves run on their own threads and may outlive the term that started
  // them (a step-down does not wait for a long copy); joined by Stop().
  std::mutex movers_mu_;
  std::vector<std::thread> movers_;                // GUARDED_BY(movers_mu_)
  std::set<std::string> moving_;                   // apps with a mover thread
  std::map<std::string, int64_t> finished_moves_;  // app -> requested_ms run to the end
  std::atomic<bool> stop_{false};
  std::atomic<bool> step_down_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  LeaderStats stats_;
  std::thread thread_;
};

}  // namespace hc::agent
