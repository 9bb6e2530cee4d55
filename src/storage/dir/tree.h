// Binary formats of the `dir` backend (docs/dir-format.md): tree objects,
// snapshot records and the per-volume stat cache. All decoders treat their
// input as untrusted: they validate every field and never read out of bounds.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/hash.h"
#include "common/status.h"
#include "storage/store.h"

namespace hc::storage::dir {

struct ChunkRef {
  Digest id;
  uint32_t len = 0;
  bool operator==(const ChunkRef&) const = default;
};

// One entry of a directory in a snapshot.
struct TreeEntry {
  std::string name;
  FileType type = FileType::kFile;
  uint32_t mode = 0;  // permission bits
  uint32_t uid = 0, gid = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  std::vector<ChunkRef> chunks;  // kFile
  Digest subtree{};              // kDirectory
  std::string link_target;       // kSymlink
  bool operator==(const TreeEntry&) const = default;
};

// A directory: entries sorted by name, names unique.
struct Tree {
  std::vector<TreeEntry> entries;
  const TreeEntry* Find(std::string_view name) const;
};

std::string EncodeTree(const Tree& tree);
Result<Tree> DecodeTree(std::span<const uint8_t> bytes);

// What a snapshot is: its id is SHA-256 of EncodeSnapshotRecord(record).
struct SnapshotRecord {
  std::string name;
  int64_t created_unix_ns = 0;
  Digest tree{};    // root directory
  Digest parent{};  // the volume's previous snapshot id, zero if none
  uint64_t logical_bytes = 0;
  uint64_t file_count = 0;
};

std::string EncodeSnapshotRecord(const SnapshotRecord& r);
Result<SnapshotRecord> DecodeSnapshotRecord(std::span<const uint8_t> bytes);
Digest SnapshotId(const SnapshotRecord& r);

// What the last scan saw of each regular file, so unchanged files are not
// re-read. A hint only: a missing or damaged cache just costs a re-read.
// Kept per directory, names sorted, so a scan matches a directory's files
// with one lookup and a merge instead of a hash lookup per file.
struct CachedFile {
  std::string name;
  uint64_t ino = 0;
  int64_t ctime_ns = 0;
  int64_t mtime_ns = 0;
  uint64_t size = 0;
  std::vector<ChunkRef> chunks;
};
struct StatCache {
  // Entries whose mtime or ctime is at or after this instant may have been
  // written again within the clock's granularity: they are re-read.
  int64_t scan_start_ns = 0;
  // Regular files by directory path ("" is the root), sorted by name.
  std::unordered_map<std::string, std::vector<CachedFile>> dirs;
  // When each directory was last scanned (an incremental scan rescans only
  // some); entries of a directory are racy against its own time. Falls back
  // to scan_start_ns.
  std::unordered_map<std::string, int64_t> dir_scanned_ns;
  int64_t ScannedAt(const std::string& dir) const {
    auto it = dir_scanned_ns.find(dir);
    return it == dir_scanned_ns.end() ? scan_start_ns : it->second;
  }

  // Inserts or replaces the entry for `path` ("dir/name").
  void Put(const std::string& path, CachedFile f);
  void Erase(const std::string& path);
  // Drops everything at or below directory `path`.
  void EraseTree(const std::string& path);
  const CachedFile* Find(const std::string& path) const;
  size_t size() const;
};

std::string EncodeStatCache(const StatCache& c);
// Returns an empty cache for damaged input (it is only a hint).
StatCache DecodeStatCache(std::span<const uint8_t> bytes);

// Splits a '/'-separated path into segments, dropping empty and "."
// segments (".." is kept).
std::vector<std::string> SplitPathSegments(const std::string& path);

// Splits a user path into segments; rejects ".." (kPermissionDenied),
// empty and "." segments are dropped.
Result<std::vector<std::string>> SplitSnapshotPath(const std::string& path);

}  // namespace hc::storage::dir
