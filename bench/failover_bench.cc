// Failover and live-migration benchmark: RTO, RPO and the migration pause.
//
//   failover_bench [--trials 5] [--gib 1] [--rate 200] [--runtime auto|runc|process]
//                  [--skip-rto] [--skip-move] [--keep]
//
// A real local cluster (etcd + 3 real hcd on 127.0.0.50-53, lease TTL 3 s,
// snapshot interval 1 s), the launcher of `hc demo`.
//
// RTO/RPO, --trials times: a static app with one replica; a writer puts a
// new sequence number into its tick.txt every 100 ms (on the primary's live
// volume); after 5 s, kill -9 of the primary's hcd (its apps are left to the
// self-fence). RTO = kill -> first 200 through the third node's proxy
// (polled every 10 ms). RPO = the age, at the kill, of the newest write the
// new primary serves: the writes lost. The killed node is started again
// before the next trial. The leader is never the killed node (a separate
// line reports a trial where it is).
//
// Migration pause, --trials moves: a static app with --gib GiB of data
// (random files); --rate requests/s (open loop, 16 client threads) of a
// small file through the third node's proxy. Each move goes to the other
// node holding or not holding a copy (the first is a full pre-copy). Pause =
// the slowest of the requests sent while the move held them (from the move
// record: hold -> release) minus the median before the move; also the
// move's own held time, and the slowest of the other requests during the
// move (pre-copy). Failed requests are counted.
//
// For reference: Proxmox VE HA recovers in about 2 minutes; Kubernetes evicts
// pods after about 5 minutes by default; Proxmox restarts containers to
// migrate them; CRIU-based live migration freezes for seconds.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "devcluster/local_cluster.h"
#include "net/http_client.h"
#include "storage/store.h"

using namespace hc;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

constexpr uint16_t kProxyPort = 7560;

int64_t WallMs() {
  return std::chrono::duration_cast<milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::pair<int, json> Call(const devcluster::LocalCluster& c, int k, const std::string& method,
                          const std::string& path, const std::string& body = "") {
  auto hp = net::ParseHttpUrl(c.ApiUrl(k));
  net::HttpClientOptions o;
  o.connect_timeout = milliseconds(2000);
  o.request_timeout = milliseconds(10000);
  net::HttpClient client(*hp, o);
  auto r = client.Do(method, path, body);
  if (!r.ok()) return {0, json()};
  return {r->status, json::parse(r->body, nullptr, false)};
}

std::pair<int, std::string> Get(const devcluster::LocalCluster& c, int k, const std::string& host,
                                const std::string& path, int timeout_ms) {
  net::HttpClientOptions o;
  o.connect_timeout = milliseconds(1000);
  o.request_timeout = milliseconds(timeout_ms);
  net::HttpClient client(net::HostPort{c.NodeAddress(k), kProxyPort}, o);
  net::HttpRequest req;
  req.method = "GET";
  req.target = path;
  req.headers.Set("Host", host);
  auto r = client.Do(req, milliseconds(timeout_ms));
  if (!r.ok()) return {0, ""};
  return {r->status, r->body};
}

int NodeOf(const std::string& id) {
  return id.size() > 4 ? std::atoi(id.c_str() + 4) : 0;
}

bool WaitFor(const std::function<bool()>& f, int ms) {
  auto until = Clock::now() + milliseconds(ms);
  while (Clock::now() < until) {
    if (f()) return true;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return f();
}

std::string LivePublic(const devcluster::LocalCluster& c, int k, const std::string& app) {
  storage::StoreConfig sc;
  sc.backend = "dir";
  sc.root = c.NodeDataDir(k) + "/volumes";
  auto s = storage::OpenStore(sc);
  if (!s.ok()) return "";
  auto p = (*s)->LivePath(app);
  return p.ok() ? *p + "/public" : "";
}

void WriteAtomic(const std::string& dir_beside, const std::string& path, const std::string& data) {
  std::string tmp = dir_beside + "/.bench-tmp";
  std::ofstream(tmp, std::ios::binary | std::ios::trunc) << data;
  ::rename(tmp.c_str(), path.c_str());
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
double Pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

struct Roles {
  int primary = 0;
  std::vector<int> replicas;
  uint64_t epoch = 0;
};
Roles RolesOf(const devcluster::LocalCluster& c, const std::string& app) {
  Roles r;
  for (int k = 1; k <= 3; k++) {
    if (!c.NodeRunning(k)) continue;
    auto [st, j] = Call(c, k, "GET", "/v1/apps/" + app);
    if (st != 200 || !j["placement"].is_object()) continue;
    r.primary = NodeOf(j["placement"].value("primary", ""));
    for (const auto& id : j["placement"]["replicas"])
      r.replicas.push_back(NodeOf(id.get<std::string>()));
    r.epoch = j["placement"].value("epoch", uint64_t{0});
    return r;
  }
  return r;
}

bool CreateApp(const devcluster::LocalCluster& c, const std::string& name) {
  json body = {{"name", name},
               {"template", "static"},
               {"replicas", 1},
               {"snapshot_interval_seconds", 1},
               {"domains", {name + ".bench"}},
               {"limits", {{"memory_bytes", 64 << 20}}}};
  auto [st, j] = Call(c, 1, "POST", "/v1/apps", body.dump());
  if (st != 201) {
    std::fprintf(stderr, "create %s: HTTP %d %s\n", name.c_str(), st, j.dump().c_str());
    return false;
  }
  return WaitFor(
      [&] {
        auto [s, a] = Call(c, 1, "GET", "/v1/apps/" + name);
        return s == 200 && a.value("summary", "") == "running";
      },
      60000);
}

int Leader(const devcluster::LocalCluster& c) {
  for (int k = 1; k <= 3; k++) {
    if (!c.NodeRunning(k)) continue;
    auto [st, j] = Call(c, k, "GET", "/v1/cluster");
    if (st == 200) return NodeOf(j.value("leader", ""));
  }
  return 0;
}

bool WaitThreeNodes(const devcluster::LocalCluster& c) {
  return WaitFor(
      [&] {
        auto [st, j] = Call(c, 1, "GET", "/v1/cluster");
        return st == 200 && j["nodes"].size() == 3 && !j.value("leader", "").empty();
      },
      30000);
}

// ---- RTO / RPO
void RtoTrials(devcluster::LocalCluster& c, int trials) {
  std::vector<double> rto, rpo, lost;
  for (int t = 0; t < trials; t++) {
    std::string app = "rto" + std::to_string(t);
    if (!CreateApp(c, app)) return;
    Roles r = RolesOf(c, app);
    int leader = Leader(c);
    if (r.primary == leader) {
      // Keep the leader alive in the main trials: move the app off it first.
      int to = 1;
      while (to == r.primary || to == r.replicas[0]) to++;
      Call(c, 1, "POST", "/v1/apps/" + app + "/move",
           json{{"node", "node" + std::to_string(to)}}.dump());
      WaitFor([&] { return RolesOf(c, app).primary == to; }, 60000);
      std::this_thread::sleep_for(milliseconds(2000));
      r = RolesOf(c, app);
    }
    int client = 1;
    while (client == r.primary || client == r.replicas[0]) client++;
    std::string dir = LivePublic(c, r.primary, app);
    std::vector<int64_t> write_ms;
    std::atomic<bool> stop{false};
    std::thread writer([&] {
      for (int seq = 1; !stop.load(); seq++) {
        WriteAtomic(c.NodeDataDir(r.primary), dir + "/tick.txt", std::to_string(seq));
        write_ms.push_back(WallMs());
        std::this_thread::sleep_for(milliseconds(100));
      }
    });
    std::this_thread::sleep_for(milliseconds(5000));
    int64_t kill_ms = WallMs();
    auto t0 = Clock::now();
    (void)c.StopNode(r.primary, SIGKILL);
    stop.store(true);
    writer.join();
    std::pair<int, std::string> got;
    bool ok = WaitFor(
        [&] {
          got = Get(c, client, app + ".bench", "/tick.txt", 1000);
          return got.first == 200;
        },
        60000);
    double rto_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    int served = ok ? std::atoi(got.second.c_str()) : 0;
    int last = static_cast<int>(write_ms.size());
    double rpo_ms = served >= 1 && served <= last ? kill_ms - write_ms[served - 1] : -1;
    std::printf(
        "trial %d: kill -9 of node%d (primary): first 200 after %.0f ms; serves write %d "
        "of %d (RPO %.0f ms, %d writes lost)\n",
        t + 1, r.primary, rto_ms, served, last, rpo_ms, last - served);
    std::fflush(stdout);
    if (ok) {
      rto.push_back(rto_ms);
      rpo.push_back(rpo_ms);
      lost.push_back(last - served);
    }
    (void)c.StartNode(r.primary);
    WaitThreeNodes(c);
    std::this_thread::sleep_for(milliseconds(3000));
    Call(c, 1, "DELETE", "/v1/apps/" + app);
  }
  std::printf(
      "RTO (kill -9 of the hosting node -> first successful response), %zu trials: "
      "p50 %.0f ms, p99/max %.0f ms; target 5,000 ms (Proxmox VE HA ~120,000 ms: %.0fx; "
      "Kubernetes default eviction ~300,000 ms: %.0fx)\n",
      rto.size(), Median(rto), Pct(rto, 0.99), 120000 / std::max(1.0, Median(rto)),
      300000 / std::max(1.0, Median(rto)));
  std::printf(
      "RPO at failover: p50 %.0f ms, max %.0f ms of writes lost (snapshot interval "
      "1,000 ms + transfer: compare with replication_bench's lag)\n",
      Median(rpo), Pct(rpo, 0.99));
}

// ---- Migration pause
struct LoadStats {
  std::mutex mu;
  std::vector<std::pair<int64_t, double>> samples;  // (start wall ms, latency ms)
  std::atomic<int64_t> failed{0};
  std::vector<std::pair<int64_t, std::string>> errors;  // (start wall ms, what), the first few
};

void LoadThread(const devcluster::LocalCluster& c, int client, const std::string& host,
                int per_second, std::atomic<bool>* stop, LoadStats* st) {
  auto period = std::chrono::microseconds(1'000'000 / per_second);
  auto next = Clock::now();
  net::HttpClientOptions o;
  o.connect_timeout = milliseconds(2000);
  o.request_timeout = milliseconds(20000);
  net::HttpClient http(net::HostPort{c.NodeAddress(client), kProxyPort}, o);
  while (!stop->load()) {
    net::HttpRequest req;
    req.method = "GET";
    req.target = "/small.txt";
    req.headers.Set("Host", host);
    int64_t at = WallMs();
    auto t0 = Clock::now();
    auto r = http.Do(req, milliseconds(20000));
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    std::lock_guard<std::mutex> l(st->mu);
    if (r.ok() && r->status == 200) {
      st->samples.push_back({at, ms});
    } else {
      st->failed++;
      if (st->errors.size() < 5) {
        std::string what = r.ok() ? "HTTP " + std::to_string(r->status) + " " +
                                        r->body.substr(0, std::min<size_t>(r->body.size(), 160))
                                  : r.status().ToString();
        std::replace(what.begin(), what.end(), '\n', ' ');
        st->errors.push_back({at, what});
      }
    }
    next += period;
    std::this_thread::sleep_until(next);
  }
}

void MoveTrials(devcluster::LocalCluster& c, int trials, int gib, int rate) {
  const std::string app = "big";
  if (!CreateApp(c, app)) return;
  Roles r = RolesOf(c, app);
  std::string dir = LivePublic(c, r.primary, app);
  std::fprintf(stderr, "writing %d GiB into %s ...\n", gib, app.c_str());
  std::string chunk(64 << 20, '\0');
  uint64_t x = 88172645463325252ull;
  for (int f = 0; f < gib * 16; f++) {
    for (size_t i = 0; i + 8 <= chunk.size(); i += 8) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      std::memcpy(&chunk[i], &x, 8);
    }
    WriteAtomic(c.NodeDataDir(r.primary), dir + "/data" + std::to_string(f) + ".bin", chunk);
  }
  WriteAtomic(c.NodeDataDir(r.primary), dir + "/small.txt", "ok");
  std::fprintf(stderr, "waiting for the replica to hold it ...\n");
  WaitFor(
      [&] {
        auto [st, j] = Call(c, r.primary, "GET", "/v1/apps/" + app + "/replication");
        return st == 200 && !j["replicas"].empty() &&
               j["replicas"][0].value("state", "") == "in_sync";
      },
      600000);
  std::vector<double> pauses, held, others;
  int64_t failures = 0;
  for (int t = 0; t < trials; t++) {
    r = RolesOf(c, app);
    int target = 1;
    while (target == r.primary || target == r.replicas[0]) target++;
    if (t % 2 == 1) target = r.replicas[0];  // back to a node that holds a copy
    int client = 1;
    while (client == r.primary || client == target) client++;
    LoadStats st;
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    for (int i = 0; i < 16; i++)
      threads.emplace_back(
          [&] { LoadThread(c, client, app + ".bench", std::max(1, rate / 16), &stop, &st); });
    std::this_thread::sleep_for(milliseconds(3000));
    int64_t move_at = WallMs();
    auto [code, m] = Call(c, 1, "POST", "/v1/apps/" + app + "/move",
                          json{{"node", "node" + std::to_string(target)}}.dump());
    json end;
    WaitFor(
        [&] {
          auto [s, j] = Call(c, client, "GET", "/v1/apps/" + app + "/move");
          end = j;
          return s == 200 && (j.value("state", "") == "done" || j.value("state", "") == "failed");
        },
        900000);
    std::this_thread::sleep_for(milliseconds(2000));
    stop.store(true);
    for (auto& th : threads) th.join();
    // The held window, from the move's record: it ends at the release
    // (the record's last update) and lasted pause_ms.
    const int64_t released = end.value("updated_ms", int64_t{0});
    const int64_t held_from = released - end.value("pause_ms", int64_t{0});
    std::vector<double> before, during, in_hold;
    for (const auto& [at, ms] : st.samples) {
      if (at < move_at) {
        before.push_back(ms);
      } else if (at >= held_from - 5 && at <= released) {
        in_hold.push_back(ms);
      } else {
        during.push_back(ms);
      }
    }
    if (const char* dump = std::getenv("HC_BENCH_SAMPLES")) {
      // Every request of this move: start (ms after the move began), latency.
      std::ofstream out(std::string(dump) + "." + std::to_string(t + 1));
      for (const auto& [at, ms] : st.samples) out << (at - move_at) << " " << ms << "\n";
    }
    double base = Median(before);
    double worst = in_hold.empty() ? 0 : *std::max_element(in_hold.begin(), in_hold.end());
    double other = during.empty() ? 0 : *std::max_element(during.begin(), during.end());
    double pause = worst - base;
    std::printf(
        "move %d: node%d -> node%d (%s copy there): %s; %zu requests, %lld failed; "
        "median before %.1f ms; %zu requests held, the slowest %.0f ms: pause %.0f ms; held "
        "%lld ms (move's own count); slowest other request during the move %.0f ms; %s\n",
        t + 1, r.primary, target, t % 2 == 1 ? "a" : "no", end.value("state", "?").c_str(),
        st.samples.size() + st.failed.load(), static_cast<long long>(st.failed.load()), base,
        in_hold.size(), worst, pause, static_cast<long long>(end.value("pause_ms", int64_t{0})),
        other, end.value("message", "").c_str());
    for (const auto& [at, what] : st.errors)
      std::printf("  failed request sent %+lld ms after the move began: %s\n",
                  static_cast<long long>(at - move_at), what.c_str());
    std::fflush(stdout);
    pauses.push_back(pause);
    others.push_back(other - base);
    held.push_back(static_cast<double>(end.value("pause_ms", int64_t{0})));
    failures += st.failed.load();
    (void)code;
    (void)m;
    std::this_thread::sleep_for(milliseconds(3000));
  }
  std::printf(
      "Migration pause (%d GiB static app, %d req/s, %d moves): extra latency of the held "
      "requests p50 %.0f ms, max %.0f ms; hold p50 %.0f ms; other requests during the moves "
      "(pre-copy): extra latency p50 %.0f ms, max %.0f ms; failed requests %lld; target 250 ms "
      "and 0 (Proxmox restarts the container; CRIU freezes for seconds)\n",
      gib, rate, trials, Median(pauses), Pct(pauses, 0.99), Median(held), Median(others),
      Pct(others, 0.99), static_cast<long long>(failures));
}

}  // namespace

int main(int argc, char** argv) {
  int trials = 5, gib = 1, rate = 200;
  bool keep = false, skip_rto = false, skip_move = false;
  std::string runtime = "auto";
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--trials")
      trials = std::atoi(next().c_str());
    else if (a == "--gib")
      gib = std::atoi(next().c_str());
    else if (a == "--rate")
      rate = std::atoi(next().c_str());
    else if (a == "--runtime")
      runtime = next();
    else if (a == "--keep")
      keep = true;
    else if (a == "--skip-rto")
      skip_rto = true;
    else if (a == "--skip-move")
      skip_move = true;
    else {
      std::fprintf(stderr,
                   "usage: failover_bench [--trials 5] [--gib 1] [--rate 200] "
                   "[--runtime auto|runc|process] [--skip-rto] [--skip-move] [--keep]\n");
      return 2;
    }
  }
  char tmpl[] = "/tmp/hc-failover-bench-XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  devcluster::LocalClusterOptions o;
  o.base_dir = tmpl;
  o.nodes = 3;
  o.first_octet = 50;
  o.etcd_client_port = 23795;
  o.etcd_peer_port = 23805;
  o.api_port = 7480;
  o.proxy_port = kProxyPort;
  o.proxy_internal_port = 7562;
  o.hcd_path = HC_HCD_PATH;
  o.cgroup_prefix = "hc-failover-bench";
  o.runtime_backend = runtime;
  o.replication_interval_seconds = 1;
  o.lease_ttl_seconds = 3;
  o.reconcile_interval_ms = 5000;  // hcd's default
  o.datacenters = {"dc1", "dc1", "dc1"};
  o.memory_capacity = "8G";
  o.log_level = "info";
  o.progress = [](const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); };
  auto created = devcluster::LocalCluster::Create(o);
  if (!created.ok()) {
    std::fprintf(stderr, "%s\n", created.status().ToString().c_str());
    return 1;
  }
  devcluster::LocalCluster c = std::move(*created);
  Status s = c.Start(60000);
  if (!s.ok()) {
    std::fprintf(stderr, "cluster: %s\n", s.ToString().c_str());
    (void)c.Destroy();
    return 1;
  }
  std::printf(
      "failover_bench: 3 hcd + etcd on 127.0.0.50-53, runtime %s, lease TTL 3 s, "
      "snapshot interval 1 s\n",
      runtime.c_str());
  if (!skip_rto) RtoTrials(c, trials);
  if (!skip_move) MoveTrials(c, trials, gib, rate);
  if (keep) {
    std::printf("cluster kept in %s (hc demo --dir %s stop)\n", tmpl, tmpl);
    return 0;
  }
  (void)c.Destroy();
  return 0;
}
