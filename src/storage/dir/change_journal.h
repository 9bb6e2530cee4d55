// Which directories of the watched live trees changed since the last
// snapshot, from inotify, so an idle or lightly written volume is
// snapshotted without a stat() per file (the cost a daemon pays every few
// seconds for thousands of volumes).
//
// The journal only ever narrows a scan when it can vouch for completeness:
// queue overflow, a directory renamed or moved, a watch that could not be
// added, or a volume not watched yet all make TakeChanges() return nullopt,
// and the caller does a full scan. What inotify cannot see (writes through
// shared memory maps, files hard-linked from an unwatched place) is covered
// by the caller's periodic full scan and by always rescanning directories
// that hold multiply-linked files.
//
// One inotify instance per store (instances are a scarce per-user limit);
// thread-safe.
#pragma once

#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

namespace hc::storage::dir {

class ChangeJournal {
 public:
  ChangeJournal();
  ~ChangeJournal();
  ChangeJournal(const ChangeJournal&) = delete;
  ChangeJournal& operator=(const ChangeJournal&) = delete;

  bool enabled() const { return fd_ >= 0; }

  // Directories (relative to `live_dir`, "" = root) changed in `volume`
  // since the previous call, closed under ancestors (a changed "a/b" also
  // lists "a" and ""). nullopt: the journal cannot vouch; it (re)starts
  // watching now, so a full scan taken after this call is the new baseline.
  std::optional<std::set<std::string>> TakeChanges(const std::string& volume,
                                                   const std::string& live_dir);

  // What TakeChanges would return now, consuming nothing; nullopt when the
  // journal cannot vouch (and then nothing is restarted either).
  std::optional<std::set<std::string>> PeekChanges(const std::string& volume,
                                                   const std::string& live_dir);

  // True when the journal vouches that nothing in `volume` changed since the
  // last TakeChanges (watched, no overflow, no dirty directory). Consumes
  // nothing: a cheap test before deciding to snapshot at all.
  bool Quiet(const std::string& volume, const std::string& live_dir);

  // Stops watching (the live directory is replaced or the volume is gone).
  void Forget(const std::string& volume);

 private:
  struct Volume {
    std::string root;
    bool valid = true;
    std::set<std::string> dirty;
  };
  struct Watch {
    std::string volume;
    std::string rel;
  };

  // REQUIRES: mu_ held.
  void DrainLocked();
  // The volume's entry when the journal vouches for it (watched from
  // `live_dir`, no overflow); nullptr otherwise. Drains pending events first.
  Volume* VouchedLocked(const std::string& volume, const std::string& live_dir);
  bool AddTreeLocked(const std::string& volume, const std::string& rel);
  void ForgetLocked(const std::string& volume);

  std::mutex mu_;
  int fd_ = -1;
  std::unordered_map<int, Watch> watches_;           // GUARDED_BY(mu_)
  std::unordered_map<std::string, Volume> volumes_;  // GUARDED_BY(mu_)
};

}  // namespace hc::storage::dir
