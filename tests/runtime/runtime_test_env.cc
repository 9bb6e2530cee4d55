#include "runtime_test_env.h"

#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>

#include "common/fs.h"
#include "runtime/cgroup.h"

namespace hc::runtime::testing {

std::vector<std::string> BackendsToTest() {
  return {"process", "runc"};
}

std::string WhyBackendUnavailable(const std::string& backend) {
  if (backend == "process") return "";
  if (::geteuid() != 0) return "the runc backend needs root";
  if (DetectCgroupMode() == CgroupMode::kNone) return "no cgroup filesystem mounted";
  if (std::system("command -v runc >/dev/null 2>&1") != 0) return "runc is not installed";
  return "";
}

std::string TestRuntime::MakeVolume(const std::string& app_name) {
  std::string v = JoinPath(JoinPath(dir, "volumes"), app_name);
  HC_CHECK(MakeDirs(v, 0755).ok(), "making a test volume");
  ::chmod(v.c_str(), 0755);
  if (::geteuid() == 0) {
    uint32_t uid = AppUid(app_name);
    HC_CHECK(::chown(v.c_str(), uid, uid) == 0, "giving the test volume to the app");
  }
  return v;
}

TestRuntime::~TestRuntime() {
  if (rt) {
    auto apps = rt->List();
    if (apps.ok()) {
      for (const auto& a : *apps) (void)rt->Stop(a.name);
    }
  }
  rt.reset();
  if (!cgroup_parent.empty()) (void)Cgroup(DetectCgroupMode(), cgroup_parent).Remove();
  (void)RemoveTree(dir);
}

std::unique_ptr<TestRuntime> MakeTestRuntime(const std::string& backend, bool with_fence) {
  static std::atomic<int> counter{0};
  auto t = std::make_unique<TestRuntime>();
  char tmpl[] = "/tmp/hc-rt-test-XXXXXX";
  HC_CHECK(::mkdtemp(tmpl) != nullptr, "making a temp dir");
  t->dir = tmpl;
  // Apps of the process backend run as their own uid and must reach their volume.
  ::chmod(t->dir.c_str(), 0755);
  t->backend = backend;
  RuntimeConfig c;
  c.backend = backend;
  c.state_dir = JoinPath(t->dir, "state");
  c.shim_path = TestShimPath();
  c.cgroup_parent = "hc-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  t->cgroup_parent = c.cgroup_parent;
  if (with_fence) t->fence_file = c.fence_file = JoinPath(t->dir, "fence");
  auto rt = OpenRuntime(c);
  if (!rt.ok())
    ::hc::CheckFailed(__FILE__, __LINE__, "OpenRuntime", rt.status().ToString().c_str());
  t->rt = std::move(*rt);
  return t;
}

std::string TestShimPath() {
  const char* shim = std::getenv("HC_TEST_SHIM");
  return shim && *shim ? shim : HC_SHIM_PATH;
}

uint16_t FreePort() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

int CountProcesses(const std::string& marker) {
  int n = 0;
  DIR* d = ::opendir("/proc");
  while (struct dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    auto cmd = ReadFileToString(std::string("/proc/") + e->d_name + "/cmdline");
    if (!cmd.ok()) continue;
    auto st = ReadFileToString(std::string("/proc/") + e->d_name + "/stat");
    if (st.ok() && st->find(") Z") != std::string::npos) continue;
    for (char& c : *cmd) {
      if (c == '\0') c = ' ';
    }
    if (cmd->find(marker) != std::string::npos) ++n;
  }
  ::closedir(d);
  return n;
}

}  // namespace hc::runtime::testing
