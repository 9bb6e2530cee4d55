// Linux control groups for one app: limits, usage, freezer, kill-all.
//
// Handles the three layouts a host may have:
//   kV2     - one unified hierarchy at /sys/fs/cgroup;
//   kHybrid - v1 controllers at /sys/fs/cgroup/<controller> plus an empty
//             unified hierarchy at /sys/fs/cgroup/unified (this machine);
//   kV1     - v1 controllers only.
// An app's group has the same relative path (e.g. "hybridcluster/shop") in every
// hierarchy it uses. The unified group (kV2, kHybrid) is where BPF programs
// attach (bind_filter.h).
//
// Not thread-safe; each Cgroup is owned by one supervisor.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/status.h"
#include "runtime/app_spec.h"

namespace hc::runtime {

enum class CgroupMode { kNone, kV1, kHybrid, kV2 };
const char* CgroupModeName(CgroupMode m);

// Reads /proc/self/mounts once per call.
CgroupMode DetectCgroupMode();

struct CgroupUsage {
  uint64_t cpu_ns = 0;
  uint64_t memory_bytes = 0;
  uint64_t memory_peak_bytes = 0;   // 0 if the kernel does not say
  uint64_t memory_limit_bytes = 0;  // 0 = unlimited
  uint32_t processes = 0;
  uint64_t oom_kills = 0;  // processes killed by this group's memory limit
};

class Cgroup {
 public:
  // Uses the group `rel_path` (no leading '/', e.g. "hybridcluster/shop") in
  // every hierarchy of `mode`, without creating anything.
  Cgroup(CgroupMode mode, std::string rel_path);

  // Creates the group in every hierarchy (parents too). With `limits`, writes
  // memory (no swap on top), cpu quota (period 100 ms) and pids limits. Existing
  // groups are reused.
  Status Create(const Limits* limits);

  // Creates only the unified group (kV2, kHybrid) so a BPF program can be
  // attached before another tool (runc) fills the group in. No-op otherwise.
  Status CreateUnified();

  // Moves `pid` into the group in every hierarchy.
  Status AddProcess(pid_t pid);

  // Returns once every process is frozen (v1 freezer.state FROZEN, or v2
  // cgroup.freeze + cgroup.events frozen 1), at most timeout_ms.
  Status Freeze(int timeout_ms = 5000);
  Status Thaw();
  Result<bool> IsFrozen();

  Result<CgroupUsage> Usage();
  // Members of the group and of its sub-groups, sorted; NotFound if the group
  // exists in no hierarchy.
  Result<std::vector<pid_t>> Pids();

  // SIGKILLs every process until the group is empty (thaws first, since frozen
  // tasks do not die), at most timeout_ms. Sub-groups included; a group that
  // does not exist is empty.
  Status KillAll(int timeout_ms = 5000);

  // Removes the group from every hierarchy (children first). Conflict if
  // processes remain. Removing a group that does not exist is not an error.
  Status Remove();

  // "/sys/fs/cgroup/unified/<rel>" (kHybrid) or "/sys/fs/cgroup/<rel>" (kV2); "" otherwise.
  std::string UnifiedPath() const;
  CgroupMode mode() const { return mode_; }
  const std::string& rel_path() const { return rel_; }

 private:
  // Group directories in every hierarchy this mode uses, unified last (unique
  // paths: co-mounted v1 controllers share one).
  std::vector<std::string> Dirs() const;
  // The directories whose cgroup.procs together list every member.
  std::vector<std::string> PidDirs() const;
  std::string V1Dir(const std::string& root) const;
  Status CheckRel() const;
  Status WriteLimits(const Limits& limits);

  CgroupMode mode_;
  std::string rel_;
  // Mount points found in /proc/self/mounts when constructed; "" = not used.
  std::string unified_root_;
  std::string memory_root_, cpu_root_, cpuacct_root_, pids_root_, freezer_root_;
};

}  // namespace hc::runtime
