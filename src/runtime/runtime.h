// The app runtime: runs each app as a supervised process tree with limits,
// logs, restart on crash and freeze/thaw for consistent snapshots.
//
// Two backends share this interface:
//   "runc"    - an OCI container per app: host OS directories read-only, the
//               volume read-write at /srv/app, private /tmp, own PID/mount/UTS/IPC
//               namespaces, no capabilities, seccomp, cgroup limits.
//   "process" - a child process in its own session; cgroups when the caller may
//               create them (root), else signals and /proc.
// Each app is watched by its own small supervisor process (`hc-shim`), so apps
// keep running when the caller (hc, hcd) exits or restarts; a new Runtime over
// the same state_dir finds them again.
//
// Thread-safety: a Runtime may be used from several threads; calls for the same
// app are serialized by the supervisor.
//
// Example:
//   HC_ASSIGN_OR_RETURN(auto rt, OpenRuntime({.state_dir = "/var/lib/hybridcluster/runtime"}));
//   HC_RETURN_IF_ERROR(rt->Start(spec));
//   HC_RETURN_IF_ERROR(rt->WaitReady(spec.name, 5000));
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "runtime/app_spec.h"

namespace hc::runtime {

enum class AppState {
  kStarting,  // launched, not yet confirmed running
  kRunning,   // the app's main process is alive
  kBackoff,   // it exited unexpectedly; waiting to restart
  kStopping,  // stop requested, waiting for the processes to go
  kStopped,   // stopped on request (or never started)
  kLost,      // the supervisor died; the app's processes may linger
  kFenced,    // killed or held back: the fence deadline passed (RuntimeConfig::fence_file)
  kPrepared,  // created ahead and waiting for Start (Runtime::Prepare); nothing of it runs
};
const char* AppStateName(AppState s);

struct AppStatus {
  std::string name;
  std::string backend;
  AppState state = AppState::kStopped;
  pid_t pid = 0;  // main process (host pid), 0 when not running
  bool frozen = false;
  bool crash_looping = false;  // >= crash_loop_after consecutive crashes
  int restarts = 0;            // restarts since Start
  int consecutive_crashes = 0;
  bool has_last_exit = false;
  int last_exit_code = 0;            // exit status, or 128+signal
  bool last_exit_oom = false;        // killed by the memory limit
  int64_t started_unix_ns = 0;       // when the current/last run began
  int64_t next_restart_unix_ns = 0;  // kBackoff: when the next attempt is due
  uint16_t port = 0;
  std::string message;  // last notable event, for people
};

struct Usage {
  double cpu_seconds = 0;
  uint64_t memory_bytes = 0;        // current (cgroup: charged memory; else sum of RSS)
  uint64_t memory_peak_bytes = 0;   // 0 when unknown
  uint64_t memory_limit_bytes = 0;  // 0 = none enforced
  uint32_t processes = 0;
  uint64_t oom_kills = 0;
  bool from_cgroup = false;
};

class Runtime {
 public:
  virtual ~Runtime() = default;
  virtual std::string backend() const = 0;

  // Starts the app under a new supervisor. Returns once the app's first process
  // has been launched (not when it is ready: see WaitReady). AlreadyExists if
  // the app is running; Conflict if another app of this runtime has the port or
  // it is already bound on this host. With fencing, a start while the fence
  // deadline has passed is OK but launches nothing: the app shows kFenced
  // and is launched once the deadline lies in the future again.
  // Start of an app that was prepared (Prepare) with the same spec only lets
  // the prepared one go; with another spec, the prepared one is removed
  // first.
  virtual Status Start(const AppSpec& spec) = 0;

  // Does ahead what Start would, short of running anything of the app (runc:
  // `runc create`; the app shows kPrepared), so that a later Start with the
  // same spec takes milliseconds: a move prepares the app on its target
  // while the source still serves. Stop removes a prepared app. Unavailable
  // where the backend cannot prepare (the process backend): Start then does
  // everything.
  virtual Status Prepare(const AppSpec& spec) {
    return Unavailable("the " + backend() + " runtime cannot prepare app '" + spec.name +
                       "' ahead; it is started in full");
  }

  // Sends stop_signal, waits stop_timeout_ms, then kills every process of the
  // app; returns when none is left and the supervisor has exited. Stopping a
  // stopped app is OK; an unknown app is NotFound.
  virtual Status Stop(const std::string& name) = 0;

  // Stop then start again with the stored spec; resets the back-off. Like
  // Start, OK without a new process while the app is fenced.
  virtual Status Restart(const std::string& name) = 0;

  virtual Result<AppStatus> GetStatus(const std::string& name) = 0;
  virtual Result<std::vector<AppStatus>> List() = 0;

  // Waits until the app's readiness probe succeeds. Unavailable with the last
  // probe error when timeout_ms passes (timeout_ms < 0: the spec's timeout).
  virtual Status WaitReady(const std::string& name, int timeout_ms = -1) = 0;

  virtual Result<Usage> GetUsage(const std::string& name) = 0;

  // Freeze stops every process of the app (cgroup freezer, else SIGSTOP) and
  // returns once they are stopped; Thaw resumes them. Idempotent. On a fenced
  // app (no processes) both are OK; a fenced app frozen this way is not
  // launched when the fence lifts until it is thawed.
  virtual Status Freeze(const std::string& name) = 0;
  virtual Status Thaw(const std::string& name) = 0;

  // The app's current log file (stdout and stderr, one line per record,
  // rotated to .1 .. .N); rotated files are LogPath(name) + ".1" and so on.
  virtual std::string LogPath(const std::string& name) const = 0;

  // A port on 127.0.0.1 that is free now and not taken by any app of this
  // runtime (stopped ones keep theirs), from 20000-29999.
  virtual Result<uint16_t> PickPort() = 0;

  // Forgets a stopped app: its spec, state and logs. Conflict if it runs.
  virtual Status Remove(const std::string& name) = 0;
};

struct RuntimeConfig {
  std::string backend = "auto";  // "runc", "process", or "auto" (runc when root and installed)
  std::string state_dir;         // "" = /var/lib/hybridcluster/runtime for root, else ~/.local/...
  std::string shim_path;         // "" = hc-shim next to this executable, else in PATH
  std::string runc_path = "runc";
  std::string cgroup_parent = "hybridcluster";  // apps live in <parent>/<name>
  uint64_t log_max_bytes = 8ull << 20;          // rotate the log past this size
  int log_files = 3;                            // rotated files kept
  // Self-fencing (docs/runtime.md, "Fencing"): an absolute path of a file with
  // a CLOCK_BOOTTIME deadline (runtime/fence.h), written by hcd while this
  // node's lease is confirmed. Every supervisor started by this runtime kills
  // its app when the deadline passes. "" = no fencing (hc local, tests).
  // Supervisors keep the setting they were started with.
  std::string fence_file;
};

std::string DefaultRuntimeStateDir();

Result<std::unique_ptr<Runtime>> OpenRuntime(const RuntimeConfig& config);

}  // namespace hc::runtime
