// Cgroup against the real kernel: needs root and a mounted cgroup hierarchy
// (skipped otherwise). Groups live under "hc-test-<pid>/" and are killed and
// removed after every test, pass or fail.
#include "runtime/cgroup.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include "common/fs.h"

namespace hc::runtime {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

#define ASSERT_OK(expr)                                     \
  do {                                                      \
    ::hc::Status s_ = (expr);                               \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_.ToString(); \
  } while (0)

// A forked child that blocks until Go(), so the parent can move it into a
// group before it does anything; then runs `body(report_fd)` and exits with
// its result. Killed and reaped on destruction if still around.
class Child {
 public:
  explicit Child(std::function<int(int report_fd)> body) {
    int go[2], report[2];
    HC_CHECK(::pipe(go) == 0 && ::pipe(report) == 0, "pipe");
    pid_ = ::fork();
    HC_CHECK(pid_ >= 0, "fork");
    if (pid_ == 0) {
      ::close(go[1]);
      ::close(report[0]);
      char c;
      if (::read(go[0], &c, 1) != 1) ::_exit(99);
      ::_exit(body(report[1]));
    }
    ::close(go[0]);
    ::close(report[1]);
    go_ = UniqueFd(go[1]);
    report_ = UniqueFd(report[0]);
  }
  Child(const Child&) = delete;
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      Wait();
    }
  }

  pid_t pid() const { return pid_; }
  void Go() { HC_CHECK(::write(go_.get(), "g", 1) == 1, "write go"); }

  // Reads exactly `n` bytes the child reported; false on EOF or timeout.
  bool Read(void* buf, size_t n, int timeout_ms = 10000) {
    char* p = static_cast<char*>(buf);
    while (n > 0) {
      pollfd pfd{report_.get(), POLLIN, 0};
      if (::poll(&pfd, 1, timeout_ms) != 1) return false;
      ssize_t r = ::read(report_.get(), p, n);
      if (r <= 0) return false;
      p += r;
      n -= static_cast<size_t>(r);
    }
    return true;
  }

  // Wait status of the child.
  int Wait() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
  UniqueFd go_, report_;
};

[[noreturn]] void SleepForever() {
  for (;;) ::pause();
}

// Mount point of a v1 controller, or of the cgroup2 hierarchy for "".
std::string MountOf(const std::string& controller) {
  Result<std::string> mounts = ReadFileToString("/proc/self/mounts");
  if (!mounts.ok()) return "";
  std::istringstream in(*mounts);
  std::string dev, point, type, opts, rest;
  while (in >> dev >> point >> type >> opts) {
    std::getline(in, rest);
    if (controller.empty() && type == "cgroup2") return point;
    if (controller.empty() || type != "cgroup") continue;
    std::istringstream o(opts);
    for (std::string opt; std::getline(o, opt, ',');) {
      if (opt == controller) return point;
    }
  }
  return "";
}

std::string Read(const std::string& path) {
  Result<std::string> s = ReadFileToString(path);
  if (!s.ok()) return "<" + s.status().ToString() + ">";
  std::string v = *s;
  while (!v.empty() && v.back() == '\n') v.pop_back();
  return v;
}

bool Contains(const std::vector<pid_t>& v, pid_t p) {
  return std::find(v.begin(), v.end(), p) != v.end();
}

template <typename Pred>
bool WaitFor(Pred pred, int timeout_ms = 5000) {
  auto deadline = Clock::now() + milliseconds(timeout_ms);
  while (!pred()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return true;
}

// Runs every test in each layout this host can stand in for: a hybrid host
// also serves as a v1 host (ignoring the unified hierarchy) and as a v2 host
// without controllers (freezer, kill, membership; limits are skipped).
class CgroupTest : public ::testing::TestWithParam<CgroupMode> {
 protected:
  void SetUp() override {
    CgroupMode host = DetectCgroupMode();
    if (::geteuid() != 0 || host == CgroupMode::kNone) {
      GTEST_SKIP() << "skipped: needs root and cgroups";
    }
    mode_ = GetParam();
    if (mode_ != host && host != CgroupMode::kHybrid) {
      GTEST_SKIP() << "skipped: this host has " << CgroupModeName(host) << " cgroups";
    }
    if (mode_ == CgroupMode::kV2) {
      std::string controllers = Read(JoinPath(MountOf(""), "cgroup.controllers"));
      v2_controllers_ = controllers.find("memory") != std::string::npos &&
                        controllers.find("pids") != std::string::npos &&
                        controllers.find("cpu") != std::string::npos;
    }
    base_ = "hc-test-" + std::to_string(::getpid());
  }

  void TearDown() override {
    if (base_.empty()) return;
    Cgroup all(mode_, base_);
    Status killed = all.KillAll();
    EXPECT_TRUE(killed.ok()) << killed.ToString();
    children_.clear();
    Status removed = all.Remove();
    EXPECT_TRUE(removed.ok()) << removed.ToString();
  }

  // True when limits can be set in this mode; tests that need them skip otherwise.
  bool HasLimits() const { return mode_ != CgroupMode::kV2 || v2_controllers_; }

  Cgroup Group(const std::string& name) { return Cgroup(mode_, base_ + "/" + name); }

  Child& Spawn(std::function<int(int)> body) {
    children_.push_back(std::make_unique<Child>(std::move(body)));
    return *children_.back();
  }

  bool HasV1() const { return mode_ == CgroupMode::kV1 || mode_ == CgroupMode::kHybrid; }
  // Directory of `g` in the hierarchy of v1 `controller` ("" = unified).
  std::string DirOf(const Cgroup& g, const std::string& controller) const {
    return JoinPath(MountOf(controller), g.rel_path());
  }

  CgroupMode mode_ = CgroupMode::kNone;
  bool v2_controllers_ = false;
  std::string base_;
  std::vector<std::unique_ptr<Child>> children_;
};

TEST_P(CgroupTest, UnifiedPathFollowsMountsAndBadPathsAreRefused) {
  EXPECT_STRNE(CgroupModeName(mode_), "unknown");
  Cgroup g = Group("mode");
  if (mode_ == CgroupMode::kV1) {
    EXPECT_EQ(g.UnifiedPath(), "");
  } else {
    EXPECT_EQ(g.UnifiedPath(), JoinPath(MountOf(""), g.rel_path()));
  }
  for (const char* bad : {"", "/abs", "a/../b", "a//b", "trailing/", "."}) {
    Status s = Cgroup(mode_, bad).Create(nullptr);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << bad << ": " << s.ToString();
  }
}

TEST_P(CgroupTest, CreateWritesLimitsAndRewritesThemOnReuse) {
  if (!HasLimits()) GTEST_SKIP() << "skipped: the unified hierarchy has no controllers here";
  Cgroup g = Group("limits");
  struct Case {
    Limits limits;
    const char* v1_quota;
    const char* v2_cpu_max;
  };
  // Raising then lowering exercises the memory/memsw ordering of v1.
  const Case cases[] = {
      {{64ull << 20, 500, 100}, "50000", "50000 100000"},
      {{512ull << 20, 2000, 1000}, "200000", "200000 100000"},
      {{32ull << 20, 100, 10}, "10000", "10000 100000"},
      {{0, 0, 0}, "-1", "max 100000"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.limits.memory_bytes);
    ASSERT_OK(g.Create(&c.limits));
    const Limits& l = c.limits;
    std::string pids_max = l.pids ? std::to_string(l.pids) : "max";
    if (HasV1()) {
      std::string mem = DirOf(g, "memory");
      if (l.memory_bytes) {
        EXPECT_EQ(Read(mem + "/memory.limit_in_bytes"), std::to_string(l.memory_bytes));
        if (PathExists(mem + "/memory.memsw.limit_in_bytes")) {
          EXPECT_EQ(Read(mem + "/memory.memsw.limit_in_bytes"), std::to_string(l.memory_bytes));
        }
      } else {
        EXPECT_GE(std::stoull(Read(mem + "/memory.limit_in_bytes")), 1ull << 62);
      }
      EXPECT_EQ(Read(DirOf(g, "cpu") + "/cpu.cfs_period_us"), "100000");
      EXPECT_EQ(Read(DirOf(g, "cpu") + "/cpu.cfs_quota_us"), c.v1_quota);
      EXPECT_EQ(Read(DirOf(g, "pids") + "/pids.max"), pids_max);
    } else {
      std::string d = g.UnifiedPath();
      EXPECT_EQ(Read(d + "/memory.max"), l.memory_bytes ? std::to_string(l.memory_bytes) : "max");
      if (PathExists(d + "/memory.swap.max")) {
        EXPECT_EQ(Read(d + "/memory.swap.max"), "0");
      }
      EXPECT_EQ(Read(d + "/cpu.max"), c.v2_cpu_max);
      EXPECT_EQ(Read(d + "/pids.max"), pids_max);
    }
    Result<CgroupUsage> u = g.Usage();
    ASSERT_TRUE(u.ok()) << u.status().ToString();
    EXPECT_EQ(u->memory_limit_bytes, l.memory_bytes);
    EXPECT_EQ(u->processes, 0u);
  }
}

TEST_P(CgroupTest, AddProcessMovesChildIntoEveryHierarchy) {
  Cgroup g = Group("add");
  ASSERT_OK(g.Create(nullptr));
  Child& child = Spawn([](int) -> int { SleepForever(); });
  ASSERT_OK(g.AddProcess(child.pid()));

  Result<std::vector<pid_t>> pids = g.Pids();
  ASSERT_TRUE(pids.ok()) << pids.status().ToString();
  EXPECT_EQ(*pids, std::vector<pid_t>{child.pid()});

  // /proc/<pid>/cgroup: "4:memory:/hc-test-1/add", "0::/hc-test-1/add".
  std::istringstream lines(Read("/proc/" + std::to_string(child.pid()) + "/cgroup"));
  int checked = 0;
  for (std::string line; std::getline(lines, line);) {
    size_t a = line.find(':'), b = line.find(':', a + 1);
    std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    bool ours = controllers.empty() && mode_ != CgroupMode::kV1;
    for (const char* c : {"memory", "cpu", "cpuacct", "pids", "freezer"}) {
      if (!HasV1()) break;
      std::istringstream cs(controllers);
      for (std::string one; std::getline(cs, one, ',');) ours = ours || one == c;
    }
    if (!ours) continue;
    EXPECT_EQ(path, "/" + g.rel_path()) << line;
    ++checked;
  }
  EXPECT_GE(checked, 1);

  EXPECT_EQ(g.AddProcess(0x3fffffff).code(), Code::kNotFound);
  EXPECT_EQ(Group("missing").AddProcess(child.pid()).code(), Code::kNotFound);
}

TEST_P(CgroupTest, UsageReportsProcessesMemoryAndCpu) {
  if (!HasLimits()) GTEST_SKIP() << "skipped: the unified hierarchy has no controllers here";
  Cgroup g = Group("usage");
  Limits limits{256ull << 20, 1000, 64};
  ASSERT_OK(g.Create(&limits));
  Child& child = Spawn([](int report) -> int {
    // Charged to the group: it was moved before touching anything.
    constexpr size_t kBytes = 16 << 20;
    auto* p = static_cast<volatile char*>(
        ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    for (size_t i = 0; i < kBytes; i += 4096) p[i] = 1;
    timespec t{};
    do {
      ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    } while (t.tv_sec == 0 && t.tv_nsec < 50'000'000);
    (void)!::write(report, "r", 1);
    SleepForever();
  });
  ASSERT_OK(g.AddProcess(child.pid()));
  child.Go();
  char c;
  ASSERT_TRUE(child.Read(&c, 1));

  Result<CgroupUsage> u = g.Usage();
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->processes, 1u);
  EXPECT_GE(u->memory_bytes, 8u << 20);
  EXPECT_GE(u->cpu_ns, 20'000'000u);
  EXPECT_EQ(u->memory_limit_bytes, 256ull << 20);
  if (u->memory_peak_bytes != 0) {
    EXPECT_GE(u->memory_peak_bytes, u->memory_bytes);
  }
  EXPECT_EQ(u->oom_kills, 0u);
}

TEST_P(CgroupTest, FreezeStopsProcessesAndThawResumesThem) {
  Cgroup g = Group("freeze");
  ASSERT_OK(g.Create(nullptr));
  auto* counter = static_cast<std::atomic<uint64_t>*>(::mmap(nullptr, sizeof(std::atomic<uint64_t>),
                                                             PROT_READ | PROT_WRITE,
                                                             MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(counter, MAP_FAILED);
  new (counter) std::atomic<uint64_t>(0);
  Child& child = Spawn([counter](int) -> int {
    for (;;) counter->fetch_add(1, std::memory_order_relaxed);
  });
  ASSERT_OK(g.AddProcess(child.pid()));
  child.Go();
  ASSERT_TRUE(WaitFor([&] { return counter->load() > 0; }));

  ASSERT_OK(g.Freeze());
  Result<bool> frozen = g.IsFrozen();
  ASSERT_TRUE(frozen.ok()) << frozen.status().ToString();
  EXPECT_TRUE(*frozen);
  uint64_t at_freeze = counter->load();
  std::this_thread::sleep_for(milliseconds(100));  // proving a negative takes a wait
  EXPECT_EQ(counter->load(), at_freeze);

  ASSERT_OK(g.Thaw());
  frozen = g.IsFrozen();
  ASSERT_TRUE(frozen.ok());
  EXPECT_FALSE(*frozen);
  EXPECT_TRUE(WaitFor([&] { return counter->load() > at_freeze; }));
  ::munmap(counter, sizeof(std::atomic<uint64_t>));
}

TEST_P(CgroupTest, KillAllKillsFrozenTreeIncludingSetsidGrandchild) {
  Cgroup g = Group("kill");
  ASSERT_OK(g.Create(nullptr));
  Child& child = Spawn([](int report) -> int {
    pid_t a = ::fork();
    if (a == 0) {
      ::setsid();
      if (::fork() == 0) {
        pid_t me = ::getpid();
        (void)!::write(report, &me, sizeof me);
        SleepForever();
      }
      ::_exit(0);
    }
    ::waitpid(a, nullptr, 0);
    SleepForever();
  });
  ASSERT_OK(g.AddProcess(child.pid()));
  child.Go();
  pid_t grandchild = 0;
  ASSERT_TRUE(child.Read(&grandchild, sizeof grandchild));
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, grandchild, 0)));
  ASSERT_TRUE(pidfd.valid()) << std::strerror(errno);

  Result<std::vector<pid_t>> pids = g.Pids();
  ASSERT_TRUE(pids.ok());
  EXPECT_TRUE(Contains(*pids, child.pid()));
  EXPECT_TRUE(Contains(*pids, grandchild));

  ASSERT_OK(g.Freeze());  // frozen tasks must be thawed to die
  ASSERT_OK(g.KillAll());
  pids = g.Pids();
  ASSERT_TRUE(pids.ok());
  EXPECT_TRUE(pids->empty());
  int status = child.Wait();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  pollfd pfd{pidfd.get(), POLLIN, 0};
  // The orphan's new parent may or may not reap it; the pidfd is readable either way.
  EXPECT_EQ(::poll(&pfd, 1, 5000), 1) << "grandchild " << grandchild << " still alive";

  ASSERT_OK(Group("never-created").KillAll());
}

TEST_P(CgroupTest, MemoryLimitOomKillsProcessAndCountsIt) {
  if (!HasLimits()) GTEST_SKIP() << "skipped: the unified hierarchy has no controllers here";
  Cgroup g = Group("oom");
  Limits limits{32ull << 20, 0, 0};
  ASSERT_OK(g.Create(&limits));
  Child& child = Spawn([](int) -> int {
    constexpr size_t kBytes = 200 << 20;
    auto* p = static_cast<volatile char*>(
        ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (p == MAP_FAILED) return 3;
    for (size_t i = 0; i < kBytes; i += 4096) p[i] = 1;
    return 0;  // survived: the limit did not hold
  });
  ASSERT_OK(g.AddProcess(child.pid()));
  child.Go();
  int status = child.Wait();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "exit status " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1);

  Result<CgroupUsage> u = g.Usage();
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_GE(u->oom_kills, 1u);
  EXPECT_EQ(u->processes, 0u);
  if (u->memory_peak_bytes != 0) {
    EXPECT_LE(u->memory_peak_bytes, (32ull << 20) + (1 << 20));
  }
}

TEST_P(CgroupTest, RemoveRefusesPopulatedGroupThenRemovesSubgroupsToo) {
  Cgroup g = Group("rm");
  Cgroup sub = Group("rm/sub");
  ASSERT_OK(g.Create(nullptr));
  ASSERT_OK(sub.Create(nullptr));
  Child& child = Spawn([](int) -> int { SleepForever(); });
  ASSERT_OK(sub.AddProcess(child.pid()));

  EXPECT_EQ(g.Remove().code(), Code::kConflict);
  ASSERT_OK(g.KillAll());
  child.Wait();
  ASSERT_OK(g.Remove());

  EXPECT_EQ(g.Pids().status().code(), Code::kNotFound);
  if (mode_ != CgroupMode::kV1) {
    EXPECT_FALSE(PathExists(g.UnifiedPath()));
  }
  if (HasV1()) {
    for (const char* c : {"memory", "cpu", "cpuacct", "pids", "freezer"}) {
      if (!MountOf(c).empty()) {
        EXPECT_FALSE(PathExists(DirOf(g, c))) << c;
      }
    }
  }
  // The parent stays; removing again is not an error.
  EXPECT_TRUE(PathExists(mode_ == CgroupMode::kV1 ? JoinPath(MountOf("memory"), base_)
                                                  : JoinPath(MountOf(""), base_)));
  ASSERT_OK(g.Remove());
}

TEST_P(CgroupTest, CreateUnifiedCreatesOnlyTheUnifiedGroup) {
  Cgroup g = Group("unified");
  ASSERT_OK(g.CreateUnified());
  if (mode_ == CgroupMode::kV1) {
    EXPECT_EQ(g.Pids().status().code(), Code::kNotFound);
    return;
  }
  EXPECT_TRUE(PathExists(g.UnifiedPath()));
  if (mode_ == CgroupMode::kHybrid) {
    EXPECT_FALSE(PathExists(DirOf(g, "memory")));
  }
  Result<std::vector<pid_t>> pids = g.Pids();
  ASSERT_TRUE(pids.ok()) << pids.status().ToString();
  EXPECT_TRUE(pids->empty());
}

INSTANTIATE_TEST_SUITE_P(Cgroup, CgroupTest,
                         ::testing::Values(CgroupMode::kV1, CgroupMode::kHybrid, CgroupMode::kV2),
                         [](const ::testing::TestParamInfo<CgroupMode>& info) {
                           return std::string(CgroupModeName(info.param));
                         });

}  // namespace
}  // namespace hc::runtime
