// The same behaviour from both runtime backends: start/stop/restart, crash
// back-off, whole-tree stop, memory limit, freeze, logs, usage, and (runc and
// root) isolation and port filtering.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "common/fs.h"
#include "runtime/bind_filter.h"
#include "runtime/probe.h"
#include "runtime_test_env.h"

namespace hc::runtime::testing {
namespace {

using namespace std::chrono_literals;

#define ASSERT_OK(expr)                          \
  do {                                           \
    ::hc::Status hc_s_ = (expr);                 \
    ASSERT_TRUE(hc_s_.ok()) << hc_s_.ToString(); \
  } while (0)

class RuntimeConformance : public BackendTest {
 protected:
  AppSpec Shell(const std::string& name, const std::string& script) {
    AppSpec s;
    s.name = name;
    s.argv = {"/bin/sh", "-c", script};
    s.port = FreePort();
    s.volume_path = env_->MakeVolume(name);
    s.probe.kind = ProbeKind::kNone;
    s.stop_timeout_ms = 2000;
    s.limits.memory_bytes = 128ull << 20;
    return s;
  }

  AppStatus StatusOf(const std::string& name) {
    auto s = rt_->GetStatus(name);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? *s : AppStatus{};
  }

  std::string ReadVolumeFile(const AppSpec& s, const std::string& f) {
    auto t = ReadFileToString(JoinPath(s.volume_path, f));
    return t.ok() ? *t : "";
  }
};

TEST_P(RuntimeConformance, ServesOnItsPortAndStops) {
  AppSpec s = Shell("web", "exec busybox httpd -f -p 127.0.0.1:$PORT -h .");
  s.probe.kind = ProbeKind::kHttp;
  ASSERT_TRUE(WriteFileAtomic(JoinPath(s.volume_path, "index.html"), "hi", false).ok());
  ASSERT_OK(rt_->Start(s));
  Status ready = rt_->WaitReady("web", 10000);
  ASSERT_TRUE(ready.ok()) << ready.ToString();
  AppStatus st = StatusOf("web");
  EXPECT_EQ(st.state, AppState::kRunning);
  EXPECT_GT(st.pid, 0);
  EXPECT_EQ(st.backend, GetParam());
  ASSERT_OK(rt_->Stop("web"));
  EXPECT_EQ(StatusOf("web").state, AppState::kStopped);
  EXPECT_FALSE(ProbeOnce(s.probe, s.port, 200).ok());
  // Stopping again is fine; removing forgets it.
  EXPECT_TRUE(rt_->Stop("web").ok());
  EXPECT_TRUE(rt_->Remove("web").ok());
  EXPECT_EQ(rt_->GetStatus("web").status().code(), Code::kNotFound);
}

TEST_P(RuntimeConformance, RefusesSecondStartAndTakenPort) {
  AppSpec a = Shell("one", "exec sleep 1000");
  ASSERT_OK(rt_->Start(a));
  EXPECT_EQ(rt_->Start(a).code(), Code::kAlreadyExists);
  AppSpec b = Shell("two", "exec sleep 1000");
  b.port = a.port;
  Status s = rt_->Start(b);
  EXPECT_EQ(s.code(), Code::kConflict) << s.ToString();
  EXPECT_NE(s.message().find("'one'"), std::string::npos) << s.message();
  EXPECT_EQ(rt_->Stop("nosuch").code(), Code::kNotFound);
}

TEST_P(RuntimeConformance, ReportsCommandThatCannotRun) {
  AppSpec s = Shell("bad", "");
  s.argv = {"/nonexistent/program"};
  Status st = rt_->Start(s);
  if (st.ok()) {
    // runc reports exec failures from inside the container, as an exit.
    ASSERT_TRUE(WaitFor([&] { return StatusOf("bad").has_last_exit; }));
  } else {
    EXPECT_NE(st.message().find("nonexistent"), std::string::npos) << st.ToString();
  }
}

TEST_P(RuntimeConformance, CrashRestartsWithBackoffAndFlagsCrashLoop) {
  AppSpec s = Shell("crash", "date +%s%N >> runs; echo dying >&2; exit 3");
  s.probe.kind = ProbeKind::kTcp;
  s.restart.initial_backoff_ms = 50;
  s.restart.max_backoff_ms = 400;
  s.restart.crash_loop_after = 3;
  ASSERT_OK(rt_->Start(s));
  ASSERT_TRUE(WaitFor([&] { return StatusOf("crash").restarts >= 5; }, 20s));
  AppStatus st = StatusOf("crash");
  EXPECT_TRUE(st.crash_looping);
  EXPECT_TRUE(st.has_last_exit);
  EXPECT_EQ(st.last_exit_code, 3);
  EXPECT_FALSE(st.last_exit_oom);
  // Gaps between runs grow: 50, 100, 200, 400 ms.
  std::vector<int64_t> t;
  std::string runs = ReadVolumeFile(s, "runs");
  for (size_t p = 0; p < runs.size();) {
    size_t nl = runs.find('\n', p);
    t.push_back(std::stoll(runs.substr(p, nl - p)));
    p = nl + 1;
  }
  ASSERT_GE(t.size(), 5u);
  EXPECT_GT(t[4] - t[3], t[1] - t[0]);
  EXPECT_GE((t[4] - t[3]) / 1000000, 350);
  // The log has the app's stderr and the supervisor's notes.
  auto log = ReadFileToString(rt_->LogPath("crash"));
  ASSERT_TRUE(log.ok());
  EXPECT_NE(log->find("err | dying"), std::string::npos) << *log;
  EXPECT_NE(log->find("exited with code 3"), std::string::npos) << *log;
  // WaitReady gives up at once with the reason instead of waiting.
  Status r = rt_->WaitReady("crash", 5000);
  EXPECT_FALSE(r.ok());
  ASSERT_OK(rt_->Stop("crash"));
}

TEST_P(RuntimeConformance, StopKillsWholeTreeAfterTimeout) {
  std::string marker = std::to_string(900000 + ::getpid() % 10000);
  // Ignores SIGTERM, has a background child and a daemonized (setsid) grandchild.
  AppSpec s = Shell("tree", "trap '' TERM; sleep " + marker + " & setsid sh -c 'sleep " + marker +
                                "' & sleep " + marker + "; wait");
  s.stop_timeout_ms = 300;
  ASSERT_OK(rt_->Start(s));
  ASSERT_TRUE(WaitFor([&] { return CountProcesses("sleep " + marker) >= 3; }))
      << CountProcesses("sleep " + marker);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_OK(rt_->Stop("tree"));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 250ms);
  EXPECT_EQ(CountProcesses("sleep " + marker), 0);
  auto log = ReadFileToString(rt_->LogPath("tree"));
  EXPECT_NE(log->find("killing every process"), std::string::npos) << *log;
}

TEST_P(RuntimeConformance, GracefulStopIsQuick) {
  AppSpec s = Shell("quick", "exec sleep 1000");
  s.stop_timeout_ms = 10000;
  ASSERT_OK(rt_->Start(s));
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_OK(rt_->Stop("quick"));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
}

TEST_P(RuntimeConformance, MemoryLimitKillsAndReportsOom) {
  // dash keeps a command substitution's output in memory: ~200 MB here.
  AppSpec s = Shell("hog", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived");
  s.limits.memory_bytes = 32ull << 20;
  s.restart.initial_backoff_ms = 60000;
  s.restart.max_backoff_ms = 60000;
  ASSERT_OK(rt_->Start(s));
  ASSERT_TRUE(WaitFor([&] { return StatusOf("hog").has_last_exit; }, 30s));
  AppStatus st = StatusOf("hog");
  EXPECT_TRUE(st.last_exit_oom) << st.message;
  EXPECT_EQ(st.last_exit_code, 128 + SIGKILL);
  EXPECT_NE(st.message.find("out of memory"), std::string::npos) << st.message;
  EXPECT_EQ(ReadVolumeFile(s, "survived"), "");
  ASSERT_OK(rt_->Stop("hog"));
}

TEST_P(RuntimeConformance, FreezeStopsWritesAndThawResumes) {
  AppSpec s = Shell("writer",
                    "i=0; while true; do i=$((i+1)); echo $i > c.tmp; mv c.tmp count; "
                    "sleep 0.01; done");
  ASSERT_OK(rt_->Start(s));
  ASSERT_TRUE(WaitFor([&] { return !ReadVolumeFile(s, "count").empty(); }));
  Status f = rt_->Freeze("writer");
  ASSERT_TRUE(f.ok()) << f.ToString();
  EXPECT_TRUE(StatusOf("writer").frozen);
  std::string frozen_at = ReadVolumeFile(s, "count");
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(ReadVolumeFile(s, "count"), frozen_at);
  ASSERT_OK(rt_->Thaw("writer"));
  EXPECT_TRUE(WaitFor([&] { return ReadVolumeFile(s, "count") != frozen_at; }));
  // A frozen app still stops.
  ASSERT_OK(rt_->Freeze("writer"));
  ASSERT_OK(rt_->Stop("writer"));
}

TEST_P(RuntimeConformance, ReportsUsageAndLogs) {
  AppSpec s = Shell("busy",
                    "echo hello out; echo hello err >&2; i=0; while [ $i -lt 200000 ]; do "
                    "i=$((i+1)); done; exec sleep 1000");
  ASSERT_OK(rt_->Start(s));
  ASSERT_TRUE(WaitFor([&] {
    auto u = rt_->GetUsage("busy");
    return u.ok() && u->cpu_seconds > 0.05;
  }));
  auto u = rt_->GetUsage("busy");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_GT(u->memory_bytes, 0u);
  EXPECT_GE(u->processes, 1u);
  auto log = ReadFileToString(rt_->LogPath("busy"));
  ASSERT_TRUE(WaitFor([&] {
    log = ReadFileToString(rt_->LogPath("busy"));
    return log.ok() && log->find("err | hello err") != std::string::npos;
  }));
  EXPECT_NE(log->find("out | hello out"), std::string::npos) << *log;
  ASSERT_OK(rt_->Stop("busy"));
}

TEST_P(RuntimeConformance, RestartStartsANewProcess) {
  AppSpec s = Shell("again", "echo x >> starts; exec sleep 1000");
  ASSERT_OK(rt_->Start(s));
  ASSERT_TRUE(WaitFor([&] { return ReadVolumeFile(s, "starts") == "x\n"; }));
  pid_t before = StatusOf("again").pid;
  ASSERT_OK(rt_->Restart("again"));
  ASSERT_TRUE(WaitFor([&] { return ReadVolumeFile(s, "starts") == "x\nx\n"; }));
  AppStatus st = StatusOf("again");
  EXPECT_EQ(st.state, AppState::kRunning);
  EXPECT_NE(st.pid, before);
  EXPECT_EQ(st.restarts, 1);
  ASSERT_OK(rt_->Stop("again"));
}

TEST_P(RuntimeConformance, AppOutlivesTheRuntimeObject) {
  AppSpec s = Shell("lasting", "exec sleep 1000");
  ASSERT_OK(rt_->Start(s));
  pid_t pid = StatusOf("lasting").pid;
  RuntimeConfig c;
  c.backend = GetParam();
  c.state_dir = JoinPath(env_->dir, "state");
  c.shim_path = TestShimPath();
  auto again = OpenRuntime(c);
  ASSERT_TRUE(again.ok());
  auto st = (*again)->GetStatus("lasting");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state, AppState::kRunning);
  EXPECT_EQ(st->pid, pid);
  ASSERT_OK((*again)->Stop("lasting"));
}

TEST_P(RuntimeConformance, LostSupervisorIsReportedAndStopCleansUp) {
  std::string marker = std::to_string(800000 + ::getpid() % 10000);
  AppSpec s = Shell("orphan", "exec sleep " + marker);
  ASSERT_OK(rt_->Start(s));
  ASSERT_TRUE(WaitFor([&] { return CountProcesses("sleep " + marker) >= 1; }));
  // Kill the supervisor the hard way.
  auto pid_of_shim = [&]() -> pid_t {
    DIR* d = ::opendir("/proc");
    pid_t found = 0;
    while (struct dirent* e = ::readdir(d)) {
      auto cmd = ReadFileToString(std::string("/proc/") + e->d_name + "/cmdline");
      if (cmd.ok() && cmd->find("hc-shim") != std::string::npos &&
          cmd->find(env_->dir + "/state/apps/orphan") != std::string::npos) {
        found = std::atoi(e->d_name);
      }
    }
    ::closedir(d);
    return found;
  };
  pid_t shim = pid_of_shim();
  ASSERT_GT(shim, 0);
  ::kill(shim, SIGKILL);
  ASSERT_TRUE(WaitFor([&] { return StatusOf("orphan").state == AppState::kLost; }));
  EXPECT_NE(StatusOf("orphan").message.find("supervisor"), std::string::npos);
  ASSERT_OK(rt_->Stop("orphan"));
  EXPECT_EQ(StatusOf("orphan").state, AppState::kStopped);
  if (::geteuid() == 0) EXPECT_EQ(CountProcesses("sleep " + marker), 0);
  // And it starts again cleanly.
  ASSERT_OK(rt_->Start(s));
  ASSERT_OK(rt_->Stop("orphan"));
  if (::geteuid() != 0) ::system(("pkill -f 'sleep " + marker + "'").c_str());
}

TEST_P(RuntimeConformance, AppMayBindOnlyItsOwnPortOnLoopback) {
  if (::geteuid() != 0 || !BindFilterSupported()) {
    GTEST_SKIP() << "skipped: port filtering needs root and cgroup BPF";
  }
  uint16_t other = FreePort();
  AppSpec s = Shell(
      "ports", "busybox httpd -f -p 127.0.0.1:" + std::to_string(other) +
                   " -h . ; echo $? > other-port; exec busybox httpd -f -p 0.0.0.0:$PORT -h .");
  s.probe.kind = ProbeKind::kTcp;
  ASSERT_OK(rt_->Start(s));
  ASSERT_OK(rt_->WaitReady("ports", 10000));
  EXPECT_EQ(ReadVolumeFile(s, "other-port"), "1\n");
  auto log = ReadFileToString(rt_->LogPath("ports"));
  EXPECT_NE(log->find("Operation not permitted"), std::string::npos) << *log;
  ASSERT_OK(rt_->Stop("ports"));
}

INSTANTIATE_TEST_SUITE_P(Backends, RuntimeConformance, ::testing::Values("process", "runc"),
                         [](const auto& info) { return info.param; });

// Container-only guarantees.
class RuncIsolation : public RuntimeConformance {};

TEST_P(RuncIsolation, SeesOnlyItsProcessesAndWritesOnlyItsVolume) {
  AppSpec s = Shell("jail",
                    "ls /proc | grep -c '^[0-9]' > nprocs; "
                    "touch /etc/hc-escape 2> etc-err; touch /usr/hc-escape 2> usr-err; "
                    "touch /tmp/private 2> tmp-err && echo ok > tmp-ok; id -u > uid; "
                    "unshare -U true 2> unshare-err; echo $? > unshare-rc; "
                    // clone(CLONE_NEWUSER|SIGCHLD) through perl's raw syscall (x86_64: 56).
                    "perl -e 'my $r = syscall(56, 0x10000011, 0, 0, 0, 0); exit 0 if $r == 0; "
                    "print $r < 0 ? \"refused\" : \"allowed\"' > clone-newuser; "
                    "cat /proc/self/status | grep CapEff > caps; exec sleep 1000");
  ASSERT_OK(rt_->Start(s));
  ASSERT_TRUE(WaitFor([&] { return !ReadVolumeFile(s, "caps").empty(); }));
  EXPECT_LE(std::stoi(ReadVolumeFile(s, "nprocs")), 4);
  EXPECT_FALSE(PathExists("/etc/hc-escape"));
  EXPECT_FALSE(PathExists("/usr/hc-escape"));
  EXPECT_NE(ReadVolumeFile(s, "etc-err").find("Read-only"), std::string::npos);
  EXPECT_EQ(ReadVolumeFile(s, "tmp-ok"), "ok\n") << ReadVolumeFile(s, "tmp-err");
  EXPECT_FALSE(PathExists("/tmp/private"));
  EXPECT_EQ(ReadVolumeFile(s, "uid"), std::to_string(AppUid("jail")) + "\n");
  EXPECT_EQ(ReadVolumeFile(s, "caps"), "CapEff:\t0000000000000000\n");
  EXPECT_NE(ReadVolumeFile(s, "unshare-rc"), "0\n") << ReadVolumeFile(s, "unshare-err");
#if defined(__x86_64__)
  EXPECT_EQ(ReadVolumeFile(s, "clone-newuser"), "refused");
#endif
  ASSERT_OK(rt_->Stop("jail"));
}

// Prepare (a move's target, ahead of the switch): nothing of the app runs
// until Start, which then only lets it go; the volume it sees is the
// directory as it is at Start (a replica's last increment lands in place).
TEST_P(RuncIsolation, PreparedAppRunsOnlyOnStartAndSeesTheVolumeThen) {
  AppSpec s = Shell("ahead", "cat seed > seen; exec busybox httpd -f -p 127.0.0.1:$PORT -h .");
  s.probe.kind = ProbeKind::kHttp;
  ASSERT_TRUE(WriteFileAtomic(JoinPath(s.volume_path, "seed"), "old", false).ok());
  ASSERT_TRUE(WriteFileAtomic(JoinPath(s.volume_path, "index.html"), "hi", false).ok());
  ASSERT_OK(rt_->Prepare(s));
  ASSERT_OK(rt_->Prepare(s));  // again, same spec: nothing to do
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(StatusOf("ahead").state, AppState::kPrepared);
  EXPECT_EQ(ReadVolumeFile(s, "seen"), "");
  EXPECT_FALSE(ProbeOnce(s.probe, s.port, 200).ok());
  // The last increment: a file replaced by rename, as a receive does.
  ASSERT_TRUE(WriteFileAtomic(JoinPath(s.volume_path, "seed"), "new", false).ok());
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_OK(rt_->Start(s));
  Status ready = rt_->WaitReady("ahead", 10000);
  ASSERT_TRUE(ready.ok()) << ready.ToString();
  auto took =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  std::printf("prepared start to ready: %lld ms\n", static_cast<long long>(took));
  EXPECT_EQ(StatusOf("ahead").state, AppState::kRunning);
  EXPECT_EQ(ReadVolumeFile(s, "seen"), "new");
  EXPECT_EQ(rt_->Start(s).code(), Code::kAlreadyExists);
  ASSERT_OK(rt_->Stop("ahead"));
  // Prepared, then stopped without a start (a move that failed): nothing
  // ran, nothing is left.
  ASSERT_TRUE(::unlink(JoinPath(s.volume_path, "seen").c_str()) == 0);
  ASSERT_OK(rt_->Prepare(s));
  ASSERT_OK(rt_->Stop("ahead"));
  EXPECT_EQ(StatusOf("ahead").state, AppState::kStopped);
  EXPECT_EQ(ReadVolumeFile(s, "seen"), "");
  // Prepared for another port: Start replaces it.
  ASSERT_OK(rt_->Prepare(s));
  AppSpec moved = s;
  moved.port = FreePort();
  ASSERT_OK(rt_->Start(moved));
  ready = rt_->WaitReady("ahead", 10000);
  EXPECT_TRUE(ready.ok()) << ready.ToString();
  EXPECT_EQ(StatusOf("ahead").port, moved.port);
  ASSERT_OK(rt_->Stop("ahead"));
}

INSTANTIATE_TEST_SUITE_P(Runc, RuncIsolation, ::testing::Values("runc"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace hc::runtime::testing
