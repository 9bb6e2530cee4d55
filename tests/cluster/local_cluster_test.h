// A real local cluster (etcd + N hcd, the launcher `hc demo` uses) shared by
// the tests of one suite, with helpers to call the REST API and wait. Each
// test binary starts its own cluster on its own loopback addresses and ports.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/fs.h"
#include "devcluster/local_cluster.h"
#include "net/http_client.h"
#include "storage/store.h"
#include "test_util.h"

namespace hc::testing {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// "node3" -> 3 (the devcluster's node ids); 0 for anything else.
inline int NodeOf(const std::string& id) {
  return id.size() > 4 && id.rfind("node", 0) == 0 ? std::atoi(id.c_str() + 4) : 0;
}

// A node's dir store, opened from the test (the volumes of a stopped or
// partitioned node can be read too).
inline std::unique_ptr<storage::Store> OpenDirStore(const std::string& root) {
  storage::StoreConfig c;
  c.backend = "dir";
  c.root = root;
  auto s = storage::OpenStore(c);
  return s.ok() ? std::move(*s) : nullptr;
}

class LocalClusterTest : public ::testing::Test {
 protected:
  // Starts the suite's cluster (or records why it is skipped). `o` names the
  // addresses and ports; base_dir, hcd_path and cgroup_prefix are filled in.
  static void StartCluster(devcluster::LocalClusterOptions o) {
    if (!HaveProgram("etcd")) {
      skip_ = "etcd not installed (apt-get install etcd-server)";
      return;
    }
    char tmpl[] = "/tmp/hc-cluster-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    o.base_dir = tmpl;
    o.hcd_path = HC_HCD_PATH;
    o.cgroup_prefix = "hc-test-" + std::to_string(getpid());
    auto c = devcluster::LocalCluster::Create(o);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    cluster_ = new devcluster::LocalCluster(std::move(*c));
    Status s = cluster_->Start(30000);
    ASSERT_TRUE(s.ok()) << s.ToString() << "\n" << Logs();
  }

  static void TearDownTestSuite() {
    if (!cluster_) return;
    Status s = cluster_->Destroy();
    EXPECT_TRUE(s.ok()) << s.ToString();
    delete cluster_;
    cluster_ = nullptr;
  }

  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << "skipped: " << skip_;
    ASSERT_NE(cluster_, nullptr);
    // Every test starts with all nodes and etcd up.
    ASSERT_TRUE(cluster_->StartEtcd().ok());
    for (int k = 1; k <= cluster_->nodes(); k++) ASSERT_TRUE(cluster_->StartNode(k).ok()) << Logs();
    ASSERT_TRUE(WaitNodes(cluster_->nodes(), 15000)) << Logs();
  }

  static std::string Logs() {
    if (!cluster_) return "";
    std::string out;
    for (int k = 1; k <= cluster_->nodes(); k++) {
      auto t = ReadFileToString(cluster_->NodeLog(k));
      if (t.ok())
        out += "--- node" + std::to_string(k) + ".log (tail)\n" +
               t->substr(t->size() > 3000 ? t->size() - 3000 : 0);
    }
    return out;
  }

  // One API call to node k; returns status and parsed body.
  static std::pair<int, json> Call(int k, const std::string& method, const std::string& path,
                                   const std::string& body = "") {
    auto hp = net::ParseHttpUrl(cluster_->ApiUrl(k));
    net::HttpClient c(
        *hp, {.connect_timeout = milliseconds(1000), .request_timeout = milliseconds(5000)});
    auto r = c.Do(method, path, body);
    if (!r.ok()) return {0, json()};
    return {r->status, json::parse(r->body, nullptr, false)};
  }

  // The first node (other than `skip`) whose API answers /v1/cluster.
  static json ClusterView(int skip = 0) {
    for (int k = 1; k <= cluster_->nodes(); k++) {
      if (k == skip || !cluster_->NodeRunning(k)) continue;
      auto [st, j] = Call(k, "GET", "/v1/cluster");
      if (st == 200) return j;
    }
    return json();
  }

  static bool WaitFor(const std::function<bool()>& pred, int timeout_ms) {
    auto until = Clock::now() + milliseconds(timeout_ms);
    while (Clock::now() < until) {
      if (pred()) return true;
      std::this_thread::sleep_for(milliseconds(50));
    }
    return pred();
  }

  static bool WaitNodes(size_t n, int timeout_ms) {
    return WaitFor(
        [n] {
          json v = ClusterView();
          return v.is_object() && v["nodes"].size() == n &&
                 !v.value("leader", std::string()).empty();
        },
        timeout_ms);
  }

  // Creates a static app through node k and waits until it runs and is ready.
  // `extra` fields replace the defaults (e.g. {"domains": [...]}).
  static json CreateAndWait(int k, const std::string& name, const json& extra = json::object()) {
    json body = {{"name", name},
                 {"template", "static"},
                 {"replicas", 1},
                 {"limits", {{"memory_bytes", 64 << 20}}}};
    body.update(extra);
    auto [st, j] = Call(k, "POST", "/v1/apps", body.dump());
    EXPECT_EQ(st, 201) << j.dump();
    json app;
    bool ok = WaitFor(
        [&] {
          auto [s, a] = Call(k, "GET", "/v1/apps/" + name);
          app = a;
          return s == 200 && a.value("summary", "") == "running";
        },
        30000);
    EXPECT_TRUE(ok) << app.dump(2) << Logs();
    return app;
  }

  // Where an app is, from its GET /v1/apps/<name> answer.
  struct Roles {
    int primary = 0;
    std::vector<int> replicas;
    uint64_t epoch = 0;
  };
  static Roles RolesOf(const json& app) {
    Roles r;
    const json& p = app["placement"];
    if (!p.is_object()) return r;
    r.primary = NodeOf(p.value("primary", ""));
    for (const auto& id : p["replicas"]) r.replicas.push_back(NodeOf(id.get<std::string>()));
    r.epoch = p.value("epoch", uint64_t{0});
    return r;
  }
  // GET /v1/apps/<name> through the first node other than `skip` that answers.
  static json App(const std::string& name, int skip = 0) {
    for (int k = 1; k <= cluster_->nodes(); k++) {
      if (k == skip || !cluster_->NodeRunning(k)) continue;
      auto [st, j] = Call(k, "GET", "/v1/apps/" + name);
      if (st == 200) return j;
    }
    return json();
  }
  // Whether `hc events` holds an event of `kind` for `app` (asked of the
  // first node other than `skip` that answers).
  static bool HasEvent(const std::string& app, const std::string& kind, int skip = 0) {
    for (int k = 1; k <= cluster_->nodes(); k++) {
      if (k == skip || !cluster_->NodeRunning(k)) continue;
      auto [st, j] = Call(k, "GET", "/v1/events?app=" + app + "&limit=0");
      if (st != 200) continue;
      for (const auto& e : j["events"])
        if (e.value("kind", "") == kind) return true;
      return false;
    }
    return false;
  }

  static inline devcluster::LocalCluster* cluster_ = nullptr;
  static inline std::string skip_;
};

}  // namespace hc::testing
