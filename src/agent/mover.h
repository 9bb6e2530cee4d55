// Live migration of one app, run by the leader step by step (docs/design.md,
// "Live migration"):
//   copying      the target is made a replica (if it is not one) and the
//                source pushes increments to it while the app runs, until
//                one is small;
//   handing-off  every proxy holds the app's new requests (holds/<app>); the
//                source stops the app and pushes the last increment;
//   switching    the placement names the target primary at epoch + 1 (the
//                source becomes a replica, so replication reverses
//                incrementally);
//   starting     the target starts the app; once it reports ready the hold
//                is released and the queued requests go there.
// Anything failing before the switch resumes the app on the source and the
// move reports why. Progress is written to moves/<app> at every step.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "cluster/cluster_store.h"

namespace hc::agent {

struct MoveEnv {
  cluster::ClusterStore* cs = nullptr;
  cluster::Compare guard;  // the leader's: a deposed leader's writes fail
  // POSTs a JSON body to a node's API; the body of a 200, else an error.
  std::function<Result<std::string>(const cluster::NodeInfo& node, const std::string& path,
                                    const std::string& body, std::chrono::milliseconds timeout)>
      call;
  std::function<bool()> cancelled;  // leadership lost: stop between steps
  int hold_seconds = 30;            // the proxies' hold (released at the end)
  // hold -> stop: every proxy learns of the hold (an etcd watch: a few ms
  // here) before the source stops; what they sent before is waited for. A
  // bodiless request that still arrives late is sent again by its proxy
  // (it waits, it does not fail); one with a body would get a 502.
  int drain_ms = 30;
  int handoff_max_ms = 120000;                // the source restarts the app after this
  int ready_timeout_ms = 60000;               // target start to ready
  uint64_t precopy_small_bytes = 8ull << 20;  // an increment this small ends pre-copy
  int max_precopy_rounds = 5;
};

// Runs a move from its record (state "pending", or a later state left by a
// leader that died: then it is finished or undone). Returns the final record
// (also stored, and recorded as a "move" event).
cluster::MoveRecord RunMove(const MoveEnv& env, cluster::MoveRecord m);

}  // namespace hc::agent
