// Routing snapshots (src/proxy/route_table.h): exact names, nginx-style
// wildcards, normalisation of the Host header, and build errors.
#include "proxy/route_table.h"

#include <gtest/gtest.h>

namespace hc::proxy {
namespace {

std::shared_ptr<const RouteTable> Table() {
  auto t = RouteTable::Build({
      {"shop", {"shop.example.com", "Example.com"}, {"127.0.0.91", 8001}},
      {"wild", {"*.example.com"}, {"127.0.0.92", 8002}},
      {"deep", {"*.b.example.com"}, {"127.0.0.93", 8003}},
      {"v6", {"v6.test"}, {"::1", 8004}},
  });
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return *t;
}

std::string AppOf(const RouteTable& t, std::string_view host) {
  const Route* r = t.Find(host);
  return r == nullptr ? "-" : r->app;
}

TEST(RouteTable, ExactNamesIgnoreCasePortAndTrailingDot) {
  auto t = Table();
  EXPECT_EQ(AppOf(*t, "shop.example.com"), "shop");
  EXPECT_EQ(AppOf(*t, "SHOP.Example.COM:8080"), "shop");
  EXPECT_EQ(AppOf(*t, "shop.example.com."), "shop");
  EXPECT_EQ(AppOf(*t, "example.com"), "shop");
  EXPECT_EQ(AppOf(*t, "v6.test"), "v6");
  EXPECT_EQ(AppOf(*t, "unknown.test"), "-");
  EXPECT_EQ(AppOf(*t, ""), "-");
  EXPECT_EQ(AppOf(*t, ":80"), "-");
}

TEST(RouteTable, WildcardsMatchAnyDepthAndTheLongestWins) {
  auto t = Table();
  EXPECT_EQ(AppOf(*t, "a.example.com"), "wild");
  EXPECT_EQ(AppOf(*t, "x.a.example.com"), "wild");
  EXPECT_EQ(AppOf(*t, "b.example.com"), "wild");  // "*.b.example.com" needs a label in front
  EXPECT_EQ(AppOf(*t, "c.b.example.com"), "deep");
  EXPECT_EQ(AppOf(*t, "d.c.b.example.com:443"), "deep");
  EXPECT_EQ(AppOf(*t, "notexample.com"), "-");
  // An exact name beats every wildcard.
  EXPECT_EQ(AppOf(*t, "shop.example.com"), "shop");
}

TEST(RouteTable, BackendIsResolvedAndAppsAreFoundByName) {
  auto t = Table();
  const Route* r = t->FindApp("wild");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->backend.ToString(), "127.0.0.92:8002");
  EXPECT_EQ(r->addr.ss_family, AF_INET);
  EXPECT_EQ(t->FindApp("v6")->addr.ss_family, AF_INET6);
  EXPECT_EQ(t->FindApp("nope"), nullptr);
  EXPECT_EQ(t->size(), 4u);
}

TEST(RouteTable, BuildRejectsConflictsAndBadDomains) {
  auto dup =
      RouteTable::Build({{"a", {"x.test"}, {"127.0.0.1", 1}}, {"b", {"X.test"}, {"127.0.0.1", 2}}});
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("'a' and 'b'"), std::string::npos)
      << dup.status().message();
  for (const char* bad : {"a..b", "**", "*.", "a.*.b", "a b", ".x", "x/y"}) {
    auto r = RouteTable::Build({{"a", {bad}, {"127.0.0.1", 1}}});
    EXPECT_FALSE(r.ok()) << bad;
  }
  auto twice =
      RouteTable::Build({{"a", {"x.test"}, {"127.0.0.1", 1}}, {"a", {"y.test"}, {"127.0.0.1", 1}}});
  EXPECT_FALSE(twice.ok());
  auto unresolvable = RouteTable::Build({{"a", {"x.test"}, {"no-such-host.invalid", 1}}});
  EXPECT_FALSE(unresolvable.ok());
}

TEST(RouteTable, CatchAllTakesEveryOtherHost) {
  auto t = RouteTable::Build(
      {{"named", {"a.test"}, {"127.0.0.1", 1}}, {"rest", {"*"}, {"127.0.0.1", 2}}});
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(AppOf(**t, "a.test"), "named");
  EXPECT_EQ(AppOf(**t, "b.test"), "rest");
  EXPECT_EQ(AppOf(**t, ""), "rest");  // HTTP/1.0 without Host
  auto two = RouteTable::Build({{"a", {"*"}, {"127.0.0.1", 1}}, {"b", {"*"}, {"127.0.0.1", 2}}});
  EXPECT_FALSE(two.ok());
}

}  // namespace
}  // namespace hc::proxy
