// Runtime benchmark: start-to-ready latency of a `static` app, and the memory
// of many idle `static` apps on one node.
//
//   runtime_bench [--backend runc|process] [--runs 20] [--apps 200] [--shim PATH]
//
// Start-to-ready = Runtime::Start (supervisor, runc, container init) until an
// HTTP GET / answers. Memory is read from /proc: for each app, the platform
// side (its hc-shim supervisor) and the app side (tini + busybox httpd in the
// container), as RSS and PSS (PSS shares a page among the processes mapping
// it, so it is what each app really costs when libraries are shared).
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/fs.h"
#include "runtime/cgroup.h"
#include "runtime/runtime.h"
#include "runtime/templates.h"

using namespace hc;
using namespace hc::runtime;

namespace {

struct Mem {
  uint64_t rss_kb = 0, pss_kb = 0;
};

Mem ProcMem(pid_t pid) {
  Mem m;
  auto t = ReadFileToString("/proc/" + std::to_string(pid) + "/smaps_rollup");
  if (!t.ok()) return m;
  auto field = [&](const char* name) -> uint64_t {
    size_t p = t->find(std::string("\n") + name + ":");
    if (p == std::string::npos) return 0;
    return std::strtoull(t->c_str() + p + std::strlen(name) + 2, nullptr, 10);
  };
  m.rss_kb = field("Rss");
  m.pss_kb = field("Pss");
  return m;
}

// pid -> ppid for every process.
std::vector<std::pair<pid_t, pid_t>> AllProcs() {
  std::vector<std::pair<pid_t, pid_t>> out;
  DIR* d = ::opendir("/proc");
  while (struct dirent* e = ::readdir(d)) {
    char* end;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end || pid <= 0) continue;
    auto st = ReadFileToString(std::string("/proc/") + e->d_name + "/stat");
    if (!st.ok()) continue;
    size_t rp = st->rfind(')');
    out.push_back({pid, std::strtol(st->c_str() + rp + 4, nullptr, 10)});
  }
  ::closedir(d);
  return out;
}

std::string Comm(pid_t pid) {
  auto c = ReadFileToString("/proc/" + std::to_string(pid) + "/comm");
  return c.ok() ? c->substr(0, c->find('\n')) : "";
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

double Pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

void Die(const Status& s, const char* what) {
  std::fprintf(stderr, "runtime_bench: %s: %s\n", what, s.ToString().c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  std::string backend = "runc", shim;
  int runs = 20, apps = 200;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--backend")
      backend = next();
    else if (a == "--runs")
      runs = std::stoi(next());
    else if (a == "--apps")
      apps = std::stoi(next());
    else if (a == "--shim")
      shim = next();
    else {
      std::fprintf(
          stderr,
          "usage: runtime_bench [--backend runc|process] [--runs N] [--apps N] [--shim PATH]\n");
      return 2;
    }
  }
  char tmpl[] = "/tmp/hc-runtime-bench-XXXXXX";
  if (!::mkdtemp(tmpl)) return 1;
  std::string dir = tmpl;
  ::chmod(dir.c_str(), 0755);
  RuntimeConfig cfg;
  cfg.backend = backend;
  cfg.state_dir = dir + "/state";
  cfg.shim_path = shim;
  cfg.cgroup_parent = "hc-bench-" + std::to_string(::getpid());
  auto rt_or = OpenRuntime(cfg);
  if (!rt_or.ok()) Die(rt_or.status(), "opening the runtime");
  Runtime& rt = **rt_or;

  auto make_app = [&](const std::string& name) -> AppSpec {
    std::string vol = dir + "/volumes/" + name;
    if (!MakeDirs(vol, 0755).ok()) std::exit(1);
    Status s = SeedVolume("static", vol, name);
    if (!s.ok()) Die(s, "seeding");
    if (::geteuid() == 0) (void)!::chown(vol.c_str(), AppUid(name), AppUid(name));
    TemplateRequest req;
    req.template_name = "static";
    req.app_name = name;
    req.volume_path = vol;
    auto port = rt.PickPort();
    if (!port.ok()) Die(port.status(), "picking a port");
    req.port = *port;
    req.limits.memory_bytes = 64ull << 20;
    auto spec = ApplyTemplate(req);
    if (!spec.ok()) Die(spec.status(), "template");
    return *spec;
  };

  std::printf("runtime_bench: backend %s, %d start-to-ready runs, %d idle apps\n",
              rt.backend().c_str(), runs, apps);
  // 1. Start-to-ready latency (the first run also warms the page cache).
  std::vector<double> ms;
  AppSpec one = make_app("lat");
  for (int i = 0; i <= runs; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    Status s = rt.Start(one);
    if (s.ok()) s = rt.WaitReady("lat", 10000);
    if (!s.ok()) Die(s, "start-to-ready");
    double t =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i > 0) ms.push_back(t);
    s = rt.Stop("lat");
    if (!s.ok()) Die(s, "stop");
  }
  std::printf(
      "start-to-ready of a static app: median %.1f ms, p90 %.1f ms, min %.1f ms "
      "(target <= 150 ms with runc): %s\n",
      Median(ms), Pct(ms, 0.9), Pct(ms, 0), Median(ms) <= 150 ? "met" : "NOT met");

  // 2. Density: many idle static apps.
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> names;
  for (int i = 0; i < apps; ++i) {
    std::string name = "idle" + std::to_string(i);
    Status s = rt.Start(make_app(name));
    if (!s.ok()) Die(s, "starting idle apps");
    names.push_back(name);
    if ((i + 1) % 50 == 0) std::fprintf(stderr, "  %d/%d apps started\n", i + 1, apps);
  }
  for (const auto& n : names) {
    Status s = rt.WaitReady(n, 30000);
    if (!s.ok()) Die(s, "waiting for idle apps");
  }
  double all_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Give the freshly started processes a moment to settle, then measure.
  ::sleep(2);
  auto procs = AllProcs();
  Mem shim_mem, app_mem;
  int shims = 0, app_procs = 0;
  pid_t self = ::getpid();
  (void)self;
  for (auto [pid, ppid] : procs) {
    if (Comm(pid) != "hc-shim") continue;
    // Only supervisors of this run: their app directory is under `dir`.
    auto cmd = ReadFileToString("/proc/" + std::to_string(pid) + "/cmdline");
    if (!cmd.ok() || cmd->find(dir) == std::string::npos) continue;
    Mem m = ProcMem(pid);
    shim_mem.rss_kb += m.rss_kb;
    shim_mem.pss_kb += m.pss_kb;
    ++shims;
    // The app: every descendant of the supervisor.
    std::vector<pid_t> todo = {pid};
    while (!todo.empty()) {
      pid_t p = todo.back();
      todo.pop_back();
      for (auto [c, pp] : procs) {
        if (pp != p) continue;
        Mem cm = ProcMem(c);
        app_mem.rss_kb += cm.rss_kb;
        app_mem.pss_kb += cm.pss_kb;
        ++app_procs;
        todo.push_back(c);
      }
    }
  }
  uint64_t cg_total = 0;
  for (const auto& n : names) {
    auto u = rt.GetUsage(n);
    if (u.ok()) cg_total += u->memory_bytes;
  }
  int n = std::max(shims, 1);
  std::printf(
      "%d idle static apps started and ready in %.1f s (%d supervisors, %d app processes)\n", apps,
      all_s, shims, app_procs);
  std::printf("per app, platform side (hc-shim): RSS %.0f KiB, PSS %.0f KiB\n",
              double(shim_mem.rss_kb) / n, double(shim_mem.pss_kb) / n);
  std::printf(
      "per app, the app itself (init + httpd): RSS %.0f KiB, PSS %.0f KiB; cgroup-charged "
      "memory %.0f KiB\n",
      double(app_mem.rss_kb) / n, double(app_mem.pss_kb) / n, double(cg_total) / 1024 / n);
  std::printf("total for %d apps: platform PSS %.1f MiB, apps PSS %.1f MiB\n", apps,
              shim_mem.pss_kb / 1024.0, app_mem.pss_kb / 1024.0);
  for (const auto& nm : names) (void)rt.Stop(nm);
  (void)rt.Stop("lat");
  (void)Cgroup(DetectCgroupMode(), cfg.cgroup_parent).Remove();
  (void)RemoveTree(dir);
  return 0;
}
