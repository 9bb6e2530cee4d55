// How hc-shim starts and controls one app: the backend-specific part of the
// supervisor. The supervisor owns the Launcher and calls it from its single
// thread. The supervisor process is a child subreaper, so every process of
// the app that is not in a PID namespace stays its descendant.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "common/status.h"
#include "runtime/app_spec.h"
#include "runtime/cgroup.h"
#include "runtime/runtime.h"

namespace hc::runtime::shim {

// Settings the runtime hands to the supervisor (shim.json in the app's directory).
struct ShimConfig {
  std::string backend;  // "runc" or "process"
  std::string app_dir;  // <state_dir>/apps/<name>
  std::string runc_path;
  std::string runc_root;  // runc --root
  std::string rootfs;     // shared read-only root skeleton (runc)
  std::string cgroup_parent;
  uint64_t log_max_bytes = 8ull << 20;
  int log_files = 3;
  std::string fence_file;  // "" = no fencing (runtime/fence.h)
  // Only create the app (Launcher::Create) and wait for "start" on the
  // control socket (Runtime::Prepare).
  bool prepare_only = false;
};

Result<ShimConfig> ShimConfigFromJson(std::string_view text);
std::string ShimConfigToJson(const ShimConfig& c);

class Launcher {
 public:
  virtual ~Launcher() = default;

  // Once per supervisor, before the first Launch: cgroups, port filter, bundle.
  virtual Status Prepare() = 0;

  // Starts the app with stdout/stderr on the given fds; returns its main pid,
  // which is (or becomes) a child of this process.
  virtual Result<pid_t> Launch(int out_fd, int err_fd) = 0;

  // Does all of the next Launch that can be done before the app may run
  // (runc: `runc create`, which sets up namespaces, cgroups and mounts and
  // leaves the container's init waiting), so that Launch then only lets it
  // go (`runc start`). A move prepares the app on its target this way while
  // the source still serves. Backends that cannot do it return Ok and launch
  // in full later.
  virtual Status Create(int out_fd, int err_fd) { return Status::Ok(); }

  // The graceful stop signal, to the app's main process (and its group).
  virtual void Signal(pid_t main_pid, int sig) = 0;

  // SIGKILLs every process of the app; returns when none is left (or after a
  // bounded wait, with an error).
  virtual Status KillAll(pid_t main_pid) = 0;

  virtual Status Freeze(pid_t main_pid) = 0;
  virtual Status Thaw(pid_t main_pid) = 0;

  virtual Result<Usage> GetUsage(pid_t main_pid) = 0;

  // Called periodically while running (every 250 ms); returns true when it
  // killed the app for exceeding its memory limit (no-cgroup fallback).
  virtual bool EnforceLimits(pid_t main_pid) { return false; }

  // Whether EnforceLimits needs to be called at all (only the no-cgroup
  // fallback does): idle apps then cost the supervisor no wake-ups.
  virtual bool PollsLimits() const { return false; }

  // Processes killed by the memory limit so far (cumulative).
  virtual uint64_t OomKills() = 0;

  // After the final stop: removes containers and cgroups.
  virtual void Cleanup() = 0;
};

std::unique_ptr<Launcher> MakeProcessLauncher(const ShimConfig& cfg, const AppSpec& spec);
std::unique_ptr<Launcher> MakeRuncLauncher(const ShimConfig& cfg, const AppSpec& spec);

// Every descendant of `root` (by parent pid, from /proc), not including root.
std::vector<pid_t> Descendants(pid_t root);

// The environment the app sees: PATH, HOME, APP_DIR, PORT, LANG, then spec.env.
std::vector<std::string> AppEnvironment(const AppSpec& spec, const std::string& app_dir_seen);

// The uid/gid the app runs as: the spec's (or AppUid) when we are root, else ours.
void AppIdentity(const AppSpec& spec, uint32_t* uid, uint32_t* gid);

Usage UsageFromCgroup(const CgroupUsage& cu);

// The OCI runtime spec (config.json) for the runc backend.
std::string OciConfigJson(const ShimConfig& cfg, const AppSpec& spec);

}  // namespace hc::runtime::shim
