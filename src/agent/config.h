// hcd's configuration: /etc/hybridcluster/hcd.yaml (or --config), every
// option with a default, command-line flags override the file. `hcd --help`
// prints the same table (ConfigHelp()).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "dns/zone.h"

namespace hc::agent {

struct Config {
  std::string config_path;  // where it was read from ("" = defaults only)
  std::string node_id;      // "" = generated once, kept in <data_dir>/node-id
  std::string node_name;    // "" = host name
  std::string data_dir = "/var/lib/hybridcluster";
  std::string address = "127.0.0.1";  // advertised to other nodes and to hc
  std::string api_listen;             // "" = <address>:7480
  std::string datacenter = "dc1";
  std::vector<std::string> etcd_endpoints = {"http://127.0.0.1:2379"};
  std::string etcd_prefix = "/hc/";
  int lease_ttl_seconds = 3;
  int status_interval_seconds = 10;      // usage refresh; state changes are reported at once
  int reconcile_interval_ms = 5000;      // periodic re-check besides watch events
  std::string storage_backend = "auto";  // auto | dir | zfs
  std::string zfs_dataset;               // zfs: parent dataset, e.g. "tank/hc"
  std::string runtime_backend = "auto";  // auto | runc | process
  std::string cgroup_parent = "hybridcluster";
  std::string memory_capacity = "auto";       // "auto" (90% of RAM) or a size like "16G"
  std::string cpu_capacity = "auto";          // "auto" (all cores) or cores like "3.5"
  std::string api_token_file;                 // "" = no token required (trusted network only)
  std::string join_token;                     // used only while <data_dir>/pki/node.crt is missing
  std::string join_token_file;                // the same, read from a file
  std::string log_level = "info";             // debug | info | warn | error
  std::vector<std::string> public_addresses;  // [] = [address]
  // DNS (off while dns_zones is empty)
  std::vector<std::string> dns_zones;
  std::vector<std::string> dns_listen;  // [] = each public address, port 53
  int dns_ttl = 10;
  int dns_name_servers = 2;
  std::string dns_hostmaster;
  int dns_workers = 0;
  // HTTP proxy
  std::string proxy = "on";               // on | off
  std::vector<std::string> proxy_listen;  // [] = each public address, port 80
  int proxy_internal_port = 7482;         // on `address`, for other nodes' proxies
  int proxy_workers = 0;
  // Stream listeners; [] = each public address on the standard port, [off] = none.
  std::vector<std::string> proxy_tls_listen;       // :443, SNI (termination or passthrough)
  std::vector<std::string> proxy_postgres_listen;  // :5432
  std::vector<std::string> proxy_imap_listen;      // :143
  std::vector<std::string> proxy_pop3_listen;      // :110
  std::string proxy_tls_cert;  // default certificate (PEM chain) for TLS names without their own
  std::string proxy_tls_key;
  // Replication
  int replication_port = 7483;  // on `address`, mutual TLS, ALPN hc-repl
  int replication_interval_seconds = 30;
  std::string retention = "1h: keep all | 24h: 1 per hour | 30d: 1 per day | 12m: 1 per month";
  int replication_max_transfers = 8;
  int scrub_interval_hours = 168;

  // Derived (ResolveConfig)
  uint64_t memory_bytes = 0;
  uint32_t cpu_millis = 0;
};

// Reads a YAML file into *cfg (keys as in ConfigHelp; unknown keys are
// errors naming the key and the file's line).
Status LoadConfigFile(const std::string& path, Config* cfg);
// Checks values and fills the derived fields.
Status ResolveConfig(Config* cfg);
// The join token of the config: join_token, or the contents of
// join_token_file (trimmed); "" when neither is set.
Result<std::string> JoinTokenOf(const Config& cfg);
// The DNS settings of a resolved config.
dns::DnsSettings DnsSettingsOf(const Config& c);
// The option table for --help and docs: key, default, meaning.
std::string ConfigHelp();

}  // namespace hc::agent
