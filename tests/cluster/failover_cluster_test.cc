// No single point of failure, against a real cluster: etcd + 3 hcd on
// 127.0.0.130-133, real apps (static template), real HTTP traffic through the
// nodes' proxies. kill -9 of a primary (failover, self-fencing, replicated
// writes kept), kill -9 of the leader during a failover, live migration under
// load (no failed request), drain, and an etcd restart during a migration.
// The network partition is in partition_cluster_test.cc (namespaces).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <thread>

#include "cluster/local_cluster_test.h"
#include "storage/store.h"

namespace hc {
namespace {

using testing::json;
using testing::milliseconds;
using testing::NodeOf;
using testing::OpenDirStore;
using Clock = std::chrono::steady_clock;

constexpr uint16_t kProxyPort = 7580;

bool PortAccepts(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// Steady HTTP requests through one node's proxy, counting every failure.
class Load {
 public:
  Load(const std::string& address, const std::string& host, const std::string& path, int per_second)
      : thread_([=, this] { Run(address, host, path, per_second); }) {}
  ~Load() { Stop(); }
  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  int64_t ok() const { return ok_.load(); }
  int64_t failed() const { return failed_.load(); }
  int64_t max_ms() const { return max_ms_.load(); }
  std::string first_error() {
    std::lock_guard<std::mutex> l(mu_);
    return first_error_;
  }

 private:
  void Run(const std::string& address, const std::string& host, const std::string& path,
           int per_second) {
    auto period = milliseconds(1000 / per_second);
    auto next = Clock::now();
    while (!stop_.load()) {
      net::HttpClient c(
          net::HostPort{address, kProxyPort},
          {.connect_timeout = milliseconds(2000), .request_timeout = milliseconds(20000)});
      net::HttpRequest req;
      req.method = "GET";
      req.target = path;
      req.headers.Set("Host", host);
      auto t0 = Clock::now();
      auto r = c.Do(req, milliseconds(20000));
      int64_t ms = std::chrono::duration_cast<milliseconds>(Clock::now() - t0).count();
      max_ms_.store(std::max(max_ms_.load(), ms));
      if (r.ok() && r->status == 200) {
        ok_++;
      } else {
        failed_++;
        std::lock_guard<std::mutex> l(mu_);
        if (first_error_.empty())
          first_error_ = r.ok()
                             ? "HTTP " + std::to_string(r->status) + ": " + r->body.substr(0, 200)
                             : r.status().ToString();
      }
      next += period;
      std::this_thread::sleep_until(next);
    }
  }

  std::atomic<bool> stop_{false};
  std::atomic<int64_t> ok_{0}, failed_{0}, max_ms_{0};
  std::mutex mu_;
  std::string first_error_;
  std::thread thread_;
};

class FailoverClusterTest : public testing::LocalClusterTest {
 protected:
  static void SetUpTestSuite() {
    if (!testing::HaveProgram("busybox") && access("/bin/busybox", X_OK) != 0) {
      skip_ = "busybox not installed (the static template needs it)";
      return;
    }
    devcluster::LocalClusterOptions o;
    o.nodes = 3;
    o.first_octet = 130;  // etcd 127.0.0.130, nodes .131-.133
    o.etcd_client_port = 23897;
    o.etcd_peer_port = 23907;
    o.api_port = 7588;
    o.proxy_port = kProxyPort;
    o.proxy_internal_port = 7582;
    o.replication_port = 7590;
    o.replication_interval_seconds = 1;
    o.lease_ttl_seconds = 3;
    o.reconcile_interval_ms = 500;
    o.datacenters = {"dc1", "dc1", "dc1"};
    if (std::getenv("HC_TEST_DEBUG") != nullptr) o.log_level = "debug";
    StartCluster(o);
  }

  // Creates an app with a domain, 1 s snapshots, and `replicas` replicas.
  static Roles Create(const std::string& name, int replicas = 1) {
    json app = CreateAndWait(
        1, name,
        {{"replicas", replicas}, {"snapshot_interval_seconds", 1}, {"domains", {name + ".test"}}});
    return RolesOf(app);
  }
  static std::string LiveDir(int k, const std::string& app) {
    auto s = OpenDirStore(cluster_->NodeDataDir(k) + "/volumes");
    auto p = s ? s->LivePath(app) : Result<std::string>(NotFound("no store"));
    return p.ok() ? *p + "/public" : "";
  }
  static std::string NewestHas(int k, const std::string& app, const std::string& path) {
    auto s = OpenDirStore(cluster_->NodeDataDir(k) + "/volumes");
    if (!s) return "";
    auto snaps = s->ListSnapshots(app);
    if (!snaps.ok() || snaps->empty()) return "";
    StringSink out;
    if (!s->ReadFile(app, snaps->back().name, path, out).ok()) return "";
    return out.out;
  }
  static void Write(const std::string& path, const std::string& data) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << data;
  }
  // GET through node k's proxy: status (0 = no answer) and body.
  static std::pair<int, std::string> Get(int k, const std::string& host, const std::string& path,
                                         int timeout_ms = 5000) {
    net::HttpClient c(
        net::HostPort{cluster_->NodeAddress(k), kProxyPort},
        {.connect_timeout = milliseconds(1000), .request_timeout = milliseconds(timeout_ms)});
    net::HttpRequest req;
    req.method = "GET";
    req.target = path;
    req.headers.Set("Host", host);
    auto r = c.Do(req, milliseconds(timeout_ms));
    if (!r.ok()) return {0, r.status().ToString()};
    return {r->status, r->body};
  }
  // hc_replication_sent_bytes_total of node k (every stream it sent).
  static uint64_t SentBytes(int k) {
    auto hp = net::ParseHttpUrl(cluster_->ApiUrl(k));
    net::HttpClient c(
        *hp, {.connect_timeout = milliseconds(1000), .request_timeout = milliseconds(5000)});
    auto r = c.Do("GET", "/metrics", "");
    if (!r.ok()) return 0;
    const std::string key = "\nhc_replication_sent_bytes_total ";
    size_t p = r->body.find(key);
    return p == std::string::npos ? 0
                                  : std::strtoull(r->body.c_str() + p + key.size(), nullptr, 10);
  }

  static int OtherThan(std::initializer_list<int> taken) {
    for (int k = 1; k <= cluster_->nodes(); k++)
      if (std::find(taken.begin(), taken.end(), k) == taken.end()) return k;
    return 0;
  }
  static json WaitMove(const std::string& app, int timeout_ms) {
    json m;
    WaitFor(
        [&] {
          for (int k = 1; k <= cluster_->nodes(); k++) {
            if (!cluster_->NodeRunning(k)) continue;
            auto [st, j] = Call(k, "GET", "/v1/apps/" + app + "/move");
            if (st != 200) continue;
            m = j;
            std::string s = j.value("state", "");
            return s == "done" || s == "failed";
          }
          return false;
        },
        timeout_ms);
    return m;
  }
};

TEST_F(FailoverClusterTest, KillingThePrimaryFailsOverFencesItAndKeepsReplicatedWrites) {
  Roles r = Create("shop");
  ASSERT_GT(r.primary, 0);
  ASSERT_EQ(r.replicas.size(), 1u);
  int replica = r.replicas[0];
  int third = OtherThan({r.primary, replica});
  // Steady requests through the third node, and a write every 100 ms on
  // the primary (w<i>.txt), until well after the kill.
  std::string live = LiveDir(r.primary, "shop");
  ASSERT_FALSE(live.empty());
  Write(live + "/w0.txt", "write 0");
  ASSERT_TRUE(WaitFor([&] { return Get(third, "shop.test", "/w0.txt").first == 200; }, 10000));
  std::atomic<bool> stop_writing{false};
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 1; !stop_writing.load(); i++) {
      std::string path = live + "/w" + std::to_string(i) + ".txt";
      std::ofstream(path + ".tmp") << "write " << i;
      if (::rename((path + ".tmp").c_str(), path.c_str()) != 0) break;  // the volume is gone
      written.store(i);
      std::this_thread::sleep_for(milliseconds(100));
    }
  });
  Load load(cluster_->NodeAddress(third), "shop.test", "/w0.txt", 20);
  ASSERT_TRUE(
      WaitFor([&] { return NewestHas(replica, "shop", "public/w20.txt") == "write 20"; }, 20000))
      << Logs();
  json before = App("shop");
  uint16_t old_port = 0;
  for (const auto& s : before["status"])
    if (NodeOf(s.value("node", "")) == r.primary) old_port = s.value("port", uint16_t{0});
  ASSERT_TRUE(old_port != 0 && PortAccepts(old_port)) << before.dump(2);

  // The primary's machine dies: hcd is killed; its apps are left to the
  // supervisors' fence. What the replica held at that moment must survive.
  int replicated = 20;
  while (NewestHas(replica, "shop", "public/w" + std::to_string(replicated + 1) + ".txt") ==
         "write " + std::to_string(replicated + 1))
    replicated++;
  auto t0 = Clock::now();
  ASSERT_TRUE(cluster_->StopNode(r.primary, SIGKILL).ok());
  std::pair<int, std::string> got;
  ASSERT_TRUE(WaitFor(
      [&] {
        got = Get(third, "shop.test", "/w1.txt", 2000);
        return got.first == 200;
      },
      30000))
      << got.second << Logs();
  int64_t rto_ms = std::chrono::duration_cast<milliseconds>(Clock::now() - t0).count();
  std::this_thread::sleep_for(milliseconds(1000));
  load.Stop();
  stop_writing.store(true);
  writer.join();
  std::printf(
      "failover: first successful response %lld ms after kill -9; %d writes made, %d replicated "
      "before the kill; steady requests: %lld ok, %lld failed\n",
      static_cast<long long>(rto_ms), written.load(), replicated, static_cast<long long>(load.ok()),
      static_cast<long long>(load.failed()));
  EXPECT_GT(load.ok(), 20);
  // The proxies sent them again until the app ran on the replica: late, not failed.
  EXPECT_EQ(load.failed(), 0) << load.first_error();
  for (int i = 1; i <= replicated; i++)
    ASSERT_EQ(Get(third, "shop.test", "/w" + std::to_string(i) + ".txt").second,
              "write " + std::to_string(i))
        << "write " << i << " was replicated before the kill and is lost";
  json after = App("shop", r.primary);
  Roles now = RolesOf(after);
  EXPECT_EQ(now.primary, replica) << after.dump(2);
  EXPECT_EQ(now.epoch, r.epoch + 1);
  EXPECT_NE(std::find(now.replicas.begin(), now.replicas.end(), r.primary), now.replicas.end())
      << "the dead primary stays listed, to come back as a replica";
  // Self-fencing: the old primary's app is gone although nobody stopped it.
  EXPECT_FALSE(PortAccepts(old_port)) << "the dead node's app still accepts connections";
  EXPECT_TRUE(HasEvent("shop", "failover"));

  // The node comes back: a replica now, and it receives again.
  ASSERT_TRUE(cluster_->StartNode(r.primary).ok());
  ASSERT_TRUE(WaitNodes(3, 20000));
  Write(LiveDir(replica, "shop") + "/after.txt", "after failover");
  EXPECT_TRUE(WaitFor(
      [&] { return NewestHas(r.primary, "shop", "public/after.txt") == "after failover"; }, 30000))
      << Logs();
  EXPECT_EQ(Get(r.primary, "shop.test", "/after.txt").second, "after failover");
  // What it wrote after its last replicated snapshot (the writer went on
  // after the kill) is kept there as a diverged branch, and reported.
  EXPECT_TRUE(WaitFor([&] { return HasEvent("shop", "diverged"); }, 10000)) << Logs();
  auto [st, rep] = Call(r.primary, "GET", "/v1/apps/shop/replication?local=1");
  ASSERT_EQ(st, 200);
  ASSERT_TRUE(rep["diverged_branches"].is_array() && !rep["diverged_branches"].empty())
      << rep.dump(2);
  std::string branch = rep["diverged_branches"].back().get<std::string>();
  auto store = OpenDirStore(cluster_->NodeDataDir(r.primary) + "/volumes");
  ASSERT_TRUE(store);
  auto snaps = store->ListSnapshots(branch);
  ASSERT_TRUE(snaps.ok() && !snaps->empty()) << branch;
  StringSink last;
  const std::string last_file = "public/w" + std::to_string(written.load()) + ".txt";
  EXPECT_TRUE(store->ReadFile(branch, snaps->back().name, last_file, last).ok())
      << last_file << " is not in " << branch << "@" << snaps->back().name;
  EXPECT_EQ(last.out, "write " + std::to_string(written.load()));
}

TEST_F(FailoverClusterTest, FailoverCompletesWhenTheLeaderIsKilledToo) {
  Roles r = Create("wiki", 2);
  ASSERT_EQ(r.replicas.size(), 2u);
  json v = ClusterView();
  int leader = NodeOf(v.value("leader", ""));
  ASSERT_GT(leader, 0);
  int second = leader == r.primary ? r.replicas[0] : leader;
  int survivor = OtherThan({r.primary, second});
  ASSERT_TRUE(cluster_->StopNode(r.primary, SIGKILL).ok());
  ASSERT_TRUE(cluster_->StopNode(second, SIGKILL).ok());
  std::pair<int, std::string> got;
  EXPECT_TRUE(WaitFor(
      [&] {
        got = Get(survivor, "wiki.test", "/", 2000);
        return got.first == 200;
      },
      30000))
      << got.second << Logs();
  Roles now = RolesOf(App("wiki"));
  EXPECT_EQ(now.primary, survivor);
  EXPECT_GT(now.epoch, r.epoch);
}

TEST_F(FailoverClusterTest, LiveMigrationUnderLoadFailsNoRequest) {
  Roles r = Create("blog");
  int target = OtherThan({r.primary, r.replicas[0]});
  int client = r.replicas[0];  // requests enter at a node that is neither end
  Write(LiveDir(r.primary, "blog") + "/page.html", "hello");
  // 4 MiB that a full resend would carry again.
  Write(LiveDir(r.primary, "blog") + "/big.bin", std::string(4 << 20, 'b'));
  ASSERT_TRUE(WaitFor([&] { return Get(client, "blog.test", "/page.html").first == 200; }, 10000));
  ASSERT_TRUE(
      WaitFor([&] { return !NewestHas(r.replicas[0], "blog", "public/big.bin").empty(); }, 30000));
  Load load(cluster_->NodeAddress(client), "blog.test", "/page.html", 50);
  std::this_thread::sleep_for(milliseconds(1000));
  const uint64_t target_sent_before = SentBytes(target);
  auto [st, m] =
      Call(1, "POST", "/v1/apps/blog/move", json{{"node", "node" + std::to_string(target)}}.dump());
  ASSERT_EQ(st, 202) << m.dump();
  json end = WaitMove("blog", 120000);
  std::this_thread::sleep_for(milliseconds(1000));
  load.Stop();
  std::printf("move: %s; %lld requests ok, %lld failed, slowest %lld ms\n",
              end.value("message", "").c_str(), static_cast<long long>(load.ok()),
              static_cast<long long>(load.failed()), static_cast<long long>(load.max_ms()));
  ASSERT_EQ(end.value("state", ""), "done") << end.dump(2) << Logs();
  EXPECT_EQ(load.failed(), 0) << load.first_error();
  EXPECT_GT(load.ok(), 50);
  Roles now = RolesOf(App("blog"));
  EXPECT_EQ(now.primary, target);
  EXPECT_EQ(now.epoch, r.epoch + 1);
  EXPECT_NE(std::find(now.replicas.begin(), now.replicas.end(), r.primary), now.replicas.end())
      << "the source is a replica now";
  // Replication runs the other way now.
  Write(LiveDir(target, "blog") + "/moved.html", "written on the target");
  EXPECT_TRUE(WaitFor(
      [&] { return NewestHas(r.primary, "blog", "public/moved.html") == "written on the target"; },
      30000));
  // Incrementally: the source kept its copy, nothing was sent in full again.
  const uint64_t sent = SentBytes(target) - target_sent_before;
  std::printf("the target sent %llu bytes to the source after the move\n",
              static_cast<unsigned long long>(sent));
  EXPECT_LT(sent, 1u << 20) << "the source's copy was sent again in full";
  EXPECT_TRUE(HasEvent("blog", "move"));
  // A second move to where it runs is refused with a reason.
  auto [st2, m2] =
      Call(1, "POST", "/v1/apps/blog/move", json{{"node", "node" + std::to_string(target)}}.dump());
  EXPECT_EQ(st2, 400) << m2.dump();
  auto [st3, m3] = Call(1, "POST", "/v1/apps/blog/move", json{{"node", "nosuchnode"}}.dump());
  EXPECT_EQ(st3, 400) << m3.dump();
}

TEST_F(FailoverClusterTest, DrainMovesEveryPrimaryAwayAndUndrainTakesTheNodeBack) {
  std::vector<std::string> names;
  for (int i = 1; i <= 12; i++) names.push_back("d" + std::to_string(i));
  for (const auto& n : names) Create(n);
  Roles first = RolesOf(App("d1"));
  int node = first.primary;
  std::string id = "node" + std::to_string(node);
  auto [st, j] = Call(1, "POST", "/v1/nodes/" + id + "/drain");
  ASSERT_EQ(st, 200) << j.dump();
  EXPECT_TRUE(WaitFor(
      [&] {
        json v = ClusterView();
        if (!v.is_object()) return false;
        for (const auto& a : v["apps"]) {
          if (a["placement"].is_object() && a["placement"].value("primary", "") == id) return false;
          if (a.value("summary", "") != "running") return false;  // a move still starting it
        }
        return true;
      },
      120000))
      << Logs();
  for (const auto& n : names) {
    json a = App(n);
    EXPECT_EQ(a.value("summary", ""), "running") << a.dump(2);
    EXPECT_NE(RolesOf(a).primary, node);
    EXPECT_EQ(Get(OtherThan({node}), n + ".test", "/").first, 200) << n;
  }
  json v = ClusterView();
  bool drained = false;
  for (const auto& n : v["nodes"])
    if (n.value("id", "") == id) drained = n.value("drained", false);
  EXPECT_TRUE(drained);
  auto [st2, j2] = Call(1, "POST", "/v1/nodes/" + id + "/undrain");
  EXPECT_EQ(st2, 200) << j2.dump();
  for (const auto& n : names) Call(1, "DELETE", "/v1/apps/" + n);
}

TEST_F(FailoverClusterTest, AnEtcdRestartDuringAMigrationLeavesTheAppServing) {
  Roles r = Create("media");
  int target = OtherThan({r.primary, r.replicas[0]});
  std::string big = testing::RandomBytes(40 << 20, 7);
  Write(LiveDir(r.primary, "media") + "/big.bin", big);
  Write(LiveDir(r.primary, "media") + "/small.txt", "still here");
  auto [st, m] = Call(1, "POST", "/v1/apps/media/move",
                      json{{"node", "node" + std::to_string(target)}}.dump());
  ASSERT_EQ(st, 202) << m.dump();
  ASSERT_TRUE(WaitFor(
      [&] {
        auto [s, j] = Call(1, "GET", "/v1/apps/media/move");
        return s == 200 && j.value("state", "") != "pending";
      },
      30000));
  ASSERT_TRUE(cluster_->StopEtcd().ok());
  std::this_thread::sleep_for(milliseconds(1000));
  ASSERT_TRUE(cluster_->StartEtcd().ok());
  json end = WaitMove("media", 180000);
  std::string state = end.value("state", "");
  EXPECT_TRUE(state == "done" || state == "failed") << end.dump(2) << Logs();
  std::printf("move across an etcd restart: %s: %s\n", state.c_str(),
              end.value("message", "").c_str());
  std::pair<int, std::string> got;
  EXPECT_TRUE(WaitFor(
      [&] {
        got = Get(r.replicas[0], "media.test", "/small.txt", 2000);
        return got.first == 200;
      },
      60000))
      << got.second << Logs();
  EXPECT_EQ(got.second, "still here");
}

// A randomized soak, behind a flag: HC_SOAK_ROUNDS=N (default: skipped).
// Each round does one of: kill -9 of a random node (restarted after the
// failover), a live migration of a random app to a random node, or an etcd
// restart; a client keeps requesting every app through a node that is not
// touched. After every round every app must serve again within 15 s and
// run on exactly one node; requests must not fail during moves.
TEST_F(FailoverClusterTest, RandomizedSoak) {
  const char* env = std::getenv("HC_SOAK_ROUNDS");
  int rounds = env ? std::atoi(env) : 0;
  if (rounds <= 0) GTEST_SKIP() << "skipped: set HC_SOAK_ROUNDS=<rounds> to run the soak";
  std::vector<std::string> apps = {"s1", "s2", "s3", "s4"};
  for (const auto& a : apps) Create(a);
  uint64_t seed = env ? std::strtoull(env, nullptr, 10) * 7919 + 17 : 17;
  auto rnd = [&seed](int n) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((seed >> 33) % static_cast<uint64_t>(n));
  };
  int kills = 0, moves = 0, etcd_restarts = 0, move_failures = 0;
  int64_t failed_in_moves = 0;
  std::vector<double> recovery_ms;
  for (int round = 1; round <= rounds; round++) {
    int what = rnd(3);
    auto t0 = Clock::now();
    if (what == 0) {
      int victim = 1 + rnd(3);
      std::printf("round %d: kill -9 of node%d\n", round, victim);
      ASSERT_TRUE(cluster_->StopNode(victim, SIGKILL).ok());
      int client = victim % 3 + 1;
      for (const auto& a : apps) {
        std::pair<int, std::string> got;
        EXPECT_TRUE(WaitFor(
            [&] {
              got = Get(client, a + ".test", "/", 2000);
              return got.first == 200;
            },
            15000))
            << "round " << round << ": " << a << " does not serve after the kill" << Logs();
      }
      recovery_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      ASSERT_TRUE(cluster_->StartNode(victim).ok());
      ASSERT_TRUE(WaitNodes(3, 20000)) << Logs();
      kills++;
    } else if (what == 1) {
      const std::string& a = apps[rnd(static_cast<int>(apps.size()))];
      Roles r = RolesOf(App(a));
      int target = 1 + rnd(3);
      if (target == r.primary) target = target % 3 + 1;
      int client = 1;
      while (client == r.primary || client == target) client++;
      std::printf("round %d: move %s node%d -> node%d\n", round, a.c_str(), r.primary, target);
      Load load(cluster_->NodeAddress(client), a + ".test", "/", 50);
      auto [st, m] = Call(client, "POST", "/v1/apps/" + a + "/move",
                          json{{"node", "node" + std::to_string(target)}}.dump());
      json end = st == 202 ? WaitMove(a, 120000) : json();
      load.Stop();
      if (end.value("state", "") != "done") {
        move_failures++;
        std::printf("  not done: %s %s\n", m.dump().c_str(), end.dump().c_str());
      }
      failed_in_moves += load.failed();
      EXPECT_EQ(load.failed(), 0) << "round " << round << ": " << load.first_error();
      moves++;
    } else {
      std::printf("round %d: etcd restart\n", round);
      ASSERT_TRUE(cluster_->StopEtcd().ok());
      std::this_thread::sleep_for(milliseconds(200 + rnd(1500)));
      ASSERT_TRUE(cluster_->StartEtcd().ok());
      ASSERT_TRUE(WaitNodes(3, 20000)) << Logs();
      etcd_restarts++;
    }
    // Every app serves again and runs on exactly one node.
    for (const auto& a : apps) {
      EXPECT_TRUE(WaitFor(
          [&] {
            json j = App(a);
            return j.value("summary", "") == "running" &&
                   Get(1, a + ".test", "/", 2000).first == 200;
          },
          20000))
          << "round " << round << ": " << a << " is not running" << Logs();
      int copies = 0;
      json j = App(a);
      for (const auto& s : j["status"])
        if (s.value("role", "") == "primary" && s.value("ready", false)) copies++;
      EXPECT_LE(copies, 1) << "round " << round << ": " << a << " runs on two nodes: " << j.dump(2);
    }
  }
  std::sort(recovery_ms.begin(), recovery_ms.end());
  std::printf(
      "soak: %d rounds: %d kills (all apps serving again: median %.0f ms, max %.0f ms), "
      "%d moves (%d not done, %lld failed requests), %d etcd restarts\n",
      rounds, kills, recovery_ms.empty() ? 0.0 : recovery_ms[recovery_ms.size() / 2],
      recovery_ms.empty() ? 0.0 : recovery_ms.back(), moves, move_failures,
      static_cast<long long>(failed_in_moves), etcd_restarts);
}

}  // namespace
}  // namespace hc
