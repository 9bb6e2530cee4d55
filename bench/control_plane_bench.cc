// Control-plane scale benchmark: N simulated nodes and M apps against one
// real etcd, measuring how long the cluster takes to converge and what it
// costs etcd.
//
//   control_plane_bench [--nodes 100] [--apps 10000] [--runs 1] [--leaders N]
//                       [--creators 4] [--idle-seconds 10] [--settle-seconds 12]
//                       [--timeout 600] [--observer watch|stats] [--no-pin]
//                       [--etcd PATH] [--etcd-pprof] [--keep] [--log-level warn]
//
// Every simulated node is what hcd runs, minus the data plane: its own
// EtcdClient (so its own connections), LeaseSession, NodeInfo registration,
// a real hc::agent::Agent and (on the first --leaders nodes, default all) a
// real hc::agent::Leader. Only the runtime and the volume store are fakes
// (FakeRuntime, FakeStore from tests/agent/fake_node.h): an app "runs" the moment Start returns and
// is ready at once, so the figures are the control plane's alone.
//
// Per run: a fresh etcd (127.0.0.50:23795, temp data dir on the same disk as
// /tmp), N nodes started and a leader elected; then M apps (template static,
// one replica) are created through ClusterStore::CreateApp from --creators
// threads. An observer watches placement/ and status/ and time-stamps each
// app's placement, its primary reported running+ready, and its replica
// reported. That observer is one more watcher, like a dashboard: it receives
// about half of the watch events etcd sends, so `--observer stats` replaces
// it with in-process counters (the leader's writes, the fakes' contents) and
// reads status/ only at the end, for the cleanest etcd figures (no per-app
// latencies then). Measured from the first create: all apps created, all placed,
// all primaries running+ready (convergence); etcd's write rate (revisions,
// i.e. write requests, and keys written, from its /metrics), etcd's and this
// process's CPU time, peak RSS of both; then --idle-seconds of the converged
// cluster doing nothing (the steady-state cost). Finally every app is checked:
// one placement, one replica on another node in another data centre, exactly
// one node running it (the primary) and reporting it, the replica reporting.
//
// By default etcd is pinned to CPU 0 and this process (every agent, leader
// and the load) to CPU 1 (taskset), as in ../shared/BENCHMARKING.md.
#include <malloc.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent/agent.h"
#include "agent/fake_node.h"
#include "agent/leader.h"
#include "cluster/cluster_store.h"
#include "cluster/etcd_client.h"
#include "cluster/state.h"
#include "common/fs.h"
#include "common/log.h"
#include "devcluster/local_cluster.h"
#include "net/http_client.h"
#include "net/socket.h"
#include "runtime/runtime.h"
#include "storage/store.h"

using namespace hc;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kEtcdIp = "127.0.0.50";
constexpr int kEtcdClientPort = 23795;
constexpr int kEtcdPeerPort = 23805;
constexpr const char* kPrefix = "/hc-bench/";

using testing::FakeRuntime;
using testing::FakeStore;

// ------------------------------------------------------------ measuring

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// utime + stime of a process, in seconds.
double ProcCpuSeconds(pid_t pid) {
  auto st = ReadFileToString("/proc/" + std::to_string(pid) + "/stat");
  if (!st.ok()) return 0;
  size_t rp = st->rfind(')');
  if (rp == std::string::npos) return 0;
  // Fields after ") ": state(3) ppid(4) ... utime(14) stime(15).
  const char* p = st->c_str() + rp + 2;
  unsigned long long utime = 0, stime = 0;
  for (int field = 3; field <= 15 && *p; ++field) {
    if (field == 14) utime = std::strtoull(p, nullptr, 10);
    if (field == 15) stime = std::strtoull(p, nullptr, 10);
    p = std::strchr(p, ' ');
    if (!p) break;
    ++p;
  }
  return double(utime + stime) / double(::sysconf(_SC_CLK_TCK));
}

// A "Name:   123 kB" line of /proc/<pid>/status, in KiB.
uint64_t ProcStatusKb(pid_t pid, const char* name) {
  auto st = ReadFileToString("/proc/" + std::to_string(pid) + "/status");
  if (!st.ok()) return 0;
  size_t p = st->find(std::string("\n") + name + ":");
  if (p == std::string::npos) return 0;
  return std::strtoull(st->c_str() + p + std::strlen(name) + 2, nullptr, 10);
}

// Resets this process's peak RSS (VmHWM) so each run reports its own.
void ResetPeakRss() {
  FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (!f) return;
  std::fputs("5", f);
  std::fclose(f);
}

// etcd's Prometheus counters, summed over labels.
std::map<std::string, double> EtcdMetrics() {
  std::map<std::string, double> m;
  auto hp =
      net::ParseHttpUrl(std::string("http://") + kEtcdIp + ":" + std::to_string(kEtcdClientPort));
  if (!hp.ok()) return m;
  net::HttpClientOptions o;
  o.limits.max_body_bytes = 64u << 20;
  net::HttpClient c(*hp, o);
  auto r = c.Do("GET", "/metrics");
  if (!r.ok() || r->status != 200) return m;
  size_t pos = 0;
  const std::string& b = r->body;
  while (pos < b.size()) {
    size_t eol = b.find('\n', pos);
    if (eol == std::string::npos) eol = b.size();
    std::string_view line(b.data() + pos, eol - pos);
    pos = eol + 1;
    if (line.empty() || line[0] == '#') continue;
    size_t name_end = line.find_first_of("{ ");
    size_t sp = line.rfind(' ');
    if (name_end == std::string_view::npos || sp == std::string_view::npos) continue;
    double v = std::strtod(std::string(line.substr(sp + 1)).c_str(), nullptr);
    m[std::string(line.substr(0, name_end))] += v;
    // gRPC requests by method, as "grpc_server_handled_total:Txn".
    if (line.substr(0, name_end) == "grpc_server_handled_total") {
      size_t mp = line.find("grpc_method=\"");
      if (mp == std::string_view::npos) continue;
      mp += std::strlen("grpc_method=\"");
      size_t me = line.find('"', mp);
      m["grpc_server_handled_total:" + std::string(line.substr(mp, me - mp))] += v;
    }
  }
  return m;
}

double Metric(const std::map<std::string, double>& m, const char* name) {
  auto it = m.find(name);
  return it == m.end() ? 0 : it->second;
}

double Pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * double(v.size())))];
}

std::string AppName(int i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "app-%06d", i);
  return buf;
}
int AppIndex(const std::string& name) {
  if (name.rfind("app-", 0) != 0) return -1;
  return std::atoi(name.c_str() + 4);
}

std::string NodeId(int k) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "n%03d", k);
  return buf;
}

pid_t g_etcd_pid = 0;  // stopped by Die too, so a failed run leaves no etcd behind

[[noreturn]] void Die(const Status& s, const char* what) {
  std::fprintf(stderr, "control_plane_bench: %s: %s\n", what, s.ToString().c_str());
  if (g_etcd_pid > 0) (void)devcluster::StopPid(g_etcd_pid, "etcd", SIGTERM, 10000);
  std::_Exit(1);  // the node threads are still running: no static destructors
}

// ------------------------------------------------------------ the cluster

struct Options {
  int nodes = 100;
  int apps = 10000;
  int runs = 1;
  int leaders = -1;  // nodes running a Leader; -1 = all
  int creators = 4;
  int idle_seconds = 10;
  int settle_seconds = 12;
  int timeout_seconds = 600;
  bool pin = true;
  bool keep = false;
  bool etcd_pprof = false;
  bool watch_observer = true;  // --observer watch|stats
  std::string etcd = "etcd";
};

// One simulated node: what hcd's Node::Run wires together (src/agent/node.cc).
struct SimNode {
  std::string id;
  cluster::NodeInfo info;
  std::unique_ptr<cluster::EtcdClient> etcd;
  std::unique_ptr<cluster::ClusterStore> cs;
  std::unique_ptr<FakeRuntime> rt;
  std::unique_ptr<FakeStore> store;
  std::atomic<int64_t> lease{0};
  std::atomic<agent::Agent*> agent_ptr{nullptr};
  std::atomic<agent::Leader*> leader_ptr{nullptr};
  std::unique_ptr<cluster::LeaseSession> session;
  std::unique_ptr<agent::Agent> agent;
  std::unique_ptr<agent::Leader> leader;

  Status Start(const std::string& etcd_url, const std::string& live_dir, bool with_leader) {
    etcd = std::make_unique<cluster::EtcdClient>(cluster::EtcdOptions{.endpoints = {etcd_url}});
    cs = std::make_unique<cluster::ClusterStore>(etcd.get(), kPrefix);
    rt = std::make_unique<FakeRuntime>();
    store = std::make_unique<FakeStore>(live_dir);
    session = std::make_unique<cluster::LeaseSession>(
        etcd.get(), 3,
        cluster::LeaseSession::Callbacks{
            .on_new =
                [this](int64_t l) {
                  lease.store(l);
                  Status s = cs->RegisterNode(info, l);
                  if (!s.ok()) LogWarn("cannot register node: %s", s.ToString().c_str());
                  if (auto* a = agent_ptr.load()) a->Kick(/*full_report=*/true);
                  if (auto* ld = leader_ptr.load()) ld->LeaseChanged();
                },
            .on_lost = [this](int64_t) { LogWarn("node %s lost its lease", id.c_str()); }});
    HC_RETURN_IF_ERROR(session->Start(std::chrono::seconds(10)));
    agent = std::make_unique<agent::Agent>(agent::AgentOptions{.node_id = id}, cs.get(),
                                           store.get(), rt.get(), [this] { return lease.load(); });
    HC_RETURN_IF_ERROR(agent->Start());
    agent_ptr.store(agent.get());
    if (with_leader) {
      leader = std::make_unique<agent::Leader>(cs.get(), id, [this] { return lease.load(); });
      leader->Start();
      leader_ptr.store(leader.get());
    }
    return Status::Ok();
  }

  void Stop() {
    agent_ptr.store(nullptr);
    leader_ptr.store(nullptr);
    if (leader) leader->Stop();
    if (agent) agent->Stop();
    leader.reset();
    agent.reset();
    session.reset();  // revokes the lease
  }
};

// Time stamps of what etcd says, from two watches (placement/ and status/).
class Observer {
 public:
  Observer(cluster::EtcdClient* etcd, const cluster::ClusterStore& cs, int apps, int64_t rev)
      : cs_(cs),
        placed_(apps),
        primary_ready_(apps),
        replica_reported_(apps),
        placed_n_(0),
        ready_n_(0),
        replicas_n_(0) {
    auto resync = [etcd]() -> int64_t {
      auto r = etcd->Revision();
      return r.ok() ? *r : 0;
    };
    placement_ = std::make_unique<cluster::Watch>(
        etcd, cs.PlacementsPrefix(), rev + 1,
        [this](const std::vector<cluster::WatchEvent>& evs, int64_t) { OnPlacement(evs); }, resync);
    status_ = std::make_unique<cluster::Watch>(
        etcd, cs.StatusPrefix(), rev + 1,
        [this](const std::vector<cluster::WatchEvent>& evs, int64_t) { OnStatus(evs); }, resync);
  }
  ~Observer() {
    placement_->Stop();
    status_->Stop();
  }
  bool connected() const { return placement_->connected() && status_->connected(); }
  int placed() const { return placed_n_.load(); }
  int ready() const { return ready_n_.load(); }
  int replicas() const { return replicas_n_.load(); }

  // Per-app time stamps (time_point{} when not seen).
  std::vector<Clock::time_point> placed_at() {
    std::lock_guard<std::mutex> l(mu_);
    return placed_;
  }
  std::vector<Clock::time_point> ready_at() {
    std::lock_guard<std::mutex> l(mu_);
    return primary_ready_;
  }
  std::vector<Clock::time_point> replica_at() {
    std::lock_guard<std::mutex> l(mu_);
    return replica_reported_;
  }

 private:
  void OnPlacement(const std::vector<cluster::WatchEvent>& evs) {
    auto now = Clock::now();
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& e : evs) {
      if (e.type != cluster::WatchEvent::kPut) continue;
      int i = AppIndex(e.kv.key.substr(cs_.PlacementsPrefix().size()));
      if (i < 0 || i >= static_cast<int>(placed_.size())) continue;
      if (placed_[i] == Clock::time_point{}) {
        placed_[i] = now;
        placed_n_++;
      }
    }
  }
  void OnStatus(const std::vector<cluster::WatchEvent>& evs) {
    auto now = Clock::now();
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& e : evs) {
      if (e.type != cluster::WatchEvent::kPut) continue;
      auto o = cluster::AppObservedFromJson(e.kv.value);
      if (!o.ok()) continue;
      int i = AppIndex(o->app);
      if (i < 0 || i >= static_cast<int>(placed_.size())) continue;
      if (o->role == "primary" && o->state == "running" && o->ready &&
          primary_ready_[i] == Clock::time_point{}) {
        primary_ready_[i] = now;
        ready_n_++;
      } else if (o->role == "replica" && o->state == "replica" &&
                 replica_reported_[i] == Clock::time_point{}) {
        replica_reported_[i] = now;
        replicas_n_++;
      }
    }
  }

  const cluster::ClusterStore& cs_;
  std::mutex mu_;
  std::vector<Clock::time_point> placed_, primary_ready_, replica_reported_;
  std::atomic<int> placed_n_, ready_n_, replicas_n_;
  std::unique_ptr<cluster::Watch> placement_, status_;
};

struct RunResult {
  bool converged = false;
  double startup_s = 0;  // N nodes registered, leader elected
  double created_s = 0, placed_s = 0, ready_s = 0, replicas_s = 0;
  double create_rate = 0;
  double place_p50_ms = 0, place_p99_ms = 0, ready_p50_ms = 0, ready_p99_ms = 0;
  double conv_s = 0, rev_rate = 0, key_rate = 0;
  double revisions = 0, keys_written = 0, fsyncs = 0, fsync_ms = 0, watch_events = 0;
  double txn_requests = 0, range_requests = 0, put_requests = 0;
  double etcd_cpu_s = 0, bench_cpu_s = 0;
  double etcd_hwm_mb = 0, bench_hwm_mb = 0, db_mb = 0;
  double idle_etcd_cpu_pct = 0, idle_bench_cpu_pct = 0, idle_keys_per_s = 0;
  double idle_ranges_per_s = 0;
  int64_t leader_plans = 0, leader_writes = 0, leader_conflicts = 0, leader_terms = 0;
  int64_t leader_rounds = 0, leader_rounds_writing = 0;  // during convergence
  double idle_lookups_per_node_s = 0, idle_status_calls_per_node_s = 0;
  double idle_probes_per_node_s = 0;
  int64_t agent_reconciles = 0, agent_starts = 0, agent_status_writes = 0;
  size_t problems = 0;
};

// Reads the final state and checks every app. Returns the number of problems
// (the first few are printed).
size_t CheckCorrectness(cluster::EtcdClient* etcd, const cluster::ClusterStore& cs,
                        std::vector<std::unique_ptr<SimNode>>& nodes, int apps) {
  std::vector<std::string> problems;
  auto problem = [&](std::string s) { problems.push_back(std::move(s)); };
  std::map<std::string, std::string> dc_of;
  for (const auto& n : nodes) dc_of[n->id] = n->info.datacenter;

  auto pl = etcd->GetPrefix(cs.PlacementsPrefix());
  auto st = etcd->GetPrefix(cs.StatusPrefix());
  auto as = etcd->GetPrefix(kPrefix + std::string("assign/"), 0, 0, /*keys_only=*/true);
  if (!pl.ok() || !st.ok() || !as.ok()) {
    std::printf("correctness: cannot read the final state\n");
    return 1;
  }
  std::vector<std::optional<cluster::Placement>> placement(apps);
  for (const auto& kv : pl->kvs) {
    auto p = cluster::PlacementFromJson(kv.value);
    int i = p.ok() ? AppIndex(p->app) : -1;
    if (i < 0 || i >= apps) {
      problem("unreadable placement " + kv.key);
      continue;
    }
    placement[i] = *p;
  }
  std::map<std::string, int> primaries_per_node, replicas_per_node;
  int same_dc = 0;
  for (int i = 0; i < apps; ++i) {
    if (!placement[i]) {
      problem(AppName(i) + " has no placement");
      continue;
    }
    const auto& p = *placement[i];
    if (!dc_of.count(p.primary)) problem(AppName(i) + ": primary " + p.primary + " is no node");
    primaries_per_node[p.primary]++;
    if (p.replicas.size() != 1) {
      problem(AppName(i) + " has " + std::to_string(p.replicas.size()) + " replicas");
      continue;
    }
    replicas_per_node[p.replicas[0]]++;
    if (p.replicas[0] == p.primary) problem(AppName(i) + ": replica on the primary's node");
    if (dc_of[p.replicas[0]] == dc_of[p.primary]) same_dc++;
  }
  // Status: exactly one primary report (from the primary, running, ready) and
  // the replica's report, nothing from anywhere else.
  std::vector<int> primary_reports(apps), replica_reports(apps);
  for (const auto& kv : st->kvs) {
    auto o = cluster::AppObservedFromJson(kv.value);
    int i = o.ok() ? AppIndex(o->app) : -1;
    if (i < 0 || i >= apps || !placement[i]) {
      problem("stray status " + kv.key);
      continue;
    }
    const auto& p = *placement[i];
    if (o->role == "primary") {
      primary_reports[i]++;
      if (o->node != p.primary) problem(o->app + ": primary report from " + o->node);
      if (o->state != "running" || !o->ready)
        problem(o->app + ": primary is " + o->state + (o->ready ? "" : ", not ready"));
    } else {
      replica_reports[i]++;
      if (p.replicas.empty() || o->node != p.replicas[0])
        problem(o->app + ": replica report from " + o->node);
    }
  }
  for (int i = 0; i < apps; ++i) {
    if (primary_reports[i] != 1)
      problem(AppName(i) + ": " + std::to_string(primary_reports[i]) + " primary reports");
    if (replica_reports[i] != 1)
      problem(AppName(i) + ": " + std::to_string(replica_reports[i]) + " replica reports");
  }
  // Assignments: one per holder.
  if (as->kvs.size() != static_cast<size_t>(apps) * 2)
    problem(std::to_string(as->kvs.size()) + " assign/ keys, expected " + std::to_string(apps * 2));
  // Runtimes: each app runs on exactly one node, its primary.
  std::vector<int> running_on(apps);
  for (const auto& n : nodes) {
    for (const auto& name : n->rt->Running()) {
      int i = AppIndex(name);
      if (i < 0 || i >= apps) continue;
      running_on[i]++;
      if (placement[i] && placement[i]->primary != n->id)
        problem(name + " runs on " + n->id + ", not its primary");
    }
  }
  for (int i = 0; i < apps; ++i)
    if (running_on[i] != 1)
      problem(AppName(i) + " runs on " + std::to_string(running_on[i]) + " nodes");

  auto minmax = [&](const std::map<std::string, int>& m) {
    int lo = apps, hi = 0;
    for (const auto& n : nodes) {
      auto it = m.find(n->id);
      int v = it == m.end() ? 0 : it->second;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    return std::make_pair(lo, hi);
  };
  auto [plo, phi] = minmax(primaries_per_node);
  auto [rlo, rhi] = minmax(replicas_per_node);
  std::printf(
      "  spread: primaries per node %d..%d, replicas per node %d..%d, replicas in the "
      "primary's DC: %d\n",
      plo, phi, rlo, rhi, same_dc);
  if (same_dc > 0) problem(std::to_string(same_dc) + " replicas in the primary's data centre");
  if (problems.empty()) {
    std::printf(
        "  correctness: OK (every app: one placement, one primary running+ready and reporting, "
        "its replica on another node in another DC reporting, runs nowhere else)\n");
  } else {
    std::printf("  correctness: %zu problem(s):\n", problems.size());
    for (size_t k = 0; k < problems.size() && k < 10; ++k)
      std::printf("    %s\n", problems[k].c_str());
  }
  return problems.size();
}

RunResult RunOnce(const Options& opt, int run) {
  RunResult res;
  char tmpl[] = "/tmp/hc-cp-bench-XXXXXX";
  if (!::mkdtemp(tmpl)) Die(ErrnoStatus("mkdtemp", errno), "temp dir");
  std::string dir = tmpl;
  std::string live = dir + "/live";
  if (auto s = MakeDirs(live + "/public", 0755); !s.ok()) Die(s, "live dir");

  // 1. etcd, fresh.
  std::string url = std::string("http://") + kEtcdIp + ":" + std::to_string(kEtcdClientPort);
  std::string peer = std::string("http://") + kEtcdIp + ":" + std::to_string(kEtcdPeerPort);
  std::vector<std::string> argv;
  if (opt.pin) argv = {"taskset", "-c", "0"};
  for (const auto& a : std::vector<std::string>{
           opt.etcd, "--name", "bench", "--data-dir", dir + "/etcd", "--listen-client-urls", url,
           "--advertise-client-urls", url, "--listen-peer-urls", peer,
           "--initial-advertise-peer-urls", peer, "--initial-cluster", "bench=" + peer,
           "--quota-backend-bytes", std::to_string(8ull << 30), "--log-level", "warn"})
    argv.push_back(a);
  if (opt.etcd_pprof) argv.push_back("--enable-pprof");  // GET <url>/debug/pprof/profile
  auto pid_or = devcluster::SpawnDetached(argv, dir + "/etcd.log");
  if (!pid_or.ok()) Die(pid_or.status(), "starting etcd");
  pid_t etcd_pid = *pid_or;
  g_etcd_pid = etcd_pid;
  cluster::EtcdClient api_etcd({.endpoints = {url}});
  cluster::ClusterStore api(&api_etcd, kPrefix);
  {
    auto until = Clock::now() + std::chrono::seconds(20);
    while (!api_etcd.Revision().ok()) {
      if (Clock::now() > until) Die(Unavailable("see " + dir + "/etcd.log"), "etcd not up");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  // 2. The nodes.
  auto t_start = Clock::now();
  int with_leader = opt.leaders < 0 ? opt.nodes : std::min(opt.leaders, opt.nodes);
  std::vector<std::unique_ptr<SimNode>> nodes;
  const char* dcs[] = {"dc1", "dc2", "dc3"};
  for (int k = 1; k <= opt.nodes; ++k) {
    auto n = std::make_unique<SimNode>();
    n->id = NodeId(k);
    n->info.id = n->id;
    n->info.name = n->id;
    n->info.address = "127.0.1." + std::to_string(k % 250 + 1);
    n->info.api_port = 7480;
    n->info.datacenter = dcs[(k - 1) % 3];
    n->info.memory_bytes = 64ull << 30;
    n->info.cpu_millis = 16000;
    n->info.version = "bench";
    n->info.started_unix = ::time(nullptr);
    if (auto s = n->Start(url, live, k <= with_leader); !s.ok()) Die(s, "starting a node");
    nodes.push_back(std::move(n));
  }
  // Registered, a leader that has planned once, every agent synced.
  auto leader_ready = [&] {
    for (const auto& n : nodes)
      if (n->leader && n->leader->stats().leading && n->leader->stats().plans > 0) return true;
    return false;
  };
  for (;;) {
    auto reg = api_etcd.GetPrefix(api.NodesPrefix(), 0, 0, true);
    bool synced = true;
    for (const auto& n : nodes) synced = synced && n->agent->stats().synced;
    if (reg.ok() && reg->kvs.size() == nodes.size() && synced && leader_ready()) break;
    if (Seconds(t_start, Clock::now()) > 120) Die(Unavailable("nodes not up in 120 s"), "start");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  res.startup_s = Seconds(t_start, Clock::now());

  auto rev0 = api_etcd.Revision();
  if (!rev0.ok()) Die(rev0.status(), "revision");
  std::unique_ptr<Observer> obs;
  if (opt.watch_observer) {
    obs = std::make_unique<Observer>(&api_etcd, api, opt.apps, *rev0);
    while (!obs->connected()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // Without the observer: placements from the leader's counter, and once
  // every fake runtime and store holds what it should, status/ is read
  // until every app is reported (each read costs etcd a 20,000-key range).
  auto status_complete = [&] {
    int64_t volumes = 0, running = 0;
    for (const auto& n : nodes) {
      volumes += n->store->volume_count();
      running += static_cast<int64_t>(n->rt->Running().size());
    }
    if (volumes < 2 * int64_t{opt.apps} || running < opt.apps) return false;
    auto st = api_etcd.GetPrefix(api.StatusPrefix());
    if (!st.ok()) return false;
    std::vector<char> primary(opt.apps), replica(opt.apps);
    int np = 0, nr = 0;
    for (const auto& kv : st->kvs) {
      auto o = cluster::AppObservedFromJson(kv.value);
      int i = o.ok() ? AppIndex(o->app) : -1;
      if (i < 0 || i >= opt.apps) continue;
      if (o->role == "primary" && o->state == "running" && o->ready && !primary[i]) {
        primary[i] = 1;
        np++;
      } else if (o->role == "replica" && !replica[i]) {
        replica[i] = 1;
        nr++;
      }
    }
    return np == opt.apps && nr == opt.apps;
  };

  // 3. Create the apps; measure until converged.
  ResetPeakRss();
  auto m0 = EtcdMetrics();
  double etcd_cpu0 = ProcCpuSeconds(etcd_pid), bench_cpu0 = ProcCpuSeconds(::getpid());
  std::vector<Clock::time_point> created(opt.apps);
  std::atomic<int> next{0}, create_errors{0};
  // The leader's planning rounds, and how many of them wrote anything
  // (polled below: a round takes at least its 20 ms batching pause).
  agent::Leader* leading = nullptr;
  for (const auto& n : nodes)
    if (n->leader && n->leader->stats().leading) leading = n->leader.get();
  agent::LeaderStats ls0 = leading ? leading->stats() : agent::LeaderStats{};
  int64_t last_writes = ls0.writes;
  auto t0 = Clock::now();
  std::vector<std::thread> creators;
  std::atomic<int> creators_done{0};
  for (int c = 0; c < opt.creators; ++c) {
    creators.emplace_back([&] {
      for (int i; (i = next.fetch_add(1)) < opt.apps;) {
        cluster::AppDef a;
        a.name = AppName(i);
        a.template_name = "static";
        a.replicas = 1;
        a.created_unix = ::time(nullptr);
        Status s = api.CreateApp(a);
        if (!s.ok()) {
          if (create_errors.fetch_add(1) < 5)
            std::fprintf(stderr, "create %s: %s\n", a.name.c_str(), s.ToString().c_str());
          continue;
        }
        created[i] = Clock::now();
      }
      creators_done.fetch_add(1);
    });
  }

  auto last_progress = Clock::now();
  Clock::time_point t_created{}, t_placed{}, t_ready{}, t_replicas{};
  for (;;) {
    auto now = Clock::now();
    if (t_created == Clock::time_point{} && creators_done.load() == opt.creators) {
      t_created = now;
      res.created_s = Seconds(t0, t_created);
      res.create_rate = opt.apps / res.created_s;
      std::fprintf(stderr, "run %d: %d apps created in %.2f s (%d errors)\n", run, opt.apps,
                   res.created_s, create_errors.load());
    }
    if (leading) {
      auto ls = leading->stats();
      if (ls.writes != last_writes) res.leader_rounds_writing++;
      last_writes = ls.writes;
      res.leader_rounds = ls.plans - ls0.plans;
    }
    if (obs) {
      if (t_placed == Clock::time_point{} && obs->placed() >= opt.apps) t_placed = now;
      if (t_ready == Clock::time_point{} && obs->ready() >= opt.apps) t_ready = now;
      if (t_replicas == Clock::time_point{} && obs->replicas() >= opt.apps) t_replicas = now;
    } else {
      if (t_placed == Clock::time_point{} && leading && last_writes - ls0.writes >= opt.apps)
        t_placed = now;
      if (t_placed != Clock::time_point{} && t_ready == Clock::time_point{} && status_complete())
        t_ready = t_replicas = Clock::now();
    }
    if (t_created != Clock::time_point{} && t_ready != Clock::time_point{} &&
        t_replicas != Clock::time_point{}) {
      res.converged = true;
      break;
    }
    if (Seconds(t0, now) > opt.timeout_seconds) break;
    if (Seconds(last_progress, now) >= 5) {
      last_progress = now;
      auto r = api_etcd.Revision();
      if (obs)
        std::fprintf(stderr,
                     "  %5.1f s: placed %d, primaries ready %d, replicas %d, rev %" PRId64 "\n",
                     Seconds(t0, now), obs->placed(), obs->ready(), obs->replicas(),
                     r.ok() ? *r : int64_t{0});
      else
        std::fprintf(stderr, "  %5.1f s: placed %" PRId64 ", rev %" PRId64 "\n", Seconds(t0, now),
                     last_writes - ls0.writes, r.ok() ? *r : int64_t{0});
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  auto t_end = Clock::now();
  next.store(opt.apps);  // on timeout: stop creating
  for (auto& t : creators) t.join();
  double etcd_cpu1 = ProcCpuSeconds(etcd_pid), bench_cpu1 = ProcCpuSeconds(::getpid());
  auto m1 = EtcdMetrics();
  // The observer's own time stamps are more precise than the polling above.
  std::vector<Clock::time_point> placed_at, ready_at, replica_at;
  if (obs) {
    placed_at = obs->placed_at();
    ready_at = obs->ready_at();
    replica_at = obs->replica_at();
  } else {
    placed_at = ready_at = replica_at = std::vector<Clock::time_point>(opt.apps);
  }
  auto latest = [&](const std::vector<Clock::time_point>& v, Clock::time_point polled) {
    if (polled == Clock::time_point{}) return -1.0;
    if (!obs) return Seconds(t0, polled);
    Clock::time_point m = t0;
    for (auto t : v) m = std::max(m, t);
    return Seconds(t0, m);
  };
  res.placed_s = latest(placed_at, t_placed);
  res.ready_s = latest(ready_at, t_ready);
  res.replicas_s = latest(replica_at, t_replicas);
  std::vector<double> place_ms, ready_ms;
  for (int i = 0; i < opt.apps; ++i) {
    if (created[i] == Clock::time_point{}) continue;
    if (placed_at[i] != Clock::time_point{})
      place_ms.push_back(1000 * Seconds(created[i], placed_at[i]));
    if (ready_at[i] != Clock::time_point{})
      ready_ms.push_back(1000 * Seconds(created[i], ready_at[i]));
  }
  res.place_p50_ms = Pct(place_ms, 0.5);
  res.place_p99_ms = Pct(place_ms, 0.99);
  res.ready_p50_ms = Pct(ready_ms, 0.5);
  res.ready_p99_ms = Pct(ready_ms, 0.99);
  auto d = [&](const char* name) { return Metric(m1, name) - Metric(m0, name); };
  auto rev1 = api_etcd.Revision();
  res.revisions = rev1.ok() ? double(*rev1 - *rev0) : 0;
  res.keys_written = d("etcd_mvcc_put_total") + d("etcd_mvcc_delete_total");
  res.txn_requests = d("grpc_server_handled_total:Txn");
  res.range_requests = d("grpc_server_handled_total:Range");
  res.put_requests = d("grpc_server_handled_total:Put");
  res.fsyncs = d("etcd_disk_wal_fsync_duration_seconds_count");
  res.fsync_ms = 1000 * d("etcd_disk_wal_fsync_duration_seconds_sum") / std::max(res.fsyncs, 1.0);
  res.watch_events = d("etcd_debugging_mvcc_events_total");
  res.db_mb = Metric(m1, "etcd_mvcc_db_total_size_in_bytes") / (1 << 20);
  res.etcd_cpu_s = etcd_cpu1 - etcd_cpu0;
  res.bench_cpu_s = bench_cpu1 - bench_cpu0;
  res.etcd_hwm_mb = ProcStatusKb(etcd_pid, "VmHWM") / 1024.0;
  res.bench_hwm_mb = ProcStatusKb(::getpid(), "VmHWM") / 1024.0;
  for (const auto& n : nodes) {
    if (n->leader) {
      auto s = n->leader->stats();
      res.leader_plans += s.plans;
      res.leader_writes += s.writes;
      res.leader_conflicts += s.conflicts;
      res.leader_terms += s.terms;
    }
    auto a = n->agent->stats();
    res.agent_reconciles += a.reconciles;
    res.agent_starts += a.starts;
    res.agent_status_writes += a.status_writes;
  }
  double conv = Seconds(t0, t_end);
  res.conv_s = conv;
  res.rev_rate = res.revisions / conv;
  res.key_rate = res.keys_written / conv;

  // 4. The converged cluster at rest.
  if (opt.idle_seconds > 0) {
    // Agents refresh usage every status interval (10 s): an app first
    // reported before its usage was read is reported once more then. Let
    // that pass, so the window shows the steady state.
    std::this_thread::sleep_for(std::chrono::seconds(opt.settle_seconds));
    auto agent_io = [&] {
      std::array<int64_t, 3> io{};
      for (const auto& n : nodes) {
        io[0] += n->store->lookups();
        io[1] += n->rt->status_calls();
        io[2] += n->rt->probes();
      }
      return io;
    };
    auto i0 = EtcdMetrics();
    auto io0 = agent_io();
    double e0 = ProcCpuSeconds(etcd_pid), b0 = ProcCpuSeconds(::getpid());
    auto ti = Clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(opt.idle_seconds));
    double secs = Seconds(ti, Clock::now());
    auto i1 = EtcdMetrics();
    auto io1 = agent_io();
    res.idle_lookups_per_node_s = double(io1[0] - io0[0]) / secs / opt.nodes;
    res.idle_status_calls_per_node_s = double(io1[1] - io0[1]) / secs / opt.nodes;
    res.idle_probes_per_node_s = double(io1[2] - io0[2]) / secs / opt.nodes;
    res.idle_etcd_cpu_pct = 100 * (ProcCpuSeconds(etcd_pid) - e0) / secs;
    res.idle_bench_cpu_pct = 100 * (ProcCpuSeconds(::getpid()) - b0) / secs;
    res.idle_keys_per_s =
        (Metric(i1, "etcd_mvcc_put_total") + Metric(i1, "etcd_mvcc_delete_total") -
         Metric(i0, "etcd_mvcc_put_total") - Metric(i0, "etcd_mvcc_delete_total")) /
        secs;
    res.idle_ranges_per_s =
        (Metric(i1, "etcd_mvcc_range_total") - Metric(i0, "etcd_mvcc_range_total")) / secs;
  }

  std::printf("run %d: %d nodes (%d campaigning for leader), %d apps, observer %s, %s\n", run,
              opt.nodes, with_leader, opt.apps, obs ? "watch" : "stats",
              res.converged ? "converged" : "DID NOT CONVERGE");
  std::printf("  startup: %d nodes registered, agents synced, leader elected in %.2f s\n",
              opt.nodes, res.startup_s);
  std::printf("  created all apps in %.2f s (%.0f creates/s from %d threads)\n", res.created_s,
              res.create_rate, opt.creators);
  std::printf(
      "  from the first create: all placed %.2f s, all primaries running+ready %.2f s, all "
      "replicas reported %.2f s\n",
      res.placed_s, res.ready_s, res.replicas_s);
  if (obs)
    std::printf(
        "  per app, create -> placement: p50 %.0f ms, p99 %.0f ms; create -> running+ready: p50 "
        "%.0f ms, p99 %.0f ms\n",
        res.place_p50_ms, res.place_p99_ms, res.ready_p50_ms, res.ready_p99_ms);
  std::printf(
      "  etcd over %.2f s: %.0f revisions (write requests, %.0f/s), %.0f keys written (%.0f/s), "
      "%.0f WAL fsyncs (mean %.2f ms), %.0f watch events sent, db %.1f MiB; requests: %.0f Txn, "
      "%.0f Range, "
      "%.0f Put\n",
      conv, res.revisions, res.revisions / conv, res.keys_written, res.keys_written / conv,
      res.fsyncs, res.fsync_ms, res.watch_events, res.db_mb, res.txn_requests, res.range_requests,
      res.put_requests);
  std::printf(
      "  CPU: etcd %.2f s (%.0f%% of a core), this process %.2f s (%.0f%%); peak RSS etcd %.0f "
      "MiB, this process %.0f MiB\n",
      res.etcd_cpu_s, 100 * res.etcd_cpu_s / conv, res.bench_cpu_s, 100 * res.bench_cpu_s / conv,
      res.etcd_hwm_mb, res.bench_hwm_mb);
  std::printf("  leader: %" PRId64 " terms, %" PRId64 " plans, %" PRId64
              " placement writes, %" PRId64 " conflicts; while converging %" PRId64
              " planning rounds, %" PRId64 " of them wrote; agents: %" PRId64
              " reconciles, %" PRId64 " starts, %" PRId64 " status writes\n",
              res.leader_terms, res.leader_plans, res.leader_writes, res.leader_conflicts,
              res.leader_rounds, res.leader_rounds_writing, res.agent_reconciles, res.agent_starts,
              res.agent_status_writes);
  if (opt.idle_seconds > 0)
    std::printf(
        "  idle %d s (from %d s after convergence): etcd %.1f%% CPU, this process %.1f%%, %.1f "
        "keys written/s, %.1f ranges/s; per node and second the agent made %.0f volume "
        "look-ups (GetVolume/LivePath), %.0f per-app runtime status calls (List), %.1f "
        "readiness probes\n",
        opt.idle_seconds, opt.settle_seconds, res.idle_etcd_cpu_pct, res.idle_bench_cpu_pct,
        res.idle_keys_per_s, res.idle_ranges_per_s, res.idle_lookups_per_node_s,
        res.idle_status_calls_per_node_s, res.idle_probes_per_node_s);
  std::fflush(stdout);

  // 5. Check, then tear down (in parallel: each stop waits for watch threads).
  res.problems = CheckCorrectness(&api_etcd, api, nodes, opt.apps);
  std::fflush(stdout);
  obs.reset();
  {
    std::vector<std::thread> stoppers;
    for (auto& n : nodes) stoppers.emplace_back([&n] { n->Stop(); });
    for (auto& t : stoppers) t.join();
  }
  nodes.clear();
  ::malloc_trim(0);  // so the next run's peak RSS starts from a small heap
  (void)devcluster::StopPid(etcd_pid, "etcd", SIGTERM, 10000);
  g_etcd_pid = 0;
  if (!opt.keep)
    (void)RemoveTree(dir);
  else
    std::printf("  kept %s\n", dir.c_str());
  return res;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  std::string level = "warn";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string("0"); };
    if (a == "--nodes")
      opt.nodes = std::stoi(next());
    else if (a == "--apps")
      opt.apps = std::stoi(next());
    else if (a == "--runs")
      opt.runs = std::stoi(next());
    else if (a == "--leaders")
      opt.leaders = std::stoi(next());
    else if (a == "--creators")
      opt.creators = std::stoi(next());
    else if (a == "--idle-seconds")
      opt.idle_seconds = std::stoi(next());
    else if (a == "--settle-seconds")
      opt.settle_seconds = std::stoi(next());
    else if (a == "--timeout")
      opt.timeout_seconds = std::stoi(next());
    else if (a == "--no-pin")
      opt.pin = false;
    else if (a == "--observer")
      opt.watch_observer = next() != "stats";
    else if (a == "--etcd-pprof")
      opt.etcd_pprof = true;
    else if (a == "--keep")
      opt.keep = true;
    else if (a == "--etcd")
      opt.etcd = next();
    else if (a == "--log-level")
      level = next();
    else {
      std::fprintf(
          stderr,
          "usage: control_plane_bench [--nodes 100] [--apps 10000] [--runs 1] "
          "[--leaders N] [--creators 4] [--idle-seconds 10] [--settle-seconds 12] "
          "[--timeout 600] [--observer watch|stats] [--no-pin] [--etcd PATH] [--etcd-pprof] "
          "[--keep] [--log-level warn]\n");
      return 2;
    }
  }
  if (opt.nodes < 3 || opt.apps < 1 || opt.runs < 1 || opt.creators < 1) {
    std::fprintf(stderr,
                 "control_plane_bench: need --nodes >= 3, --apps, --runs, --creators >= 1\n");
    return 2;
  }
  LogLevel lv;
  if (!ParseLogLevel(level, &lv)) {
    std::fprintf(stderr, "control_plane_bench: bad --log-level %s\n", level.c_str());
    return 2;
  }
  SetLogLevel(lv);
  // ~8 connections and threads per node.
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (opt.pin && std::thread::hardware_concurrency() >= 2) {
    // Every thread created from here on inherits CPU 1; etcd gets CPU 0.
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(1, &set);
    if (::sched_setaffinity(0, sizeof set, &set) != 0) opt.pin = false;
  } else {
    opt.pin = false;
  }
  std::printf(
      "control_plane_bench: %d simulated nodes (real Agent, Leader, LeaseSession, one "
      "EtcdClient each; fake runtime and store) x %d apps (static, 1 replica), %d run(s), "
      "etcd %s, %s\n",
      opt.nodes, opt.apps, opt.runs, opt.etcd.c_str(),
      opt.pin ? "etcd pinned to CPU 0, this process to CPU 1" : "not pinned");
  std::fflush(stdout);

  std::vector<RunResult> rs;
  for (int r = 1; r <= opt.runs; ++r) rs.push_back(RunOnce(opt, r));
  if (opt.runs > 1) {
    auto med = [&](double RunResult::*f) {
      std::vector<double> v;
      for (const auto& r : rs) v.push_back(r.*f);
      return Median(v);
    };
    std::printf(
        "median of %d runs: created %.2f s (%.0f/s), placed %.2f s, primaries running+ready "
        "%.2f s, replicas %.2f s; etcd %.0f write requests/s, %.0f keys/s, CPU etcd %.2f s, "
        "this process %.2f s; peak RSS %.0f MiB\n",
        opt.runs, med(&RunResult::created_s), med(&RunResult::create_rate),
        med(&RunResult::placed_s), med(&RunResult::ready_s), med(&RunResult::replicas_s),
        med(&RunResult::rev_rate), med(&RunResult::key_rate), med(&RunResult::etcd_cpu_s),
        med(&RunResult::bench_cpu_s), med(&RunResult::bench_hwm_mb));
  }
  bool ok = true;
  for (const auto& r : rs) ok = ok && r.converged && r.problems == 0;
  return ok ? 0 : 1;
}
