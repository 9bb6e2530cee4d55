// The "process" backend: the app is a child of the supervisor in its own
// session. With cgroups (root), it gets the same limits, freezer, usage and
// port filter as a container; without, the supervisor falls back to signals
// and /proc: SIGSTOP for freeze, polling RSS against the memory limit.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "common/fs.h"
#include "runtime/bind_filter.h"
#include "runtime/cgroup.h"
#include "runtime/shim/launcher.h"

namespace hc::runtime::shim {
namespace {

struct ProcStat {
  char state = '?';
  uint64_t cpu_ticks = 0;
  uint64_t rss_pages = 0;
};

bool ReadProcStat(pid_t pid, ProcStat* out) {
  auto s = ReadFileToString("/proc/" + std::to_string(pid) + "/stat");
  if (!s.ok()) return false;
  size_t rp = s->rfind(')');
  if (rp == std::string::npos || rp + 2 >= s->size()) return false;
  out->state = (*s)[rp + 2];
  // Fields after ')': state(3) ppid(4) ... utime(14) stime(15) ... rss(24).
  const char* p = s->c_str() + rp + 2;
  uint64_t field[24] = {};
  for (int i = 3; i <= 24 && *p; ++i) {
    while (*p == ' ') ++p;
    field[i - 1] = std::strtoull(p, nullptr, 10);
    while (*p && *p != ' ') ++p;
  }
  out->cpu_ticks = field[13] + field[14];
  out->rss_pages = field[23];
  return true;
}

class ProcessLauncher : public Launcher {
 public:
  ProcessLauncher(const ShimConfig& cfg, const AppSpec& spec)
      : cfg_(cfg), spec_(spec), cgroup_(DetectCgroupMode(), cfg.cgroup_parent + "/" + spec.name) {}

  Status Prepare() override {
    if (::geteuid() != 0 || cgroup_.mode() == CgroupMode::kNone) return Status::Ok();
    HC_RETURN_IF_ERROR(cgroup_.Create(&spec_.limits));
    use_cgroup_ = true;
    if (!cgroup_.UnifiedPath().empty() && BindFilterSupported()) {
      HC_RETURN_IF_ERROR(AttachBindFilter(cgroup_.UnifiedPath(), spec_.port));
    }
    return Status::Ok();
  }

  Result<pid_t> Launch(int out_fd, int err_fd) override {
    uint32_t uid, gid;
    AppIdentity(spec_, &uid, &gid);
    std::vector<std::string> env = AppEnvironment(spec_, spec_.volume_path);
    std::vector<char*> argv, envp;
    for (auto& a : spec_.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    std::string path_search = spec_.argv[0];

    int status_pipe[2];
    if (::pipe2(status_pipe, O_CLOEXEC) != 0) return ErrnoStatus("pipe", errno);
    pid_t pid = ::fork();
    if (pid < 0) return ErrnoStatus("fork", errno);
    if (pid == 0) {
      // The supervisor is single-threaded, so allocating here is safe.
      ::close(status_pipe[0]);
      auto fail = [&](const char* what) {
        int e = errno;
        char msg[256];
        int n = std::snprintf(msg, sizeof msg, "%s: %s", what, std::strerror(e));
        (void)!::write(status_pipe[1], msg, n);
        ::_exit(127);
      };
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::signal(SIGPIPE, SIG_DFL);  // ignored in the supervisor
      ::setsid();
      if (use_cgroup_ && !cgroup_.AddProcess(::getpid()).ok()) fail("joining the app's cgroup");
      int devnull = ::open("/dev/null", O_RDONLY);
      if (devnull < 0 || ::dup2(devnull, 0) < 0 || ::dup2(out_fd, 1) < 0 || ::dup2(err_fd, 2) < 0) {
        fail("setting up stdin/stdout/stderr");
      }
      if (::chdir(spec_.volume_path.c_str()) != 0) fail("entering the volume directory");
      if (::geteuid() == 0) {
        if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) {
          fail("dropping to the app's uid");
        }
      }
      ::umask(027);
      if (path_search.find('/') != std::string::npos) {
        ::execve(path_search.c_str(), argv.data(), envp.data());
      } else {
        for (const char* dir :
             {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}) {
          std::string p = std::string(dir) + "/" + path_search;
          ::execve(p.c_str(), argv.data(), envp.data());
        }
      }
      fail(("running " + path_search).c_str());
    }
    ::close(status_pipe[1]);
    char buf[256];
    ssize_t n;
    do {
      n = ::read(status_pipe[0], buf, sizeof buf);
    } while (n < 0 && errno == EINTR);
    ::close(status_pipe[0]);
    if (n > 0) {
      int st;
      ::waitpid(pid, &st, 0);
      return InvalidArgument("app '" + spec_.name + "' cannot start: " + std::string(buf, n));
    }
    return pid;
  }

  void Signal(pid_t main_pid, int sig) override {
    // The whole session's process group, as a terminal would.
    ::kill(-main_pid, sig);
    ::kill(main_pid, sig);
  }

  Status KillAll(pid_t main_pid) override {
    if (use_cgroup_) return cgroup_.KillAll();
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (true) {
      // Zombies are dead; the supervisor reaps them (and keeps the exit code).
      std::vector<pid_t> pids;
      for (pid_t p : Descendants(::getpid())) {
        ProcStat st;
        if (ReadProcStat(p, &st) && st.state != 'Z' && st.state != 'X') pids.push_back(p);
      }
      if (pids.empty()) return Status::Ok();
      for (pid_t p : pids) {
        ::kill(p, SIGKILL);
        ::kill(p, SIGCONT);
      }
      if (std::chrono::steady_clock::now() > deadline) {
        return Internal("app '" + spec_.name + "': " + std::to_string(pids.size()) +
                        " processes survived SIGKILL for 5 s");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  Status Freeze(pid_t main_pid) override {
    if (use_cgroup_) return cgroup_.Freeze();
    // SIGSTOP cannot be caught; repeat until every process (also ones forked
    // meanwhile) shows state T.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (true) {
      bool all_stopped = true;
      for (pid_t p : Descendants(::getpid())) {
        ProcStat st;
        if (!ReadProcStat(p, &st) || st.state == 'Z' || st.state == 'T' || st.state == 't')
          continue;
        all_stopped = false;
        ::kill(p, SIGSTOP);
      }
      if (all_stopped) return Status::Ok();
      if (std::chrono::steady_clock::now() > deadline) {
        return Unavailable("app '" + spec_.name + "' did not stop within 5 s");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  Status Thaw(pid_t main_pid) override {
    if (use_cgroup_) return cgroup_.Thaw();
    for (pid_t p : Descendants(::getpid())) ::kill(p, SIGCONT);
    return Status::Ok();
  }

  Result<Usage> GetUsage(pid_t main_pid) override {
    if (use_cgroup_) {
      HC_ASSIGN_OR_RETURN(CgroupUsage cu, cgroup_.Usage());
      return UsageFromCgroup(cu);
    }
    Usage u;
    static const long kTick = ::sysconf(_SC_CLK_TCK);
    static const long kPage = ::sysconf(_SC_PAGESIZE);
    struct rusage ru;
    ::getrusage(RUSAGE_CHILDREN, &ru);
    u.cpu_seconds =
        ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    for (pid_t p : Descendants(::getpid())) {
      ProcStat st;
      if (!ReadProcStat(p, &st)) continue;
      u.cpu_seconds += static_cast<double>(st.cpu_ticks) / kTick;
      u.memory_bytes += st.rss_pages * kPage;
      ++u.processes;
    }
    peak_ = std::max(peak_, u.memory_bytes);
    u.memory_peak_bytes = peak_;
    u.memory_limit_bytes = spec_.limits.memory_bytes;
    u.oom_kills = oom_kills_;
    return u;
  }

  bool PollsLimits() const override { return !use_cgroup_ && spec_.limits.memory_bytes != 0; }

  bool EnforceLimits(pid_t main_pid) override {
    if (use_cgroup_ || spec_.limits.memory_bytes == 0) return false;
    auto u = GetUsage(main_pid);
    if (!u.ok() || u->memory_bytes <= spec_.limits.memory_bytes) return false;
    ++oom_kills_;
    (void)KillAll(main_pid);
    return true;
  }

  uint64_t OomKills() override {
    if (!use_cgroup_) return oom_kills_;
    auto u = cgroup_.Usage();
    return u.ok() ? u->oom_kills : 0;
  }

  void Cleanup() override {
    if (use_cgroup_) (void)cgroup_.Remove();
  }

 private:
  ShimConfig cfg_;
  AppSpec spec_;
  Cgroup cgroup_;
  bool use_cgroup_ = false;
  uint64_t oom_kills_ = 0;
  uint64_t peak_ = 0;
};

}  // namespace

std::unique_ptr<Launcher> MakeProcessLauncher(const ShimConfig& cfg, const AppSpec& spec) {
  return std::make_unique<ProcessLauncher>(cfg, spec);
}

}  // namespace hc::runtime::shim
