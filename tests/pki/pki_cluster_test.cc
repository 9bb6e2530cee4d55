// The cluster PKI with a real etcd and real hcd processes (the launcher of
// `hc demo`): node 1 creates the CA, nodes 2 and 3 join with a token, and
// nodes that come without a valid token are refused with a message that
// says what to do. openssl checks the issued certificates and a mutual TLS
// handshake between two nodes' certificates.
//
// Addresses: etcd 127.0.0.100, nodes .101-.103, extra hcd processes
// .104-.109; etcd ports 23795/23805, API port 7486.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <ctime>
#include <nlohmann/json.hpp>

#include "cluster/cluster_store.h"
#include "cluster/etcd_client.h"
#include "cluster/local_cluster_test.h"
#include "common/fs.h"
#include "common/subprocess.h"
#include "pki/cert.h"
#include "pki/crypto.h"
#include "pki/join.h"

namespace hc {
namespace {

using json = nlohmann::json;
constexpr int kApiPort = 7486;

class PkiClusterTest : public testing::LocalClusterTest {
 protected:
  static void SetUpTestSuite() {
    devcluster::LocalClusterOptions o;
    o.nodes = 3;
    o.first_octet = 100;  // etcd 127.0.0.100, nodes .101-.103
    o.etcd_client_port = 23795;
    o.etcd_peer_port = 23805;
    o.api_port = kApiPort;
    o.runtime_backend = "process";
    StartCluster(o);
  }

  static std::string Pki(int k, const std::string& file) {
    return JoinPath(cluster_->NodeDataDir(k), "pki/" + file);
  }
  static std::string Read(const std::string& path) {
    auto t = ReadFileToString(path);
    return t.ok() ? *t : "";
  }

  struct Run {
    int exit_code = -1;
    std::string output;
    std::string data_dir;
  };

  // Runs a fresh hcd (its own data dir, address 127.0.0.<octet>) to
  // completion or for at most `seconds`; `extra` goes into its hcd.yaml.
  static Run RunFreshHcd(const std::string& name, int octet, const std::string& extra,
                         const std::vector<std::string>& flags = {}, int seconds = 40) {
    Run out;
    std::string base = cluster_->options().base_dir;
    out.data_dir = JoinPath(base, "extra-" + name);
    std::string addr = "127.0.0." + std::to_string(octet);
    std::string yaml = "node_id: " + name + "\ndata_dir: " + out.data_dir + "\naddress: " + addr +
                       "\napi_listen: " + addr + ":" + std::to_string(kApiPort) +
                       "\netcd_endpoints: [" + cluster_->EtcdUrl() +
                       "]\nproxy: off\nruntime_backend: process\nstorage_backend: dir\n"
                       "cgroup_parent: " +
                       cluster_->options().cgroup_prefix + "-" + name +
                       "\nmemory_capacity: 1G\ncpu_capacity: \"1\"\n" + extra;
    std::string config = JoinPath(base, "extra-" + name + ".yaml");
    EXPECT_TRUE(WriteFileAtomic(config, yaml, false).ok());
    std::vector<std::string> argv = {"timeout", std::to_string(seconds), HC_HCD_PATH, "--config",
                                     config};
    argv.insert(argv.end(), flags.begin(), flags.end());
    auto r = RunCommand(argv);
    if (!r.ok()) return out;
    out.exit_code = r->exit_code;
    out.output = r->out + r->err;
    return out;
  }

  static std::string NewToken(int k, int ttl = 600) {
    auto t = cluster_->CreateJoinToken(k, ttl);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return t.ok() ? *t : "";
  }

  static Digest CaFingerprint() { return *pki::CertFingerprint(Read(Pki(1, "ca.crt"))); }

  // A syntactically valid token: `id` and `seed` as given (or random).
  static std::string MadeUpToken(const std::string& id, const std::string& seed) {
    pki::JoinToken t = pki::NewJoinToken(CaFingerprint());
    if (!id.empty()) t.id = id;
    if (!seed.empty()) t.seed = seed;
    return pki::FormatJoinToken(t);
  }

  static void ExpectRefused(const Run& r, const std::string& words) {
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.exit_code, 124) << "hcd did not give up (timeout): " << r.output;
    EXPECT_NE(r.output.find(words), std::string::npos) << r.output;
    EXPECT_FALSE(PathExists(JoinPath(r.data_dir, "pki/node.crt"))) << r.output;
  }
};

TEST_F(PkiClusterTest, FirstNodeCreatesTheCaAndTheOthersJoinIt) {
  std::string ca = Read(Pki(1, "ca.crt"));
  ASSERT_FALSE(ca.empty());
  for (int k = 1; k <= 3; k++) {
    std::string id = "node" + std::to_string(k);
    EXPECT_EQ(Read(Pki(k, "ca.crt")), ca) << id;
    Status s = pki::VerifyNodeCert(ca, Read(Pki(k, "node.crt")), id);
    EXPECT_TRUE(s.ok()) << id << ": " << s.ToString();
    EXPECT_TRUE(pki::CheckKeyMatchesCert(Read(Pki(k, "node.crt")), Read(Pki(k, "node.key"))).ok());
    auto info = pki::InspectCert(Read(Pki(k, "node.crt")));
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->ip_addresses, std::vector<std::string>{cluster_->NodeAddress(k)});
    EXPECT_EQ(Read(Pki(k, "ca.key")), Read(Pki(1, "ca.key"))) << "every member holds the CA key";
    for (const char* secret : {"ca.key", "node.key"}) {
      struct stat st;
      ASSERT_EQ(stat(Pki(k, secret).c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 0777, 0600u) << Pki(k, secret);
    }
  }
  EXPECT_NE(Read(cluster_->NodeLog(1)).find("first node: created the cluster CA"),
            std::string::npos);
  EXPECT_NE(Read(cluster_->NodeLog(2)).find("joined through node"), std::string::npos);
  // etcd holds the same CA certificate, and never its key.
  cluster::EtcdClient etcd({.endpoints = {cluster_->EtcdUrl()}});
  cluster::ClusterStore cs(&etcd, "/hc/");
  auto in_etcd = cs.GetCaCert();
  ASSERT_TRUE(in_etcd.ok() && *in_etcd);
  EXPECT_EQ(**in_etcd, ca);
  auto all = etcd.GetPrefix("/");
  ASSERT_TRUE(all.ok());
  for (const auto& kv : all->kvs)
    EXPECT_EQ(kv.value.find("PRIVATE KEY"), std::string::npos) << kv.key;
  // The API shows the CA's fingerprint.
  json v = ClusterView();
  EXPECT_EQ(v["ca"].value("fingerprint_sha256", ""), pki::FingerprintText(CaFingerprint()));
}

TEST_F(PkiClusterTest, OpensslAcceptsTheCertificatesForMutualTls) {
  if (!testing::HaveProgram("openssl")) GTEST_SKIP() << "skipped: openssl not installed";
  for (int k = 1; k <= 3; k++) {
    auto r = RunCommand({"openssl", "verify", "-CAfile", Pki(1, "ca.crt"), "-purpose", "sslserver",
                         "-verify_hostname", "node" + std::to_string(k), "-verify_ip",
                         cluster_->NodeAddress(k), Pki(k, "node.crt")});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->exit_code, 0) << r->out << r->err;
  }
  // node2 serves, node3 connects; each demands the other's certificate.
  std::string dir = cluster_->options().base_dir;
  std::string server = "openssl s_server -quiet -naccept 1 -accept 127.0.0.104:17486 -cert " +
                       Pki(2, "node.crt") + " -key " + Pki(2, "node.key") + " -CAfile " +
                       Pki(1, "ca.crt") + " -Verify 1 -verify_return_error >" + dir +
                       "/s_server.log 2>&1 &\n";
  std::string client = "echo hello | openssl s_client -connect 127.0.0.104:17486 -brief -cert " +
                       Pki(3, "node.crt") + " -key " + Pki(3, "node.key") + " -CAfile " +
                       Pki(1, "ca.crt") + " -verify_return_error -verify_hostname node2";
  std::string script = "set -u\n" + server +
                       "pid=$!\nfor i in $(seq 50); do\n"
                       "  if " +
                       client + " >" + dir +
                       "/s_client.log 2>&1; then wait $pid; exit 0; fi\n"
                       "  grep -q 'onnect' " +
                       dir +
                       "/s_client.log || break\n"
                       "  sleep 0.1\ndone\nkill $pid 2>/dev/null; exit 1\n";
  auto r = RunCommand({"bash", "-c", script});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 0) << Read(dir + "/s_client.log") << Read(dir + "/s_server.log");
  EXPECT_NE(Read(dir + "/s_client.log").find("Verification: OK"), std::string::npos)
      << Read(dir + "/s_client.log");
  // A certificate from any other CA does not get through.
  auto foreign = RunCommand({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                             "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=node3", "-days",
                             "2", "-keyout", dir + "/foreign.key", "-out", dir + "/foreign.crt"});
  ASSERT_TRUE(foreign.ok() && foreign->ok()) << (foreign.ok() ? foreign->err : "");
  std::string bad_client =
      "echo hello | openssl s_client -connect 127.0.0.104:17486 -brief -cert " + dir +
      "/foreign.crt -key " + dir + "/foreign.key -CAfile " + Pki(1, "ca.crt") +
      " -verify_return_error";
  script = "set -u\n" + server + "pid=$!\nsleep 0.5\n" + bad_client + " >" + dir +
           "/s_client.log 2>&1\nrc=$?\nkill $pid 2>/dev/null; wait $pid 2>/dev/null\n"
           "grep -q 'Verification: OK' " +
           dir +
           "/s_client.log && "
           "! grep -q hello " +
           dir + "/s_server.log\n";
  r = RunCommand({"bash", "-c", script});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 0) << Read(dir + "/s_client.log") << Read(dir + "/s_server.log");
  EXPECT_EQ(Read(dir + "/s_server.log").find("hello"), std::string::npos)
      << Read(dir + "/s_server.log");
}

TEST_F(PkiClusterTest, NodeWithoutTokenIsRefusedWithWhatToDo) {
  Run r = RunFreshHcd("node5", 105, "");
  ExpectRefused(r, "must be admitted with a join token");
  EXPECT_NE(r.output.find("hc cluster join-token"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("hcd --join TOKEN"), std::string::npos) << r.output;
}

TEST_F(PkiClusterTest, ANewNodeJoinsWithATokenFromTheApi) {
  std::string token = NewToken(2);
  Run r = RunFreshHcd("node6", 106, "", {"--join", token, "--check-config"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // Join for real, in the background, then stop it.
  std::string dir = JoinPath(cluster_->options().base_dir, "extra-node6");
  auto pid = devcluster::SpawnDetached(
      {HC_HCD_PATH, "--config", JoinPath(cluster_->options().base_dir, "extra-node6.yaml"),
       "--join", token},
      JoinPath(cluster_->options().base_dir, "node6.log"));
  ASSERT_TRUE(pid.ok());
  bool joined = WaitFor(
      [&] {
        json v = ClusterView();
        return v.dump().find("\"node6\"") != std::string::npos;
      },
      20000);
  EXPECT_TRUE(joined) << Read(JoinPath(cluster_->options().base_dir, "node6.log"));
  EXPECT_TRUE(devcluster::StopPid(*pid, "hcd", 15, 10000).ok());
  EXPECT_TRUE(
      pki::VerifyNodeCert(Read(Pki(1, "ca.crt")), Read(dir + "/pki/node.crt"), "node6").ok());
  // The same token admits more than one node while it lives.
  Run again = RunFreshHcd("node7", 107, "join_token: " + token + "\n", {}, 8);
  // It joins and then runs until `timeout` stops it (exit 124 = still running).
  EXPECT_EQ(again.exit_code, 124) << again.output;
  EXPECT_TRUE(PathExists(JoinPath(again.data_dir, "pki/node.crt"))) << again.output;
}

TEST_F(PkiClusterTest, BadTokensAreRefused) {
  // Not a token at all: the config check says so.
  Run garbage = RunFreshHcd("node8", 108, "", {"--join", "hcjoin1.abc"});
  ExpectRefused(garbage, "parts separated by '.'");
  EXPECT_EQ(garbage.exit_code, 2) << garbage.output;
  // The right id with another secret (tampered): the proof does not verify.
  std::string good = NewToken(1);
  auto parsed = pki::ParseJoinToken(good);
  ASSERT_TRUE(parsed.ok());
  ExpectRefused(RunFreshHcd("node8", 108, "", {"--join", MadeUpToken(parsed->id, "")}),
                "was not signed with join token");
  // An id nobody issued.
  ExpectRefused(RunFreshHcd("node8", 108, "", {"--join", MadeUpToken("0123456789ab", "")}),
                "is unknown, revoked or expired");
  // Expired (etcd has not reaped it yet).
  cluster::EtcdClient etcd({.endpoints = {cluster_->EtcdUrl()}});
  cluster::ClusterStore cs(&etcd, "/hc/");
  pki::JoinToken old = pki::NewJoinToken(CaFingerprint());
  cluster::JoinTokenRecord rec{old.id, pki::Base64UrlEncode(pki::JoinTokenPublicKey(old)),
                               time(nullptr) - 3700, time(nullptr) - 100, "test"};
  ASSERT_TRUE(cs.CreateJoinToken(rec, 60).ok());
  ExpectRefused(RunFreshHcd("node8", 108, "", {"--join", pki::FormatJoinToken(old)}),
                "is unknown, revoked or expired");
  // Revoked through the API.
  std::string revoked = NewToken(1);
  auto rid = pki::ParseJoinToken(revoked);
  auto [st, body] = Call(1, "DELETE", "/v1/cluster/join-tokens/" + rid->id);
  EXPECT_EQ(st, 200) << body.dump();
  ExpectRefused(RunFreshHcd("node8", 108, "", {"--join", revoked}),
                "is unknown, revoked or expired");
  // A token of another cluster (its CA fingerprint differs).
  pki::JoinToken other = *parsed;
  other.ca_fingerprint[0] ^= 1;
  ExpectRefused(RunFreshHcd("node8", 108, "", {"--join", pki::FormatJoinToken(other)}),
                "the join token is for another cluster");
  // A valid token cannot take the id of a live member.
  ExpectRefused(RunFreshHcd("node2", 109, "", {"--join", good}), "is a live member already");
}

TEST_F(PkiClusterTest, AJoinedNodeRestartsWithoutItsToken) {
  ASSERT_TRUE(cluster_->StopNode(2).ok());
  std::string cert = Read(Pki(2, "node.crt"));
  ASSERT_TRUE(cluster_->StartNode(2).ok()) << Logs();
  EXPECT_TRUE(WaitNodes(3, 15000)) << Logs();
  EXPECT_EQ(Read(Pki(2, "node.crt")), cert) << "a valid certificate is kept";
}

TEST_F(PkiClusterTest, JoinTokenApiChecksItsInput) {
  auto [st, j] = Call(1, "POST", "/v1/cluster/join-tokens", R"({"ttl_seconds": 5})");
  EXPECT_EQ(st, 400) << j.dump();
  std::tie(st, j) = Call(1, "POST", "/v1/cluster/join-tokens", R"({"ttl": 600})");
  EXPECT_EQ(st, 400) << j.dump();
  std::tie(st, j) = Call(1, "POST", "/v1/cluster/join-tokens", "");
  EXPECT_EQ(st, 201) << j.dump();
  EXPECT_EQ(j.value("ttl_seconds", 0), 3600);
  std::tie(st, j) = Call(1, "POST", "/v1/cluster/join", "{}");
  EXPECT_EQ(st, 400) << j.dump();
  std::tie(st, j) = Call(1, "GET", "/v1/cluster/join");
  EXPECT_EQ(st, 405) << j.dump();
  std::tie(st, j) = Call(1, "DELETE", "/v1/cluster/join-tokens/0123456789ab");
  EXPECT_EQ(st, 404) << j.dump();
}

TEST_F(PkiClusterTest, HcPrintsAJoinTokenWithAHint) {
  auto r = RunCommand(
      {HC_HC_PATH, "cluster", "join-token", "--ttl", "10m", "--api", cluster_->ApiUrl(3)});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 0) << r->err;
  auto t = pki::ParseJoinToken(r->out);
  EXPECT_TRUE(t.ok()) << r->out;
  EXPECT_NE(r->err.find("hcd --join"), std::string::npos) << r->err;
  auto s = RunCommand({HC_HC_PATH, "cluster", "status", "--api", cluster_->ApiUrl(1)});
  ASSERT_TRUE(s.ok());
  EXPECT_NE(s->out.find("cluster CA: HybridCluster CA"), std::string::npos) << s->out;
  auto bad = RunCommand(
      {HC_HC_PATH, "cluster", "join-token", "--ttl", "soon", "--api", cluster_->ApiUrl(1)});
  ASSERT_TRUE(bad.ok());
  EXPECT_NE(bad->exit_code, 0);
  EXPECT_NE(bad->err.find("not a duration"), std::string::npos) << bad->err;
}

}  // namespace
}  // namespace hc
