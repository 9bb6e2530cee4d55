#include "common/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace hc {

Result<UniqueFd> OpenFile(const std::string& path, int flags, mode_t mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoStatus("open " + path, errno);
  return UniqueFd(fd);
}

Result<std::string> ReadFileToString(const std::string& path) {
  HC_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("read " + path, errno);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Status WriteFileAtomic(const std::string& path, std::string_view data, bool sync, mode_t mode) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    HC_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode));
    // A leftover temporary file keeps its old mode through O_CREAT.
    if (::fchmod(fd.get(), mode) != 0) return ErrnoStatus("chmod " + tmp, errno);
    const char* p = data.data();
    size_t left = data.size();
    while (left > 0) {
      ssize_t n = ::write(fd.get(), p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        ::unlink(tmp.c_str());
        return ErrnoStatus("write " + tmp, err);
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    if (sync && ::fsync(fd.get()) != 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      return ErrnoStatus("fsync " + tmp, err);
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoStatus("rename " + tmp + " -> " + path, err);
  }
  return Status::Ok();
}

Status MakeDirs(const std::string& path, mode_t mode) {
  if (path.empty()) return Status::Ok();
  std::string cur;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    cur = path.substr(0, j);
    if (!cur.empty() && ::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) {
      return ErrnoStatus("mkdir " + cur, errno);
    }
    i = j + 1;
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus("stat " + path, errno);
  if (!S_ISDIR(st.st_mode)) return IoError(path + " exists and is not a directory");
  return Status::Ok();
}

namespace {
Status RemoveAt(int dirfd, const char* name, dev_t dev) {
  struct stat st;
  if (::fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return ErrnoStatus(std::string("stat ") + name, errno);
  }
  if (S_ISDIR(st.st_mode)) {
    if (st.st_dev != dev) {
      return IoError(std::string("refusing to remove mount point ") + name);
    }
    int fd = ::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus(std::string("open ") + name, errno);
    // Make the directory writable so a read-only tree can still be removed.
    ::fchmod(fd, (st.st_mode & 07777) | S_IRWXU);
    DIR* d = ::fdopendir(fd);
    if (d == nullptr) {
      ::close(fd);
      return ErrnoStatus(std::string("opendir ") + name, errno);
    }
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      names.emplace_back(e->d_name);
    }
    Status s;
    for (const auto& n : names) {
      s = RemoveAt(::dirfd(d), n.c_str(), dev);
      if (!s.ok()) break;
    }
    ::closedir(d);
    HC_RETURN_IF_ERROR(s);
    if (::unlinkat(dirfd, name, AT_REMOVEDIR) != 0 && errno != ENOENT) {
      return ErrnoStatus(std::string("rmdir ") + name, errno);
    }
    return Status::Ok();
  }
  if (::unlinkat(dirfd, name, 0) != 0 && errno != ENOENT) {
    return ErrnoStatus(std::string("unlink ") + name, errno);
  }
  return Status::Ok();
}
}  // namespace

Status RemoveTree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return ErrnoStatus("stat " + path, errno);
  }
  return RemoveAt(AT_FDCWD, path.c_str(), st.st_dev).Annotate("remove " + path);
}

Status RemoveTreeAt(int dirfd, const std::string& name) {
  struct stat st;
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return ErrnoStatus("stat " + name, errno);
  }
  return RemoveAt(dirfd, name.c_str(), st.st_dev).Annotate("remove " + name);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

std::string JoinPath(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  if (a.back() == '/') return a + b;
  return a + "/" + b;
}

Result<FileLock> FileLock::Acquire(const std::string& path, bool exclusive) {
  HC_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDWR | O_CREAT, 0644));
  while (::flock(fd.get(), exclusive ? LOCK_EX : LOCK_SH) != 0) {
    if (errno != EINTR) return ErrnoStatus("lock " + path, errno);
  }
  return FileLock(std::move(fd));
}

std::string SelfExePath() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

}  // namespace hc
