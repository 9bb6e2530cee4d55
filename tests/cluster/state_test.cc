#include "cluster/state.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace hc::cluster {
namespace {

bool Contains(const Status& s, const std::string& part) {
  return s.message().find(part) != std::string::npos;
}

AppDef ValidApp() {
  AppDef a;
  a.name = "shop";
  a.template_name = "command";
  a.command = "exec ./server --port $PORT";
  a.env = {"MODE=prod", "_X1=a=b"};
  a.domains = {"shop.example.com", "*.shop.example.com"};
  a.aliases = {"www.shop.example.com"};
  a.replicas = 2;
  a.limits.memory_bytes = 512ull << 20;
  a.limits.cpu_millis = 1500;
  a.limits.pids = 256;
  a.created_unix = 1700000000;
  return a;
}

// ---- codecs ----

TEST(ClusterState, NodeInfoRoundTrips) {
  NodeInfo n;
  n.id = "node-1";
  n.name = "host1";
  n.address = "127.0.0.11";
  n.api_port = 65535;
  n.datacenter = "dc1";
  n.memory_bytes = 64ull << 30;
  n.cpu_millis = 8000;
  n.version = "0.1.0";
  n.started_unix = -5;
  n.drained = true;
  n.public_addresses = {"203.0.113.1", "2001:db8::1"};
  auto back = NodeInfoFromJson(ToJson(n));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->id, n.id);
  EXPECT_EQ(back->name, n.name);
  EXPECT_EQ(back->address, n.address);
  EXPECT_EQ(back->api_port, 65535);
  EXPECT_EQ(back->datacenter, "dc1");
  EXPECT_EQ(back->memory_bytes, n.memory_bytes);
  EXPECT_EQ(back->cpu_millis, 8000u);
  EXPECT_EQ(back->version, "0.1.0");
  EXPECT_EQ(back->started_unix, -5);
  EXPECT_TRUE(back->drained);
  EXPECT_EQ(back->public_addresses, n.public_addresses);
  EXPECT_EQ(ToJson(*back), ToJson(n));
}

TEST(ClusterState, AppDefRoundTrips) {
  AppDef a = ValidApp();
  auto back = AppDefFromJson(ToJson(a));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->name, "shop");
  EXPECT_EQ(back->template_name, "command");
  EXPECT_EQ(back->command, a.command);
  EXPECT_EQ(back->env, a.env);
  EXPECT_EQ(back->domains, a.domains);
  EXPECT_EQ(back->aliases, a.aliases);
  EXPECT_EQ(back->replicas, 2u);
  EXPECT_EQ(back->limits.memory_bytes, 512ull << 20);
  EXPECT_EQ(back->limits.cpu_millis, 1500u);
  EXPECT_EQ(back->limits.pids, 256u);
  EXPECT_EQ(back->created_unix, 1700000000);
  EXPECT_EQ(ToJson(*back), ToJson(a));
}

TEST(ClusterState, PlacementRoundTripsEveryState) {
  for (PlacementState s :
       {PlacementState::kRunning, PlacementState::kMigrating, PlacementState::kFailingOver}) {
    Placement p;
    p.app = "shop";
    p.primary = "n1";
    p.replicas = {"n2", "n3"};
    p.epoch = 18446744073709551615ull;
    p.state = s;
    auto back = PlacementFromJson(ToJson(p));
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back->app, "shop");
    EXPECT_EQ(back->primary, "n1");
    EXPECT_EQ(back->replicas, p.replicas);
    EXPECT_EQ(back->epoch, p.epoch);
    EXPECT_EQ(back->state, s);
  }
  Placement f;
  f.app = "a";
  f.primary = "n";
  f.state = PlacementState::kFailingOver;
  EXPECT_NE(ToJson(f).find("\"state\":\"failing-over\""), std::string::npos) << ToJson(f);
}

TEST(ClusterState, AppObservedRoundTrips) {
  AppObserved o;
  o.app = "shop";
  o.node = "n1";
  o.role = "primary";
  o.epoch = 3;
  o.state = "running";
  o.ready = true;
  o.port = 40123;
  o.cpu_seconds = 12.375;
  o.memory_bytes = 123456789;
  o.restarts = 4;
  o.message = "probe ok \"quoted\" \n newline";
  o.updated_unix = 1700000001;
  auto back = AppObservedFromJson(ToJson(o));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->role, "primary");
  EXPECT_EQ(back->epoch, 3u);
  EXPECT_EQ(back->state, "running");
  EXPECT_TRUE(back->ready);
  EXPECT_EQ(back->port, 40123);
  EXPECT_DOUBLE_EQ(back->cpu_seconds, 12.375);
  EXPECT_EQ(back->memory_bytes, 123456789u);
  EXPECT_EQ(back->restarts, 4);
  EXPECT_EQ(back->message, o.message);
  EXPECT_EQ(back->updated_unix, 1700000001);
  EXPECT_EQ(ToJson(*back), ToJson(o));
}

TEST(ClusterState, ToJsonSurvivesInvalidUtf8) {
  AppObserved o;
  o.app = "a";
  o.node = "n";
  o.message = std::string("bad \xff\xfe bytes");
  auto back = AppObservedFromJson(ToJson(o));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_NE(back->message.find("bad"), std::string::npos);
}

TEST(ClusterState, MissingFieldsTakeDefaultsAndUnknownFieldsAreIgnored) {
  auto n = NodeInfoFromJson(R"({"id":"n1","future_field":{"x":[1,2]}})");
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(n->api_port, 0);
  EXPECT_FALSE(n->drained);

  auto a = AppDefFromJson(R"({"name":"shop","template":"static","limits":{"pids":64},"x":1})");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->replicas, 1u);
  EXPECT_EQ(a->limits.memory_bytes, 256ull << 20);
  EXPECT_EQ(a->limits.cpu_millis, 1000u);
  EXPECT_EQ(a->limits.pids, 64u);
  EXPECT_TRUE(a->env.empty());

  auto p = PlacementFromJson(R"({"app":"shop","primary":"n1"})");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->epoch, 0u);
  EXPECT_EQ(p->state, PlacementState::kRunning);
  EXPECT_TRUE(p->replicas.empty());

  auto o = AppObservedFromJson(R"({"app":"shop","node":"n1","cpu_seconds":3})");
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_DOUBLE_EQ(o->cpu_seconds, 3);
  EXPECT_EQ(o->restarts, 0);
}

TEST(ClusterState, RequiredFieldsAreRequired) {
  struct Case {
    Result<int> (*parse)(std::string_view);
    const char* json;
    const char* want;
  };
  auto node = [](std::string_view j) -> Result<int> {
    auto r = NodeInfoFromJson(j);
    if (!r.ok()) return r.status();
    return 0;
  };
  auto app = [](std::string_view j) -> Result<int> {
    auto r = AppDefFromJson(j);
    if (!r.ok()) return r.status();
    return 0;
  };
  auto placement = [](std::string_view j) -> Result<int> {
    auto r = PlacementFromJson(j);
    if (!r.ok()) return r.status();
    return 0;
  };
  auto observed = [](std::string_view j) -> Result<int> {
    auto r = AppObservedFromJson(j);
    if (!r.ok()) return r.status();
    return 0;
  };
  Case cases[] = {
      {node, R"({"name":"h"})", "node: field 'id' is required"},
      {node, R"({"id":""})", "node: field 'id' must not be empty"},
      {app, R"({"template":"static"})", "app: field 'name' is required"},
      {app, R"({"name":"x"})", "app: field 'template' is required"},
      {placement, R"({"primary":"n1"})", "placement: field 'app' is required"},
      {placement, R"({"app":"x"})", "placement: field 'primary' is required"},
      {observed, R"({"node":"n1"})", "app status: field 'app' is required"},
      {observed, R"({"app":"x"})", "app status: field 'node' is required"},
  };
  for (const Case& c : cases) {
    auto r = c.parse(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_TRUE(Contains(r.status(), c.want)) << r.status().message();
  }
}

TEST(ClusterState, WrongTypesAndRangesNameTheField) {
  struct Case {
    int kind;  // 0 node, 1 app, 2 placement, 3 observed
    const char* json;
    const char* want;
  } cases[] = {
      {0, R"({"id":"n","api_port":65536})", "field 'api_port' must be an integer from 0 to 65535"},
      {0, R"({"id":"n","api_port":-1})", "field 'api_port'"},
      {0, R"({"id":"n","api_port":80.0})", "field 'api_port'"},
      {0, R"({"id":"n","api_port":"80"})", "field 'api_port'"},
      {0, R"({"id":"n","memory_bytes":-1})", "field 'memory_bytes' must be a non-negative integer"},
      {0, R"({"id":"n","memory_bytes":1e30})", "field 'memory_bytes'"},
      {0, R"({"id":"n","cpu_millis":4294967296})", "field 'cpu_millis'"},
      {0, R"({"id":"n","drained":1})", "field 'drained' must be true or false"},
      {0, R"({"id":7})", "field 'id' must be a string"},
      {0, R"({"id":"n","started_unix":9223372036854775808})",
       "field 'started_unix' must be an integer"},
      {1, R"({"name":"a","template":"static","replicas":-1})", "field 'replicas'"},
      {1, R"({"name":"a","template":"static","env":"A=1"})",
       "field 'env' must be a list of strings"},
      {1, R"({"name":"a","template":"static","env":["A=1",2]})", "field 'env'"},
      {1, R"({"name":"a","template":"static","domains":{}})", "field 'domains'"},
      {1, R"({"name":"a","template":"static","limits":[]})", "field 'limits' must be an object"},
      {1, R"({"name":"a","template":"static","limits":{"memory_bytes":-16}})",
       "field 'limits.memory_bytes' must be a non-negative integer"},
      {1, R"({"name":"a","template":"static","limits":{"pids":true}})", "field 'limits.pids'"},
      {2, R"({"app":"a","primary":"n","epoch":-1})",
       "placement: field 'epoch' must be a non-negative integer"},
      {2, R"({"app":"a","primary":"n","state":"sleeping"})",
       "field 'state' must be one of running, migrating, failing-over"},
      {2, R"({"app":"a","primary":"n","state":1})", "field 'state' must be a string"},
      {2, R"({"app":"a","primary":"n","replicas":[null]})", "field 'replicas'"},
      {3, R"({"app":"a","node":"n","port":70000})", "app status: field 'port'"},
      {3, R"({"app":"a","node":"n","cpu_seconds":-0.5})",
       "field 'cpu_seconds' must be a non-negative number"},
      {3, R"({"app":"a","node":"n","cpu_seconds":"1"})", "field 'cpu_seconds'"},
      {3, R"({"app":"a","node":"n","restarts":-1})", "field 'restarts' must be an integer from 0"},
      {3, R"({"app":"a","node":"n","restarts":2147483648})", "field 'restarts'"},
      {3, R"({"app":"a","node":"n","ready":"yes"})", "field 'ready'"},
  };
  for (const Case& c : cases) {
    Status st;
    switch (c.kind) {
      case 0: st = NodeInfoFromJson(c.json).status(); break;
      case 1: st = AppDefFromJson(c.json).status(); break;
      case 2: st = PlacementFromJson(c.json).status(); break;
      default: st = AppObservedFromJson(c.json).status(); break;
    }
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << c.json;
    EXPECT_TRUE(Contains(st, c.want)) << c.json << " -> " << st.message();
  }
}

TEST(ClusterState, MalformedJsonIsInvalidArgument) {
  for (const char* text : {"", " ", "{", "}", "[]", "null", "1", "\"x\"", "{\"id\":}",
                           "{\"id\":\"n\",}", "{\"id\":\"n\"} trailing", "\xff\xfe",
                           "{\"id\":\"\xff\"}", "{\"id\":\"n\",\"x\":1e400}", "41e1111111"}) {
    std::string_view in(text);
    EXPECT_EQ(NodeInfoFromJson(in).status().code(), Code::kInvalidArgument) << text;
    EXPECT_EQ(AppDefFromJson(in).status().code(), Code::kInvalidArgument) << text;
    EXPECT_EQ(PlacementFromJson(in).status().code(), Code::kInvalidArgument) << text;
    EXPECT_EQ(AppObservedFromJson(in).status().code(), Code::kInvalidArgument) << text;
  }
  EXPECT_TRUE(Contains(PlacementFromJson("[1]").status(), "placement: expected a JSON object"));
  EXPECT_TRUE(Contains(NodeInfoFromJson("{").status(), "node: not valid JSON"));
}

TEST(ClusterState, DeeplyNestedInputDoesNotCrash) {
  std::string deep(100000, '[');
  EXPECT_FALSE(AppDefFromJson(deep).ok());
  std::string nested = R"({"name":"a","template":"static","x":)" + std::string(50000, '[') +
                       std::string(50000, ']') + "}";
  EXPECT_TRUE(AppDefFromJson(nested).ok());
}

TEST(ClusterState, PlacementStateNames) {
  EXPECT_STREQ(PlacementStateName(PlacementState::kRunning), "running");
  EXPECT_STREQ(PlacementStateName(PlacementState::kMigrating), "migrating");
  EXPECT_STREQ(PlacementStateName(PlacementState::kFailingOver), "failing-over");
}

// ---- ValidateAppDef ----

TEST(ValidateAppDef, AcceptsAValidAppOfEachTemplate) {
  EXPECT_TRUE(ValidateAppDef(ValidApp()).ok()) << ValidateAppDef(ValidApp()).ToString();
  for (const char* t : {"static", "postgres", "mariadb"}) {
    AppDef a = ValidApp();
    a.template_name = t;
    a.command.clear();
    EXPECT_TRUE(ValidateAppDef(a).ok()) << t << ": " << ValidateAppDef(a).ToString();
  }
}

TEST(AppDefJson, ProtocolAndTcpPortsRoundTripAndBadPortsAreRefused) {
  AppDef a;
  a.name = "db";
  a.template_name = "mariadb";
  a.tcp_ports = {3306, 33060};
  auto back = AppDefFromJson(ToJson(a));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->tcp_ports, a.tcp_ports);
  EXPECT_EQ(AppProtocol(*back), "mysql");
  back->protocol = "tcp";
  EXPECT_EQ(AppProtocol(*back), "tcp");
  for (const char* bad : {R"({"name":"x","template":"static","tcp_ports":[0]})",
                          R"({"name":"x","template":"static","tcp_ports":[70000]})",
                          R"({"name":"x","template":"static","tcp_ports":["80"]})",
                          R"({"name":"x","template":"static","tcp_ports":80})"}) {
    auto r = AppDefFromJson(bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("tcp_ports' must be a list of port numbers"),
              std::string::npos)
        << r.status().ToString();
  }
  AppCertificate c{"shop", "CERT", "KEY", 7};
  auto cb = AppCertificateFromJson(ToJson(c));
  ASSERT_TRUE(cb.ok());
  EXPECT_EQ(cb->key_pem, "KEY");
  EXPECT_FALSE(AppCertificateFromJson(R"({"app":"shop"})").ok());
}

TEST(ValidateAppDef, EachRuleHasAGoodAndABadCase) {
  struct Case {
    const char* rule;
    void (*good)(AppDef&);
    void (*bad)(AppDef&);
    const char* want;  // part of the message for the bad case
  } cases[] = {
      {"name", [](AppDef& a) { a.name = "shop-2.prod_x"; }, [](AppDef& a) { a.name = "Shop"; },
       "app name 'Shop'"},
      {"name empty", [](AppDef& a) { a.name = "a"; }, [](AppDef& a) { a.name = ""; },
       "app name ''"},
      {"template", [](AppDef& a) {}, [](AppDef& a) { a.template_name = "php"; },
       "template: 'php' is not one of static, command, postgres, mariadb"},
      {"command needed", [](AppDef& a) { a.command = "x"; }, [](AppDef& a) { a.command = ""; },
       "command: template 'command' needs a command"},
      {"command only for command",
       [](AppDef& a) {
         a.template_name = "static";
         a.command = "";
       },
       [](AppDef& a) { a.template_name = "postgres"; }, "only template 'command' takes one"},
      {"command NUL", [](AppDef& a) {}, [](AppDef& a) { a.command = std::string("a\0b", 3); },
       "NUL"},
      {"protocol", [](AppDef& a) { a.protocol = "https"; }, [](AppDef& a) { a.protocol = "ftp"; },
       "protocol: 'ftp' is not one of http, https, postgres, mysql, imap, pop3, tcp"},
      {"mail needs domains",
       [](AppDef& a) {
         a.protocol = "imap";
         a.domains = {"example.com"};
       },
       [](AppDef& a) {
         a.protocol = "pop3";
         a.domains.clear();
         a.aliases.clear();
       },
       "routes logins by their domain"},
      {"tcp port reserved",
       [](AppDef& a) {
         a.tcp_ports = {3306, 8443};
       },
       [](AppDef& a) { a.tcp_ports = {5432}; }, "tcp_ports: 5432 is a port the cluster serves"},
      {"tcp port twice", [](AppDef& a) { a.tcp_ports = {3306}; },
       [](AppDef& a) {
         a.tcp_ports = {3306, 3306};
       },
       "3306 is listed twice"},
      {"env format",
       [](AppDef& a) {
         a.env = {"A_1=", "_=x"};
       },
       [](AppDef& a) { a.env = {"NOEQUALS"}; }, "env[0]: 'NOEQUALS' must look like KEY=VALUE"},
      {"env key start", [](AppDef& a) { a.env = {"a9=1"}; }, [](AppDef& a) { a.env = {"9A=1"}; },
       "KEY=VALUE"},
      {"env key chars", [](AppDef& a) { a.env = {"MY_VAR=a-b"}; },
       [](AppDef& a) {
         a.env = {"OK=1", "MY-VAR=1"};
       },
       "env[1]"},
      {"env empty key", [](AppDef& a) {}, [](AppDef& a) { a.env = {"=x"}; }, "KEY=VALUE"},
      {"env reserved",
       [](AppDef& a) {
         a.env = {"PORTS=1", "path=x"};
       },
       [](AppDef& a) { a.env = {"PORT=80"}; }, "PORT is set by the runtime"},
      {"env reserved APP_DIR", [](AppDef& a) {}, [](AppDef& a) { a.env = {"APP_DIR=/x"}; },
       "APP_DIR"},
      {"env reserved HOME", [](AppDef& a) {}, [](AppDef& a) { a.env = {"HOME=/x"}; }, "HOME"},
      {"env reserved PATH", [](AppDef& a) {}, [](AppDef& a) { a.env = {"PATH=/x"}; }, "PATH"},
      {"env count", [](AppDef& a) { a.env.assign(64, "A=1"); },
       [](AppDef& a) { a.env.assign(65, "A=1"); },
       "env: 65 entries is more than the maximum of 64"},
      {"env size", [](AppDef& a) { a.env = {"A=" + std::string(4094, 'x')}; },
       [](AppDef& a) { a.env = {"A=" + std::string(4095, 'x')}; },
       "4097 bytes long; the maximum is 4096"},
      {"env NUL", [](AppDef& a) {}, [](AppDef& a) { a.env = {std::string("A=\0", 3)}; }, "NUL"},
      {"domain", [](AppDef& a) { a.domains = {"a.b"}; }, [](AppDef& a) { a.domains = {"a..b"}; },
       "domains[0]: domain 'a..b'"},
      {"domain lower case", [](AppDef& a) { a.domains = {"shop.example.com"}; },
       [](AppDef& a) { a.domains = {"Shop.Example.com"}; }, "use lower case ('shop.example.com')"},
      {"domain duplicate",
       [](AppDef& a) {
         a.domains = {"a.com", "b.com"};
       },
       [](AppDef& a) {
         a.domains = {"a.com", "b.com", "a.com"};
       },
       "domains[2]: 'a.com' is listed twice"},
      {"domain count",
       [](AppDef& a) {
         a.domains.clear();
         for (int i = 0; i < 32; ++i) a.domains.push_back("d" + std::to_string(i) + ".com");
       },
       [](AppDef& a) {
         a.domains.clear();
         for (int i = 0; i < 33; ++i) a.domains.push_back("d" + std::to_string(i) + ".com");
       },
       "33 domains is more than the maximum of 32"},
      {"alias is a domain too",
       [](AppDef& a) {
         a.domains = {"a.com"};
         a.aliases = {"www.a.com"};
       },
       [](AppDef& a) {
         a.domains = {"a.com"};
         a.aliases = {"a.com"};
       },
       "aliases[0]: 'a.com' is listed twice"},
      {"alias needs a domain", [](AppDef& a) { a.aliases.clear(); },
       [](AppDef& a) {
         a.domains.clear();
         a.aliases = {"www.a.com"};
       },
       "an alias points to the app's first domain; add a domain"},
      {"alias is a valid name", [](AppDef& a) { a.aliases = {"*.a.com"}; },
       [](AppDef& a) { a.aliases = {"a..com"}; }, "aliases[0]: domain 'a..com'"},
      {"replicas", [](AppDef& a) { a.replicas = 5; }, [](AppDef& a) { a.replicas = 6; },
       "replicas: 6 is above the maximum of 5"},
      {"replicas zero", [](AppDef& a) { a.replicas = 0; }, [](AppDef& a) { a.replicas = 100; },
       "replicas"},
      {"memory min", [](AppDef& a) { a.limits.memory_bytes = 16ull << 20; },
       [](AppDef& a) { a.limits.memory_bytes = 1ull << 20; },
       "limits.memory: 1 MiB is below the minimum of 16 MiB"},
      {"memory max", [](AppDef& a) { a.limits.memory_bytes = 1ull << 40; },
       [](AppDef& a) { a.limits.memory_bytes = (1ull << 40) + 1; },
       "limits.memory: 1099511627777 bytes is above the maximum of 1 TiB"},
      {"memory zero", [](AppDef& a) {}, [](AppDef& a) { a.limits.memory_bytes = 0; },
       "limits.memory: 0 bytes is below the minimum of 16 MiB"},
      {"cpu min", [](AppDef& a) { a.limits.cpu_millis = 10; },
       [](AppDef& a) { a.limits.cpu_millis = 9; },
       "limits.cpu_millis: 9 is below the minimum of 10"},
      {"cpu max", [](AppDef& a) { a.limits.cpu_millis = 256000; },
       [](AppDef& a) { a.limits.cpu_millis = 256001; },
       "limits.cpu_millis: 256001 is above the maximum of 256000"},
      {"pids min", [](AppDef& a) { a.limits.pids = 16; }, [](AppDef& a) { a.limits.pids = 15; },
       "limits.pids: 15 is below the minimum of 16"},
      {"pids max", [](AppDef& a) { a.limits.pids = 1000000; },
       [](AppDef& a) { a.limits.pids = 1000001; },
       "limits.pids: 1000001 is above the maximum of 1000000"},
  };
  for (const Case& c : cases) {
    AppDef good = ValidApp();
    c.good(good);
    Status gs = ValidateAppDef(good);
    EXPECT_TRUE(gs.ok()) << c.rule << " (good): " << gs.ToString();
    AppDef bad = ValidApp();
    c.bad(bad);
    Status bs = ValidateAppDef(bad);
    EXPECT_EQ(bs.code(), Code::kInvalidArgument) << c.rule << " (bad)";
    EXPECT_TRUE(Contains(bs, c.want)) << c.rule << ": " << bs.message();
  }
}

TEST(ValidateAppDef, MessagesNameTheApp) {
  AppDef a = ValidApp();
  a.replicas = 9;
  EXPECT_TRUE(Contains(ValidateAppDef(a), "app 'shop': replicas")) << ValidateAppDef(a).message();
}

// ---- ValidateDomain ----

TEST(ValidateDomain, AcceptsHostNames) {
  for (const char* d :
       {"example.com", "a.b", "shop.example.com", "*.example.com", "xn--bcher-kva.example",
        "a-b.c-d.io", "0.example.com", "123.example.com", "a.b1"}) {
    EXPECT_TRUE(ValidateDomain(d).ok()) << d << ": " << ValidateDomain(d).ToString();
  }
  std::string label63(63, 'a');
  EXPECT_TRUE(ValidateDomain(label63 + ".com").ok());
  // 253 characters: 3 labels of 63, one of 61, three dots.
  std::string longest = label63 + "." + label63 + "." + label63 + "." + std::string(61, 'b');
  ASSERT_EQ(longest.size(), 253u);
  EXPECT_TRUE(ValidateDomain(longest).ok()) << ValidateDomain(longest).ToString();
}

TEST(ValidateDomain, RejectsWithAReason) {
  std::string label63(63, 'a');
  std::string too_long = label63 + "." + label63 + "." + label63 + "." + std::string(62, 'b');
  struct Case {
    std::string domain;
    const char* want;
  } cases[] = {
      {"", "empty"},
      {too_long, "254 characters long; the maximum is 253"},
      {std::string(64, 'a') + ".com", "64 characters long; the maximum is 63"},
      {"example.com.", "without the trailing dot"},
      {"Example.com", "use lower case ('example.com')"},
      {"localhost", "at least two labels"},
      {"*.com", "at least two labels"},
      {"1.2.3.4", "all digits"},
      {"example.123", "all digits"},
      {"a..b", "empty label"},
      {".example.com", "empty label"},
      {"-a.com", "must not start or end with '-'"},
      {"a-.com", "must not start or end with '-'"},
      {"a_b.com", "contains '_'"},
      {"a b.com", "contains ' '"},
      {"shop.*.example.com", "whole first label"},
      {"*shop.example.com", "whole first label"},
      {"*", "whole first label"},
      {"*.", "trailing dot"},
      {"*.*.example.com", "whole first label"},
  };
  for (const Case& c : cases) {
    Status st = ValidateDomain(c.domain);
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << c.domain;
    EXPECT_TRUE(Contains(st, c.want)) << c.domain << ": " << st.message();
  }
}

// ---- ValidateNodeId ----

TEST(ValidateNodeId, FollowsTheRule) {
  for (std::string id :
       {std::string("n1"), std::string("0"), std::string("node-a-1"), std::string(63, 'z')}) {
    EXPECT_TRUE(ValidateNodeId(id).ok()) << id;
  }
  struct Case {
    std::string id;
    const char* want;
  } cases[] = {
      {"", "1 to 63 characters"},
      {std::string(64, 'a'), "1 to 63 characters"},
      {"-n1", "must start with a lower-case letter or a digit"},
      {"Node1", "must start with"},
      {"node_1", "contains '_'"},
      {"node.1", "contains '.'"},
      {"nodE", "contains 'E'"},
  };
  for (const Case& c : cases) {
    Status st = ValidateNodeId(c.id);
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << c.id;
    EXPECT_TRUE(Contains(st, c.want)) << c.id << ": " << st.message();
  }
}

}  // namespace
}  // namespace hc::cluster
