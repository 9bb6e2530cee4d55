// The "runc" backend: one OCI container per app, started detached so no Go
// process stays behind per app; the container's init is reparented to the
// supervisor (a child subreaper), which reaps it and reads its exit status.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "common/fs.h"
#include "runtime/bind_filter.h"
#include "runtime/cgroup.h"
#include "runtime/shim/launcher.h"

namespace hc::runtime::shim {
namespace {

class RuncLauncher : public Launcher {
 public:
  RuncLauncher(const ShimConfig& cfg, const AppSpec& spec)
      : cfg_(cfg),
        spec_(spec),
        id_("hc-" + spec.name),
        bundle_(JoinPath(cfg.app_dir, "bundle")),
        cgroup_(DetectCgroupMode(), cfg.cgroup_parent + "/" + spec.name) {}

  Status Prepare() override {
    HC_RETURN_IF_ERROR(MakeDirs(bundle_, 0700));
    return WriteFileAtomic(JoinPath(bundle_, "config.json"), OciConfigJson(cfg_, spec_), false);
  }

  Status Create(int out_fd, int err_fd) override {
    HC_ASSIGN_OR_RETURN(pid_t pid, RunInit("create", out_fd, err_fd));
    (void)pid;
    created_ = true;
    return Status::Ok();
  }

  Result<pid_t> Launch(int out_fd, int err_fd) override {
    if (created_) {
      // Created ahead (Create): only its init is let go.
      created_ = false;
      std::string log_file = JoinPath(bundle_, "runc.log");
      HC_ASSIGN_OR_RETURN(int code, RunRunc({cfg_.runc_path, "--root", cfg_.runc_root, "--log",
                                             log_file, "start", id_},
                                            out_fd, err_fd));
      if (code == 0) return ReadInitPid();
      std::string why = LastRuncError(log_file);
      DeleteContainer();
      (void)cgroup_.Remove();
      return Internal("runc could not start the prepared app '" + spec_.name + "' (exit " +
                      std::to_string(code) + "): " + why);
    }
    return RunInit("run", out_fd, err_fd);
  }

  // `runc run -d` (the container runs) or `runc create` (its init waits for
  // `runc start`); returns the init's pid.
  Result<pid_t> RunInit(const std::string& how, int out_fd, int err_fd) {
    if (PathExists(JoinPath(cfg_.runc_root, id_))) DeleteContainer();
    // The port filter must be in place before the app's first instruction, so
    // the (unified) group is made here and runc joins it.
    HC_RETURN_IF_ERROR(cgroup_.CreateUnified());
    if (!cgroup_.UnifiedPath().empty() && BindFilterSupported()) {
      HC_RETURN_IF_ERROR(AttachBindFilter(cgroup_.UnifiedPath(), spec_.port));
    }
    std::string pid_file = JoinPath(bundle_, "init.pid");
    std::string log_file = JoinPath(bundle_, "runc.log");
    ::unlink(pid_file.c_str());
    ::unlink(log_file.c_str());
    std::vector<std::string> args = {cfg_.runc_path, "--root", cfg_.runc_root,
                                     "--log",        log_file, how};
    if (how == "run") args.push_back("-d");
    for (const std::string& a : {std::string("--pid-file"), pid_file, std::string("--bundle"),
                                 bundle_, std::string("--no-new-keyring"), id_})
      args.push_back(a);
    HC_ASSIGN_OR_RETURN(int code, RunRunc(args, out_fd, err_fd));
    if (code != 0) {
      std::string why = LastRuncError(log_file);
      DeleteContainer();
      return Internal("runc could not start app '" + spec_.name + "' (exit " +
                      std::to_string(code) + "): " + why);
    }
    return ReadInitPid();
  }

  Result<pid_t> ReadInitPid() {
    HC_ASSIGN_OR_RETURN(std::string pid_text, ReadFileToString(JoinPath(bundle_, "init.pid")));
    pid_t pid = static_cast<pid_t>(std::strtol(pid_text.c_str(), nullptr, 10));
    if (pid <= 0) return Internal("runc wrote no pid for app '" + spec_.name + "'");
    return pid;
  }

  // The container's PID 1 ignores signals it neither catches nor blocks, so a
  // signal sent in the first moments after `runc run -d` returns (before
  // tini has set up its signal mask) would be lost. Wait until the process
  // handles `sig` (at most 1 s), then send it.
  // tini -g forwards to the app's process group, which exists only once its
  // child has called setpgid(); before that the forward fails (ESRCH) and
  // is dropped, so wait for that too.
  void Signal(pid_t main_pid, int sig) override {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (!(HandlesSignal(main_pid, sig) && ChildLeadsGroupOrNoTini(main_pid)) &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ::kill(main_pid, sig);
  }

  Status KillAll(pid_t main_pid) override {
    // init is pid 1 of the container's PID namespace: killing it kills all.
    if (main_pid > 0) ::kill(main_pid, SIGKILL);
    return cgroup_.KillAll();
  }

  Status Freeze(pid_t) override { return cgroup_.Freeze(); }
  Status Thaw(pid_t) override { return cgroup_.Thaw(); }

  Result<Usage> GetUsage(pid_t) override {
    HC_ASSIGN_OR_RETURN(CgroupUsage cu, cgroup_.Usage());
    return UsageFromCgroup(cu);
  }

  uint64_t OomKills() override {
    auto u = cgroup_.Usage();
    return u.ok() ? u->oom_kills : 0;
  }

  void Cleanup() override {
    DeleteContainer();
    (void)cgroup_.Remove();
  }

 private:
  // Runs runc and waits for it (only for it: other children are reaped by the
  // supervisor's loop).
  Result<int> RunRunc(const std::vector<std::string>& args, int out_fd, int err_fd) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) return ErrnoStatus("fork", errno);
    if (pid == 0) {
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      int devnull = ::open("/dev/null", O_RDWR);
      ::dup2(devnull, 0);
      ::dup2(out_fd >= 0 ? out_fd : devnull, 1);
      ::dup2(err_fd >= 0 ? err_fd : devnull, 2);
      ::execvp(argv[0], argv.data());
      ::_exit(127);
    }
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    return 128 + WTERMSIG(st);
  }

  static bool ChildLeadsGroupOrNoTini(pid_t init) {
    auto comm = ReadFileToString("/proc/" + std::to_string(init) + "/comm");
    if (!comm.ok() || comm->rfind("tini", 0) != 0) return true;
    for (pid_t child : Descendants(init)) {
      auto stat = ReadFileToString("/proc/" + std::to_string(child) + "/stat");
      if (!stat.ok()) continue;
      size_t rp = stat->rfind(')');
      if (rp == std::string::npos) continue;
      // ") S ppid pgrp": the group id is the fifth field.
      long ppid = 0, pgrp = 0;
      char state;
      if (std::sscanf(stat->c_str() + rp + 1, " %c %ld %ld", &state, &ppid, &pgrp) == 3 &&
          ppid == init && pgrp == child) {
        return true;
      }
    }
    return false;
  }

  static bool HandlesSignal(pid_t pid, int sig) {
    auto status = ReadFileToString("/proc/" + std::to_string(pid) + "/status");
    if (!status.ok()) return true;  // gone: nothing to wait for
    uint64_t bit = uint64_t{1} << (sig - 1);
    for (const char* field : {"\nSigBlk:", "\nSigCgt:"}) {
      size_t p = status->find(field);
      if (p == std::string::npos) continue;
      uint64_t mask = std::strtoull(status->c_str() + p + std::strlen(field), nullptr, 16);
      if (mask & bit) return true;
    }
    // tini waits in sigtimedwait(), during which the kernel shows the waited
    // signals as unblocked (SigBlk 0); a signal sent then is taken. Without
    // this, Signal() waited up to tini's 1 s wait timeout on every stop.
    auto wchan = ReadFileToString("/proc/" + std::to_string(pid) + "/wchan");
    return wchan.ok() && wchan->find("sigtimedwait") != std::string::npos;
  }

  void DeleteContainer() {
    (void)RunRunc({cfg_.runc_path, "--root", cfg_.runc_root, "delete", "--force", id_}, -1, -1);
  }

  static std::string LastRuncError(const std::string& log_file) {
    auto text = ReadFileToString(log_file);
    if (!text.ok() || text->empty()) return "no message from runc";
    std::string t = *text;
    while (!t.empty() && t.back() == '\n') t.pop_back();
    size_t nl = t.rfind('\n');
    std::string last = nl == std::string::npos ? t : t.substr(nl + 1);
    // runc logs JSON lines: {"level":"error","msg":"...","time":"..."}.
    size_t m = last.find("\"msg\":\"");
    if (m != std::string::npos) {
      size_t e = last.find("\",\"", m + 7);
      return last.substr(m + 7, e == std::string::npos ? std::string::npos : e - m - 7);
    }
    return last;
  }

  ShimConfig cfg_;
  AppSpec spec_;
  std::string id_;
  std::string bundle_;
  Cgroup cgroup_;
  bool created_ = false;  // Create ran; the next Launch is a `runc start`
};

}  // namespace

std::unique_ptr<Launcher> MakeRuncLauncher(const ShimConfig& cfg, const AppSpec& spec) {
  return std::make_unique<RuncLauncher>(cfg, spec);
}

}  // namespace hc::runtime::shim
