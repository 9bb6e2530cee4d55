#include "scheduler/placement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace hc::scheduler {
namespace {

using cluster::AppDef;
using cluster::ClusterView;
using cluster::NodeInfo;
using cluster::Placement;
using cluster::PlacementState;

constexpr uint64_t kGiB = 1ull << 30;
constexpr uint64_t kMiB = 1ull << 20;

void AddNode(ClusterView& v, const std::string& id, const std::string& dc = "dc1",
             uint64_t memory = 16 * kGiB, bool drained = false) {
  NodeInfo n;
  n.id = id;
  n.datacenter = dc;
  n.memory_bytes = memory;
  n.drained = drained;
  v.nodes[id] = n;
}

void AddApp(ClusterView& v, const std::string& name, uint32_t replicas = 1,
            uint64_t memory = 256 * kMiB) {
  AppDef a;
  a.name = name;
  a.template_name = "static";
  a.replicas = replicas;
  a.limits.memory_bytes = memory;
  v.apps[name] = a;
}

void AddPlacement(ClusterView& v, const std::string& app, const std::string& primary,
                  std::vector<std::string> replicas = {}, uint64_t epoch = 1) {
  Placement p;
  p.app = app;
  p.primary = primary;
  p.replicas = std::move(replicas);
  p.epoch = epoch;
  v.placements[app] = p;
}

const PlacementChange* ChangeFor(const std::vector<PlacementChange>& plan, const std::string& app) {
  for (const PlacementChange& c : plan) {
    if (c.placement.app == app) return &c;
  }
  return nullptr;
}

// Applies a plan to the view as the leader would, for multi-round tests.
void Apply(ClusterView& v, const std::vector<PlacementChange>& plan) {
  for (const PlacementChange& c : plan) {
    if (c.kind == PlacementChange::kDelete) {
      v.placements.erase(c.placement.app);
    } else {
      v.placements[c.placement.app] = c.placement;
    }
  }
}

std::string Dump(const std::vector<PlacementChange>& plan) {
  std::string s;
  for (const PlacementChange& c : plan) {
    s += std::to_string(c.kind) + " " + cluster::ToJson(c.placement) + " " + c.reason + "\n";
  }
  return s;
}

TEST(PlanPlacements, EmptyClusterPlacesNothing) {
  ClusterView v;
  EXPECT_TRUE(PlanPlacements(v).empty());
  AddApp(v, "shop");
  EXPECT_TRUE(PlanPlacements(v).empty()) << "no nodes: the app stays unplaced";
}

TEST(PlanPlacements, SingleNodeGetsThePrimaryAndNoReplica) {
  ClusterView v;
  AddNode(v, "n1");
  AddApp(v, "shop", /*replicas=*/1);
  auto plan = PlanPlacements(v);
  ASSERT_EQ(plan.size(), 1u);
  const PlacementChange& c = plan[0];
  EXPECT_EQ(c.kind, PlacementChange::kCreate);
  EXPECT_EQ(c.placement.app, "shop");
  EXPECT_EQ(c.placement.primary, "n1");
  EXPECT_TRUE(c.placement.replicas.empty());
  EXPECT_EQ(c.placement.epoch, 1u);
  EXPECT_EQ(c.placement.state, PlacementState::kRunning);
  EXPECT_NE(c.reason.find("0 of 1 replicas"), std::string::npos) << c.reason;
}

TEST(PlanPlacements, PrimaryGoesToTheLeastLoadedNode) {
  ClusterView v;
  AddNode(v, "n1");
  AddNode(v, "n2");
  AddApp(v, "big", 0, 4 * kGiB);
  AddPlacement(v, "big", "n1");
  AddApp(v, "shop", 0);
  auto plan = PlanPlacements(v);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].placement.primary, "n2");
}

TEST(PlanPlacements, LoadIsRelativeToNodeMemory) {
  ClusterView v;
  AddNode(v, "n1", "dc1", 64 * kGiB);  // (4 + 0.25) / 64 = 6.6%
  AddNode(v, "n2", "dc1", 8 * kGiB);   // (1 + 0.25) / 8 = 15.6%
  AddApp(v, "a", 0, 4 * kGiB);
  AddPlacement(v, "a", "n1");
  AddApp(v, "b", 0, 1 * kGiB);
  AddPlacement(v, "b", "n2");
  AddApp(v, "shop", 0);
  auto plan = PlanPlacements(v);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].placement.primary, "n1");
}

TEST(PlanPlacements, TiesGoToFewerPrimariesThenLowerId) {
  ClusterView v;
  AddNode(v, "n1");
  AddNode(v, "n2");
  AddNode(v, "n3");
  // Same memory on n1 and n2, but n1 has it in two apps; n3 is fuller.
  AddApp(v, "a1", 0, 256 * kMiB);
  AddApp(v, "a2", 0, 256 * kMiB);
  AddApp(v, "b", 0, 512 * kMiB);
  AddApp(v, "c", 0, 1 * kGiB);
  AddPlacement(v, "a1", "n1");
  AddPlacement(v, "a2", "n1");
  AddPlacement(v, "b", "n2");
  AddPlacement(v, "c", "n3");
  AddApp(v, "shop", 0);
  auto plan = PlanPlacements(v);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].placement.primary, "n2");

  ClusterView equal;
  AddNode(equal, "b");
  AddNode(equal, "a");
  AddApp(equal, "shop", 0);
  EXPECT_EQ(PlanPlacements(equal).at(0).placement.primary, "a");
}

TEST(PlanPlacements, NodeWithoutMemoryIsChosenLast) {
  ClusterView v;
  AddNode(v, "a", "dc1", 0);
  AddNode(v, "b", "dc1", 1 * kGiB);
  AddApp(v, "shop", 0);
  EXPECT_EQ(PlanPlacements(v).at(0).placement.primary, "b");
}

TEST(PlanPlacements, ReplicasPreferOtherDataCentres) {
  ClusterView v;
  AddNode(v, "a1", "dc1");
  AddNode(v, "a2", "dc1");
  AddNode(v, "b1", "dc2");
  AddNode(v, "c1", "dc3");
  AddApp(v, "two", 2);
  auto plan = PlanPlacements(v);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].placement.primary, "a1");
  EXPECT_EQ(plan[0].placement.replicas, (std::vector<std::string>{"b1", "c1"}));

  ClusterView w = v;
  w.apps["two"].replicas = 3;
  plan = PlanPlacements(w);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].placement.replicas, (std::vector<std::string>{"b1", "c1", "a2"}));
}

TEST(PlanPlacements, ReplicasPreferNodesHoldingFewerReplicas) {
  ClusterView v;
  AddNode(v, "n1");
  AddNode(v, "n2");
  AddNode(v, "n3");
  AddApp(v, "old", 1);
  AddPlacement(v, "old", "n3", {"n2"});
  AddApp(v, "shop", 1);
  auto plan = PlanPlacements(v);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].placement.primary, "n1");
  EXPECT_EQ(plan[0].placement.replicas, (std::vector<std::string>{"n3"}));
}

TEST(PlanPlacements, FewerReplicasWhenNotEnoughNodes) {
  ClusterView v;
  AddNode(v, "n1");
  AddNode(v, "n2");
  AddApp(v, "shop", 3);
  auto plan = PlanPlacements(v);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].placement.primary, "n1");
  EXPECT_EQ(plan[0].placement.replicas, (std::vector<std::string>{"n2"}));
  EXPECT_NE(plan[0].reason.find("1 of 3 replicas"), std::string::npos) << plan[0].reason;
  Apply(v, plan);
  EXPECT_TRUE(PlanPlacements(v).empty()) << "no node to add: nothing to do";
}

TEST(PlanPlacements, DeletedAppIsDeletedAndFreesItsLoad) {
  ClusterView v;
  AddNode(v, "n1");
  AddNode(v, "n2");
  AddPlacement(v, "gone", "n1", {"n2"});  // its app definition was removed
  AddApp(v, "big", 0, 1 * kGiB);
  AddPlacement(v, "big", "n2");
  AddApp(v, "shop", 0);
  auto plan = PlanPlacements(v);
  ASSERT_EQ(plan.size(), 2u);
  const PlacementChange* del = ChangeFor(plan, "gone");
  ASSERT_NE(del, nullptr);
  EXPECT_EQ(del->kind, PlacementChange::kDelete);
  const PlacementChange* create = ChangeFor(plan, "shop");
  ASSERT_NE(create, nullptr);
  EXPECT_EQ(create->kind, PlacementChange::kCreate);
  EXPECT_EQ(create->placement.primary, "n1") << "the deleted app's memory does not count";
}

TEST(PlanPlacements, ReplicaTopUpWhenANodeJoins) {
  ClusterView v;
  AddNode(v, "n1");
  AddApp(v, "shop", 1);
  auto plan = PlanPlacements(v);
  Apply(v, plan);
  v.placements["shop"].epoch = 7;  // as if it had failed over before
  EXPECT_TRUE(PlanPlacements(v).empty());

  AddNode(v, "n2");
  plan = PlanPlacements(v);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].kind, PlacementChange::kUpdate);
  EXPECT_EQ(plan[0].placement.primary, "n1");
  EXPECT_EQ(plan[0].placement.replicas, (std::vector<std::string>{"n2"}));
  EXPECT_EQ(plan[0].placement.epoch, 7u) << "replica changes keep the epoch";
  Apply(v, plan);
  EXPECT_TRUE(PlanPlacements(v).empty());
}

TEST(PlanPlacements, TopUpPrefersDataCentresTheAppDoesNotUseYet) {
  ClusterView v;
  AddNode(v, "a1", "dc1");
  AddNode(v, "a2", "dc1");
  AddNode(v, "a3", "dc1");
  AddNode(v, "b1", "dc2");
  AddApp(v, "shop", 2);
  AddPlacement(v, "shop", "a1", {"a2"});
  auto plan = PlanPlacements(v);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].placement.replicas, (std::vector<std::string>{"a2", "b1"}));
}

TEST(PlanPlacements, TrimWhenReplicasAreLowered) {
  ClusterView v;
  AddNode(v, "n1");
  AddNode(v, "n2");
  AddNode(v, "n3");
  AddNode(v, "n4", "dc2");
  AddApp(v, "shop", 1);
  AddPlacement(v, "shop", "n1", {"n2", "n3", "n4"}, 3);
  auto plan = PlanPlacements(v);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].kind, PlacementChange::kUpdate);
  EXPECT_EQ(plan[0].placement.primary, "n1");
  EXPECT_EQ(plan[0].placement.epoch, 3u);
  EXPECT_EQ(plan[0].placement.replicas, (std::vector<std::string>{"n4"}))
      << "the replica in another data centre is kept";
  EXPECT_NE(plan[0].reason.find("removed 'n2', 'n3'"), std::string::npos) << plan[0].reason;

  v.apps["shop"].replicas = 0;
  plan = PlanPlacements(v);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_TRUE(plan[0].placement.replicas.empty());
}

TEST(PlanPlacements, TrimKeepsReplicasOnNodesThatAreGone) {
  ClusterView v;
  AddNode(v, "n1");
  AddNode(v, "n3");
  AddNode(v, "n4");
  AddApp(v, "shop", 1);
  AddPlacement(v, "shop", "n1", {"down", "n3", "n4"});
  auto plan = PlanPlacements(v);
  ASSERT_EQ(plan.size(), 1u) << Dump(plan);
  EXPECT_EQ(plan[0].placement.replicas, (std::vector<std::string>{"down", "n3"}))
      << "a live extra goes; the copy on a node that is gone stays listed";
}

TEST(PlanPlacements, NoTrimWhileTheAppIsMoving) {
  ClusterView v;
  AddNode(v, "n1");
  AddNode(v, "n2");
  AddNode(v, "n3");
  AddApp(v, "shop", 1);
  AddPlacement(v, "shop", "n1", {"n2", "n3"});
  v.moves["shop"] = cluster::MoveRecord{.app = "shop", .target = "n3", .state = "copying"};
  EXPECT_TRUE(PlanPlacements(v).empty()) << Dump(PlanPlacements(v));
  v.moves["shop"].state = "done";
  EXPECT_EQ(PlanPlacements(v).size(), 1u);
}

TEST(PlanPlacements, ReplicaOnANodeGoneLongerThanTheGraceIsReplacedThenForgotten) {
  ClusterView v;
  AddNode(v, "n1");
  AddNode(v, "n2");
  AddApp(v, "shop", 1);
  AddPlacement(v, "shop", "n1", {"gone"});
  std::map<std::string, int64_t> departed = {{"gone", 1'000}};
  PlanOptions o;
  o.departed_ms = &departed;
  o.now_ms = 1'000 + o.replica_grace_ms - 1;
  EXPECT_TRUE(PlanPlacements(v, o).empty()) << "inside the grace it counts as held";
  o.now_ms = 1'000 + o.replica_grace_ms;
  auto plan = PlanPlacements(v, o);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].placement.replicas, (std::vector<std::string>{"gone", "n2"}));
  Apply(v, plan);
  EXPECT_TRUE(PlanPlacements(v, o).empty()) << Dump(PlanPlacements(v, o));
  o.now_ms = 1'000 + o.forget_departed_ms;
  plan = PlanPlacements(v, o);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].placement.replicas, (std::vector<std::string>{"n2"}));
  EXPECT_NE(plan[0].reason.find("forgot"), std::string::npos) << plan[0].reason;
}

TEST(PlanPlacements, FailoverPromotesTheReplicaWithTheNewestSnapshot) {
  ClusterView v;
  AddNode(v, "n2");
  AddNode(v, "n3");
  AddNode(v, "n4");
  AddApp(v, "shop", 2);
  AddPlacement(v, "shop", "n1", {"n2", "n3"}, 7);
  EXPECT_EQ(FailoverCandidates(v)["shop"], (std::vector<std::string>{"n2", "n3"}));
  std::map<std::string, std::map<std::string, int64_t>> newest = {
      {"shop", {{"n2", 100}, {"n3", 200}}}};
  PlanOptions o;
  o.newest_snapshot_ns = &newest;
  auto plan = PlanPlacements(v, o);
  ASSERT_EQ(plan.size(), 1u) << Dump(plan);
  const PlacementChange& c = plan[0];
  EXPECT_TRUE(c.failover);
  EXPECT_EQ(c.failed_primary, "n1");
  EXPECT_EQ(c.placement.primary, "n3");
  EXPECT_EQ(c.placement.epoch, 8u);
  EXPECT_EQ(c.placement.replicas, (std::vector<std::string>{"n1", "n2", "n4"}))
      << "the old primary stays listed first (it does not count), and a new replica is made";
  Apply(v, plan);
  EXPECT_TRUE(PlanPlacements(v, o).empty()) << Dump(PlanPlacements(v, o));
  EXPECT_TRUE(FailoverCandidates(v).empty());
}

TEST(PlanPlacements, FailoverStaysInTheDataCentreWhileItCan) {
  ClusterView v;
  AddNode(v, "n2", "dc2");
  AddNode(v, "n3", "dc1");
  AddApp(v, "shop", 2);
  AddPlacement(v, "shop", "n1", {"n2", "n3"});
  std::map<std::string, std::map<std::string, int64_t>> newest = {
      {"shop", {{"n2", 300}, {"n3", 200}}}};
  std::map<std::string, std::string> dcs = {{"n1", "dc1"}};
  PlanOptions o;
  o.newest_snapshot_ns = &newest;
  o.departed_dc = &dcs;
  auto plan = PlanPlacements(v, o);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].placement.primary, "n3") << "same data centre first";
  v.nodes.erase("n3");
  plan = PlanPlacements(v, o);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].placement.primary, "n2") << "another one only if none is left";
}

TEST(PlanPlacements, FailoverWithUnknownSnapshotsPrefersAnUndrainedLessLoadedNode) {
  ClusterView v;
  AddNode(v, "n2", "dc1", 16 * kGiB, /*drained=*/true);
  AddNode(v, "n3");
  AddApp(v, "shop", 2);
  AddPlacement(v, "shop", "n1", {"n2", "n3"});
  auto plan = PlanPlacements(v);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].placement.primary, "n3");
}

TEST(PlanPlacements, ReplicaOnADeadNodeCountsAsHeld) {
  ClusterView v;
  AddNode(v, "n1");
  AddNode(v, "n2");
  AddApp(v, "shop", 1);
  AddPlacement(v, "shop", "n1", {"restarting"});
  EXPECT_TRUE(PlanPlacements(v).empty()) << Dump(PlanPlacements(v));
}

TEST(PlanPlacements, DrainedNodeIsNeverChosenAsPrimary) {
  ClusterView v;
  AddNode(v, "n1", "dc1", 64 * kGiB, /*drained=*/true);  // empty and big, but drained
  AddNode(v, "n2", "dc1", 1 * kGiB);
  AddApp(v, "big", 0, 900 * kMiB);
  AddPlacement(v, "big", "n2");
  for (int i = 0; i < 5; ++i) AddApp(v, "app" + std::to_string(i), 1);
  auto plan = PlanPlacements(v);
  ASSERT_EQ(plan.size(), 5u);
  for (const PlacementChange& c : plan) {
    EXPECT_EQ(c.placement.primary, "n2");
    EXPECT_EQ(c.placement.replicas, (std::vector<std::string>{"n1"}))
        << "a drained node may still hold replicas";
  }

  ClusterView all_drained;
  AddNode(all_drained, "n1", "dc1", 16 * kGiB, true);
  AddApp(all_drained, "shop");
  EXPECT_TRUE(PlanPlacements(all_drained).empty());
}

TEST(PlanPlacements, ExistingPrimaryIsNeverChanged) {
  ClusterView v;
  AddNode(v, "n1", "dc1", 1 * kGiB, /*drained=*/true);
  AddNode(v, "n2");
  AddApp(v, "on-drained", 0, 900 * kMiB);
  AddPlacement(v, "on-drained", "n1");
  AddApp(v, "on-dead", 0);
  AddPlacement(v, "on-dead", "gone");
  AddApp(v, "needs-replica", 1);
  AddPlacement(v, "needs-replica", "gone", {}, 4);
  auto plan = PlanPlacements(v);
  ASSERT_EQ(plan.size(), 1u) << Dump(plan);
  EXPECT_EQ(plan[0].placement.app, "needs-replica");
  EXPECT_EQ(plan[0].placement.primary, "gone");
  EXPECT_EQ(plan[0].placement.epoch, 4u);
  EXPECT_EQ(plan[0].placement.replicas.size(), 1u);
}

TEST(PlanPlacements, BrokenReplicaListsAreCleanedUp) {
  ClusterView v;
  AddNode(v, "n1");
  AddNode(v, "n2");
  AddNode(v, "n3");
  AddApp(v, "shop", 1);
  AddPlacement(v, "shop", "n1", {"n1", "n2", "n2"});
  auto plan = PlanPlacements(v);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].placement.replicas, (std::vector<std::string>{"n2"}));
}

TEST(PlanPlacements, RespectsMaxChanges) {
  ClusterView v;
  AddNode(v, "n1");
  AddPlacement(v, "gone", "n1");
  for (int i = 0; i < 5; ++i) AddApp(v, "app" + std::to_string(i), 0);
  auto plan = PlanPlacements(v, {.max_changes = 3});
  ASSERT_EQ(plan.size(), 3u);
  EXPECT_EQ(plan[0].kind, PlacementChange::kDelete);
  EXPECT_EQ(plan[1].placement.app, "app0");
  EXPECT_EQ(plan[2].placement.app, "app1");
  EXPECT_EQ(PlanPlacements(v).size(), 6u);

  // Rounds of limited plans converge to the unlimited one.
  int rounds = 0;
  while (true) {
    auto step = PlanPlacements(v, {.max_changes = 2});
    if (step.empty()) break;
    Apply(v, step);
    ++rounds;
  }
  EXPECT_EQ(rounds, 3);
  EXPECT_EQ(v.placements.size(), 5u);
}

TEST(PlanPlacements, ThousandAppsSpreadEvenlyOverTenNodes) {
  ClusterView v;
  for (int i = 0; i < 10; ++i) AddNode(v, "n" + std::to_string(i));
  for (int i = 0; i < 1000; ++i) AddApp(v, "app" + std::to_string(i), 1);
  auto plan = PlanPlacements(v);
  ASSERT_EQ(plan.size(), 1000u);
  std::map<std::string, int> primaries, replicas;
  for (const PlacementChange& c : plan) {
    ASSERT_EQ(c.kind, PlacementChange::kCreate);
    ++primaries[c.placement.primary];
    ASSERT_EQ(c.placement.replicas.size(), 1u);
    EXPECT_NE(c.placement.replicas[0], c.placement.primary);
    ++replicas[c.placement.replicas[0]];
  }
  ASSERT_EQ(primaries.size(), 10u);
  for (const auto& [node, n] : primaries) EXPECT_EQ(n, 100) << node;
  ASSERT_EQ(replicas.size(), 10u);
  for (const auto& [node, n] : replicas) EXPECT_EQ(n, 100) << node;
}

TEST(PlanPlacements, UnevenAppSizesBalanceByMemory) {
  ClusterView v;
  for (int i = 0; i < 4; ++i) AddNode(v, "n" + std::to_string(i));
  for (int i = 0; i < 400; ++i) {
    AddApp(v, "app" + std::to_string(i), 0, (i % 4 == 0 ? 1024 : 64) * kMiB);
  }
  std::map<std::string, uint64_t> memory;
  for (const PlacementChange& c : PlanPlacements(v)) {
    memory[c.placement.primary] += v.apps[c.placement.app].limits.memory_bytes;
  }
  ASSERT_EQ(memory.size(), 4u);
  uint64_t lo = UINT64_MAX, hi = 0;
  for (const auto& [node, m] : memory) {
    lo = std::min(lo, m);
    hi = std::max(hi, m);
  }
  EXPECT_LE(hi - lo, 1024 * kMiB) << "within one app of each other";
}

TEST(PlanPlacements, IsDeterministic) {
  auto build = [](bool reverse) {
    ClusterView v;
    std::vector<int> order;
    for (int i = 0; i < 50; ++i) order.push_back(i);
    if (reverse) std::reverse(order.begin(), order.end());
    for (int i : order) {
      if (i < 7) AddNode(v, "n" + std::to_string(i), "dc" + std::to_string(i % 3));
      AddApp(v, "app" + std::to_string(i), i % 4, (64 + i) * kMiB);
    }
    AddPlacement(v, "app3", "n2", {"n5"});
    AddPlacement(v, "gone", "n1");
    return v;
  };
  std::string first = Dump(PlanPlacements(build(false)));
  EXPECT_FALSE(first.empty());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Dump(PlanPlacements(build(false))), first);
    EXPECT_EQ(Dump(PlanPlacements(build(true))), first) << "insertion order does not matter";
  }
}

TEST(PlanPlacements, TenThousandAppsOnHundredNodesIsFast) {
  ClusterView v;
  for (int i = 0; i < 100; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "node-%03d", i);
    AddNode(v, id, "dc" + std::to_string(i % 3), (32 + i % 5 * 16) * kGiB);
  }
  for (int i = 0; i < 10000; ++i) {
    AddApp(v, "app" + std::to_string(i), i % 3, (64 + (i % 16) * 64) * kMiB);
  }
  // A tenth already placed, as after a restart of the leader.
  for (int i = 0; i < 10000; i += 10) AddPlacement(v, "app" + std::to_string(i), "node-000");
  auto start = std::chrono::steady_clock::now();
  auto plan = PlanPlacements(v);
  auto elapsed = std::chrono::steady_clock::now() - start;
  double ms = std::chrono::duration<double, std::milli>(elapsed).count();
  std::printf("PlanPlacements: 10000 apps x 100 nodes in %.1f ms\n", ms);
  EXPECT_EQ(plan.size(), 9000u + 666u);  // creates + top-ups of placed apps wanting replicas
  // Generous for sanitizer builds on a busy machine; a release build takes a few ms.
  EXPECT_LT(ms, 2000);
}

}  // namespace
}  // namespace hc::scheduler
