// Walking live directories and snapshot trees for the `dir` backend:
// scanning a live directory into a tree (snapshot), materialising a tree into
// a live directory (checkout), and comparing two trees (diff, send).
//
// Single-threaded; the caller holds the volume lock.
#pragma once

#include <functional>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "storage/dir/chunk_store.h"
#include "storage/dir/tree.h"

namespace hc::storage::dir {

struct DigestHash {
  size_t operator()(const Digest& d) const {
    size_t h;
    static_assert(sizeof h <= sizeof d);
    __builtin_memcpy(&h, d.data(), sizeof h);
    return h;
  }
};
using DigestSet = std::unordered_set<Digest, DigestHash>;

// Where trees and chunks are read from: the store, plus chunks staged by a
// receive that are not in the store yet.
class ChunkReader {
 public:
  explicit ChunkReader(const ChunkStore& store) : store_(store) {}
  virtual ~ChunkReader() = default;
  virtual std::string PathOf(const Digest& id) const { return store_.PathOf(id); }
  bool Has(const Digest& id) const;
  Result<Tree> LoadTree(const Digest& id) const;
  Result<StoredChunk> ReadStored(const Digest& id) const;

 protected:
  const ChunkStore& store_;
};

struct ScanResult {
  Digest root{};
  // Directories holding files with more than one link: a write through
  // another link does not show up in this directory's change journal.
  std::set<std::string> multi_link_dirs;
  // A multiply-linked file was new or changed: its other names may be in
  // directories a change journal did not report.
  bool new_multi_link = false;
  uint64_t chunks_added = 0;  // chunks and tree objects newly stored
  uint64_t logical_bytes = 0;
  uint64_t file_count = 0;
  uint64_t files_read = 0;  // files whose content was (re)read
  StatCache cache;
};

// Scans `live_dir` into a tree. Files whose stat matches `old` are not
// re-read (their chunks are taken from the cache, which must only name
// chunks present in the store). With `store` null nothing is written (a dry
// run that only computes the root digest, e.g. to detect unsnapshotted
// writes).
Result<ScanResult> ScanLive(const std::string& live_dir, StatCache old, ChunkStore* store);

// What an incremental scan may skip: directories not in `visit` are taken
// unchanged from `prev_root` (the tree of the scan that produced the cache),
// with their stat cache entries.
struct ScanHints {
  Digest prev_root{};
  const std::set<std::string>* visit = nullptr;  // closed under ancestors
  const ChunkReader* reader = nullptr;
};
Result<ScanResult> ScanLiveIncremental(const std::string& live_dir, StatCache old,
                                       ChunkStore* store, const ScanHints& hints);

// Makes `live_dir`, whose content equals tree `from` (nullptr: empty
// directory), equal to tree `to`. Chunks in `verified` are trusted, all
// others are checked against their id while being read. Updates `cache`.
Status Checkout(const std::string& live_dir, const ChunkReader& reader, const Digest* from,
                const Digest& to, const DigestSet& verified, StatCache* cache);

// Compares two trees (`from` may be nullptr: everything is added). Calls
// `on_change` for every changed path in path order; directories added or
// deleted are reported with everything below them.
Status DiffTrees(const ChunkReader& reader, const Digest* from, const Digest& to,
                 const std::function<void(const DiffEntry&)>& on_change);

// Calls fn for every tree and data chunk reachable from `to` but not present
// in `from`'s matching subtree (the content of an incremental stream), trees
// after their children. Each id is reported once.
Status NewObjects(const ChunkReader& reader, const Digest* from, const Digest& to,
                  const std::function<Status(const Digest&, ChunkKind)>& fn);

// Visits every object reachable from `root` once (skipping ids in `seen`,
// adding what it visits); `path` gives context for reports. A tree that
// cannot be read is reported to `fn` and skipped, or, when `strict`, ends
// the walk with its error.
Status WalkObjects(
    const ChunkReader& reader, const Digest& root, DigestSet* seen,
    const std::function<Status(const Digest&, ChunkKind, const std::string& path)>& fn,
    bool strict = false);

}  // namespace hc::storage::dir
