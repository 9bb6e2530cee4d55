// The agent's reconcile loop against a real etcd, with fake runtime and
// volumes: what it starts, stops, keeps and reports for each assignment.
// (tests/cluster/cluster_test.cc runs the same loop with real apps.)
#include "agent/agent.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "agent/fake_node.h"
#include "cluster/cluster_store.h"
#include "cluster/etcd_test_env.h"
#include "common/fs.h"

namespace hc::agent {
namespace {

using cluster::testing::EtcdTestEnv;
using std::chrono::milliseconds;

bool WaitFor(const std::function<bool()>& pred, int timeout_ms = 5000) {
  auto until = std::chrono::steady_clock::now() + milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return pred();
}

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = EtcdTestEnv::WhyUnavailable();
    if (!why.empty()) GTEST_SKIP() << "skipped: " << why;
    auto env = EtcdTestEnv::Start();
    ASSERT_TRUE(env.ok()) << env.status().ToString();
    env_ = std::move(*env);
    etcd_ = std::make_unique<cluster::EtcdClient>(cluster::EtcdOptions{.endpoints = {env_->url()}});
    cs_ = std::make_unique<cluster::ClusterStore>(etcd_.get(), "/agent-test/");
    live_ = env_->dir() + "/live";
    ASSERT_TRUE(MakeDirs(live_ + "/public").ok());
    store_ = std::make_unique<testing::FakeStore>(live_);
    auto lease = etcd_->GrantLease(10);
    ASSERT_TRUE(lease.ok());
    lease_ = *lease;
  }
  void TearDown() override {
    if (agent_) agent_->Stop();
  }

  void StartAgent() {
    agent_ = std::make_unique<Agent>(
        AgentOptions{.node_id = "me", .status_interval_seconds = 1, .reconcile_interval_ms = 200},
        cs_.get(), store_.get(), &rt_, [this] { return lease_; });
    ASSERT_TRUE(agent_->Start().ok());
  }

  cluster::AppDef Def(const std::string& name) {
    cluster::AppDef a;
    a.name = name;
    a.template_name = "static";
    return a;
  }

  // Writes placement + assignments as the leader would (no guard: no leader here).
  void Place(const std::string& app, const std::string& primary, std::vector<std::string> replicas,
             uint64_t epoch, std::vector<std::string> previous = {}) {
    cluster::PlacementWrite w;
    w.kind = epoch == 1 && previous.empty() ? cluster::PlacementWrite::kCreate
                                            : cluster::PlacementWrite::kUpdate;
    w.placement = {app, primary, std::move(replicas), epoch, cluster::PlacementState::kRunning};
    w.app = Def(app);
    auto r = etcd_->Get(cs_->PlacementKey(app));
    ASSERT_TRUE(r.ok());
    if (!r->kvs.empty()) w.expected_mod_revision = r->kvs[0].mod_revision;
    w.previous_nodes = std::move(previous);
    auto always = cluster::Compare::CreateRevision("/agent-test/none", cluster::Compare::kEqual, 0);
    auto n = cs_->ApplyPlacements({w}, always, nullptr);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
  }

  void Unplace(const std::string& app, std::vector<std::string> previous) {
    cluster::PlacementWrite w;
    w.kind = cluster::PlacementWrite::kDelete;
    w.placement.app = app;
    auto r = etcd_->Get(cs_->PlacementKey(app));
    ASSERT_TRUE(r.ok() && !r->kvs.empty());
    w.expected_mod_revision = r->kvs[0].mod_revision;
    w.previous_nodes = std::move(previous);
    auto always = cluster::Compare::CreateRevision("/agent-test/none", cluster::Compare::kEqual, 0);
    ASSERT_TRUE(cs_->ApplyPlacements({w}, always, nullptr).ok());
  }

  std::optional<cluster::AppObserved> Reported(const std::string& app) {
    auto all = cs_->ListObserved(app);
    if (!all.ok() || all->empty()) return std::nullopt;
    return all->front();
  }

  // Waits until this node reports `app` as its replica.
  bool WaitReplicaHere(const std::string& app) {
    return WaitFor([&] {
      auto o = Reported(app);
      return o && o->role == "replica";
    });
  }

  bool Running(const std::string& app) {
    auto st = rt_.GetStatus(app);
    return st.ok() && st->state == runtime::AppState::kRunning;
  }

  std::unique_ptr<EtcdTestEnv> env_;
  std::unique_ptr<cluster::EtcdClient> etcd_;
  std::unique_ptr<cluster::ClusterStore> cs_;
  std::string live_;
  std::unique_ptr<testing::FakeStore> store_;
  testing::FakeRuntime rt_;
  int64_t lease_ = 0;
  std::unique_ptr<Agent> agent_;
};

TEST_F(AgentTest, StartsWhatItIsPrimaryForAndReportsIt) {
  StartAgent();
  Place("web", "me", {"other"}, 1);
  ASSERT_TRUE(WaitFor([&] { return Running("web"); }));
  EXPECT_TRUE(store_->Has("web"));
  ASSERT_TRUE(WaitFor([&] {
    auto o = Reported("web");
    return o && o->ready;
  }));
  auto o = Reported("web");
  EXPECT_EQ(o->node, "me");
  EXPECT_EQ(o->role, "primary");
  EXPECT_EQ(o->epoch, 1u);
  EXPECT_EQ(o->state, "running");
  EXPECT_GT(o->port, 0);
  EXPECT_EQ(rt_.starts(), 1);
}

TEST_F(AgentTest, NeverRunsWhatNamesAnotherNodeAsPrimary) {
  StartAgent();
  Place("theirs", "other", {"me"}, 1);
  ASSERT_TRUE(WaitReplicaHere("theirs"));
  // The replica's volume is made by its first replication stream, not here
  // (an empty one would make that full stream refuse to land).
  EXPECT_FALSE(store_->Has("theirs"));
  std::this_thread::sleep_for(milliseconds(500));
  EXPECT_FALSE(Running("theirs"));
  EXPECT_EQ(rt_.starts(), 0);
}

TEST_F(AgentTest, StopsWhenThePlacementMovesThePrimaryAway) {
  StartAgent();
  Place("moving", "me", {"other"}, 1);
  ASSERT_TRUE(WaitFor([&] { return Running("moving"); }));
  Place("moving", "other", {"me"}, 2, {"me", "other"});
  ASSERT_TRUE(WaitFor([&] { return !Running("moving"); }));
  ASSERT_TRUE(WaitFor([&] {
    auto o = Reported("moving");
    return o && o->role == "replica" && o->epoch == 2;
  }));
  EXPECT_TRUE(store_->Has("moving"));  // data kept: it is a replica now
}

// A move's target (PrepareMove, before the hold): the app is created from the
// replica here but not run, survives reconciles, and the start after the
// switch lets the prepared one go (same port).
TEST_F(AgentTest, PreparesAMoveHereAndStartsThePreparedAppAfterTheSwitch) {
  StartAgent();
  Place("coming", "other", {"me"}, 1);
  ASSERT_TRUE(WaitReplicaHere("coming"));
  ASSERT_TRUE(store_->CreateVolume("coming").ok());  // made by its first stream
  Status s = agent_->PrepareMove("coming", 60000);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto st = rt_.GetStatus("coming");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, runtime::AppState::kPrepared);
  uint16_t port = st->port;
  std::this_thread::sleep_for(milliseconds(700));  // reconciles every 200 ms
  st = rt_.GetStatus("coming");
  ASSERT_TRUE(st.ok()) << "a reconcile removed the prepared app";
  EXPECT_EQ(st->state, runtime::AppState::kPrepared);
  EXPECT_EQ(rt_.starts(), 0);
  // Not a replica here: nothing to prepare.
  Place("elsewhere", "other", {}, 1);
  EXPECT_EQ(agent_->PrepareMove("elsewhere", 60000).code(), Code::kConflict);
  // The switch.
  Place("coming", "me", {"other"}, 2, {"other", "me"});
  ASSERT_TRUE(WaitFor([&] { return Running("coming"); }));
  EXPECT_EQ(rt_.GetStatus("coming")->port, port);
  EXPECT_EQ(rt_.prepared_starts(), 1);
}

TEST_F(AgentTest, RemovesAPreparedAppWhoseMoveDidNotCome) {
  StartAgent();
  Place("stays", "other", {"me"}, 1);
  ASSERT_TRUE(WaitReplicaHere("stays"));
  ASSERT_TRUE(store_->CreateVolume("stays").ok());
  ASSERT_TRUE(agent_->PrepareMove("stays", 1000).ok());
  ASSERT_TRUE(WaitFor([&] { return !rt_.GetStatus("stays").ok(); }, 5000));
  EXPECT_EQ(rt_.starts(), 0);
}

TEST_F(AgentTest, KeepsTheVolumeOfAMovedAppAndDestroysADeletedOne) {
  StartAgent();
  ASSERT_TRUE(cs_->CreateApp(Def("kept")).ok());
  Place("kept", "me", {}, 1);
  Place("gone", "me", {}, 1);  // no apps/gone: it was deleted
  ASSERT_TRUE(WaitFor([&] { return Running("kept") && Running("gone"); }));
  Unplace("kept", {"me"});
  Unplace("gone", {"me"});
  ASSERT_TRUE(
      WaitFor([&] { return !Running("kept") && !Running("gone") && !store_->Has("gone"); }));
  EXPECT_TRUE(store_->Has("kept"));
  EXPECT_TRUE(WaitFor([&] { return !Reported("kept") && !Reported("gone"); }));
}

TEST_F(AgentTest, RestartsAnAppThatStoppedBehindItsBack) {
  StartAgent();
  Place("phoenix", "me", {}, 1);
  ASSERT_TRUE(WaitFor([&] { return Running("phoenix"); }));
  ASSERT_TRUE(rt_.Stop("phoenix").ok());
  EXPECT_TRUE(WaitFor([&] { return Running("phoenix"); }));
  EXPECT_EQ(rt_.starts(), 2);
}

TEST_F(AgentTest, KeepsAnAppStoppedWhileItsVolumeIsMaintained) {
  StartAgent();
  Place("fixme", "me", {"other"}, 1);
  ASSERT_TRUE(WaitFor([&] { return Running("fixme"); }));
  bool ran_stopped = false;
  Status s = agent_->WithAppStopped("fixme", [&] {
    // Several reconciles pass meanwhile; none starts it again.
    std::this_thread::sleep_for(milliseconds(800));
    ran_stopped = !Running("fixme");
    EXPECT_EQ(agent_->WithAppStopped("fixme", [] { return Status::Ok(); }).code(), Code::kConflict);
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(ran_stopped);
  EXPECT_TRUE(WaitFor([&] { return Running("fixme"); }));
  EXPECT_EQ(rt_.starts(), 2);
  // The work's error is the caller's; the app starts again all the same.
  s = agent_->WithAppStopped("fixme", [] { return IoError("repair failed"); });
  EXPECT_EQ(s.code(), Code::kIo);
  EXPECT_TRUE(WaitFor([&] { return Running("fixme"); }));
}

TEST_F(AgentTest, TouchesNothingUntilItHasReadItsAssignments) {
  // An app left running by an earlier hcd, no longer assigned here.
  runtime::AppSpec stray;
  stray.name = "stray";
  stray.port = 20001;
  ASSERT_TRUE(rt_.Start(stray).ok());
  ASSERT_TRUE(env_->Stop().ok());
  StartAgent();
  std::this_thread::sleep_for(milliseconds(1500));
  EXPECT_TRUE(Running("stray")) << "the agent acted before it knew its assignments";
  EXPECT_FALSE(agent_->stats().synced);
  ASSERT_TRUE(env_->Resume().ok());
  EXPECT_TRUE(WaitFor([&] { return !Running("stray"); }, 10000));
}

TEST_F(AgentTest, EtcdRestartRestartsNothing) {
  StartAgent();
  Place("steady", "me", {}, 1);
  ASSERT_TRUE(WaitFor([&] { return Running("steady"); }));
  ASSERT_TRUE(env_->Restart().ok());
  Place("after", "me", {}, 1);  // the watch resumed
  ASSERT_TRUE(WaitFor([&] { return Running("after"); }, 10000));
  EXPECT_EQ(rt_.starts(), 2);
  EXPECT_EQ(rt_.stops(), 0);
}

}  // namespace
}  // namespace hc::agent
