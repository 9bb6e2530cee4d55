// The storage engine: volumes with snapshots, streams and two backends.
//
// A Store holds named volumes. Each volume has a live directory (where the app
// writes) and an ordered list of read-only snapshots. Snapshots are identified
// by a stable identity (`SnapshotInfo::id`): the ZFS GUID for `zfs`, the
// content hash of the snapshot record for `dir`. Names are only labels; every
// comparison between two stores (incremental bases, divergence) uses ids.
//
// Example:
//   HC_ASSIGN_OR_RETURN(auto store, OpenStore({.backend = "dir",
//                                              .root = "/var/lib/hc"}));
//   HC_RETURN_IF_ERROR(store->CreateVolume("shop"));
//   HC_ASSIGN_OR_RETURN(auto path, store->LivePath("shop"));
//   ... app writes below `path` ...
//   HC_ASSIGN_OR_RETURN(auto snap, store->Snapshot("shop", "s1", {}));
//   FdSink out(fd);
//   HC_RETURN_IF_ERROR(store->Send("shop", std::nullopt, "s1", out));
//
// Safety rules every backend keeps (see docs/design.md):
//  - Receive refuses a stream whose base it does not have, and a target that
//    has diverged (snapshots newer than the base, or unsnapshotted writes);
//    it reports a kConflict and changes nothing. Never `receive -F`.
//  - A corrupt or truncated stream is rejected with kCorrupt and leaves the
//    target exactly as it was.
//  - Rollback keeps what it would discard (newer snapshots and live writes)
//    as a new branch volume unless the caller explicitly discards it.
//  - Browse (ListDir/Stat/ReadFile) refuses paths that escape the snapshot.
//
// Thread-safety: a Store may be used from several threads; operations on the
// same volume are serialized by the backend (a per-volume lock), operations
// on different volumes run concurrently. Backends also lock across processes,
// so two `hc` commands on one volume do not interleave.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/io.h"
#include "common/names.h"
#include "common/status.h"

namespace hc::storage {

struct VolumeInfo {
  std::string name;
  std::string live_path;   // where the app reads and writes
  bool read_only = false;  // replicas are read-only
  std::string origin;      // "volume@snapshot" for clones, else ""
  uint64_t snapshot_count = 0;
};

struct SnapshotInfo {
  std::string name;
  std::string id;               // stable identity: ZFS GUID / content hash
  int64_t created_unix_ns = 0;  // zfs-fuse records whole seconds only
  uint64_t logical_bytes = 0;   // size of the data the snapshot refers to
  uint64_t file_count = 0;      // files in the snapshot (0 if unknown)
};

enum class FileType : uint8_t {
  kFile = 1,
  kDirectory = 2,
  kSymlink = 3,
  kOther = 4,  // fifos, sockets, devices: recorded, not captured
};
const char* FileTypeName(FileType t);

struct DirEntry {
  std::string name;
  FileType type = FileType::kFile;
  uint32_t mode = 0;  // permission bits (07777)
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  std::string link_target;  // for symlinks
};

struct DiffEntry {
  enum class Kind : uint8_t { kAdded, kModified, kDeleted };
  Kind kind;
  std::string path;  // relative to the volume root, '/'-separated
  FileType type;
};
const char* DiffKindName(DiffEntry::Kind k);

struct SnapshotOptions {
  // Called right before the snapshot is taken and right after it (even when
  // taking it failed), e.g. the runtime's cgroup freeze/thaw. The `dir`
  // backend holds the freeze for the whole scan; `zfs` for the atomic
  // `zfs snapshot` only.
  std::function<Status()> freeze;
  std::function<Status()> thaw;
  // Snapshot only if the live data differs from the newest snapshot; when it
  // does not, nothing is written and the newest snapshot is returned (same
  // id), so "unchanged" is `result.id == newest.id`. The replication loop's
  // check. A volume without snapshots is always snapshotted.
  bool skip_if_unchanged = false;
  // With skip_if_unchanged: answer only if the backend can tell at once that
  // nothing changed (dir: its change journal); otherwise kUnavailable and
  // nothing done — the caller then takes the full path (freeze, scan).
  bool quick_only = false;
};

struct RollbackOptions {
  // Newer snapshots and unsnapshotted live writes are moved to a new volume
  // named `branch_name` (default: "<volume>-branch-<unix seconds>").
  // With discard_newer they are destroyed instead.
  bool discard_newer = false;
  std::string branch_name;
};

struct RollbackResult {
  std::string branch;                  // "" when nothing needed keeping
  std::vector<std::string> discarded;  // snapshot names (discard_newer)
};

struct ReceiveOptions {
  // Mark the volume read-only after receiving (replicas). A volume created
  // by a full receive is always read-only unless this is false.
  bool read_only = true;
};

struct ReceiveResult {
  std::string volume;
  SnapshotInfo snapshot;         // the snapshot now present on the target
  bool already_present = false;  // the target had it already; nothing done
  uint64_t stream_bytes = 0;
};

struct VerifyReport {
  uint64_t objects_checked = 0;  // chunks (dir) or blocks/datasets (zfs)
  uint64_t bytes_checked = 0;
  // One line per problem, naming what is damaged and what refers to it:
  // "chunk 3fa1… (volume shop, snapshot s2, file public/index.html)".
  std::vector<std::string> problems;
  bool ok() const { return problems.empty(); }
};

struct SpaceUsage {
  uint64_t live_bytes = 0;      // logical size of the live data
  uint64_t snapshot_bytes = 0;  // stored bytes held only by snapshots
  uint64_t total_bytes = 0;     // what destroying the volume would free
                                // (approximate for dir: shared chunks count)
};

// Scrub: a Verify meant to run periodically at low priority, with a
// machine-readable result that repair can act on.
struct ScrubOptions {
  // Upper bound on the bytes read per second (0 = as fast as the disk goes).
  uint64_t max_bytes_per_sec = 0;
};

struct ScrubProblem {
  std::string object_id;  // dir: chunk or tree object id, 64 hex digits
  bool missing = false;   // absent (as opposed to present but damaged)
  // "chunk 3fa1… (volume shop, snapshot s2, file public/index.html): ..."
  std::string text;
};

struct ScrubReport {
  uint64_t objects_checked = 0;
  uint64_t bytes_checked = 0;
  // One entry per damaged or missing object (each id once), sorted by id.
  std::vector<ScrubProblem> problems;
  bool ok() const { return problems.empty(); }
  // What a repair request must carry besides the damaged ids (zfs:
  // "base:<id>" for each snapshot verified intact here that is older than
  // the damage, newest first: the peer re-sends from the newest it also has).
  std::vector<std::string> repair_hints;
  // The ids of `problems`.
  std::vector<std::string> DamagedIds() const {
    std::vector<std::string> ids;
    for (const auto& p : problems) ids.push_back(p.object_id);
    return ids;
  }
  // What to ask another node's ExportRepair for: DamagedIds + repair_hints.
  std::vector<std::string> RepairRequestIds() const {
    std::vector<std::string> ids = DamagedIds();
    ids.insert(ids.end(), repair_hints.begin(), repair_hints.end());
    return ids;
  }
};

struct RepairResult {
  uint64_t repaired = 0;        // objects rewritten from the verified copy
  uint64_t already_intact = 0;  // offered, but our copy checks out: left alone
  // Ids (hex) of the objects now intact here: repaired or already intact.
  std::vector<std::string> intact_ids;
  // Ids the peer could not export (damaged or missing there too, or not
  // part of the volume there), with the peer's reason.
  std::vector<std::string> peer_missing;
  std::vector<std::string> peer_missing_reasons;
  // zfs: the damaged copy held snapshots or writes the peer did not have;
  // it was kept as this volume (browsable, restorable) instead of dropped.
  std::string kept_branch;
};

// Repair streams carry at most this many objects.
inline constexpr size_t kMaxRepairObjects = 4096;

class Store {
 public:
  virtual ~Store() = default;

  virtual std::string backend() const = 0;

  // Names: 1-64 chars of [a-z0-9._-], starting with a letter or digit.
  // Errors: kInvalidArgument (bad name), kAlreadyExists.
  virtual Status CreateVolume(const std::string& volume) = 0;

  // Destroys the volume, its live data and all its snapshots.
  // Errors: kNotFound; kConflict if clones depend on its snapshots.
  virtual Status DestroyVolume(const std::string& volume) = 0;

  virtual Result<std::vector<VolumeInfo>> ListVolumes() = 0;
  virtual Result<VolumeInfo> GetVolume(const std::string& volume) = 0;

  // The live directory. Stable for the lifetime of the volume.
  virtual Result<std::string> LivePath(const std::string& volume) = 0;

  // Marks a volume read-only (replica) or writable (promoted primary).
  virtual Status SetReadOnly(const std::string& volume, bool read_only) = 0;

  // Takes a snapshot of the live directory. Errors: kAlreadyExists (name
  // taken), kPermissionDenied (read-only volume).
  virtual Result<SnapshotInfo> Snapshot(const std::string& volume, const std::string& snapshot,
                                        const SnapshotOptions& options) = 0;

  // Oldest first.
  virtual Result<std::vector<SnapshotInfo>> ListSnapshots(const std::string& volume) = 0;

  // Changes from snapshot `from` to snapshot `to`, sorted by path. A
  // directory that was added or deleted is listed with everything below it.
  virtual Result<std::vector<DiffEntry>> Diff(const std::string& volume, const std::string& from,
                                              const std::string& to) = 0;

  // Writes a stream that recreates snapshot `to` on a receiver that has
  // `from` (incremental) or nothing (full, when `from` is nullopt).
  virtual Status Send(const std::string& volume, const std::optional<std::string>& from,
                      const std::string& to, ByteSink& out) = 0;

  // Receives a stream into `volume` (created by a full stream; must exist and
  // hold the base for an incremental one). Errors: kCorrupt (damaged or
  // truncated stream; nothing changed), kConflict (base missing, target
  // diverged, volume exists for a full stream; nothing changed).
  virtual Result<ReceiveResult> Receive(const std::string& volume, ByteSource& in,
                                        const ReceiveOptions& options) = 0;

  // Makes the live directory equal to `snapshot` again and removes the newer
  // snapshots from this volume (keeping them on a branch, see options).
  virtual Result<RollbackResult> Rollback(const std::string& volume, const std::string& snapshot,
                                          const RollbackOptions& options) = 0;

  // Read-only browsing of a snapshot. `path` is relative to the snapshot
  // root ("" or "/" is the root). Symlinks inside the snapshot are followed;
  // paths with ".." segments or symlinks leading outside are refused with
  // kPermissionDenied.
  virtual Result<std::vector<DirEntry>> ListDir(const std::string& volume,
                                                const std::string& snapshot,
                                                const std::string& path) = 0;
  virtual Result<DirEntry> Stat(const std::string& volume, const std::string& snapshot,
                                const std::string& path) = 0;
  virtual Status ReadFile(const std::string& volume, const std::string& snapshot,
                          const std::string& path, ByteSink& out) = 0;

  // Creates volume `target` whose live data is `snapshot` of `volume`.
  virtual Status Clone(const std::string& volume, const std::string& snapshot,
                       const std::string& target) = 0;

  // Errors: kNotFound; kConflict if a clone depends on it.
  virtual Status DestroySnapshot(const std::string& volume, const std::string& snapshot) = 0;

  // Re-reads and re-checks stored data. `volume` empty = the whole store.
  virtual Result<VerifyReport> Verify(const std::string& volume) = 0;

  virtual Result<SpaceUsage> Space(const std::string& volume) = 0;

  // --- Scrub and repair (docs/design.md, "Storage: scrub and repair"). ---
  // Backends without support return kUnavailable naming the backend.

  // Re-reads and re-checks everything the snapshots of `volume` refer to,
  // like Verify, and names each damaged or missing object by id. Meant for
  // periodic runs at low priority: it does not hold the volume lock, and
  // (dir) holds the store lock only for short batches, so snapshots,
  // receives and garbage collection proceed meanwhile. An object that was
  // collected while the scrub ran is not reported. A damaged tree object
  // hides what lies below it: scrub again after repairing it.
  // zfs: the objects are snapshots. Each snapshot's new blocks are read once
  // (`zfs send -i previous`), so ZFS checks their checksums; the first that
  // cannot be read is the damaged object, and the snapshots read before it
  // go in repair_hints. Blocks written since the newest snapshot are not
  // read (no other node has them).
  virtual Result<ScrubReport> Scrub(const std::string& volume, const ScrubOptions& options) {
    (void)volume;
    (void)options;
    return Unavailable("scrub is not implemented for the '" + backend() + "' backend");
  }

  // Writes the objects named by `object_ids` (as in ScrubReport) in a
  // self-checking repair stream (docs/design.md). Each object is verified
  // against its id before it is written; one that is damaged or missing
  // here, or that no snapshot (or live scan cache) of `volume` refers to, is
  // not exported but listed as missing with the reason, so the caller asks
  // another node. A damaged copy is never exported. Errors: kNotFound (no
  // such volume), kInvalidArgument (more than kMaxRepairObjects ids).
  // zfs: the stream re-sends this node's snapshots from the newest base the
  // requester named (or in full) up to this node's newest; every block sent
  // is checked by ZFS on the way out, so a damaged copy here cuts the
  // stream and the requester keeps what it had.
  virtual Status ExportRepair(const std::string& volume, const std::vector<std::string>& object_ids,
                              ByteSink& out) {
    (void)volume;
    (void)object_ids;
    (void)out;
    return Unavailable("repair is not implemented for the '" + backend() + "' backend");
  }

  // Reads a repair stream written by ExportRepair on another node and
  // rewrites, atomically, each object of `volume` that is damaged or missing
  // here with the stream's copy after checking that copy against its id
  // again. Objects intact here, and objects `volume` does not refer to, are
  // left alone. Errors: kCorrupt (damaged stream; objects before the damage
  // that verified are kept, they are correct), kNotFound (no such volume).
  // zfs: the volume is re-received from the stream's base into a new
  // dataset that then takes the volume's place; on any failure the volume
  // is left as it was. Snapshots or writes only the damaged copy had are
  // kept as volume `<volume>-damaged-<unix time>` (RepairResult::kept_branch).
  // The live directory is replaced: nothing may use it meanwhile (the node
  // stops the app around a repair of its primary copy).
  virtual Result<RepairResult> ApplyRepair(const std::string& volume, ByteSource& in) {
    (void)volume;
    (void)in;
    return Unavailable("repair is not implemented for the '" + backend() + "' backend");
  }
};

struct StoreConfig {
  std::string backend = "dir";  // "dir" or "zfs"
  // dir: the store's root directory (created if missing).
  std::string root;
  // zfs: the parent dataset under which volumes live ("tank/hc").
  std::string dataset;
  // dir: flush data to disk (syncfs) before a snapshot or received stream
  // is recorded. Off only for benchmarks and throwaway stores.
  bool sync = true;
};

// Opens (and initialises if new) a store. Errors: kInvalidArgument for an
// unknown backend or missing root/dataset, kUnavailable if ZFS is absent.
Result<std::unique_ptr<Store>> OpenStore(const StoreConfig& config);

using hc::ValidateName;  // common/names.h

}  // namespace hc::storage
