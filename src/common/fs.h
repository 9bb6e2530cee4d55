// Small file-system helpers over POSIX calls. All paths are plain strings;
// errors come back as Status with the path in the message.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <string>
#include <utility>

#include "common/status.h"

namespace hc {

// Owns a file descriptor and closes it.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

Result<UniqueFd> OpenFile(const std::string& path, int flags, mode_t mode = 0644);
Result<std::string> ReadFileToString(const std::string& path);
// Writes to "<path>.tmp.<pid>" (created with `mode`) then renames over
// `path`; fsyncs if `sync`.
Status WriteFileAtomic(const std::string& path, std::string_view data, bool sync,
                       mode_t mode = 0644);
// mkdir -p.
Status MakeDirs(const std::string& path, mode_t mode = 0755);
// rm -rf; a missing path is not an error. Never crosses mount points.
Status RemoveTree(const std::string& path);
// rm -rf of `name` relative to the directory `dirfd`.
Status RemoveTreeAt(int dirfd, const std::string& name);
bool PathExists(const std::string& path);
std::string JoinPath(const std::string& a, const std::string& b);
// The running program's path (/proc/self/exe), "" if unknown.
std::string SelfExePath();

// Holds an flock() on a lock file until destroyed.
class FileLock {
 public:
  // Blocks until the lock is granted.
  static Result<FileLock> Acquire(const std::string& path, bool exclusive);
  FileLock(FileLock&&) = default;
  FileLock& operator=(FileLock&&) = default;

 private:
  explicit FileLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace hc
