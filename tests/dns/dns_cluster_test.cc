// The DNS server against the real thing: a real etcd and three real hcd
// (dc1, dc1, dc2) answering `dig` on 127.0.0.41-43, apps created through the
// REST API. Every case of the issue is asked of every node; then node death,
// drain, name-server takeover, and an answer-by-answer comparison with NSD
// serving the zone files `hc dns show` prints.
#include <gtest/gtest.h>
#include <signal.h>

#include <regex>
#include <set>
#include <sstream>

#include "cluster/etcd_client.h"
#include "cluster/local_cluster_test.h"
#include "cluster/state.h"
#include "common/subprocess.h"

namespace hc {
namespace {

using testing::Clock;
using testing::json;
using testing::milliseconds;

constexpr uint16_t kDnsPort = 10053;

struct Dig {
  bool ok = false;  // dig got an answer
  std::string status;
  std::set<std::string> flags;
  std::vector<std::string> answer, authority, additional;
  std::string text;
  // The addresses in the answer's A records.
  std::set<std::string> Addresses() const {
    std::set<std::string> out;
    for (const auto& r : answer) {
      std::istringstream in(r);
      std::string owner, ttl, cls, type, data;
      in >> owner >> ttl >> cls >> type >> data;
      if (type == "A" || type == "AAAA") out.insert(data);
    }
    return out;
  }
};

// dig @127.0.0.(40+k) -p 10053 +norec NAME TYPE [extra...]
Dig Ask(int k, const std::string& name, const std::string& type,
        const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv = {"dig",      "@127.0.0." + std::to_string(40 + k),
                                   "-p",       std::to_string(kDnsPort),
                                   "+norec",   "+time=2",
                                   "+tries=1", "+nocookie",
                                   name,       type};
  argv.insert(argv.end(), extra.begin(), extra.end());
  Dig d;
  auto r = RunCommand(argv);
  if (!r.ok()) return d;
  d.text = r->out;
  std::istringstream in(r->out);
  std::string line;
  std::vector<std::string>* section = nullptr;
  static const std::regex kStatus("status: ([A-Z]+)"), kFlags("flags:([a-z ]*);");
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, kStatus)) {
      d.status = m[1];
      d.ok = true;
    }
    if (line.starts_with(";; flags:") && std::regex_search(line, m, kFlags)) {
      std::istringstream f(m[1].str());
      std::string flag;
      while (f >> flag) d.flags.insert(flag);
    }
    if (line == ";; ANSWER SECTION:") section = &d.answer;
    if (line == ";; AUTHORITY SECTION:") section = &d.authority;
    if (line == ";; ADDITIONAL SECTION:") section = &d.additional;
    if (line.empty()) section = nullptr;
    if (section && !line.empty() && line[0] != ';') {
      std::istringstream words(line);
      std::string w, norm;
      while (words >> w) norm += (norm.empty() ? "" : " ") + w;
      section->push_back(norm);
    }
  }
  return d;
}

class DnsClusterTest : public testing::LocalClusterTest {
 protected:
  static void SetUpTestSuite() {
    if (!testing::HaveProgram("dig")) {
      skip_ = "dig not installed (scripts/install.sh installs bind9-dnsutils)";
      return;
    }
    devcluster::LocalClusterOptions o;
    o.nodes = 3;
    o.first_octet = 40;  // etcd 127.0.0.40, nodes .41-.43
    o.etcd_client_port = 23793;
    o.etcd_peer_port = 23803;
    o.api_port = 7482;
    o.lease_ttl_seconds = 3;
    o.reconcile_interval_ms = 1000;
    o.dns_zones = {"hosting.example.net", "customer.org"};
    o.dns_port = kDnsPort;
    StartCluster(o);
    if (!cluster_) return;
    json blog = {{"name", "blog"},
                 {"template", "static"},
                 {"replicas", 0},
                 {"domains", {"blog.customer.org", "*.shop.customer.org", "a.b.customer.org"}},
                 {"aliases", {"www.customer.org"}},
                 {"limits", {{"memory_bytes", 64 << 20}}}};
    auto [st, j] = Call(1, "POST", "/v1/apps", blog.dump());
    ASSERT_EQ(st, 201) << j.dump();
  }

  void SetUp() override {
    testing::LocalClusterTest::SetUp();
    if (IsSkipped()) return;
    // Every node knows the app's domain before a test asks.
    for (int k = 1; k <= 3; k++) {
      ASSERT_TRUE(
          WaitFor([k] { return Ask(k, "blog.customer.org", "A").Addresses().size() == 3; }, 15000))
          << "node " << k << ": " << Ask(k, "blog.customer.org", "A").text << Logs();
    }
  }

  static std::string Addr(int k) { return "127.0.0." + std::to_string(40 + k); }

  static json DnsInfo(int k) { return Call(k, "GET", "/v1/dns").second; }

  // The node (1..3) holding a name server name, from node k's /v1/dns.
  static int NameServerNode(int k, const std::string& name) {
    json j = DnsInfo(k);
    for (const auto& ns : j["name_servers"])
      if (ns.value("name", "") == name) return std::atoi(ns.value("node", "").c_str() + 4);
    return 0;
  }
};

TEST_F(DnsClusterTest, EveryNodeAnswersEveryCaseTheSame) {
  for (int k = 1; k <= 3; k++) {
    SCOPED_TRACE("node " + std::to_string(k));
    Dig a = Ask(k, "blog.customer.org", "A");
    EXPECT_EQ(a.status, "NOERROR");
    EXPECT_TRUE(a.flags.count("aa")) << a.text;
    EXPECT_FALSE(a.flags.count("ra")) << a.text;
    EXPECT_EQ(a.Addresses(), (std::set<std::string>{Addr(1), Addr(2), Addr(3)}));
    EXPECT_NE(a.answer[0].find(" 10 IN A "), std::string::npos) << "TTL 10: " << a.text;

    Dig nodata = Ask(k, "blog.customer.org", "AAAA");
    EXPECT_EQ(nodata.status, "NOERROR");
    EXPECT_TRUE(nodata.answer.empty());
    ASSERT_EQ(nodata.authority.size(), 1u) << nodata.text;
    EXPECT_NE(nodata.authority[0].find("customer.org. 10 IN SOA ns1.hosting.example.net."),
              std::string::npos)
        << nodata.text;

    Dig nx = Ask(k, "nothing.customer.org", "A");
    EXPECT_EQ(nx.status, "NXDOMAIN");
    EXPECT_TRUE(nx.flags.count("aa"));
    ASSERT_EQ(nx.authority.size(), 1u);
    EXPECT_NE(nx.authority[0].find("SOA"), std::string::npos);

    Dig ent = Ask(k, "b.customer.org", "A");  // above a.b.customer.org
    EXPECT_EQ(ent.status, "NOERROR") << ent.text;
    EXPECT_TRUE(ent.answer.empty());
    EXPECT_EQ(ent.authority.size(), 1u);

    Dig wild = Ask(k, "anything.shop.customer.org", "A");
    EXPECT_EQ(wild.Addresses().size(), 3u) << wild.text;
    EXPECT_NE(wild.answer[0].find("anything.shop.customer.org."), std::string::npos);

    Dig cname = Ask(k, "www.customer.org", "A");
    ASSERT_EQ(cname.answer.size(), 4u) << cname.text;
    EXPECT_EQ(cname.answer[0], "www.customer.org. 10 IN CNAME blog.customer.org.");

    Dig soa = Ask(k, "customer.org", "SOA");
    ASSERT_EQ(soa.answer.size(), 1u) << soa.text;
    Dig ns = Ask(k, "customer.org", "NS");
    EXPECT_EQ(ns.answer.size(), 2u) << ns.text;  // ns1 (dc1), ns2 (dc2)
    EXPECT_TRUE(ns.additional.empty()) << "glue only from the same zone: " << ns.text;
    Dig ns_own = Ask(k, "hosting.example.net", "NS");
    EXPECT_EQ(ns_own.additional.size(), 2u) << ns_own.text;  // glue: the two A records

    Dig refused = Ask(k, "example.com", "A");
    EXPECT_EQ(refused.status, "REFUSED");
    EXPECT_FALSE(refused.flags.count("aa"));

    Dig any = Ask(k, "blog.customer.org", "ANY");
    EXPECT_EQ(any.status, "NOERROR");
    EXPECT_EQ(any.answer.size(), 3u) << "one RRset (RFC 8482): " << any.text;

    Dig unknown = Ask(k, "blog.customer.org", "TYPE999");
    EXPECT_EQ(unknown.status, "NOERROR");
    EXPECT_TRUE(unknown.answer.empty());

    Dig badvers = Ask(k, "blog.customer.org", "A", {"+edns=1", "+noednsnegotiation"});
    EXPECT_EQ(badvers.status, "BADVERS") << badvers.text;

    Dig nsid = Ask(k, "blog.customer.org", "A", {"+noedns"});
    EXPECT_EQ(nsid.Addresses().size(), 3u);
    EXPECT_EQ(nsid.text.find("OPT PSEUDOSECTION"), std::string::npos) << nsid.text;

    Dig tcp = Ask(k, "blog.customer.org", "A", {"+tcp"});
    EXPECT_EQ(tcp.Addresses().size(), 3u) << tcp.text;

    Dig upper = Ask(k, "BLOG.Customer.Org", "A");
    EXPECT_NE(upper.answer[0].find("BLOG.Customer.Org."), std::string::npos) << upper.text;
  }
}

TEST_F(DnsClusterTest, SerialGrowsOnEveryChangeAndAllNodesAgree) {
  auto serial = [](int k) {
    Dig soa = Ask(k, "customer.org", "SOA");
    if (soa.answer.empty()) return int64_t{0};
    std::istringstream in(soa.answer[0]);
    std::string w;
    for (int i = 0; i < 6; i++) in >> w;  // owner ttl IN SOA mname rname
    int64_t s = 0;
    in >> s;
    return s;
  };
  int64_t before = serial(1);
  ASSERT_GT(before, 0);
  json app = {{"name", "extra"},
              {"template", "static"},
              {"replicas", 0},
              {"domains", {"extra.customer.org"}},
              {"limits", {{"memory_bytes", 64 << 20}}}};
  ASSERT_EQ(Call(2, "POST", "/v1/apps", app.dump()).first, 201);
  ASSERT_TRUE(
      WaitFor([] { return Ask(1, "extra.customer.org", "A").Addresses().size() == 3; }, 5000));
  int64_t after = serial(1);
  EXPECT_GT(after, before);
  EXPECT_TRUE(WaitFor([&] { return serial(2) == after && serial(3) == after; }, 5000))
      << serial(2) << " " << serial(3) << " vs " << after;
  ASSERT_EQ(Call(1, "DELETE", "/v1/apps/extra").first, 200);
  ASSERT_TRUE(WaitFor([] { return Ask(3, "extra.customer.org", "A").status == "NXDOMAIN"; }, 5000));
  EXPECT_GT(serial(3), after);
}

TEST_F(DnsClusterTest, DrainedNodeLeavesAnswersWithinASecond) {
  // Mark node 3 drained the way `hc node drain` will: its registration,
  // rewritten under its own lease.
  cluster::EtcdClient etcd({.endpoints = {cluster_->EtcdUrl()}});
  std::string key = "/hc/nodes/node3";
  auto kv = etcd.Get(key);
  ASSERT_TRUE(kv.ok() && !kv->kvs.empty());
  auto info = cluster::NodeInfoFromJson(kv->kvs[0].value);
  ASSERT_TRUE(info.ok());
  info->drained = true;
  auto t0 = Clock::now();
  ASSERT_TRUE(etcd.Put(key, cluster::ToJson(*info), kv->kvs[0].lease).ok());
  ASSERT_TRUE(WaitFor(
      [] { return Ask(1, "blog.customer.org", "A").Addresses().count(Addr(3)) == 0; }, 3000));
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  std::printf("drain -> address gone from node 1's answers after %.0f ms\n", ms);
  EXPECT_LT(ms, 1500);
  info->drained = false;
  ASSERT_TRUE(etcd.Put(key, cluster::ToJson(*info), kv->kvs[0].lease).ok());
  EXPECT_TRUE(WaitFor(
      [] { return Ask(1, "blog.customer.org", "A").Addresses().count(Addr(3)) == 1; }, 3000));
}

TEST_F(DnsClusterTest, DeadNodeDisappearsAndItsNameServerNameMovesWithinTheDc) {
  int ns1 = NameServerNode(1, "ns1.hosting.example.net");
  ASSERT_TRUE(ns1 == 1 || ns1 == 2) << DnsInfo(1).dump(2);  // ns1 lives in dc1
  int other = ns1 == 1 ? 2 : 1;
  int asker = 3;
  EXPECT_EQ(Ask(asker, "ns1.hosting.example.net", "A").Addresses(),
            std::set<std::string>{Addr(ns1)});
  auto t0 = Clock::now();
  ASSERT_TRUE(cluster_->StopNode(ns1, SIGKILL).ok());
  ASSERT_TRUE(WaitFor(
      [&] { return Ask(asker, "blog.customer.org", "A").Addresses().count(Addr(ns1)) == 0; },
      10000))
      << Logs();
  double gone_s = std::chrono::duration<double>(Clock::now() - t0).count();
  Dig ns = Ask(asker, "ns1.hosting.example.net", "A");
  EXPECT_EQ(ns.Addresses(), std::set<std::string>{Addr(other)}) << ns.text;
  std::printf(
      "kill -9 of node %d -> its address gone and ns1 moved to node %d after %.1f s "
      "(lease TTL 3 s)\n",
      ns1, other, gone_s);
  EXPECT_EQ(Ask(asker, "blog.customer.org", "A").Addresses().size(), 2u);
  // It comes back: its address is served again.
  ASSERT_TRUE(cluster_->StartNode(ns1).ok());
  EXPECT_TRUE(WaitFor(
      [&] { return Ask(asker, "blog.customer.org", "A").Addresses().count(Addr(ns1)) == 1; },
      15000));
}

TEST_F(DnsClusterTest, AnswersMatchNsdServingTheZoneHcDnsShowPrints) {
  if (!testing::HaveProgram("nsd") && access("/usr/sbin/nsd", X_OK) != 0)
    GTEST_SKIP() << "skipped: nsd not installed (scripts/install.sh installs it)";
  std::string dir = cluster_->options().base_dir;
  std::vector<std::string> argv = {
      "python3",       std::string(HC_SOURCE_DIR) + "/tests/dns/compare_with_nsd.py",
      "--ours",        Addr(1) + ":" + std::to_string(kDnsPort),
      "--nsd-address", "127.0.0.48",
      "--nsd-port",    std::to_string(kDnsPort),
      "--allow",       "any",
      "ede",           "--work",
      dir + "/nsd"};
  for (const std::string zone : {"hosting.example.net", "customer.org"}) {
    auto r = RunCommand({HC_HC_PATH, "dns", "show", "--zone", zone, "--api", cluster_->ApiUrl(1)});
    ASSERT_TRUE(r.ok() && r->ok()) << (r.ok() ? r->err : r.status().ToString());
    std::string path = dir + "/" + zone + ".zone";
    ASSERT_TRUE(WriteFileAtomic(path, r->out, false).ok());
    argv.push_back("--zone-file");
    argv.push_back(path);
  }
  auto r = RunCommand(argv);
  ASSERT_TRUE(r.ok());
  std::printf("%s", r->out.c_str());
  EXPECT_EQ(r->exit_code, 0) << r->out << r->err;
}

}  // namespace
}  // namespace hc
