#include "storage/dir/change_journal.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace hc::storage::dir {
namespace {

constexpr uint32_t kMask = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE |
                           IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF |
                           IN_ONLYDIR | IN_DONT_FOLLOW;

std::string Join(const std::string& rel, const std::string& name) {
  return rel.empty() ? name : rel + "/" + name;
}
std::string Parent(const std::string& rel) {
  size_t slash = rel.rfind('/');
  return slash == std::string::npos ? "" : rel.substr(0, slash);
}

}  // namespace

ChangeJournal::ChangeJournal() {
  fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
}

ChangeJournal::~ChangeJournal() {
  if (fd_ >= 0) ::close(fd_);
}

bool ChangeJournal::AddTreeLocked(const std::string& volume, const std::string& rel) {
  Volume& v = volumes_[volume];
  std::string path = Join(v.root, rel);
  int wd = ::inotify_add_watch(fd_, path.c_str(), kMask);
  // Gone already (its parent's events cover that) or not a directory: fine.
  // Anything else (out of watches) means the journal cannot vouch.
  if (wd < 0) return errno == ENOENT || errno == ENOTDIR;
  watches_[wd] = {volume, rel};
  // Everything below a directory that appeared is new to the last snapshot.
  v.dirty.insert(rel);
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) return errno == ENOENT;
  std::vector<std::string> subdirs;
  while (struct dirent* e = ::readdir(d)) {
    if (!std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
    if (e->d_type == DT_DIR || e->d_type == DT_UNKNOWN) subdirs.emplace_back(e->d_name);
  }
  ::closedir(d);
  for (const auto& sub : subdirs) {
    if (!AddTreeLocked(volume, Join(rel, sub))) return false;
  }
  return true;
}

void ChangeJournal::ForgetLocked(const std::string& volume) {
  for (auto it = watches_.begin(); it != watches_.end();) {
    if (it->second.volume == volume) {
      ::inotify_rm_watch(fd_, it->first);
      it = watches_.erase(it);
    } else {
      ++it;
    }
  }
  volumes_.erase(volume);
}

void ChangeJournal::Forget(const std::string& volume) {
  std::lock_guard<std::mutex> l(mu_);
  if (fd_ >= 0) {
    DrainLocked();
    ForgetLocked(volume);
  }
}

void ChangeJournal::DrainLocked() {
  alignas(struct inotify_event) char buf[64 * 1024];
  std::vector<std::pair<std::string, std::string>> new_dirs;  // (volume, rel)
  for (;;) {
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EAGAIN: nothing more queued
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<struct inotify_event*>(p);
      p += sizeof(struct inotify_event) + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) {
        for (auto& [name, v] : volumes_) v.valid = false;
        continue;
      }
      auto w = watches_.find(ev->wd);
      if (w == watches_.end()) continue;
      if (ev->mask & IN_IGNORED) {
        watches_.erase(w);
        continue;
      }
      auto vit = volumes_.find(w->second.volume);
      if (vit == volumes_.end()) continue;
      Volume& v = vit->second;
      const std::string& rel = w->second.rel;
      bool is_dir = ev->mask & IN_ISDIR;
      std::string name = ev->len > 0 ? std::string(ev->name) : "";
      // A renamed directory would leave every watch below it with a wrong
      // path: start over rather than guess.
      if ((is_dir && (ev->mask & (IN_MOVED_FROM | IN_MOVED_TO))) || (ev->mask & IN_MOVE_SELF) ||
          (rel.empty() && (ev->mask & IN_DELETE_SELF))) {
        v.valid = false;
        continue;
      }
      v.dirty.insert(rel);
      if (name.empty() && !rel.empty()) v.dirty.insert(Parent(rel));  // own metadata
      if (is_dir && (ev->mask & IN_CREATE))
        new_dirs.emplace_back(w->second.volume, Join(rel, name));
    }
  }
  for (const auto& [volume, rel] : new_dirs) {
    auto vit = volumes_.find(volume);
    if (vit == volumes_.end() || !vit->second.valid) continue;
    if (!AddTreeLocked(volume, rel)) vit->second.valid = false;
  }
}

ChangeJournal::Volume* ChangeJournal::VouchedLocked(const std::string& volume,
                                                    const std::string& live_dir) {
  if (fd_ < 0) return nullptr;
  DrainLocked();
  auto it = volumes_.find(volume);
  if (it == volumes_.end() || !it->second.valid || it->second.root != live_dir) return nullptr;
  return &it->second;
}

bool ChangeJournal::Quiet(const std::string& volume, const std::string& live_dir) {
  std::lock_guard<std::mutex> l(mu_);
  const Volume* v = VouchedLocked(volume, live_dir);
  return v && v->dirty.empty();
}

// The scan descends from the root to every changed directory.
static std::set<std::string> ClosedUnderAncestors(const std::set<std::string>& dirty) {
  std::set<std::string> out;
  for (const auto& d : dirty) {
    std::string cur = d;
    while (out.insert(cur).second && !cur.empty()) cur = Parent(cur);
  }
  return out;
}

std::optional<std::set<std::string>> ChangeJournal::PeekChanges(const std::string& volume,
                                                                const std::string& live_dir) {
  std::lock_guard<std::mutex> l(mu_);
  const Volume* v = VouchedLocked(volume, live_dir);
  if (!v) return std::nullopt;
  return ClosedUnderAncestors(v->dirty);
}

std::optional<std::set<std::string>> ChangeJournal::TakeChanges(const std::string& volume,
                                                                const std::string& live_dir) {
  std::lock_guard<std::mutex> l(mu_);
  if (fd_ < 0) return std::nullopt;
  if (Volume* v = VouchedLocked(volume, live_dir)) {
    std::set<std::string> out = ClosedUnderAncestors(v->dirty);
    v->dirty.clear();
    return out;
  }
  ForgetLocked(volume);
  volumes_[volume].root = live_dir;
  if (!AddTreeLocked(volume, "")) ForgetLocked(volume);  // e.g. out of watches
  if (auto v = volumes_.find(volume); v != volumes_.end()) v->second.dirty.clear();
  return std::nullopt;
}

}  // namespace hc::storage::dir
