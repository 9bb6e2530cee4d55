// The node agent: makes this node hold what the cluster state assigns it.
//
// It watches assign/<node>/ (resuming from the last revision after a
// reconnect), and on every change and every reconcile_interval:
//   - primary here: the volume exists (seeded from the template when new),
//     the app runs under the runtime with its port kept across restarts;
//   - replica here: the volume exists, the app does not run;
//   - not assigned: the app is stopped and forgotten by the runtime; its
//     volume is destroyed only when the app itself was deleted.
// It reports what it sees (status/<node>/<app>, under the node's lease) when
// something changes and every status_interval for usage.
//
// It only ever starts an app named by an assignment it read from etcd, and
// an assignment is written in the same transaction as the placement, so it
// never runs an app whose current placement does not name it.
// Until the first read of its assignments succeeds, it touches nothing.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster_store.h"
#include "runtime/runtime.h"
#include "storage/store.h"

namespace hc::agent {

struct AgentOptions {
  std::string node_id;
  int status_interval_seconds = 10;
  int reconcile_interval_ms = 5000;
  int ready_probe_ms = 300;  // per probe of a not-yet-ready app
  // A ready app is probed again this often (a probe is a request the app
  // serves: a fork for some servers, so with a thousand apps per node it
  // adds up). A crash is seen at once through the supervisor regardless.
  int ready_recheck_seconds = 30;
};

struct AgentStats {
  int64_t reconciles = 0;
  int64_t starts = 0;
  int64_t stops = 0;
  int64_t status_writes = 0;
  bool synced = false;
};

class Agent {
 public:
  Agent(AgentOptions opts, cluster::ClusterStore* cs, storage::Store* volumes, runtime::Runtime* rt,
        std::function<int64_t()> lease);
  ~Agent();  // Stop()
  Status Start();
  void Stop();
  // Wake the loop now; `full_report` re-sends every status (new lease).
  void Kick(bool full_report = false);
  // Runs `work` with `app` stopped on this node (if it runs here), and lets
  // the loop start it again afterwards; meanwhile the loop leaves it
  // stopped. For maintenance on the live volume (a zfs repair). Errors:
  // kConflict (already held), the stop's error (work not run), work's.
  Status WithAppStopped(const std::string& app, const std::function<Status()>& work);
  // For a move away from this node: stops `app` (the primary here) and keeps
  // it stopped until ReleaseHandoff, until this node is no longer its
  // primary (the move switched), or for at most `max_ms` (a move whose
  // leader died must not leave the app down). Errors: kConflict (not the
  // primary here, or held for maintenance), the stop's.
  Status HoldForHandoff(const std::string& app, int64_t max_ms);
  void ReleaseHandoff(const std::string& app);
  // For a move to this node, before the hold: creates `app`'s container
  // here from its replica volume without running it (Runtime::Prepare), and
  // keeps it for up to `max_ms`, so that the start after the switch only
  // lets it go. Afterwards (no switch) the loop removes it. Errors:
  // kConflict (not a replica here), the runtime's (the process backend
  // cannot prepare: the move then starts the app in full).
  Status PrepareMove(const std::string& app, int64_t max_ms);
  // On the loop's next pass: re-read every assignment from etcd, reconcile
  // (stopping what is no longer ours), then call `done` (on the loop's
  // thread). Used before self-fencing is lifted after the lease was lost.
  void ResyncThen(std::function<void()> done);
  AgentStats stats() const;

 private:
  void Loop();
  void ReconcileOnce(bool full_report);
  int64_t Resync();  // re-reads every assignment; returns the revision
  void OnEvents(const std::vector<cluster::WatchEvent>& evs);
  cluster::AppObserved ObservePrimary(const cluster::Assignment& a, const runtime::AppStatus* st);
  Status EnsureVolume(const cluster::AppDef& app, std::string* path);
  Status StartApp(const cluster::AppDef& app, const runtime::AppStatus* st,
                  const std::string& path);
  // The spec StartApp runs the app with (the port it had here, else a new one).
  Result<runtime::AppSpec> SpecFor(const cluster::AppDef& app, const runtime::AppStatus* st,
                                   const std::string& path);

  AgentOptions opts_;
  cluster::ClusterStore* cs_;
  storage::Store* volumes_;
  runtime::Runtime* rt_;
  std::function<int64_t()> lease_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, cluster::Assignment> assigned_;  // by app
  std::set<std::string> released_;  // assignments removed since the last reconcile
  std::set<std::string> held_;      // kept stopped by WithAppStopped
  std::map<std::string, std::chrono::steady_clock::time_point> handoff_;   // app -> until
  std::map<std::string, std::chrono::steady_clock::time_point> prepared_;  // app -> until
  std::mutex reconcile_mu_;  // held through ReconcileOnce
  bool synced_ = false;
  bool kicked_ = false;
  bool full_report_pending_ = true;
  bool resync_pending_ = false;
  bool starting_ = false;  // a primary here runs but is not ready yet: look again soon
  std::vector<std::function<void()>> after_resync_;
  AgentStats stats_;
  std::atomic<bool> stop_{false};

  // Loop-thread only (WithAppStopped: under reconcile_mu_, as ReconcileOnce).
  std::map<std::string, cluster::AppObserved> reported_;
  std::set<std::string> ready_;
  std::map<std::string, int64_t> probed_at_;         // app -> last readiness probe (unix s)
  std::map<std::string, std::string> volume_paths_;  // volumes known to exist here
  std::set<std::string> replica_volumes_;            // replicas here, made read-only
  int64_t last_usage_report_ = 0;
  int resync_failures_ = 0;  // Resync runs on the loop or the watch thread, never both at once

  std::unique_ptr<cluster::Watch> watch_;
  std::thread thread_;
};

}  // namespace hc::agent
