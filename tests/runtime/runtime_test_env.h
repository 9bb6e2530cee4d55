// Test harness for the runtime: a Runtime over a temporary state directory,
// with its own cgroup parent, for each backend this machine can run.
#pragma once

#include <gtest/gtest.h>
#include <stdint.h>

#include <memory>
#include <string>
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
  // Makes <dir>/volumes/<name> owned by the app's uid when running as root.
  std::string MakeVolume(const std::string& app_name);
  ~TestRuntime();  // stops every app still running, removes dir
};

std::unique_ptr<TestRuntime> MakeTestRuntime(const std::string& backend);

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

}  // namespace hc::runtime::testing
