// Placement decisions: pure functions from a view of the cluster to a plan.
// No I/O; the leader applies the plan with compare-and-swap (agent/leader.cc).
#pragma once

#include <string>
#include <vector>

#include "cluster/state.h"

namespace hc::scheduler {

struct PlacementChange {
  enum Kind { kCreate, kUpdate, kDelete } kind = kCreate;
  cluster::Placement placement;  // kDelete: only .app is meaningful
  std::string reason;            // for the event log / people
};

struct PlanOptions {
  size_t max_changes = 0;  // 0 = no limit
};

// Placements for apps that have none, deletions for placements whose app is
// gone, replica top-ups when an app has fewer replicas than asked and a
// suitable live node exists (e.g. a node joined later), and trims when it has
// more. A replica on a node that is not live counts as held (the node may be
// restarting; replacing it is failover's job, issue 7). Never changes an
// existing primary (failover/migration, issue 7); epoch is 1 for new
// placements and unchanged by replica changes.
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
