#include "storage/zfs/zfs_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

namespace hc::storage::zfs {
namespace {

constexpr size_t kReadChunk = 1 << 20;

std::vector<std::string> SplitFields(const std::string& line, char sep) {
  std::vector<std::string> out;
  size_t i = 0;
  for (;;) {
    size_t j = line.find(sep, i);
    out.push_back(line.substr(i, j == std::string::npos ? j : j - i));
    if (j == std::string::npos) break;
    i = j + 1;
  }
  return out;
}

// "a//b/./c/" -> "a/b/c"; "" -> "." (the root). ".." is refused before the
// kernel sees it so the error does not depend on where it would lead.
Result<std::string> NormalizePath(const std::string& path, const std::string& label) {
  std::string out;
  for (const std::string& seg : SplitFields(path, '/')) {
    if (seg.empty() || seg == ".") continue;
    if (seg == "..") {
      return PermissionDenied("path '" + path + "' in " + label +
                              " contains '..'; paths must stay inside the "
                              "snapshot");
    }
    if (!out.empty()) out += '/';
    out += seg;
  }
  return out.empty() ? std::string(".") : out;
}

Status BrowseErrno(int err, const std::string& path, const std::string& label) {
  switch (err) {
    case EXDEV:
      return PermissionDenied("path '" + path + "' in " + label +
                              " leads outside the snapshot (through a "
                              "symlink); refused");
    case ENOENT: return NotFound(label + " has no '" + path + "'");
    case ENOTDIR:
      return NotFound("'" + path + "' in " + label +
                      " is not a directory (or a part of it is not)");
    case ELOOP:
      return InvalidArgument("path '" + path + "' in " + label +
                             " has too many levels of symlinks");
    case EACCES:
    case EPERM:
      return PermissionDenied("cannot open '" + path + "' in " + label + ": " + std::strerror(err));
    default: return ErrnoStatus("open '" + path + "' in " + label, err);
  }
}

int OpenAt2(int dir_fd, const std::string& rel, uint64_t flags, uint64_t resolve) {
  struct open_how how;
  std::memset(&how, 0, sizeof how);
  how.flags = flags | O_CLOEXEC;
  how.resolve = resolve;
  long fd;
  do {
    fd = ::syscall(SYS_openat2, dir_fd, rel.c_str(), &how, sizeof how);
  } while (fd < 0 && errno == EINTR);
  return static_cast<int>(fd);
}

// Opens `rel` (already normalized) below the root, following symlinks only
// while they stay below it.
Result<UniqueFd> OpenBeneath(int root_fd, const std::string& rel, int flags,
                             const std::string& shown, const std::string& label) {
  int fd = OpenAt2(root_fd, rel, static_cast<uint64_t>(flags),
                   RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV);
  if (fd < 0) return BrowseErrno(errno, shown, label);
  return UniqueFd(fd);
}

FileType TypeOf(mode_t m) {
  if (S_ISREG(m)) return FileType::kFile;
  if (S_ISDIR(m)) return FileType::kDirectory;
  if (S_ISLNK(m)) return FileType::kSymlink;
  return FileType::kOther;
}

DirEntry EntryFromStat(const std::string& name, const struct stat& st) {
  DirEntry e;
  e.name = name;
  e.type = TypeOf(st.st_mode);
  e.mode = st.st_mode & 07777;
  // A directory's st_size is file-system specific (entry count on ZFS);
  // the store reports 0 like the `dir` backend's trees.
  e.size = e.type == FileType::kDirectory ? 0 : static_cast<uint64_t>(st.st_size);
  e.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return e;
}

Result<std::string> ReadLinkAt(int dir_fd, const std::string& name) {
  std::string buf(4096, '\0');
  ssize_t n = ::readlinkat(dir_fd, name.c_str(), buf.data(), buf.size());
  if (n < 0) return ErrnoStatus("readlink " + name, errno);
  buf.resize(static_cast<size_t>(n));
  return buf;
}

Result<std::vector<DirEntry>> ReadDirectory(int dir_fd) {
  int dup_fd = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) return ErrnoStatus("dup", errno);
  DIR* d = ::fdopendir(dup_fd);
  if (d == nullptr) {
    int err = errno;
    ::close(dup_fd);
    return ErrnoStatus("fdopendir", err);
  }
  std::vector<DirEntry> out;
  Status status;
  errno = 0;
  while (struct dirent* de = ::readdir(d)) {
    std::string name = de->d_name;
    if (name == "." || name == "..") continue;
    struct stat st;
    if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      status = ErrnoStatus("stat " + name, errno);
      break;
    }
    DirEntry e = EntryFromStat(name, st);
    if (e.type == FileType::kSymlink) {
      auto target = ReadLinkAt(dir_fd, name);
      if (!target.ok()) {
        status = target.status();
        break;
      }
      e.link_target = std::move(*target);
    }
    out.push_back(std::move(e));
  }
  ::closedir(d);
  HC_RETURN_IF_ERROR(status);
  std::sort(out.begin(), out.end(),
            [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
  return out;
}

using WalkMap = std::map<std::string, DirEntry>;

// Records every entry below `dir_fd` without following symlinks.
Status Walk(int dir_fd, const std::string& prefix, WalkMap& out) {
  HC_ASSIGN_OR_RETURN(std::vector<DirEntry> entries, ReadDirectory(dir_fd));
  for (DirEntry& e : entries) {
    std::string path = prefix.empty() ? e.name : prefix + "/" + e.name;
    if (e.type == FileType::kDirectory) {
      int sub = OpenAt2(dir_fd, e.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW,
                        RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV);
      if (sub < 0) return ErrnoStatus("open directory " + path, errno);
      UniqueFd sub_fd(sub);
      out.emplace(path, std::move(e));
      HC_RETURN_IF_ERROR(Walk(sub_fd.get(), path, out));
    } else {
      out.emplace(path, std::move(e));
    }
  }
  return Status::Ok();
}

Result<bool> SameContent(int from_root, int to_root, const std::string& path) {
  const uint64_t resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV;
  int a = OpenAt2(from_root, path, O_RDONLY | O_NOFOLLOW, resolve);
  if (a < 0) return ErrnoStatus("open " + path, errno);
  UniqueFd fa(a);
  int b = OpenAt2(to_root, path, O_RDONLY | O_NOFOLLOW, resolve);
  if (b < 0) return ErrnoStatus("open " + path, errno);
  UniqueFd fb(b);
  std::vector<char> ba(kReadChunk), bb(kReadChunk);
  auto read_full = [](int fd, std::vector<char>& buf) -> ssize_t {
    size_t got = 0;
    while (got < buf.size()) {
      ssize_t n = ::read(fd, buf.data() + got, buf.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return -1;
      if (n == 0) break;
      got += static_cast<size_t>(n);
    }
    return static_cast<ssize_t>(got);
  };
  for (;;) {
    ssize_t na = read_full(fa.get(), ba);
    ssize_t nb = read_full(fb.get(), bb);
    if (na < 0 || nb < 0) return ErrnoStatus("read " + path, errno);
    if (na != nb || std::memcmp(ba.data(), bb.data(), static_cast<size_t>(na))) {
      return false;
    }
    if (na == 0) return true;
  }
}

}  // namespace

PropertyTable ParseGetOutput(const std::string& text) {
  PropertyTable t;
  for (const std::string& line : SplitFields(text, '\n')) {
    std::vector<std::string> f = SplitFields(line, '\t');
    if (f.size() != 3) continue;
    t[f[0]][f[1]] = f[2];
  }
  return t;
}

uint64_t ParseU64(const std::string& s, uint64_t fallback) {
  if (s.empty() || s.size() > 20) return fallback;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return fallback;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return fallback;
    v = v * 10 + d;
  }
  return v;
}

bool IsBusyError(const std::string& err) {
  return err.find("dataset is busy") != std::string::npos ||
         err.find("Device or resource busy") != std::string::npos;
}

Result<std::vector<DirEntry>> BrowseListDir(int root_fd, const std::string& path,
                                            const std::string& label) {
  HC_ASSIGN_OR_RETURN(std::string rel, NormalizePath(path, label));
  HC_ASSIGN_OR_RETURN(UniqueFd fd, OpenBeneath(root_fd, rel, O_RDONLY | O_DIRECTORY, path, label));
  return ReadDirectory(fd.get());
}

Result<DirEntry> BrowseStat(int root_fd, const std::string& path, const std::string& label) {
  HC_ASSIGN_OR_RETURN(std::string rel, NormalizePath(path, label));
  struct stat st;
  if (rel == ".") {
    if (::fstat(root_fd, &st) != 0) return ErrnoStatus("stat " + label, errno);
    return EntryFromStat("", st);
  }
  size_t slash = rel.rfind('/');
  std::string parent = slash == std::string::npos ? "." : rel.substr(0, slash);
  std::string name = slash == std::string::npos ? rel : rel.substr(slash + 1);
  HC_ASSIGN_OR_RETURN(UniqueFd dir,
                      OpenBeneath(root_fd, parent, O_PATH | O_DIRECTORY, path, label));
  if (::fstatat(dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0) {
    return BrowseErrno(errno, path, label);
  }
  DirEntry e = EntryFromStat(name, st);
  if (e.type == FileType::kSymlink) {
    HC_ASSIGN_OR_RETURN(e.link_target, ReadLinkAt(dir.get(), name));
    // A link that leads outside is refused like any other escape; one that
    // dangles inside the snapshot is still a valid entry to show.
    int fd =
        OpenAt2(root_fd, rel, O_PATH, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV);
    if (fd >= 0) {
      ::close(fd);
    } else if (errno == EXDEV) {
      return BrowseErrno(EXDEV, path, label);
    }
  }
  return e;
}

Status BrowseReadFile(int root_fd, const std::string& path, const std::string& label,
                      ByteSink& out) {
  HC_ASSIGN_OR_RETURN(std::string rel, NormalizePath(path, label));
  HC_ASSIGN_OR_RETURN(UniqueFd fd, OpenBeneath(root_fd, rel, O_RDONLY, path, label));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus("stat " + path, errno);
  if (S_ISDIR(st.st_mode)) {
    return InvalidArgument("'" + path + "' in " + label + " is a directory; list it instead");
  }
  if (!S_ISREG(st.st_mode)) {
    return InvalidArgument("'" + path + "' in " + label + " is not a regular file");
  }
  std::vector<uint8_t> buf(kReadChunk);
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("read '" + path + "' in " + label, errno);
    }
    if (n == 0) return Status::Ok();
    HC_RETURN_IF_ERROR(out.Write({buf.data(), static_cast<size_t>(n)}));
  }
}

Result<std::vector<DiffEntry>> DiffTrees(int from_root_fd, int to_root_fd) {
  WalkMap from, to;
  HC_RETURN_IF_ERROR(Walk(from_root_fd, "", from));
  HC_RETURN_IF_ERROR(Walk(to_root_fd, "", to));
  std::vector<DiffEntry> out;
  auto fi = from.begin();
  auto ti = to.begin();
  while (fi != from.end() || ti != to.end()) {
    if (ti == to.end() || (fi != from.end() && fi->first < ti->first)) {
      out.push_back({DiffEntry::Kind::kDeleted, fi->first, fi->second.type});
      ++fi;
    } else if (fi == from.end() || ti->first < fi->first) {
      out.push_back({DiffEntry::Kind::kAdded, ti->first, ti->second.type});
      ++ti;
    } else {
      const DirEntry& a = fi->second;
      const DirEntry& b = ti->second;
      bool modified = a.type != b.type || a.mode != b.mode;
      if (!modified && a.type != FileType::kDirectory) {
        modified = a.size != b.size || a.mtime_ns != b.mtime_ns || a.link_target != b.link_target;
      }
      if (!modified && a.type == FileType::kFile) {
        HC_ASSIGN_OR_RETURN(bool same, SameContent(from_root_fd, to_root_fd, fi->first));
        modified = !same;
      }
      if (modified) {
        out.push_back({DiffEntry::Kind::kModified, ti->first, b.type});
      }
      ++fi;
      ++ti;
    }
  }
  return out;
}

}  // namespace hc::storage::zfs
