// Replication lag benchmark: write -> durable in the replica's snapshot.
//
//   replication_bench [--apps 100] [--seconds 60] [--write-every 5] [--idle-seconds 30]
//                     [--interval 1] [--runtime auto|runc|process] [--keep]
//
// A real local cluster (etcd + 3 real hcd on 127.0.0.50-53, the launcher of
// `hc demo`), --apps static apps with one replica each and a snapshot
// interval of --interval seconds, created through the REST API. Then for
// --seconds a writer gives every app a steady trickle: one small file write
// every --write-every seconds per app, staggered evenly, each write a new
// sequence number in <live>/tick.txt (the write time is noted after the
// write returns). Afterwards every snapshot each replica holds is read back:
// a snapshot holding sequence number k makes writes 1..k durable on the
// replica at the time its record was written (the mtime of its record file,
// i.e. when the receive completed). lag(write) = that time - write time.
// Printed: p50/p90/p99/max over all writes, writes never replicated, and
// then --idle-seconds of the cluster without writes: each hcd's CPU time
// (from /proc) as a percentage of one core (the idle cost of the checks).
//
// For reference: Proxmox VE's minimum replication interval is 1 minute;
// HybridCluster 2.0 replicated every 30 s.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "common/io.h"
#include "devcluster/local_cluster.h"
#include "net/http_client.h"
#include "storage/store.h"

using namespace hc;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

int64_t WallNs() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

double CpuSeconds(pid_t pid) {
  auto t = ReadFileToString("/proc/" + std::to_string(pid) + "/stat");
  if (!t.ok()) return 0;
  size_t close = t->rfind(')');
  std::vector<std::string> f;
  size_t pos = close + 2;
  while (pos < t->size()) {
    size_t sp = t->find(' ', pos);
    if (sp == std::string::npos) sp = t->size();
    f.push_back(t->substr(pos, sp - pos));
    pos = sp + 1;
  }
  // fields after ')': state(0) ... utime(11) stime(12)
  if (f.size() < 13) return 0;
  return (std::stod(f[11]) + std::stod(f[12])) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::pair<int, json> Call(const devcluster::LocalCluster& c, int k, const std::string& method,
                          const std::string& path, const std::string& body = "") {
  auto hp = net::ParseHttpUrl(c.ApiUrl(k));
  net::HttpClient client(*hp, {.connect_timeout = std::chrono::milliseconds(2000),
                               .request_timeout = std::chrono::milliseconds(30000)});
  auto r = client.Do(method, path, body);
  if (!r.ok()) return {0, json()};
  return {r->status, json::parse(r->body, nullptr, false)};
}

double Pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

}  // namespace

int main(int argc, char** argv) {
  int apps = 100, seconds = 60, write_every = 5, idle_seconds = 30, interval = 1;
  bool keep = false;
  std::string runtime = "auto";
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::atoi(argv[++i]) : 0; };
    if (a == "--apps")
      apps = next();
    else if (a == "--seconds")
      seconds = next();
    else if (a == "--write-every")
      write_every = next();
    else if (a == "--idle-seconds")
      idle_seconds = next();
    else if (a == "--interval")
      interval = next();
    else if (a == "--keep")
      keep = true;
    else if (a == "--runtime" && i + 1 < argc)
      runtime = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: replication_bench [--apps N] [--seconds S] [--write-every S] "
                   "[--idle-seconds S] [--interval S] [--runtime auto|runc|process] [--keep]\n");
      return 2;
    }
  }
  char tmpl[] = "/tmp/hc-repl-bench-XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  devcluster::LocalClusterOptions o;
  o.base_dir = tmpl;
  o.nodes = 3;
  o.first_octet = 50;
  o.etcd_client_port = 23795;
  o.etcd_peer_port = 23805;
  o.api_port = 7480;
  o.hcd_path = HC_HCD_PATH;
  o.cgroup_prefix = "hc-repl-bench";
  o.runtime_backend = runtime;  // process: 1,000 apps start in a minute instead of ten
  o.replication_interval_seconds = interval;
  o.reconcile_interval_ms = 5000;  // hcd's default (the devcluster's is 1 s)
  o.memory_capacity = "20G";
  o.log_level = "warn";
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
  auto stop = [&](int code) {
    if (keep) {
      std::fprintf(stderr, "kept: %s\n", tmpl);
      (void)c.StopProcesses();
    } else {
      (void)c.Destroy();
    }
    return code;
  };

  std::fprintf(stderr, "creating %d apps...\n", apps);
  auto t0 = Clock::now();
  for (int i = 0; i < apps; i++) {
    json body = {{"name", "app" + std::to_string(i)},
                 {"template", "static"},
                 {"replicas", 1},
                 {"limits", {{"memory_bytes", 16 << 20}, {"cpu_millis", 100}, {"pids", 64}}}};
    auto [st, j] = Call(c, 1 + i % 3, "POST", "/v1/apps", body.dump());
    if (st != 201) {
      std::fprintf(stderr, "create app%d: %d %s\n", i, st, j.dump().c_str());
      return stop(1);
    }
  }
  // Wait for every placement, and every replica to hold a first snapshot.
  struct App {
    std::string name;
    int primary = 0, replica = 0;
    std::string live;
    std::vector<std::pair<int, int64_t>> writes;  // (seq, wall ns after write)
  };
  std::vector<App> list(apps);
  std::map<int, std::unique_ptr<storage::Store>> stores;
  for (int k = 1; k <= 3; k++) {
    auto st = storage::OpenStore({.backend = "dir", .root = c.NodeDataDir(k) + "/volumes"});
    if (!st.ok()) return stop(1);
    stores[k] = std::move(*st);
  }
  for (int i = 0; i < apps; i++) {
    App& a = list[i];
    a.name = "app" + std::to_string(i);
    auto until = Clock::now() + std::chrono::seconds(600);
    while (Clock::now() < until) {
      auto [st, j] = Call(c, 1, "GET", "/v1/apps/" + a.name);
      if (st == 200 && j["placement"].is_object() && !j["placement"]["replicas"].empty()) {
        a.primary = std::atoi(j["placement"].value("primary", "node0").c_str() + 4);
        a.replica = std::atoi(j["placement"]["replicas"][0].get<std::string>().c_str() + 4);
        auto live = stores[a.primary]->LivePath(a.name);
        auto snaps = stores[a.replica]->ListSnapshots(a.name);
        if (live.ok() && snaps.ok() && !snaps->empty()) {
          a.live = *live;
          break;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    if (a.live.empty()) {
      std::fprintf(stderr, "%s never got a replica snapshot\n", a.name.c_str());
      return stop(1);
    }
  }
  std::fprintf(stderr, "%d apps placed and replicated in %.1f s\n", apps,
               std::chrono::duration<double>(Clock::now() - t0).count());

  // The trickle: app i writes at offsets i * write_every / apps in each period.
  std::fprintf(stderr, "writing for %d s (one write per app every %d s)...\n", seconds,
               write_every);
  auto start = Clock::now();
  int64_t period_ns = int64_t{write_every} * 1'000'000'000;
  int64_t total_ns = int64_t{seconds} * 1'000'000'000;
  struct Ev {
    int64_t at;
    int app;
  };
  std::vector<Ev> evs;
  for (int64_t base = 0; base < total_ns; base += period_ns)
    for (int i = 0; i < apps; i++) evs.push_back({base + period_ns * i / apps, i});
  std::sort(evs.begin(), evs.end(), [](auto& x, auto& y) { return x.at < y.at; });
  for (const Ev& e : evs) {
    std::this_thread::sleep_until(start + std::chrono::nanoseconds(e.at));
    App& a = list[e.app];
    int seq = static_cast<int>(a.writes.size()) + 1;
    {
      std::ofstream f(a.live + "/tick.txt", std::ios::trunc);
      f << seq << "\n";
    }
    a.writes.push_back({seq, WallNs()});
  }
  // Let the last writes land (interval + transfers, or the backlog of a
  // cluster that fell behind), so the idle window below measures idling.
  auto drained = [&] {
    for (App& a : list) {
      if (a.writes.empty()) continue;
      auto snaps = stores[a.replica]->ListSnapshots(a.name);
      StringSink out;
      if (!snaps.ok() || snaps->empty() ||
          !stores[a.replica]->ReadFile(a.name, snaps->back().name, "tick.txt", out).ok() ||
          std::atoi(out.out.c_str()) < a.writes.back().first) {
        return false;
      }
    }
    return true;
  };
  auto drain_start = Clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(interval * 2 + 1));
  while (!drained() && Clock::now() - drain_start < std::chrono::seconds(300))
    std::this_thread::sleep_for(std::chrono::seconds(1));
  std::fprintf(stderr, "all writes replicated %.1f s after the last one\n",
               std::chrono::duration<double>(Clock::now() - drain_start).count());
  std::this_thread::sleep_for(std::chrono::seconds(3));

  // Idle cost: no writes now.
  std::vector<double> cpu0(4);
  for (int k = 1; k <= 3; k++) cpu0[k] = CpuSeconds(c.NodePid(k));
  auto idle_start = Clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(idle_seconds));
  double idle_wall = std::chrono::duration<double>(Clock::now() - idle_start).count();
  std::vector<double> idle_pct;
  for (int k = 1; k <= 3; k++)
    idle_pct.push_back(100.0 * (CpuSeconds(c.NodePid(k)) - cpu0[k]) / idle_wall);

  // Read back every replica snapshot.
  std::vector<double> lags;
  int lost = 0;
  for (App& a : list) {
    auto& rs = *stores[a.replica];
    auto snaps = rs.ListSnapshots(a.name);
    if (!snaps.ok()) continue;
    std::vector<std::pair<int, int64_t>> durable;  // (seq, record mtime ns)
    for (const auto& sn : *snaps) {
      StringSink out;
      if (!rs.ReadFile(a.name, sn.name, "tick.txt", out).ok()) continue;
      int seq = std::atoi(out.out.c_str());
      struct stat sb;
      std::string rec = c.NodeDataDir(a.replica) + "/volumes/volumes/" + a.name + "/snapshots/" +
                        sn.name + ".snap";
      if (::stat(rec.c_str(), &sb) != 0) continue;
      durable.push_back({seq, int64_t{sb.st_mtim.tv_sec} * 1'000'000'000 + sb.st_mtim.tv_nsec});
    }
    for (const auto& [seq, w] : a.writes) {
      int64_t best = -1;
      for (const auto& [dseq, t] : durable)
        if (dseq >= seq && (best < 0 || t < best)) best = t;
      if (best < 0) {
        lost++;
        continue;
      }
      lags.push_back(static_cast<double>(best - w) / 1e6);
    }
  }
  std::printf("replication lag, write -> durable in the replica's snapshot\n");
  std::printf("  %d apps, 3 nodes, interval %d s, one write per app every %d s for %d s\n", apps,
              interval, write_every, seconds);
  std::printf("  writes %zu, not replicated %d\n", lags.size() + lost, lost);
  std::printf("  p50 %.0f ms  p90 %.0f ms  p99 %.0f ms  max %.0f ms\n", Pct(lags, 50),
              Pct(lags, 90), Pct(lags, 99), Pct(lags, 100));
  std::printf("  target p99 <= 2000 ms (100 apps): ratio p99/target %.2f\n", Pct(lags, 99) / 2000);
  std::printf("  reference: Proxmox VE min interval 60 s, HybridCluster 2.0 every 30 s\n");
  std::printf("hcd CPU with %d idle apps (%d s, %% of one core):", apps, idle_seconds);
  for (double p : idle_pct) std::printf(" %.1f%%", p);
  std::printf("  (target <= 5%%)\n");
  return stop(0);
}
