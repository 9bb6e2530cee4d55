// `hc local ...`: run apps on this machine without a cluster (trial runs, the
// demo, debugging). Uses the same runtime and templates as hcd.
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "common/fs.h"
#include "common/units.h"
#include "runtime/runtime.h"
#include "runtime/templates.h"

namespace hc::cli {
namespace {

using nlohmann::json;
using runtime::AppState;
using runtime::AppStatus;
using runtime::Runtime;

struct LocalFlags {
  StoreFlags store;
  std::string backend;
  std::string state_dir;
  bool json = false;
};

Result<std::unique_ptr<Runtime>> OpenLocalRuntime(const LocalFlags& f) {
  runtime::RuntimeConfig c;
  c.backend = f.backend.empty() ? "auto" : f.backend;
  c.state_dir = f.state_dir;
  return runtime::OpenRuntime(c);
}

template <typename Fn>
std::function<void()> WithRuntime(LocalFlags& f, int* exit_code, Fn fn) {
  return [&f, exit_code, fn] {
    auto rt = OpenLocalRuntime(f);
    if (!rt.ok()) {
      *exit_code = Fail(rt.status());
      return;
    }
    Status s = fn(**rt);
    *exit_code = s.ok() ? 0 : Fail(s);
  };
}

// "256M", "1G", "512k", "1048576" -> bytes.
json StatusJson(const AppStatus& s) {
  return {{"name", s.name},
          {"backend", s.backend},
          {"state", runtime::AppStateName(s.state)},
          {"pid", s.pid},
          {"port", s.port},
          {"frozen", s.frozen},
          {"crash_looping", s.crash_looping},
          {"restarts", s.restarts},
          {"last_exit_code", s.has_last_exit ? json(s.last_exit_code) : json(nullptr)},
          {"last_exit_oom", s.last_exit_oom},
          {"started", s.started_unix_ns ? FormatTime(s.started_unix_ns) : ""},
          {"message", s.message}};
}

std::string StateText(const AppStatus& s) {
  std::string t = runtime::AppStateName(s.state);
  if (s.frozen) t += ",frozen";
  if (s.crash_looping) t += ",crash-looping";
  return t;
}

Status PrintStatus(Runtime& rt, const std::vector<AppStatus>& apps, bool as_json) {
  if (as_json) {
    json j = json::array();
    for (const auto& a : apps) {
      json e = StatusJson(a);
      auto u = rt.GetUsage(a.name);
      if (u.ok()) {
        e["cpu_seconds"] = u->cpu_seconds;
        e["memory_bytes"] = u->memory_bytes;
        e["memory_limit_bytes"] = u->memory_limit_bytes;
        e["processes"] = u->processes;
      }
      j.push_back(e);
    }
    std::printf("%s\n", j.dump(2).c_str());
    return Status::Ok();
  }
  if (apps.empty()) {
    std::printf("no local apps (start one with: hc local run NAME --template static)\n");
    return Status::Ok();
  }
  std::printf("%-20s %-22s %-8s %-6s %-8s %-8s %-10s %s\n", "NAME", "STATE", "PID", "PORT",
              "RESTARTS", "CPU", "MEMORY", "BACKEND");
  for (const auto& a : apps) {
    std::string cpu = "-", mem = "-";
    if (a.state == AppState::kRunning) {
      auto u = rt.GetUsage(a.name);
      if (u.ok()) {
        char b[32];
        std::snprintf(b, sizeof b, "%.2fs", u->cpu_seconds);
        cpu = b;
        mem = FormatBytes(u->memory_bytes);
      }
    }
    std::printf("%-20s %-22s %-8d %-6u %-8d %-8s %-10s %s\n", a.name.c_str(), StateText(a).c_str(),
                a.pid, a.port, a.restarts, cpu.c_str(), mem.c_str(), a.backend.c_str());
    if (!a.message.empty() && a.state != AppState::kRunning && a.state != AppState::kStopped) {
      std::printf("%-20s %s\n", "", a.message.c_str());
    }
  }
  return Status::Ok();
}

// Writes log bytes to stdout; on a terminal, control characters the app
// wrote (escape sequences could rewrite the screen or the title) are shown
// as \xNN instead.
void WriteLog(std::string_view bytes) {
  static const bool tty = ::isatty(1);
  if (!tty) {
    std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    return;
  }
  std::string out;
  out.reserve(bytes.size());
  for (unsigned char c : bytes) {
    if (c < 0x20 && c != '\n' && c != '\t') {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else if (c == 0x7f) {
      out += "\\x7f";
    } else {
      out += static_cast<char>(c);
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

// Prints the last `lines` lines of the log, then (follow) new lines as they come.
Status ShowLog(const std::string& path, int lines, bool follow) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return NotFound("no log yet at " + path);
  size_t pos = text->size();
  for (int n = 0; n <= lines && pos > 0;) {
    --pos;
    if ((*text)[pos] == '\n' && ++n > lines) {
      ++pos;
      break;
    }
  }
  WriteLog(std::string_view(*text).substr(pos));
  std::fflush(stdout);
  if (!follow) return Status::Ok();
  uint64_t offset = text->size();
  while (true) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto now = ReadFileToString(path);
    if (!now.ok()) continue;
    if (now->size() < offset) offset = 0;  // rotated
    WriteLog(std::string_view(*now).substr(offset));
    std::fflush(stdout);
    offset = now->size();
  }
}

}  // namespace

void AddLocalCommands(CLI::App& app, int* exit_code) {
  auto* local = app.add_subcommand(
      "local",
      "Run apps on this machine without a cluster: templates static, command, postgres, mariadb");
  local->require_subcommand(1);
  local->fallthrough();
  static LocalFlags F;
  F.store.AddTo(*local);
  local
      ->add_option("--runtime", F.backend,
                   "App runtime: runc (containers; root), process, or auto (default: runc when "
                   "root and installed)")
      ->envname("HC_RUNTIME_BACKEND");
  local
      ->add_option("--state-dir", F.state_dir,
                   "Where the runtime keeps app state and logs (default: "
                   "/var/lib/hybridcluster/runtime for root, else ~/.local/share/...)")
      ->envname("HC_RUNTIME_DIR");
  local->add_flag("--json", F.json, "Print status as JSON");

  // run
  {
    auto* c = local->add_subcommand(
        "run", "Start an app from a template, with its data in a volume of the same name");
    static std::string name, tmpl = "static", command, volume, memory = "256M";
    static double cpus = 1.0;
    static uint32_t pids = 512;
    static int port = 0, timeout_s = 60;
    static std::vector<std::string> env;
    static bool no_wait = false;
    c->add_option("NAME", name, "App name (a-z, 0-9, '.', '_', '-')")->required();
    c->add_option("-t,--template", tmpl, "static, command, postgres or mariadb")
        ->capture_default_str();
    c->add_option("-c,--command", command, "Command line for --template command (run by /bin/sh)");
    c->add_option("-p,--port", port, "Port on 127.0.0.1 (default: a free one)");
    c->add_option("--volume", volume,
                  "Directory to use as the app's volume (default: the volume NAME in the local "
                  "store, created if missing)");
    c->add_option("--memory", memory, "Memory limit, e.g. 256M or 1G; 0 = none")
        ->capture_default_str();
    c->add_option("--cpus", cpus, "CPU limit in cores, e.g. 0.5; 0 = none")->capture_default_str();
    c->add_option("--pids", pids, "Process limit; 0 = none")->capture_default_str();
    c->add_option("-e,--env", env, "Extra environment, NAME=value (repeatable)");
    c->add_option("--timeout", timeout_s, "Seconds to wait for the app to answer")
        ->capture_default_str();
    c->add_flag("--no-wait", no_wait, "Return once started, without waiting for readiness");
    c->callback(WithRuntime(F, exit_code, [](Runtime& rt) -> Status {
      auto names = runtime::TemplateNames();
      if (std::find(names.begin(), names.end(), tmpl) == names.end()) {
        // Checked before the volume is created, so a typo leaves nothing behind.
        return runtime::ApplyTemplate({.template_name = tmpl, .app_name = name}).status();
      }
      runtime::TemplateRequest req;
      req.template_name = tmpl;
      req.app_name = name;
      req.command = command;
      req.env = env;
      HC_ASSIGN_OR_RETURN(req.limits.memory_bytes, ParseSize(memory));
      if (cpus < 0) return InvalidArgument("--cpus must be 0 (no limit) or more");
      req.limits.cpu_millis = static_cast<uint32_t>(cpus * 1000);
      req.limits.pids = pids;
      if (port < 0 || port > 65535) return InvalidArgument("--port must be 1 to 65535");
      req.port = static_cast<uint16_t>(port);
      if (req.port == 0) {
        HC_ASSIGN_OR_RETURN(req.port, rt.PickPort());
      }
      if (volume.empty()) {
        HC_ASSIGN_OR_RETURN(auto store, F.store.Open());
        if (!store->GetVolume(name).ok()) {
          HC_RETURN_IF_ERROR(store->CreateVolume(name));
          std::printf("created volume '%s' (%s store)\n", name.c_str(), store->backend().c_str());
        }
        HC_ASSIGN_OR_RETURN(req.volume_path, store->LivePath(name));
      } else {
        char real[PATH_MAX];
        if (!::realpath(volume.c_str(), real))
          return NotFound("--volume '" + volume + "' does not exist");
        req.volume_path = real;
      }
      HC_RETURN_IF_ERROR(runtime::SeedVolume(tmpl, req.volume_path, name));
      HC_ASSIGN_OR_RETURN(runtime::AppSpec spec, runtime::ApplyTemplate(req));
      auto t0 = std::chrono::steady_clock::now();
      HC_RETURN_IF_ERROR(rt.Start(spec));
      if (!no_wait) {
        std::fprintf(stderr, "waiting for '%s' to answer on 127.0.0.1:%u ...\n", name.c_str(),
                     spec.port);
        HC_RETURN_IF_ERROR(rt.WaitReady(name, timeout_s * 1000));
      }
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - t0)
                    .count();
      HC_ASSIGN_OR_RETURN(AppStatus st, rt.GetStatus(name));
      std::printf("app '%s' (%s) is %s in %lld ms: %s backend, pid %d, port %u\n", name.c_str(),
                  tmpl.c_str(), no_wait ? "started" : "ready", static_cast<long long>(ms),
                  st.backend.c_str(), st.pid, spec.port);
      if (tmpl == "static") std::printf("  open:    http://127.0.0.1:%u/\n", spec.port);
      if (tmpl == "postgres") {
        std::printf(
            "  connect: PGPASSWORD=$(cat %s/.hc/postgres-password) psql -h 127.0.0.1 -p %u "
            "-U postgres\n",
            spec.volume_path.c_str(), spec.port);
      }
      if (tmpl == "mariadb") {
        std::printf(
            "  connect: mariadb -h 127.0.0.1 -P %u -u root -p$(cat "
            "%s/.hc/mariadb-root-password)\n",
            spec.port, spec.volume_path.c_str());
      }
      std::printf(
          "  data:    %s\n  logs:    hc local logs %s\n  status:  hc local status\n"
          "  stop:    hc local stop %s\n",
          spec.volume_path.c_str(), name.c_str(), name.c_str());
      return Status::Ok();
    }));
  }
  auto simple = [&](const char* verb, const char* help, Status (*fn)(Runtime&, const std::string&),
                    const char* done) {
    auto* c = local->add_subcommand(verb, help);
    auto name = std::make_shared<std::string>();
    static std::vector<std::shared_ptr<std::string>> keep;
    keep.push_back(name);
    c->add_option("NAME", *name, "App name")->required();
    std::string done_text = done;
    c->callback(WithRuntime(F, exit_code, [name, fn, done_text](Runtime& rt) -> Status {
      HC_RETURN_IF_ERROR(fn(rt, *name));
      std::printf("app '%s' %s\n", name->c_str(), done_text.c_str());
      return Status::Ok();
    }));
  };
  simple(
      "stop", "Stop an app (SIGTERM, then SIGKILL after its stop timeout)",
      [](Runtime& rt, const std::string& n) { return rt.Stop(n); }, "stopped");
  simple(
      "start", "Start a stopped app again with its stored settings",
      [](Runtime& rt, const std::string& n) -> Status {
        HC_ASSIGN_OR_RETURN(AppStatus st, rt.GetStatus(n));
        if (st.state != AppState::kStopped && st.state != AppState::kLost) {
          return AlreadyExists("app '" + n + "' is already " + runtime::AppStateName(st.state) +
                               "; use restart to restart it");
        }
        return rt.Restart(n);
      },
      "started");
  simple(
      "restart", "Stop and start an app",
      [](Runtime& rt, const std::string& n) { return rt.Restart(n); }, "restarted");
  simple(
      "freeze", "Pause every process of an app (for a consistent snapshot)",
      [](Runtime& rt, const std::string& n) { return rt.Freeze(n); }, "frozen");
  simple(
      "thaw", "Resume a frozen app", [](Runtime& rt, const std::string& n) { return rt.Thaw(n); },
      "thawed");
  simple(
      "rm", "Forget a stopped app (its settings and logs; the volume is kept)",
      [](Runtime& rt, const std::string& n) { return rt.Remove(n); },
      "removed (its volume is kept: hc volume destroy NAME removes the data)");
  // status
  {
    auto* c = local->add_subcommand("status", "Show local apps: state, pid, port, CPU, memory");
    static std::string name;
    c->add_option("NAME", name, "Only this app");
    c->callback(WithRuntime(F, exit_code, [](Runtime& rt) -> Status {
      std::vector<AppStatus> apps;
      if (name.empty()) {
        HC_ASSIGN_OR_RETURN(apps, rt.List());
      } else {
        HC_ASSIGN_OR_RETURN(AppStatus s, rt.GetStatus(name));
        apps.push_back(s);
      }
      return PrintStatus(rt, apps, F.json);
    }));
  }
  // logs
  {
    auto* c = local->add_subcommand("logs", "Show an app's output (stdout and stderr)");
    static std::string name;
    static int lines = 50;
    static bool follow = false;
    c->add_option("NAME", name, "App name")->required();
    c->add_option("-n,--lines", lines, "How many of the last lines")->capture_default_str();
    c->add_flag("-f,--follow", follow, "Keep printing new lines (Ctrl-C to stop)");
    c->callback(WithRuntime(F, exit_code, [](Runtime& rt) -> Status {
      HC_RETURN_IF_ERROR(rt.GetStatus(name).status());
      return ShowLog(rt.LogPath(name), lines, follow);
    }));
  }
}

}  // namespace hc::cli
