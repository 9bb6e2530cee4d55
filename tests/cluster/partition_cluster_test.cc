// A network partition under writes: a 3-node cluster in netns mode (each hcd
// in its own network namespace on a bridge, etcd on the bridge), an app that
// appends a CLOCK_REALTIME timestamp to a file in its volume every ~100 ms,
// and its primary's node cut off with PartitionNode. The isolated node's app
// must be fenced before the promoted replica writes its first line (at no
// moment do two nodes accept writes), and once the node is healed its writes
// that never reached the replica are kept as a diverged branch. The test
// reads the nodes' volumes from the root namespace (the data directories are
// on the shared filesystem). Needs root and `ip netns`; addresses
// 10.231.8.0/24, tag "pt" (docs/design.md, "Testing").
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cluster/local_cluster_test.h"
#include "storage/store.h"

namespace hc {
namespace {

using testing::json;
using testing::milliseconds;
using testing::NodeOf;
using testing::OpenDirStore;
using Clock = std::chrono::steady_clock;

constexpr char kTag[] = "pt";
constexpr char kSubnet[] = "10.231.8";
constexpr char kApp[] = "ledger";
constexpr char kFile[] = "ticks.txt";
// An HTTP server on $PORT for the readiness probe, and the writer: one line
// of CLOCK_REALTIME nanoseconds about every 100 ms.
constexpr char kCommand[] =
    "/bin/busybox httpd -f -p \"127.0.0.1:$PORT\" -h \"$APP_DIR\" & "
    "while :; do date +%s%N >>\"$APP_DIR/ticks.txt\"; sleep 0.1; done";

int64_t RealtimeNs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// The timestamps in the text, one a line (a partial last line is skipped).
std::vector<int64_t> Ticks(const std::string& text) {
  std::vector<int64_t> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() < 19 || line.find_first_not_of("0123456789") != std::string::npos) continue;
    out.push_back(std::stoll(line));
  }
  return out;
}

double Ms(int64_t ns) {
  return static_cast<double>(ns) / 1e6;
}

class PartitionClusterTest : public testing::LocalClusterTest {
 protected:
  static void SetUpTestSuite() {
    if (!devcluster::LocalCluster::NetnsSupported()) {
      skip_ = "needs root and ip netns";
      return;
    }
    if (access("/bin/busybox", X_OK) != 0) {
      skip_ = "busybox not installed (the app's probe server)";
      return;
    }
    devcluster::LocalClusterOptions o;
    o.nodes = 3;
    o.netns = true;
    o.netns_tag = kTag;
    o.netns_subnet = kSubnet;  // bridge and etcd .1, node k .(k+1)
    o.etcd_client_port = 23798;
    o.etcd_peer_port = 23808;
    o.api_port = 7489;
    o.proxy_internal_port = 7494;
    o.replication_port = 7491;
    o.replication_interval_seconds = 1;
    o.lease_ttl_seconds = 3;
    o.reconcile_interval_ms = 500;
    o.datacenters = {"dc1", "dc1", "dc1"};
    if (std::getenv("HC_TEST_DEBUG") != nullptr) o.log_level = "debug";
    StartCluster(o);
  }

  void TearDown() override {
    // A failed test must not leave a node cut off.
    if (!cluster_ || !skip_.empty()) return;
    for (int k = 1; k <= cluster_->nodes(); k++) EXPECT_TRUE(cluster_->HealNode(k).ok());
  }

  // The timestamps in node k's live copy of `volume`.
  static std::vector<int64_t> LiveTicks(int k, const std::string& volume) {
    auto s = OpenDirStore(cluster_->NodeDataDir(k) + "/volumes");
    if (!s) return {};
    auto p = s->LivePath(volume);
    if (!p.ok()) return {};
    auto t = ReadFileToString(*p + "/" + kFile);
    return t.ok() ? Ticks(*t) : std::vector<int64_t>{};
  }
  // The timestamps in the newest snapshot of `volume` on node k.
  static std::vector<int64_t> SnapshotTicks(int k, const std::string& volume) {
    auto s = OpenDirStore(cluster_->NodeDataDir(k) + "/volumes");
    if (!s) return {};
    auto snaps = s->ListSnapshots(volume);
    if (!snaps.ok() || snaps->empty()) return {};
    StringSink out;
    if (!s->ReadFile(volume, snaps->back().name, kFile, out).ok()) return {};
    return Ticks(out.out);
  }
  // The volumes named <app>-diverged-* on node k.
  static std::vector<std::string> DivergedVolumes(int k, const std::string& app) {
    std::vector<std::string> out;
    auto s = OpenDirStore(cluster_->NodeDataDir(k) + "/volumes");
    if (!s) return out;
    auto vols = s->ListVolumes();
    if (!vols.ok()) return out;
    for (const auto& v : *vols)
      if (v.name.starts_with(app + "-diverged-")) out.push_back(v.name);
    return out;
  }
};

TEST_F(PartitionClusterTest, IsolatedPrimaryIsFencedBeforeTheNewPrimaryWritesAndKeepsItsWrites) {
  json app = CreateAndWait(1, kApp,
                           {{"template", "command"},
                            {"command", kCommand},
                            {"replicas", 1},
                            {"snapshot_interval_seconds", 1}});
  Roles r = RolesOf(app);
  ASSERT_GT(r.primary, 0) << app.dump(2);
  ASSERT_EQ(r.replicas.size(), 1u) << app.dump(2);
  const int old = r.primary;
  const int replica = r.replicas[0];
  // The app writes, and its writes reach the replica.
  ASSERT_TRUE(WaitFor([&] { return SnapshotTicks(replica, kApp).size() >= 10; }, 30000))
      << "primary node" << old << " wrote " << LiveTicks(old, kApp).size() << " lines\n"
      << Logs();

  // The primary's node is cut off from etcd and from the other nodes.
  const int64_t cut_ns = RealtimeNs();
  const auto cut = Clock::now();
  ASSERT_TRUE(cluster_->PartitionNode(old).ok());

  // A replica is promoted, with the next epoch, and the app writes there.
  json after;
  Roles now;
  bool promoted = WaitFor(
      [&] {
        after = App(kApp, old);
        now = RolesOf(after);
        return now.primary > 0 && now.primary != old && now.epoch > r.epoch;
      },
      20000);
  double promoted_s = std::chrono::duration<double>(Clock::now() - cut).count();
  std::printf("promoted on node%d %.1f s after the partition\n", now.primary, promoted_s);
  ASSERT_TRUE(promoted) << after.dump(2) << Logs();
  EXPECT_LT(promoted_s, 10.0);
  EXPECT_EQ(now.primary, replica) << "the only other copy is the replica's";
  EXPECT_EQ(now.epoch, r.epoch + 1);
  EXPECT_NE(std::find(now.replicas.begin(), now.replicas.end(), old), now.replicas.end())
      << "the isolated primary stays listed, to come back as a replica";
  const int np = now.primary;

  // The new primary's own lines are those the old one never wrote: every
  // line the old primary wrote is in its own live file, which the fence
  // stopped growing (read from here; its node cannot be asked).
  std::vector<int64_t> iso, mine;
  int64_t new_first = 0, last_replicated = 0;
  auto split = [&] {
    iso = LiveTicks(old, kApp);
    std::set<int64_t> by_old(iso.begin(), iso.end());
    mine.clear();
    last_replicated = 0;
    for (int64_t t : LiveTicks(np, kApp)) {
      if (by_old.count(t))
        last_replicated = std::max(last_replicated, t);
      else
        mine.push_back(t);
    }
    new_first = mine.empty() ? 0 : *std::min_element(mine.begin(), mine.end());
    return mine.size() >= 10;
  };
  ASSERT_TRUE(WaitFor(split, 20000)) << "node" << np << " wrote " << mine.size() << " lines\n"
                                     << Logs();
  ASSERT_FALSE(iso.empty());
  ASSERT_GT(last_replicated, 0);
  const int64_t iso_last = iso.back();
  std::printf(
      "cut at %lld; isolated node%d's last write %+.0f ms after the cut, new primary node%d's "
      "first write %+.0f ms after the cut: gap %.0f ms (last replicated line %+.0f ms)\n",
      static_cast<long long>(cut_ns), old, Ms(iso_last - cut_ns), np, Ms(new_first - cut_ns),
      Ms(new_first - iso_last), Ms(last_replicated - cut_ns));
  // At no moment do two nodes accept writes.
  EXPECT_LT(iso_last, new_first) << "the isolated primary still wrote after the new one started";
  // The new primary continued from what the replica had received.
  for (int64_t t : mine) EXPECT_GT(t, last_replicated);
  // And the isolated node stays fenced.
  std::this_thread::sleep_for(milliseconds(1500));
  std::vector<int64_t> iso_later = LiveTicks(old, kApp);
  EXPECT_EQ(iso_later.size(), iso.size()) << "the fenced app wrote again while cut off";

  // What the isolated primary wrote after the replica's last snapshot.
  std::vector<int64_t> divergent;
  for (int64_t t : iso)
    if (t > last_replicated) divergent.push_back(t);
  std::printf("%zu lines written on node%d after the last replicated one\n", divergent.size(), old);
  ASSERT_FALSE(divergent.empty());

  // Healed: the node gets its lease back and is a replica now.
  const auto healed = Clock::now();
  ASSERT_TRUE(cluster_->HealNode(old).ok());
  ASSERT_TRUE(WaitNodes(3, 20000)) << Logs();
  std::printf("node%d back %.1f s after healing\n", old,
              std::chrono::duration<double>(Clock::now() - healed).count());
  Roles back = RolesOf(App(kApp));
  EXPECT_EQ(back.primary, np);
  EXPECT_NE(std::find(back.replicas.begin(), back.replicas.end(), old), back.replicas.end());

  // Its divergent writes are kept there as a branch volume.
  std::vector<std::string> branches;
  bool kept = WaitFor(
      [&] {
        branches = DivergedVolumes(old, kApp);
        return !branches.empty();
      },
      30000);
  std::printf("diverged branch on node%d %.1f s after healing: %s\n", old,
              std::chrono::duration<double>(Clock::now() - healed).count(),
              branches.empty() ? "(none)" : branches.back().c_str());
  ASSERT_TRUE(kept) << Logs();
  ASSERT_EQ(branches.size(), 1u) << json(branches).dump();
  const std::string branch = branches.back();
  std::vector<int64_t> in_branch = LiveTicks(old, branch);
  std::vector<int64_t> snap = SnapshotTicks(old, branch);
  std::set<int64_t> branch_lines(in_branch.begin(), in_branch.end());
  branch_lines.insert(snap.begin(), snap.end());
  size_t missing = 0;
  for (int64_t t : divergent) missing += branch_lines.count(t) == 0;
  EXPECT_EQ(missing, 0u) << "of " << divergent.size() << " divergent lines; the branch has "
                         << branch_lines.size() << " lines";
  // Nothing in it was written after the new primary took over (no restart
  // of the old primary's app once healed).
  if (!branch_lines.empty()) {
    EXPECT_LT(*branch_lines.rbegin(), new_first);
  }

  EXPECT_TRUE(WaitFor([&] { return HasEvent(kApp, "diverged"); }, 10000)) << Logs();
  auto [st, rep] = Call(old, "GET", std::string("/v1/apps/") + kApp + "/replication?local=1");
  ASSERT_EQ(st, 200);
  EXPECT_EQ(rep.value("role", ""), "replica") << rep.dump(2);
  bool listed = false;
  for (const auto& b : rep["diverged_branches"]) listed |= b.get<std::string>() == branch;
  EXPECT_TRUE(listed) << rep.dump(2);
  // The healed node receives the new primary's writes again.
  const int64_t newest_mine = mine.back();
  EXPECT_TRUE(WaitFor(
      [&] {
        std::vector<int64_t> s = SnapshotTicks(old, kApp);
        return std::find(s.begin(), s.end(), newest_mine) != s.end();
      },
      30000))
      << Logs();
  // And the new primary's file has no line of the divergent ones.
  std::vector<int64_t> np_now = LiveTicks(np, kApp);
  std::set<int64_t> np_set(np_now.begin(), np_now.end());
  for (int64_t t : divergent) EXPECT_EQ(np_set.count(t), 0u);
  Call(np, "DELETE", std::string("/v1/apps/") + kApp);
}

}  // namespace
}  // namespace hc
