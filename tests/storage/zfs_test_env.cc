// The zfs test environment: a zfs-fuse daemon (reused if running, else
// started and stopped at exit by the last test process using it), one
// file-backed pool per process, one fresh parent dataset per test store.
//
// Several test processes may run at once (ctest -j): they share the daemon
// under /tmp/hc-zfs-test (a shared flock marks "in use"; the process that
// can upgrade it to exclusive at exit is the last one and stops the daemon
// if a test started it), and each has its own pool named by pid.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <mutex>
#include <thread>

#include "common/fs.h"
#include "common/subprocess.h"
#include "storage/test_stores.h"
#include "storage/zfs/zfs_store.h"

namespace hc::storage::testing {
namespace {

constexpr char kSharedDir[] = "/tmp/hc-zfs-test";

bool ZfsResponds() {
  auto r = RunCommand({"zpool", "list", "-H", "-o", "name"});
  return r.ok() && r->ok();
}

bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds max) {
  auto deadline = std::chrono::steady_clock::now() + max;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return cond();
}

class ZfsTestEnv {
 public:
  static ZfsTestEnv& Get() {
    static ZfsTestEnv env;
    return env;
  }

  ~ZfsTestEnv() {
    if (!pool_.empty()) {
      auto r = RunCommand({"zpool", "destroy", "-f", pool_});
      if (!r.ok() || !r->ok()) {
        std::fprintf(stderr, "warning: could not destroy test pool %s\n", pool_.c_str());
      }
    }
    if (!dir_.empty()) (void)RemoveTree(dir_);
    if (!lock_.valid()) return;
    // Last user of a daemon a test started: stop it by its pid.
    if (::flock(lock_.get(), LOCK_EX | LOCK_NB) == 0) {
      std::string pidfile = std::string(kSharedDir) + "/zfs-fuse.pid";
      auto text = ReadFileToString(pidfile);
      pid_t pid = text.ok() ? static_cast<pid_t>(std::atol(text->c_str())) : 0;
      if (pid > 0 && ::kill(pid, SIGTERM) == 0) {
        bool gone = WaitFor([pid] { return ::kill(pid, 0) != 0; }, std::chrono::seconds(10));
        if (!gone) {
          ::kill(pid, SIGKILL);
          WaitFor([pid] { return ::kill(pid, 0) != 0; }, std::chrono::seconds(5));
        }
      }
      ::unlink(pidfile.c_str());
    }
  }

  // Returns "" when ready, else why zfs cannot be tested here.
  std::string Ready() {
    std::lock_guard<std::mutex> g(mu_);
    if (!initialised_) {
      initialised_ = true;
      skip_ = Init();
    }
    return skip_;
  }

  Result<std::string> NewParent() {
    std::lock_guard<std::mutex> g(mu_);
    std::string ds = pool_ + "/t" + std::to_string(next_++);
    auto r = RunCommand({"zfs", "create", ds});
    if (!r.ok()) return r.status();
    if (!r->ok()) return IoError(DescribeFailure({"zfs", "create", ds}, *r));
    return ds;
  }

  // A pool of its own under this process's directory: <dir>/<name>/pool.img.
  Result<std::pair<std::string, std::string>> NewPool() {
    std::lock_guard<std::mutex> g(mu_);
    std::string name = pool_ + "x" + std::to_string(next_pool_++);
    std::string dir = dir_ + "/" + name;
    HC_RETURN_IF_ERROR(MakeDirs(dir + "/mnt"));
    std::string img = dir + "/pool.img";
    { HC_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(img, O_WRONLY | O_CREAT | O_TRUNC, 0600)); }
    if (::truncate(img.c_str(), 256LL << 20) != 0) return IoError("cannot size " + img);
    auto r = RunCommand({"zpool", "create", "-o", "cachefile=none", "-m", dir + "/mnt", name, img});
    if (!r.ok()) return r.status();
    if (!r->ok()) return IoError(DescribeFailure({"zpool", "create", name}, *r));
    return std::make_pair(name, dir);
  }

  Result<std::string> NewScratch() {
    std::lock_guard<std::mutex> g(mu_);
    std::string d = dir_ + "/scratch" + std::to_string(next_scratch_++);
    HC_RETURN_IF_ERROR(MakeDirs(d));
    return d;
  }

 private:
  std::string Init() {
    if (::geteuid() != 0) return "zfs tests need root";
    if (::access("/dev/fuse", R_OK | W_OK) != 0 && ::access("/dev/zfs", F_OK) != 0) {
      return "neither /dev/fuse (zfs-fuse) nor /dev/zfs (OpenZFS) is available";
    }
    auto probe = RunCommand({"zfs", "-?"});
    if (!probe.ok()) return "the 'zfs' command is not installed: " + probe.status().ToString();
    if (!MakeDirs(kSharedDir, 0700).ok()) return "cannot create /tmp/hc-zfs-test";
    auto lock = OpenFile(std::string(kSharedDir) + "/daemon.lock", O_RDWR | O_CREAT, 0600);
    if (!lock.ok()) return lock.status().ToString();
    lock_ = std::move(*lock);
    ::flock(lock_.get(), LOCK_EX);
    std::string why;
    if (!ZfsResponds()) {
      if (::access("/usr/sbin/zfs-fuse", X_OK) != 0 && ::access("/usr/bin/zfs-fuse", X_OK) != 0) {
        why = "ZFS is not running and zfs-fuse is not installed";
      } else {
        std::string pidfile = std::string(kSharedDir) + "/zfs-fuse.pid";
        auto r = RunCommand({"zfs-fuse", "--no-kstat-mount", "--pidfile", pidfile});
        if (!r.ok() || !r->ok() || !WaitFor(ZfsResponds, std::chrono::seconds(15))) {
          why = "could not start zfs-fuse";
        }
      }
    }
    ::flock(lock_.get(), LOCK_SH);
    if (!why.empty()) return why;

    dir_ = std::string(kSharedDir) + "/p" + std::to_string(::getpid());
    (void)RemoveTree(dir_);
    if (!MakeDirs(dir_ + "/mnt").ok()) return "cannot create " + dir_;
    std::string img = dir_ + "/pool.img";
    if (::truncate(img.c_str(), 0) != 0) {
      auto fd = OpenFile(img, O_WRONLY | O_CREAT, 0600);
      if (!fd.ok()) return fd.status().ToString();
    }
    if (::truncate(img.c_str(), 1LL << 30) != 0) return "cannot size " + img;
    std::string pool = "hctest" + std::to_string(::getpid());
    auto r =
        RunCommand({"zpool", "create", "-o", "cachefile=none", "-m", dir_ + "/mnt", pool, img});
    if (!r.ok() || !r->ok()) {
      return "cannot create a test pool: " +
             (r.ok() ? DescribeFailure({"zpool", "create"}, *r) : r.status().ToString());
    }
    pool_ = pool;
    return "";
  }

  std::mutex mu_;
  bool initialised_ = false;
  std::string skip_;
  UniqueFd lock_;
  std::string dir_;
  std::string pool_;
  int next_ = 0;
  int next_scratch_ = 0;
  int next_pool_ = 0;
};

// Opens the zfs store on `dataset` into `t` (or sets why it cannot).
void OpenInto(TestStore& t, const std::string& dataset, const std::string& scratch) {
  StoreConfig config;
  config.backend = "zfs";
  config.dataset = dataset;
  auto store = OpenZfsStore(config);
  if (!store.ok()) {
    t.skip_reason = "cannot open the zfs store: " + store.status().ToString();
    return;
  }
  t.store = std::move(*store);
  t.scratch_dir = scratch;
  t.cleanup_dir = scratch;
}

}  // namespace

TestStore MakeZfsTestStoreOnOwnPool() {
  TestStore t;
  ZfsTestEnv& env = ZfsTestEnv::Get();
  t.skip_reason = env.Ready();
  if (!t.skip_reason.empty()) return t;
  auto pool = env.NewPool();
  auto scratch = pool.ok() ? env.NewScratch() : Result<std::string>(pool.status());
  if (!scratch.ok()) {
    t.skip_reason = "cannot create a test pool: " + scratch.status().ToString();
    return t;
  }
  t.zfs_pool = pool->first;
  t.zfs_pool_dir = pool->second;
  auto r = RunCommand({"zfs", "create", t.zfs_pool + "/hc"});
  if (!r.ok() || !r->ok()) {
    t.skip_reason = "cannot create " + t.zfs_pool + "/hc";
    return t;
  }
  OpenInto(t, t.zfs_pool + "/hc", *scratch);
  return t;
}

Result<int> DamageInZfsPool(const TestStore& t, const std::string& block) {
  if (t.zfs_pool.empty() || block.size() < 512) {
    return InvalidArgument("needs a store from MakeZfsTestStoreOnOwnPool and >= 512 bytes");
  }
  std::string img = t.zfs_pool_dir + "/pool.img";
  auto sync = RunCommand({"zpool", "export", t.zfs_pool});
  if (!sync.ok() || !sync->ok()) return IoError("zpool export " + t.zfs_pool + " failed");
  HC_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(img));
  int damaged = 0;
  const std::string needle = block.substr(0, 512);
  HC_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(img, O_WRONLY));
  for (size_t at = bytes.find(needle); at != std::string::npos; at = bytes.find(needle, at + 1)) {
    char flipped = static_cast<char>(bytes[at + 100] ^ 0x5a);
    if (::pwrite(fd.get(), &flipped, 1, static_cast<off_t>(at + 100)) != 1) {
      return IoError("cannot write " + img);
    }
    ++damaged;
  }
  auto r = RunCommand({"zpool", "import", "-d", t.zfs_pool_dir, t.zfs_pool});
  if (!r.ok() || !r->ok()) return IoError("zpool import " + t.zfs_pool + " failed");
  return damaged;
}

TestStore MakeZfsTestStore() {
  TestStore t;
  ZfsTestEnv& env = ZfsTestEnv::Get();
  t.skip_reason = env.Ready();
  if (!t.skip_reason.empty()) return t;
  auto parent = env.NewParent();
  if (!parent.ok()) {
    t.skip_reason = "cannot create a test dataset: " + parent.status().ToString();
    return t;
  }
  auto scratch = env.NewScratch();
  if (!scratch.ok()) {
    t.skip_reason = scratch.status().ToString();
    return t;
  }
  OpenInto(t, *parent, *scratch);
  return t;
}

}  // namespace hc::storage::testing
