#include "storage/dir/tree_ops.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>
#include <tuple>

#include "common/fs.h"
#include "storage/stream_format.h"

namespace hc::storage::dir {
namespace {

// A file modified within this margin before a scan started may share its
// mtime with a later write (coarse file-system clocks): it is re-read.
constexpr int64_t kRacyMarginNs = 100'000'000;

int64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}
int64_t Ns(const struct timespec& ts) {
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}
std::string Join(const std::string& rel, const std::string& name) {
  return rel.empty() ? name : rel + "/" + name;
}

Result<std::vector<std::string>> ReadNames(int dirfd, const std::string& what) {
  int fd = ::dup(dirfd);
  if (fd < 0) return ErrnoStatus("dup", errno);
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return ErrnoStatus("opendir " + what, errno);
  }
  ::rewinddir(d);
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    names.emplace_back(e->d_name);
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) return ErrnoStatus("readdir " + what, err);
  std::sort(names.begin(), names.end());
  return names;
}

class Scanner {
 public:
  // `spare` counts the threads that may still be started to scan
  // subdirectories in parallel (shared by all scanners of one scan).
  Scanner(StatCache& old, ChunkStore* store, std::atomic<int>* spare,
          const ScanHints* hints = nullptr)
      : old_(&old), store_(store), spare_(spare), hints_(hints) {
    buf_.resize(kMaxChunk);
  }

  void RebindCache(StatCache* old) { old_ = old; }

  // `prev` is this directory's id in hints_->prev_root (incremental scans).
  Result<Digest> ScanDir(int dirfd, const std::string& rel, const Digest* prev = nullptr) {
    Tree prev_tree;
    if (hints_ != nullptr && prev != nullptr) {
      if (!hints_->visit->count(rel)) return *prev;  // untouched: cache entries stay
      HC_ASSIGN_OR_RETURN(prev_tree, hints_->reader->LoadTree(*prev));
    }
    HC_ASSIGN_OR_RETURN(auto names, ReadNames(dirfd, rel.empty() ? "." : rel));
    Tree tree;
    tree.entries.reserve(names.size());
    auto old_dir = old_->dirs.find(rel);
    old_files_ = old_dir == old_->dirs.end() ? nullptr : &old_dir->second;
    racy_after_ = old_->ScannedAt(rel);
    old_pos_ = 0;
    std::vector<CachedFile> files;  // this directory's new cache entries
    files_ = &files;
    // Subdirectories handed to another thread: (entry index, its result).
    struct Forked {
      size_t index;
      std::future<std::pair<Result<Digest>, ScanResult>> result;
    };
    std::vector<Forked> forked;
    Status failed;
    for (auto& name : names) {
      struct stat st;
      if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) continue;  // deleted while we scan
        failed = ErrnoStatus("stat " + Join(rel, name), errno);
        break;
      }
      TreeEntry e;
      e.mode = st.st_mode & 07777;
      e.uid = st.st_uid;
      e.gid = st.st_gid;
      e.mtime_ns = Ns(st.st_mtim);
      std::string path = Join(rel, name);
      if (S_ISREG(st.st_mode)) {
        e.type = FileType::kFile;
        failed = ScanFile(dirfd, name, path, st, &e);
        if (!failed.ok()) break;
      } else if (S_ISDIR(st.st_mode)) {
        e.type = FileType::kDirectory;
        int sub = ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0) {
          if (errno == ENOENT) continue;  // deleted while we scan
          failed = ErrnoStatus("open " + path, errno);
          break;
        }
        const TreeEntry* was = prev_tree.Find(name);
        const Digest* child_prev =
            was != nullptr && was->type == FileType::kDirectory ? &was->subtree : nullptr;
        // Incremental scans share one cache object: no forking.
        if (hints_ == nullptr && spare_->fetch_sub(1) > 0) {
          forked.push_back({tree.entries.size(), std::async(std::launch::async, [this, sub, path] {
                              Scanner child(*old_, store_, spare_);
                              child.scan_start_ = scan_start_;
                              auto d = child.ScanDir(sub, path);
                              ::close(sub);
                              spare_->fetch_add(1);
                              return std::make_pair(std::move(d), std::move(child.result));
                            })});
        } else {
          if (hints_ == nullptr) spare_->fetch_add(1);
          // Recursion reuses the per-directory cursors: save ours.
          auto saved = std::make_tuple(old_files_, old_pos_, files_, racy_after_);
          auto d = ScanDir(sub, path, child_prev);
          std::tie(old_files_, old_pos_, files_, racy_after_) = saved;
          ::close(sub);
          if (!d.ok()) {
            failed = d.status();
            break;
          }
          e.subtree = *d;
        }
      } else if (S_ISLNK(st.st_mode)) {
        e.type = FileType::kSymlink;
        char target[4097];
        ssize_t n = ::readlinkat(dirfd, name.c_str(), target, sizeof target - 1);
        if (n < 0) {
          failed = ErrnoStatus("readlink " + path, errno);
          break;
        }
        e.link_target.assign(target, static_cast<size_t>(n));
        e.size = static_cast<uint64_t>(n);
      } else {
        e.type = FileType::kOther;
      }
      e.name = std::move(name);
      tree.entries.push_back(std::move(e));
    }
    // Join every forked scan, even after a failure: they use our state.
    for (auto& f : forked) {
      auto [digest, part] = f.result.get();
      if (!digest.ok()) {
        if (failed.ok()) failed = digest.status();
        continue;
      }
      tree.entries[f.index].subtree = *digest;
      result.files_read += part.files_read;
      result.multi_link_dirs.merge(part.multi_link_dirs);
      result.new_multi_link |= part.new_multi_link;
      result.chunks_added += part.chunks_added;
      for (auto& kv : part.cache.dirs) result.cache.dirs.insert(std::move(kv));
      for (auto& kv : part.cache.dir_scanned_ns) result.cache.dir_scanned_ns.insert(kv);
    }
    HC_RETURN_IF_ERROR(failed);
    // Subdirectories that went away take their cache entries with them
    // (only an incremental scan starts from a filled cache).
    for (const auto& was : prev_tree.entries) {
      if (was.type != FileType::kDirectory) continue;
      const TreeEntry* now = tree.Find(was.name);
      if (now == nullptr || now->type != FileType::kDirectory) {
        result.cache.EraseTree(Join(rel, was.name));
      }
    }
    if (!files.empty()) {
      result.cache.dirs[rel] = std::move(files);
      result.cache.dir_scanned_ns[rel] = scan_start_;
    } else {
      result.cache.dirs.erase(rel);
      result.cache.dir_scanned_ns.erase(rel);
    }
    std::string enc = EncodeTree(tree);
    if (store_ != nullptr) {
      bool added = false;
      auto id = store_->Put(ChunkKind::kTree, AsBytes(enc), &added);
      if (added) ++result.chunks_added;
      return id;
    }
    return ChunkId(ChunkKind::kTree, AsBytes(enc));
  }

  ScanResult result;

 private:
  Status ScanFile(int dirfd, const std::string& name, const std::string& path,
                  const struct stat& st, TreeEntry* e) {
    if (st.st_nlink > 1) {
      result.multi_link_dirs.insert(
          path.size() > name.size() ? path.substr(0, path.size() - name.size() - 1) : "");
    }
    CachedFile now;
    now.ino = st.st_ino;
    now.ctime_ns = Ns(st.st_ctim);
    now.mtime_ns = Ns(st.st_mtim);
    now.size = static_cast<uint64_t>(st.st_size);
    now.name = name;
    // Names arrive sorted, and so are the cached ones: advance a cursor.
    CachedFile* c = nullptr;
    if (old_files_ != nullptr) {
      while (old_pos_ < old_files_->size() && (*old_files_)[old_pos_].name < name) ++old_pos_;
      if (old_pos_ < old_files_->size() && (*old_files_)[old_pos_].name == name) {
        c = &(*old_files_)[old_pos_];
      }
    }
    if (c != nullptr) {
      bool racy =
          c->mtime_ns + kRacyMarginNs >= racy_after_ || c->ctime_ns + kRacyMarginNs >= racy_after_;
      // The cache's chunks are present: garbage collection treats every
      // volume's stat cache as a root.
      if (!racy && c->ino == now.ino && c->ctime_ns == now.ctime_ns &&
          c->mtime_ns == now.mtime_ns && c->size == now.size) {
        e->size = c->size;
        e->chunks = c->chunks;
        files_->push_back(std::move(*c));
        return Status::Ok();
      }
    }
    int fd = ::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME);
    if (fd < 0 && errno == EPERM) {
      fd = ::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) return ErrnoStatus("open " + path, errno);
    UniqueFd guard(fd);
    ++result.files_read;
    // Reached only when the cache did not vouch for the file: new or changed.
    if (st.st_nlink > 1) result.new_multi_link = true;
    uint64_t total = 0;
    for (;;) {
      size_t got = 0;
      while (got < kMaxChunk) {
        ssize_t n = ::read(fd, buf_.data() + got, kMaxChunk - got);
        if (n < 0) {
          if (errno == EINTR) continue;
          return ErrnoStatus("read " + path, errno);
        }
        if (n == 0) break;
        got += static_cast<size_t>(n);
      }
      if (got == 0) break;
      std::span<const uint8_t> piece(buf_.data(), got);
      Digest id;
      if (store_ != nullptr) {
        bool added = false;
        HC_ASSIGN_OR_RETURN(id, store_->Put(ChunkKind::kData, piece, &added));
        if (added) ++result.chunks_added;
      } else {
        id = ChunkId(ChunkKind::kData, piece);
      }
      e->chunks.push_back({id, static_cast<uint32_t>(got)});
      total += got;
      if (got < kMaxChunk) break;
    }
    e->size = total;
    // The size we read wins over the stat taken before: the file may have
    // changed while we read it (callers freeze the app for consistency).
    now.size = total;
    now.chunks = e->chunks;
    files_->push_back(std::move(now));
    return Status::Ok();
  }

  // Entries are moved out as they are matched; concurrent scanners touch
  // disjoint entries and never change the map's structure.
  StatCache* old_;
  // Cached entries of the directory being scanned at or after this instant
  // are not trusted (see above).
  int64_t racy_after_ = 0;
  // When this scan started; recorded as the scan time of what it rescans.
  int64_t scan_start_ = NowNs();
  ChunkStore* store_;
  std::atomic<int>* spare_;
  const ScanHints* hints_;
  // Cursor into the cached files of the directory being scanned, and the
  // list of its new entries (both saved around recursion).
  std::vector<CachedFile>* old_files_ = nullptr;
  size_t old_pos_ = 0;
  std::vector<CachedFile>* files_ = nullptr;
  std::vector<uint8_t> buf_;
};

}  // namespace

bool ChunkReader::Has(const Digest& id) const {
  return ::access(PathOf(id).c_str(), F_OK) == 0;
}

Result<StoredChunk> ChunkReader::ReadStored(const Digest& id) const {
  auto data = ReadFileToString(PathOf(id));
  if (!data.ok()) {
    if (data.status().code() == Code::kNotFound) {
      return Corrupt("chunk " + ToHex(id) + " is missing from the store");
    }
    return data.status();
  }
  auto r = ParseChunkFile(AsBytes(*data));
  if (!r.ok()) return r.status().Annotate("chunk " + ToHex(id));
  return r;
}

Result<Tree> ChunkReader::LoadTree(const Digest& id) const {
  HC_ASSIGN_OR_RETURN(StoredChunk c, ReadStored(id));
  if (c.kind != ChunkKind::kTree) return Corrupt("object " + ToHex(id) + " is not a tree");
  std::vector<uint8_t> raw;
  HC_RETURN_IF_ERROR(ChunkStore::Verify(id, c, &raw));
  auto t = DecodeTree(raw);
  if (!t.ok()) return t.status().Annotate("tree " + ToHex(id));
  return t;
}

namespace {
void CountFromCache(ScanResult* r) {
  r->file_count = 0;
  r->logical_bytes = 0;
  for (const auto& [dir, files] : r->cache.dirs) {
    r->file_count += files.size();
    for (const auto& f : files) r->logical_bytes += f.size;
  }
}
}  // namespace

Result<ScanResult> ScanLive(const std::string& live_dir, StatCache old, ChunkStore* store) {
  // One extra thread per further core: stat() dominates a scan, and on
  // virtual machines each system call is expensive.
  std::atomic<int> spare{static_cast<int>(std::max(1u, std::thread::hardware_concurrency())) - 1};
  Scanner s(old, store, &spare);
  s.result.cache.scan_start_ns = NowNs();
  s.result.cache.dirs.reserve(old.dirs.size());
  int fd = ::open(live_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open " + live_dir, errno);
  UniqueFd guard(fd);
  HC_ASSIGN_OR_RETURN(s.result.root, s.ScanDir(fd, ""));
  CountFromCache(&s.result);
  return std::move(s.result);
}

Result<ScanResult> ScanLiveIncremental(const std::string& live_dir, StatCache old,
                                       ChunkStore* store, const ScanHints& hints) {
  std::atomic<int> spare{0};
  StatCache unused;
  Scanner s(unused, store, &spare, &hints);
  // One cache is read and updated in place: entries of directories the scan
  // does not visit stay as they are.
  s.result.cache = std::move(old);
  s.RebindCache(&s.result.cache);
  int fd = ::open(live_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open " + live_dir, errno);
  UniqueFd guard(fd);
  HC_ASSIGN_OR_RETURN(s.result.root, s.ScanDir(fd, "", &hints.prev_root));
  CountFromCache(&s.result);
  return std::move(s.result);
}

// ---------------------------------------------------------------------------
// Checkout

namespace {

std::atomic<uint64_t> g_tmp_seq{0};

class CheckoutRun {
 public:
  CheckoutRun(const ChunkReader& reader, const DigestSet& verified, StatCache* cache)
      : reader_(reader), verified_(verified), cache_(cache), root_(geteuid() == 0) {}

  Status Dir(int dirfd, const std::string& rel, const Tree* from, const Tree& to) {
    // Removals first, so a name that changes type is free for the new entry.
    if (from != nullptr) {
      for (const auto& old : from->entries) {
        const TreeEntry* now = to.Find(old.name);
        if (now == nullptr || now->type != old.type) {
          HC_RETURN_IF_ERROR(Remove(dirfd, rel, old));
        }
      }
    }
    for (const auto& e : to.entries) {
      const TreeEntry* old = from ? from->Find(e.name) : nullptr;
      if (old != nullptr && old->type != e.type) old = nullptr;
      if (old != nullptr && *old == e) continue;
      std::string path = Join(rel, e.name);
      switch (e.type) {
        case FileType::kFile:
          if (old != nullptr && old->chunks == e.chunks) {
            HC_RETURN_IF_ERROR(SetMeta(dirfd, e, e.name, path));
            HC_RETURN_IF_ERROR(RefreshCache(dirfd, e, path));
          } else {
            jobs_.push_back({path, e});
          }
          break;
        case FileType::kDirectory: {
          if (old == nullptr && ::mkdirat(dirfd, e.name.c_str(), 0700) != 0) {
            return ErrnoStatus("mkdir " + path, errno);
          }
          if (old == nullptr || old->subtree != e.subtree) {
            int sub =
                ::openat(dirfd, e.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) return ErrnoStatus("open " + path, errno);
            UniqueFd guard(sub);
            HC_ASSIGN_OR_RETURN(Tree to_sub, reader_.LoadTree(e.subtree));
            if (old != nullptr) {
              HC_ASSIGN_OR_RETURN(Tree from_sub, reader_.LoadTree(old->subtree));
              HC_RETURN_IF_ERROR(Dir(sub, path, &from_sub, to_sub));
            } else {
              HC_RETURN_IF_ERROR(Dir(sub, path, nullptr, to_sub));
            }
          }
          // Directory times are set last, after the files below are written.
          dir_meta_.push_back({path, e});
          break;
        }
        case FileType::kSymlink: {
          std::string tmp = TmpName(e.name);
          if (::symlinkat(e.link_target.c_str(), dirfd, tmp.c_str()) != 0) {
            return ErrnoStatus("symlink " + path, errno);
          }
          if (root_) ::fchownat(dirfd, tmp.c_str(), e.uid, e.gid, AT_SYMLINK_NOFOLLOW);
          struct timespec ts[2] = {{0, UTIME_OMIT},
                                   {e.mtime_ns / 1'000'000'000, e.mtime_ns % 1'000'000'000}};
          ::utimensat(dirfd, tmp.c_str(), ts, AT_SYMLINK_NOFOLLOW);
          if (::renameat(dirfd, tmp.c_str(), dirfd, e.name.c_str()) != 0) {
            int err = errno;
            ::unlinkat(dirfd, tmp.c_str(), 0);
            return ErrnoStatus("rename " + path, err);
          }
          break;
        }
        case FileType::kOther:
          // Fifos, sockets and devices are recorded but not recreated.
          break;
      }
    }
    return Status::Ok();
  }

 private:
  static std::string TmpName(const std::string& name) {
    return ".hc-tmp-" + std::to_string(::getpid()) + "-" + std::to_string(g_tmp_seq.fetch_add(1)) +
           "-" + name.substr(0, 100);
  }

  Status Remove(int dirfd, const std::string& rel, const TreeEntry& old) {
    std::string path = Join(rel, old.name);
    if (old.type == FileType::kDirectory) {
      cache_->EraseTree(path);
      return RemoveTreeAt(dirfd, old.name).Annotate(path);
    }
    cache_->Erase(path);
    if (::unlinkat(dirfd, old.name.c_str(), 0) != 0 && errno != ENOENT) {
      return ErrnoStatus("remove " + path, errno);
    }
    return Status::Ok();
  }

  // `name` is relative to `dirfd`; `path` names it in messages.
  Status SetMeta(int dirfd, const TreeEntry& e, const std::string& name, const std::string& path) {
    if (root_ && ::fchownat(dirfd, name.c_str(), e.uid, e.gid, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoStatus("chown " + path, errno);
    }
    if (::fchmodat(dirfd, name.c_str(), e.mode, 0) != 0) {
      return ErrnoStatus("chmod " + path, errno);
    }
    struct timespec ts[2] = {{0, UTIME_OMIT},
                             {e.mtime_ns / 1'000'000'000, e.mtime_ns % 1'000'000'000}};
    if (::utimensat(dirfd, name.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoStatus("set times of " + path, errno);
    }
    return Status::Ok();
  }

  Status RefreshCache(int dirfd, const TreeEntry& e, const std::string& path) {
    struct stat st;
    if (::fstatat(dirfd, e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoStatus("stat " + path, errno);
    }
    CachedFile c;
    c.ino = st.st_ino;
    c.ctime_ns = Ns(st.st_ctim);
    c.mtime_ns = Ns(st.st_mtim);
    c.size = e.size;
    c.chunks = e.chunks;
    cache_->Put(path, std::move(c));
    return Status::Ok();
  }

 public:
  // Writes the files collected by Dir() on all cores, then sets the times
  // of the directories (children first).
  Status Finish(int root_fd) {
    std::vector<CachedFile> results(jobs_.size());
    std::atomic<size_t> next{0};
    std::mutex mu;
    Status first_error;
    auto worker = [&] {
      std::vector<uint8_t> raw;
      for (;;) {
        size_t i = next.fetch_add(1);
        if (i >= jobs_.size()) return;
        Status st = WriteFile(root_fd, jobs_[i], &raw, &results[i]);
        if (!st.ok()) {
          std::lock_guard<std::mutex> l(mu);
          if (first_error.ok()) first_error = st;
          next = jobs_.size();
        }
      }
    };
    size_t n = std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), 4);
    if (jobs_.size() < 16) n = 1;
    std::vector<std::thread> threads;
    for (size_t t = 1; t < n; ++t) threads.emplace_back(worker);
    worker();
    for (auto& t : threads) t.join();
    HC_RETURN_IF_ERROR(first_error);
    for (size_t i = 0; i < jobs_.size(); ++i) {
      cache_->Put(jobs_[i].path, std::move(results[i]));
    }
    for (const auto& d : dir_meta_) HC_RETURN_IF_ERROR(SetMeta(root_fd, d.entry, d.path, d.path));
    return Status::Ok();
  }

 private:
  struct Job {
    std::string path;  // relative to the checkout root
    TreeEntry entry;
  };

  Status CopyChunk(int out, const Digest& id, uint32_t len, const std::string& path,
                   std::vector<uint8_t>* raw) const {
    std::string cpath = reader_.PathOf(id);
    HC_ASSIGN_OR_RETURN(UniqueFd in, OpenFile(cpath, O_RDONLY));
    uint8_t header[kChunkHeader];
    if (::pread(in.get(), header, kChunkHeader, 0) != static_cast<ssize_t>(kChunkHeader)) {
      return Corrupt("chunk " + ToHex(id) + " of " + path + " is truncated");
    }
    bool trusted = verified_.count(id) != 0;
    if (trusted && header[5] == static_cast<uint8_t>(Codec::kRaw)) {
      // Verified raw chunk: copy inside the kernel.
      loff_t off = kChunkHeader;
      size_t left = len;
      while (left > 0) {
        ssize_t n = ::copy_file_range(in.get(), &off, out, nullptr, left, 0);
        if (n <= 0) {
          if (n < 0 && errno == EINTR) continue;
          if (n == 0) return Corrupt("chunk " + ToHex(id) + " of " + path + " is short");
          break;  // EXDEV/ENOSYS etc.: fall back to read/write below
        }
        left -= static_cast<size_t>(n);
      }
      if (left == 0) return Status::Ok();
      if (::lseek(out, -static_cast<off_t>(len - left), SEEK_CUR) < 0) {
        return ErrnoStatus("seek " + path, errno);
      }
    }
    HC_ASSIGN_OR_RETURN(StoredChunk c, reader_.ReadStored(id));
    if (c.kind != ChunkKind::kData) return Corrupt("chunk " + ToHex(id) + " is not data");
    if (trusted) {
      HC_RETURN_IF_ERROR(Decompress(c, raw));
    } else {
      HC_RETURN_IF_ERROR(ChunkStore::Verify(id, c, raw).Annotate("reading " + path));
    }
    if (raw->size() != len) return Corrupt("chunk " + ToHex(id) + " has the wrong length");
    return FdSink(out).Write(*raw);
  }

  // Thread-safe: touches only its own file and `*out`.
  Status WriteFile(int root_fd, const Job& job, std::vector<uint8_t>* raw, CachedFile* out) const {
    const TreeEntry& e = job.entry;
    const std::string& path = job.path;
    size_t slash = path.rfind('/');
    std::string tmp =
        (slash == std::string::npos ? "" : path.substr(0, slash + 1)) + TmpName(e.name);
    int fd = ::openat(root_fd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return ErrnoStatus("create " + path, errno);
    UniqueFd guard(fd);
    auto fail = [&](Status s) {
      ::unlinkat(root_fd, tmp.c_str(), 0);
      return s;
    };
    for (const auto& c : e.chunks) {
      Status s = CopyChunk(fd, c.id, c.len, path, raw);
      if (!s.ok()) return fail(s);
    }
    if (root_ && ::fchown(fd, e.uid, e.gid) != 0) return fail(ErrnoStatus("chown " + path, errno));
    if (::fchmod(fd, e.mode) != 0) return fail(ErrnoStatus("chmod " + path, errno));
    struct timespec ts[2] = {{0, UTIME_OMIT},
                             {e.mtime_ns / 1'000'000'000, e.mtime_ns % 1'000'000'000}};
    if (::futimens(fd, ts) != 0) return fail(ErrnoStatus("set times of " + path, errno));
    struct stat st;
    if (::fstat(fd, &st) != 0) return fail(ErrnoStatus("stat " + path, errno));
    if (::renameat(root_fd, tmp.c_str(), root_fd, path.c_str()) != 0) {
      return fail(ErrnoStatus("rename " + path, errno));
    }
    out->ino = st.st_ino;
    // rename() does not change a file's ctime on ext4/xfs, but some file
    // systems do: a mismatch there only costs one re-read.
    out->ctime_ns = Ns(st.st_ctim);
    out->mtime_ns = Ns(st.st_mtim);
    out->size = e.size;
    out->chunks = e.chunks;
    return Status::Ok();
  }

  std::vector<Job> jobs_;
  std::vector<Job> dir_meta_;
  const ChunkReader& reader_;
  const DigestSet& verified_;
  StatCache* cache_;
  bool root_;
};

}  // namespace

Status Checkout(const std::string& live_dir, const ChunkReader& reader, const Digest* from,
                const Digest& to, const DigestSet& verified, StatCache* cache) {
  if (from != nullptr && *from == to) return Status::Ok();
  int fd = ::open(live_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open " + live_dir, errno);
  UniqueFd guard(fd);
  // Cached entries of files written just now are racy against this instant.
  cache->scan_start_ns = NowNs();
  HC_ASSIGN_OR_RETURN(Tree to_tree, reader.LoadTree(to));
  CheckoutRun run(reader, verified, cache);
  if (from != nullptr) {
    HC_ASSIGN_OR_RETURN(Tree from_tree, reader.LoadTree(*from));
    HC_RETURN_IF_ERROR(run.Dir(fd, "", &from_tree, to_tree));
  } else {
    HC_RETURN_IF_ERROR(run.Dir(fd, "", nullptr, to_tree));
  }
  return run.Finish(fd);
}

// ---------------------------------------------------------------------------
// Diff and stream content

namespace {

bool SameMeta(const TreeEntry& a, const TreeEntry& b) {
  return a.mode == b.mode && a.uid == b.uid && a.gid == b.gid;
}

Status ListAll(const ChunkReader& reader, const TreeEntry& e, const std::string& path,
               DiffEntry::Kind kind, const std::function<void(const DiffEntry&)>& out) {
  out({kind, path, e.type});
  if (e.type != FileType::kDirectory) return Status::Ok();
  HC_ASSIGN_OR_RETURN(Tree t, reader.LoadTree(e.subtree));
  for (const auto& c : t.entries) {
    HC_RETURN_IF_ERROR(ListAll(reader, c, path + "/" + c.name, kind, out));
  }
  return Status::Ok();
}

Status DiffDir(const ChunkReader& reader, const Tree& from, const Tree& to, const std::string& rel,
               const std::function<void(const DiffEntry&)>& out) {
  // Merge the two sorted entry lists so the output comes in path order.
  size_t i = 0, j = 0;
  while (i < from.entries.size() || j < to.entries.size()) {
    const TreeEntry* a = i < from.entries.size() ? &from.entries[i] : nullptr;
    const TreeEntry* b = j < to.entries.size() ? &to.entries[j] : nullptr;
    if (b == nullptr || (a != nullptr && a->name < b->name)) {
      HC_RETURN_IF_ERROR(ListAll(reader, *a, Join(rel, a->name), DiffEntry::Kind::kDeleted, out));
      ++i;
      continue;
    }
    if (a == nullptr || b->name < a->name) {
      HC_RETURN_IF_ERROR(ListAll(reader, *b, Join(rel, b->name), DiffEntry::Kind::kAdded, out));
      ++j;
      continue;
    }
    std::string path = Join(rel, a->name);
    if (a->type != b->type) {
      HC_RETURN_IF_ERROR(ListAll(reader, *a, path, DiffEntry::Kind::kDeleted, out));
      HC_RETURN_IF_ERROR(ListAll(reader, *b, path, DiffEntry::Kind::kAdded, out));
    } else if (a->type == FileType::kDirectory) {
      if (!SameMeta(*a, *b)) out({DiffEntry::Kind::kModified, path, b->type});
      if (a->subtree != b->subtree) {
        HC_ASSIGN_OR_RETURN(Tree ta, reader.LoadTree(a->subtree));
        HC_ASSIGN_OR_RETURN(Tree tb, reader.LoadTree(b->subtree));
        HC_RETURN_IF_ERROR(DiffDir(reader, ta, tb, path, out));
      }
    } else if (!(*a == *b)) {
      out({DiffEntry::Kind::kModified, path, b->type});
    }
    ++i;
    ++j;
  }
  return Status::Ok();
}

class NewObjectWalk {
 public:
  NewObjectWalk(const ChunkReader& reader,
                const std::function<Status(const Digest&, ChunkKind)>& fn)
      : reader_(reader), fn_(fn) {}

  Status Walk(const Tree* from, const Digest& to_id) {
    HC_ASSIGN_OR_RETURN(Tree to, reader_.LoadTree(to_id));
    for (const auto& e : to.entries) {
      const TreeEntry* old = from ? from->Find(e.name) : nullptr;
      if (old != nullptr && old->type != e.type) old = nullptr;
      if (e.type == FileType::kFile) {
        if (old != nullptr && old->chunks == e.chunks) continue;
        for (const auto& c : e.chunks) {
          if (old != nullptr &&
              std::find_if(old->chunks.begin(), old->chunks.end(),
                           [&](const ChunkRef& r) { return r.id == c.id; }) != old->chunks.end()) {
            continue;
          }
          if (seen_.insert(c.id).second) HC_RETURN_IF_ERROR(fn_(c.id, ChunkKind::kData));
        }
      } else if (e.type == FileType::kDirectory) {
        if (old != nullptr && old->subtree == e.subtree) continue;
        if (seen_.count(e.subtree)) continue;
        if (old != nullptr) {
          HC_ASSIGN_OR_RETURN(Tree old_sub, reader_.LoadTree(old->subtree));
          HC_RETURN_IF_ERROR(Walk(&old_sub, e.subtree));
        } else {
          HC_RETURN_IF_ERROR(Walk(nullptr, e.subtree));
        }
      }
    }
    if (seen_.insert(to_id).second) HC_RETURN_IF_ERROR(fn_(to_id, ChunkKind::kTree));
    return Status::Ok();
  }

 private:
  const ChunkReader& reader_;
  const std::function<Status(const Digest&, ChunkKind)>& fn_;
  DigestSet seen_;
};

}  // namespace

Status DiffTrees(const ChunkReader& reader, const Digest* from, const Digest& to,
                 const std::function<void(const DiffEntry&)>& on_change) {
  if (from != nullptr && *from == to) return Status::Ok();
  HC_ASSIGN_OR_RETURN(Tree tb, reader.LoadTree(to));
  Tree ta;
  if (from != nullptr) {
    HC_ASSIGN_OR_RETURN(ta, reader.LoadTree(*from));
  }
  return DiffDir(reader, ta, tb, "", on_change);
}

Status NewObjects(const ChunkReader& reader, const Digest* from, const Digest& to,
                  const std::function<Status(const Digest&, ChunkKind)>& fn) {
  if (from != nullptr && *from == to) return Status::Ok();
  NewObjectWalk w(reader, fn);
  if (from != nullptr) {
    HC_ASSIGN_OR_RETURN(Tree ft, reader.LoadTree(*from));
    return w.Walk(&ft, to);
  }
  return w.Walk(nullptr, to);
}

Status WalkObjects(
    const ChunkReader& reader, const Digest& root, DigestSet* seen,
    const std::function<Status(const Digest&, ChunkKind, const std::string& path)>& fn,
    bool strict) {
  struct Item {
    Digest id;
    std::string path;
  };
  std::vector<Item> stack{{root, ""}};
  while (!stack.empty()) {
    Item it = std::move(stack.back());
    stack.pop_back();
    if (!seen->insert(it.id).second) continue;
    HC_RETURN_IF_ERROR(fn(it.id, ChunkKind::kTree, it.path.empty() ? "/" : it.path));
    auto t = reader.LoadTree(it.id);
    if (!t.ok()) {
      if (strict) return t.status().Annotate(it.path.empty() ? "/" : it.path);
      continue;  // fn already saw the tree and can report it
    }
    for (const auto& e : t->entries) {
      std::string p = Join(it.path, e.name);
      if (e.type == FileType::kDirectory) {
        stack.push_back({e.subtree, p});
      } else if (e.type == FileType::kFile) {
        for (const auto& c : e.chunks) {
          if (seen->insert(c.id).second) HC_RETURN_IF_ERROR(fn(c.id, ChunkKind::kData, p));
        }
      }
    }
  }
  return Status::Ok();
}

}  // namespace hc::storage::dir
