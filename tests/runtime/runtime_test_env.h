// Test harness for the runtime: a Runtime over a temporary state directory,
// with its own cgroup parent, for each backend this machine can run.
#pragma once

#include <gtest/gtest.h>
#include <stdint.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "runtime/runtime.h"

namespace hc::runtime::testing {

// "process" always; "runc" when root, runc is installed and cgroups exist.
// Each returned name comes with a reason when a backend is unavailable.
std::vector<std::string> BackendsToTest();
std::string WhyBackendUnavailable(const std::string& backend);  // "" when available

struct TestRuntime {
  std::unique_ptr<Runtime> rt;
  std::string dir;  // temporary; removed with the TestRuntime
  std::string backend;
  std::string cgroup_parent;  // removed with the TestRuntime
  std::string fence_file;     // <dir>/fence when made with_fence, else ""
  // Makes <dir>/volumes/<name> owned by the app's uid when running as root.
  std::string MakeVolume(const std::string& app_name);
  ~TestRuntime();  // stops every app still running, removes dir
};

// with_fence: RuntimeConfig::fence_file = <dir>/fence (not created).
std::unique_ptr<TestRuntime> MakeTestRuntime(const std::string& backend, bool with_fence = false);

// A test parameterized by backend name: skips (saying why) when the backend
// cannot run here, else provides a fresh runtime.
class BackendTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why = WhyBackendUnavailable(GetParam());
    if (!why.empty()) GTEST_SKIP() << "skipped: " << why;
    env_ = MakeTestRuntime(GetParam());
    rt_ = env_->rt.get();
  }
  std::unique_ptr<TestRuntime> env_;
  Runtime* rt_ = nullptr;
};

// hc-shim for tests: $HC_TEST_SHIM (a copy an unprivileged test user can
// run), else the one from the build tree.
std::string TestShimPath();

// A TCP port on 127.0.0.1 that was free a moment ago.
uint16_t FreePort();

// Processes on this host (not zombies) whose command line contains `marker`.
int CountProcesses(const std::string& marker);

// Polls cond every 5 ms until it holds or timeout passes; its last answer.
template <typename F>
bool WaitFor(F cond, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return cond();
}

}  // namespace hc::runtime::testing
