// The bind filter against the real kernel: a forked child in a filtered
// cgroup tries binds and reports the errno of each. Needs root, a unified
// cgroup hierarchy and cgroup BPF (skipped otherwise).
#include "runtime/bind_filter.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/fs.h"
#include "runtime/cgroup.h"

namespace hc::runtime {
namespace {

#define ASSERT_OK(expr)                                     \
  do {                                                      \
    ::hc::Status s_ = (expr);                               \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_.ToString(); \
  } while (0)

// Results of the binds a child tries: 0 or the errno of bind(2).
struct BindResults {
  int v4_own = -1;         // 127.0.0.1:P
  int v4_other = -1;       // 127.0.0.1:Q
  int v4_other_loop = -1;  // 127.0.0.2:P
  int v4_foreign = -1;     // 192.0.2.1:P
  int any_own = -1;        // 0.0.0.0:P, rewritten
  uint32_t any_bound_addr = 0;
  uint16_t any_bound_port = 0;
  int v4_zero = -1;    // 127.0.0.1:0
  int any_zero = -1;   // 0.0.0.0:0
  int udp_own = -1;    // UDP 127.0.0.1:P
  int udp_other = -1;  // UDP 127.0.0.1:Q
  int v6_own = -1;     // [::1]:P
  int v6_any = -1;     // [::]:P
  int v6_mapped = -1;  // [::ffff:127.0.0.1]:P
  int v6_other = -1;   // [::1]:Q
  int v6_zero = -1;    // [::1]:0
};

// Binds a fresh socket and closes it; 0 or errno. `bound` gets getsockname.
int TryBind(int family, int type, const char* addr, uint16_t port, sockaddr_in* bound = nullptr) {
  int fd = ::socket(family, type | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  sockaddr_storage ss{};
  socklen_t len;
  if (family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    ::inet_pton(AF_INET, addr, &sin->sin_addr);
    len = sizeof(sockaddr_in);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    ::inet_pton(AF_INET6, addr, &sin6->sin6_addr);
    len = sizeof(sockaddr_in6);
  }
  int err = ::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0 ? 0 : errno;
  if (err == 0 && bound != nullptr) {
    socklen_t blen = sizeof *bound;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(bound), &blen);
  }
  ::close(fd);
  return err;
}

BindResults TryAll(uint16_t p, uint16_t q) {
  BindResults r;
  r.v4_own = TryBind(AF_INET, SOCK_STREAM, "127.0.0.1", p);
  r.v4_other = TryBind(AF_INET, SOCK_STREAM, "127.0.0.1", q);
  r.v4_other_loop = TryBind(AF_INET, SOCK_STREAM, "127.0.0.2", p);
  r.v4_foreign = TryBind(AF_INET, SOCK_STREAM, "192.0.2.1", p);
  sockaddr_in bound{};
  r.any_own = TryBind(AF_INET, SOCK_STREAM, "0.0.0.0", p, &bound);
  r.any_bound_addr = bound.sin_addr.s_addr;
  r.any_bound_port = ntohs(bound.sin_port);
  r.v4_zero = TryBind(AF_INET, SOCK_STREAM, "127.0.0.1", 0);
  r.any_zero = TryBind(AF_INET, SOCK_STREAM, "0.0.0.0", 0);
  r.udp_own = TryBind(AF_INET, SOCK_DGRAM, "127.0.0.1", p);
  r.udp_other = TryBind(AF_INET, SOCK_DGRAM, "127.0.0.1", q);
  r.v6_own = TryBind(AF_INET6, SOCK_STREAM, "::1", p);
  r.v6_any = TryBind(AF_INET6, SOCK_STREAM, "::", p);
  r.v6_mapped = TryBind(AF_INET6, SOCK_STREAM, "::ffff:127.0.0.1", p);
  r.v6_other = TryBind(AF_INET6, SOCK_STREAM, "::1", q);
  r.v6_zero = TryBind(AF_INET6, SOCK_STREAM, "::1", 0);
  return r;
}

// Two distinct ports nobody uses right now.
std::pair<uint16_t, uint16_t> FreePorts() {
  int a = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int b = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  uint16_t ports[2];
  int fds[2] = {a, b};
  for (int i = 0; i < 2; ++i) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    HC_CHECK(::bind(fds[i], reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0, "bind port 0");
    socklen_t len = sizeof sin;
    ::getsockname(fds[i], reinterpret_cast<sockaddr*>(&sin), &len);
    ports[i] = ntohs(sin.sin_port);
  }
  ::close(a);
  ::close(b);
  return {ports[0], ports[1]};
}

bool HaveIpv6Loopback() {
  return TryBind(AF_INET6, SOCK_STREAM, "::1", 0) == 0;
}

class BindFilterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mode_ = DetectCgroupMode();
    if (::geteuid() != 0 || mode_ == CgroupMode::kNone) {
      GTEST_SKIP() << "skipped: needs root and cgroups";
    }
    if (!BindFilterSupported()) {
      GTEST_SKIP() << "skipped: no unified cgroup hierarchy or cgroup BPF refused";
    }
    base_ = "hc-test-" + std::to_string(::getpid());
    std::tie(p_, q_) = FreePorts();
  }

  void TearDown() override {
    if (child_ > 0) {
      ::kill(child_, SIGKILL);
      ::waitpid(child_, nullptr, 0);
    }
    if (base_.empty()) return;
    Cgroup all(mode_, base_);
    Status killed = all.KillAll();
    EXPECT_TRUE(killed.ok()) << killed.ToString();
    Status removed = all.Remove();
    EXPECT_TRUE(removed.ok()) << removed.ToString();
  }

  Cgroup Group(const std::string& name) { return Cgroup(mode_, base_ + "/" + name); }

  // Forks a child, moves it into `g` (every hierarchy), lets it try the binds
  // and returns what it saw.
  BindResults RunChildIn(Cgroup& g, uint16_t p, uint16_t q) {
    int go[2], report[2];
    HC_CHECK(::pipe(go) == 0 && ::pipe(report) == 0, "pipe");
    child_ = ::fork();
    HC_CHECK(child_ >= 0, "fork");
    if (child_ == 0) {
      char c;
      if (::read(go[0], &c, 1) != 1) ::_exit(99);
      // Sockets belong to the cgroup of their creator at creation time, so
      // every socket is made only now, inside the group.
      BindResults r = TryAll(p, q);
      ::_exit(::write(report[1], &r, sizeof r) == sizeof r ? 0 : 98);
    }
    ::close(go[0]);
    ::close(report[1]);
    UniqueFd go_w(go[1]), report_r(report[0]);
    BindResults r;
    Status added = g.AddProcess(child_);
    EXPECT_TRUE(added.ok()) << added.ToString();
    if (!added.ok()) return r;
    EXPECT_EQ(::write(go_w.get(), "g", 1), 1);
    pollfd pfd{report_r.get(), POLLIN, 0};
    EXPECT_EQ(::poll(&pfd, 1, 10000), 1);
    EXPECT_EQ(::read(report_r.get(), &r, sizeof r), static_cast<ssize_t>(sizeof r));
    int status = 0;
    ::waitpid(child_, &status, 0);
    child_ = -1;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    return r;
  }

  CgroupMode mode_ = CgroupMode::kNone;
  std::string base_;
  uint16_t p_ = 0, q_ = 0;
  pid_t child_ = -1;
};

TEST_F(BindFilterTest, AppBindsOnlyItsPortOnLoopback) {
  Cgroup g = Group("bind");
  ASSERT_OK(g.Create(nullptr));
  ASSERT_OK(AttachBindFilter(g.UnifiedPath(), p_));
  BindResults r = RunChildIn(g, p_, q_);

  EXPECT_EQ(r.v4_own, 0);
  EXPECT_EQ(r.v4_other, EPERM);
  EXPECT_EQ(r.v4_other_loop, 0) << "all of 127/8 is loopback";
  EXPECT_EQ(r.v4_foreign, EPERM);
  EXPECT_EQ(r.any_own, 0);
  EXPECT_EQ(r.any_bound_addr, htonl(INADDR_LOOPBACK)) << "0.0.0.0 is rewritten to 127.0.0.1";
  EXPECT_EQ(r.any_bound_port, p_);
  EXPECT_EQ(r.v4_zero, 0);
  EXPECT_EQ(r.any_zero, 0);
  EXPECT_EQ(r.udp_own, 0);
  EXPECT_EQ(r.udp_other, EPERM);
  if (HaveIpv6Loopback()) {
    EXPECT_EQ(r.v6_own, 0);
    EXPECT_EQ(r.v6_any, EPERM);
    EXPECT_EQ(r.v6_mapped, EPERM);
    EXPECT_EQ(r.v6_other, EPERM);
    EXPECT_EQ(r.v6_zero, 0);
  }

  // Outside the group nothing changes: never EPERM. (EADDRINUSE is
  // possible: tests running in parallel may hold the port on 127.x.)
  EXPECT_NE(TryBind(AF_INET, SOCK_STREAM, "127.0.0.1", q_), EPERM);
  EXPECT_NE(TryBind(AF_INET, SOCK_STREAM, "0.0.0.0", q_), EPERM);
}

TEST_F(BindFilterTest, AttachingAgainReplacesTheProgram) {
  Cgroup g = Group("replace");
  ASSERT_OK(g.Create(nullptr));
  ASSERT_OK(AttachBindFilter(g.UnifiedPath(), p_));
  ASSERT_OK(AttachBindFilter(g.UnifiedPath(), q_));

  BindResults r = RunChildIn(g, q_, p_);  // own port is now q_
  EXPECT_EQ(r.v4_own, 0);
  EXPECT_EQ(r.v4_other, EPERM);

  UniqueFd dir(::open(g.UnifiedPath().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(dir.valid());
  for (bpf_attach_type type : {BPF_CGROUP_INET4_BIND, BPF_CGROUP_INET6_BIND}) {
    uint32_t ids[8];
    bpf_attr q;
    std::memset(&q, 0, sizeof q);
    q.query.target_fd = static_cast<uint32_t>(dir.get());
    q.query.attach_type = type;
    q.query.prog_ids = reinterpret_cast<uintptr_t>(ids);
    q.query.prog_cnt = 8;
    ASSERT_EQ(::syscall(SYS_bpf, BPF_PROG_QUERY, &q, sizeof q), 0) << std::strerror(errno);
    EXPECT_EQ(q.query.prog_cnt, 1u) << "type " << type;
    EXPECT_EQ(q.query.attach_flags, 0u);
  }
}

TEST_F(BindFilterTest, ReplacesProgramsAttachedByOthersWithOtherFlags) {
  Cgroup g = Group("foreign");
  ASSERT_OK(g.Create(nullptr));
  // Someone else's allow-everything program, attached with BPF_F_ALLOW_MULTI:
  // the kernel refuses a flags-0 attach on top of it.
  bpf_insn allow[2] = {};
  allow[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
  allow[0].imm = 1;
  allow[1].code = BPF_JMP | BPF_EXIT;
  bpf_attr load;
  std::memset(&load, 0, sizeof load);
  load.prog_type = BPF_PROG_TYPE_CGROUP_SOCK_ADDR;
  load.expected_attach_type = BPF_CGROUP_INET4_BIND;
  load.insns = reinterpret_cast<uintptr_t>(allow);
  load.insn_cnt = 2;
  load.license = reinterpret_cast<uintptr_t>("GPL");
  UniqueFd prog(static_cast<int>(::syscall(SYS_bpf, BPF_PROG_LOAD, &load, sizeof load)));
  ASSERT_TRUE(prog.valid()) << std::strerror(errno);
  UniqueFd dir(::open(g.UnifiedPath().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(dir.valid());
  bpf_attr attach;
  std::memset(&attach, 0, sizeof attach);
  attach.target_fd = static_cast<uint32_t>(dir.get());
  attach.attach_bpf_fd = static_cast<uint32_t>(prog.get());
  attach.attach_type = BPF_CGROUP_INET4_BIND;
  attach.attach_flags = BPF_F_ALLOW_MULTI;
  ASSERT_EQ(::syscall(SYS_bpf, BPF_PROG_ATTACH, &attach, sizeof attach), 0) << std::strerror(errno);
  attach.attach_flags = 0;
  ASSERT_NE(::syscall(SYS_bpf, BPF_PROG_ATTACH, &attach, sizeof attach), 0);
  ASSERT_EQ(errno, EPERM) << "the scenario this test is about";

  ASSERT_OK(AttachBindFilter(g.UnifiedPath(), p_));
  BindResults r = RunChildIn(g, p_, q_);
  EXPECT_EQ(r.v4_own, 0);
  EXPECT_EQ(r.v4_other, EPERM);
}

TEST_F(BindFilterTest, SubgroupsInheritTheFilter) {
  Cgroup g = Group("inherit");
  Cgroup sub = Group("inherit/sub");
  ASSERT_OK(g.Create(nullptr));
  ASSERT_OK(sub.Create(nullptr));
  ASSERT_OK(AttachBindFilter(g.UnifiedPath(), p_));
  BindResults r = RunChildIn(sub, p_, q_);
  EXPECT_EQ(r.v4_own, 0);
  EXPECT_EQ(r.v4_other, EPERM);
}

TEST_F(BindFilterTest, RefusesPortZeroAndMissingGroup) {
  Cgroup g = Group("args");
  ASSERT_OK(g.CreateUnified());
  EXPECT_EQ(AttachBindFilter(g.UnifiedPath(), 0).code(), Code::kInvalidArgument);
  EXPECT_EQ(AttachBindFilter(Group("missing").UnifiedPath(), p_).code(), Code::kNotFound);
}

}  // namespace
}  // namespace hc::runtime
