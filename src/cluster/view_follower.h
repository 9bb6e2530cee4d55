// Follows the cluster state for a component that derives something from it
// (the DNS zones, the proxy's routes): reads the view once, then keeps it
// current with resuming watches (re-reading after a compaction), and calls
// `rebuild` on its own thread after each burst of changes. Until the first
// read succeeds it retries every 500 ms and never calls `rebuild`.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster_store.h"

namespace hc::cluster {

class ViewFollower {
 public:
  struct Options {
    std::string name;                   // in log lines: "dns", "proxy"
    std::vector<std::string> prefixes;  // of nodes/, apps/, placement/ to watch
    // More prefixes whose keys are kept raw (extra[prefix][key without the
    // prefix] = value), read at the view's revision and watched too.
    std::vector<std::string> extra_prefixes;
    std::function<void()> rebuild;  // on the follower's thread
    // Waited before each rebuild, so a burst of events lands first.
    std::function<std::chrono::milliseconds()> delay;
  };

  ViewFollower(ClusterStore* cs, Options opts);
  ~ViewFollower();  // Stop()
  void Start();
  void Stop();  // idempotent; joins

  using Extra = std::map<std::string, std::map<std::string, std::string>>;

  // Runs f(view, extra) under the follower's lock (keep it short); extra has
  // an entry for every extra prefix.
  template <typename F>
  auto Read(F f) const {
    std::lock_guard<std::mutex> l(mu_);
    return f(view_, extra_);
  }

 private:
  bool Load();
  void Run();

  ClusterStore* cs_;
  Options opts_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool dirty_ = false;
  ClusterView view_;
  Extra extra_;
  std::thread thread_;
};

}  // namespace hc::cluster
