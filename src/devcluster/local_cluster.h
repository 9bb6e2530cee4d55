// A whole cluster on one machine: a real etcd and N real hcd processes on
// loopback addresses (node k at 127.0.0.(10+k), etcd at 127.0.0.10), each
// with its own data directory, cgroup parent and log. `hc demo` and the
// cluster tests both use it. Node 1 starts first and creates the cluster CA;
// the others join with a token from a running node (docs/design.md, "Cluster
// PKI").
//
// Processes run detached (own session) so the demo outlives `hc demo`; their
// pids are kept in <base_dir>/cluster.json, and every stop is by pid, after
// checking that the pid still runs the program we started.
//
// Example:
//   LocalClusterOptions o;  o.base_dir = "/tmp/x";  o.nodes = 3;
//   HC_ASSIGN_OR_RETURN(auto c, LocalCluster::Create(o));
//   HC_RETURN_IF_ERROR(c.Start());          // etcd + 3 nodes, registered
//   ... c.ApiUrl(1) ...
//   HC_RETURN_IF_ERROR(c.Destroy());        // stops apps, nodes, etcd; removes base_dir
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "common/status.h"

namespace hc::devcluster {

struct LocalClusterOptions {
  std::string base_dir;
  int nodes = 3;
  int first_octet = 10;  // etcd at 127.0.0.<first_octet>, node k at +k
  uint16_t etcd_client_port = 2379;
  uint16_t etcd_peer_port = 2380;
  uint16_t api_port = 7480;
  std::string hcd_path;            // "" = hcd next to this executable, else PATH
  std::string etcd_path = "etcd";  // Debian: etcd-server
  std::string runtime_backend = "auto";
  std::string cgroup_prefix = "hc-demo";  // node k: <prefix>-<k>
  // Data centre of node k (1-based) = datacenters[(k-1) % size].
  std::vector<std::string> datacenters = {"dc1", "dc1", "dc2"};
  int lease_ttl_seconds = 3;
  int reconcile_interval_ms = 1000;
  std::string memory_capacity = "2G";
  std::string log_level = "info";
  // DNS on every node at <node address>:dns_port (off when dns_zones is empty).
  std::vector<std::string> dns_zones;
  uint16_t dns_port = 53;
  // The HTTP proxy on every node at <node address>:proxy_port (0 = off), and
  // its internal port for other nodes.
  uint16_t proxy_port = 0;
  uint16_t proxy_internal_port = 7482;
  // The stream listeners on <node address>:<port> (0 = off).
  uint16_t proxy_tls_port = 0;
  uint16_t proxy_postgres_port = 0;
  uint16_t proxy_imap_port = 0;
  uint16_t proxy_pop3_port = 0;
  // Replication: every node's listener at <node address>:replication_port,
  // and the cluster default interval (0 = hcd's default, 30 s).
  uint16_t replication_port = 7490;
  int replication_interval_seconds = 0;
  std::function<void(const std::string&)> progress;  // one line per step, or null
};

class LocalCluster {
 public:
  // Writes etcd's and every node's config under base_dir (created).
  static Result<LocalCluster> Create(LocalClusterOptions opts);
  // Reads <base_dir>/cluster.json written by an earlier Start (for `hc demo stop`).
  static Result<LocalCluster> Load(const std::string& base_dir);

  // Starts etcd and every node, then waits until all nodes are registered
  // and a leader is elected.
  Status Start(int timeout_ms = 30000);
  Status StartEtcd();
  // Stops etcd by pid: SIGTERM (or `sig`), waiting until it is gone.
  Status StopEtcd(int sig = 15);
  // Starts node k. A node without a certificate yet (<data dir>/pki/node.crt)
  // joins with a fresh token from a running node; when no other node runs it
  // starts without one (the first node creates the cluster CA).
  Status StartNode(int k);
  // A join token issued by node k's API (POST /v1/cluster/join-tokens), once
  // node k is registered, so a joiner finds it in etcd.
  Result<std::string> CreateJoinToken(int k, int ttl_seconds = 3600);
  Status StopNode(int k, int sig = 15);
  // Stops every node and etcd; apps keep running (like a real hcd stop).
  Status StopProcesses();
  // StopProcesses, then stops and forgets every app the nodes ran, removes
  // their cgroup parents and base_dir.
  Status Destroy();

  bool NodeRunning(int k) const;
  pid_t NodePid(int k) const;
  pid_t EtcdPid() const;
  std::string NodeAddress(int k) const;
  std::string ApiUrl(int k) const;
  std::string EtcdUrl() const;
  std::string NodeDataDir(int k) const;
  std::string NodeLog(int k) const;
  std::string NodeConfig(int k) const;
  const LocalClusterOptions& options() const { return opts_; }
  int nodes() const { return opts_.nodes; }

  // GET <api>/v1/cluster through node k until pred(body) is true.
  Status WaitCluster(int k, const std::function<bool(const std::string& json)>& pred,
                     int timeout_ms);

 private:
  explicit LocalCluster(LocalClusterOptions opts) : opts_(std::move(opts)) {}
  Status Save() const;
  Status WriteConfigs() const;
  void Say(const std::string& line) const;

  LocalClusterOptions opts_;
  pid_t etcd_pid_ = 0;
  std::vector<pid_t> node_pids_;  // index k-1
};

// Starts argv detached (new session, stdin /dev/null, stdout+stderr appended
// to log_path); returns its pid.
Result<pid_t> SpawnDetached(const std::vector<std::string>& argv, const std::string& log_path);
// Signals pid if it is still `program` (by /proc/<pid>/exe's base name) and
// waits up to timeout_ms for it to go (then SIGKILL).
Status StopPid(pid_t pid, const std::string& program, int sig, int timeout_ms);

}  // namespace hc::devcluster
