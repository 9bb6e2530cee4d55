// The OCI runtime spec of an app container. Design: the host's OS directories
// are shared read-only (density: one page cache for every app's libc), the
// volume is the only writable persistent place, and the process runs as an
// unprivileged uid with no capabilities (CAP_NET_BIND_SERVICE only for ports
// below 1024), no new privileges, and a seccomp deny-list.
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "runtime/cgroup.h"
#include "runtime/shim/launcher.h"

namespace hc::runtime::shim {

using nlohmann::json;

namespace {

// The syscalls Docker's default profile refuses that matter on a shared host
// (kernel modules, mounts, namespaces, keyrings, tracing other processes,
// BPF, clock, swap, reboot). A deny-list keeps every ordinary program working;
// runc itself has no built-in profile.
const char* const kDeniedSyscalls[] = {
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "personality",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "syslog",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
    "pidfd_getfd",
};

const char kTini[] = "/usr/bin/tini";

json Seccomp() {
  json names = json::array();
  for (const char* n : kDeniedSyscalls) names.push_back(n);
  json syscalls = json::array({{{"names", names}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", 1}}});
  // New namespaces through clone(2) as well as unshare(2): a user namespace
  // would give the app CAP_NET_ADMIN and more over its own objects, a common
  // path to kernel bugs. One rule per flag (seccomp compares masked values).
  for (uint64_t flag :
       {0x10000000ull /*NEWUSER*/, 0x00020000ull /*NEWNS*/, 0x40000000ull /*NEWNET*/,
        0x20000000ull /*NEWPID*/, 0x08000000ull /*NEWIPC*/, 0x04000000ull /*NEWUTS*/,
        0x02000000ull /*NEWCGROUP*/}) {
    syscalls.push_back(
        {{"names", {"clone"}},
         {"action", "SCMP_ACT_ERRNO"},
         {"errnoRet", 1},
         {"args",
          {{{"index", 0}, {"value", flag}, {"valueTwo", flag}, {"op", "SCMP_CMP_MASKED_EQ"}}}}});
  }
  // clone3 passes its flags in memory seccomp cannot read: ENOSYS makes libc
  // fall back to clone, which the rules above check.
  syscalls.push_back({{"names", {"clone3"}}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", 38}});
  return {
      {"defaultAction", "SCMP_ACT_ALLOW"},
      {"architectures",
       {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_ARM"}},
      {"syscalls", syscalls},
  };
}

json Bind(const std::string& src, const std::string& dst, bool rw) {
  return {{"destination", dst},
          {"type", "bind"},
          {"source", src},
          {"options", {"rbind", rw ? "rw" : "ro", "nosuid", "nodev"}}};
}

json Tmpfs(const std::string& dst, const std::string& opts_mode, const std::string& size) {
  return {{"destination", dst},
          {"type", "tmpfs"},
          {"source", "tmpfs"},
          {"options", {"nosuid", "nodev", opts_mode, "size=" + size}}};
}

}  // namespace

std::string OciConfigJson(const ShimConfig& cfg, const AppSpec& spec) {
  uint32_t uid, gid;
  AppIdentity(spec, &uid, &gid);

  // PID 1 of a namespace ignores signals it has no handler for, so a plain
  // server as init would only die by SIGKILL: tini (Docker's --init) forwards
  // the stop signal to the app's process group and reaps orphans.
  std::vector<std::string> args = spec.argv;
  if (::access(kTini, X_OK) == 0) args.insert(args.begin(), {kTini, "-g", "--"});

  json caps = json::array();
  if (spec.port < 1024) caps.push_back("CAP_NET_BIND_SERVICE");

  json mounts = json::array({
      {{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}},
      {{"destination", "/dev"},
       {"type", "tmpfs"},
       {"source", "tmpfs"},
       {"options", {"nosuid", "strictatime", "mode=755", "size=65536k"}}},
      {{"destination", "/dev/pts"},
       {"type", "devpts"},
       {"source", "devpts"},
       {"options", {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}}},
      {{"destination", "/dev/mqueue"},
       {"type", "mqueue"},
       {"source", "mqueue"},
       {"options", {"nosuid", "noexec", "nodev"}}},
      Tmpfs("/dev/shm", "mode=1777", "256m"),
      Bind("/usr", "/usr", false),
      Bind("/etc", "/etc", false),
      Bind("/sys", "/sys", false),
      Tmpfs("/tmp", "mode=1777", "256m"),
      Tmpfs("/run", "mode=755", "16m"),
      Bind(spec.volume_path, std::string(kContainerAppDir), true),
  });
  // Merged-/usr hosts have /bin etc. as symlinks (recreated in the rootfs
  // skeleton); others have real directories, shared read-only here.
  for (const char* d : {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}) {
    struct stat st;
    if (::lstat(d, &st) == 0 && S_ISDIR(st.st_mode)) mounts.push_back(Bind(d, d, false));
  }

  json resources = {{"devices", {{{"allow", false}, {"access", "rwm"}}}}};
  if (spec.limits.memory_bytes) {
    json mem = {{"limit", spec.limits.memory_bytes}};
    // memory+swap equal to memory: an app cannot grow into swap. Only where
    // the kernel accounts swap (v1 memsw), or runc refuses the spec.
    if (::access("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes", F_OK) == 0) {
      mem["swap"] = spec.limits.memory_bytes;
    }
    resources["memory"] = mem;
  }
  if (spec.limits.cpu_millis) {
    resources["cpu"] = {{"quota", int64_t{spec.limits.cpu_millis} * 100}, {"period", 100000}};
  }
  if (spec.limits.pids) resources["pids"] = {{"limit", spec.limits.pids}};

  json namespaces =
      json::array({{{"type", "pid"}}, {{"type", "ipc"}}, {{"type", "uts"}}, {{"type", "mount"}}});
  if (DetectCgroupMode() != CgroupMode::kV1) namespaces.push_back({{"type", "cgroup"}});

  json config = {
      {"ociVersion", "1.0.2"},
      {"process",
       {{"terminal", false},
        {"user", {{"uid", uid}, {"gid", gid}}},
        {"args", args},
        {"env", AppEnvironment(spec, std::string(kContainerAppDir))},
        {"cwd", std::string(kContainerAppDir)},
        {"noNewPrivileges", true},
        {"capabilities",
         {{"bounding", caps}, {"effective", caps}, {"permitted", caps}, {"ambient", caps}}}}},
      {"root", {{"path", cfg.rootfs}, {"readonly", true}}},
      {"hostname", spec.name},
      {"mounts", mounts},
      {"linux",
       {{"cgroupsPath", "/" + cfg.cgroup_parent + "/" + spec.name},
        {"resources", resources},
        {"namespaces", namespaces},
        {"seccomp", Seccomp()},
        {"maskedPaths",
         {"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
          "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
          "/sys/firmware", "/sys/fs/cgroup"}},
        {"readonlyPaths",
         {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}}}},
  };
  return config.dump(1);
}

}  // namespace hc::runtime::shim
