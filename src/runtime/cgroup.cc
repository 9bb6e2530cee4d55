#include "runtime/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <string_view>
#include <thread>

#include "common/fs.h"

namespace hc::runtime {
namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kPollInterval = std::chrono::milliseconds(5);
constexpr int kRmdirBusyRetryMs = 1000;
constexpr uint64_t kCpuPeriodUs = 100000;
// The kernel refuses cfs quotas below 1 ms.
constexpr uint64_t kMinCpuQuotaUs = 1000;
// v1 reports "no limit" as PAGE_COUNTER_MAX pages (0x7ffffffffffff000 on 4 KiB pages).
constexpr uint64_t kV1UnlimitedAtLeast = 1ull << 62;

// The v1 controllers this runtime uses; others (cpuset, blkio, ...) are left alone.
constexpr std::string_view kV1Controllers[] = {"memory", "cpu", "cpuacct", "pids", "freezer"};
// Controllers enabled down the v2 tree so the leaf gets their interface files.
constexpr std::string_view kV2Controllers[] = {"memory", "cpu", "pids"};

struct Layout {
  std::string v2_root;                                 // a cgroup2 mount point, "" if none
  std::map<std::string, std::string, std::less<>> v1;  // controller -> mount point
};

// /proc/mounts escapes space, tab, newline and backslash as \ooo.
std::string UnescapeMountField(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3') {
      out.push_back(
          static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i <= s.size()) {
    size_t j = s.find(sep, i);
    if (j == std::string_view::npos) j = s.size();
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

Layout ReadLayout() {
  Layout layout;
  Result<std::string> mounts = ReadFileToString("/proc/self/mounts");
  if (!mounts.ok()) return layout;
  for (std::string_view line : Split(*mounts, '\n')) {
    std::vector<std::string_view> f = Split(line, ' ');
    if (f.size() < 4) continue;
    std::string point = UnescapeMountField(f[1]);
    if (f[2] == "cgroup2") {
      // A host may show the unified hierarchy more than once (bind mounts);
      // the conventional place wins.
      if (layout.v2_root.empty() || point == "/sys/fs/cgroup") layout.v2_root = point;
    } else if (f[2] == "cgroup") {
      // Options name every controller of the hierarchy: "rw,relatime,cpu,cpuacct".
      for (std::string_view opt : Split(f[3], ',')) {
        for (std::string_view c : kV1Controllers) {
          if (opt == c && layout.v1.find(c) == layout.v1.end()) layout.v1.emplace(c, point);
        }
      }
    }
  }
  return layout;
}

std::string Trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\n");
  if (b == std::string_view::npos) return "";
  size_t e = s.find_last_not_of(" \t\n");
  return std::string(s.substr(b, e - b + 1));
}

Result<uint64_t> ParseU64(std::string_view s, const std::string& where) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) {
    return Corrupt(where + ": expected a number, got '" + std::string(s) + "'");
  }
  return v;
}

// Returns 0 or an errno. Cgroup files take one value per write(2), so the
// value goes out in a single call and a short write is an error.
int WriteRaw(const std::string& path, std::string_view value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  ssize_t n;
  do {
    n = ::write(fd, value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  int err = n < 0 ? errno : (static_cast<size_t>(n) == value.size() ? 0 : EIO);
  ::close(fd);
  return err;
}

Status WriteValue(const std::string& path, std::string_view value) {
  int err = WriteRaw(path, value);
  if (err != 0) return ErrnoStatus("write '" + std::string(value) + "' to " + path, err);
  return Status::Ok();
}

Result<std::string> ReadTrimmed(const std::string& path) {
  HC_ASSIGN_OR_RETURN(std::string s, ReadFileToString(path));
  return Trim(s);
}

Result<uint64_t> ReadU64(const std::string& path) {
  HC_ASSIGN_OR_RETURN(std::string s, ReadTrimmed(path));
  return ParseU64(s, path);
}

// A missing file reads as 0: the kernel or controller does not provide it.
Result<uint64_t> ReadOptionalU64(const std::string& path) {
  if (!PathExists(path)) return uint64_t{0};
  return ReadU64(path);
}

// "key value" lines (memory.events, cpu.stat, memory.oom_control); 0 when the
// key or the file is missing.
Result<uint64_t> ReadKeyedU64(const std::string& path, std::string_view key) {
  if (!PathExists(path)) return uint64_t{0};
  HC_ASSIGN_OR_RETURN(std::string s, ReadFileToString(path));
  for (std::string_view line : Split(s, '\n')) {
    std::vector<std::string_view> f = Split(line, ' ');
    if (f.size() == 2 && f[0] == key) return ParseU64(f[1], path + " " + std::string(key));
  }
  return uint64_t{0};
}

bool IsDir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Child group directories of `dir`, deepest first, `dir` itself last.
Status CollectSubtree(const std::string& dir, std::vector<std::string>* out) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return Status::Ok();  // removed while we walked
    return ErrnoStatus("opendir " + dir, errno);
  }
  std::vector<std::string> children;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n == "." || n == "..") continue;
    if (e->d_type == DT_DIR) children.push_back(JoinPath(dir, e->d_name));
  }
  ::closedir(d);
  for (const auto& c : children) HC_RETURN_IF_ERROR(CollectSubtree(c, out));
  out->push_back(dir);
  return Status::Ok();
}

Status ReadProcs(const std::string& dir, std::set<pid_t>* out) {
  Result<std::string> procs = ReadFileToString(JoinPath(dir, "cgroup.procs"));
  if (!procs.ok()) {
    if (procs.status().code() == Code::kNotFound) return Status::Ok();
    return procs.status();
  }
  for (std::string_view line : Split(*procs, '\n')) {
    HC_ASSIGN_OR_RETURN(uint64_t pid, ParseU64(line, dir + "/cgroup.procs"));
    out->insert(static_cast<pid_t>(pid));
  }
  return Status::Ok();
}

// Makes the v2 group `dir` hand our controllers down to its children.
Status EnableV2Controllers(const std::string& dir) {
  HC_ASSIGN_OR_RETURN(std::string available, ReadFileToString(JoinPath(dir, "cgroup.controllers")));
  HC_ASSIGN_OR_RETURN(std::string enabled,
                      ReadFileToString(JoinPath(dir, "cgroup.subtree_control")));
  std::vector<std::string_view> avail = Split(Trim(available), ' ');
  std::vector<std::string_view> on = Split(Trim(enabled), ' ');
  for (std::string_view c : kV2Controllers) {
    if (std::find(avail.begin(), avail.end(), c) == avail.end()) continue;
    if (std::find(on.begin(), on.end(), c) != on.end()) continue;
    std::string path = JoinPath(dir, "cgroup.subtree_control");
    int err = WriteRaw(path, "+" + std::string(c));
    if (err == EBUSY) {
      return Conflict("cannot enable the " + std::string(c) + " controller below " + dir +
                      ": the group has processes of its own (cgroup v2 allows processes only "
                      "in leaves)");
    }
    if (err != 0) return ErrnoStatus("enable controller +" + std::string(c) + " in " + path, err);
  }
  return Status::Ok();
}

Status CreateV2(const std::string& root, const std::string& rel) {
  std::string cur = root;
  for (std::string_view part : Split(rel, '/')) {
    HC_RETURN_IF_ERROR(EnableV2Controllers(cur));
    cur = JoinPath(cur, std::string(part));
    if (::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
      return ErrnoStatus("mkdir " + cur, errno);
  }
  return Status::Ok();
}

std::string Join(const std::vector<pid_t>& pids, size_t max) {
  std::string s;
  for (size_t i = 0; i < pids.size() && i < max; ++i) {
    if (!s.empty()) s += ' ';
    s += std::to_string(pids[i]);
  }
  if (pids.size() > max) s += " ...";
  return s;
}

// Signals through a pidfd taken while the pid was still listed in the group,
// so a pid recycled between reading cgroup.procs and kill() is never hit.
int PidfdOpen(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}
int PidfdKill(int fd) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, fd, SIGKILL, nullptr, 0));
}

}  // namespace

const char* CgroupModeName(CgroupMode m) {
  switch (m) {
    case CgroupMode::kNone: return "none";
    case CgroupMode::kV1: return "v1";
    case CgroupMode::kHybrid: return "hybrid";
    case CgroupMode::kV2: return "v2";
  }
  return "unknown";
}

CgroupMode DetectCgroupMode() {
  Layout l = ReadLayout();
  bool v1 = !l.v1.empty();
  bool v2 = !l.v2_root.empty();
  if (v1 && v2) return CgroupMode::kHybrid;
  if (v1) return CgroupMode::kV1;
  if (v2) return CgroupMode::kV2;
  return CgroupMode::kNone;
}

Cgroup::Cgroup(CgroupMode mode, std::string rel_path) : mode_(mode), rel_(std::move(rel_path)) {
  Layout l = ReadLayout();
  if (mode_ == CgroupMode::kV2 || mode_ == CgroupMode::kHybrid) {
    unified_root_ = l.v2_root;
    if (unified_root_.empty()) {
      unified_root_ = mode_ == CgroupMode::kV2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/unified";
    }
  }
  if (mode_ == CgroupMode::kV1 || mode_ == CgroupMode::kHybrid) {
    auto root = [&](std::string_view c) {
      auto it = l.v1.find(c);
      return it == l.v1.end() ? std::string() : it->second;
    };
    memory_root_ = root("memory");
    cpu_root_ = root("cpu");
    cpuacct_root_ = root("cpuacct");
    pids_root_ = root("pids");
    freezer_root_ = root("freezer");
  }
}

std::string Cgroup::V1Dir(const std::string& root) const {
  return JoinPath(root, rel_);
}

std::vector<std::string> Cgroup::Dirs() const {
  std::vector<std::string> out;
  for (const std::string* r :
       {&memory_root_, &cpu_root_, &cpuacct_root_, &pids_root_, &freezer_root_}) {
    if (r->empty()) continue;
    std::string d = V1Dir(*r);
    if (std::find(out.begin(), out.end(), d) == out.end()) out.push_back(d);
  }
  if (!unified_root_.empty()) out.push_back(UnifiedPath());
  return out;
}

std::vector<std::string> Cgroup::PidDirs() const {
  std::vector<std::string> out;
  for (const std::string* r :
       {&pids_root_, &memory_root_, &freezer_root_, &cpu_root_, &cpuacct_root_}) {
    if (!r->empty()) {
      out.push_back(V1Dir(*r));
      break;
    }
  }
  if (!unified_root_.empty()) out.push_back(UnifiedPath());
  return out;
}

std::string Cgroup::UnifiedPath() const {
  return unified_root_.empty() ? std::string() : JoinPath(unified_root_, rel_);
}

Status Cgroup::CheckRel() const {
  if (mode_ == CgroupMode::kNone) {
    return Unavailable("no cgroup hierarchy is mounted (see /proc/self/mounts)");
  }
  bool bad = rel_.empty() || rel_.front() == '/' || rel_.back() == '/' ||
             rel_.find('\n') != std::string::npos || rel_.find("//") != std::string::npos;
  for (std::string_view part : Split(rel_, '/')) bad = bad || part == "." || part == "..";
  if (bad) {
    return InvalidArgument("cgroup path '" + rel_ +
                           "' must be relative, like 'hybridcluster/shop', without '.' or '..'");
  }
  return Status::Ok();
}

Status Cgroup::Create(const Limits* limits) {
  HC_RETURN_IF_ERROR(CheckRel());
  if (mode_ == CgroupMode::kV2) {
    HC_RETURN_IF_ERROR(CreateV2(unified_root_, rel_));
  } else {
    for (const auto& d : Dirs()) HC_RETURN_IF_ERROR(MakeDirs(d));
  }
  if (limits != nullptr) HC_RETURN_IF_ERROR(WriteLimits(*limits).Annotate("cgroup " + rel_));
  return Status::Ok();
}

Status Cgroup::CreateUnified() {
  HC_RETURN_IF_ERROR(CheckRel());
  if (mode_ == CgroupMode::kV2) return CreateV2(unified_root_, rel_);
  if (mode_ == CgroupMode::kHybrid) return MakeDirs(UnifiedPath());
  return Status::Ok();
}

Status Cgroup::WriteLimits(const Limits& limits) {
  auto missing = [](const char* controller, const char* what) {
    return Unavailable(std::string("the ") + controller + " controller is not available, so " +
                       what + " cannot be limited");
  };
  uint64_t quota_us = 0;
  if (limits.cpu_millis > 0) {
    quota_us =
        std::max<uint64_t>(uint64_t{limits.cpu_millis} * kCpuPeriodUs / 1000, kMinCpuQuotaUs);
  }

  if (mode_ == CgroupMode::kV2) {
    std::string d = UnifiedPath();
    auto need = [&](const char* file, const char* controller, const char* what) -> Status {
      if (!PathExists(JoinPath(d, file))) return missing(controller, what);
      return Status::Ok();
    };
    if (limits.memory_bytes > 0 || PathExists(JoinPath(d, "memory.max"))) {
      HC_RETURN_IF_ERROR(need("memory.max", "memory", "memory"));
      HC_RETURN_IF_ERROR(
          WriteValue(JoinPath(d, "memory.max"),
                     limits.memory_bytes ? std::to_string(limits.memory_bytes) : "max"));
      // No swap on top of the memory limit.
      if (PathExists(JoinPath(d, "memory.swap.max"))) {
        HC_RETURN_IF_ERROR(WriteValue(JoinPath(d, "memory.swap.max"), "0"));
      }
    }
    if (limits.cpu_millis > 0 || PathExists(JoinPath(d, "cpu.max"))) {
      HC_RETURN_IF_ERROR(need("cpu.max", "cpu", "cpu time"));
      std::string q = quota_us ? std::to_string(quota_us) : "max";
      HC_RETURN_IF_ERROR(
          WriteValue(JoinPath(d, "cpu.max"), q + " " + std::to_string(kCpuPeriodUs)));
    }
    if (limits.pids > 0 || PathExists(JoinPath(d, "pids.max"))) {
      HC_RETURN_IF_ERROR(need("pids.max", "pids", "the number of processes"));
      HC_RETURN_IF_ERROR(
          WriteValue(JoinPath(d, "pids.max"), limits.pids ? std::to_string(limits.pids) : "max"));
    }
    return Status::Ok();
  }

  // v1 (also kHybrid: the unified hierarchy has no controllers there).
  if (!memory_root_.empty()) {
    std::string d = V1Dir(memory_root_);
    std::string mem = JoinPath(d, "memory.limit_in_bytes");
    std::string memsw = JoinPath(d, "memory.memsw.limit_in_bytes");
    std::string value = limits.memory_bytes ? std::to_string(limits.memory_bytes) : "-1";
    uint64_t wanted = limits.memory_bytes ? limits.memory_bytes : UINT64_MAX;
    HC_ASSIGN_OR_RETURN(uint64_t current, ReadU64(mem));
    // The kernel keeps memory <= memory+swap at every step: raise memsw
    // first, lower it last.
    bool has_memsw = PathExists(memsw);
    if (has_memsw && wanted > current) HC_RETURN_IF_ERROR(WriteValue(memsw, value));
    HC_RETURN_IF_ERROR(WriteValue(mem, value));
    if (has_memsw && wanted <= current) HC_RETURN_IF_ERROR(WriteValue(memsw, value));
  } else if (limits.memory_bytes > 0) {
    return missing("memory", "memory");
  }
  if (!cpu_root_.empty()) {
    std::string d = V1Dir(cpu_root_);
    HC_RETURN_IF_ERROR(WriteValue(JoinPath(d, "cpu.cfs_period_us"), std::to_string(kCpuPeriodUs)));
    HC_RETURN_IF_ERROR(
        WriteValue(JoinPath(d, "cpu.cfs_quota_us"), quota_us ? std::to_string(quota_us) : "-1"));
  } else if (limits.cpu_millis > 0) {
    return missing("cpu", "cpu time");
  }
  if (!pids_root_.empty()) {
    HC_RETURN_IF_ERROR(WriteValue(JoinPath(V1Dir(pids_root_), "pids.max"),
                                  limits.pids ? std::to_string(limits.pids) : "max"));
  } else if (limits.pids > 0) {
    return missing("pids", "the number of processes");
  }
  return Status::Ok();
}

Status Cgroup::AddProcess(pid_t pid) {
  HC_RETURN_IF_ERROR(CheckRel());
  std::string value = std::to_string(pid);
  for (const auto& d : Dirs()) {
    std::string path = JoinPath(d, "cgroup.procs");
    int err = WriteRaw(path, value);
    if (err == ESRCH) return NotFound("process " + value + " does not exist (any more)");
    if (err == ENOENT) return NotFound("cgroup " + d + " does not exist; create it first");
    if (err != 0) return ErrnoStatus("move process " + value + " into " + path, err);
  }
  return Status::Ok();
}

namespace {

// The v1 freezer flips a kernel static key when the first cgroup freezes
// and again when the last one thaws; each flip patches kernel text on every
// CPU (stop-the-world IPIs), which with snapshots of hundreds of apps a
// second cost more than the freezing itself. One empty cgroup kept frozen
// holds the key on, so freezing an app only moves a counter.
void KeepFreezerKeyOn(const std::string& freezer_root) {
  static std::once_flag once;
  std::call_once(once, [&] {
    std::string anchor = JoinPath(freezer_root, "hc-freezer-anchor");
    if (::mkdir(anchor.c_str(), 0755) != 0 && errno != EEXIST) return;
    (void)WriteValue(JoinPath(anchor, "freezer.state"), "FROZEN");
  });
}

}  // namespace

Status Cgroup::Freeze(int timeout_ms) {
  HC_RETURN_IF_ERROR(CheckRel());
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  // Hybrid hosts have both; the v1 freezer is the one runc and older tools
  // use there, so the two never disagree about who froze the group.
  bool v1 = !freezer_root_.empty();
  if (v1) KeepFreezerKeyOn(freezer_root_);
  if (!v1 && unified_root_.empty()) return Unavailable("no cgroup freezer is available");
  if (!v1) HC_RETURN_IF_ERROR(WriteValue(JoinPath(UnifiedPath(), "cgroup.freeze"), "1"));
  for (int round = 0;; ++round) {
    if (v1) {
      // The v1 freezer tries each task once per write and can stay FREEZING
      // (a task forking or in a short uninterruptible sleep at that moment),
      // so write FROZEN again on every round and, now and then, thaw briefly
      // to let a stuck task get past its critical section (as runc does).
      std::string state_file = JoinPath(V1Dir(freezer_root_), "freezer.state");
      if (round % 50 == 49) {
        HC_RETURN_IF_ERROR(WriteValue(state_file, "THAWED"));
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      HC_RETURN_IF_ERROR(WriteValue(state_file, "FROZEN"));
    }
    HC_ASSIGN_OR_RETURN(bool frozen, IsFrozen());
    if (frozen) return Status::Ok();
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(kPollInterval);
  }
  // Half-frozen groups confuse every later step; leave the group running.
  Status thaw = Thaw();
  return Unavailable("cgroup " + rel_ + " did not freeze within " + std::to_string(timeout_ms) +
                     " ms (a process may be in uninterruptible sleep); " +
                     (thaw.ok() ? "thawed it again" : "thawing failed too: " + thaw.ToString()));
}

Status Cgroup::Thaw() {
  HC_RETURN_IF_ERROR(CheckRel());
  if (!freezer_root_.empty()) {
    return WriteValue(JoinPath(V1Dir(freezer_root_), "freezer.state"), "THAWED");
  }
  if (!unified_root_.empty()) return WriteValue(JoinPath(UnifiedPath(), "cgroup.freeze"), "0");
  return Unavailable("no cgroup freezer is available");
}

Result<bool> Cgroup::IsFrozen() {
  HC_RETURN_IF_ERROR(CheckRel());
  if (!freezer_root_.empty()) {
    HC_ASSIGN_OR_RETURN(std::string state,
                        ReadTrimmed(JoinPath(V1Dir(freezer_root_), "freezer.state")));
    return state == "FROZEN";
  }
  if (!unified_root_.empty()) {
    HC_ASSIGN_OR_RETURN(uint64_t frozen,
                        ReadKeyedU64(JoinPath(UnifiedPath(), "cgroup.events"), "frozen"));
    return frozen == 1;
  }
  return Unavailable("no cgroup freezer is available");
}

Result<std::vector<pid_t>> Cgroup::Pids() {
  HC_RETURN_IF_ERROR(CheckRel());
  std::set<pid_t> pids;
  bool any = false;
  for (const auto& d : PidDirs()) {
    if (!IsDir(d)) continue;
    any = true;
    std::vector<std::string> tree;
    HC_RETURN_IF_ERROR(CollectSubtree(d, &tree));
    for (const auto& t : tree) HC_RETURN_IF_ERROR(ReadProcs(t, &pids));
  }
  if (!any) return NotFound("cgroup " + rel_ + " does not exist");
  return std::vector<pid_t>(pids.begin(), pids.end());
}

Result<CgroupUsage> Cgroup::Usage() {
  HC_ASSIGN_OR_RETURN(std::vector<pid_t> pids, Pids());
  CgroupUsage u;
  u.processes = static_cast<uint32_t>(pids.size());
  if (mode_ == CgroupMode::kV2) {
    std::string d = UnifiedPath();
    HC_ASSIGN_OR_RETURN(uint64_t usec, ReadKeyedU64(JoinPath(d, "cpu.stat"), "usage_usec"));
    u.cpu_ns = usec * 1000;
    HC_ASSIGN_OR_RETURN(u.memory_bytes, ReadOptionalU64(JoinPath(d, "memory.current")));
    HC_ASSIGN_OR_RETURN(u.memory_peak_bytes, ReadOptionalU64(JoinPath(d, "memory.peak")));
    std::string max_path = JoinPath(d, "memory.max");
    if (PathExists(max_path)) {
      HC_ASSIGN_OR_RETURN(std::string max, ReadTrimmed(max_path));
      if (max != "max") {
        HC_ASSIGN_OR_RETURN(u.memory_limit_bytes, ParseU64(max, max_path));
      }
    }
    HC_ASSIGN_OR_RETURN(u.oom_kills, ReadKeyedU64(JoinPath(d, "memory.events"), "oom_kill"));
    return u;
  }
  if (!cpuacct_root_.empty()) {
    HC_ASSIGN_OR_RETURN(u.cpu_ns, ReadOptionalU64(JoinPath(V1Dir(cpuacct_root_), "cpuacct.usage")));
  } else if (!unified_root_.empty()) {
    // cpu.stat is a core file of every v2 group, controllers or not.
    HC_ASSIGN_OR_RETURN(uint64_t usec,
                        ReadKeyedU64(JoinPath(UnifiedPath(), "cpu.stat"), "usage_usec"));
    u.cpu_ns = usec * 1000;
  }
  if (!memory_root_.empty()) {
    std::string d = V1Dir(memory_root_);
    HC_ASSIGN_OR_RETURN(u.memory_bytes, ReadOptionalU64(JoinPath(d, "memory.usage_in_bytes")));
    HC_ASSIGN_OR_RETURN(u.memory_peak_bytes,
                        ReadOptionalU64(JoinPath(d, "memory.max_usage_in_bytes")));
    HC_ASSIGN_OR_RETURN(uint64_t limit, ReadOptionalU64(JoinPath(d, "memory.limit_in_bytes")));
    u.memory_limit_bytes = limit >= kV1UnlimitedAtLeast ? 0 : limit;
    HC_ASSIGN_OR_RETURN(u.oom_kills, ReadKeyedU64(JoinPath(d, "memory.oom_control"), "oom_kill"));
  }
  return u;
}

Status Cgroup::KillAll(int timeout_ms) {
  HC_RETURN_IF_ERROR(CheckRel());
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  // v1-frozen tasks ignore SIGKILL until thawed (v2-frozen ones do not). A
  // sub-group frozen by itself stays frozen when its parent thaws, so every
  // group of the subtree is thawed.
  if (!freezer_root_.empty()) {
    std::vector<std::string> tree;
    HC_RETURN_IF_ERROR(CollectSubtree(V1Dir(freezer_root_), &tree));
    for (const auto& t : tree) {
      int err = WriteRaw(JoinPath(t, "freezer.state"), "THAWED");
      if (err != 0 && err != ENOENT) return ErrnoStatus("thaw " + t, err);
    }
  }
  std::string kill_file = unified_root_.empty() ? "" : JoinPath(UnifiedPath(), "cgroup.kill");
  for (;;) {
    // cgroup.kill (5.14+) also catches processes forked while we kill.
    if (!kill_file.empty()) {
      int err = WriteRaw(kill_file, "1");
      if (err != 0 && err != ENOENT) return ErrnoStatus("write 1 to " + kill_file, err);
    }
    Result<std::vector<pid_t>> listed = Pids();
    if (!listed.ok() && listed.status().code() == Code::kNotFound) return Status::Ok();
    HC_RETURN_IF_ERROR(listed.status());
    if (listed->empty()) return Status::Ok();
    if (Clock::now() >= deadline) {
      return Unavailable(std::to_string(listed->size()) + " processes of cgroup " + rel_ +
                         " still alive " + std::to_string(timeout_ms) +
                         " ms after SIGKILL (uninterruptible sleep?): " + Join(*listed, 10));
    }
    std::vector<std::pair<pid_t, UniqueFd>> fds;
    bool have_pidfd = true;
    for (pid_t p : *listed) {
      int fd = PidfdOpen(p);
      if (fd >= 0) {
        fds.emplace_back(p, UniqueFd(fd));
      } else if (errno == ENOSYS) {
        have_pidfd = false;
        break;
      }
    }
    if (have_pidfd) {
      // A failed re-listing is retried (or reported) at the top of the loop.
      Result<std::vector<pid_t>> again = Pids();
      for (auto& [p, fd] : fds) {
        if (again.ok() && std::binary_search(again->begin(), again->end(), p)) {
          PidfdKill(fd.get());
        }
      }
    } else {
      for (pid_t p : *listed) ::kill(p, SIGKILL);
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

Status Cgroup::Remove() {
  HC_RETURN_IF_ERROR(CheckRel());
  Result<std::vector<pid_t>> pids = Pids();
  if (pids.ok() && !pids->empty()) {
    return Conflict("cgroup " + rel_ + " still has " + std::to_string(pids->size()) +
                    " processes (" + Join(*pids, 10) + "); kill them first");
  }
  if (!pids.ok() && pids.status().code() != Code::kNotFound) return pids.status();
  Status first;
  for (const auto& d : Dirs()) {
    std::vector<std::string> tree;
    Status s = CollectSubtree(d, &tree);
    for (size_t i = 0; s.ok() && i < tree.size(); ++i) {
      // A group whose last task just exited can stay busy for a moment while
      // the kernel finishes tearing the task down.
      auto deadline = Clock::now() + std::chrono::milliseconds(kRmdirBusyRetryMs);
      while (::rmdir(tree[i].c_str()) != 0) {
        int err = errno;
        if (err == ENOENT) break;
        if (err == EBUSY && Clock::now() < deadline) {
          std::this_thread::sleep_for(kPollInterval);
          continue;
        }
        s = err == EBUSY ? Conflict("cgroup " + tree[i] + " is still busy (processes or children)")
                         : ErrnoStatus("rmdir " + tree[i], err);
        break;
      }
    }
    if (first.ok()) first = s;
  }
  return first;
}

}  // namespace hc::runtime
