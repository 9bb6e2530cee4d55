#include "agent/config.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <array>
#include <cmath>
#include <functional>
#include <map>
#include <thread>

#include "cluster/etcd_client.h"
#include "cluster/state.h"
#include "common/fs.h"
#include "common/units.h"
#include "dns/zone.h"
#include "net/socket.h"
#include "pki/join.h"
#include "replication/retention.h"

namespace hc::agent {
namespace {

struct Option {
  const char* key;
  const char* def;
  const char* help;
  std::function<Status(Config*, const YAML::Node&)> set;
};

Status Scalar(const YAML::Node& n, const char* key, std::string* out) {
  if (!n.IsScalar()) return InvalidArgument(std::string(key) + " must be a single value");
  *out = n.as<std::string>();
  return Status::Ok();
}

// A list, or a single value taken as a list of one.
Status List(const YAML::Node& n, const char* key, std::vector<std::string>* out) {
  out->clear();
  if (n.IsScalar()) {
    out->push_back(n.as<std::string>());
    return Status::Ok();
  }
  if (n.IsNull()) return Status::Ok();
  if (!n.IsSequence()) return InvalidArgument(std::string(key) + " must be a list like [a, b]");
  for (const auto& e : n) {
    if (!e.IsScalar()) return InvalidArgument(std::string(key) + " must be a list of plain values");
    out->push_back(e.as<std::string>());
  }
  return Status::Ok();
}

Status Int(const YAML::Node& n, const char* key, int lo, int hi, int* out) {
  std::string s;
  HC_RETURN_IF_ERROR(Scalar(n, key, &s));
  char* end = nullptr;
  long v = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || v < lo || v > hi)
    return InvalidArgument(std::string(key) + ": '" + s + "' must be a whole number from " +
                           std::to_string(lo) + " to " + std::to_string(hi));
  *out = static_cast<int>(v);
  return Status::Ok();
}

#define STR_OPT(k, field, d, h)                                                     \
  {                                                                                 \
    k, d, h, [](Config* c, const YAML::Node& n) { return Scalar(n, k, &c->field); } \
  }
#define LIST_OPT(k, field, d, h)                                                  \
  {                                                                               \
    k, d, h, [](Config* c, const YAML::Node& n) { return List(n, k, &c->field); } \
  }
#define INT_OPT(k, field, lo, hi, d, h)                                                  \
  {                                                                                      \
    k, d, h, [](Config* c, const YAML::Node& n) { return Int(n, k, lo, hi, &c->field); } \
  }

const std::vector<Option>& Options() {
  static const std::vector<Option> kOptions = {
      STR_OPT("node_id", node_id, "(generated)",
              "stable id of this node; generated on first start and kept in <data_dir>/node-id"),
      STR_OPT("node_name", node_name, "(host name)", "name shown to people"),
      STR_OPT("data_dir", data_dir, "/var/lib/hybridcluster",
              "volumes, runtime state and the node id live here"),
      STR_OPT("address", address, "127.0.0.1", "address other nodes and hc use to reach this node"),
      STR_OPT("api_listen", api_listen, "<address>:7480", "where the REST API listens"),
      STR_OPT("datacenter", datacenter, "dc1",
              "data centre label; replicas prefer other data centres"),
      LIST_OPT("etcd_endpoints", etcd_endpoints, "[http://127.0.0.1:2379]",
               "etcd client URLs (a list); a failing member is skipped"),
      STR_OPT("etcd_prefix", etcd_prefix, "/hc/", "all cluster keys live under this etcd prefix"),
      INT_OPT("lease_ttl_seconds", lease_ttl_seconds, 2, 60, "3",
              "a node that stops renewing for this long is considered gone"),
      INT_OPT("status_interval_seconds", status_interval_seconds, 1, 3600, "10",
              "how often resource usage is reported (state changes are reported at once)"),
      INT_OPT("reconcile_interval_ms", reconcile_interval_ms, 100, 600000, "5000",
              "periodic re-check of every app (changes in etcd are acted on at once)"),
      STR_OPT("storage_backend", storage_backend, "auto",
              "auto | dir | zfs (auto: zfs when zfs_dataset is set, else dir)"),
      STR_OPT("zfs_dataset", zfs_dataset, "", "zfs: parent dataset for volumes, e.g. tank/hc"),
      STR_OPT("runtime_backend", runtime_backend, "auto",
              "auto | runc | process (auto: runc when root and runc is installed)"),
      STR_OPT("cgroup_parent", cgroup_parent, "hybridcluster", "cgroup under which apps run"),
      STR_OPT("memory_capacity", memory_capacity, "auto",
              "memory offered to apps: auto (90% of RAM) or a size like 16G"),
      STR_OPT("cpu_capacity", cpu_capacity, "auto", "cores offered to apps: auto or e.g. 3.5"),
      STR_OPT("api_token_file", api_token_file, "",
              "file holding the API bearer token; empty = no token (trusted network only)"),
      STR_OPT("join_token", join_token, "",
              "token from `hc cluster join-token` on a member, to join an existing cluster; read "
              "only while <data_dir>/pki/node.crt does not exist (flag: --join)"),
      STR_OPT("join_token_file", join_token_file, "",
              "file holding the join token instead (flag: --join-file)"),
      STR_OPT("log_level", log_level, "info", "debug | info | warn | error"),
      LIST_OPT("public_addresses", public_addresses, "[<address>]",
               "IPv4/IPv6 addresses the world reaches this node at (DNS A/AAAA records)"),
      LIST_OPT("dns_zones", dns_zones, "[] (DNS off)",
               "zones this cluster serves, e.g. [hosting.example.net, customer.org]; the first "
               "holds the name servers ns1, ns2...; the same list on every node"),
      LIST_OPT("dns_listen", dns_listen, "[<each public address>:53]",
               "where the DNS server listens (UDP and TCP)"),
      INT_OPT("dns_ttl", dns_ttl, 1, 86400, "10", "TTL of every DNS record, in seconds"),
      INT_OPT("dns_name_servers", dns_name_servers, 1, 9, "2",
              "name server names (ns1..nsN), spread over data centres; more if more DCs"),
      STR_OPT("dns_hostmaster", dns_hostmaster, "hostmaster.<first zone>",
              "SOA contact as a name (hostmaster.example.net = hostmaster@example.net)"),
      INT_OPT("dns_workers", dns_workers, 0, 64, "0",
              "UDP worker threads per DNS address (0 = one per core)"),
      STR_OPT("proxy", proxy, "on", "on | off: the HTTP proxy that serves any app from any node"),
      LIST_OPT("proxy_listen", proxy_listen, "[<each public address>:80]",
               "where the HTTP proxy accepts clients"),
      INT_OPT("proxy_internal_port", proxy_internal_port, 1, 65535, "7482",
              "port on `address` where other nodes' proxies forward requests for apps here"),
      INT_OPT("proxy_workers", proxy_workers, 0, 64, "0",
              "proxy worker threads (0 = one per core)"),
      LIST_OPT("proxy_tls_listen", proxy_tls_listen, "[<each public address>:443]",
               "TLS by SNI: terminated with the app's (or the default) certificate, or passed "
               "through to apps with protocol https; [off] = none"),
      LIST_OPT("proxy_postgres_listen", proxy_postgres_listen, "[<each public address>:5432]",
               "PostgreSQL, routed by database name (= app name); [off] = none"),
      LIST_OPT("proxy_imap_listen", proxy_imap_listen, "[<each public address>:143]",
               "IMAP, routed by the login's domain; [off] = none"),
      LIST_OPT("proxy_pop3_listen", proxy_pop3_listen, "[<each public address>:110]",
               "POP3, routed by the login's domain; [off] = none"),
      STR_OPT("proxy_tls_cert", proxy_tls_cert, "",
              "PEM file: certificate chain for TLS names without a certificate of their own"),
      STR_OPT("proxy_tls_key", proxy_tls_key, "", "PEM file: the key of proxy_tls_cert"),
      INT_OPT("replication_port", replication_port, 1, 65535, "7483",
              "port on `address` where other nodes push replication streams (mutual TLS)"),
      INT_OPT("replication_interval_seconds", replication_interval_seconds, 1, 86400, "30",
              "cluster default: how often an app's volume is checked, snapshotted when changed "
              "and pushed to its replicas (apps may set snapshot_interval_seconds); keep it the "
              "same on every node"),
      STR_OPT("retention", retention,
              "\"1h: keep all | 24h: 1 per hour | 30d: 1 per day | 12m: 1 per month\"",
              "cluster default: which snapshots to keep (apps may set their own); keep it the "
              "same on every node"),
      INT_OPT("replication_max_transfers", replication_max_transfers, 1, 256, "8",
              "replication streams this node sends at once (at most 2 to one replica)"),
      INT_OPT("scrub_interval_hours", scrub_interval_hours, 0, 8760, "168",
              "re-read and check every volume this often, at low priority (0 = never)"),
  };
  return kOptions;
}

}  // namespace

Status LoadConfigFile(const std::string& path, Config* cfg) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return NotFound("cannot read config file " + path);
  } catch (const YAML::Exception& e) {
    return InvalidArgument(path + ": " + e.what());
  }
  cfg->config_path = path;
  if (root.IsNull()) return Status::Ok();  // empty file: all defaults
  if (!root.IsMap()) return InvalidArgument(path + ": must be a map of 'key: value' lines");
  for (auto it = root.begin(); it != root.end(); ++it) {
    auto line = std::to_string(it->first.Mark().line + 1);
    // as<std::string>() would throw on a list or map used as a key.
    if (!it->first.IsScalar())
      return InvalidArgument(path + ":" + line + ": option names are plain words like 'data_dir'");
    std::string key = it->first.as<std::string>();
    const Option* opt = nullptr;
    for (const auto& o : Options())
      if (key == o.key) opt = &o;
    if (!opt)
      return InvalidArgument(path + ":" + line + ": unknown option '" + key +
                             "' (hcd --help lists the options)");
    try {
      Status s = opt->set(cfg, it->second);
      if (!s.ok()) return InvalidArgument(path + ":" + line + ": " + s.message());
    } catch (const YAML::Exception& e) {
      return InvalidArgument(path + ":" + line + ": " + key + ": " + e.what());
    }
  }
  return Status::Ok();
}

Status ResolveConfig(Config* c) {
  if (!c->node_id.empty())
    HC_RETURN_IF_ERROR(cluster::ValidateNodeId(c->node_id).Annotate("node_id"));
  if (c->data_dir.empty() || c->data_dir[0] != '/')
    return InvalidArgument("data_dir must be an absolute path, got '" + c->data_dir + "'");
  HC_RETURN_IF_ERROR(net::ParseHostPort(c->address, 1).status().Annotate("address"));
  if (c->api_listen.empty()) c->api_listen = net::HostPort{c->address, 7480}.ToString();
  HC_RETURN_IF_ERROR(net::ParseHostPort(c->api_listen).status().Annotate("api_listen"));
  HC_RETURN_IF_ERROR(
      cluster::ValidateNodeId(c->datacenter).Annotate("datacenter (same rules as node ids)"));
  HC_RETURN_IF_ERROR(cluster::EtcdClient::ValidateEndpoints(c->etcd_endpoints));
  if (c->etcd_prefix.empty() || c->etcd_prefix[0] != '/')
    return InvalidArgument("etcd_prefix must start with '/', got '" + c->etcd_prefix + "'");
  if (c->etcd_prefix.back() != '/') c->etcd_prefix += '/';
  if (c->storage_backend != "auto" && c->storage_backend != "dir" && c->storage_backend != "zfs")
    return InvalidArgument("storage_backend must be auto, dir or zfs, got '" + c->storage_backend +
                           "'");
  if (c->storage_backend == "zfs" && c->zfs_dataset.empty())
    return InvalidArgument("storage_backend zfs needs zfs_dataset (e.g. tank/hc)");
  if (c->public_addresses.empty()) c->public_addresses = {c->address};
  for (const auto& a : c->public_addresses) {
    std::array<uint8_t, 16> bytes;
    bool v6 = false;
    if (!dns::ParseAddress(a, &bytes, &v6))
      return InvalidArgument("public_addresses: '" + a +
                             "' is not an IPv4 or IPv6 address (names are not allowed here)");
  }
  if (!c->dns_zones.empty()) {
    dns::DnsSettings ds = DnsSettingsOf(*c);
    HC_RETURN_IF_ERROR(dns::ValidateDnsSettings(ds));
    if (c->dns_listen.empty())
      for (const auto& a : c->public_addresses)
        c->dns_listen.push_back(net::HostPort{a, 53}.ToString());
    for (const auto& l : c->dns_listen)
      HC_RETURN_IF_ERROR(net::ParseHostPort(l, 53).status().Annotate("dns_listen"));
  }
  if (auto grid = replication::ParseRetention(c->retention); !grid.ok())
    return InvalidArgument("retention: " + grid.status().message());
  if (c->proxy != "on" && c->proxy != "off")
    return InvalidArgument("proxy must be on or off, got '" + c->proxy + "'");
  if (c->proxy == "on") {
    if (c->proxy_listen.empty())
      for (const auto& a : c->public_addresses)
        c->proxy_listen.push_back(net::HostPort{a, 80}.ToString());
    for (const auto& l : c->proxy_listen)
      HC_RETURN_IF_ERROR(net::ParseHostPort(l, 80).status().Annotate("proxy_listen"));
    struct {
      std::vector<std::string>* list;
      const char* key;
      uint16_t port;
    } streams[] = {{&c->proxy_tls_listen, "proxy_tls_listen", 443},
                   {&c->proxy_postgres_listen, "proxy_postgres_listen", 5432},
                   {&c->proxy_imap_listen, "proxy_imap_listen", 143},
                   {&c->proxy_pop3_listen, "proxy_pop3_listen", 110}};
    for (auto& s : streams) {
      if (s.list->size() == 1 && (*s.list)[0] == "off") continue;  // node.cc: none
      if (s.list->empty())
        for (const auto& a : c->public_addresses)
          s.list->push_back(net::HostPort{a, s.port}.ToString());
      for (const auto& l : *s.list)
        HC_RETURN_IF_ERROR(net::ParseHostPort(l, s.port).status().Annotate(s.key));
    }
    if (c->proxy_tls_cert.empty() != c->proxy_tls_key.empty())
      return InvalidArgument(
          "proxy_tls_cert and proxy_tls_key go together: set both (PEM files) or neither");
  }
  if (!c->join_token.empty() && !c->join_token_file.empty())
    return InvalidArgument("set join_token or join_token_file, not both");
  if (!c->join_token.empty())
    HC_RETURN_IF_ERROR(pki::ParseJoinToken(c->join_token).status().Annotate("join_token"));
  if (!c->join_token_file.empty() && c->join_token_file[0] != '/')
    return InvalidArgument("join_token_file must be an absolute path, got '" + c->join_token_file +
                           "'");
  if (c->runtime_backend != "auto" && c->runtime_backend != "runc" &&
      c->runtime_backend != "process")
    return InvalidArgument("runtime_backend must be auto, runc or process, got '" +
                           c->runtime_backend + "'");
  if (c->log_level != "debug" && c->log_level != "info" && c->log_level != "warn" &&
      c->log_level != "error")
    return InvalidArgument("log_level must be debug, info, warn or error");
  if (c->memory_capacity == "auto") {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    c->memory_bytes = static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) / 10 * 9;
  } else {
    auto bytes = ParseSize(c->memory_capacity);
    if (!bytes.ok()) return bytes.status().Annotate("memory_capacity (auto or a size like 16G)");
    c->memory_bytes = *bytes;
    if (c->memory_bytes < (64ull << 20))
      return InvalidArgument("memory_capacity must be at least 64M");
  }
  if (c->cpu_capacity == "auto") {
    c->cpu_millis = std::max(1u, std::thread::hardware_concurrency()) * 1000;
  } else {
    char* end = nullptr;
    double cores = std::strtod(c->cpu_capacity.c_str(), &end);
    if (*end != '\0' || !(cores >= 0.1 && cores <= 4096))
      return InvalidArgument("cpu_capacity must be auto or a number of cores like 3.5, got '" +
                             c->cpu_capacity + "'");
    c->cpu_millis = static_cast<uint32_t>(std::llround(cores * 1000));
  }
  return Status::Ok();
}

Result<std::string> JoinTokenOf(const Config& c) {
  if (c.join_token_file.empty()) return c.join_token;
  auto text = ReadFileToString(c.join_token_file);
  if (!text.ok()) return text.status().Annotate("join_token_file");
  std::string t = *text;
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
  HC_RETURN_IF_ERROR(pki::ParseJoinToken(t).status().Annotate(c.join_token_file));
  return t;
}

dns::DnsSettings DnsSettingsOf(const Config& c) {
  dns::DnsSettings s;
  for (std::string z : c.dns_zones) {
    if (!z.empty() && z.back() == '.') z.pop_back();
    s.zones.push_back(z);
  }
  s.ttl = static_cast<uint32_t>(c.dns_ttl);
  s.name_servers = c.dns_name_servers;
  s.hostmaster = c.dns_hostmaster;
  return s;
}

std::string ConfigHelp() {
  std::string out = "Options of /etc/hybridcluster/hcd.yaml (key: value):\n";
  for (const auto& o : Options()) {
    std::string k = std::string("  ") + o.key;
    k.resize(std::max<size_t>(k.size() + 1, 28), ' ');
    out += k + o.help + " [default: " + o.def + "]\n";
  }
  return out;
}

}  // namespace hc::agent
