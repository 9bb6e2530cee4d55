// Placement decisions: pure functions from a view of the cluster to a plan.
// No I/O; the leader applies the plan with compare-and-swap (agent/leader.cc).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cluster/state.h"

namespace hc::scheduler {

struct PlacementChange {
  enum Kind { kCreate, kUpdate, kDelete } kind = kCreate;
  cluster::Placement placement;  // kDelete: only .app is meaningful
  std::string reason;            // for the event log / people
  bool failover = false;         // a new primary because the old one's node is gone
  std::string failed_primary;    // failover: the node that was primary
};

// Apps whose primary is on a node that is gone, and the live replicas that
// could take over: what the leader must learn (their newest snapshots)
// before planning a failover.
std::map<std::string, std::vector<std::string>> FailoverCandidates(
    const cluster::ClusterView& view);

struct PlanOptions {
  size_t max_changes = 0;  // 0 = no limit
  // Failover input, from the leader. Newest complete snapshot (creation,
  // unix ns) each live replica holds, by app then node; a missing entry is
  // unknown and ranks after every known one.
  const std::map<std::string, std::map<std::string, int64_t>>* newest_snapshot_ns = nullptr;
  // Nodes that are gone: when they left (ms; the leader saw it) and their
  // data centre. A node absent from both left "now".
  const std::map<std::string, int64_t>* departed_ms = nullptr;
  const std::map<std::string, std::string>* departed_dc = nullptr;
  int64_t now_ms = 0;
  // A replica on a node that left less than this ago still counts toward the
  // app's replica count (the node may be restarting); after it, a new
  // replica is made elsewhere. The old replica stays listed (so its data is
  // never dropped, and a diverged copy is kept as a branch when it returns)
  // until forget_departed_ms.
  int64_t replica_grace_ms = 60'000;
  int64_t forget_departed_ms = 24LL * 3600 * 1000;
};

// Placements for apps that have none, deletions for placements whose app is
// gone, failovers, replica top-ups when an app has fewer replicas than asked
// and a suitable live node exists, and trims when it has more live ones.
//
// Failover: an app whose primary's node is gone gets a new primary among its
// live replicas: in the old primary's data centre first (another one only if
// none is left there), then the newest snapshot, then not drained, then the
// least loaded. The epoch grows by one; the old primary becomes the first
// replica (it does not count toward the replica count, so a new one is added
// at once), so that when it comes back it receives from the new primary and
// anything it wrote that was never replicated is kept as a branch. An app
// with no live replica keeps its placement (nothing to promote).
//
// Replica counting: live replicas, plus those on nodes gone for less than
// replica_grace_ms. Replicas on nodes that are gone are never trimmed before
// forget_departed_ms. Live extras are trimmed keeping data centre spread,
// except while the app is moving (view.moves: the target is an extra replica
// until the switch).
// Moves (a change of primary on request) are the leader's, not the planner's;
// epoch is 1 for new placements and unchanged by replica changes.
//
// Primary: the live, non-drained node with the lowest load, where load =
// (memory of the primaries placed there + this app) / node memory, ties
// broken by fewer primaries, then by node id (deterministic).
// Replicas: other live nodes, preferring data centres not yet used by this
// app (the primary's first), then the fewest replicas held, then id.
// An app that cannot get a primary (no nodes) stays unplaced; fewer replicas
// than asked are placed when there are not enough nodes.
std::vector<PlacementChange> PlanPlacements(const cluster::ClusterView& view,
                                            const PlanOptions& opts = {});

}  // namespace hc::scheduler
