// Continuous replication in a real cluster: etcd + three real hcd on
// 127.0.0.120-123, apps created through the REST API, volumes looked at
// through the nodes' own `dir` stores (opened by this test process; the store
// locks across processes), the replication channel reached with the nodes'
// own certificates and with a foreign one.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>

#include "cluster/local_cluster_test.h"
#include "common/subprocess.h"
#include "pki/cert.h"
#include "proxy/tls.h"
#include "replication/channel.h"
#include "storage/store.h"

namespace hc {
namespace {

using testing::json;
using namespace std::chrono_literals;

constexpr uint16_t kReplicationPort = 7490;

int NodeOf(const std::string& id) {
  return std::atoi(id.c_str() + 4);
}

std::unique_ptr<storage::Store> OpenDirStore(const std::string& root) {
  auto s = storage::OpenStore({.backend = "dir", .root = root});
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(*s) : nullptr;
}

using ::hc::testing::RandomBytes;

// The content of `path` in the newest snapshot of `app` on `store`, or "".
std::string NewestContent(storage::Store& store, const std::string& app, const std::string& path) {
  auto snaps = store.ListSnapshots(app);
  if (!snaps.ok() || snaps->empty()) return "";
  StringSink out;
  if (!store.ReadFile(app, snaps->back().name, path, out).ok()) return "";
  return out.out;
}

class ReplicationClusterTest : public testing::LocalClusterTest {
 protected:
  static void SetUpTestSuite() {
    // Every node flips one byte of the first stream it sends (a test hook):
    // those transfers must be rejected by the replica and retried.
    setenv("HC_TEST_CORRUPT_NEXT_TRANSFER", "1", 1);
    devcluster::LocalClusterOptions o;
    o.nodes = 3;
    o.first_octet = 120;  // etcd 127.0.0.120, nodes .121-.123
    o.etcd_client_port = 23797;
    o.etcd_peer_port = 23807;
    o.api_port = 7488;
    o.replication_port = kReplicationPort;
    o.replication_interval_seconds = 1;
    o.lease_ttl_seconds = 3;
    o.reconcile_interval_ms = 500;
    if (std::getenv("HC_TEST_DEBUG") != nullptr) o.log_level = "debug";
    StartCluster(o);
    unsetenv("HC_TEST_CORRUPT_NEXT_TRANSFER");
  }

 public:
  static std::string NodeDirOf(int k) { return cluster_->NodeDataDir(k); }

 protected:
  static std::string NodeDir(int k) { return cluster_->NodeDataDir(k); }
  static std::unique_ptr<storage::Store> StoreOf(int k) {
    return OpenDirStore(NodeDir(k) + "/volumes");
  }

  struct Roles {
    int primary = 0, replica = 0;
  };
  // Creates app `name` with one replica and a 1 s interval; returns where it is.
  Roles Create(const std::string& name, const json& extra = json::object()) {
    json body = {{"replicas", 1}, {"snapshot_interval_seconds", 1}};
    body.update(extra);
    json app = CreateAndWait(1, name, body);
    Roles r;
    r.primary = NodeOf(app["placement"].value("primary", "node0"));
    if (!app["placement"]["replicas"].empty())
      r.replica = NodeOf(app["placement"]["replicas"][0].get<std::string>());
    EXPECT_GT(r.primary, 0);
    EXPECT_GT(r.replica, 0) << app.dump(2);
    return r;
  }

  std::string Live(int k, const std::string& app) {
    auto s = StoreOf(k);
    auto p = s->LivePath(app);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return p.ok() ? *p : "";
  }

  static void Write(const std::string& path, const std::string& data) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << data;
  }

  // Waits until `path` in the replica's newest snapshot holds `want`.
  bool WaitReplica(int k, const std::string& app, const std::string& path, const std::string& want,
                   int timeout_ms) {
    return WaitFor(
        [&] {
          auto s = StoreOf(k);
          return s && NewestContent(*s, app, path) == want;
        },
        timeout_ms);
  }

  static std::string Metrics(int k) {
    auto r = RunCommand({"curl", "-s", "--max-time", "5", cluster_->ApiUrl(k) + "/metrics"});
    return r.ok() ? r->out : "";
  }

  static proxy::TlsClientIdentity IdentityOf(int k) {
    std::string dir = NodeDir(k) + "/pki/";
    return {*ReadFileToString(dir + "ca.crt"), *ReadFileToString(dir + "node.crt"),
            *ReadFileToString(dir + "node.key")};
  }

  // A Push to node `to`'s replication port through a tunnel with `id`.
  static Result<replication::PushResult> PushAs(const proxy::TlsClientIdentity& id, int to,
                                                storage::Store& from,
                                                const replication::PushOptions& po) {
    proxy::TlsTunnels tunnels(id, "127.0.0.1");
    HC_RETURN_IF_ERROR(tunnels.Start());
    HC_ASSIGN_OR_RETURN(
        auto local,
        tunnels.Open({.remote = net::HostPort{cluster_->NodeAddress(to), kReplicationPort},
                      .expect_server_name = "node" + std::to_string(to),
                      .alpn = std::string(replication::kReplicationAlpn)}));
    HC_ASSIGN_OR_RETURN(auto fd, net::ConnectTcp(local, net::DeadlineIn(2s)));
    auto r = replication::Push(from, fd.get(), po);
    fd.Reset();
    tunnels.Stop();
    return r;
  }
};

TEST_F(ReplicationClusterTest, AWriteOnThePrimaryAppearsInTheReplicasNewestSnapshot) {
  Roles r = Create("blog");
  // The first stream each node sent was damaged on purpose (the hook): the
  // replica rejected it and the retry landed. Later writes follow quickly.
  for (int round = 0; round < 3; round++) {
    std::string text = "post " + std::to_string(round) + "\n";
    auto start = testing::Clock::now();
    Write(Live(r.primary, "blog") + "/post.txt", text);
    ASSERT_TRUE(WaitReplica(r.replica, "blog", "post.txt", text, 20000)) << Logs();
    auto took =
        std::chrono::duration_cast<std::chrono::milliseconds>(testing::Clock::now() - start);
    std::printf("write -> replica snapshot: %lld ms\n", static_cast<long long>(took.count()));
    if (round > 0) {
      EXPECT_LT(took.count(), 5000) << "interval 1 s + transfer";
    }
  }
  // The replica's copy is read-only and byte-identical to the primary's newest.
  auto rs = StoreOf(r.replica);
  auto vol = rs->GetVolume("blog");
  ASSERT_TRUE(vol.ok());
  EXPECT_TRUE(vol->read_only);
  auto ps = StoreOf(r.primary);
  EXPECT_EQ(NewestContent(*ps, "blog", "index.html"), NewestContent(*rs, "blog", "index.html"));
  // The damaged first transfer was refused by a replica, and counted.
  std::string rejected;
  for (int k = 1; k <= 3; k++) {
    std::string m = Metrics(k);
    if (m.find("hc_replication_receive_failures_total 0") == std::string::npos) rejected += "x";
  }
  EXPECT_FALSE(rejected.empty()) << "no node saw the damaged stream";
}

TEST_F(ReplicationClusterTest, ACrashLoopingAppIsStillReplicated) {
  // The app exits at once and is restarted with back-off: mostly not
  // running, so it cannot be frozen; its data is snapshotted all the same.
  json body = {{"name", "crashy"},
               {"template", "command"},
               {"command", "exit 1"},
               {"replicas", 1},
               {"snapshot_interval_seconds", 1},
               {"limits", {{"memory_bytes", 64 << 20}}}};
  auto [st, created] = Call(1, "POST", "/v1/apps", body.dump());
  ASSERT_EQ(st, 201) << created.dump();
  json app;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto [s, a] = Call(1, "GET", "/v1/apps/crashy");
        app = a;
        return s == 200 && !a["placement"]["replicas"].empty() &&
               a.value("summary", "") == "crash-looping";
      },
      30000))
      << app.dump(2);
  int primary = NodeOf(app["placement"].value("primary", "node0"));
  int replica = NodeOf(app["placement"]["replicas"][0].get<std::string>());
  Write(Live(primary, "crashy") + "/data.txt", "kept while crashing");
  EXPECT_TRUE(WaitReplica(replica, "crashy", "data.txt", "kept while crashing", 20000)) << Logs();
  auto [ds, deleted] = Call(1, "DELETE", "/v1/apps/crashy");
  EXPECT_EQ(ds, 200) << deleted.dump();
}

TEST_F(ReplicationClusterTest, LagIsVisibleInTheApiHcAppShowAndMetrics) {
  Roles r = Create("shop");
  Write(Live(r.primary, "shop") + "/order.txt", "order 1\n");
  ASSERT_TRUE(WaitReplica(r.replica, "shop", "order.txt", "order 1\n", 20000)) << Logs();
  // Asked on a node that is not the primary: the API asks the primary.
  int asked = r.replica;
  json rep;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto [st, j] = Call(asked, "GET", "/v1/apps/shop/replication");
        rep = j;
        return st == 200 && j.value("role", "") == "primary" && j["replicas"].size() == 1 &&
               j["replicas"][0].value("state", "") == "in_sync";
      },
      10000))
      << rep.dump(2);
  const json& row = rep["replicas"][0];
  EXPECT_EQ(row.value("replica", ""), "node" + std::to_string(r.replica));
  EXPECT_FALSE(row.value("newest_snapshot", "").empty());
  EXPECT_EQ(row.value("newest_snapshot", ""), rep["newest_snapshot"].value("id", "?"));
  EXPECT_LT(row.value("lag_seconds", 99.0), 5.0);
  EXPECT_TRUE(row.contains("rpo_seconds"));
  EXPECT_TRUE(rep.contains("asked_node"));  // the replica's own view rides along
  // hc app show prints the replica row.
  auto show = RunCommand({HC_HC_PATH, "app", "show", "shop", "--api", cluster_->ApiUrl(asked)});
  ASSERT_TRUE(show.ok());
  EXPECT_NE(show->out.find("replication (from node"), std::string::npos) << show->out;
  EXPECT_NE(show->out.find("in_sync"), std::string::npos) << show->out;
  // The primary's /metrics has the app's lag and state.
  std::string m = Metrics(r.primary);
  EXPECT_NE(m.find("hc_replication_lag_seconds{app=\"shop\",replica=\"node" +
                   std::to_string(r.replica) + "\"}"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("hc_replication_rpo_seconds{app=\"shop\""), std::string::npos);
  EXPECT_NE(m.find("hc_replication_snapshots_total"), std::string::npos);
}

TEST_F(ReplicationClusterTest, OnlyTheCurrentPrimaryWithAClusterCertificateMaySend) {
  Roles r = Create("mail");
  Write(Live(r.primary, "mail") + "/box.txt", "inbox\n");
  ASSERT_TRUE(WaitReplica(r.replica, "mail", "box.txt", "inbox\n", 20000)) << Logs();
  auto [st, app] = Call(1, "GET", "/v1/apps/mail");
  ASSERT_EQ(st, 200);
  uint64_t epoch = app["placement"].value("epoch", uint64_t{0});
  // A scratch store with a snapshot to send.
  char tmpl[] = "/tmp/hc-repl-src-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  auto src = storage::OpenStore({.backend = "dir", .root = tmpl, .sync = false});
  ASSERT_TRUE(src.ok());
  ASSERT_TRUE((*src)->CreateVolume("mail").ok());
  auto snap = (*src)->Snapshot("mail", "x", {});
  ASSERT_TRUE(snap.ok());
  replication::PushOptions po;
  po.app = "mail";
  po.target_id = snap->id;
  int third = 6 - r.primary - r.replica;
  // A node of the cluster that is not the primary: refused at the epoch check.
  po.sender_node = "node" + std::to_string(third);
  po.epoch = epoch;
  auto res = PushAs(IdentityOf(third), r.replica, **src, po);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.status().code(), Code::kPermissionDenied) << res.status().ToString();
  // The primary's own certificate, but a stale epoch: refused too.
  po.sender_node = "node" + std::to_string(r.primary);
  po.epoch = epoch + 7;
  res = PushAs(IdentityOf(r.primary), r.replica, **src, po);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.status().code(), Code::kPermissionDenied) << res.status().ToString();
  // A certificate from another CA: the TLS handshake itself fails.
  auto ca = pki::CreateCa("HybridCluster CA elsewhere");
  ASSERT_TRUE(ca.ok());
  auto key = pki::CreateKeyAndCsr("node" + std::to_string(r.primary));
  ASSERT_TRUE(key.ok());
  auto cert = pki::SignNodeCert(*ca, key->csr_pem, {.node_id = "node" + std::to_string(r.primary)});
  ASSERT_TRUE(cert.ok());
  proxy::TlsClientIdentity foreign{IdentityOf(1).ca_pem, *cert, key->key_pem};
  po.epoch = epoch;
  res = PushAs(foreign, r.replica, **src, po);
  EXPECT_FALSE(res.ok());
  EXPECT_NE(res.status().code(), Code::kPermissionDenied) << "must fail before any request";
  // And nothing reached the replica's copy.
  auto rs = StoreOf(r.replica);
  EXPECT_EQ(NewestContent(*rs, "mail", "box.txt"), "inbox\n");
  // A node with a foreign certificate cannot receive either: openssl as a
  // server with the foreign certificate is refused by a node's client
  // handshake (checked the same way by TlsTunnels: the server must be named
  // by the cluster CA), so a client with our CA must reject it too.
  (void)RemoveTree(tmpl);
}

TEST_F(ReplicationClusterTest, ADivergedReplicaIsKeptAsABranchAndReported) {
  Roles r = Create("wiki");
  Write(Live(r.primary, "wiki") + "/page.txt", "v1\n");
  ASSERT_TRUE(WaitReplica(r.replica, "wiki", "page.txt", "v1\n", 20000)) << Logs();
  // The replica's node goes down; someone writes on its copy and snapshots it
  // (as a fenced primary would have): the copy now has what the primary lacks.
  ASSERT_TRUE(cluster_->StopNode(r.replica).ok());
  {
    auto rs = StoreOf(r.replica);
    ASSERT_TRUE(rs->SetReadOnly("wiki", false).ok());
    Write(*rs->LivePath("wiki") + "/page.txt", "written while fenced\n");
    ASSERT_TRUE(rs->Snapshot("wiki", "fenced-1", {}).ok());
    ASSERT_TRUE(rs->SetReadOnly("wiki", true).ok());
  }
  Write(Live(r.primary, "wiki") + "/page.txt", "v2\n");
  ASSERT_TRUE(cluster_->StartNode(r.replica).ok());
  ASSERT_TRUE(WaitNodes(3, 15000));
  // The primary's stream lands; the fenced writes are kept as a branch.
  ASSERT_TRUE(WaitReplica(r.replica, "wiki", "page.txt", "v2\n", 30000)) << Logs();
  auto rs = StoreOf(r.replica);
  auto vols = rs->ListVolumes();
  ASSERT_TRUE(vols.ok());
  std::string branch;
  for (const auto& v : *vols)
    if (v.name.starts_with("wiki-diverged-")) branch = v.name;
  ASSERT_FALSE(branch.empty()) << Logs();
  EXPECT_EQ(NewestContent(*rs, branch, "page.txt"), "written while fenced\n");
  // Reported: the replica's API answer lists it.
  auto [st, rep] = Call(r.replica, "GET", "/v1/apps/wiki/replication");
  ASSERT_EQ(st, 200);
  ASSERT_TRUE(rep.contains("asked_node")) << rep.dump(2);
  EXPECT_EQ(rep["asked_node"]["diverged_branches"], json::array({branch})) << rep.dump(2);
  // And recorded as an event (hc events).
  ASSERT_TRUE(WaitFor(
      [&] {
        auto [s, ev] = Call(1, "GET", "/v1/events?app=wiki");
        return s == 200 && !ev["events"].empty() &&
               ev["events"].back().value("kind", "") == "diverged";
      },
      5000));
  auto out = RunCommand({HC_HC_PATH, "events", "--app", "wiki", "--api", cluster_->ApiUrl(2)});
  ASSERT_TRUE(out.ok());
  EXPECT_NE(out->out.find(branch), std::string::npos) << out->out;
}

// The chunk file on node k that holds `needle` (stored raw: incompressible data).
std::string ChunkHolding(int k, const std::string& needle) {
  std::string root = ReplicationClusterTest::NodeDirOf(k) + "/volumes/chunks";
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(root, ec)) {
    if (!e.is_regular_file()) continue;
    auto bytes = ReadFileToString(e.path().string());
    if (bytes.ok() && bytes->find(needle) != std::string::npos) return e.path().string();
  }
  return "";
}

void FlipByte(const std::string& path, size_t at) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(at));
  char c;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(at));
  f.put(static_cast<char>(c ^ 0x5a));
}

TEST_F(ReplicationClusterTest, DamagedChunksAreRepairedFromTheOtherCopy) {
  Roles r = Create("photos");
  std::string data = RandomBytes(600 << 10, 7);
  Write(Live(r.primary, "photos") + "/cat.jpg", data);
  ASSERT_TRUE(WaitReplica(r.replica, "photos", "cat.jpg", data, 20000)) << Logs();
  for (int damaged : {r.replica, r.primary}) {
    SCOPED_TRACE(damaged == r.replica ? "damage on the replica" : "damage on the primary");
    // Flip a byte in the stored chunk that holds the middle of the file.
    std::string needle = data.substr(300 << 10, 48);
    std::string chunk = ChunkHolding(damaged, needle);
    ASSERT_FALSE(chunk.empty());
    FlipByte(chunk, 4096);
    auto s = StoreOf(damaged);
    auto snaps = s->ListSnapshots("photos");
    ASSERT_TRUE(snaps.ok() && !snaps->empty());
    StringSink sink;
    EXPECT_EQ(s->ReadFile("photos", snaps->back().name, "cat.jpg", sink).code(), Code::kCorrupt);
    // `hc app scrub` asks every node that holds the app: the damaged copy is
    // found and repaired from the other.
    auto out = RunCommand({HC_HC_PATH, "app", "scrub", "photos", "--api", cluster_->ApiUrl(1)});
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(out->exit_code, 0) << out->out << out->err;
    EXPECT_NE(out->out.find("repaired"), std::string::npos) << out->out;
    EXPECT_EQ(NewestContent(*StoreOf(damaged), "photos", "cat.jpg"), data);
    auto v = StoreOf(damaged)->Verify("photos");
    ASSERT_TRUE(v.ok());
    EXPECT_TRUE(v->ok()) << (v->problems.empty() ? "" : v->problems[0]);
  }
  // Both repairs are events; the metrics count them.
  auto [st, ev] = Call(1, "GET", "/v1/events?app=photos");
  ASSERT_EQ(st, 200);
  int repairs = 0;
  for (const auto& e : ev["events"]) repairs += e.value("kind", "") == "repair";
  EXPECT_EQ(repairs, 2) << ev.dump(2);
  EXPECT_NE(Metrics(r.replica).find("hc_scrub_repaired_total 1"), std::string::npos);
}

TEST_F(ReplicationClusterTest, AKilledSenderResumesWhereTheStreamWasCut) {
  Roles r = Create("media", {{"snapshot_interval_seconds", 2}});
  // Enough data that the initial send takes a while.
  std::string big = RandomBytes(120 << 20, 42);
  // Written beside the volume and renamed in, so that one snapshot (and one
  // long transfer) holds all of it.
  std::string tmp = NodeDir(r.primary) + "/video.tmp";
  Write(tmp, big);
  ASSERT_EQ(::rename(tmp.c_str(), (Live(r.primary, "media") + "/video.bin").c_str()), 0);
  // A long transfer shows its progress (asked on the replica's node).
  json rep;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto [s, j] = Call(r.replica, "GET", "/v1/apps/media/replication");
        rep = j;
        if (s != 200 || !j["replicas"].is_array() || j["replicas"].empty()) return false;
        const json& row = j["replicas"][0];
        return row.value("state", "") == "transferring" && row.contains("transfer") &&
               row["transfer"].value("progress_bytes", uint64_t{0}) > 0 &&
               row["transfer"].value("expected_bytes", uint64_t{0}) >= (100u << 20);
      },
      60000))
      << rep.dump(2);
  // Cut it: kill -9 the primary's hcd once the replica has spooled some.
  std::string spool = NodeDir(r.replica) + "/replication-spool/media.part";
  bool started = WaitFor(
      [&] {
        struct stat sb;
        return ::stat(spool.c_str(), &sb) == 0 && sb.st_size > (8 << 20);
      },
      60000);
  ASSERT_TRUE(started) << Logs();
  ASSERT_TRUE(cluster_->StopNode(r.primary, SIGKILL).ok());
  ASSERT_TRUE(cluster_->StartNode(r.primary).ok());
  ASSERT_TRUE(WaitReplica(r.replica, "media", "video.bin", big, 120000)) << Logs();
  auto log = ReadFileToString(cluster_->NodeLog(r.replica));
  ASSERT_TRUE(log.ok());
  EXPECT_NE(log->find("resuming the transfer of 'media'"), std::string::npos) << Logs();
}

}  // namespace
}  // namespace hc
