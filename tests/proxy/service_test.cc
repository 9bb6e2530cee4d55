// RoutesFor (src/proxy/service.h): the pure function from the cluster state
// to one node's routing tables.
#include "proxy/service.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace hc::proxy {
namespace {

cluster::ClusterView View() {
  cluster::ClusterView v;
  for (int k = 1; k <= 2; ++k) {
    cluster::NodeInfo n;
    n.id = "node" + std::to_string(k);
    n.address = "10.0.0." + std::to_string(k);
    n.proxy_port = 7482;
    v.nodes[n.id] = n;
  }
  auto app = [&](const std::string& name, const std::string& tmpl, const std::string& node,
                 std::vector<std::string> domains) {
    cluster::AppDef a;
    a.name = name;
    a.template_name = tmpl;
    a.domains = std::move(domains);
    v.apps[name] = a;
    v.placements[name] = cluster::Placement{name, node, {}, 3, cluster::PlacementState::kRunning};
  };
  app("site", "static", "node1", {"site.example.com"});
  app("remote", "static", "node2", {"remote.example.com"});
  app("pg", "postgres", "node2", {});
  app("mail", "command", "node1", {"mail.example.com"});
  v.apps["mail"].protocol = "imap";
  app("tls", "command", "node2", {"secure.example.com"});
  v.apps["tls"].protocol = "https";
  v.apps["tls"].tcp_ports = {8443};
  app("zdup", "static", "node1", {"site.example.com"});
  v.apps["zdup"].tcp_ports = {8443};
  return v;
}

cluster::AppObserved Running(const std::string& app, uint16_t port, uint64_t epoch = 3) {
  cluster::AppObserved o;
  o.app = app;
  o.node = "node1";
  o.epoch = epoch;
  o.port = port;
  o.state = "running";
  return o;
}

TEST(RoutesForTest, LocalAppsGoToLoopbackAndOthersToTheirNodesChannel) {
  auto r = RoutesFor("node1", View(), {Running("site", 9001), Running("mail", 9002)},
                     {{"site", "CERT", "KEY", 0}});
  ASSERT_EQ(r.public_routes.size(), 2u);
  EXPECT_EQ(r.public_routes[0].app, "remote");
  EXPECT_TRUE(r.public_routes[0].hop);
  EXPECT_EQ(r.public_routes[0].backend.ToString(), "10.0.0.2:7482");
  EXPECT_EQ(r.public_routes[1].app, "site");
  EXPECT_FALSE(r.public_routes[1].hop);
  EXPECT_EQ(r.public_routes[1].backend.ToString(), "127.0.0.1:9001");
  ASSERT_EQ(r.internal_routes.size(), 1u) << "the node channel serves local apps only";
  EXPECT_EQ(r.internal_routes[0].app, "site");
  EXPECT_EQ(r.channel_nodes.at("10.0.0.2:7482"), "node2");
  ASSERT_EQ(r.certs.size(), 1u);
  EXPECT_EQ(r.certs[0].names, std::vector<std::string>{"site.example.com"});
}

TEST(RoutesForTest, StreamProtocolsFollowTheAppsProtocol) {
  auto r = RoutesFor("node1", View(),
                     {Running("site", 9001), Running("mail", 9002), Running("zdup", 9003)});
  std::map<std::string, StreamRouteSpec> by;
  for (const auto& s : r.streams) by[s.app] = s;
  EXPECT_EQ(by["pg"].databases, std::vector<std::string>{"pg"});
  EXPECT_TRUE(by["pg"].hop);
  EXPECT_EQ(by["mail"].imap_domains, std::vector<std::string>{"mail.example.com"});
  EXPECT_FALSE(by["mail"].hop);
  EXPECT_EQ(by["tls"].tls_passthrough, std::vector<std::string>{"secure.example.com"});
  EXPECT_EQ(by["tls"].tcp_ports, std::vector<uint16_t>{8443});
  EXPECT_EQ(by.count("site"), 0u) << "a plain http app has no stream route";
  // The https app gets no plain-HTTP route: its port speaks TLS.
  for (const auto& p : r.public_routes) EXPECT_NE(p.app, "tls");
  // Names and ports claimed twice: the first app keeps them, a warning says so.
  std::string warnings;
  for (const auto& w : r.warnings) warnings += w + "\n";
  EXPECT_NE(warnings.find("domain site.example.com of app zdup"), std::string::npos) << warnings;
  EXPECT_NE(warnings.find("tcp port 8443 of app zdup"), std::string::npos) << warnings;
}

TEST(RoutesForTest, AnAppNotRunningAtTheCurrentEpochIsHeldHere) {
  auto r = RoutesFor("node1", View(), {Running("site", 9001, /*epoch=*/2)});
  bool routed = false;
  for (const auto& p : r.public_routes) {
    if (p.app != "site") continue;
    routed = true;
    EXPECT_NE(p.backend.port, 9001) << "never to the port of an old epoch";
  }
  EXPECT_TRUE(routed) << "routed, so that its requests are held rather than refused";
  EXPECT_NE(std::find(r.starting.begin(), r.starting.end(), "site"), r.starting.end());
  EXPECT_TRUE(StreamRoutes::Build(r.streams).ok());
}

}  // namespace
}  // namespace hc::proxy
