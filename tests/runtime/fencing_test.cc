// Self-fencing in the supervisor (docs/runtime.md, "Fencing"), on both
// backends: an app runs only while the fence file's deadline lies in the
// future, is killed at once when it passes, and starts again when hcd
// extends it.
#include <dirent.h>
#include <gtest/gtest.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "common/fs.h"
#include "runtime/fence.h"
#include "runtime_test_env.h"

namespace hc::runtime::testing {
namespace {

using namespace std::chrono_literals;

#define ASSERT_OK(expr)                          \
  do {                                           \
    ::hc::Status hc_s_ = (expr);                 \
    ASSERT_TRUE(hc_s_.ok()) << hc_s_.ToString(); \
  } while (0)

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kHour = 3600'000 * kMs;
constexpr const char* kFencedText = "fenced: this node's cluster lease is not confirmed";

int64_t RealtimeNs() {
  timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

class Fencing : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why = WhyBackendUnavailable(GetParam());
    if (!why.empty()) GTEST_SKIP() << "skipped: " << why;
    env_ = MakeTestRuntime(GetParam(), /*with_fence=*/true);
    rt_ = env_->rt.get();
    marker_ = std::to_string(700000 + ::getpid() % 10000);
  }

  void SetDeadline(int64_t boottime_ns) {
    ASSERT_OK(WriteFenceDeadline(env_->fence_file, boottime_ns));
  }

  // Appends the wall-clock time (ns) to `ticks` every 50 ms, with a
  // background child `sleep <marker>` to show that the whole tree dies (the
  // shell's own command line does not contain "sleep <marker>").
  AppSpec Writer(const std::string& name) {
    AppSpec s;
    s.name = name;
    s.argv = {
        "/bin/sh", "-c",
        "sleep $((" + marker_ + " + 0)) & while true; do date +%s%N >> ticks; sleep 0.05; done"};
    s.port = FreePort();
    s.volume_path = env_->MakeVolume(name);
    s.probe.kind = ProbeKind::kNone;
    s.stop_timeout_ms = 2000;
    s.limits.memory_bytes = 128ull << 20;
    return s;
  }

  void TearDown() override { (void)StopHeartbeat(); }

  // A thread that writes now+ttl every period, as hcd does while its lease
  // is confirmed.
  void StartHeartbeat(std::chrono::milliseconds period, int64_t ttl_ns) {
    beating_ = true;
    last_deadline_ = BoottimeNowNs() + ttl_ns;
    SetDeadline(last_deadline_);
    heartbeat_ = std::thread([this, period, ttl_ns] {
      while (beating_) {
        std::this_thread::sleep_for(period);
        int64_t d = BoottimeNowNs() + ttl_ns;
        if (WriteFenceDeadline(env_->fence_file, d).ok()) last_deadline_ = d;
      }
    });
  }

  // Stops the heartbeat; the last deadline it wrote.
  int64_t StopHeartbeat() {
    beating_ = false;
    if (heartbeat_.joinable()) heartbeat_.join();
    return last_deadline_;
  }

  AppStatus StatusOf(const std::string& name) {
    auto s = rt_->GetStatus(name);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? *s : AppStatus{};
  }

  std::string Ticks(const AppSpec& s) {
    auto t = ReadFileToString(JoinPath(s.volume_path, "ticks"));
    return t.ok() ? *t : "";
  }

  static int Lines(const std::string& t) {
    return static_cast<int>(std::count(t.begin(), t.end(), '\n'));
  }

  static int64_t LastTick(const std::string& t) {
    if (t.empty()) return 0;
    size_t end = t.size() - 1;  // the final '\n'
    size_t start = t.rfind('\n', end - 1);
    return std::stoll(t.substr(start == std::string::npos ? 0 : start + 1));
  }

  std::unique_ptr<TestRuntime> env_;
  Runtime* rt_ = nullptr;
  std::string marker_;
  std::thread heartbeat_;
  std::atomic<bool> beating_{false};
  std::atomic<int64_t> last_deadline_{0};
};

TEST_P(Fencing, RunsNormallyWhileTheDeadlineIsFarAway) {
  SetDeadline(BoottimeNowNs() + kHour);
  AppSpec s = Writer("far");
  ASSERT_OK(rt_->Start(s));
  ASSERT_TRUE(WaitFor([&] { return Lines(Ticks(s)) >= 3; }));
  AppStatus st = StatusOf("far");
  EXPECT_EQ(st.state, AppState::kRunning);
  EXPECT_GT(st.pid, 0);
  EXPECT_EQ(CountProcesses("sleep " + marker_), 1);
  ASSERT_OK(rt_->Stop("far"));
  EXPECT_EQ(StatusOf("far").state, AppState::kStopped);
  EXPECT_EQ(CountProcesses("sleep " + marker_), 0);
}

TEST_P(Fencing, KillsTheAppAtTheDeadlineAndRestartsItWhenExtended) {
  // Like hcd: a deadline 300 ms ahead, renewed every 100 ms.
  StartHeartbeat(100ms, 300 * kMs);
  AppSpec s = Writer("lease");
  ASSERT_OK(rt_->Start(s));
  ASSERT_TRUE(
      WaitFor([&] { return Lines(Ticks(s)) >= 3 && CountProcesses("sleep " + marker_) == 1; }));
  // It keeps running across several renewed deadlines.
  std::this_thread::sleep_for(1s);
  AppStatus running = StatusOf("lease");
  EXPECT_EQ(running.state, AppState::kRunning);
  EXPECT_EQ(running.restarts, 0);
  // hcd hangs: the last deadline stays.
  int64_t deadline = StopHeartbeat();
  int64_t before = Lines(Ticks(s));
  // Watch for the kill: the supervisor reports kFenced only once every
  // process is gone.
  int64_t fenced_at = 0;
  while (BoottimeNowNs() < deadline + 3000 * kMs) {
    auto st = rt_->GetStatus("lease");
    if (st.ok() && st->state == AppState::kFenced) {
      fenced_at = BoottimeNowNs();
      break;
    }
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_GT(fenced_at, 0) << "not fenced 3 s after the deadline";
  int64_t fenced_at_rt = RealtimeNs();
  EXPECT_EQ(CountProcesses("sleep " + marker_), 0);
  int64_t latency_ms = (fenced_at - deadline) / kMs;
  std::printf("fence latency (%s): deadline -> every process gone and status fenced: <= %lld ms\n",
              GetParam().c_str(), static_cast<long long>(latency_ms));
  RecordProperty("fence_latency_ms", std::to_string(latency_ms));
  EXPECT_GE(fenced_at, deadline);
  EXPECT_LT(latency_ms, 1000);
  AppStatus st = StatusOf("lease");
  EXPECT_NE(st.message.find(kFencedText), std::string::npos) << st.message;
  EXPECT_NE(st.message.find("waiting for hcd"), std::string::npos) << st.message;
  EXPECT_EQ(st.consecutive_crashes, 0);
  EXPECT_FALSE(st.crash_looping);
  EXPECT_EQ(st.next_restart_unix_ns, 0);
  ASSERT_TRUE(WaitFor([&] { return StatusOf("lease").pid == 0; }));
  // Writes stopped: it wrote until the deadline, and nothing after the kill.
  std::string ticks = Ticks(s);
  EXPECT_GT(Lines(ticks), before);
  EXPECT_LE(LastTick(ticks), fenced_at_rt);
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(Ticks(s), ticks);
  EXPECT_EQ(StatusOf("lease").state, AppState::kFenced);
  auto log = ReadFileToString(rt_->LogPath("lease"));
  EXPECT_NE(log->find("killed every process in"), std::string::npos) << *log;
  std::printf("supervisor log: %s\n", log->substr(log->rfind(kFencedText) - 40, 200).c_str());

  // hcd confirms its lease again: a normal start, counted as a restart.
  int restarts = StatusOf("lease").restarts;
  SetDeadline(BoottimeNowNs() + kHour);
  ASSERT_TRUE(WaitFor([&] { return StatusOf("lease").state == AppState::kRunning; }, 2s));
  ASSERT_TRUE(WaitFor([&] { return Lines(Ticks(s)) > Lines(ticks); }));
  st = StatusOf("lease");
  EXPECT_EQ(st.restarts, restarts + 1);
  EXPECT_EQ(st.consecutive_crashes, 0);
  ASSERT_OK(rt_->Stop("lease"));
  EXPECT_EQ(CountProcesses("sleep " + marker_), 0);
}

TEST_P(Fencing, MissingFenceFileHoldsTheAppUntilADeadlineIsWritten) {
  AppSpec s = Writer("held");
  s.probe.kind = ProbeKind::kTcp;  // kNone would count as ready in any state
  // Start succeeds; the app just does not run.
  ASSERT_OK(rt_->Start(s));
  AppStatus st = StatusOf("held");
  EXPECT_EQ(st.state, AppState::kFenced);
  EXPECT_EQ(st.pid, 0);
  EXPECT_NE(st.message.find(kFencedText), std::string::npos) << st.message;
  EXPECT_NE(st.message.find("no fence file"), std::string::npos) << st.message;
  Status ready = rt_->WaitReady("held", 2000);
  EXPECT_EQ(ready.code(), Code::kUnavailable);
  EXPECT_NE(ready.message().find("fenced"), std::string::npos) << ready.ToString();
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(Ticks(s), "");
  EXPECT_EQ(CountProcesses("sleep " + marker_), 0);
  // A deadline in the past fences as well.
  SetDeadline(BoottimeNowNs() - kMs);
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(StatusOf("held").state, AppState::kFenced);
  EXPECT_EQ(Ticks(s), "");

  auto t0 = std::chrono::steady_clock::now();
  SetDeadline(BoottimeNowNs() + kHour);
  ASSERT_TRUE(WaitFor([&] { return !Ticks(s).empty(); }));
  std::printf("fenced -> started after the deadline was extended: %lld ms (%s)\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - t0)
                                         .count()),
              GetParam().c_str());
  st = StatusOf("held");
  EXPECT_EQ(st.state, AppState::kRunning);
  EXPECT_EQ(st.restarts, 0);  // its first run
  ASSERT_OK(rt_->Stop("held"));
  EXPECT_EQ(CountProcesses("sleep " + marker_), 0);
}

TEST_P(Fencing, MalformedFenceFileFences) {
  ASSERT_OK(WriteFileAtomic(env_->fence_file, "soon\n", false));
  AppSpec s = Writer("garbled");
  ASSERT_OK(rt_->Start(s));
  AppStatus st = StatusOf("garbled");
  EXPECT_EQ(st.state, AppState::kFenced);
  EXPECT_NE(st.message.find(env_->fence_file), std::string::npos) << st.message;
  SetDeadline(BoottimeNowNs() + kHour);
  ASSERT_TRUE(WaitFor([&] { return StatusOf("garbled").state == AppState::kRunning; }));
  ASSERT_OK(rt_->Stop("garbled"));
}

TEST_P(Fencing, StopRestartFreezeAndThawWhileFenced) {
  AppSpec s = Writer("ctl");
  ASSERT_OK(rt_->Start(s));
  ASSERT_EQ(StatusOf("ctl").state, AppState::kFenced);
  // Restart is accepted and stays fenced; Freeze and Thaw are no-ops.
  ASSERT_OK(rt_->Restart("ctl"));
  EXPECT_EQ(StatusOf("ctl").state, AppState::kFenced);
  ASSERT_OK(rt_->Thaw("ctl"));
  ASSERT_OK(rt_->Freeze("ctl"));
  EXPECT_TRUE(StatusOf("ctl").frozen);
  // Frozen (a snapshot may be running): the lifted fence waits for Thaw.
  SetDeadline(BoottimeNowNs() + kHour);
  std::this_thread::sleep_for(600ms);
  EXPECT_EQ(StatusOf("ctl").state, AppState::kFenced);
  EXPECT_EQ(Ticks(s), "");
  ASSERT_OK(rt_->Thaw("ctl"));
  ASSERT_TRUE(WaitFor([&] { return !Ticks(s).empty(); }));
  EXPECT_EQ(StatusOf("ctl").state, AppState::kRunning);
  ASSERT_OK(rt_->Stop("ctl"));

  // Stop of a fenced app: stopped, the supervisor gone.
  ::unlink(env_->fence_file.c_str());
  ASSERT_OK(rt_->Start(s));
  ASSERT_EQ(StatusOf("ctl").state, AppState::kFenced);
  ASSERT_OK(rt_->Stop("ctl"));
  AppStatus st = StatusOf("ctl");
  EXPECT_EQ(st.state, AppState::kStopped);
  EXPECT_EQ(st.message, "stopped on request");
  EXPECT_EQ(CountProcesses("sleep " + marker_), 0);
  // And List() shows it like any app.
  auto all = rt_->List();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].state, AppState::kStopped);
}

INSTANTIATE_TEST_SUITE_P(Backends, Fencing, ::testing::Values("process", "runc"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace hc::runtime::testing
