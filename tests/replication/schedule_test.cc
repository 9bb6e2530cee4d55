#include "replication/schedule.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <map>
#include <random>
#include <set>

namespace hc::replication {
namespace {

std::vector<Task> Of(const std::vector<Task>& tasks, Task::Kind kind) {
  std::vector<Task> out;
  for (const Task& t : tasks) {
    if (t.kind == kind) out.push_back(t);
  }
  return out;
}

const ReplicaLag& Row(const std::vector<ReplicaLag>& rows, const std::string& app,
                      const std::string& replica) {
  for (const ReplicaLag& r : rows) {
    if (r.app == app && r.replica == replica) return r;
  }
  ADD_FAILURE() << "no row for " << app << "/" << replica;
  static ReplicaLag none;
  return none;
}

SnapshotMade Made(const std::string& id, uint64_t delta = 10, uint64_t logical = 1000) {
  return {.id = id, .delta_bytes = delta, .logical_bytes = logical};
}

// Drives a Scheduler in simulated time: runs the tasks it hands out with
// durations from `duration` (negative: never finishes), takes a snapshot on
// every check for which `changed` says so, and checks the invariants on the
// way: one task per (app, replica), one check per app, the limits, and that
// every transfer starts from what the replica really holds.
struct Sim {
  explicit Sim(ScheduleLimits l) : limits(l), s(l) {}

  ScheduleLimits limits;
  Scheduler s;
  int64_t now = 0;
  std::mt19937 rng{42};
  std::function<int64_t(const Task&)> duration = [](const Task&) { return 100; };
  std::function<bool(const std::string&)> changed = [](const std::string&) { return true; };
  std::function<Status(const Task&)> result = [](const Task&) { return Status::Ok(); };
  std::multimap<int64_t, Task> running;
  std::set<std::pair<std::string, std::string>> busy;  // (app, replica|"")
  std::map<std::string, std::string> primary_newest;
  std::map<std::pair<std::string, std::string>, std::string> replica_has;
  std::map<std::string, int> per_node;
  std::map<std::string, int> snapshots_made;
  int full_running = 0;
  int transfers_done = 0;
  std::chrono::nanoseconds next_time{0};
  int next_calls = 0;

  // seeded: the primary and every replica hold snapshot "<app>@0" already;
  // otherwise the replicas are new (initial sync after the first snapshot).
  void AddApp(const std::string& app, int64_t interval, std::vector<std::string> replicas,
              bool seeded = true) {
    ASSERT_TRUE(s.SetApp(app, interval, replicas).ok());
    if (seeded) {
      primary_newest[app] = app + "@0";
      s.SetSnapshots(app, {{.id = app + "@0", .covers_ms = now}});
    }
    for (const std::string& r : replicas) {
      if (seeded) replica_has[{app, r}] = app + "@0";
      s.ReplicaHas(app, r, seeded ? std::optional(app + "@0") : std::nullopt);
    }
  }

  void Finish(const Task& t) {
    if (t.kind == Task::kCheck) {
      busy.erase({t.app, ""});
      if (changed(t.app)) {
        std::string id = t.app + "@" + std::to_string(++snapshots_made[t.app]);
        primary_newest[t.app] = id;
        s.CheckDone(t.app, now, Made(id), Status::Ok());
      } else {
        s.CheckDone(t.app, now, std::nullopt, Status::Ok());
      }
      return;
    }
    busy.erase({t.app, t.replica});
    --per_node[t.replica];
    if (t.full) --full_running;
    Status st = result(t);
    if (st.ok()) {
      replica_has[{t.app, t.replica}] = t.snapshot_id;
      ++transfers_done;
    }
    s.TransferDone(t.app, t.replica, now, st, 1);
  }

  void Step(int64_t dt) {
    now += dt;
    while (!running.empty() && running.begin()->first <= now) {
      Task t = running.begin()->second;
      running.erase(running.begin());
      Finish(t);
    }
    auto start = std::chrono::steady_clock::now();
    std::vector<Task> tasks = s.Next(now);
    next_time += std::chrono::steady_clock::now() - start;
    ++next_calls;
    for (Task& t : tasks) {
      std::string key = t.kind == Task::kCheck ? "" : t.replica;
      ASSERT_TRUE(busy.insert({t.app, key}).second) << "two tasks for " << t.app << "/" << key;
      if (t.kind == Task::kTransfer) {
        EXPECT_EQ(t.snapshot_id, primary_newest[t.app]);
        auto has = replica_has.find({t.app, t.replica});
        EXPECT_EQ(t.full, has == replica_has.end());
        if (has != replica_has.end()) {
          EXPECT_EQ(t.base_id, has->second);
        }
        EXPECT_LE(++per_node[t.replica], limits.max_per_replica);
        if (t.full) {
          EXPECT_LE(++full_running, limits.max_full_sends);
        }
      }
      int64_t d = duration(t);
      if (d >= 0) running.insert({now + d, std::move(t)});
    }
    EXPECT_LE(s.checks_in_flight(), limits.max_checks);
    EXPECT_LE(s.transfers_in_flight(), limits.max_transfers);
  }

  void Run(int64_t until, int64_t dt) {
    while (now < until && !testing::Test::HasFatalFailure()) Step(dt);
  }
};

TEST(ReplicationSchedule, SetAppRejectsShortIntervalsAndBadReplicaLists) {
  Scheduler s({});
  EXPECT_EQ(s.SetApp("a", 999, {"r1"}).code(), Code::kInvalidArgument);
  EXPECT_EQ(s.SetApp("a", 1000, {"r1", "r1"}).code(), Code::kInvalidArgument);
  EXPECT_EQ(s.SetApp("a", 1000, {""}).code(), Code::kInvalidArgument);
  EXPECT_TRUE(s.SetApp("a", 1000, {"r1"}).ok());
}

TEST(ReplicationSchedule, ChecksRespectIntervalAndNoChangeOnlyMovesLastChecked) {
  Scheduler s({});
  ASSERT_TRUE(s.SetApp("a", 5000, {"r1"}).ok());
  s.SetSnapshots("a", {{.id = "s0", .covers_ms = 0}});
  s.ReplicaHas("a", "r1", "s0");

  auto t = s.Next(1000);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].kind, Task::kCheck);
  EXPECT_TRUE(s.Next(1100).empty()) << "a second check of the same app";
  s.CheckDone("a", 1200, std::nullopt, Status::Ok());
  EXPECT_EQ(s.NextWakeMs(1200), 6000);
  EXPECT_TRUE(s.Next(5999).empty());

  auto rows = s.Lag(5999);
  EXPECT_EQ(Row(rows, "a", "r1").last_checked_ms, 1000);
  EXPECT_EQ(Row(rows, "a", "r1").state, ReplicaLag::kInSync);
  EXPECT_EQ(Row(rows, "a", "r1").lag_ms, 0);
  EXPECT_EQ(Row(rows, "a", "r1").rpo_ms, 4999) << "the check confirmed s0 up to 1000";

  t = s.Next(6000);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].kind, Task::kCheck);
  s.CheckDone("a", 6100, std::nullopt, Status::Ok());
  EXPECT_TRUE(Of(s.Next(6100), Task::kTransfer).empty()) << "no change, nothing to send";
  EXPECT_EQ(s.Lag(6100)[0].last_checked_ms, 6000);

  // A failing check: last_checked stays, the error shows, rpo grows.
  s.Next(11000);
  s.CheckDone("a", 11000, std::nullopt, IoError("snapshot of 'a' failed: disk full"));
  rows = s.Lag(20000);
  EXPECT_EQ(rows[0].last_checked_ms, 6000);
  EXPECT_EQ(rows[0].check_error.code(), Code::kIo);
  EXPECT_EQ(rows[0].rpo_ms, 14000);
  EXPECT_EQ(rows[0].lag_ms, 0);
}

TEST(ReplicationSchedule, ChangeLeadsToTransferOfNewestFromReplicaBase) {
  Scheduler s({});
  ASSERT_TRUE(s.SetApp("a", 1000, {"r1"}).ok());
  s.SetSnapshots("a", {{.id = "s0", .covers_ms = 0}});
  s.ReplicaHas("a", "r1", "s0");
  s.Next(100);
  s.CheckDone("a", 150, Made("s1"), Status::Ok());
  auto t = Of(s.Next(150), Task::kTransfer);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_FALSE(t[0].full);
  EXPECT_EQ(t[0].base_id, "s0");
  EXPECT_EQ(t[0].snapshot_id, "s1");
  EXPECT_EQ(s.Lag(300)[0].state, ReplicaLag::kTransferring);
  s.TransferDone("a", "r1", 400, Status::Ok(), 10);
  EXPECT_EQ(s.Lag(400)[0].replica_newest, "s1");
  EXPECT_EQ(s.Lag(400)[0].state, ReplicaLag::kInSync);
}

TEST(ReplicationSchedule, UnknownReplicaGetsNothingUntilItReports) {
  Scheduler s({});
  ASSERT_TRUE(s.SetApp("a", 1000, {"r1"}).ok());
  s.Next(0);
  s.CheckDone("a", 10, Made("s1"), Status::Ok());
  EXPECT_TRUE(Of(s.Next(10), Task::kTransfer).empty());
  EXPECT_EQ(s.Lag(10)[0].state, ReplicaLag::kUnknown);
  s.ReplicaHas("a", "r1", std::nullopt);
  auto t = Of(s.Next(20), Task::kTransfer);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_TRUE(t[0].full);
  EXPECT_EQ(t[0].base_id, "");
}

TEST(ReplicationSchedule, ReplicaHoldingUnknownSnapshotIsBlockedNotFullySent) {
  Scheduler s({});
  ASSERT_TRUE(s.SetApp("a", 1000, {"r1"}).ok());
  s.SetSnapshots("a", {{.id = "s0", .covers_ms = 0}});
  s.ReplicaHas("a", "r1", "diverged");
  EXPECT_TRUE(Of(s.Next(0), Task::kTransfer).empty());
  auto row = s.Lag(0)[0];
  EXPECT_EQ(row.state, ReplicaLag::kBlocked);
  EXPECT_EQ(row.last_error.code(), Code::kConflict);
  EXPECT_NE(row.last_error.message().find("diverged"), std::string::npos);
}

TEST(ReplicationSchedule, OldestPendingFirstAcrossApps) {
  Scheduler s({.max_transfers = 1});
  // Each app's replica lacks one snapshot; taken at 300 (a), 100 (b), 200 (c).
  std::map<std::string, int64_t> taken = {{"a", 300}, {"b", 100}, {"c", 200}};
  for (auto& [app, at] : taken) {
    ASSERT_TRUE(s.SetApp(app, 60'000, {"r-" + app}).ok());
    s.SetSnapshots(app, {{.id = app + "0", .covers_ms = 0}, {.id = app + "1", .covers_ms = at}});
    s.ReplicaHas(app, "r-" + app, app + "0");
  }
  std::vector<std::string> order;
  for (int64_t now = 1000; order.size() < 3; now += 10) {
    for (const Task& t : Of(s.Next(now), Task::kTransfer)) {
      order.push_back(t.app);
      s.TransferDone(t.app, t.replica, now + 5, Status::Ok(), 0);
    }
  }
  EXPECT_EQ(order, (std::vector<std::string>{"b", "c", "a"}));
}

TEST(ReplicationSchedule, OldestDueCheckFirstUpToMaxChecks) {
  Scheduler s({.max_checks = 2});
  ASSERT_TRUE(s.SetApp("slow", 3000, {}).ok());
  ASSERT_TRUE(s.SetApp("fast", 1000, {}).ok());
  ASSERT_TRUE(s.SetApp("mid", 2000, {}).ok());
  EXPECT_EQ(Of(s.Next(0), Task::kCheck).size(), 2u);  // slow, fast (added first)
  s.CheckDone("slow", 0, std::nullopt, Status::Ok());
  s.CheckDone("fast", 0, std::nullopt, Status::Ok());
  auto t = s.Next(0);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].app, "mid");
  s.CheckDone("mid", 0, std::nullopt, Status::Ok());
  // At 5000 all three are due: fast (1000), mid (2000), slow (3000).
  t = s.Next(5000);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].app, "fast");
  EXPECT_EQ(t[1].app, "mid");
}

TEST(ReplicationSchedule, ConcurrencyIsBoundedGloballyPerReplicaAndForFullSends) {
  Scheduler s({.max_checks = 4, .max_transfers = 8, .max_per_replica = 2, .max_full_sends = 1});
  // 10 apps to one node, 20 apps spread over 10 nodes, 5 new replicas.
  for (int i = 0; i < 35; ++i) {
    std::string app = "app" + std::to_string(i);
    std::string node = i < 10 ? "one" : i < 30 ? "n" + std::to_string(i % 10) : "new";
    ASSERT_TRUE(s.SetApp(app, 60'000, {node}).ok());
    s.SetSnapshots(app, {{.id = "x", .covers_ms = i}, {.id = "y", .covers_ms = 100 + i}});
    if (i < 30) {
      s.ReplicaHas(app, node, "x");
    } else {
      s.ReplicaHas(app, node, std::nullopt);
    }
  }
  auto tasks = s.Next(1000);
  EXPECT_EQ(Of(tasks, Task::kCheck).size(), 4u);
  auto transfers = Of(tasks, Task::kTransfer);
  ASSERT_EQ(transfers.size(), 8u);
  std::map<std::string, int> per_node;
  int full = 0;
  for (const Task& t : transfers) {
    ++per_node[t.replica];
    full += t.full;
  }
  for (auto& [node, n] : per_node) EXPECT_LE(n, 2) << node;
  EXPECT_EQ(full, 1) << "one initial sync, the oldest pending of all";
  EXPECT_EQ(per_node["one"], 2);
  EXPECT_TRUE(Of(s.Next(1001), Task::kTransfer).empty());
}

TEST(ReplicationSchedule, SlowReplicaDoesNotDelayOtherReplicas) {
  Sim sim({});
  for (int i = 0; i < 50; ++i) sim.AddApp("app" + std::to_string(i), 2000, {"slow", "fast"});
  sim.duration = [](const Task& t) -> int64_t {
    if (t.kind == Task::kTransfer && t.replica == "slow") return -1;  // hangs
    return 50;
  };
  sim.Run(60'000, 50);
  int64_t worst_fast_rpo = 0;
  for (const ReplicaLag& r : sim.s.Lag(sim.now)) {
    if (r.replica == "fast") {
      ASSERT_TRUE(r.rpo_ms.has_value()) << r.app;
      worst_fast_rpo = std::max(worst_fast_rpo, *r.rpo_ms);
    } else {
      EXPECT_GE(r.rpo_ms.value_or(0), 55'000) << "the hung node is visibly behind";
    }
  }
  // interval + check + queueing behind 49 other apps + transfer.
  EXPECT_LT(worst_fast_rpo, 6000);
  EXPECT_EQ(sim.per_node["slow"], 2) << "the hung node holds only its own slots";
}

TEST(ReplicationSchedule, FailuresBackOffExponentiallyPerPairAndRecover) {
  Scheduler s({.retry_base_ms = 1000, .retry_max_ms = 4000});
  ASSERT_TRUE(s.SetApp("a", 600'000, {"bad", "good"}).ok());
  s.SetSnapshots("a", {{.id = "s0", .covers_ms = 0}, {.id = "s1", .covers_ms = 10}});
  s.ReplicaHas("a", "bad", "s0");
  s.ReplicaHas("a", "good", "s0");
  auto t = Of(s.Next(100), Task::kTransfer);
  ASSERT_EQ(t.size(), 2u);
  s.TransferDone("a", "good", 200, Status::Ok(), 1);

  int64_t now = 100;
  std::vector<int64_t> gaps;
  for (int i = 0; i < 5; ++i) {
    s.TransferDone("a", "bad", now, Unavailable("node 'bad' unreachable"), 0);
    EXPECT_EQ(s.Lag(now)[0].state, ReplicaLag::kRetrying);
    int64_t failed = now;
    EXPECT_EQ(s.NextWakeMs(now), s.Lag(now)[0].retry_at_ms);
    while (Of(s.Next(now), Task::kTransfer).empty()) ++now;
    gaps.push_back(now - failed);
  }
  EXPECT_EQ(gaps, (std::vector<int64_t>{1000, 2000, 4000, 4000, 4000}));
  auto rows = s.Lag(now);
  EXPECT_EQ(Row(rows, "a", "bad").consecutive_failures, 5);
  EXPECT_EQ(Row(rows, "a", "bad").last_error.code(), Code::kUnavailable);
  EXPECT_EQ(Row(rows, "a", "good").state, ReplicaLag::kInSync);
  EXPECT_EQ(Row(rows, "a", "good").consecutive_failures, 0);

  s.TransferDone("a", "bad", now, Status::Ok(), 1);
  rows = s.Lag(now);
  EXPECT_EQ(Row(rows, "a", "bad").state, ReplicaLag::kInSync);
  EXPECT_EQ(Row(rows, "a", "bad").consecutive_failures, 0);
  EXPECT_EQ(Row(rows, "a", "bad").replica_newest, "s1");
}

TEST(ReplicationSchedule, FailedChecksBackOff) {
  Scheduler s({.retry_base_ms = 1000, .retry_max_ms = 60'000});
  ASSERT_TRUE(s.SetApp("a", 30'000, {}).ok());
  s.Next(0);
  s.CheckDone("a", 0, std::nullopt, IoError("x"));
  EXPECT_EQ(s.NextWakeMs(0), 1000);
  s.Next(1000);
  s.CheckDone("a", 1000, std::nullopt, IoError("x"));
  EXPECT_EQ(s.NextWakeMs(1000), 3000);
  s.Next(3000);
  s.CheckDone("a", 3000, std::nullopt, Status::Ok());
  EXPECT_EQ(s.NextWakeMs(3000), 33'000);
  EXPECT_EQ(s.Lag(3000)[0].check_failures, 0);
}

// The worst rpo_ms of apps other than "big" over 200 s, with or without an
// initial sync of "big" (two new replicas, 60 s each) running meanwhile.
int64_t WorstRpoOfOthers(bool with_initial_sync, bool* saw_full_send_row) {
  Sim sim({});
  std::vector<std::string> nodes = {"n1", "n2", "n3"};
  for (int i = 0; i < 100; ++i) {
    sim.AddApp("app" + std::to_string(i), 5000, {nodes[i % 3], nodes[(i + 1) % 3]});
  }
  sim.duration = [](const Task& t) -> int64_t {
    if (t.kind == Task::kCheck) return 20;
    return t.full ? 60'000 : 20;
  };
  if (with_initial_sync) sim.AddApp("big", 5000, {"n1", "n2"}, /*seeded=*/false);
  int64_t worst = 0;
  while (sim.now < 200'000 && !testing::Test::HasFatalFailure()) {
    sim.Run(sim.now + 1000, 10);
    for (const ReplicaLag& r : sim.s.Lag(sim.now)) {
      if (r.app == "big") {
        if (r.state == ReplicaLag::kTransferring && r.full_send) *saw_full_send_row = true;
        continue;
      }
      EXPECT_TRUE(r.rpo_ms.has_value());
      worst = std::max(worst, r.rpo_ms.value_or(0));
    }
  }
  if (with_initial_sync) {
    auto big_on = [&](const char* node) { return sim.replica_has[{"big", node}].substr(0, 4); };
    EXPECT_EQ(big_on("n1"), "big@") << "initial sync finished";
    EXPECT_EQ(big_on("n2"), "big@");
  }
  return worst;
}

TEST(ReplicationSchedule, InitialSyncDoesNotStarveIncrementalsOfOtherApps) {
  bool saw = false;
  int64_t alone = WorstRpoOfOthers(false, &saw);
  int64_t with_sync = WorstRpoOfOthers(true, &saw);
  std::printf("worst rpo of 100 apps: %lld ms alone, %lld ms during an initial sync\n",
              static_cast<long long>(alone), static_cast<long long>(with_sync));
  EXPECT_TRUE(saw) << "the full send showed as in flight with its progress";
  // A write waits at most one interval (5 s) for its check, then the check,
  // then the burst of ~67 transfers per node (20 ms each) ahead of it.
  EXPECT_LE(alone, 5000 + 2000);
  EXPECT_LE(with_sync, 5000 + 2000);
}

TEST(ReplicationSchedule, RemovingAppOrReplicaDropsPendingWorkButCountsRunningTasks) {
  Scheduler s({.max_transfers = 2, .max_per_replica = 1});
  for (const std::string app : {"a", "b", "c"}) {
    ASSERT_TRUE(s.SetApp(app, 600'000, {"r1", "r2"}).ok());
    s.SetSnapshots(app, {{.id = "0", .covers_ms = 0}, {.id = "1", .covers_ms = 1}});
    s.ReplicaHas(app, "r1", "0");
    s.ReplicaHas(app, "r2", "0");
  }
  auto t = Of(s.Next(10), Task::kTransfer);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].app, "a");
  EXPECT_EQ(t[1].app, "a");
  // Removing "a" while its transfers run: they still hold the slots.
  s.RemoveApp("a");
  EXPECT_TRUE(Of(s.Next(20), Task::kTransfer).empty());
  EXPECT_EQ(s.transfers_in_flight(), 2);
  s.TransferDone("a", "r1", 30, Status::Ok(), 0);
  s.TransferDone("a", "r2", 30, Status::Ok(), 0);
  EXPECT_EQ(s.transfers_in_flight(), 0);
  // Dropping replica r2 of "b" and "c": only r1 transfers remain.
  ASSERT_TRUE(s.SetApp("b", 600'000, {"r1"}).ok());
  ASSERT_TRUE(s.SetApp("c", 600'000, {"r1"}).ok());
  for (const std::string app : {"b", "c"}) {
    t = Of(s.Next(40), Task::kTransfer);
    ASSERT_EQ(t.size(), 1u);
    EXPECT_EQ(t[0].app, app);
    EXPECT_EQ(t[0].replica, "r1");
    s.TransferDone(app, "r1", 50, Status::Ok(), 0);
  }
  EXPECT_TRUE(Of(s.Next(60), Task::kTransfer).empty());
  s.RemoveApp("b");
  s.RemoveApp("c");
  EXPECT_TRUE(s.Lag(60).empty());
  EXPECT_FALSE(s.NextWakeMs(60).has_value());
}

TEST(ReplicationSchedule, ReAddedAppAdoptsItsRunningCheck) {
  Scheduler s({});
  ASSERT_TRUE(s.SetApp("a", 1000, {}).ok());
  ASSERT_EQ(s.Next(0).size(), 1u);
  s.RemoveApp("a");
  ASSERT_TRUE(s.SetApp("a", 1000, {}).ok());
  EXPECT_TRUE(s.Next(10).empty()) << "the old check is still running";
  s.CheckDone("a", 20, std::nullopt, Status::Ok());
  EXPECT_EQ(s.checks_in_flight(), 0);
  EXPECT_EQ(s.Next(1000).size(), 1u);
}

TEST(ReplicationSchedule, LagSecondsAndBytesAsDocumented) {
  Scheduler s({});
  ASSERT_TRUE(s.SetApp("a", 10'000, {"r1", "r2", "r3"}).ok());
  s.SetSnapshots("a", {{.id = "s0", .covers_ms = 1000, .delta_bytes = 500, .logical_bytes = 500}});
  s.ReplicaHas("a", "r1", "s0");
  // Checks at 10'000 (no change), 20'000 (s1, +100), 30'000 (s2, +40).
  s.Next(10'000);
  s.CheckDone("a", 10'010, std::nullopt, Status::Ok());
  s.Next(20'000);
  s.CheckDone("a", 20'500, Made("s1", 100, 600), Status::Ok());
  s.ReplicaHas("a", "r2", std::nullopt);  // a new replica
  auto t = Of(s.Next(20'500), Task::kTransfer);
  ASSERT_EQ(t.size(), 2u);  // r1 incremental, r2 full
  s.TransferDone("a", "r1", 20'600, Unavailable("down"), 0);
  s.TransferProgress("a", "r2", 123);
  s.Next(30'000);
  s.CheckDone("a", 30'100, Made("s2", 40, 640), Status::Ok());

  auto rows = s.Lag(35'000);
  const ReplicaLag& r1 = Row(rows, "a", "r1");
  EXPECT_EQ(r1.lag_ms, 35'000 - 20'000) << "s1, the oldest it lacks, covers 20'000";
  EXPECT_EQ(r1.lag_bytes, 140u);
  EXPECT_EQ(r1.rpo_ms, 35'000 - 10'000) << "s0 was confirmed unchanged at 10'000";
  EXPECT_EQ(r1.primary_newest->id, "s2");
  EXPECT_EQ(r1.primary_newest->covers_ms, 30'000);

  const ReplicaLag& r2 = Row(rows, "a", "r2");
  EXPECT_EQ(r2.state, ReplicaLag::kTransferring);
  EXPECT_TRUE(r2.full_send);
  EXPECT_EQ(r2.progress_bytes, 123u);
  EXPECT_EQ(r2.expected_bytes, 600u);
  EXPECT_EQ(r2.sending_snapshot, "s1");
  EXPECT_EQ(r2.lag_ms, 35'000 - 1000);
  EXPECT_EQ(r2.lag_bytes, 640u) << "a full send carries the newest snapshot";
  EXPECT_FALSE(r2.rpo_ms.has_value());

  EXPECT_EQ(Row(rows, "a", "r3").state, ReplicaLag::kUnknown);
  EXPECT_EQ(r1.last_checked_ms, 30'000);
}

TEST(ReplicationSchedule, ThousandAppsWithRandomTransferTimesAllConverge) {
  Sim sim({});
  std::uniform_int_distribution<int64_t> ms(10, 3000);
  std::bernoulli_distribution fail(0.05);
  std::vector<std::string> nodes = {"n1", "n2", "n3", "n4", "n5", "n6"};
  for (int i = 0; i < 1000; ++i) {
    sim.AddApp("app" + std::to_string(i), 1000 + (i % 30) * 1000,
               {nodes[i % 6], nodes[(i + 1 + i / 6 % 5) % 6]}, /*seeded=*/i % 50 != 0);
  }
  sim.duration = [&](const Task& t) {
    return t.kind == Task::kCheck ? ms(sim.rng) / 10 : ms(sim.rng);
  };
  sim.result = [&](const Task&) {
    return fail(sim.rng) ? Unavailable("simulated network error") : Status::Ok();
  };
  std::bernoulli_distribution change(0.5);
  sim.changed = [&](const std::string&) { return change(sim.rng); };
  sim.Run(300'000, 100);
  // Writes stop; everything must arrive everywhere.
  sim.changed = [](const std::string&) { return false; };
  sim.result = [](const Task&) { return Status::Ok(); };
  sim.Run(sim.now + 600'000, 100);
  ASSERT_FALSE(testing::Test::HasFailure());
  int checked = 0;
  for (const ReplicaLag& r : sim.s.Lag(sim.now)) {
    ASSERT_TRUE(r.primary_newest.has_value()) << r.app;
    EXPECT_EQ(r.replica_newest, r.primary_newest->id) << r.app << "/" << r.replica;
    EXPECT_EQ(sim.replica_has[std::make_pair(r.app, r.replica)], sim.primary_newest[r.app]);
    EXPECT_EQ(r.state, ReplicaLag::kInSync);
    EXPECT_EQ(r.lag_ms, 0);
    ++checked;
  }
  EXPECT_EQ(checked, 2000);
  EXPECT_GT(sim.transfers_done, 2000);
}

TEST(ReplicationSchedule, NextCostsWellUnderAMillisecondWithTenThousandApps) {
  Sim sim({});
  std::vector<std::string> nodes = {"n1", "n2", "n3"};
  for (int i = 0; i < 10'000; ++i) {
    sim.AddApp("app" + std::to_string(i), 1000, {nodes[i % 3], nodes[(i + 1) % 3]});
  }
  sim.duration = [](const Task&) { return 20; };
  sim.Run(10'000, 10);
  double avg_us = std::chrono::duration<double, std::micro>(sim.next_time).count() / sim.next_calls;
  std::printf("Next(): %.1f us on average over %d calls with 10000 apps\n", avg_us, sim.next_calls);
  EXPECT_LT(avg_us, 1000.0);
  EXPECT_GT(sim.transfers_done, 1000);
}

}  // namespace
}  // namespace hc::replication
