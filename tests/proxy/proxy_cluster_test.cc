// The proxy in a real cluster: three real hcd (each with its public proxy
// and its internal one) and a real etcd; apps created through the REST API;
// the real curl asks every node for an app by its domain.
#include <gtest/gtest.h>

#include "cluster/local_cluster_test.h"
#include "common/subprocess.h"

namespace hc {
namespace {

using testing::json;

constexpr uint16_t kProxyPort = 10080;

// curl through node k's proxy with a Host header: "<status> <body>".
std::string Get(int k, const std::string& host, const std::string& path = "/") {
  auto r = RunCommand(
      {"curl", "-s", "--max-time", "5", "-H", "Host: " + host, "-w", "\n%{http_code}",
       "http://127.0.0.6" + std::to_string(k) + ":" + std::to_string(kProxyPort) + path});
  if (!r.ok()) return "curl failed";
  std::string out = r->out;
  size_t nl = out.rfind('\n');
  return out.substr(nl + 1) + " " + out.substr(0, nl);
}

class ProxyClusterTest : public testing::LocalClusterTest {
 protected:
  static void SetUpTestSuite() {
    if (!testing::HaveProgram("curl")) {
      skip_ = "curl not installed";
      return;
    }
    devcluster::LocalClusterOptions o;
    o.nodes = 3;
    o.first_octet = 60;  // etcd 127.0.0.60, nodes .61-.63
    o.etcd_client_port = 23794;
    o.etcd_peer_port = 23804;
    o.api_port = 7483;
    o.lease_ttl_seconds = 3;
    o.reconcile_interval_ms = 1000;
    o.proxy_port = kProxyPort;
    StartCluster(o);
  }
};

TEST_F(ProxyClusterTest, EveryNodeServesTheAppByItsDomainAndItsAlias) {
  json app = CreateAndWait(1, "site",
                           {{"replicas", 0},
                            {"domains", {"site.example.com", "*.shop.example.com"}},
                            {"aliases", {"www.site.example.com"}}});
  std::string primary = app["placement"].value("primary", "");
  ASSERT_FALSE(primary.empty()) << app.dump(2);
  // Every node, whether it runs the app or not, serves it by name.
  for (int k = 1; k <= 3; k++) {
    SCOPED_TRACE("through node " + std::to_string(k) + " (primary " + primary + ")");
    for (const char* host :
         {"site.example.com", "WWW.Site.Example.com:10080", "a.shop.example.com"}) {
      std::string r;
      ASSERT_TRUE(WaitFor([&] { return (r = Get(k, host)).starts_with("200 "); }, 5000)) << r;
      EXPECT_NE(r.find("<title>site</title>"), std::string::npos) << r;
    }
    EXPECT_TRUE(Get(k, "unknown.example.com").starts_with("404 "));
    // Each node's /metrics counts what its public proxy answered for the app.
    auto m = RunCommand({"curl", "-s", "--max-time", "5", cluster_->ApiUrl(k) + "/metrics"});
    ASSERT_TRUE(m.ok());
    EXPECT_NE(m->out.find("hc_proxy_requests_total{app=\"site\"} "), std::string::npos) << m->out;
    EXPECT_NE(m->out.find("hc_proxy_request_duration_seconds_count{app=\"site\"} "),
              std::string::npos);
  }
  // Deleted: every node stops serving it.
  ASSERT_EQ(Call(2, "DELETE", "/v1/apps/site").first, 200);
  for (int k = 1; k <= 3; k++)
    EXPECT_TRUE(WaitFor([&] { return Get(k, "site.example.com").starts_with("404 "); }, 5000))
        << Get(k, "site.example.com");
}

TEST_F(ProxyClusterTest, InternalProxyServesOnlyAppsOfItsOwnNode) {
  json app = CreateAndWait(2, "local", {{"replicas", 0}, {"domains", {"local.example.com"}}});
  int primary = std::atoi(app["placement"].value("primary", "node0").c_str() + 4);
  ASSERT_GE(primary, 1);
  for (int k = 1; k <= 3; k++) {
    // The internal port (7482) of each node: only the primary answers 200.
    std::string r;
    bool ok = WaitFor(
        [&] {
          auto c = RunCommand({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
                               "5", "-H", "Host: local.example.com",
                               "http://127.0.0.6" + std::to_string(k) + ":7482/"});
          r = c.ok() ? c->out : "curl failed";
          return r == (k == primary ? "200" : "404");
        },
        5000);
    EXPECT_TRUE(ok) << "node " << k << " (primary node" << primary << "): " << r;
  }
  ASSERT_EQ(Call(1, "DELETE", "/v1/apps/local").first, 200);
}

}  // namespace
}  // namespace hc
