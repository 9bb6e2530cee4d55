#include "runtime/shim/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "common/fs.h"
#include "runtime/fence.h"
#include "runtime/log_writer.h"

namespace hc::runtime::shim {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// While fenced, how often the fence file is read again to see whether hcd
// has extended the deadline.
constexpr int64_t kFenceRecheckNs = 250'000'000;

int64_t NowUnixNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string SignalName(int sig) {
  const char* n = ::sigabbrev_np(sig);
  return n ? std::string("SIG") + n : "signal " + std::to_string(sig);
}

json StatusJson(const AppStatus& s) {
  return {{"name", s.name},
          {"backend", s.backend},
          {"state", AppStateName(s.state)},
          {"pid", s.pid},
          {"frozen", s.frozen},
          {"crash_looping", s.crash_looping},
          {"restarts", s.restarts},
          {"consecutive_crashes", s.consecutive_crashes},
          {"has_last_exit", s.has_last_exit},
          {"last_exit_code", s.last_exit_code},
          {"last_exit_oom", s.last_exit_oom},
          {"started_unix_ns", s.started_unix_ns},
          {"next_restart_unix_ns", s.next_restart_unix_ns},
          {"port", s.port},
          {"message", s.message}};
}

json UsageJson(const Usage& u) {
  return {{"cpu_seconds", u.cpu_seconds},
          {"memory_bytes", u.memory_bytes},
          {"memory_peak_bytes", u.memory_peak_bytes},
          {"memory_limit_bytes", u.memory_limit_bytes},
          {"processes", u.processes},
          {"oom_kills", u.oom_kills},
          {"from_cgroup", u.from_cgroup}};
}

struct Client {
  UniqueFd fd;
  std::string in;
};

class Supervisor {
 public:
  Supervisor(const ShimConfig& cfg, const AppSpec& spec, int ready_fd)
      : cfg_(cfg),
        spec_(spec),
        ready_fd_(ready_fd),
        log_(JoinPath(JoinPath(cfg.app_dir, "log"), "app.log"), cfg.log_max_bytes, cfg.log_files) {
    status_.name = spec.name;
    status_.backend = cfg.backend;
    status_.port = spec.port;
    status_.state = AppState::kStarting;
  }

  Status Init() {
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    // Dispositions inherited from whoever started hc (nohup, a script in the
    // background) must not reach the apps.
    for (int sig = 1; sig < NSIG; ++sig) {
      if (sig != SIGKILL && sig != SIGSTOP) ::signal(sig, SIG_DFL);
    }
    ::signal(SIGPIPE, SIG_IGN);
    ::umask(077);
    // The lock says "a supervisor is alive" to the runtime, without pid files.
    HC_ASSIGN_OR_RETURN(lock_,
                        OpenFile(JoinPath(cfg_.app_dir, "shim.lock"), O_RDWR | O_CREAT, 0600));
    // The runtime probes liveness with a brief shared lock: retry a moment
    // before concluding that another supervisor holds it.
    int tries = 0;
    while (::flock(lock_.get(), LOCK_EX | LOCK_NB) != 0) {
      if (++tries > 250) {
        return AlreadyExists("app '" + spec_.name + "' already has a running supervisor");
      }
      ::usleep(2000);
    }
    sigset_t mask;
    sigemptyset(&mask);
    for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, s);
    ::sigprocmask(SIG_BLOCK, &mask, nullptr);
    sigfd_ = UniqueFd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sigfd_.valid()) return ErrnoStatus("signalfd", errno);
    if (Fencing()) {
      // CLOCK_BOOTTIME, absolute: fires at the deadline itself, also when
      // the host was suspended meanwhile (poll()'s timeout would not count
      // the suspended time, and the lease's TTL does).
      fence_timer_ = UniqueFd(::timerfd_create(CLOCK_BOOTTIME, TFD_CLOEXEC | TFD_NONBLOCK));
      if (!fence_timer_.valid()) return ErrnoStatus("timerfd_create", errno);
    }

    HC_RETURN_IF_ERROR(MakeDirs(JoinPath(cfg_.app_dir, "log"), 0750));
    HC_RETURN_IF_ERROR(log_.Open());
    if (cfg_.backend == "runc" && ::access("/usr/bin/tini", X_OK) != 0) {
      (void)log_.Note(
          "warning: /usr/bin/tini is missing (Debian package tini); the app runs as "
          "PID 1 and may ignore the stop signal until it is killed");
    }
    for (int i = 0; i < 2; ++i) {
      int p[2];
      if (::pipe2(p, O_CLOEXEC) != 0) return ErrnoStatus("pipe", errno);
      ::fcntl(p[0], F_SETFL, O_NONBLOCK);
      out_read_[i] = UniqueFd(p[0]);
      out_write_[i] = UniqueFd(p[1]);
    }

    std::string sock_path = JoinPath(cfg_.app_dir, "ctl.sock");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (sock_path.size() >= sizeof addr.sun_path) {
      return InvalidArgument("runtime state path too long for a unix socket: " + sock_path);
    }
    std::memcpy(addr.sun_path, sock_path.c_str(), sock_path.size() + 1);
    ::unlink(sock_path.c_str());
    listen_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!listen_.valid()) return ErrnoStatus("socket", errno);
    if (::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      return ErrnoStatus("bind " + sock_path, errno);
    }
    ::chmod(sock_path.c_str(), 0600);
    if (::listen(listen_.get(), 16) != 0) return ErrnoStatus("listen", errno);

    launcher_ =
        cfg_.backend == "runc" ? MakeRuncLauncher(cfg_, spec_) : MakeProcessLauncher(cfg_, spec_);
    HC_RETURN_IF_ERROR(launcher_->Prepare());
    return Status::Ok();
  }

  // A start while fenced launches nothing and still reports "ok": the
  // supervisor runs, shows the app as fenced, and launches it once the
  // deadline lies in the future again (hcd starts apps before or while it
  // confirms its lease, and must not see that as a failed start).
  Status FirstLaunch() {
    Status s;
    if (cfg_.prepare_only) {
      s = launcher_->Create(out_write_[0].get(), out_write_[1].get());
      if (s.ok()) {
        status_.state = AppState::kPrepared;
        status_.message = "prepared: created ahead, waiting to be started";
        (void)log_.Note(status_.message);
        SaveState();
      }
    } else {
      s = StartRun(false);
    }
    if (!s.ok()) {
      (void)log_.Note("could not start: " + s.ToString());
      launcher_->Cleanup();
      status_.state = AppState::kStopped;
      status_.message = s.ToString();
      SaveState();
      return s;
    }
    if (ready_fd_ >= 0) {
      (void)!::write(ready_fd_, "ok\n", 3);
      ::close(ready_fd_);
      ready_fd_ = -1;
    }
    return Status::Ok();
  }

  void Run() {
    while (!done_) {
      // An invalid fd (no fencing) is ignored by poll().
      std::vector<pollfd> fds = {{sigfd_.get(), POLLIN, 0},
                                 {listen_.get(), POLLIN, 0},
                                 {out_read_[0].get(), POLLIN, 0},
                                 {out_read_[1].get(), POLLIN, 0},
                                 {fence_timer_.get(), POLLIN, 0}};
      for (auto& c : clients_) fds.push_back({c.fd.get(), POLLIN, 0});
      int n = ::poll(fds.data(), fds.size(), PollTimeoutMs());
      if (n < 0 && errno != EINTR) break;
      if (fds[2].revents) DrainOutput(0);
      if (fds[3].revents) DrainOutput(1);
      // The fence first: when the deadline passed, nothing else may come
      // before the kill.
      if (fds[4].revents) HandleFenceTimer();
      if (fds[0].revents) HandleSignals();
      if (fds[1].revents) Accept();
      for (size_t i = 5; i < fds.size(); ++i) {
        if (fds[i].revents) ReadClient(i - 5);
      }
      clients_.erase(std::remove_if(clients_.begin(), clients_.end(),
                                    [](const Client& c) { return !c.fd.valid(); }),
                     clients_.end());
      HandleTimers();
    }
    DrainOutput(0);
    DrainOutput(1);
    (void)log_.Flush();
    ::unlink(JoinPath(cfg_.app_dir, "ctl.sock").c_str());
  }

 private:
  bool Fencing() const { return !cfg_.fence_file.empty(); }

  // Whether the fence lets the app run now. Arms the fence timer: for the
  // deadline when it does (hcd extends it about every second, so it is read
  // again then, not before), else for the next look in kFenceRecheckNs.
  bool FenceAllows(std::string* why) {
    if (!Fencing()) return true;
    auto deadline = ReadFenceDeadline(cfg_.fence_file);
    int64_t now = BoottimeNowNs();
    if (deadline.ok() && *deadline > now) {
      ArmFenceTimer(*deadline);
      return true;
    }
    if (deadline.ok()) {
      *why = "deadline passed " + std::to_string((now - *deadline) / 1000000) + " ms ago";
    } else if (deadline.status().code() == Code::kNotFound) {
      *why = "no fence file " + cfg_.fence_file;
    } else {
      *why = deadline.status().message();
    }
    ArmFenceTimer(now + kFenceRecheckNs);
    return false;
  }

  void ArmFenceTimer(int64_t at_boottime_ns) {
    itimerspec its{};
    its.it_value.tv_sec = at_boottime_ns / 1000000000;
    its.it_value.tv_nsec = at_boottime_ns % 1000000000;
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
    // Fails only for invalid times, which the callers never pass.
    if (::timerfd_settime(fence_timer_.get(), TFD_TIMER_ABSTIME, &its, nullptr) != 0) {
      (void)log_.Note(ErrnoStatus("arming the fence timer", errno).ToString());
    }
  }

  // Launches the app unless the fence forbids it, in which case it waits,
  // fenced, for the deadline to be extended.
  Status StartRun(bool count_restart) {
    std::string why;
    if (!FenceAllows(&why)) {
      Fence(why);
      return Status::Ok();
    }
    fenced_ = false;
    if (count_restart) ++status_.restarts;
    return Launch();
  }

  // The deadline passed (or cannot be read): every process of the app dies
  // at once, with no stop signal and no grace period, because the point is
  // that it stops writing now (another node may be taking over). Not a
  // crash: no back-off, no crash count.
  void Fence(const std::string& why) {
    bool was_fenced = fenced_;
    fenced_ = true;
    restart_at_.reset();
    status_.next_restart_unix_ns = 0;
    std::string killed;
    if (main_pid_ > 0) {
      // A stop in progress loses its grace period too, and then finishes as usual.
      kill_at_.reset();
      resend_at_.reset();
      auto t0 = Clock::now();
      Status s = launcher_->KillAll(main_pid_);
      if (!s.ok()) (void)log_.Note(s.ToString());
      killed =
          "; killed every process in " +
          std::to_string(
              std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count()) +
          " ms";
    }
    if (stopping_) return;
    status_.state = AppState::kFenced;
    status_.message =
        "fenced: this node's cluster lease is not confirmed (" + why + "); waiting for hcd";
    if (!was_fenced || !killed.empty()) (void)log_.Note(status_.message + killed);
    SaveState();
  }

  // The fence timer: the deadline is due (running) or the next look (fenced).
  void HandleFenceTimer() {
    uint64_t expirations;
    (void)!::read(fence_timer_.get(), &expirations, sizeof expirations);
    if (stopping_ && main_pid_ <= 0) return;
    std::string why;
    bool allowed = FenceAllows(&why);
    if (!fenced_) {
      if (!allowed) Fence(why);
      return;
    }
    if (!allowed) {
      status_.message =
          "fenced: this node's cluster lease is not confirmed (" + why + "); waiting for hcd";
      return;
    }
    LiftFence();
  }

  // The deadline lies in the future again: a normal start (a restart when
  // the app ran before), unless a stop is under way, the killed run has not
  // been reaped yet, or the app was frozen (a snapshot may be in progress:
  // it launches on Thaw).
  void LiftFence() {
    if (stopping_ || main_pid_ > 0 || status_.frozen) return;
    (void)log_.Note("fence deadline is in the future again: starting");
    Status s = StartRun(launched_once_);
    if (!s.ok()) OnExit(127, s.ToString());
  }

  Status Launch() {
    auto pid = launcher_->Launch(out_write_[0].get(), out_write_[1].get());
    if (!pid.ok()) return pid.status();
    main_pid_ = *pid;
    launched_once_ = true;
    // After the launch: runc's new container has a new cgroup counting from 0.
    oom_before_ = launcher_->OomKills();
    launched_at_ = Clock::now();
    status_.state = AppState::kRunning;
    status_.message.clear();  // "prepared: …", "fenced: …"
    status_.pid = main_pid_;
    status_.frozen = false;
    status_.started_unix_ns = NowUnixNs();
    status_.next_restart_unix_ns = 0;
    (void)log_.Note("started (pid " + std::to_string(main_pid_) + ", " + cfg_.backend + ")");
    SaveState();
    return Status::Ok();
  }

  int PollTimeoutMs() const {
    auto now = Clock::now();
    auto next = Clock::time_point::max();
    if (restart_at_) next = std::min(next, *restart_at_);
    if (kill_at_) next = std::min(next, *kill_at_);
    if (resend_at_) next = std::min(next, *resend_at_);
    int ms = -1;
    if (next != Clock::time_point::max()) {
      ms = static_cast<int>(std::max<int64_t>(
          0, std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1));
    }
    // Without cgroups the memory limit is checked by polling.
    if (main_pid_ > 0 && launcher_->PollsLimits()) ms = ms < 0 ? 250 : std::min(ms, 250);
    return ms;
  }

  void HandleTimers() {
    auto now = Clock::now();
    if (resend_at_ && now >= *resend_at_) {
      // Once more: a signal sent while a container's init was still setting
      // up can be lost (runc), and a second one is harmless to a graceful stop.
      resend_at_.reset();
      if (main_pid_ > 0 && status_.state == AppState::kStopping) {
        (void)log_.Note("still running 1 s after " + SignalName(spec_.stop_signal) +
                        "; sending it again");
        launcher_->Signal(main_pid_, spec_.stop_signal);
      }
    }
    if (kill_at_ && now >= *kill_at_) {
      kill_at_.reset();
      resend_at_.reset();
      (void)log_.Note("still running " + std::to_string(spec_.stop_timeout_ms) + " ms after " +
                      SignalName(spec_.stop_signal) + "; killing every process");
      Status s = launcher_->KillAll(main_pid_);
      if (!s.ok()) (void)log_.Note(s.ToString());
    }
    if (restart_at_ && now >= *restart_at_) {
      restart_at_.reset();
      Status s = StartRun(true);
      if (!s.ok()) OnExit(127, s.ToString());
    }
    if (main_pid_ > 0 && !stopping_ && launcher_->PollsLimits() &&
        launcher_->EnforceLimits(main_pid_)) {
      (void)log_.Note("memory above the limit of " + std::to_string(spec_.limits.memory_bytes) +
                      " bytes; killed");
    }
  }

  void HandleSignals() {
    signalfd_siginfo si;
    bool reap = false;
    while (::read(sigfd_.get(), &si, sizeof si) == sizeof si) {
      if (si.ssi_signo == SIGCHLD) {
        reap = true;
      } else {
        BeginStop(false);
      }
    }
    if (!reap) return;
    int st;
    pid_t p;
    while ((p = ::waitpid(-1, &st, WNOHANG)) > 0) {
      if (p != main_pid_) continue;  // an orphan of the app: reaped, nothing else to do
      int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      std::string how = WIFEXITED(st) ? "exited with code " + std::to_string(code)
                                      : "killed by " + SignalName(WTERMSIG(st));
      OnExit(code, how);
    }
  }

  void OnExit(int code, const std::string& how) {
    main_pid_ = 0;
    bool was_frozen = status_.frozen;
    bool oom = launcher_->OomKills() > oom_before_;
    // Leftovers (daemonized children) die with the main process, so a restart
    // starts clean and a stop leaves nothing behind.
    Status ks = launcher_->KillAll(0);
    if (!ks.ok()) {
      (void)log_.Note(ks.ToString());
      kill_error_ = ks;
    }
    status_.pid = 0;
    status_.frozen = false;
    status_.has_last_exit = true;
    status_.last_exit_code = code;
    status_.last_exit_oom = oom;
    std::string what = how + (oom ? " (out of memory: over its limit of " +
                                        std::to_string(spec_.limits.memory_bytes >> 20) + " MiB)"
                                  : "");
    if (stopping_ || restart_requested_ || fenced_) (void)log_.Note(what);
    if (stopping_) {
      FinishStop();
      return;
    }
    if (fenced_) {
      // Killed by the fence (or it exited meanwhile): not a crash. A frozen
      // app stays held (frozen, no processes) until Thaw.
      status_.frozen = was_frozen;
      status_.state = AppState::kFenced;
      if (restart_requested_) {
        // As for Start: accepted, the app launches when the fence lifts.
        restart_requested_ = false;
        status_.consecutive_crashes = 0;
        status_.crash_looping = false;
        status_.frozen = false;
        RespondAll(&restart_waiters_, json{{"ok", true}});
      }
      SaveState();
      // The deadline may have been extended while the killed run was reaped.
      std::string why;
      if (FenceAllows(&why)) LiftFence();
      return;
    }
    if (restart_requested_) {
      restart_requested_ = false;
      status_.consecutive_crashes = 0;
      status_.crash_looping = false;
      Status s = StartRun(true);
      if (!s.ok()) OnExit(127, s.ToString());
      RespondAll(&restart_waiters_, s.ok() ? json{{"ok", true}} : Error(s));
      return;
    }
    auto ran = Clock::now() - launched_at_;
    if (ran >= std::chrono::milliseconds(spec_.restart.stable_after_ms)) {
      status_.consecutive_crashes = 1;
    } else {
      ++status_.consecutive_crashes;
    }
    status_.crash_looping = status_.consecutive_crashes >= spec_.restart.crash_loop_after;
    int64_t delay = spec_.restart.initial_backoff_ms;
    for (int i = 1; i < status_.consecutive_crashes && delay < spec_.restart.max_backoff_ms; ++i) {
      delay *= 2;
    }
    delay = std::min<int64_t>(delay, spec_.restart.max_backoff_ms);
    restart_at_ = Clock::now() + std::chrono::milliseconds(delay);
    status_.state = AppState::kBackoff;
    status_.next_restart_unix_ns = NowUnixNs() + delay * 1000000;
    status_.message = what + "; restarting in " + std::to_string(delay) + " ms" +
                      (status_.crash_looping ? " (crash-looping)" : "");
    (void)log_.Note(status_.message);
    SaveState();
  }

  // Graceful stop: thaw (a frozen process cannot act on a signal), signal,
  // and arm the kill timer. `restart` keeps the supervisor for a new launch.
  void BeginStop(bool restart) {
    if (restart) {
      restart_requested_ = true;
    } else {
      stopping_ = true;
      restart_requested_ = false;
    }
    restart_at_.reset();
    if (main_pid_ <= 0) {
      if (stopping_) {
        FinishStop();
      } else {
        restart_requested_ = false;
        status_.consecutive_crashes = 0;
        status_.crash_looping = false;
        status_.frozen = false;  // a restart ends a fenced app's hold (see Freeze)
        Status s = StartRun(false);
        RespondAll(&restart_waiters_, s.ok() ? json{{"ok", true}} : Error(s));
        if (!s.ok()) OnExit(127, s.ToString());  // back to back-off, never stuck
      }
      return;
    }
    if (status_.state == AppState::kStopping) return;
    status_.state = AppState::kStopping;
    SaveState();
    if (status_.frozen) (void)launcher_->Thaw(main_pid_);
    (void)log_.Note(std::string(restart ? "restarting" : "stopping") + ": sending " +
                    SignalName(spec_.stop_signal));
    launcher_->Signal(main_pid_, spec_.stop_signal);
    kill_at_ = Clock::now() + std::chrono::milliseconds(spec_.stop_timeout_ms);
    if (spec_.stop_timeout_ms > 2000) resend_at_ = Clock::now() + std::chrono::seconds(1);
  }

  void FinishStop() {
    kill_at_.reset();
    resend_at_.reset();
    restart_at_.reset();
    launcher_->Cleanup();
    status_.state = AppState::kStopped;
    status_.pid = 0;
    status_.message = "stopped on request";
    (void)log_.Note("stopped");
    SaveState();
    RespondAll(&stop_waiters_, kill_error_.ok() ? json{{"ok", true}} : Error(kill_error_));
    RespondAll(&restart_waiters_, Error(Unavailable("the app was stopped")));
    done_ = true;
  }

  void SaveState() {
    (void)WriteFileAtomic(JoinPath(cfg_.app_dir, "state.json"), StatusJson(status_).dump(), false);
  }

  // At most 1 MiB per call, so an app that writes without pause cannot keep
  // the loop from signals and control requests.
  void DrainOutput(int i) {
    char buf[65536];
    for (int round = 0; round < 16; ++round) {
      ssize_t n = ::read(out_read_[i].get(), buf, sizeof buf);
      if (n <= 0) break;
      (void)log_.Append(i == 0 ? "out" : "err", std::string_view(buf, n));
    }
  }

  void Accept() {
    while (true) {
      int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) return;
      if (clients_.size() >= 64) {
        ::close(fd);
        continue;
      }
      clients_.push_back(Client{UniqueFd(fd), {}});
    }
  }

  static json Error(const Status& s) {
    return {{"ok", false}, {"code", static_cast<int>(s.code())}, {"error", s.message()}};
  }

  void ReadClient(size_t i) {
    Client& c = clients_[i];
    char buf[512];
    ssize_t n = ::read(c.fd.get(), buf, sizeof buf);
    if (n <= 0) {
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) c.fd.Reset();
      return;
    }
    c.in.append(buf, n);
    size_t nl = c.in.find('\n');
    if (nl == std::string::npos) {
      if (c.in.size() > 256) c.fd.Reset();
      return;
    }
    std::string cmd = c.in.substr(0, nl);
    UniqueFd fd = std::move(c.fd);
    Handle(cmd, std::move(fd));
  }

  void Reply(int fd, const json& j) {
    std::string line = j.dump() + "\n";
    // Replies are small; a client that does not read them is dropped.
    (void)!::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }

  void RespondAll(std::vector<UniqueFd>* waiters, const json& j) {
    for (auto& fd : *waiters) Reply(fd.get(), j);
    waiters->clear();
  }

  void Handle(const std::string& cmd, UniqueFd fd) {
    if (cmd == "status") {
      json j = StatusJson(status_);
      j["ok"] = true;
      Reply(fd.get(), j);
    } else if (cmd == "usage") {
      auto u = launcher_->GetUsage(main_pid_);
      if (!u.ok()) return Reply(fd.get(), Error(u.status()));
      json j = UsageJson(*u);
      j["ok"] = true;
      Reply(fd.get(), j);
    } else if (cmd == "start") {
      // A prepared app (ShimConfig::prepare_only) starts; a running one is
      // left as it is.
      if (stopping_) return Reply(fd.get(), Error(Unavailable("the app is stopping")));
      if (status_.state != AppState::kPrepared) return Reply(fd.get(), json{{"ok", true}});
      Status s = StartRun(false);
      if (!s.ok()) OnExit(127, s.ToString());  // back-off, as any failed launch
      Reply(fd.get(), s.ok() ? json{{"ok", true}} : Error(s));
    } else if (cmd == "stop") {
      stop_waiters_.push_back(std::move(fd));
      BeginStop(false);
    } else if (cmd == "restart") {
      if (stopping_) return Reply(fd.get(), Error(Unavailable("the app is stopping")));
      restart_waiters_.push_back(std::move(fd));
      BeginStop(true);
    } else if (cmd == "freeze" || cmd == "thaw") {
      bool freeze = cmd == "freeze";
      if (fenced_ && !stopping_) {
        // No processes to freeze. The flag holds the app back when the
        // fence lifts, so a snapshot taken "frozen" never sees it start.
        status_.frozen = freeze;
        SaveState();
        Reply(fd.get(), json{{"ok", true}});
        if (!freeze) {
          std::string why;
          if (FenceAllows(&why)) LiftFence();
        }
        return;
      }
      if (main_pid_ <= 0) {
        return Reply(fd.get(), Error(Unavailable("app '" + spec_.name + "' is not running (" +
                                                 AppStateName(status_.state) + ")")));
      }
      Status s = freeze ? launcher_->Freeze(main_pid_) : launcher_->Thaw(main_pid_);
      if (s.ok()) {
        status_.frozen = freeze;
        SaveState();
      }
      Reply(fd.get(), s.ok() ? json{{"ok", true}} : Error(s));
    } else {
      Reply(fd.get(), Error(InvalidArgument("unknown command '" + cmd + "'")));
    }
  }

  ShimConfig cfg_;
  AppSpec spec_;
  int ready_fd_;
  LogWriter log_;
  UniqueFd lock_, sigfd_, listen_;
  UniqueFd fence_timer_;  // CLOCK_BOOTTIME timerfd; invalid without fencing
  UniqueFd out_read_[2], out_write_[2];
  std::unique_ptr<Launcher> launcher_;
  std::vector<Client> clients_;
  std::vector<UniqueFd> stop_waiters_, restart_waiters_;
  AppStatus status_;
  pid_t main_pid_ = 0;
  uint64_t oom_before_ = 0;
  Clock::time_point launched_at_;
  std::optional<Clock::time_point> restart_at_, kill_at_, resend_at_;
  bool stopping_ = false;
  bool restart_requested_ = false;
  bool fenced_ = false;         // the fence forbids running: killed or not launched
  bool launched_once_ = false;  // a launch after the fence lifts is a restart
  Status kill_error_;           // processes that survived SIGKILL (reported on stop)
  bool done_ = false;
};

}  // namespace

std::string ReadyLine(const Status& s) {
  std::string m = s.message();
  std::replace(m.begin(), m.end(), '\n', ' ');
  return "error " + std::to_string(static_cast<int>(s.code())) + " " + m + "\n";
}

Status RunSupervisor(const ShimConfig& cfg, const AppSpec& spec, int ready_fd) {
  Supervisor sup(cfg, spec, ready_fd);
  Status s = sup.Init();
  if (s.ok()) s = sup.FirstLaunch();
  if (!s.ok()) {
    if (ready_fd >= 0) {
      std::string msg = ReadyLine(s);
      (void)!::write(ready_fd, msg.data(), msg.size());
    }
    return s;
  }
  sup.Run();
  return Status::Ok();
}

}  // namespace hc::runtime::shim
