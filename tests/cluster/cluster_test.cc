// The cluster against the real thing: a real etcd and three real hcd
// processes on loopback (the same launcher as `hc demo`), real apps, and the
// REST API through HTTP. Covers the list: forming, placement on
// exactly one node, leader death, node death, etcd restart, hcd restart on
// the primary, and bad API input.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "cluster/etcd_client.h"
#include "cluster/local_cluster_test.h"
#include "common/fs.h"
#include "devcluster/local_cluster.h"
#include "net/http_client.h"
#include "runtime/fence.h"
#include "runtime/runtime.h"

namespace hc {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

class ClusterTest : public testing::LocalClusterTest {
 protected:
  static void SetUpTestSuite() {
    devcluster::LocalClusterOptions o;
    o.nodes = 3;
    o.first_octet = 30;  // etcd 127.0.0.30, nodes .31-.33
    o.etcd_client_port = 23792;
    o.etcd_peer_port = 23802;
    o.api_port = 7481;
    o.lease_ttl_seconds = 3;
    o.reconcile_interval_ms = 500;
    StartCluster(o);
  }

  static int NodeIndex(const std::string& id) { return std::atoi(id.c_str() + 4); }  // "nodeK"

  static std::string LeaderId(int skip = 0) {
    json v = ClusterView(skip);
    return v.is_object() ? v.value("leader", std::string()) : std::string();
  }

  // The app's state in node k's runtime ("" when the runtime does not have it).
  static runtime::AppStatus LocalStatus(int k, const std::string& name) {
    runtime::RuntimeConfig rc;
    rc.state_dir = JoinPath(cluster_->NodeDataDir(k), "runtime");
    rc.cgroup_parent = cluster_->options().cgroup_prefix + "-" + std::to_string(k);
    auto rt = runtime::OpenRuntime(rc);
    if (!rt.ok()) return {};
    auto st = (*rt)->GetStatus(name);
    return st.ok() ? *st : runtime::AppStatus{};
  }

  static int CopiesRunning(const std::string& name) {
    int n = 0;
    for (int k = 1; k <= 3; k++)
      if (LocalStatus(k, name).state == runtime::AppState::kRunning) n++;
    return n;
  }

  static bool Serves(uint16_t port) {
    net::HttpClient c({"127.0.0.1", port}, {.connect_timeout = milliseconds(500),
                                            .request_timeout = milliseconds(2000)});
    auto r = c.Do("GET", "/");
    return r.ok() && r->status == 200;
  }

  static std::string PrimaryOf(const json& app) { return app["placement"].value("primary", ""); }

  // Waits until node k's hcd has just moved its apps' fence deadline on (a
  // lease renewal).
  static bool WaitFenceExtended(int k) {
    const std::string file = JoinPath(cluster_->NodeDataDir(k), "fence");
    auto first = runtime::ReadFenceDeadline(file);
    return WaitFor(
        [&] {
          auto now = runtime::ReadFenceDeadline(file);
          return first.ok() && now.ok() && *now > *first;
        },
        5000);
  }
};

TEST_F(ClusterTest, ThreeNodesFormACluster) {
  json v = ClusterView();
  ASSERT_EQ(v["nodes"].size(), 3u) << v.dump(2);
  int leaders = 0;
  std::set<std::string> dcs;
  for (const auto& n : v["nodes"]) {
    leaders += n.value("leader", false) ? 1 : 0;
    dcs.insert(n.value("datacenter", ""));
  }
  EXPECT_EQ(leaders, 1);
  EXPECT_EQ(dcs.size(), 2u);  // dc1, dc1, dc2
  // Every node answers the same question the same way.
  for (int k = 1; k <= 3; k++) {
    auto [st, j] = Call(k, "GET", "/v1/cluster");
    ASSERT_EQ(st, 200);
    EXPECT_EQ(j.value("leader", ""), v.value("leader", ""));
  }
}

TEST_F(ClusterTest, AppCreatedThroughAnyNodeRunsOnExactlyOneNode) {
  json app = CreateAndWait(2, "one");
  std::string primary = PrimaryOf(app);
  ASSERT_FALSE(primary.empty());
  EXPECT_EQ(app["placement"]["epoch"], 1);
  ASSERT_EQ(app["placement"]["replicas"].size(), 1u);
  EXPECT_NE(app["placement"]["replicas"][0], primary);
  EXPECT_EQ(CopiesRunning("one"), 1);
  EXPECT_EQ(LocalStatus(NodeIndex(primary), "one").state, runtime::AppState::kRunning);
  uint16_t port = LocalStatus(NodeIndex(primary), "one").port;
  EXPECT_TRUE(Serves(port));
  // Every node reports the same placement.
  for (int k = 1; k <= 3; k++) {
    auto [st, a] = Call(k, "GET", "/v1/apps/one");
    EXPECT_EQ(st, 200);
    EXPECT_EQ(PrimaryOf(a), primary);
  }
  // Delete: stops everywhere, data gone on every node.
  auto [st, j] = Call(3, "DELETE", "/v1/apps/one");
  EXPECT_EQ(st, 200) << j.dump();
  EXPECT_TRUE(WaitFor([] { return CopiesRunning("one") == 0; }, 10000));
  EXPECT_TRUE(WaitFor(
      [] {
        for (int k = 1; k <= 3; k++)
          if (PathExists(JoinPath(cluster_->NodeDataDir(k), "volumes/volumes/one"))) return false;
        return true;
      },
      10000))
      << Logs();
  EXPECT_EQ(Call(1, "GET", "/v1/apps/one").first, 404);
}

TEST_F(ClusterTest, BadApiInputIsRefusedAndWritesNothing) {
  cluster::EtcdClient etcd({.endpoints = {cluster_->EtcdUrl()}});
  auto count_apps = [&] {
    auto r = etcd.GetPrefix("/hc/apps/");
    return r.ok() ? r->kvs.size() : size_t{999};
  };
  json good = {{"name", "dup"}, {"template", "static"}, {"replicas", 0}};
  ASSERT_EQ(Call(1, "POST", "/v1/apps", good.dump()).first, 201);
  size_t before = count_apps();
  struct Case {
    std::string body;
    int status;
    std::string words;
  };
  std::vector<Case> cases = {
      {json{{"name", "x1"}, {"template", "wordpress"}}.dump(), 400, "template"},
      {good.dump(), 409, "already exists"},
      {json{{"name", "x2"}, {"template", "static"}, {"domains", {"bad..example.com"}}}.dump(), 400,
       "domain"},
      {json{{"name", "x3"}, {"template", "static"}, {"domains", {"Shop.Example.com"}}}.dump(), 400,
       "lower"},
      {json{{"name", "x4"}, {"template", "static"}, {"limits", {{"memory_bytes", 1024}}}}.dump(),
       400, "memory"},
      {json{{"name", "x5"}, {"template", "static"}, {"limits", {{"cpu_millis", -5}}}}.dump(), 400,
       "cpu_millis"},
      {json{{"name", "x6"}, {"template", "static"}, {"replicas", 99}}.dump(), 400, "replicas"},
      {json{{"name", "Bad Name"}, {"template", "static"}}.dump(), 400, "name"},
      {json{{"name", "x7"}, {"template", "command"}}.dump(), 400, "command"},
      {json{{"name", "x8"}, {"template", "static"}, {"colour", "red"}}.dump(), 400,
       "unknown field"},
      {"{not json", 400, "JSON"},
      {"[1,2]", 400, "object"},
  };
  for (const auto& c : cases) {
    auto [st, j] = Call(2, "POST", "/v1/apps", c.body);
    EXPECT_EQ(st, c.status) << c.body << " -> " << j.dump();
    std::string msg = j.is_object() && j.contains("error") ? j["error"].value("message", "") : "";
    EXPECT_NE(msg.find(c.words), std::string::npos)
        << "message '" << msg << "' lacks '" << c.words << "'";
  }
  EXPECT_EQ(count_apps(), before);
  EXPECT_EQ(Call(1, "GET", "/v1/apps/nosuchapp").first, 404);
  EXPECT_EQ(Call(1, "DELETE", "/v1/apps/nosuchapp").first, 404);
  EXPECT_EQ(Call(1, "PUT", "/v1/apps").first, 405);
  EXPECT_EQ(Call(1, "GET", "/v2/whatever").first, 404);
  EXPECT_EQ(Call(1, "DELETE", "/v1/apps/dup").first, 200);
}

TEST_F(ClusterTest, KilledLeaderIsReplacedWithinFiveSeconds) {
  std::string old = LeaderId();
  ASSERT_FALSE(old.empty());
  int k = NodeIndex(old);
  auto t0 = Clock::now();
  ASSERT_TRUE(cluster_->StopNode(k, SIGKILL).ok());
  std::string now;
  bool ok = WaitFor(
      [&] {
        now = LeaderId(k);
        return !now.empty() && now != old;
      },
      8000);
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_TRUE(ok) << Logs();
  EXPECT_LT(secs, 5.0) << "new leader " << now << " after " << secs << " s";
  std::printf("new leader %s %.2f s after kill -9 of %s\n", now.c_str(), secs, old.c_str());
  ASSERT_TRUE(cluster_->StartNode(k).ok());
  EXPECT_TRUE(WaitNodes(3, 10000));
  EXPECT_EQ(LeaderId(), now);  // the restarted node does not grab it back
}

TEST_F(ClusterTest, KilledNodeLeavesMembershipWithinTtl) {
  std::string leader = LeaderId();
  int k = NodeIndex(leader) == 3 ? 2 : 3;  // a non-leader
  auto t0 = Clock::now();
  ASSERT_TRUE(cluster_->StopNode(k, SIGKILL).ok());
  bool gone = WaitFor(
      [&] {
        json v = ClusterView(k);
        if (!v.is_object()) return false;
        for (const auto& n : v["nodes"])
          if (n.value("id", "") == "node" + std::to_string(k)) return false;
        return true;
      },
      10000);
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_TRUE(gone);
  EXPECT_LE(secs, 3.0 + 1.5) << "registration lingered " << secs << " s (TTL 3 s)";
  std::printf("node%d's registration gone %.2f s after kill -9 (TTL 3 s)\n", k, secs);
  ASSERT_TRUE(cluster_->StartNode(k).ok());
  EXPECT_TRUE(WaitNodes(3, 10000));
  json v = ClusterView();
  EXPECT_EQ(v.value("leader", ""), leader);
}

TEST_F(ClusterTest, EtcdRestartMovesNothingAndLeavesOneCopy) {
  json app = CreateAndWait(1, "steady");
  int k = NodeIndex(PrimaryOf(app));
  runtime::AppStatus before = LocalStatus(k, "steady");
  ASSERT_EQ(before.state, runtime::AppState::kRunning);

  // etcd is down for as long as its restart takes (about 2-3 s here). If
  // that outlasts the self-fencing window (lease TTL - 0.5 s), the app is
  // fenced meanwhile and its supervisor starts it again, on the same node,
  // once the lease is confirmed; the lease itself survives (etcd keeps
  // leases across restarts), so nothing fails over.
  ASSERT_TRUE(cluster_->StopEtcd().ok());
  std::this_thread::sleep_for(milliseconds(300));
  ASSERT_TRUE(cluster_->StartEtcd().ok());
  ASSERT_TRUE(WaitNodes(3, 15000)) << Logs();
  bool ok = WaitFor(
      [&] {
        auto [st, a] = Call(1, "GET", "/v1/apps/steady");
        return st == 200 && a.value("summary", "") == "running";
      },
      15000);
  EXPECT_TRUE(ok) << Logs();
  EXPECT_TRUE(WaitFor([&] { return LocalStatus(k, "steady").state == runtime::AppState::kRunning; },
                      10000));
  runtime::AppStatus after = LocalStatus(k, "steady");
  EXPECT_LE(after.restarts, before.restarts + 1);
  EXPECT_EQ(CopiesRunning("steady"), 1);
  auto [st, a] = Call(2, "GET", "/v1/apps/steady");
  EXPECT_EQ(a["placement"]["epoch"], app["placement"]["epoch"]);
  EXPECT_EQ(PrimaryOf(a), PrimaryOf(app));
  EXPECT_EQ(Call(1, "DELETE", "/v1/apps/steady").first, 200);
  EXPECT_TRUE(WaitFor([] { return CopiesRunning("steady") == 0; }, 10000));
}

TEST_F(ClusterTest, HcdRestartOnThePrimaryKeepsTheAppWithoutASecondCopy) {
  json app = CreateAndWait(3, "keeper");
  int k = NodeIndex(PrimaryOf(app));
  runtime::AppStatus before = LocalStatus(k, "keeper");
  for (int sig : {SIGTERM, SIGKILL}) {
    // hcd back within the self-fencing window: the app never stopped. The
    // window (TTL 3 s - 0.5 s) runs from the last lease renewal; stopping
    // right after one gives the restart all of it, however busy the machine.
    // (A graceful stop renews once more as it ends.)
    ASSERT_TRUE(WaitFenceExtended(k));
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(cluster_->StopNode(k, sig).ok());
    auto t1 = std::chrono::steady_clock::now();
    EXPECT_TRUE(Serves(before.port));
    ASSERT_TRUE(cluster_->StartNode(k).ok());
    auto t2 = std::chrono::steady_clock::now();
    ASSERT_TRUE(WaitNodes(3, 10000));
    bool ok = WaitFor(
        [&] {
          auto [st, a] = Call(k, "GET", "/v1/apps/keeper");
          return st == 200 && a.value("summary", "") == "running";
        },
        15000);
    EXPECT_TRUE(ok) << Logs();
    runtime::AppStatus after = LocalStatus(k, "keeper");
    EXPECT_EQ(after.pid, before.pid)
        << "signal " << sig << "; the stop took "
        << std::chrono::duration_cast<milliseconds>(t1 - t0).count() << " ms, the start "
        << std::chrono::duration_cast<milliseconds>(t2 - t1).count() << " ms\n"
        << Logs();
    EXPECT_EQ(CopiesRunning("keeper"), 1);
  }
  // hcd away for longer than the lease: the app is fenced there and runs on
  // its replica instead; never two copies.
  ASSERT_TRUE(cluster_->StopNode(k, SIGKILL).ok());
  EXPECT_TRUE(WaitFor([&] { return !Serves(before.port); }, 5000)) << "fenced";
  EXPECT_TRUE(WaitFor(
      [&] {
        auto [st, a] = Call(k % 3 + 1, "GET", "/v1/apps/keeper");
        return st == 200 && a.value("summary", "") == "running" && NodeIndex(PrimaryOf(a)) != k;
      },
      20000))
      << Logs();
  EXPECT_EQ(CopiesRunning("keeper"), 1);
  ASSERT_TRUE(cluster_->StartNode(k).ok());
  ASSERT_TRUE(WaitNodes(3, 10000));
  EXPECT_EQ(Call(1, "DELETE", "/v1/apps/keeper").first, 200);
  EXPECT_TRUE(WaitFor([] { return CopiesRunning("keeper") == 0; }, 10000));
}

TEST_F(ClusterTest, RestartedAppIsStartedAgainByItsNode) {
  json app = CreateAndWait(1, "phoenix");
  int k = NodeIndex(PrimaryOf(app));
  runtime::RuntimeConfig rc;
  rc.state_dir = JoinPath(cluster_->NodeDataDir(k), "runtime");
  rc.cgroup_parent = cluster_->options().cgroup_prefix + "-" + std::to_string(k);
  auto rt = runtime::OpenRuntime(rc);
  ASSERT_TRUE(rt.ok());
  // Someone stops it behind the agent's back: the agent starts it again.
  ASSERT_TRUE((*rt)->Stop("phoenix").ok());
  EXPECT_TRUE(WaitFor(
      [&] { return LocalStatus(k, "phoenix").state == runtime::AppState::kRunning; }, 10000));
  EXPECT_EQ(CopiesRunning("phoenix"), 1);
  EXPECT_EQ(Call(1, "DELETE", "/v1/apps/phoenix").first, 200);
  EXPECT_TRUE(WaitFor([] { return CopiesRunning("phoenix") == 0; }, 10000));
}

}  // namespace
}  // namespace hc
