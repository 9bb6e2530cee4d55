// Zones built from cluster state, and the answers given from them: unit
// tests plus a golden file of query -> response (tests/dns/golden/). Set
// HC_UPDATE_GOLDEN=1 to rewrite the golden file after a deliberate change,
// then read the diff.
#include "dns/answer.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "dns/render.h"
#include "dns/zone.h"
#include "golden.h"

namespace hc::dns {
namespace {

using testing::MakeQuery;
using testing::QuerySpec;
using testing::RenderResponse;

DnsSettings Settings() {
  DnsSettings s;
  s.zones = {"hosting.example.net", "customer.org"};
  return s;
}

std::vector<NodeEntry> Nodes() {
  return {
      {"n1", "dc1", {"127.0.0.11", "2001:db8::11"}, false},
      {"n2", "dc1", {"127.0.0.12"}, false},
      {"n3", "dc2", {"127.0.0.13"}, false},
      {"n4", "dc2", {"127.0.0.14"}, true},  // drained: in no answer
  };
}

std::vector<AppEntry> Apps() {
  return {
      {"blog", {"blog.customer.org"}, {"www.customer.org", "www.blog.customer.org"}},
      {"shop", {"shop.customer.org", "*.shop.customer.org"}, {}},
      {"deep", {"a.b.c.customer.org"}, {}},
      {"home", {"customer.org"}, {}},
      {"panel", {"panel.hosting.example.net"}, {"chain.customer.org"}},
      {"away", {"site.elsewhere.com"}, {"ext.customer.org"}},  // domain in no zone
  };
}

std::string Ask(const Answerer& a, const QuerySpec& q, bool tcp = false) {
  std::vector<uint8_t> packet = MakeQuery(q);
  std::vector<uint8_t> out(65535);
  size_t n = a.Respond(packet, tcp, out);
  if (n == 0) return "(no response)\n";
  return RenderResponse(std::span<const uint8_t>(out.data(), n));
}

TEST(DnsZone, NameServersSpreadOverDataCentresAndMoveWithinTheirDc) {
  ZoneSet z = BuildZones(Settings(), Nodes(), Apps(), 7);
  ASSERT_EQ(z.name_servers.size(), 2u);
  EXPECT_EQ(z.name_servers[0].name, "ns1.hosting.example.net");
  EXPECT_EQ(z.name_servers[0].datacenter, "dc1");
  EXPECT_EQ(z.name_servers[1].datacenter, "dc2");
  EXPECT_EQ(z.name_servers[1].node_id, "n3");  // n4 is drained

  // The dc1 name server dies: the other dc1 node takes the name over; ns2 stays.
  std::vector<NodeEntry> nodes = Nodes();
  std::string dead = z.name_servers[0].node_id;
  std::erase_if(nodes, [&](const NodeEntry& n) { return n.id == dead; });
  ZoneSet z2 = BuildZones(Settings(), nodes, Apps(), 8);
  ASSERT_EQ(z2.name_servers.size(), 2u);
  EXPECT_EQ(z2.name_servers[0].datacenter, "dc1");
  EXPECT_NE(z2.name_servers[0].node_id, dead);
  EXPECT_EQ(z2.name_servers[1].node_id, "n3");

  // Three data centres: three names, one per DC.
  nodes = Nodes();
  nodes.push_back({"n5", "dc3", {"127.0.0.15"}, false});
  ZoneSet z3 = BuildZones(Settings(), nodes, Apps(), 9);
  ASSERT_EQ(z3.name_servers.size(), 3u);
  EXPECT_EQ(z3.name_servers[2].node_id, "n5");

  // One node only: one name server (cannot have two on one node).
  ZoneSet z4 = BuildZones(Settings(), {Nodes()[0]}, Apps(), 9);
  EXPECT_EQ(z4.name_servers.size(), 1u);
}

TEST(DnsZone, ContentComparisonIgnoresTheSerialAndWarningsExplainSkippedNames) {
  ZoneSet a = BuildZones(Settings(), Nodes(), Apps(), 1);
  ZoneSet b = BuildZones(Settings(), Nodes(), Apps(), 2);
  EXPECT_TRUE(a.SameContent(b));
  std::vector<NodeEntry> nodes = Nodes();
  nodes[1].drained = true;
  EXPECT_FALSE(a.SameContent(BuildZones(Settings(), nodes, Apps(), 2)));
  bool found = false;
  for (const auto& w : a.warnings)
    found = found || w.find("site.elsewhere.com of app away is in no zone") != std::string::npos;
  EXPECT_TRUE(found);
}

TEST(DnsZone, SettingsAreValidated) {
  DnsSettings s = Settings();
  EXPECT_TRUE(ValidateDnsSettings(s).ok());
  s.zones = {"example.net", "a.example.net"};
  EXPECT_NE(ValidateDnsSettings(s).message().find("nested"), std::string::npos);
  s.zones = {"Example.net"};
  EXPECT_FALSE(ValidateDnsSettings(s).ok());
  s.zones = {"x..y"};
  EXPECT_FALSE(ValidateDnsSettings(s).ok());
  s = Settings();
  s.ttl = 0;
  EXPECT_FALSE(ValidateDnsSettings(s).ok());
}

TEST(DnsZone, ZoneFileListsEveryRecordInCanonicalOrder) {
  ZoneSet z = BuildZones(Settings(), Nodes(), Apps(), 42);
  std::string text = ZoneFileText(z, z.zones[1]);
  EXPECT_NE(text.find("$ORIGIN customer.org.\n"), std::string::npos);
  EXPECT_NE(text.find("customer.org. 10 IN SOA ns1.hosting.example.net. "
                      "hostmaster.hosting.example.net. 42 3600 600 604800 10\n"),
            std::string::npos);
  EXPECT_NE(text.find("www.customer.org. 10 IN CNAME blog.customer.org.\n"), std::string::npos);
  EXPECT_NE(text.find("*.shop.customer.org. 10 IN A 127.0.0.13\n"), std::string::npos);
  EXPECT_EQ(text.find("127.0.0.14"), std::string::npos);  // drained
  EXPECT_LT(text.find("a.b.c.customer.org."), text.find("shop.customer.org."));
}

TEST(DnsAnswer, ExactNamesComeFromImagesPatchedPerQuery) {
  auto a = Answerer::Compile(BuildZones(Settings(), Nodes(), Apps(), 42));
  QuerySpec q{.name = "BLOG.Customer.ORG", .qtype = 1, .rd = true, .id = 0xBEEF};
  std::vector<uint8_t> out(4096);
  std::vector<uint8_t> packet = MakeQuery(q);
  size_t n = a->Respond(packet, false, out);
  ASSERT_GT(n, 12u);
  EXPECT_EQ(out[0], 0xBE);
  EXPECT_EQ(out[1], 0xEF);
  EXPECT_TRUE(out[2] & 0x01);  // RD copied
  std::string text = RenderResponse(std::span<const uint8_t>(out.data(), n));
  EXPECT_NE(text.find("Q BLOG.Customer.ORG. type1"), std::string::npos) << text;
  EXPECT_NE(text.find("AN BLOG.Customer.ORG. 10 A 127.0.0.12"), std::string::npos) << text;
  // The same name with EDNS and DO: OPT echoed with DO.
  q.edns = true;
  q.dnssec_ok = true;
  text = Ask(*a, q);
  EXPECT_NE(text.find("OPT udp=1232 ext_rcode=0 version=0 do"), std::string::npos) << text;
}

TEST(DnsAnswer, BigAnswersAreTruncatedByWholeRRsetsOverUdpAndCompleteOverTcp) {
  std::vector<NodeEntry> nodes;
  for (int i = 0; i < 60; ++i)
    nodes.push_back({"n" + std::to_string(i), "dc1", {"10.0.0." + std::to_string(i + 1)}, false});
  auto a = Answerer::Compile(BuildZones(Settings(), nodes, Apps(), 1));
  std::string udp = Ask(*a, {.name = "blog.customer.org"});
  EXPECT_NE(udp.find("flags=qr,aa,tc,"), std::string::npos) << udp;
  EXPECT_NE(udp.find("counts=1/0/0/0"), std::string::npos) << udp;  // no partial RRset
  std::string edns = Ask(*a, {.name = "blog.customer.org", .edns = true});
  EXPECT_EQ(edns.find("tc"), std::string::npos) << edns;
  EXPECT_NE(edns.find("counts=1/60/0/1"), std::string::npos) << edns;
  std::string small = Ask(*a, {.name = "blog.customer.org", .edns = true, .udp_size = 512});
  EXPECT_NE(small.find("flags=qr,aa,tc,"), std::string::npos) << small;
  EXPECT_NE(small.find("OPT udp=1232"), std::string::npos) << small;
  std::string tcp = Ask(*a, {.name = "blog.customer.org"}, true);
  EXPECT_NE(tcp.find("counts=1/60/0/0"), std::string::npos) << tcp;
}

TEST(DnsAnswer, MalformedPacketsAreDroppedOrAnsweredFormErr) {
  auto a = Answerer::Compile(BuildZones(Settings(), Nodes(), Apps(), 1));
  std::vector<uint8_t> out(4096);
  std::vector<uint8_t> tiny = {1, 2, 3};
  EXPECT_EQ(a->Respond(tiny, false, out), 0u);
  std::vector<uint8_t> q = MakeQuery({.name = "blog.customer.org"});
  q.push_back(0);  // trailing garbage
  size_t n = a->Respond(q, false, out);
  ASSERT_GT(n, 0u);
  EXPECT_NE(RenderResponse(std::span<const uint8_t>(out.data(), n)).find("rcode=FORMERR"),
            std::string::npos);
  q = MakeQuery({.name = "blog.customer.org"});
  q[2] |= 0x80;  // a response: never answered (no reflection loops)
  EXPECT_EQ(a->Respond(q, false, out), 0u);
}

TEST(DnsAnswer, Golden) {
  auto a = Answerer::Compile(BuildZones(Settings(), Nodes(), Apps(), 42));
  struct Case {
    const char* title;
    QuerySpec q;
    bool tcp = false;
  };
  const Case cases[] = {
      {"A of an app domain", {.name = "blog.customer.org"}},
      {"AAAA of an app domain", {.name = "blog.customer.org", .qtype = 28}},
      {"MX of an app domain: NODATA", {.name = "blog.customer.org", .qtype = 15}},
      {"TXT with EDNS: NODATA, OPT echoed",
       {.name = "blog.customer.org", .qtype = 16, .edns = true}},
      {"unknown type 999: NODATA", {.name = "blog.customer.org", .qtype = 999}},
      {"nonexistent name: NXDOMAIN", {.name = "nope.customer.org"}},
      {"below an existing name: NXDOMAIN", {.name = "x.blog.customer.org"}},
      {"empty non-terminal: NODATA", {.name = "b.c.customer.org"}},
      {"empty non-terminal, higher: NODATA", {.name = "c.customer.org", .qtype = 28}},
      {"wildcard synthesis", {.name = "anything.shop.customer.org"}},
      {"wildcard, deeper", {.name = "x.y.shop.customer.org", .qtype = 28}},
      {"wildcard, NODATA", {.name = "anything.shop.customer.org", .qtype = 15}},
      {"wildcard owner itself", {.name = "*.shop.customer.org"}},
      {"CNAME, target in zone", {.name = "www.customer.org"}},
      {"CNAME queried as CNAME", {.name = "www.customer.org", .qtype = 5}},
      {"CNAME, AAAA", {.name = "www.customer.org", .qtype = 28}},
      {"CNAME, MX (target NODATA)", {.name = "www.customer.org", .qtype = 15}},
      {"CNAME into another served zone", {.name = "chain.customer.org"}},
      {"CNAME out of our zones", {.name = "ext.customer.org"}},
      {"apex SOA", {.name = "customer.org", .qtype = 6}},
      {"apex NS, name servers in another zone: no glue", {.name = "customer.org", .qtype = 2}},
      {"apex NS of the name servers' zone: glue", {.name = "hosting.example.net", .qtype = 2}},
      {"apex A (an app at the apex)", {.name = "customer.org"}},
      {"name server address", {.name = "ns1.hosting.example.net"}},
      {"ANY: one RRset (RFC 8482)", {.name = "customer.org", .qtype = 255}},
      {"ANY on a CNAME", {.name = "www.customer.org", .qtype = 255}},
      {"ANY over TCP", {.name = "blog.customer.org", .qtype = 255}, true},
      {"out of zone: REFUSED", {.name = "example.com"}},
      {"out of zone with EDNS: REFUSED, EDE 20", {.name = "example.com", .edns = true}},
      {"class CH with EDNS: REFUSED, EDE 21",
       {.name = "x.org", .qtype = 16, .qclass = 3, .edns = true}},
      {"IXFR with EDNS: REFUSED, EDE 18", {.name = "customer.org", .qtype = 251, .edns = true}},
      {"class CH: REFUSED", {.name = "customer.org", .qtype = 16, .qclass = 3}},
      {"AXFR: REFUSED", {.name = "customer.org", .qtype = 252}, true},
      {"EDNS version 1: BADVERS", {.name = "blog.customer.org", .edns = true, .version = 1}},
      {"EDNS with DO", {.name = "nope.customer.org", .edns = true, .dnssec_ok = true}},
      {"RD set: copied, no RA", {.name = "blog.customer.org", .rd = true}},
  };
  std::string got;
  for (const Case& c : cases) {
    got += std::string("### ") + c.title + "\n" + Ask(*a, c.q, c.tcp) + "\n";
  }
  ::hc::testing::ExpectGolden("tests/dns/golden/answers.txt", got);
}

}  // namespace
}  // namespace hc::dns
