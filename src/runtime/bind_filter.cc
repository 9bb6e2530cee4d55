#include "runtime/bind_filter.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <vector>

#include "common/fs.h"
#include "runtime/cgroup.h"

// The program compares fields of struct bpf_sock_addr (network byte order)
// with constants computed here; that only works on a little-endian host.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "bind_filter assumes little-endian");

namespace hc::runtime {
namespace {

constexpr int kRegCtx = 1;   // r1: the context on entry
constexpr int kRegRet = 0;   // r0: the verdict
constexpr int kRegSave = 6;  // r6: callee-saved copy of the context
constexpr int kRegPort = 2;
constexpr int kRegAddr = 3;
constexpr int kRegTmp = 4;

// Verdicts of a BPF_CGROUP_INET*_BIND program.
constexpr int32_t kDeny = 0;  // bind(2) fails with EPERM
constexpr int32_t kAllow = 1;

bpf_insn Insn(uint8_t code, int dst, int src, int16_t off, int32_t imm) {
  bpf_insn i{};
  i.code = code;
  i.dst_reg = static_cast<uint8_t>(dst);
  i.src_reg = static_cast<uint8_t>(src);
  i.off = off;
  i.imm = imm;
  return i;
}

int16_t CtxOffset(size_t off) {
  return static_cast<int16_t>(off);
}

// A straight-line program with forward jumps to two exits, "allow" and "deny".
class Assembler {
 public:
  enum Label { kAllowLabel, kDenyLabel, kCustomLabel };

  void MovReg(int dst, int src) { Emit(Insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0)); }
  void MovImm(int dst, int32_t imm) { Emit(Insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)); }
  void AndImm(int dst, int32_t imm) { Emit(Insn(BPF_ALU64 | BPF_AND | BPF_K, dst, 0, 0, imm)); }
  void LoadCtx32(int dst, size_t off) {
    Emit(Insn(BPF_LDX | BPF_MEM | BPF_W, dst, kRegSave, CtxOffset(off), 0));
  }
  // BPF_ST (immediate) into the context is refused by the verifier; BPF_STX is not.
  void StoreCtx32(size_t off, int src) {
    Emit(Insn(BPF_STX | BPF_MEM | BPF_W, kRegSave, src, CtxOffset(off), 0));
  }
  void JumpIfEq(int reg, int32_t imm, int label) { Jump(BPF_JEQ, reg, imm, label); }
  void JumpIfNe(int reg, int32_t imm, int label) { Jump(BPF_JNE, reg, imm, label); }
  void Goto(int label) { Jump(BPF_JA, 0, 0, label); }
  void Bind(int label) {
    if (static_cast<size_t>(label) >= labels_.size()) labels_.resize(label + 1, -1);
    labels_[label] = static_cast<int>(insns_.size());
  }

  // Appends both exits and resolves the jumps.
  std::vector<bpf_insn> Finish() {
    Bind(kAllowLabel);
    MovImm(kRegRet, kAllow);
    Emit(Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
    Bind(kDenyLabel);
    MovImm(kRegRet, kDeny);
    Emit(Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
    for (auto [at, label] : fixups_) {
      HC_CHECK(static_cast<size_t>(label) < labels_.size() && labels_[label] >= 0,
               "BPF jump to an unbound label " + std::to_string(label));
      insns_[at].off = static_cast<int16_t>(labels_.at(label) - (static_cast<int>(at) + 1));
    }
    return std::move(insns_);
  }

 private:
  void Emit(bpf_insn i) { insns_.push_back(i); }
  void Jump(uint8_t op, int reg, int32_t imm, int label) {
    fixups_.emplace_back(insns_.size(), label);
    Emit(Insn(BPF_JMP | op | BPF_K, reg, 0, 0, imm));
  }

  std::vector<bpf_insn> insns_;
  std::vector<int> labels_;
  std::vector<std::pair<size_t, int>> fixups_;
};

// Shared prologue: port 0 (client sockets, any address) passes untouched,
// any port but the app's is refused.
void EmitPortCheck(Assembler& a, uint16_t port) {
  a.MovReg(kRegSave, kRegCtx);
  a.LoadCtx32(kRegPort, offsetof(bpf_sock_addr, user_port));
  a.JumpIfEq(kRegPort, 0, Assembler::kAllowLabel);
  a.JumpIfNe(kRegPort, htons(port), Assembler::kDenyLabel);
}

std::vector<bpf_insn> Inet4Program(uint16_t port) {
  constexpr int kCheckLoopback = Assembler::kCustomLabel;
  Assembler a;
  EmitPortCheck(a, port);
  a.LoadCtx32(kRegAddr, offsetof(bpf_sock_addr, user_ip4));
  a.JumpIfNe(kRegAddr, 0, kCheckLoopback);
  // INADDR_ANY becomes 127.0.0.1: the app listens where the proxy connects.
  a.MovImm(kRegTmp, static_cast<int32_t>(htonl(INADDR_LOOPBACK)));
  a.StoreCtx32(offsetof(bpf_sock_addr, user_ip4), kRegTmp);
  a.Goto(Assembler::kAllowLabel);
  a.Bind(kCheckLoopback);
  // First octet is the lowest byte of the network-order word.
  a.AndImm(kRegAddr, 0xff);
  a.JumpIfNe(kRegAddr, 127, Assembler::kDenyLabel);
  return a.Finish();
}

std::vector<bpf_insn> Inet6Program(uint16_t port) {
  Assembler a;
  EmitPortCheck(a, port);
  for (int i = 0; i < 3; ++i) {
    a.LoadCtx32(kRegAddr, offsetof(bpf_sock_addr, user_ip6) + 4 * i);
    a.JumpIfNe(kRegAddr, 0, Assembler::kDenyLabel);
  }
  a.LoadCtx32(kRegAddr, offsetof(bpf_sock_addr, user_ip6) + 12);
  a.JumpIfNe(kRegAddr, static_cast<int32_t>(htonl(1)), Assembler::kDenyLabel);
  return a.Finish();
}

long Bpf(int cmd, bpf_attr* attr) {
  return ::syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

uint64_t Ptr(const void* p) {
  return reinterpret_cast<uintptr_t>(p);
}

const char* AttachName(bpf_attach_type type) {
  return type == BPF_CGROUP_INET4_BIND ? "inet4 bind" : "inet6 bind";
}

Result<UniqueFd> LoadProgram(const std::vector<bpf_insn>& insns, bpf_attach_type type) {
  static const char kLicense[] = "GPL";
  auto attempt = [&](char* log, uint32_t log_size) {
    bpf_attr attr;
    std::memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_CGROUP_SOCK_ADDR;
    attr.expected_attach_type = type;
    attr.insns = Ptr(insns.data());
    attr.insn_cnt = static_cast<uint32_t>(insns.size());
    attr.license = Ptr(kLicense);
    std::strncpy(attr.prog_name, type == BPF_CGROUP_INET4_BIND ? "hc_bind4" : "hc_bind6",
                 sizeof attr.prog_name - 1);
    if (log != nullptr) {
      attr.log_level = 1;
      attr.log_buf = Ptr(log);
      attr.log_size = log_size;
    }
    return static_cast<int>(Bpf(BPF_PROG_LOAD, &attr));
  };
  int fd = attempt(nullptr, 0);
  if (fd >= 0) return UniqueFd(fd);
  int err = errno;
  std::string what = std::string("load the ") + AttachName(type) + " BPF program";
  if (err == EPERM) {
    return PermissionDenied(what + ": not permitted (needs root or CAP_BPF + CAP_NET_ADMIN)");
  }
  // Load again with the verifier log, which says why it refused.
  std::vector<char> log(1 << 16);
  fd = attempt(log.data(), static_cast<uint32_t>(log.size()));
  if (fd >= 0) return UniqueFd(fd);  // a transient failure (e.g. ENOMEM) went away
  err = errno;
  log.back() = '\0';
  std::string text = log.data();
  while (!text.empty() && text.back() == '\n') text.pop_back();
  // EACCES here is the verifier's verdict, not a missing privilege.
  return Unavailable(what + ": " +
                     (err == EACCES ? "refused by the verifier" : std::strerror(err)) +
                     (text.empty() ? std::string() : "; verifier log:\n" + text));
}

// Detaches whatever is attached to `cgroup_fd` for `type` (someone else's
// programs, attached with other flags than ours).
Status DetachAll(int cgroup_fd, bpf_attach_type type, const std::string& dir) {
  uint32_t ids[64];
  bpf_attr q;
  std::memset(&q, 0, sizeof q);
  q.query.target_fd = static_cast<uint32_t>(cgroup_fd);
  q.query.attach_type = type;
  q.query.prog_ids = Ptr(ids);
  q.query.prog_cnt = 64;
  if (Bpf(BPF_PROG_QUERY, &q) != 0) return ErrnoStatus("query BPF programs of " + dir, errno);
  for (uint32_t i = 0; i < q.query.prog_cnt && i < 64; ++i) {
    bpf_attr g;
    std::memset(&g, 0, sizeof g);
    g.prog_id = ids[i];
    int fd = static_cast<int>(Bpf(BPF_PROG_GET_FD_BY_ID, &g));
    if (fd < 0) {
      if (errno == ENOENT) continue;  // detached meanwhile
      return ErrnoStatus("open BPF program id " + std::to_string(ids[i]), errno);
    }
    UniqueFd prog(fd);
    bpf_attr d;
    std::memset(&d, 0, sizeof d);
    d.target_fd = static_cast<uint32_t>(cgroup_fd);
    d.attach_bpf_fd = static_cast<uint32_t>(prog.get());
    d.attach_type = type;
    if (Bpf(BPF_PROG_DETACH, &d) != 0 && errno != ENOENT) {
      return ErrnoStatus(std::string("detach ") + AttachName(type) + " BPF program id " +
                             std::to_string(ids[i]) + " from " + dir,
                         errno);
    }
  }
  return Status::Ok();
}

// Attach flags 0 (exclusive, not overridable by sub-groups): attaching again
// with flags 0 atomically replaces our previous program, so there is no
// moment without a filter. Programs attached by others with other flags
// (BPF_F_ALLOW_MULTI/OVERRIDE) make the kernel refuse (EPERM); those are
// detached first.
Status Attach(int cgroup_fd, int prog_fd, bpf_attach_type type, const std::string& dir) {
  auto attach = [&] {
    bpf_attr a;
    std::memset(&a, 0, sizeof a);
    a.target_fd = static_cast<uint32_t>(cgroup_fd);
    a.attach_bpf_fd = static_cast<uint32_t>(prog_fd);
    a.attach_type = type;
    a.attach_flags = 0;
    return Bpf(BPF_PROG_ATTACH, &a) == 0 ? 0 : errno;
  };
  int err = attach();
  if (err == EPERM) {
    HC_RETURN_IF_ERROR(DetachAll(cgroup_fd, type, dir));
    err = attach();
    if (err == EPERM) {
      return PermissionDenied(std::string("attach ") + AttachName(type) + " BPF program to " + dir +
                              ": refused; a parent cgroup may hold a program that does not "
                              "allow overrides");
    }
  }
  if (err != 0) {
    return ErrnoStatus(std::string("attach ") + AttachName(type) + " BPF program to " + dir, err);
  }
  return Status::Ok();
}

}  // namespace

bool BindFilterSupported() {
  static const bool supported = [] {
    if (::geteuid() != 0) return false;
    CgroupMode mode = DetectCgroupMode();
    if (mode != CgroupMode::kV2 && mode != CgroupMode::kHybrid) return false;
    return LoadProgram(Inet4Program(1), BPF_CGROUP_INET4_BIND).ok() &&
           LoadProgram(Inet6Program(1), BPF_CGROUP_INET6_BIND).ok();
  }();
  return supported;
}

Status AttachBindFilter(const std::string& cgroup_dir, uint16_t port) {
  if (port == 0) return InvalidArgument("bind filter for " + cgroup_dir + ": port must not be 0");
  HC_ASSIGN_OR_RETURN(UniqueFd dir, OpenFile(cgroup_dir, O_RDONLY | O_DIRECTORY));
  // Load both first so a refused program leaves nothing half attached.
  HC_ASSIGN_OR_RETURN(UniqueFd v4, LoadProgram(Inet4Program(port), BPF_CGROUP_INET4_BIND));
  HC_ASSIGN_OR_RETURN(UniqueFd v6, LoadProgram(Inet6Program(port), BPF_CGROUP_INET6_BIND));
  HC_RETURN_IF_ERROR(Attach(dir.get(), v4.get(), BPF_CGROUP_INET4_BIND, cgroup_dir));
  HC_RETURN_IF_ERROR(Attach(dir.get(), v6.get(), BPF_CGROUP_INET6_BIND, cgroup_dir));
  return Status::Ok();
}

}  // namespace hc::runtime
