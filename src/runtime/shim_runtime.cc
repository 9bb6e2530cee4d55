// The Runtime seen by hc and hcd: starts one hc-shim per app and talks to it
// over <state_dir>/apps/<name>/ctl.sock. Both backends go through here; the
// difference lives in the shim's Launcher.
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "common/fs.h"
#include "common/names.h"
#include "common/subprocess.h"
#include "runtime/cgroup.h"
#include "runtime/probe.h"
#include "runtime/runtime.h"
#include "runtime/shim/launcher.h"

namespace hc::runtime {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string FindInPath(const std::string& prog) {
  if (prog.find('/') != std::string::npos) return ::access(prog.c_str(), X_OK) == 0 ? prog : "";
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string cand = p.substr(start, end - start) + "/" + prog;
    if (end > start && ::access(cand.c_str(), X_OK) == 0) return cand;
    start = end + 1;
  }
  return "";
}

std::string DefaultShimPath() {
  std::string self = SelfExePath();
  if (!self.empty()) {
    std::string cand = self.substr(0, self.rfind('/')) + "/hc-shim";
    if (::access(cand.c_str(), X_OK) == 0) return cand;
    // A build tree: hc in build/src/bin, hc-shim in build/src/runtime/shim.
    for (const char* rel : {"/../runtime/shim/hc-shim", "/../src/runtime/shim/hc-shim"}) {
      cand = self.substr(0, self.rfind('/')) + rel;
      if (::access(cand.c_str(), X_OK) == 0) return cand;
    }
  }
  return FindInPath("hc-shim");
}

Status StatusFromReply(const json& j) {
  if (j.value("ok", false)) return Status::Ok();
  int code = j.value("code", static_cast<int>(Code::kInternal));
  if (code <= 0 || code > static_cast<int>(Code::kInternal))
    code = static_cast<int>(Code::kInternal);
  return Status(static_cast<Code>(code), j.value("error", "supervisor error"));
}

AppState StateFromName(const std::string& s) {
  for (AppState a :
       {AppState::kStarting, AppState::kRunning, AppState::kBackoff, AppState::kStopping,
        AppState::kStopped, AppState::kLost, AppState::kFenced, AppState::kPrepared}) {
    if (s == AppStateName(a)) return a;
  }
  return AppState::kLost;
}

AppStatus StatusFromJson(const json& j) {
  AppStatus s;
  s.name = j.value("name", "");
  s.backend = j.value("backend", "");
  s.state = StateFromName(j.value("state", "lost"));
  s.pid = j.value("pid", 0);
  s.frozen = j.value("frozen", false);
  s.crash_looping = j.value("crash_looping", false);
  s.restarts = j.value("restarts", 0);
  s.consecutive_crashes = j.value("consecutive_crashes", 0);
  s.has_last_exit = j.value("has_last_exit", false);
  s.last_exit_code = j.value("last_exit_code", 0);
  s.last_exit_oom = j.value("last_exit_oom", false);
  s.started_unix_ns = j.value("started_unix_ns", int64_t{0});
  s.next_restart_unix_ns = j.value("next_restart_unix_ns", int64_t{0});
  s.port = j.value("port", 0);
  s.message = j.value("message", "");
  return s;
}

class ShimRuntime : public Runtime {
 public:
  ShimRuntime(RuntimeConfig cfg) : cfg_(std::move(cfg)) {}

  Status Init() {
    HC_RETURN_IF_ERROR(MakeDirs(AppsDir(), 0700));
    if (cfg_.backend == "runc") {
      HC_RETURN_IF_ERROR(MakeDirs(JoinPath(cfg_.state_dir, "runc"), 0700));
      HC_RETURN_IF_ERROR(MakeRootfsSkeleton());
    }
    return Status::Ok();
  }

  std::string backend() const override { return cfg_.backend; }

  Status Start(const AppSpec& spec) override { return Launch(spec, false); }

  Status Prepare(const AppSpec& spec) override {
    if (cfg_.backend != "runc") return Runtime::Prepare(spec);
    return Launch(spec, true);
  }

  // Start (prepare_only false) or Prepare.
  Status Launch(const AppSpec& spec, bool prepare_only) {
    HC_RETURN_IF_ERROR(ValidateAppSpec(spec));
    std::lock_guard<std::mutex> lock(start_mu_);
    HC_ASSIGN_OR_RETURN(FileLock op, LockApp(spec.name));
    std::string dir = AppDir(spec.name);
    if (SupervisorAlive(dir)) {
      auto prepared = PreparedWith(spec.name, spec);
      if (prepared == kSameSpec) {
        if (prepare_only) return Status::Ok();
        HC_ASSIGN_OR_RETURN(json reply, Call(dir, "start", 60000));
        return StatusFromReply(reply);
      }
      if (prepared == kOtherSpec) {
        // Prepared for other settings (a new port, a changed app): remove it.
        auto reply = Call(dir, "stop", 15000);
        if (!reply.ok() && SupervisorAlive(dir)) return reply.status();
        HC_RETURN_IF_ERROR(WaitSupervisorGone(spec.name));
      }
    }
    if (SupervisorAlive(dir)) {
      return AlreadyExists("app '" + spec.name + "' is already running; use restart to restart it");
    }
    if (PathExists(JoinPath(dir, "spec.json"))) HC_RETURN_IF_ERROR(CleanUpLost(spec.name));
    HC_RETURN_IF_ERROR(CheckPort(spec));
    HC_RETURN_IF_ERROR(PrepareVolume(spec));
    HC_RETURN_IF_ERROR(MakeDirs(dir, 0700));
    HC_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(dir, "spec.json"), AppSpecToJson(spec), false));
    shim::ShimConfig sc;
    sc.backend = cfg_.backend;
    sc.app_dir = dir;
    sc.runc_path = cfg_.runc_path;
    sc.runc_root = JoinPath(cfg_.state_dir, "runc");
    sc.rootfs = JoinPath(cfg_.state_dir, "rootfs");
    sc.cgroup_parent = cfg_.cgroup_parent;
    sc.log_max_bytes = cfg_.log_max_bytes;
    sc.log_files = cfg_.log_files;
    sc.fence_file = cfg_.fence_file;
    sc.prepare_only = prepare_only;
    HC_RETURN_IF_ERROR(
        WriteFileAtomic(JoinPath(dir, "shim.json"), shim::ShimConfigToJson(sc), false));
    ::unlink(JoinPath(dir, "state.json").c_str());
    return SpawnShim(spec.name, dir);
  }

  Status Stop(const std::string& name) override {
    HC_RETURN_IF_ERROR(ValidateName("app", name));
    std::string dir = AppDir(name);
    if (!PathExists(JoinPath(dir, "spec.json"))) return UnknownApp(name);
    HC_ASSIGN_OR_RETURN(AppSpec spec, LoadSpec(name));
    HC_ASSIGN_OR_RETURN(FileLock op, LockApp(name));
    if (!SupervisorAlive(dir)) return CleanUpLost(name);
    auto reply = Call(dir, "stop", spec.stop_timeout_ms + 15000);
    if (!reply.ok() && SupervisorAlive(dir)) return reply.status();
    if (!reply.ok()) return CleanUpLost(name);  // the supervisor died meanwhile
    if (reply.ok()) HC_RETURN_IF_ERROR(StatusFromReply(*reply));
    return WaitSupervisorGone(name);
  }

  // A stop's reply comes just before the supervisor exits; waits for it to be gone.
  Status WaitSupervisorGone(const std::string& name) {
    std::string dir = AppDir(name);
    auto deadline = Clock::now() + std::chrono::seconds(5);
    while (SupervisorAlive(dir)) {
      if (Clock::now() > deadline) {
        return Unavailable("the supervisor of app '" + name + "' did not exit after stopping it");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return Status::Ok();
  }

  Status Restart(const std::string& name) override {
    HC_RETURN_IF_ERROR(ValidateName("app", name));
    std::string dir = AppDir(name);
    HC_ASSIGN_OR_RETURN(AppSpec spec, LoadSpec(name));
    if (!SupervisorAlive(dir)) return Start(spec);
    HC_ASSIGN_OR_RETURN(json reply, Call(dir, "restart", spec.stop_timeout_ms + 15000));
    return StatusFromReply(reply);
  }

  Result<AppStatus> GetStatus(const std::string& name) override {
    HC_RETURN_IF_ERROR(ValidateName("app", name));
    std::string dir = AppDir(name);
    if (!PathExists(JoinPath(dir, "spec.json"))) return UnknownApp(name);
    if (SupervisorAlive(dir)) {
      auto reply = Call(dir, "status", 5000);
      if (reply.ok()) {
        HC_RETURN_IF_ERROR(StatusFromReply(*reply));
        return StatusFromJson(*reply);
      }
    }
    AppStatus s;
    auto text = ReadFileToString(JoinPath(dir, "state.json"));
    json j = text.ok() ? json::parse(*text, nullptr, false) : json();
    if (j.is_object()) s = StatusFromJson(j);
    s.name = name;
    if (s.backend.empty()) s.backend = cfg_.backend;
    if (!SupervisorAlive(dir) && s.state != AppState::kStopped) {
      s.state = AppState::kLost;
      s.message =
          "its supervisor (hc-shim) is gone; processes of the app may still run; stop "
          "and start it again";
    }
    if (s.port == 0) {
      auto spec = LoadSpec(name);
      if (spec.ok()) s.port = spec->port;
    }
    return s;
  }

  Result<std::vector<AppStatus>> List() override {
    std::vector<AppStatus> out;
    for (const auto& n : AppNames()) {
      auto s = GetStatus(n);
      if (s.ok()) out.push_back(*s);
    }
    return out;
  }

  hc::Status WaitReady(const std::string& name, int timeout_ms) override {
    HC_ASSIGN_OR_RETURN(AppSpec spec, LoadSpec(name));
    if (timeout_ms < 0) timeout_ms = spec.probe.timeout_ms;
    std::string log = LogPath(name);
    return WaitForProbe(spec.probe, spec.port, timeout_ms, [&]() -> hc::Status {
      auto s = GetStatus(name);
      if (!s.ok()) return s.status();
      switch (s->state) {
        case AppState::kRunning:
        case AppState::kStarting: return hc::Status::Ok();
        case AppState::kBackoff:
          return Unavailable("app '" + name + "' " + s->message + "; see " + log);
        case AppState::kFenced:
          return Unavailable("app '" + name + "' is " + s->message + "; see " + log);
        default:
          return Unavailable("app '" + name + "' is " + AppStateName(s->state) + "; see " + log);
      }
    });
  }

  Result<Usage> GetUsage(const std::string& name) override {
    HC_RETURN_IF_ERROR(ValidateName("app", name));
    std::string dir = AppDir(name);
    if (!SupervisorAlive(dir)) {
      if (!PathExists(JoinPath(dir, "spec.json"))) return UnknownApp(name);
      return Usage{};
    }
    HC_ASSIGN_OR_RETURN(json j, Call(dir, "usage", 5000));
    HC_RETURN_IF_ERROR(StatusFromReply(j));
    Usage u;
    u.cpu_seconds = j.value("cpu_seconds", 0.0);
    u.memory_bytes = j.value("memory_bytes", uint64_t{0});
    u.memory_peak_bytes = j.value("memory_peak_bytes", uint64_t{0});
    u.memory_limit_bytes = j.value("memory_limit_bytes", uint64_t{0});
    u.processes = j.value("processes", 0u);
    u.oom_kills = j.value("oom_kills", uint64_t{0});
    u.from_cgroup = j.value("from_cgroup", false);
    return u;
  }

  hc::Status Freeze(const std::string& name) override { return Simple(name, "freeze"); }
  hc::Status Thaw(const std::string& name) override { return Simple(name, "thaw"); }

  std::string LogPath(const std::string& name) const override {
    return JoinPath(JoinPath(AppDir(name), "log"), "app.log");
  }

  hc::Status Remove(const std::string& name) override {
    HC_RETURN_IF_ERROR(ValidateName("app", name));
    std::string dir = AppDir(name);
    if (!PathExists(dir)) return UnknownApp(name);
    HC_ASSIGN_OR_RETURN(FileLock op, LockApp(name));
    if (SupervisorAlive(dir)) {
      return Conflict("app '" + name + "' is running; stop it before removing it");
    }
    // Never forget an app whose processes may still run unsupervised.
    if (PathExists(JoinPath(dir, "spec.json"))) HC_RETURN_IF_ERROR(CleanUpLost(name));
    return RemoveTree(dir);
  }

  Result<uint16_t> PickPort() override {
    std::set<uint16_t> taken;
    for (const auto& n : AppNames()) {
      auto spec = LoadSpec(n);
      if (spec.ok()) taken.insert(spec->port);
    }
    // Start from a point derived from the time so parallel callers spread out.
    uint32_t start = static_cast<uint32_t>(Clock::now().time_since_epoch().count() / 1000) % 10000;
    for (uint32_t i = 0; i < 10000; ++i) {
      uint16_t port = static_cast<uint16_t>(20000 + (start + i) % 10000);
      if (taken.count(port) || !PortFreeOnHost(port)) continue;
      return port;
    }
    return Unavailable("no free port in 20000-29999 on 127.0.0.1");
  }

 private:
  std::vector<std::string> AppNames() const {
    std::vector<std::string> names;
    DIR* d = ::opendir(AppsDir().c_str());
    if (!d) return names;
    while (struct dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') names.push_back(e->d_name);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    return names;
  }

  static bool PortFreeOnHost(uint16_t port) {
    UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    // SO_REUSEADDR: the app's own connections of its last run in TIME_WAIT do
    // not make its port "taken"; a listener still does.
    int one = 1;
    if (s.valid()) ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    return s.valid() && ::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }

  std::string AppsDir() const { return JoinPath(cfg_.state_dir, "apps"); }
  std::string AppDir(const std::string& name) const { return JoinPath(AppsDir(), name); }

  hc::Status UnknownApp(const std::string& name) const {
    return NotFound("no app '" + name + "' in " + AppsDir() + "; start it first");
  }

  enum Prepared { kNotPrepared, kSameSpec, kOtherSpec };
  // Whether the app's live supervisor holds a prepared app, and for which spec.
  Prepared PreparedWith(const std::string& name, const AppSpec& spec) {
    auto reply = Call(AppDir(name), "status", 5000);
    if (!reply.ok() || StateFromName(reply->value("state", "")) != AppState::kPrepared)
      return kNotPrepared;
    auto text = ReadFileToString(JoinPath(AppDir(name), "spec.json"));
    return text.ok() && *text == AppSpecToJson(spec) ? kSameSpec : kOtherSpec;
  }

  Result<AppSpec> LoadSpec(const std::string& name) {
    HC_RETURN_IF_ERROR(ValidateName("app", name));
    auto text = ReadFileToString(JoinPath(AppDir(name), "spec.json"));
    if (!text.ok()) return UnknownApp(name);
    return AppSpecFromJson(*text);
  }

  // Serializes Start/Stop/Remove of one app across processes (hc and hcd
  // share the state directory); held from the liveness check until the
  // supervisor has reported.
  Result<FileLock> LockApp(const std::string& name) {
    return FileLock::Acquire(JoinPath(AppsDir(), "." + name + ".lock"), true);
  }

  // A supervisor that died (killed, OOM, host trouble) may leave the app
  // running unsupervised: the container (runc) or the cgroup's processes are
  // killed here, so a stop means stopped and a new start does not collide.
  // Without cgroups (unprivileged process backend) the leftovers cannot be
  // told apart from reused pids and are left alone.
  hc::Status CleanUpLost(const std::string& name) {
    std::string dir = AppDir(name);
    auto text = ReadFileToString(JoinPath(dir, "state.json"));
    json j = text.ok() ? json::parse(*text, nullptr, false) : json();
    if (j.is_object() && j.value("state", "") == "stopped") return hc::Status::Ok();
    if (cfg_.backend == "runc") {
      auto r = RunCommand({cfg_.runc_path, "--root", JoinPath(cfg_.state_dir, "runc"), "delete",
                           "--force", "hc-" + name});
      (void)r;
    }
    if (::geteuid() == 0 && DetectCgroupMode() != CgroupMode::kNone) {
      Cgroup cg(DetectCgroupMode(), cfg_.cgroup_parent + "/" + name);
      HC_RETURN_IF_ERROR(cg.KillAll());
      (void)cg.Remove();
    }
    if (!j.is_object()) j = json::object();
    j["state"] = "stopped";
    j["pid"] = 0;
    j["message"] = "stopped after its supervisor was lost";
    return WriteFileAtomic(JoinPath(dir, "state.json"), j.dump(), false);
  }

  // The supervisor holds shim.lock exclusively for its whole life.
  static bool SupervisorAlive(const std::string& dir) {
    UniqueFd fd(::open(JoinPath(dir, "shim.lock").c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return false;
    return ::flock(fd.get(), LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  }

  hc::Status Simple(const std::string& name, const char* cmd) {
    HC_RETURN_IF_ERROR(ValidateName("app", name));
    std::string dir = AppDir(name);
    if (!SupervisorAlive(dir)) {
      if (!PathExists(JoinPath(dir, "spec.json"))) return UnknownApp(name);
      return Unavailable("app '" + name + "' is not running");
    }
    HC_ASSIGN_OR_RETURN(json j, Call(dir, cmd, 10000));
    return StatusFromReply(j);
  }

  // One request line, one reply line, on the supervisor's control socket.
  Result<json> Call(const std::string& dir, const std::string& cmd, int timeout_ms) {
    std::string path = JoinPath(dir, "ctl.sock");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
      return InvalidArgument("socket path too long: " + path);
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return ErrnoStatus("socket", errno);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      return ErrnoStatus("connecting to the supervisor at " + path, errno);
    }
    std::string line = cmd + "\n";
    if (::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(line.size())) {
      return ErrnoStatus("writing to the supervisor", errno);
    }
    std::string in;
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (in.find('\n') == std::string::npos) {
      int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
      if (left <= 0) return Unavailable("the supervisor did not answer '" + cmd + "' in time");
      pollfd p{fd.get(), POLLIN, 0};
      int n = ::poll(&p, 1, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) continue;
      char buf[4096];
      ssize_t r = ::read(fd.get(), buf, sizeof buf);
      if (r == 0) return Unavailable("the supervisor closed the connection during '" + cmd + "'");
      if (r < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus("reading from the supervisor", errno);
      }
      in.append(buf, r);
      if (in.size() > (1 << 20)) return Internal("oversized reply from the supervisor");
    }
    json j = json::parse(in.substr(0, in.find('\n')), nullptr, false);
    if (!j.is_object()) return Internal("malformed reply from the supervisor");
    return j;
  }

  hc::Status CheckPort(const AppSpec& spec) {
    for (const auto& other : AppNames()) {
      if (other == spec.name || !SupervisorAlive(AppDir(other))) continue;
      auto os = LoadSpec(other);
      if (!os.ok()) continue;
      if (os->port == spec.port) {
        return Conflict("port " + std::to_string(spec.port) + " belongs to app '" + other +
                        "'; choose another port");
      }
      uint32_t uid, gid, other_uid, other_gid;
      shim::AppIdentity(spec, &uid, &gid);
      shim::AppIdentity(*os, &other_uid, &other_gid);
      if (::geteuid() == 0 && uid == other_uid) {
        return Conflict("app '" + spec.name + "' would run as uid " + std::to_string(uid) +
                        ", which app '" + other +
                        "' already runs as; set a different uid in "
                        "its spec");
      }
    }
    if (!PortFreeOnHost(spec.port)) {
      return Conflict("port " + std::to_string(spec.port) +
                      " is already in use on this host by something else; choose another port");
    }
    return hc::Status::Ok();
  }

  hc::Status PrepareVolume(const AppSpec& spec) {
    struct stat st;
    // lstat: the path is chowned and mounted as root, so it must not be a
    // symlink someone could point elsewhere.
    if (::lstat(spec.volume_path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
      return InvalidArgument("volume path '" + spec.volume_path + "' of app '" + spec.name +
                             "' is a symbolic link; give the real directory");
    }
    if (::stat(spec.volume_path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return NotFound("volume directory '" + spec.volume_path + "' of app '" + spec.name +
                      "' does not exist");
    }
    if (::geteuid() != 0) return hc::Status::Ok();
    uint32_t uid, gid;
    shim::AppIdentity(spec, &uid, &gid);
    // The app owns the top of its volume; files inside keep their owners (the
    // uid is the same on every node, see AppUid).
    if ((st.st_uid != uid || st.st_gid != gid) &&
        ::chown(spec.volume_path.c_str(), uid, gid) != 0) {
      return ErrnoStatus("giving volume '" + spec.volume_path + "' to uid " + std::to_string(uid),
                         errno);
    }
    if (cfg_.backend == "process") {
      // The app runs as its own uid on the host: it must be able to reach its volume.
      std::string p = spec.volume_path;
      while (p.size() > 1) {
        p = p.substr(0, p.rfind('/'));
        if (p.empty()) break;
        if (::stat(p.c_str(), &st) == 0 && !(st.st_mode & S_IXOTH)) {
          return PermissionDenied("app '" + spec.name + "' runs as uid " + std::to_string(uid) +
                                  " and cannot reach its volume: '" + p +
                                  "' is not searchable by others (chmod o+x it)");
        }
      }
    }
    return hc::Status::Ok();
  }

  hc::Status MakeRootfsSkeleton() {
    std::string root = JoinPath(cfg_.state_dir, "rootfs");
    HC_RETURN_IF_ERROR(MakeDirs(root, 0755));
    ::chmod(root.c_str(), 0755);
    for (const char* d : {"usr", "etc", "proc", "dev", "sys", "tmp", "run", "srv", "srv/app"}) {
      HC_RETURN_IF_ERROR(MakeDirs(JoinPath(root, d), 0755));
    }
    // runc gives a tmpfs the mode of the directory it covers.
    ::chmod(JoinPath(root, "tmp").c_str(), 01777);
    for (const char* d : {"bin", "sbin", "lib", "lib32", "lib64", "libx32"}) {
      std::string host = std::string("/") + d;
      std::string mine = JoinPath(root, d);
      char target[256];
      ssize_t n = ::readlink(host.c_str(), target, sizeof target - 1);
      struct stat st;
      if (n > 0) {
        if (::lstat(mine.c_str(), &st) != 0 &&
            ::symlink(std::string(target, n).c_str(), mine.c_str()) != 0) {
          return ErrnoStatus("creating " + mine, errno);
        }
      } else if (::stat(host.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
        HC_RETURN_IF_ERROR(MakeDirs(mine, 0755));
      }
    }
    return hc::Status::Ok();
  }

  hc::Status SpawnShim(const std::string& name, const std::string& dir) {
    int ready[2];
    if (::pipe2(ready, O_CLOEXEC) != 0) return ErrnoStatus("pipe", errno);
    UniqueFd ready_r(ready[0]), ready_w(ready[1]);
    std::string shim = cfg_.shim_path;
    char* argv[] = {const_cast<char*>(shim.c_str()), const_cast<char*>(dir.c_str()), nullptr};
    char* envp[] = {
        const_cast<char*>("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        nullptr};
    pid_t pid = ::fork();
    if (pid < 0) return ErrnoStatus("fork", errno);
    if (pid == 0) {
      // Only async-signal-safe calls: the caller may be multi-threaded.
      ::setsid();
      pid_t grandchild = ::fork();
      if (grandchild != 0) ::_exit(grandchild < 0 ? 1 : 0);
      // Not pinning the caller's working directory (it may be a volume).
      if (::chdir("/") != 0) ::_exit(126);
      int devnull = ::open("/dev/null", O_RDWR);
      ::dup2(devnull, 0);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
      ::dup2(ready[1], 3);  // dup2 clears FD_CLOEXEC on the copy
      ::close_range(4, ~0u, 0);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::execve(argv[0], argv, envp);
      ::_exit(127);
    }
    int st;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    ready_w.Reset();
    std::string msg;
    auto deadline = Clock::now() + std::chrono::seconds(60);
    while (msg.find('\n') == std::string::npos) {
      int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
      if (left <= 0)
        return Unavailable("the supervisor of app '" + name + "' did not report in 60 s");
      pollfd p{ready_r.get(), POLLIN, 0};
      if (::poll(&p, 1, left) <= 0) continue;
      char buf[1024];
      ssize_t n = ::read(ready_r.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      msg.append(buf, n);
    }
    if (msg.rfind("ok", 0) == 0) return hc::Status::Ok();
    if (msg.rfind("error ", 0) == 0) {
      char* end;
      long code = std::strtol(msg.c_str() + 6, &end, 10);
      std::string text = *end == ' ' ? std::string(end + 1) : msg;
      while (!text.empty() && text.back() == '\n') text.pop_back();
      if (code <= 0 || code > static_cast<long>(Code::kInternal))
        code = static_cast<long>(Code::kInternal);
      return hc::Status(static_cast<Code>(code), text);
    }
    return Internal("the supervisor of app '" + name + "' (" + shim +
                    ") exited without starting it; see " + LogPath(name));
  }

  RuntimeConfig cfg_;
  std::mutex start_mu_;
};

}  // namespace

std::string DefaultRuntimeStateDir() {
  if (::geteuid() == 0) return "/var/lib/hybridcluster/runtime";
  const char* xdg = std::getenv("XDG_DATA_HOME");
  if (xdg && *xdg) return std::string(xdg) + "/hybridcluster/runtime";
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "/tmp") + "/.local/share/hybridcluster/runtime";
}

Result<std::unique_ptr<Runtime>> OpenRuntime(const RuntimeConfig& config) {
  RuntimeConfig c = config;
  if (c.state_dir.empty()) c.state_dir = DefaultRuntimeStateDir();
  if (c.shim_path.empty()) c.shim_path = DefaultShimPath();
  if (c.shim_path.empty() || ::access(c.shim_path.c_str(), X_OK) != 0) {
    return Unavailable(
        "cannot find hc-shim (the app supervisor); install HybridCluster with "
        "scripts/install.sh or set its path");
  }
  HC_RETURN_IF_ERROR(ValidateName("cgroup parent", c.cgroup_parent));
  // The supervisors run in "/": a relative path would name another file.
  if (!c.fence_file.empty() && c.fence_file[0] != '/') {
    return InvalidArgument("fence file '" + c.fence_file + "' must be an absolute path");
  }
  bool root = ::geteuid() == 0;
  std::string runc = FindInPath(c.runc_path);
  if (c.backend == "auto")
    c.backend =
        root && !runc.empty() && DetectCgroupMode() != CgroupMode::kNone ? "runc" : "process";
  if (c.backend == "runc") {
    if (!root) {
      return PermissionDenied("the runc runtime needs root; run as root or use --runtime process");
    }
    if (runc.empty()) {
      return Unavailable("runc is not installed (Debian package runc); or use --runtime process");
    }
    if (DetectCgroupMode() == CgroupMode::kNone) {
      return Unavailable("no cgroup filesystem is mounted; the runc backend needs one");
    }
    c.runc_path = runc;
  } else if (c.backend != "process") {
    return InvalidArgument("unknown runtime backend '" + c.backend +
                           "'; choose runc, process or auto");
  }
  auto rt = std::make_unique<ShimRuntime>(c);
  HC_RETURN_IF_ERROR(rt->Init());
  return std::unique_ptr<Runtime>(std::move(rt));
}

}  // namespace hc::runtime
