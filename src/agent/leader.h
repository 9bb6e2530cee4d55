// The scheduler's home: one node at a time is elected (leader key bound to
// the node's lease) and turns the desired state into placements. It keeps a
// view of nodes/, apps/ and placement/ fed by watches, asks the pure planner
// (scheduler/placement.h) what to change, and writes the plan with
// compare-and-swap guarded by its leadership, so a deposed leader's late
// writes fail. When its lease or key goes, it steps down and campaigns again.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "cluster/cluster_store.h"

namespace hc::agent {

struct LeaderStats {
  bool leading = false;
  int64_t terms = 0;        // times elected
  int64_t plans = 0;        // planning rounds
  int64_t writes = 0;       // placement writes applied
  int64_t conflicts = 0;    // CAS failures (re-read and re-planned)
  int64_t placed_apps = 0;  // placements in the view
};

class Leader {
 public:
  Leader(cluster::ClusterStore* cs, std::string node_id, std::function<int64_t()> lease);
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

  cluster::ClusterStore* cs_;
  std::string node_id_;
  std::function<int64_t()> lease_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> step_down_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  LeaderStats stats_;
  std::thread thread_;
};

}  // namespace hc::agent
