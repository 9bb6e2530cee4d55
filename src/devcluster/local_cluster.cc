#include "devcluster/local_cluster.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/fs.h"
#include "common/subprocess.h"
#include "net/http_client.h"
#include "runtime/cgroup.h"
#include "runtime/runtime.h"

namespace hc::devcluster {
namespace {

using json = nlohmann::json;

std::string SelfDir() {
  std::string p = SelfExePath();
  return p.substr(0, p.rfind('/'));
}

std::string FindHcd() {
  std::string dir = SelfDir();
  for (const auto& c :
       {dir + "/hcd", dir + "/../bin/hcd", dir + "/../src/bin/hcd", dir + "/../../src/bin/hcd"})
    if (access(c.c_str(), X_OK) == 0) return c;
  return "hcd";
}

bool Alive(pid_t pid) {
  if (pid <= 0) return false;
  // A zombie child of ours counts as gone.
  int st;
  if (waitpid(pid, &st, WNOHANG) == pid) return false;
  if (kill(pid, 0) != 0) return false;
  // So does a zombie nobody reaps (an init that does not reap orphans).
  auto stat = ReadFileToString("/proc/" + std::to_string(pid) + "/stat");
  if (!stat.ok()) return false;
  auto paren = stat->rfind(')');
  return paren == std::string::npos || paren + 2 >= stat->size() || (*stat)[paren + 2] != 'Z';
}

std::string ExeBase(pid_t pid) {
  char buf[4096];
  std::string link = "/proc/" + std::to_string(pid) + "/exe";
  ssize_t n = readlink(link.c_str(), buf, sizeof buf - 1);
  if (n <= 0) return "";
  std::string p(buf, static_cast<size_t>(n));
  auto del = p.find(" (deleted)");
  if (del != std::string::npos) p.resize(del);
  return p.substr(p.rfind('/') + 1);
}

bool ValidSubnet(const std::string& s) {
  int parts = 0;
  size_t i = 0;
  while (i <= s.size()) {
    size_t end = s.find('.', i);
    if (end == std::string::npos) end = s.size();
    std::string part = s.substr(i, end - i);
    if (part.empty() || part.size() > 3 ||
        part.find_first_not_of("0123456789") != std::string::npos || std::stoi(part) > 255)
      return false;
    parts++;
    i = end + 1;
  }
  return parts == 3;
}

bool LinkExists(const std::string& name) {
  return PathExists("/sys/class/net/" + name);
}

bool NetnsExists(const std::string& name) {
  return PathExists("/run/netns/" + name);
}

// Runs `ip args...`; an error names the command and quotes its stderr.
Status Ip(std::vector<std::string> args) {
  args.insert(args.begin(), "ip");
  HC_ASSIGN_OR_RETURN(auto r, RunCommand(args));
  if (!r.ok()) return Unavailable(DescribeFailure(args, r));
  return Status::Ok();
}

}  // namespace

Result<pid_t> SpawnDetached(const std::vector<std::string>& argv, const std::string& log_path,
                            const std::string& netns) {
  // Opened here so that a missing namespace is an error for the caller, not
  // a line in the child's log.
  UniqueFd ns;
  if (!netns.empty()) {
    std::string path = "/run/netns/" + netns;
    ns = UniqueFd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns.valid())
      return ErrnoStatus("open " + path + " (network namespace " + netns + ")", errno);
  }
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) return ErrnoStatus("pipe", errno);
  pid_t child = fork();
  if (child < 0) return ErrnoStatus("fork", errno);
  if (child == 0) {
    // Child: new session, then fork again so the daemon is nobody's child.
    setsid();
    pid_t grandchild = fork();
    if (grandchild != 0) {
      (void)!write(ready[1], &grandchild, sizeof grandchild);
      _exit(grandchild > 0 ? 0 : 1);
    }
    int null = open("/dev/null", O_RDONLY);
    int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (null >= 0) dup2(null, 0);
    if (log >= 0) {
      dup2(log, 1);
      dup2(log, 2);
    }
    // setns rather than `ip netns exec`: that would also give the program a
    // private mount namespace with a fresh /sys (no /sys/fs/cgroup), and
    // the pid would be ip's until it execs.
    if (ns.valid() && setns(ns.get(), CLONE_NEWNET) != 0) {
      dprintf(2, "cannot enter network namespace %s: %s\n", netns.c_str(), strerror(errno));
      _exit(127);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    dprintf(2, "cannot run %s: %s\n", argv[0].c_str(), strerror(errno));
    _exit(127);
  }
  close(ready[1]);
  pid_t pid = 0;
  ssize_t n = read(ready[0], &pid, sizeof pid);
  close(ready[0]);
  int st;
  waitpid(child, &st, 0);
  if (n != sizeof pid || pid <= 0) return Internal("could not start " + argv[0]);
  return pid;
}

Status StopPid(pid_t pid, const std::string& program, int sig, int timeout_ms) {
  if (!Alive(pid)) return Status::Ok();
  std::string exe = ExeBase(pid);
  if (!exe.empty() && exe != program) return Status::Ok();  // pid reused by something else
  kill(pid, sig);
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Alive(pid)) {
    if (std::chrono::steady_clock::now() > until) {
      kill(pid, SIGKILL);
      until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Status::Ok();
}

Result<LocalCluster> LocalCluster::Create(LocalClusterOptions opts) {
  if (opts.base_dir.empty() || opts.base_dir[0] != '/')
    return InvalidArgument("the local cluster needs an absolute base directory");
  if (opts.nodes < 1 || opts.nodes > 9) return InvalidArgument("a local cluster has 1 to 9 nodes");
  if (opts.hcd_path.empty()) opts.hcd_path = FindHcd();
  if (opts.datacenters.empty()) opts.datacenters = {"dc1"};
  if (opts.netns) {
    if (opts.netns_tag.empty() || opts.netns_tag.size() > 8 ||
        opts.netns_tag.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789") !=
            std::string::npos)
      return InvalidArgument(
          "netns_tag must be 1 to 8 of [a-z0-9] (it is part of interface names), not \"" +
          opts.netns_tag + "\"");
    if (!ValidSubnet(opts.netns_subnet))
      return InvalidArgument(
          "netns_subnet must be the first three octets of a /24, like 10.231.7, not \"" +
          opts.netns_subnet + "\"");
  }
  HC_RETURN_IF_ERROR(MakeDirs(opts.base_dir, 0755));
  LocalCluster c(std::move(opts));
  c.node_pids_.assign(static_cast<size_t>(c.opts_.nodes), 0);
  HC_RETURN_IF_ERROR(c.WriteConfigs());
  HC_RETURN_IF_ERROR(c.Save());
  return c;
}

Result<LocalCluster> LocalCluster::Load(const std::string& base_dir) {
  HC_ASSIGN_OR_RETURN(auto text, ReadFileToString(JoinPath(base_dir, "cluster.json")));
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return Corrupt(base_dir + "/cluster.json is not valid");
  LocalClusterOptions o;
  o.base_dir = base_dir;
  o.nodes = j.value("nodes", 3);
  o.first_octet = j.value("first_octet", 10);
  o.etcd_client_port = j.value("etcd_client_port", 2379);
  o.etcd_peer_port = j.value("etcd_peer_port", 2380);
  o.api_port = j.value("api_port", 7480);
  o.hcd_path = j.value("hcd_path", std::string("hcd"));
  o.etcd_path = j.value("etcd_path", std::string("etcd"));
  o.runtime_backend = j.value("runtime_backend", std::string("auto"));
  o.cgroup_prefix = j.value("cgroup_prefix", std::string("hc-demo"));
  o.netns = j.value("netns", false);
  o.netns_tag = j.value("netns_tag", std::string());
  o.netns_subnet = j.value("netns_subnet", std::string());
  LocalCluster c(std::move(o));
  c.etcd_pid_ = j.value("etcd_pid", 0);
  c.node_pids_ = j.value("node_pids", std::vector<pid_t>{});
  c.node_pids_.resize(static_cast<size_t>(c.opts_.nodes), 0);
  return c;
}

Status LocalCluster::Save() const {
  json j = {{"nodes", opts_.nodes},
            {"first_octet", opts_.first_octet},
            {"etcd_client_port", opts_.etcd_client_port},
            {"etcd_peer_port", opts_.etcd_peer_port},
            {"api_port", opts_.api_port},
            {"hcd_path", opts_.hcd_path},
            {"etcd_path", opts_.etcd_path},
            {"runtime_backend", opts_.runtime_backend},
            {"cgroup_prefix", opts_.cgroup_prefix},
            {"netns", opts_.netns},
            {"netns_tag", opts_.netns_tag},
            {"netns_subnet", opts_.netns_subnet},
            {"etcd_pid", etcd_pid_},
            {"node_pids", node_pids_}};
  return WriteFileAtomic(JoinPath(opts_.base_dir, "cluster.json"), j.dump(2) + "\n", false);
}

void LocalCluster::Say(const std::string& line) const {
  if (opts_.progress) opts_.progress(line);
}

std::string LocalCluster::EtcdAddress() const {
  if (opts_.netns) return opts_.netns_subnet + ".1";
  return "127.0.0." + std::to_string(opts_.first_octet);
}
std::string LocalCluster::NodeAddress(int k) const {
  if (opts_.netns) return opts_.netns_subnet + "." + std::to_string(k + 1);
  return "127.0.0." + std::to_string(opts_.first_octet + k);
}
std::string LocalCluster::NodeNetns(int k) const {
  if (!opts_.netns) return "";
  return "hcn-" + opts_.netns_tag + "-" + std::to_string(k);
}
std::string LocalCluster::BridgeName() const {
  return "hcb-" + opts_.netns_tag;
}
std::string LocalCluster::VethName(int k) const {
  return "hcv-" + opts_.netns_tag + "-" + std::to_string(k);
}
std::string LocalCluster::ApiUrl(int k) const {
  return "http://" + NodeAddress(k) + ":" + std::to_string(opts_.api_port);
}
std::string LocalCluster::EtcdUrl() const {
  return "http://" + EtcdAddress() + ":" + std::to_string(opts_.etcd_client_port);
}
std::string LocalCluster::NodeDataDir(int k) const {
  return JoinPath(opts_.base_dir, "node" + std::to_string(k));
}
std::string LocalCluster::NodeLog(int k) const {
  return JoinPath(opts_.base_dir, "node" + std::to_string(k) + ".log");
}
std::string LocalCluster::NodeConfig(int k) const {
  return JoinPath(opts_.base_dir, "node" + std::to_string(k) + ".yaml");
}
pid_t LocalCluster::NodePid(int k) const {
  return node_pids_[static_cast<size_t>(k - 1)];
}
pid_t LocalCluster::EtcdPid() const {
  return etcd_pid_;
}
bool LocalCluster::NodeRunning(int k) const {
  return Alive(NodePid(k));
}

Status LocalCluster::WriteConfigs() const {
  for (int k = 1; k <= opts_.nodes; k++) {
    std::string dc = opts_.datacenters[static_cast<size_t>(k - 1) % opts_.datacenters.size()];
    std::string yaml = "# Node " + std::to_string(k) +
                       " of the local cluster (hcd --help lists every option)\n"
                       "node_id: node" +
                       std::to_string(k) +
                       "\n"
                       "node_name: node" +
                       std::to_string(k) +
                       "\n"
                       "data_dir: " +
                       NodeDataDir(k) +
                       "\n"
                       "address: " +
                       NodeAddress(k) +
                       "\n"
                       "api_listen: " +
                       NodeAddress(k) + ":" + std::to_string(opts_.api_port) +
                       "\n"
                       "datacenter: " +
                       dc +
                       "\n"
                       "etcd_endpoints: [" +
                       EtcdUrl() +
                       "]\n"
                       "lease_ttl_seconds: " +
                       std::to_string(opts_.lease_ttl_seconds) +
                       "\n"
                       "reconcile_interval_ms: " +
                       std::to_string(opts_.reconcile_interval_ms) +
                       "\n"
                       "runtime_backend: " +
                       opts_.runtime_backend +
                       "\n"
                       "storage_backend: dir\n"
                       "cgroup_parent: " +
                       opts_.cgroup_prefix + "-" + std::to_string(k) +
                       "\n"
                       "memory_capacity: " +
                       opts_.memory_capacity +
                       "\n"
                       "cpu_capacity: \"2\"\n"
                       "log_level: " +
                       opts_.log_level + "\n";
    yaml += "replication_port: " + std::to_string(opts_.replication_port) + "\n";
    if (opts_.replication_interval_seconds > 0)
      yaml +=
          "replication_interval_seconds: " + std::to_string(opts_.replication_interval_seconds) +
          "\n";
    if (opts_.proxy_port == 0) {
      yaml += "proxy: off\n";
    } else {
      yaml += "proxy_listen: [" + NodeAddress(k) + ":" + std::to_string(opts_.proxy_port) +
              "]\nproxy_internal_port: " + std::to_string(opts_.proxy_internal_port) +
              "\nproxy_workers: 1\n";
      auto stream = [&](const char* key, uint16_t port) {
        yaml += std::string(key) + ": [" +
                (port == 0 ? std::string("off") : NodeAddress(k) + ":" + std::to_string(port)) +
                "]\n";
      };
      stream("proxy_tls_listen", opts_.proxy_tls_port);
      stream("proxy_postgres_listen", opts_.proxy_postgres_port);
      stream("proxy_imap_listen", opts_.proxy_imap_port);
      stream("proxy_pop3_listen", opts_.proxy_pop3_port);
    }
    if (!opts_.dns_zones.empty()) {
      std::string zones;
      for (const auto& z : opts_.dns_zones) zones += (zones.empty() ? "" : ", ") + z;
      yaml += "dns_zones: [" + zones + "]\ndns_listen: [" + NodeAddress(k) + ":" +
              std::to_string(opts_.dns_port) + "]\ndns_workers: 1\n";
    }
    HC_RETURN_IF_ERROR(WriteFileAtomic(NodeConfig(k), yaml, false));
  }
  return Status::Ok();
}

Status LocalCluster::StartEtcd() {
  if (Alive(etcd_pid_)) return Status::Ok();
  // In netns mode etcd listens on the bridge, which must exist first.
  if (opts_.netns) HC_RETURN_IF_ERROR(SetUpNetns(false));
  std::string ip = EtcdAddress();
  std::string client = EtcdUrl();
  std::string peer = "http://" + ip + ":" + std::to_string(opts_.etcd_peer_port);
  HC_ASSIGN_OR_RETURN(
      etcd_pid_, SpawnDetached({opts_.etcd_path, "--name", "local", "--data-dir",
                                JoinPath(opts_.base_dir, "etcd"), "--listen-client-urls", client,
                                "--advertise-client-urls", client, "--listen-peer-urls", peer,
                                "--initial-advertise-peer-urls", peer, "--initial-cluster",
                                "local=" + peer, "--log-level", "warn"},
                               JoinPath(opts_.base_dir, "etcd.log")));
  HC_RETURN_IF_ERROR(Save());
  // Healthy when /health answers.
  auto hp = net::ParseHttpUrl(client, 2379);
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < until) {
    if (!Alive(etcd_pid_))
      return Unavailable("etcd exited at start; see " + JoinPath(opts_.base_dir, "etcd.log") +
                         " (is the Debian package etcd-server installed and " + client + " free?)");
    net::HttpClient c(*hp, {.connect_timeout = std::chrono::milliseconds(300),
                            .request_timeout = std::chrono::milliseconds(1000)});
    auto r = c.Do("GET", "/health");
    if (r.ok() && r->status == 200 && r->body.find("true") != std::string::npos) {
      Say("etcd is up at " + client + " (pid " + std::to_string(etcd_pid_) + ")");
      return Status::Ok();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Unavailable("etcd did not become healthy in 20 s; see " +
                     JoinPath(opts_.base_dir, "etcd.log"));
}

Status LocalCluster::StopEtcd(int sig) {
  HC_RETURN_IF_ERROR(StopPid(etcd_pid_, "etcd", sig, 10000));
  etcd_pid_ = 0;
  return Save();
}

Status LocalCluster::StartNode(int k) {
  if (k < 1 || k > opts_.nodes) return InvalidArgument("no node " + std::to_string(k));
  if (Alive(NodePid(k))) return Status::Ok();
  if (opts_.netns) HC_RETURN_IF_ERROR(SetUpNetns(false));
  std::vector<std::string> argv = {opts_.hcd_path, "--config", NodeConfig(k)};
  if (!PathExists(JoinPath(NodeDataDir(k), "pki/node.crt"))) {
    for (int j = 1; j <= opts_.nodes; j++) {
      if (j == k || !NodeRunning(j)) continue;
      auto token = CreateJoinToken(j);
      if (!token.ok()) {
        Say("node" + std::to_string(j) + " gave no join token: " + token.status().message());
        continue;
      }
      std::string file = JoinPath(opts_.base_dir, "join-token-node" + std::to_string(k));
      HC_RETURN_IF_ERROR(WriteFileAtomic(file, *token + "\n", false, 0600));
      argv.insert(argv.end(), {"--join-file", file});
      Say("node" + std::to_string(k) + " joins with a token from node" + std::to_string(j));
      break;
    }
  }
  HC_ASSIGN_OR_RETURN(node_pids_[static_cast<size_t>(k - 1)],
                      SpawnDetached(argv, NodeLog(k), NodeNetns(k)));
  HC_RETURN_IF_ERROR(Save());
  // Up when its API answers.
  auto hp = net::ParseHttpUrl(ApiUrl(k));
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < until) {
    if (!Alive(NodePid(k)))
      return Unavailable("node " + std::to_string(k) + " (hcd) exited at start; see " + NodeLog(k));
    net::HttpClient c(*hp, {.connect_timeout = std::chrono::milliseconds(300),
                            .request_timeout = std::chrono::milliseconds(1000)});
    auto r = c.Do("GET", "/v1/health");
    // Our node, not another process on the same address.
    std::string me = "\"node\": \"node" + std::to_string(k) + "\"";
    if (r.ok() && r->status == 200 && r->body.find(me) != std::string::npos) {
      Say("node" + std::to_string(k) + " is up at " + ApiUrl(k) + " (pid " +
          std::to_string(NodePid(k)) + ")");
      return Status::Ok();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Unavailable("node " + std::to_string(k) + " did not answer in 20 s; see " + NodeLog(k));
}

Result<std::string> LocalCluster::CreateJoinToken(int k, int ttl_seconds) {
  if (k < 1 || k > opts_.nodes) return InvalidArgument("no node " + std::to_string(k));
  std::string me = "\"id\": \"node" + std::to_string(k) + "\"";
  HC_RETURN_IF_ERROR(WaitCluster(
      k, [&me](const std::string& body) { return body.find(me) != std::string::npos; }, 20000));
  auto hp = net::ParseHttpUrl(ApiUrl(k));
  net::HttpClient c(*hp, {.connect_timeout = std::chrono::milliseconds(1000),
                          .request_timeout = std::chrono::milliseconds(5000)});
  HC_ASSIGN_OR_RETURN(
      auto r, c.Do("POST", "/v1/cluster/join-tokens", json{{"ttl_seconds", ttl_seconds}}.dump()));
  json j = json::parse(r.body, nullptr, false);
  if (r.status != 201 || !j.is_object() || !j.contains("token"))
    return Unavailable("node" + std::to_string(k) + " issued no join token: HTTP " +
                       std::to_string(r.status) + " " + r.body.substr(0, 500));
  return j["token"].get<std::string>();
}

Status LocalCluster::StopNode(int k, int sig) {
  if (k < 1 || k > opts_.nodes) return InvalidArgument("no node " + std::to_string(k));
  HC_RETURN_IF_ERROR(StopPid(NodePid(k), "hcd", sig, 15000));
  node_pids_[static_cast<size_t>(k - 1)] = 0;
  return Save();
}

Status LocalCluster::Start(int timeout_ms) {
  if (opts_.netns) {
    bool any_running = Alive(etcd_pid_);
    for (int k = 1; k <= opts_.nodes; k++) any_running = any_running || NodeRunning(k);
    HC_RETURN_IF_ERROR(SetUpNetns(!any_running));
  }
  HC_RETURN_IF_ERROR(StartEtcd());
  for (int k = 1; k <= opts_.nodes; k++) HC_RETURN_IF_ERROR(StartNode(k));
  int n = opts_.nodes;
  HC_RETURN_IF_ERROR(WaitCluster(
      1,
      [n](const std::string& body) {
        json j = json::parse(body, nullptr, false);
        return j.is_object() && j["nodes"].size() == static_cast<size_t>(n) &&
               !j.value("leader", std::string()).empty();
      },
      timeout_ms));
  Say("all " + std::to_string(n) + " nodes registered; a leader is elected");
  return Status::Ok();
}

Status LocalCluster::WaitCluster(int k, const std::function<bool(const std::string&)>& pred,
                                 int timeout_ms) {
  auto hp = net::ParseHttpUrl(ApiUrl(k));
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::string last;
  while (std::chrono::steady_clock::now() < until) {
    net::HttpClient c(*hp, {.connect_timeout = std::chrono::milliseconds(500),
                            .request_timeout = std::chrono::milliseconds(3000)});
    auto r = c.Do("GET", "/v1/cluster");
    if (r.ok() && r->status == 200) {
      if (pred(r->body)) return Status::Ok();
      last = r->body;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Unavailable("the cluster did not reach the expected state in " +
                     std::to_string(timeout_ms) + " ms; last answer: " + last.substr(0, 2000));
}

Status LocalCluster::StopProcesses() {
  for (int k = 1; k <= opts_.nodes; k++) HC_RETURN_IF_ERROR(StopNode(k));
  HC_RETURN_IF_ERROR(StopEtcd());
  if (opts_.netns) return TearDownNetns();
  return Status::Ok();
}

bool LocalCluster::NetnsSupported() {
  if (geteuid() != 0) return false;
  // Being root is not enough in a container without CAP_SYS_ADMIN: try it.
  std::string probe = "hcp-" + std::to_string(getpid());
  if (!Ip({"netns", "add", probe}).ok()) return false;
  return Ip({"netns", "del", probe}).ok();
}

Status LocalCluster::SetUpNetns(bool fresh) {
  if (fresh) HC_RETURN_IF_ERROR(TearDownNetns());
  const std::string bridge = BridgeName();
  if (!LinkExists(bridge)) {
    HC_RETURN_IF_ERROR(Ip({"link", "add", bridge, "type", "bridge"}));
    HC_RETURN_IF_ERROR(Ip({"addr", "add", EtcdAddress() + "/24", "dev", bridge}));
    HC_RETURN_IF_ERROR(Ip({"link", "set", bridge, "up"}));
    Say("bridge " + bridge + " at " + EtcdAddress() + "/24");
  }
  for (int k = 1; k <= opts_.nodes; k++) {
    const std::string ns = NodeNetns(k), veth = VethName(k);
    if (!NetnsExists(ns)) {
      HC_RETURN_IF_ERROR(Ip({"netns", "add", ns}));
      // The node's apps listen on 127.0.0.1 of the namespace; the proxy and
      // the replication tunnels reach them there.
      HC_RETURN_IF_ERROR(Ip({"-n", ns, "link", "set", "lo", "up"}));
    }
    if (!LinkExists(veth)) {
      HC_RETURN_IF_ERROR(
          Ip({"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns}));
      HC_RETURN_IF_ERROR(Ip({"link", "set", veth, "master", bridge}));
      HC_RETURN_IF_ERROR(Ip({"link", "set", veth, "up"}));
      HC_RETURN_IF_ERROR(Ip({"-n", ns, "addr", "add", NodeAddress(k) + "/24", "dev", "eth0"}));
      HC_RETURN_IF_ERROR(Ip({"-n", ns, "link", "set", "eth0", "up"}));
      Say("node" + std::to_string(k) + " in network namespace " + ns + " at " + NodeAddress(k));
    }
  }
  return Status::Ok();
}

Status LocalCluster::TearDownNetns() {
  // Every name with our tag, also of nodes beyond opts_.nodes (a crashed run
  // may have had more). Deleting the root end of a veth deletes both ends,
  // even when processes still hold the namespace.
  for (int k = 1; k <= 9; k++) {
    if (LinkExists(VethName(k))) HC_RETURN_IF_ERROR(Ip({"link", "del", VethName(k)}));
    std::string ns = "hcn-" + opts_.netns_tag + "-" + std::to_string(k);
    if (NetnsExists(ns)) HC_RETURN_IF_ERROR(Ip({"netns", "del", ns}));
  }
  if (LinkExists(BridgeName())) HC_RETURN_IF_ERROR(Ip({"link", "del", BridgeName()}));
  return Status::Ok();
}

Status LocalCluster::PartitionNode(int k) {
  if (!opts_.netns) return InvalidArgument("PartitionNode needs a cluster in netns mode");
  if (k < 1 || k > opts_.nodes) return InvalidArgument("no node " + std::to_string(k));
  // The root end down: the bridge port stops forwarding to it and the
  // namespace end loses carrier, so its own sends are dropped too; nobody
  // answers with an RST. A drop rule would need iptables or nft, which not
  // every host has.
  HC_RETURN_IF_ERROR(Ip({"link", "set", VethName(k), "down"}));
  Say("node" + std::to_string(k) + " is cut off (" + VethName(k) + " down)");
  return Status::Ok();
}

Status LocalCluster::HealNode(int k) {
  if (!opts_.netns) return InvalidArgument("HealNode needs a cluster in netns mode");
  if (k < 1 || k > opts_.nodes) return InvalidArgument("no node " + std::to_string(k));
  HC_RETURN_IF_ERROR(Ip({"link", "set", VethName(k), "up"}));
  Say("node" + std::to_string(k) + " is reconnected (" + VethName(k) + " up)");
  return Status::Ok();
}

Status LocalCluster::Destroy() {
  HC_RETURN_IF_ERROR(StopProcesses());
  for (int k = 1; k <= opts_.nodes; k++) {
    std::string state = JoinPath(NodeDataDir(k), "runtime");
    std::string parent = opts_.cgroup_prefix + "-" + std::to_string(k);
    if (PathExists(state)) {
      runtime::RuntimeConfig rc;
      rc.backend = opts_.runtime_backend;
      rc.state_dir = state;
      rc.cgroup_parent = parent;
      auto rt = runtime::OpenRuntime(rc);
      if (rt.ok()) {
        auto apps = (*rt)->List();
        if (apps.ok())
          for (const auto& a : *apps) {
            (void)(*rt)->Stop(a.name);
            (void)(*rt)->Remove(a.name);
            Say("stopped app " + a.name + " on node" + std::to_string(k));
          }
      }
    }
    if (geteuid() == 0) (void)runtime::Cgroup(runtime::DetectCgroupMode(), parent).Remove();
  }
  return RemoveTree(opts_.base_dir);
}

}  // namespace hc::devcluster
