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
// Netns mode (options.netns, needs root) puts node k in its own network
// namespace hcn-<tag>-<k>, joined by a veth pair (root end hcv-<tag>-<k>) to a
// bridge hcb-<tag> in the root namespace: the bridge is <subnet>.1 (etcd
// listens there), node k is <subnet>.(k+1). Code in the root namespace
// reaches every node over the bridge; PartitionNode/HealNode cut a node off
// and reconnect it, for chaos tests. The tag and the /24 are the caller's,
// so that concurrently running test binaries never share a name or subnet.
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
  // Netns mode (see above; first_octet is then unused). netns_tag: 1-8 of
  // [a-z0-9], in every interface and namespace name (interface names are at
  // most 15 bytes); netns_subnet: the first three octets of the /24, e.g.
  // "10.231.7".
  bool netns = false;
  std::string netns_tag;
  std::string netns_subnet;
  std::function<void(const std::string&)> progress;  // one line per step, or null
};

class LocalCluster {
 public:
  // Writes etcd's and every node's config under base_dir (created).
  static Result<LocalCluster> Create(LocalClusterOptions opts);
  // Reads <base_dir>/cluster.json written by an earlier Start (for `hc demo stop`).
  static Result<LocalCluster> Load(const std::string& base_dir);

  // Starts etcd and every node, then waits until all nodes are registered
  // and a leader is elected. In netns mode it first creates the bridge,
  // namespaces and veths; when none of our processes runs, it removes what a
  // crashed earlier run with the same tag left and starts from scratch.
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
  // Stops every node and etcd; apps keep running (like a real hcd stop). In
  // netns mode it then removes our bridge, veths and namespaces (by name),
  // so apps still running there lose their network.
  Status StopProcesses();
  // StopProcesses, then stops and forgets every app the nodes ran, removes
  // their cgroup parents and base_dir.
  Status Destroy();

  // Netns mode: cuts node k off from everything by taking the root end of
  // its veth down. Packets both ways are dropped from then on, silently:
  // open TCP connections hang until they time out (no RST), new ones get no
  // answer (or "no route to host" once ARP for it has failed), like a
  // pulled cable. The node's processes keep running.
  Status PartitionNode(int k);
  // Brings node k's veth back up (the bridge forwards at once: no STP).
  Status HealNode(int k);
  // True when this process can use netns mode: root, and `ip netns` can
  // create and delete a namespace. For "skipped: ..." messages.
  static bool NetnsSupported();

  bool NodeRunning(int k) const;
  pid_t NodePid(int k) const;
  pid_t EtcdPid() const;
  std::string NodeAddress(int k) const;
  std::string ApiUrl(int k) const;
  std::string EtcdUrl() const;
  // Netns mode: node k's namespace (for `ip netns exec`), "" otherwise.
  std::string NodeNetns(int k) const;
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
  std::string EtcdAddress() const;
  std::string BridgeName() const;
  std::string VethName(int k) const;
  // Creates what is missing of the bridge, namespaces and veths; `fresh`
  // first removes everything with our tag (leftovers of a crashed run).
  Status SetUpNetns(bool fresh);
  Status TearDownNetns();

  LocalClusterOptions opts_;
  pid_t etcd_pid_ = 0;
  std::vector<pid_t> node_pids_;  // index k-1
};

// Starts argv detached (new session, stdin /dev/null, stdout+stderr appended
// to log_path); returns its pid. With `netns` (a named namespace, as
// `ip netns` lists it) the process enters that network namespace before exec,
// so the pid returned is the program's own.
Result<pid_t> SpawnDetached(const std::vector<std::string>& argv, const std::string& log_path,
                            const std::string& netns = "");
// Signals pid if it is still `program` (by /proc/<pid>/exe's base name) and
// waits up to timeout_ms for it to go (then SIGKILL).
Status StopPid(pid_t pid, const std::string& program, int sig, int timeout_ms);

}  // namespace hc::devcluster
