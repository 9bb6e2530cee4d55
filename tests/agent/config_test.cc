// hcd's configuration: the YAML file (LoadConfigFile), the checks and
// derived values (ResolveConfig), and the size parser it uses.
#include "agent/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "common/fs.h"
#include "common/units.h"

namespace hc::agent {
namespace {

class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/hc-config-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { (void)RemoveTree(dir_); }

  // Writes `text` to a new file and returns its path.
  std::string Write(const std::string& text) {
    std::string path = JoinPath(dir_, "hcd-" + std::to_string(++files_) + ".yaml");
    Status s = WriteFileAtomic(path, text, false);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return path;
  }
  // Loads `text`; expects an InvalidArgument and returns its message.
  std::string LoadError(const std::string& text) {
    Config c;
    std::string path = Write(text);
    Status s = LoadConfigFile(path, &c);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << "for:\n" << text << "\ngot: " << s.ToString();
    last_path_ = path;
    return s.message();
  }

  std::string dir_;
  std::string last_path_;
  int files_ = 0;
};

// Every key ConfigHelp() lists.
std::set<std::string> HelpKeys() {
  std::set<std::string> keys;
  std::istringstream in(ConfigHelp());
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("  ", 0) != 0) continue;
    std::istringstream words(line);
    std::string key;
    words >> key;
    keys.insert(key);
  }
  return keys;
}

const char kFullConfig[] = R"(# every option, none at its default
node_id: node-1
node_name: Node One
data_dir: /srv/hc
address: 10.0.0.5
api_listen: 10.0.0.5:8000
datacenter: fra1
etcd_endpoints:
  - http://10.0.0.1:2379
  - http://10.0.0.2:2379
  - 10.0.0.3:2379
etcd_prefix: /prod
lease_ttl_seconds: 5
status_interval_seconds: 30
reconcile_interval_ms: 500
storage_backend: zfs
zfs_dataset: tank/hc
runtime_backend: process
cgroup_parent: hc
memory_capacity: 16G
cpu_capacity: 3.5
api_token_file: /etc/hybridcluster/token
join_token: ""
join_token_file: /etc/hybridcluster/join-token
log_level: debug
public_addresses: [203.0.113.5, "2001:db8::5"]
dns_zones: [hosting.example.net, customer.org.]
dns_listen: [10.0.0.5:5353]
dns_ttl: 30
dns_name_servers: 3
dns_hostmaster: admin.example.net
dns_workers: 2
proxy: off
proxy_listen: [203.0.113.5:8080]
proxy_internal_port: 9000
proxy_workers: 1
proxy_tls_listen: [203.0.113.5:8443]
proxy_postgres_listen: ["off"]
proxy_imap_listen: []
proxy_pop3_listen: [203.0.113.5:1110]
proxy_tls_cert: /etc/hybridcluster/tls/default.pem
proxy_tls_key: /etc/hybridcluster/tls/default.key
replication_port: 7493
replication_interval_seconds: 5
retention: "1h: keep all | 7d: 1 per day"
replication_max_transfers: 4
scrub_interval_hours: 24
)";

TEST_F(ConfigFileTest, FullFileSetsEveryOption) {
  Config c;
  std::string path = Write(kFullConfig);
  Status s = LoadConfigFile(path, &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c.config_path, path);
  EXPECT_EQ(c.node_id, "node-1");
  EXPECT_EQ(c.node_name, "Node One");
  EXPECT_EQ(c.data_dir, "/srv/hc");
  EXPECT_EQ(c.address, "10.0.0.5");
  EXPECT_EQ(c.api_listen, "10.0.0.5:8000");
  EXPECT_EQ(c.datacenter, "fra1");
  EXPECT_EQ(c.etcd_endpoints, (std::vector<std::string>{"http://10.0.0.1:2379",
                                                        "http://10.0.0.2:2379", "10.0.0.3:2379"}));
  EXPECT_EQ(c.etcd_prefix, "/prod");
  EXPECT_EQ(c.lease_ttl_seconds, 5);
  EXPECT_EQ(c.status_interval_seconds, 30);
  EXPECT_EQ(c.reconcile_interval_ms, 500);
  EXPECT_EQ(c.storage_backend, "zfs");
  EXPECT_EQ(c.zfs_dataset, "tank/hc");
  EXPECT_EQ(c.runtime_backend, "process");
  EXPECT_EQ(c.cgroup_parent, "hc");
  EXPECT_EQ(c.replication_port, 7493);
  EXPECT_EQ(c.replication_interval_seconds, 5);
  EXPECT_EQ(c.retention, "1h: keep all | 7d: 1 per day");
  EXPECT_EQ(c.replication_max_transfers, 4);
  EXPECT_EQ(c.scrub_interval_hours, 24);
  EXPECT_EQ(c.memory_capacity, "16G");
  EXPECT_EQ(c.cpu_capacity, "3.5");
  EXPECT_EQ(c.api_token_file, "/etc/hybridcluster/token");
  EXPECT_EQ(c.join_token, "");
  EXPECT_EQ(c.join_token_file, "/etc/hybridcluster/join-token");
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.public_addresses, (std::vector<std::string>{"203.0.113.5", "2001:db8::5"}));
  EXPECT_EQ(c.dns_listen, std::vector<std::string>{"10.0.0.5:5353"});
  EXPECT_EQ(c.dns_ttl, 30);
  EXPECT_EQ(c.dns_name_servers, 3);
  EXPECT_EQ(c.dns_hostmaster, "admin.example.net");
  EXPECT_EQ(c.dns_workers, 2);

  s = ResolveConfig(&c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c.etcd_prefix, "/prod/");  // the trailing '/' is added
  EXPECT_EQ(c.memory_bytes, 16ull << 30);
  EXPECT_EQ(c.cpu_millis, 3500u);
  EXPECT_EQ(c.api_listen, "10.0.0.5:8000");
  dns::DnsSettings d = DnsSettingsOf(c);
  EXPECT_EQ(d.zones, (std::vector<std::string>{"hosting.example.net", "customer.org"}));
  EXPECT_EQ(d.ttl, 30u);
}

TEST_F(ConfigFileTest, DnsIsOffByDefaultAndListensOnThePublicAddresses) {
  Config c;
  ASSERT_TRUE(LoadConfigFile(Write("address: 10.0.0.7\n"), &c).ok());
  ASSERT_TRUE(ResolveConfig(&c).ok());
  EXPECT_TRUE(c.dns_zones.empty());
  EXPECT_TRUE(c.dns_listen.empty());
  EXPECT_EQ(c.public_addresses, std::vector<std::string>{"10.0.0.7"});

  Config d;
  ASSERT_TRUE(LoadConfigFile(Write("public_addresses: [198.51.100.1, '2001:db8::1']\n"
                                   "dns_zones: example.net\n"),
                             &d)
                  .ok());
  ASSERT_TRUE(ResolveConfig(&d).ok());
  EXPECT_EQ(d.dns_listen, (std::vector<std::string>{"198.51.100.1:53", "[2001:db8::1]:53"}));
}

TEST_F(ConfigFileTest, BadDnsSettingsSayWhatIsWrong) {
  struct Case {
    const char* text;
    const char* want;
  };
  const Case cases[] = {
      {"public_addresses: [node1.example.net]\n", "is not an IPv4 or IPv6 address"},
      {"dns_zones: [example.net, www.example.net]\n", "nested"},
      {"dns_zones: [Example.NET]\n", "lower-case"},
      {"dns_zones: [a..b]\n", "empty label"},
      {"dns_zones: [example.net]\ndns_listen: [1.2.3.4:99999]\n", "dns_listen"},
      {"dns_zones: [example.net]\ndns_hostmaster: 'a..b'\n", "dns hostmaster"},
  };
  for (const auto& tc : cases) {
    Config c;
    ASSERT_TRUE(LoadConfigFile(Write(tc.text), &c).ok()) << tc.text;
    Status s = ResolveConfig(&c);
    EXPECT_FALSE(s.ok()) << tc.text;
    EXPECT_NE(s.message().find(tc.want), std::string::npos) << tc.text << " -> " << s.ToString();
  }
}

// A reminder for whoever adds an option: the full file above covers them all.
TEST_F(ConfigFileTest, FullFileCoversEveryOptionInTheHelp) {
  std::set<std::string> keys = HelpKeys();
  EXPECT_GE(keys.size(), 19u);
  for (const auto& k : keys)
    EXPECT_NE(std::string(kFullConfig).find("\n" + k + ":"), std::string::npos) << k;
}

TEST_F(ConfigFileTest, StreamListenersDefaultToTheStandardPortsAndOffTurnsThemOff) {
  Config c;
  c.address = "10.0.0.5";
  c.proxy_postgres_listen = {"off"};
  ASSERT_TRUE(ResolveConfig(&c).ok());
  EXPECT_EQ(c.proxy_tls_listen, std::vector<std::string>{"10.0.0.5:443"});
  EXPECT_EQ(c.proxy_imap_listen, std::vector<std::string>{"10.0.0.5:143"});
  EXPECT_EQ(c.proxy_pop3_listen, std::vector<std::string>{"10.0.0.5:110"});
  EXPECT_EQ(c.proxy_postgres_listen, std::vector<std::string>{"off"});
  Config d;
  d.proxy_tls_cert = "/etc/x.pem";
  Status s = ResolveConfig(&d);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("proxy_tls_cert and proxy_tls_key go together"), std::string::npos)
      << s.ToString();
}

TEST_F(ConfigFileTest, EmptyFileKeepsTheDefaults) {
  for (const char* text : {"", "\n", "# only a comment\n", "---\n"}) {
    Config c;
    std::string path = Write(text);
    Status s = LoadConfigFile(path, &c);
    ASSERT_TRUE(s.ok()) << "'" << text << "': " << s.ToString();
    EXPECT_EQ(c.config_path, path);
    Config d;
    EXPECT_EQ(c.data_dir, d.data_dir);
    EXPECT_EQ(c.etcd_endpoints, d.etcd_endpoints);
    EXPECT_EQ(c.lease_ttl_seconds, d.lease_ttl_seconds);
    EXPECT_EQ(c.log_level, d.log_level);
  }
}

TEST_F(ConfigFileTest, DefaultsResolve) {
  Config c;
  Status s = ResolveConfig(&c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c.api_listen, "127.0.0.1:7480");
  EXPECT_EQ(c.etcd_prefix, "/hc/");
  EXPECT_GT(c.memory_bytes, 0u);
  EXPECT_EQ(c.cpu_millis, std::max(1u, std::thread::hardware_concurrency()) * 1000);
}

TEST_F(ConfigFileTest, MissingFileIsNotFound) {
  Config c;
  Status s = LoadConfigFile(JoinPath(dir_, "nope.yaml"), &c);
  EXPECT_EQ(s.code(), Code::kNotFound) << s.ToString();
  EXPECT_NE(s.message().find("nope.yaml"), std::string::npos) << s.message();
}

TEST_F(ConfigFileTest, UnknownKeyIsNamedWithItsLine) {
  std::string m = LoadError("data_dir: /srv/hc\nlog_level: info\ncolour: blue\n");
  EXPECT_NE(m.find(last_path_ + ":3:"), std::string::npos) << m;
  EXPECT_NE(m.find("unknown option 'colour'"), std::string::npos) << m;
  EXPECT_NE(m.find("hcd --help"), std::string::npos) << m;
  // Keys are case-sensitive: a near miss is unknown too.
  m = LoadError("\n\nLog_Level: info\n");
  EXPECT_NE(m.find(":3: unknown option 'Log_Level'"), std::string::npos) << m;
}

TEST_F(ConfigFileTest, NonScalarKeysAreErrorsNotCrashes) {
  std::string m = LoadError("[a, b]: 1\n");
  EXPECT_NE(m.find(last_path_ + ":1: option names are plain words"), std::string::npos) << m;
  m = LoadError("log_level: info\n? {x: y}\n: 2\n");
  EXPECT_NE(m.find(last_path_ + ":2: option names are plain words"), std::string::npos) << m;
  m = LoadError("~: 1\n");
  EXPECT_NE(m.find("option names are plain words"), std::string::npos) << m;
}

TEST_F(ConfigFileTest, FilesThatAreNotAMapOrNotYamlAreRejected) {
  std::string m = LoadError("- data_dir\n- log_level\n");
  EXPECT_NE(m.find("must be a map of 'key: value' lines"), std::string::npos) << m;
  m = LoadError("just words\n");
  EXPECT_NE(m.find("must be a map"), std::string::npos) << m;
  m = LoadError("data_dir: [unclosed\n");
  EXPECT_NE(m.find(last_path_), std::string::npos) << m;
  m = LoadError("data_dir: /a\n  bad indent: 1\n");
  EXPECT_NE(m.find(last_path_), std::string::npos) << m;
}

TEST_F(ConfigFileTest, WrongTypesNameTheOptionAndLine) {
  struct Case {
    const char* text;
    const char* want;  // in the message, after "<path>:<line>: "
  };
  const Case cases[] = {
      {"lease_ttl_seconds: three\n",
       "lease_ttl_seconds: 'three' must be a whole number from 2 to 60"},
      {"lease_ttl_seconds: 2.5\n", "lease_ttl_seconds: '2.5' must be a whole number from 2 to 60"},
      {"lease_ttl_seconds: [3]\n", "lease_ttl_seconds must be a single value"},
      {"lease_ttl_seconds:\n", "lease_ttl_seconds must be a single value"},
      {"status_interval_seconds: {a: 1}\n", "status_interval_seconds must be a single value"},
      {"reconcile_interval_ms: 0x10\n", "reconcile_interval_ms: '0x10' must be a whole number"},
      {"data_dir: [/a, /b]\n", "data_dir must be a single value"},
      {"node_id: {x: 1}\n", "node_id must be a single value"},
      {"log_level: [debug]\n", "log_level must be a single value"},
      {"etcd_endpoints: {a: 1}\n", "etcd_endpoints must be a list like [a, b]"},
      {"etcd_endpoints:\n  - [http://a:1]\n", "etcd_endpoints must be a list of plain values"},
  };
  for (const auto& c : cases) {
    std::string m = LoadError(c.text);
    EXPECT_NE(m.find(last_path_ + ":1: " + c.want), std::string::npos)
        << "for: " << c.text << "got: " << m;
  }
}

TEST_F(ConfigFileTest, IntegerOptionsEnforceTheirRanges) {
  struct Case {
    const char* key;
    int lo, hi;
  };
  for (const Case& c : {Case{"lease_ttl_seconds", 2, 60}, Case{"status_interval_seconds", 1, 3600},
                        Case{"reconcile_interval_ms", 100, 600000}}) {
    const std::string range = "from " + std::to_string(c.lo) + " to " + std::to_string(c.hi);
    for (int bad : {c.lo - 1, c.hi + 1, -5}) {
      std::string m = LoadError(std::string(c.key) + ": " + std::to_string(bad) + "\n");
      EXPECT_NE(m.find(std::string(c.key) + ": '" + std::to_string(bad) +
                       "' must be a whole number " + range),
                std::string::npos)
          << m;
    }
    std::string m = LoadError(std::string(c.key) + ": 99999999999999999999\n");
    EXPECT_NE(m.find(range), std::string::npos) << m;
    for (int good : {c.lo, c.hi}) {
      Config cfg;
      Status s =
          LoadConfigFile(Write(std::string(c.key) + ": " + std::to_string(good) + "\n"), &cfg);
      EXPECT_TRUE(s.ok()) << c.key << " " << good << ": " << s.ToString();
    }
  }
}

TEST_F(ConfigFileTest, EtcdEndpointsTakeAListOrOneUrl) {
  Config c;
  Status s = LoadConfigFile(Write("etcd_endpoints: http://10.1.1.1:2379\n"), &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c.etcd_endpoints, std::vector<std::string>{"http://10.1.1.1:2379"});

  s = LoadConfigFile(Write("etcd_endpoints: [http://a:1, 'http://b:2']\n"), &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c.etcd_endpoints, (std::vector<std::string>{"http://a:1", "http://b:2"}));

  // The file replaces the default list rather than adding to it.
  Config d;
  s = LoadConfigFile(Write("etcd_endpoints:\n  - http://x:2379\n"), &d);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(d.etcd_endpoints, std::vector<std::string>{"http://x:2379"});

  // An empty list loads, and ResolveConfig says what is missing.
  s = LoadConfigFile(Write("etcd_endpoints: []\n"), &d);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(d.etcd_endpoints.empty());
  s = ResolveConfig(&d);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("no etcd endpoints configured"), std::string::npos) << s.message();
}

// ---------------------------------------------------------------- ResolveConfig

// A valid config to break one field at a time.
Config Valid() {
  Config c;
  c.data_dir = "/srv/hc";
  c.address = "10.0.0.5";
  c.memory_capacity = "4G";
  c.cpu_capacity = "2";
  return c;
}

struct BadValue {
  const char* what;
  void (*set)(Config*);
  std::vector<const char*> want;  // all must be in the message
};

void PrintTo(const BadValue& b, std::ostream* os) {
  *os << b.what;
}

class ResolveConfigBadValueTest : public ::testing::TestWithParam<BadValue> {};

TEST_P(ResolveConfigBadValueTest, IsRejectedWithAnActionableMessage) {
  Config c = Valid();
  ASSERT_TRUE(ResolveConfig(&c).ok());
  c = Valid();
  GetParam().set(&c);
  Status s = ResolveConfig(&c);
  ASSERT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  for (const char* w : GetParam().want)
    EXPECT_NE(s.message().find(w), std::string::npos) << "want '" << w << "' in: " << s.message();
}

const BadValue kBadValues[] = {
    {"node_id_underscore",
     [](Config* c) { c->node_id = "node_1"; },
     {"node_id", "'node_1'", "use only a-z, 0-9 and '-'"}},
    {"node_id_upper",
     [](Config* c) { c->node_id = "Node1"; },
     {"node_id", "'Node1'", "lower-case"}},
    {"node_id_long",
     [](Config* c) { c->node_id = std::string(64, 'a'); },
     {"node_id", "1 to 63 characters"}},
    {"node_id_dash", [](Config* c) { c->node_id = "-n1"; }, {"node_id", "must start with"}},
    {"data_dir_empty", [](Config* c) { c->data_dir = ""; }, {"data_dir must be an absolute path"}},
    {"data_dir_relative",
     [](Config* c) { c->data_dir = "var/hc"; },
     {"data_dir must be an absolute path", "'var/hc'"}},
    {"address_empty", [](Config* c) { c->address = ""; }, {"address"}},
    {"address_port", [](Config* c) { c->address = "10.0.0.5:99999"; }, {"address", "99999"}},
    {"api_listen", [](Config* c) { c->api_listen = "10.0.0.5:http"; }, {"api_listen"}},
    {"api_listen_port",
     [](Config* c) { c->api_listen = "10.0.0.5:70000"; },
     {"api_listen", "70000"}},
    {"datacenter",
     [](Config* c) { c->datacenter = "DC 1"; },
     {"datacenter (same rules as node ids)", "'DC 1'"}},
    {"datacenter_empty", [](Config* c) { c->datacenter = ""; }, {"datacenter"}},
    {"etcd_none", [](Config* c) { c->etcd_endpoints.clear(); }, {"no etcd endpoints configured"}},
    {"etcd_https",
     [](Config* c) { c->etcd_endpoints = {"https://10.0.0.1:2379"}; },
     {"https is not supported", "use http://"}},
    {"etcd_bad_url",
     [](Config* c) {
       c->etcd_endpoints = {"http://10.0.0.1:2379", "http://:x"};
     },
     {"etcd endpoint 'http://:x'"}},
    {"etcd_prefix_relative",
     [](Config* c) { c->etcd_prefix = "hc/"; },
     {"etcd_prefix must start with '/'", "'hc/'"}},
    {"etcd_prefix_empty", [](Config* c) { c->etcd_prefix = ""; }, {"etcd_prefix must start"}},
    {"storage_backend",
     [](Config* c) { c->storage_backend = "btrfs"; },
     {"storage_backend must be auto, dir or zfs", "'btrfs'"}},
    {"zfs_without_dataset",
     [](Config* c) { c->storage_backend = "zfs"; },
     {"storage_backend zfs needs zfs_dataset", "tank/hc"}},
    {"runtime_backend",
     [](Config* c) { c->runtime_backend = "docker"; },
     {"runtime_backend must be auto, runc or process", "'docker'"}},
    {"log_level",
     [](Config* c) { c->log_level = "verbose"; },
     {"log_level must be debug, info, warn or error"}},
    {"memory_not_a_size",
     [](Config* c) { c->memory_capacity = "lots"; },
     {"memory_capacity", "'lots'"}},
    {"memory_bad_unit",
     [](Config* c) { c->memory_capacity = "16Q"; },
     {"memory_capacity", "use K, M, G or T"}},
    {"memory_too_small",
     [](Config* c) { c->memory_capacity = "32M"; },
     {"memory_capacity must be at least 64M"}},
    {"memory_empty", [](Config* c) { c->memory_capacity = ""; }, {"memory_capacity"}},
    {"cpu_words",
     [](Config* c) { c->cpu_capacity = "many"; },
     {"cpu_capacity must be auto or a number of cores like 3.5", "'many'"}},
    {"cpu_zero", [](Config* c) { c->cpu_capacity = "0"; }, {"cpu_capacity", "'0'"}},
    {"cpu_too_many", [](Config* c) { c->cpu_capacity = "5000"; }, {"cpu_capacity", "'5000'"}},
    {"cpu_trailing", [](Config* c) { c->cpu_capacity = "2 cores"; }, {"cpu_capacity"}},
    {"cpu_empty", [](Config* c) { c->cpu_capacity = ""; }, {"cpu_capacity"}},
    {"cpu_nan", [](Config* c) { c->cpu_capacity = "nan"; }, {"cpu_capacity"}},
    {"join_token_not_a_token",
     [](Config* c) { c->join_token = "abc"; },
     {"join_token", "must start with 'hcjoin1.'", "hc cluster join-token"}},
    {"join_token_cut_short",
     [](Config* c) { c->join_token = "hcjoin1.0123456789ab.abc"; },
     {"join_token", "3 parts"}},
    {"join_token_and_file",
     [](Config* c) {
       c->join_token =
           "hcjoin1.0123456789ab.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA."
           "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
       c->join_token_file = "/etc/hybridcluster/join-token";
     },
     {"join_token or join_token_file, not both"}},
    {"join_token_file_relative",
     [](Config* c) { c->join_token_file = "join-token"; },
     {"join_token_file must be an absolute path"}},
};

INSTANTIATE_TEST_SUITE_P(AllOptions, ResolveConfigBadValueTest, ::testing::ValuesIn(kBadValues),
                         [](const auto& info) { return std::string(info.param.what); });

TEST(ResolveConfigTest, FillsDerivedValues) {
  Config c = Valid();
  c.etcd_prefix = "/a/b";
  c.memory_capacity = "1.5G";
  c.cpu_capacity = "0.25";
  c.node_id = "n-1";
  Status s = ResolveConfig(&c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c.etcd_prefix, "/a/b/");
  EXPECT_EQ(c.memory_bytes, 3ull << 29);
  EXPECT_EQ(c.cpu_millis, 250u);
  EXPECT_EQ(c.api_listen, "10.0.0.5:7480");  // <address>:7480

  Config v6 = Valid();
  v6.address = "fd00::5";
  s = ResolveConfig(&v6);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(v6.api_listen, "[fd00::5]:7480");

  Config min = Valid();
  min.memory_capacity = "64M";
  min.cpu_capacity = "0.1";
  s = ResolveConfig(&min);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(min.memory_bytes, 64ull << 20);
  EXPECT_EQ(min.cpu_millis, 100u);
}

TEST(ConfigHelpTest, ListsEveryOptionWithItsDefault) {
  std::string help = ConfigHelp();
  EXPECT_NE(help.find("lease_ttl_seconds"), std::string::npos);
  EXPECT_NE(help.find("[default: 3]"), std::string::npos);
  EXPECT_NE(help.find("[default: [http://127.0.0.1:2379]]"), std::string::npos);
  size_t lines = 0;
  for (size_t pos = help.find("\n  "); pos != std::string::npos; pos = help.find("\n  ", pos + 1))
    lines++;
  EXPECT_EQ(HelpKeys().size(), lines);
  for (const auto& k : HelpKeys()) EXPECT_NE(help.find("  " + k + " "), std::string::npos) << k;
}

// ---------------------------------------------------------------- ParseSize

TEST(ParseSizeTest, AcceptsBytesAndBinaryUnits) {
  struct Case {
    const char* in;
    uint64_t want;
  };
  const Case cases[] = {
      {"0", 0},
      {"1048576", 1048576},
      {"1K", 1024},
      {"1k", 1024},
      {"512M", 512ull << 20},
      {"16G", 16ull << 30},
      {"16g", 16ull << 30},
      {"1.5T", 3ull << 39},
      {"0.5K", 512},
      {"1KiB", 1024},
      {"1KB", 1024},
      {"2MB", 2ull << 20},
      {"2Mi", 2ull << 20},
      {"2mib", 2ull << 20},
      {"3GiB", 3ull << 30},
      {"1024T", 1ull << 50},
      {"7B", 7},
  };
  for (const auto& c : cases) {
    auto r = ParseSize(c.in);
    ASSERT_TRUE(r.ok()) << c.in << ": " << r.status().ToString();
    EXPECT_EQ(*r, c.want) << c.in;
  }
}

TEST(ParseSizeTest, RejectsWhatIsNotASize) {
  struct Case {
    const char* in;
    const char* want;
  };
  const Case cases[] = {
      {"", "empty size"},
      {"G", "must start with a number"},
      {"-1G", "must start with a number"},
      {" 1G", "must start with a number"},
      {"1 G", "unknown unit"},
      {"12X", "unknown unit (use K, M, G or T)"},
      {"1e9", "unknown unit"},
      {"1P", "unknown unit"},
      {"1GG", "unknown unit"},
      {"99999999T", "too large"},
  };
  for (const auto& c : cases) {
    auto r = ParseSize(c.in);
    ASSERT_FALSE(r.ok()) << "'" << c.in << "' parsed as " << *r;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << c.in;
    EXPECT_NE(r.status().message().find(c.want), std::string::npos)
        << "'" << c.in << "': " << r.status().message();
  }
}

}  // namespace
}  // namespace hc::agent

namespace hc::agent {
namespace {

TEST_F(ConfigFileTest, JoinTokenComesFromTheKeyOrTheFile) {
  const std::string token =
      "hcjoin1.0123456789ab.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA."
      "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
  Config c;
  auto none = JoinTokenOf(c);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, "");
  c.join_token = token;
  EXPECT_EQ(*JoinTokenOf(c), token);
  c.join_token = "";
  c.join_token_file = Write(token + "\n");
  auto from_file = JoinTokenOf(c);
  ASSERT_TRUE(from_file.ok()) << from_file.status().ToString();
  EXPECT_EQ(*from_file, token);
  c.join_token_file = Write("not a token\n");
  auto bad = JoinTokenOf(c);
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  EXPECT_NE(bad.status().message().find(c.join_token_file), std::string::npos);
  c.join_token_file = JoinPath(dir_, "missing");
  EXPECT_FALSE(JoinTokenOf(c).ok());
}

}  // namespace
}  // namespace hc::agent
