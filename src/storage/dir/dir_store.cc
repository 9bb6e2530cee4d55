#include "storage/dir/dir_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "common/fs.h"
#include "storage/dir/change_journal.h"
#include "storage/dir/chunk_store.h"
#include "storage/dir/tree.h"
#include "storage/dir/tree_ops.h"
#include "storage/stream_format.h"

namespace hc::storage {
namespace {

using dir::ChunkKind;
using dir::ChunkReader;
using dir::ChunkStore;
using dir::DigestSet;
using dir::SnapshotRecord;
using dir::StatCache;
using dir::StoredChunk;

constexpr char kFormatLine[] = "hc-dir-store 1\n";
// A snapshot narrowed by the change journal is followed by a full scan at
// least this often, which bounds how long a change inotify cannot see
// (writes through shared mmaps) stays out of the snapshots.
constexpr int64_t kFullScanEveryNs = 60'000'000'000;

int64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

// Repair streams (ExportRepair) use the stream envelope with this target id
// and name in the header, chunk records as in Send, and records naming an
// object the exporter could not provide (str id, str reason).
constexpr char kRepairMarker[] = "repair";
constexpr uint8_t kRecordRepairMissing = 'M';

// The 38 bytes before a chunk's stored bytes in a chunk record.
void EncodeChunkHead(const Digest& id, const StoredChunk& c, uint8_t* head) {
  std::memcpy(head, id.data(), 32);
  head[32] = static_cast<uint8_t>(c.kind);
  head[33] = static_cast<uint8_t>(c.codec);
  for (int i = 0; i < 4; ++i) head[34 + i] = static_cast<uint8_t>(c.raw_len >> (8 * i));
}

// A chunk record's id and chunk, not yet verified.
Result<std::pair<Digest, StoredChunk>> ParseChunkRecord(std::span<const uint8_t> payload) {
  Decoder d(payload);
  Digest id;
  auto idb = d.Bytes(32);
  uint8_t kind = d.U8(), codec = d.U8();
  uint32_t raw_len = d.U32();
  if (!d.ok() || kind < 1 || kind > 2 || codec > 1 || raw_len > (16u << 20)) {
    return Corrupt("stream has a malformed chunk record");
  }
  std::memcpy(id.data(), idb.data(), 32);
  StoredChunk c;
  c.kind = static_cast<ChunkKind>(kind);
  c.codec = static_cast<dir::Codec>(codec);
  c.raw_len = raw_len;
  auto body = d.Bytes(d.remaining());
  c.stored.assign(body.begin(), body.end());
  return std::make_pair(id, std::move(c));
}

std::atomic<uint64_t> g_seq{0};
std::string Unique() {
  return std::to_string(::getpid()) + "-" + std::to_string(g_seq.fetch_add(1));
}

struct Snap {
  SnapshotRecord rec;
  Digest id{};
  SnapshotInfo Info() const {
    return {rec.name, ToHex(id), rec.created_unix_ns, rec.logical_bytes, rec.file_count};
  }
};

struct Meta {
  bool read_only = false;
  std::string origin;
};

std::string EncodeMeta(const Meta& m) {
  return std::string("read_only ") + (m.read_only ? "1" : "0") + "\norigin " + m.origin + "\n";
}

Meta DecodeMeta(const std::string& s) {
  Meta m;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find('\n', i);
    if (j == std::string::npos) j = s.size();
    std::string line = s.substr(i, j - i);
    if (line.rfind("read_only ", 0) == 0) m.read_only = line.substr(10) == "1";
    if (line.rfind("origin ", 0) == 0) m.origin = line.substr(7);
    i = j + 1;
  }
  return m;
}

class DirStore final : public Store {
 public:
  DirStore(std::string root, bool sync)
      : root_(std::move(root)),
        sync_(sync),
        chunks_(root_ + "/chunks", root_ + "/tmp"),
        reader_(chunks_) {}

  Status Init() {
    for (const char* sub : {"", "/chunks", "/tmp", "/volumes", "/locks"}) {
      HC_RETURN_IF_ERROR(MakeDirs(root_ + sub, 0755));
    }
    std::string fmt = root_ + "/format";
    if (PathExists(fmt)) {
      HC_ASSIGN_OR_RETURN(std::string s, ReadFileToString(fmt));
      if (s != kFormatLine) {
        return InvalidArgument(root_ +
                               " is not a HybridCluster dir store of a version this "
                               "build understands (format file says '" +
                               s.substr(0, 40) + "')");
      }
    } else {
      HC_RETURN_IF_ERROR(WriteFileAtomic(fmt, kFormatLine, sync_));
    }
    return Status::Ok();
  }

  std::string backend() const override { return "dir"; }

  Status CreateVolume(const std::string& v) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", v));
    HC_ASSIGN_OR_RETURN(auto locks, Lock(v));
    if (PathExists(VolDir(v))) return AlreadyExists("volume '" + v + "' already exists");
    std::string tmp = root_ + "/volumes/.new-" + Unique();
    HC_RETURN_IF_ERROR(MakeDirs(tmp + "/live", 0755));
    HC_RETURN_IF_ERROR(MakeDirs(tmp + "/snapshots", 0755));
    HC_RETURN_IF_ERROR(WriteFileAtomic(tmp + "/meta", EncodeMeta({}), sync_));
    return Publish(tmp, v);
  }

  Status DestroyVolume(const std::string& v) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", v));
    {
      HC_ASSIGN_OR_RETURN(auto locks, Lock(v));
      HC_RETURN_IF_ERROR(MustExist(v));
      ForgetScanState(v);
      // Move it out of sight first so a crash never leaves half a volume.
      std::string doomed = root_ + "/tmp/destroy-" + Unique();
      if (::rename(VolDir(v).c_str(), doomed.c_str()) != 0) {
        return ErrnoStatus("destroy volume '" + v + "'", errno);
      }
      HC_RETURN_IF_ERROR(RemoveTree(doomed));
    }
    return CollectGarbage();
  }

  Result<std::vector<VolumeInfo>> ListVolumes() override {
    std::vector<VolumeInfo> out;
    HC_ASSIGN_OR_RETURN(auto names, ListNames(root_ + "/volumes"));
    for (const auto& n : names) {
      if (n.empty() || n[0] == '.') continue;
      auto info = GetVolume(n);
      if (info.ok()) out.push_back(std::move(*info));
    }
    return out;
  }

  Result<VolumeInfo> GetVolume(const std::string& v) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", v));
    HC_RETURN_IF_ERROR(MustExist(v));
    Meta m = ReadMeta(v);
    HC_ASSIGN_OR_RETURN(auto snaps, LoadSnaps(v));
    return VolumeInfo{v, LiveDir(v), m.read_only, m.origin, snaps.size()};
  }

  Result<std::string> LivePath(const std::string& v) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", v));
    HC_RETURN_IF_ERROR(MustExist(v));
    return LiveDir(v);
  }

  Status SetReadOnly(const std::string& v, bool ro) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", v));
    HC_ASSIGN_OR_RETURN(auto locks, Lock(v));
    HC_RETURN_IF_ERROR(MustExist(v));
    Meta m = ReadMeta(v);
    m.read_only = ro;
    ForgetScanState(v);
    return WriteFileAtomic(VolDir(v) + "/meta", EncodeMeta(m), sync_);
  }

  Result<SnapshotInfo> Snapshot(const std::string& v, const std::string& name,
                                const SnapshotOptions& opts) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", v));
    HC_RETURN_IF_ERROR(ValidateName("snapshot", name));
    if (opts.skip_if_unchanged) {
      if (auto quiet = QuietNewest(v)) return *quiet;
    }
    if (opts.quick_only) return Unavailable("volume '" + v + "' may have changed; scan it");
    HC_ASSIGN_OR_RETURN(auto locks, Lock(v));
    HC_RETURN_IF_ERROR(MustExist(v));
    if (ReadMeta(v).read_only) {
      return PermissionDenied("volume '" + v +
                              "' is a read-only replica; snapshots arrive by receive");
    }
    HC_ASSIGN_OR_RETURN(auto snaps, LoadSnaps(v));
    return TakeSnapshot(v, name, snaps, opts);
  }

  Result<std::vector<SnapshotInfo>> ListSnapshots(const std::string& v) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", v));
    HC_RETURN_IF_ERROR(MustExist(v));
    HC_ASSIGN_OR_RETURN(auto snaps, LoadSnaps(v));
    std::vector<SnapshotInfo> out;
    for (const auto& s : snaps) out.push_back(s.Info());
    return out;
  }

  Result<std::vector<DiffEntry>> Diff(const std::string& v, const std::string& from,
                                      const std::string& to) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", v));
    HC_ASSIGN_OR_RETURN(auto store_lock, StoreLock(false));
    HC_RETURN_IF_ERROR(MustExist(v));
    HC_ASSIGN_OR_RETURN(auto snaps, LoadSnaps(v));
    HC_ASSIGN_OR_RETURN(const Snap* a, Find(v, snaps, from));
    HC_ASSIGN_OR_RETURN(const Snap* b, Find(v, snaps, to));
    std::vector<DiffEntry> out;
    HC_RETURN_IF_ERROR(dir::DiffTrees(reader_, &a->rec.tree, b->rec.tree,
                                      [&](const DiffEntry& e) { out.push_back(e); }));
    return out;
  }

  Status Send(const std::string& v, const std::optional<std::string>& from, const std::string& to,
              ByteSink& out) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", v));
    HC_ASSIGN_OR_RETURN(auto store_lock, StoreLock(false));
    HC_RETURN_IF_ERROR(MustExist(v));
    HC_ASSIGN_OR_RETURN(auto snaps, LoadSnaps(v));
    HC_ASSIGN_OR_RETURN(const Snap* b, Find(v, snaps, to));
    const Snap* a = nullptr;
    if (from) {
      HC_ASSIGN_OR_RETURN(a, Find(v, snaps, *from));
      if (a == b) return InvalidArgument("cannot send from snapshot '" + to + "' to itself");
      if (a->rec.created_unix_ns > b->rec.created_unix_ns) {
        return InvalidArgument("snapshot '" + *from + "' is newer than '" + to +
                               "'; the base of an incremental send must be older");
      }
    }
    StreamHeader h;
    h.backend = "dir";
    h.volume = v;
    if (a) {
      h.from_id = ToHex(a->id);
      h.from_name = a->rec.name;
    }
    h.to_id = ToHex(b->id);
    h.to_name = b->rec.name;
    h.to_created_unix_ns = b->rec.created_unix_ns;
    StreamWriter w(out);
    HC_RETURN_IF_ERROR(w.Begin(h));
    HC_RETURN_IF_ERROR(
        dir::NewObjects(reader_, a ? &a->rec.tree : nullptr, b->rec.tree,
                        [&](const Digest& id, ChunkKind kind) -> Status {
                          HC_ASSIGN_OR_RETURN(StoredChunk c, chunks_.ReadStored(id));
                          if (c.kind != kind)
                            return Corrupt("chunk " + ToHex(id) + " has the wrong kind");
                          uint8_t head[38];
                          std::memcpy(head, id.data(), 32);
                          head[32] = static_cast<uint8_t>(c.kind);
                          head[33] = static_cast<uint8_t>(c.codec);
                          for (int i = 0; i < 4; ++i)
                            head[34 + i] = static_cast<uint8_t>(c.raw_len >> (8 * i));
                          std::span<const uint8_t> parts[2] = {head, c.stored};
                          return w.Write(kRecordChunk, parts);
                        }));
    std::string rec = dir::EncodeSnapshotRecord(b->rec);
    HC_RETURN_IF_ERROR(w.Write(kRecordSnapshot, AsBytes(rec)));
    return w.Finish();
  }

  Result<ReceiveResult> Receive(const std::string& v, ByteSource& in,
                                const ReceiveOptions& opts) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", v));
    HC_ASSIGN_OR_RETURN(auto locks, Lock(v));
    StreamReader reader(in);
    HC_ASSIGN_OR_RETURN(StreamHeader h, reader.Begin());
    if (h.backend != "dir") {
      return InvalidArgument("this is a '" + h.backend + "' stream; receive it into a '" +
                             h.backend + "' store");
    }
    ReceiveResult result;
    result.volume = v;
    bool exists = PathExists(VolDir(v));
    std::vector<Snap> snaps;
    const Snap* base = nullptr;
    if (exists) {
      HC_ASSIGN_OR_RETURN(snaps, LoadSnaps(v));
      for (const auto& s : snaps) {
        if (ToHex(s.id) == h.to_id) {
          // Idempotent: a repeated or resumed transfer changes nothing.
          HC_RETURN_IF_ERROR(Drain(reader));
          result.snapshot = s.Info();
          result.already_present = true;
          result.stream_bytes = reader.bytes_read();
          return result;
        }
      }
    }
    if (h.from_id.empty()) {
      if (exists) {
        return Conflict("volume '" + v + "' already exists; a full stream (of snapshot '" +
                        h.to_name +
                        "') only creates new volumes. Receive it under another "
                        "name, or send incrementally from a snapshot both sides have");
      }
    } else {
      if (!exists) {
        return Conflict("volume '" + v +
                        "' does not exist, and this is an incremental stream "
                        "from snapshot '" +
                        h.from_name + "'; send a full stream first");
      }
      for (const auto& s : snaps) {
        if (ToHex(s.id) == h.from_id) base = &s;
      }
      if (base == nullptr) {
        return Conflict("volume '" + v + "' has no snapshot with identity " + h.from_id +
                        " (the stream's base '" + h.from_name +
                        "'); send from a snapshot "
                        "both sides have");
      }
      if (base != &snaps.back()) {
        std::string newer;
        for (auto it = snaps.begin() + (base - snaps.data()) + 1; it != snaps.end(); ++it) {
          newer += (newer.empty() ? "" : ", ") + it->rec.name;
        }
        return Conflict("volume '" + v +
                        "' has diverged: it has snapshots newer than the "
                        "stream's base '" +
                        h.from_name + "' (" + newer +
                        "); nothing was "
                        "changed. Roll it back to '" +
                        base->rec.name +
                        "' (keeping a branch) "
                        "before receiving");
      }
      HC_ASSIGN_OR_RETURN(auto live, dir::ScanLive(LiveDir(v), ReadCache(v), nullptr));
      if (live.root != base->rec.tree) {
        return Conflict("volume '" + v + "' has writes since its newest snapshot '" +
                        base->rec.name +
                        "' that the sender lacks; nothing was changed. "
                        "Snapshot or roll back the volume first");
      }
    }

    for (const auto& s : snaps) {
      if (s.rec.name == h.to_name) {
        return Conflict("volume '" + v + "' already has a different snapshot named '" + h.to_name +
                        "' (id " + ToHex(s.id) + ", stream has " + h.to_id +
                        "); nothing was changed. Rename or destroy one of them first");
      }
    }
    ForgetScanState(v);
    // Verified chunks go straight into the store. If the stream turns out
    // damaged later, they stay there unreferenced: invisible, collected by
    // the next garbage collection, and meanwhile a resent stream finds them
    // already present (an interrupted transfer resumes where it stopped).
    DigestSet verified;
    std::optional<SnapshotRecord> rec;
    for (;;) {
      HC_ASSIGN_OR_RETURN(StreamRecord r, reader.Next());
      if (r.type == kRecordEnd) break;
      if (r.type == kRecordChunk) {
        HC_ASSIGN_OR_RETURN(auto parsed, ParseChunkRecord(r.payload));
        auto& [id, c] = parsed;
        HC_RETURN_IF_ERROR(ChunkStore::Verify(id, c, nullptr).Annotate("stream"));
        if (verified.count(id) == 0) {
          // A copy already stored is only trusted once it checks out; a
          // damaged one is replaced by the stream's verified copy.
          bool have = false;
          if (chunks_.Has(id)) {
            auto stored = chunks_.ReadStored(id);
            have = stored.ok() && stored->kind == c.kind &&
                   ChunkStore::Verify(id, *stored, nullptr).ok();
          }
          if (!have) HC_RETURN_IF_ERROR(ChunkStore::WriteTo(chunks_.dir(), root_ + "/tmp", id, c));
          verified.insert(id);
        }
      } else if (r.type == kRecordSnapshot) {
        if (rec) return Corrupt("stream has two snapshot records");
        HC_ASSIGN_OR_RETURN(SnapshotRecord sr, dir::DecodeSnapshotRecord(r.payload));
        if (ToHex(dir::SnapshotId(sr)) != h.to_id || sr.name != h.to_name) {
          return Corrupt("stream's snapshot record does not match its header");
        }
        if (base != nullptr && sr.created_unix_ns <= base->rec.created_unix_ns) {
          return Corrupt("stream's snapshot '" + sr.name + "' is not newer than its base '" +
                         base->rec.name + "'");
        }
        rec = std::move(sr);
      } else {
        return Corrupt("stream has a record of unexpected type " + std::to_string(r.type));
      }
    }
    if (!rec) return Corrupt("stream has no snapshot record");
    // Everything the new snapshot refers to must now be present.
    HC_RETURN_IF_ERROR(dir::NewObjects(reader_, base ? &base->rec.tree : nullptr, rec->tree,
                                       [&](const Digest& id, ChunkKind) -> Status {
                                         if (!reader_.Has(id)) {
                                           return Corrupt("stream lacks chunk " + ToHex(id) +
                                                          " that its snapshot needs");
                                         }
                                         return Status::Ok();
                                       })
                           .Annotate("receive into '" + v + "'"));

    std::string target = exists ? VolDir(v) : root_ + "/volumes/.recv-" + Unique();
    if (!exists) {
      HC_RETURN_IF_ERROR(MakeDirs(target + "/live", 0755));
      HC_RETURN_IF_ERROR(MakeDirs(target + "/snapshots", 0755));
    }
    StatCache cache = exists ? ReadCache(v) : StatCache{};
    Status s = dir::Checkout(target + "/live", reader_, base ? &base->rec.tree : nullptr, rec->tree,
                             verified, &cache);
    if (!s.ok()) {
      if (!exists) (void)RemoveTree(target);
      return s.Annotate("receive into '" + v + "'");
    }
    HC_RETURN_IF_ERROR(Sync());
    HC_RETURN_IF_ERROR(WriteRecord(target, *rec));
    (void)WriteFileAtomic(target + "/statcache", dir::EncodeStatCache(cache), false);
    Meta m = exists ? ReadMeta(v) : Meta{};
    m.read_only = opts.read_only;
    HC_RETURN_IF_ERROR(WriteFileAtomic(target + "/meta", EncodeMeta(m), sync_));
    if (!exists) HC_RETURN_IF_ERROR(Publish(target, v));
    Snap snap{*rec, dir::SnapshotId(*rec)};
    result.snapshot = snap.Info();
    result.stream_bytes = reader.bytes_read();
    return result;
  }

  Result<RollbackResult> Rollback(const std::string& v, const std::string& name,
                                  const RollbackOptions& opts) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", v));
    std::string branch = opts.branch_name;
    if (!opts.discard_newer) {
      if (branch.empty()) branch = v + "-branch-" + std::to_string(NowNs() / 1'000'000'000);
      HC_RETURN_IF_ERROR(ValidateName("branch volume", branch));
    }
    RollbackResult result;
    {
      HC_ASSIGN_OR_RETURN(auto locks, Lock(v));
      ForgetScanState(v);
      HC_RETURN_IF_ERROR(MustExist(v));
      HC_ASSIGN_OR_RETURN(auto snaps, LoadSnaps(v));
      HC_ASSIGN_OR_RETURN(const Snap* target, Find(v, snaps, name));
      size_t ti = static_cast<size_t>(target - snaps.data());
      StatCache cache = ReadCache(v);
      HC_ASSIGN_OR_RETURN(auto live, dir::ScanLive(LiveDir(v), cache, nullptr));
      const Snap& newest = snaps.back();
      bool live_dirty = live.root != newest.rec.tree;
      bool has_newer = ti + 1 < snaps.size();
      if (!opts.discard_newer && (live_dirty || has_newer)) {
        if (PathExists(VolDir(branch)) || !ValidateName("volume", branch).ok()) {
          return AlreadyExists("branch volume '" + branch +
                               "' already exists; pick another "
                               "branch name");
        }
        if (live_dirty) {
          // Unsnapshotted writes are kept too: snapshot them onto the branch.
          std::string safety = "pre-rollback-" + std::to_string(NowNs() / 1'000'000);
          HC_ASSIGN_OR_RETURN(auto info, TakeSnapshot(v, safety, snaps, {}));
          HC_ASSIGN_OR_RETURN(snaps, LoadSnaps(v));
          HC_ASSIGN_OR_RETURN(target, Find(v, snaps, name));
        }
        HC_RETURN_IF_ERROR(MakeBranch(v, snaps, ti, branch));
        result.branch = branch;
        cache = ReadCache(v);
        HC_RETURN_IF_ERROR(dir::Checkout(LiveDir(v), reader_, &snaps.back().rec.tree,
                                         target->rec.tree, {}, &cache));
      } else if (live_dirty) {
        // Discarding: rebuild the live directory from the snapshot and swap.
        std::string fresh = VolDir(v) + "/live.new-" + Unique();
        HC_RETURN_IF_ERROR(MakeDirs(fresh, 0755));
        cache = StatCache{};
        Status s = dir::Checkout(fresh, reader_, nullptr, target->rec.tree, {}, &cache);
        if (!s.ok()) {
          (void)RemoveTree(fresh);
          return s;
        }
        std::string old = VolDir(v) + "/live.old-" + Unique();
        if (::rename(LiveDir(v).c_str(), old.c_str()) != 0 ||
            ::rename(fresh.c_str(), LiveDir(v).c_str()) != 0) {
          return ErrnoStatus("replace live directory of '" + v + "'", errno);
        }
        HC_RETURN_IF_ERROR(RemoveTree(old));
      } else {
        HC_RETURN_IF_ERROR(
            dir::Checkout(LiveDir(v), reader_, &newest.rec.tree, target->rec.tree, {}, &cache));
      }
      for (size_t i = ti + 1; i < snaps.size(); ++i) {
        if (opts.discard_newer) result.discarded.push_back(snaps[i].rec.name);
        std::string p = SnapPath(VolDir(v), snaps[i].rec.name);
        if (::unlink(p.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("remove " + p, errno);
      }
      (void)WriteFileAtomic(VolDir(v) + "/statcache", dir::EncodeStatCache(cache), false);
      HC_RETURN_IF_ERROR(Sync());
    }
    if (!result.discarded.empty()) HC_RETURN_IF_ERROR(CollectGarbage());
    return result;
  }

  Result<std::vector<DirEntry>> ListDir(const std::string& v, const std::string& snap,
                                        const std::string& path) override {
    HC_ASSIGN_OR_RETURN(auto store_lock, StoreLock(false));
    HC_ASSIGN_OR_RETURN(dir::TreeEntry e, Resolve(v, snap, path, true));
    if (e.type != FileType::kDirectory) {
      return InvalidArgument("'" + path + "' in snapshot '" + snap + "' is not a directory");
    }
    HC_ASSIGN_OR_RETURN(dir::Tree t, reader_.LoadTree(e.subtree));
    std::vector<DirEntry> out;
    for (const auto& c : t.entries) out.push_back(ToDirEntry(c));
    return out;
  }

  Result<DirEntry> Stat(const std::string& v, const std::string& snap,
                        const std::string& path) override {
    HC_ASSIGN_OR_RETURN(auto store_lock, StoreLock(false));
    HC_ASSIGN_OR_RETURN(dir::TreeEntry e, Resolve(v, snap, path, false));
    return ToDirEntry(e);
  }

  Status ReadFile(const std::string& v, const std::string& snap, const std::string& path,
                  ByteSink& out) override {
    HC_ASSIGN_OR_RETURN(auto store_lock, StoreLock(false));
    HC_ASSIGN_OR_RETURN(dir::TreeEntry e, Resolve(v, snap, path, true));
    if (e.type != FileType::kFile) {
      return InvalidArgument("'" + path + "' in snapshot '" + snap + "' is a " +
                             FileTypeName(e.type) + ", not a file");
    }
    for (const auto& c : e.chunks) {
      HC_ASSIGN_OR_RETURN(auto raw, chunks_.Get(c.id, ChunkKind::kData));
      HC_RETURN_IF_ERROR(out.Write(raw));
    }
    return Status::Ok();
  }

  Status Clone(const std::string& v, const std::string& snap, const std::string& target) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", v));
    HC_RETURN_IF_ERROR(ValidateName("volume", target));
    if (v == target) return InvalidArgument("a clone needs a new volume name");
    HC_ASSIGN_OR_RETURN(auto locks, Lock(target));
    if (PathExists(VolDir(target))) {
      return AlreadyExists("volume '" + target + "' already exists");
    }
    HC_RETURN_IF_ERROR(MustExist(v));
    HC_ASSIGN_OR_RETURN(auto snaps, LoadSnaps(v));
    HC_ASSIGN_OR_RETURN(const Snap* s, Find(v, snaps, snap));
    std::string tmp = root_ + "/volumes/.clone-" + Unique();
    HC_RETURN_IF_ERROR(MakeDirs(tmp + "/live", 0755));
    HC_RETURN_IF_ERROR(MakeDirs(tmp + "/snapshots", 0755));
    StatCache cache;
    Status st = dir::Checkout(tmp + "/live", reader_, nullptr, s->rec.tree, {}, &cache);
    if (!st.ok()) {
      (void)RemoveTree(tmp);
      return st;
    }
    (void)WriteFileAtomic(tmp + "/statcache", dir::EncodeStatCache(cache), false);
    HC_RETURN_IF_ERROR(WriteFileAtomic(tmp + "/meta", EncodeMeta({false, v + "@" + snap}), sync_));
    HC_RETURN_IF_ERROR(Sync());
    return Publish(tmp, target);
  }

  Status DestroySnapshot(const std::string& v, const std::string& snap) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", v));
    {
      HC_ASSIGN_OR_RETURN(auto locks, Lock(v));
      HC_RETURN_IF_ERROR(MustExist(v));
      HC_ASSIGN_OR_RETURN(auto snaps, LoadSnaps(v));
      HC_ASSIGN_OR_RETURN(const Snap* s, Find(v, snaps, snap));
      std::string p = SnapPath(VolDir(v), s->rec.name);
      if (::unlink(p.c_str()) != 0) return ErrnoStatus("remove " + p, errno);
    }
    return CollectGarbage();
  }

  Result<VerifyReport> Verify(const std::string& v) override {
    HC_ASSIGN_OR_RETURN(auto store_lock, StoreLock(false));
    std::vector<std::string> vols;
    if (v.empty()) {
      HC_ASSIGN_OR_RETURN(auto all, ListVolumes());
      for (auto& i : all) vols.push_back(i.name);
    } else {
      HC_RETURN_IF_ERROR(ValidateName("volume", v));
      HC_RETURN_IF_ERROR(MustExist(v));
      vols.push_back(v);
    }
    VerifyReport report;
    DigestSet seen;
    std::vector<uint8_t> raw;
    for (const auto& vol : vols) {
      auto snaps = LoadSnaps(vol);
      if (!snaps.ok()) {
        report.problems.push_back("volume " + vol + ": " + snaps.status().message());
        continue;
      }
      for (const auto& s : *snaps) {
        HC_RETURN_IF_ERROR(dir::WalkObjects(
            reader_, s.rec.tree, &seen,
            [&](const Digest& id, ChunkKind kind, const std::string& path) -> Status {
              ++report.objects_checked;
              auto c = chunks_.ReadStored(id);
              Status st = c.ok() ? ChunkStore::Verify(id, *c, &raw) : c.status();
              if (st.ok() && c->kind != kind) st = Corrupt("chunk has the wrong kind");
              if (st.ok()) {
                report.bytes_checked += c->raw_len;
              } else {
                report.problems.push_back(
                    std::string(kind == ChunkKind::kTree ? "tree object " : "chunk ") + ToHex(id) +
                    " (volume " + vol + ", snapshot " + s.rec.name + ", " +
                    (kind == ChunkKind::kTree ? "directory " : "file ") + path +
                    "): " + st.message());
              }
              return Status::Ok();
            }));
      }
    }
    return report;
  }

  Result<SpaceUsage> Space(const std::string& v) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", v));
    HC_ASSIGN_OR_RETURN(auto store_lock, StoreLock(false));
    HC_RETURN_IF_ERROR(MustExist(v));
    SpaceUsage u;
    HC_ASSIGN_OR_RETURN(auto live, dir::ScanLive(LiveDir(v), ReadCache(v), nullptr));
    u.live_bytes = live.logical_bytes;
    HC_ASSIGN_OR_RETURN(auto snaps, LoadSnaps(v));
    DigestSet seen;
    for (const auto& s : snaps) {
      HC_RETURN_IF_ERROR(dir::WalkObjects(reader_, s.rec.tree, &seen,
                                          [&](const Digest& id, ChunkKind, const std::string&) {
                                            u.snapshot_bytes += chunks_.StoredSize(id);
                                            return Status::Ok();
                                          }));
    }
    u.total_bytes = u.live_bytes + u.snapshot_bytes;
    return u;
  }

  // --- Scrub and repair. ---

  Result<ScrubReport> Scrub(const std::string& v, const ScrubOptions& opts) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", v));
    ScrubReport report;
    std::map<Digest, ScrubProblem> bad;
    std::vector<Digest> data;
    // Trees are checked while walking (the walk reads them anyway); data
    // chunks, the bulk of the bytes, are only listed here and checked in
    // short batches below.
    {
      HC_ASSIGN_OR_RETURN(auto store_lock, StoreLock(false));
      HC_RETURN_IF_ERROR(MustExist(v));
      HC_ASSIGN_OR_RETURN(auto snaps, LoadSnaps(v));
      DigestSet seen;
      for (const auto& s : snaps) {
        HC_RETURN_IF_ERROR(
            dir::WalkObjects(reader_, s.rec.tree, &seen,
                             [&](const Digest& id, ChunkKind kind, const std::string&) -> Status {
                               if (kind == ChunkKind::kData) {
                                 data.push_back(id);
                                 return Status::Ok();
                               }
                               ++report.objects_checked;
                               CheckObject(id, kind, &report.bytes_checked, &bad);
                               return Status::Ok();
                             }));
      }
    }
    // Chunks are immutable and content addressed, so nothing needs the
    // volume lock; the store lock (shared) only keeps garbage collection
    // from removing a chunk mid-read. It is held per batch so a long scrub
    // does not hold off collection, and the rate limit sleeps without it.
    constexpr uint64_t kBatchBytes = 8u << 20;
    auto start = std::chrono::steady_clock::now();
    uint64_t data_bytes = 0;
    size_t i = 0;
    while (i < data.size()) {
      {
        HC_ASSIGN_OR_RETURN(auto store_lock, StoreLock(false));
        uint64_t batch = 0;
        for (; i < data.size() && batch < kBatchBytes; ++i) {
          ++report.objects_checked;
          uint64_t before = report.bytes_checked;
          CheckObject(data[i], ChunkKind::kData, &report.bytes_checked, &bad);
          uint64_t got = std::max<uint64_t>(report.bytes_checked - before, 1);
          batch += got;
          data_bytes += got;
        }
      }
      if (opts.max_bytes_per_sec > 0) {
        auto due =
            start + std::chrono::microseconds(data_bytes * 1'000'000 / opts.max_bytes_per_sec);
        std::this_thread::sleep_until(due);
      }
    }
    if (bad.empty()) return report;
    // Report only what the volume still refers to (a snapshot may have been
    // destroyed and its chunks collected meanwhile) and is still bad (a
    // repair may have run meanwhile), with where it is used.
    HC_ASSIGN_OR_RETURN(auto store_lock, StoreLock(false));
    HC_RETURN_IF_ERROR(MustExist(v));
    HC_ASSIGN_OR_RETURN(auto snaps, LoadSnaps(v));
    DigestSet seen;
    for (const auto& s : snaps) {
      HC_RETURN_IF_ERROR(dir::WalkObjects(
          reader_, s.rec.tree, &seen,
          [&](const Digest& id, ChunkKind kind, const std::string& path) -> Status {
            auto it = bad.find(id);
            if (it == bad.end()) return Status::Ok();
            std::map<Digest, ScrubProblem> again;
            uint64_t ignored = 0;
            CheckObject(id, kind, &ignored, &again);
            if (again.empty()) {
              bad.erase(it);
              return Status::Ok();
            }
            ScrubProblem p = std::move(again.begin()->second);
            p.text = std::string(kind == ChunkKind::kTree ? "tree object " : "chunk ") +
                     p.object_id + " (volume " + v + ", snapshot " + s.rec.name + ", " +
                     (kind == ChunkKind::kTree ? "directory " : "file ") + path + "): " + p.text;
            report.problems.push_back(std::move(p));
            bad.erase(it);
            return Status::Ok();
          }));
    }
    std::sort(
        report.problems.begin(), report.problems.end(),
        [](const ScrubProblem& a, const ScrubProblem& b) { return a.object_id < b.object_id; });
    return report;
  }

  Status ExportRepair(const std::string& v, const std::vector<std::string>& ids,
                      ByteSink& out) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", v));
    if (ids.size() > kMaxRepairObjects) {
      return InvalidArgument("a repair asks for " + std::to_string(ids.size()) +
                             " objects; at most " + std::to_string(kMaxRepairObjects) +
                             " per request");
    }
    HC_ASSIGN_OR_RETURN(auto store_lock, StoreLock(false));
    HC_RETURN_IF_ERROR(MustExist(v));
    HC_ASSIGN_OR_RETURN(DigestSet referenced, Referenced(v));
    StreamHeader h;
    h.backend = "dir";
    h.volume = v;
    h.to_id = kRepairMarker;
    h.to_name = kRepairMarker;
    StreamWriter w(out);
    HC_RETURN_IF_ERROR(w.Begin(h));
    std::set<std::string> done;
    for (const auto& hex : ids) {
      if (!done.insert(hex).second) continue;
      Digest id;
      std::string why;
      StoredChunk c;
      if (!FromHex(hex, &id)) {
        why = "not an object id";
      } else if (referenced.count(id) == 0) {
        // Never serve chunks of other volumes (they may be other tenants').
        why = "volume '" + v + "' on this node does not refer to it";
      } else {
        auto got = chunks_.ReadStored(id);
        Status st = got.ok() ? ChunkStore::Verify(id, *got, nullptr) : got.status();
        if (st.ok()) {
          c = std::move(*got);
        } else {
          why = (st.code() == Code::kNotFound ? "missing here too: " : "damaged here too: ") +
                st.message();
        }
      }
      if (why.empty()) {
        uint8_t head[38];
        EncodeChunkHead(id, c, head);
        std::span<const uint8_t> parts[2] = {head, c.stored};
        HC_RETURN_IF_ERROR(w.Write(kRecordChunk, parts));
      } else {
        Encoder e;
        e.Str(hex.substr(0, 128));
        e.Str(why);
        HC_RETURN_IF_ERROR(
            w.Write(static_cast<RecordType>(kRecordRepairMissing), AsBytes(e.out())));
      }
    }
    return w.Finish();
  }

  Result<RepairResult> ApplyRepair(const std::string& v, ByteSource& in) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", v));
    HC_ASSIGN_OR_RETURN(auto store_lock, StoreLock(false));
    HC_RETURN_IF_ERROR(MustExist(v));
    StreamReader reader(in);
    HC_ASSIGN_OR_RETURN(StreamHeader h, reader.Begin());
    if (h.backend != "dir" || h.to_id != kRepairMarker) {
      return InvalidArgument("not a repair stream of the dir backend (a '" + h.backend +
                             "' stream of snapshot '" + h.to_name + "')");
    }
    HC_ASSIGN_OR_RETURN(DigestSet referenced, Referenced(v));
    RepairResult result;
    for (;;) {
      HC_ASSIGN_OR_RETURN(StreamRecord r, reader.Next());
      if (r.type == kRecordEnd) break;
      if (r.type == kRecordRepairMissing) {
        Decoder d(r.payload);
        std::string id = d.Str(128);
        std::string why = d.Str(4096);
        if (!d.done()) return Corrupt("repair stream has a malformed missing record");
        result.peer_missing.push_back(std::move(id));
        result.peer_missing_reasons.push_back(std::move(why));
        continue;
      }
      if (r.type != kRecordChunk) {
        return Corrupt("repair stream has a record of unexpected type " + std::to_string(r.type));
      }
      HC_ASSIGN_OR_RETURN(auto chunk, ParseChunkRecord(r.payload));
      auto& [id, c] = chunk;
      // Checked again here: the sender's check protects nothing on our disk.
      HC_RETURN_IF_ERROR(ChunkStore::Verify(id, c, nullptr).Annotate("repair stream"));
      if (referenced.count(id) == 0) continue;  // not ours to write
      auto stored = chunks_.ReadStored(id);
      if (stored.ok() && stored->kind == c.kind && ChunkStore::Verify(id, *stored, nullptr).ok()) {
        ++result.already_intact;
        result.intact_ids.push_back(ToHex(id));
        continue;
      }
      HC_RETURN_IF_ERROR(ChunkStore::WriteTo(chunks_.dir(), root_ + "/tmp", id, c));
      ++result.repaired;
      result.intact_ids.push_back(ToHex(id));
      if (c.kind == ChunkKind::kTree) {
        // What a damaged tree hid is now reachable, and may come next.
        DigestSet below;
        HC_RETURN_IF_ERROR(dir::WalkObjects(
            reader_, id, &below,
            [](const Digest&, ChunkKind, const std::string&) { return Status::Ok(); }));
        referenced.insert(below.begin(), below.end());
      }
    }
    if (result.repaired > 0) HC_RETURN_IF_ERROR(Sync());
    return result;
  }

  // Removes chunks no snapshot of any volume refers to. Takes the store lock
  // exclusively, so it waits for running snapshots and receives.
  Status CollectGarbage() {
    HC_ASSIGN_OR_RETURN(auto store_lock, StoreLock(true));
    DigestSet live;
    HC_ASSIGN_OR_RETURN(auto names, ListNames(root_ + "/volumes"));
    for (const auto& n : names) {
      if (n.empty() || n[0] == '.') continue;
      HC_ASSIGN_OR_RETURN(auto snaps, LoadSnaps(n));
      for (const auto& s : snaps) {
        // A tree we cannot read might hide references: collect nothing then.
        HC_RETURN_IF_ERROR(
            dir::WalkObjects(
                reader_, s.rec.tree, &live,
                [&](const Digest&, ChunkKind, const std::string&) { return Status::Ok(); }, true)
                .Annotate("space not reclaimed: volume " + n + ", snapshot " + s.rec.name +
                          " has a damaged tree (run hc volume verify)"));
      }
      // The stat cache is a root too: a snapshot reuses its chunks unread.
      auto raw = ReadFileToString(VolDir(n) + "/statcache");
      if (!raw.ok() && raw.status().code() != Code::kNotFound) {
        return raw.status().Annotate("space not reclaimed: cannot read the scan cache of " + n);
      }
      StatCache cache = raw.ok() ? dir::DecodeStatCache(AsBytes(*raw)) : StatCache{};
      for (const auto& [dir, files] : cache.dirs) {
        for (const auto& f : files) {
          for (const auto& c : f.chunks) live.insert(c.id);
        }
      }
    }
    std::vector<Digest> dead;
    HC_RETURN_IF_ERROR(chunks_.ForEach([&](const Digest& id) {
      if (!live.count(id)) dead.push_back(id);
    }));
    for (const auto& id : dead) HC_RETURN_IF_ERROR(chunks_.Remove(id));
    return Status::Ok();
  }

 private:
  struct Locks {
    FileLock store;
    FileLock vol;
  };

  std::string VolDir(const std::string& v) const { return root_ + "/volumes/" + v; }
  std::string LiveDir(const std::string& v) const { return VolDir(v) + "/live"; }
  static std::string SnapPath(const std::string& voldir, const std::string& name) {
    return voldir + "/snapshots/" + name + ".snap";
  }

  Result<FileLock> StoreLock(bool exclusive) {
    return FileLock::Acquire(root_ + "/lock", exclusive);
  }
  Result<Locks> Lock(const std::string& v) {
    HC_ASSIGN_OR_RETURN(FileLock s, StoreLock(false));
    HC_ASSIGN_OR_RETURN(FileLock l, FileLock::Acquire(root_ + "/locks/" + v, true));
    return Locks{std::move(s), std::move(l)};
  }

  Status MustExist(const std::string& v) {
    if (!PathExists(VolDir(v))) {
      return NotFound("volume '" + v + "' does not exist (store " + root_ + ")");
    }
    return Status::Ok();
  }

  Status Publish(const std::string& tmp, const std::string& v) {
    if (::rename(tmp.c_str(), VolDir(v).c_str()) != 0) {
      int err = errno;
      (void)RemoveTree(tmp);
      return ErrnoStatus("create volume '" + v + "'", err);
    }
    return Status::Ok();
  }

  Status Sync() {
    if (!sync_) return Status::Ok();
    HC_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(root_, O_RDONLY | O_DIRECTORY));
    if (::syncfs(fd.get()) != 0) return ErrnoStatus("syncfs " + root_, errno);
    return Status::Ok();
  }

  Meta ReadMeta(const std::string& v) {
    auto s = ReadFileToString(VolDir(v) + "/meta");
    return s.ok() ? DecodeMeta(*s) : Meta{};
  }

  StatCache ReadCache(const std::string& v) {
    auto s = ReadFileToString(VolDir(v) + "/statcache");
    if (!s.ok()) return {};
    return dir::DecodeStatCache(AsBytes(*s));
  }

  static Result<std::vector<std::string>> ListNames(const std::string& path) {
    DIR* d = ::opendir(path.c_str());
    if (d == nullptr) return ErrnoStatus("opendir " + path, errno);
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.' &&
          (e->d_name[1] == 0 || (e->d_name[1] == '.' && e->d_name[2] == 0))) {
        continue;
      }
      names.emplace_back(e->d_name);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    return names;
  }

  // Oldest first.
  Result<std::vector<Snap>> LoadSnaps(const std::string& v) {
    HC_ASSIGN_OR_RETURN(auto names, ListNames(VolDir(v) + "/snapshots"));
    std::vector<Snap> out;
    for (const auto& n : names) {
      if (n.size() < 6 || n.compare(n.size() - 5, 5, ".snap") != 0) continue;
      std::string p = VolDir(v) + "/snapshots/" + n;
      HC_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(p));
      auto rec = dir::DecodeSnapshotRecord(AsBytes(bytes));
      if (!rec.ok()) return rec.status().Annotate(p);
      Snap s{*rec, {}};
      s.id = Sha256Of(AsBytes(bytes));
      out.push_back(std::move(s));
    }
    std::sort(out.begin(), out.end(), [](const Snap& a, const Snap& b) {
      if (a.rec.created_unix_ns != b.rec.created_unix_ns) {
        return a.rec.created_unix_ns < b.rec.created_unix_ns;
      }
      return a.rec.name < b.rec.name;
    });
    return out;
  }

  Result<const Snap*> Find(const std::string& v, const std::vector<Snap>& snaps,
                           const std::string& name) {
    for (const auto& s : snaps) {
      if (s.rec.name == name || ToHex(s.id) == name) return &s;
    }
    std::string hint =
        snaps.empty() ? "it has no snapshots" : "newest is '" + snaps.back().rec.name + "'";
    return NotFound("volume '" + v + "' has no snapshot '" + name + "'; " + hint);
  }

  Status WriteRecord(const std::string& voldir, const SnapshotRecord& rec) {
    return WriteFileAtomic(SnapPath(voldir, rec.name), dir::EncodeSnapshotRecord(rec), sync_);
  }

  // REQUIRES: the volume lock is held. Replaces `cache` by the warm-up's
  // (left as it is when the scan fails).
  void WarmUp(const std::string& v, const std::vector<Snap>& snaps, StatCache* cache) {
    ScanState st;
    {
      std::lock_guard<std::mutex> l(scan_mu_);
      if (auto it = scan_state_.find(v); it != scan_state_.end()) st = it->second;
    }
    auto changes = journal_.PeekChanges(v, LiveDir(v));
    // Multiply-linked directories are left to the frozen pass.
    const bool incremental =
        st.multi_link_dirs.empty() && Incremental(changes, st, snaps, *cache, NowNs());
    Result<dir::ScanResult> warm =
        incremental
            ? dir::ScanLiveIncremental(LiveDir(v), *cache, &chunks_,
                                       dir::ScanHints{snaps.back().rec.tree, &*changes, &reader_})
            : dir::ScanLive(LiveDir(v), *cache, &chunks_);
    if (warm.ok() && !warm->new_multi_link) *cache = std::move(warm->cache);
  }

  // REQUIRES: the volume lock is held.
  Result<SnapshotInfo> TakeSnapshot(const std::string& v, const std::string& name,
                                    const std::vector<Snap>& snaps, const SnapshotOptions& opts) {
    if (PathExists(SnapPath(VolDir(v), name))) {
      return AlreadyExists("volume '" + v + "' already has a snapshot '" + name + "'");
    }
    if (opts.skip_if_unchanged && !snaps.empty()) {
      // The idle volume, checked every second: when the journal vouches that
      // nothing changed since the last scan of this tree (and no periodic full
      // scan is due), there is nothing to freeze, read or write.
      ScanState st;
      bool have = false;
      {
        std::lock_guard<std::mutex> l(scan_mu_);
        if (auto it = scan_state_.find(v); it != scan_state_.end()) st = it->second, have = true;
      }
      if (have && st.root == snaps.back().rec.tree && st.multi_link_dirs.empty() &&
          NowNs() - st.last_full_ns < kFullScanEveryNs && journal_.Quiet(v, LiveDir(v))) {
        return snaps.back().Info();
      }
    }
    StatCache old = ReadCache(v);
    if (opts.freeze) {
      // A warm-up pass while the app still runs: it reads what changed now,
      // so the frozen pass below only confirms it by stat and reads what
      // changed in between. Without it the app stayed frozen while a large
      // write, or the whole volume on the first scan after a start or a
      // promotion, was read: about a second per GiB.
      WarmUp(v, snaps, &old);
      HC_RETURN_IF_ERROR(opts.freeze().Annotate("freeze before snapshot"));
    }
    int64_t created = NowNs();
    // Changes are taken after the freeze: everything written before it is
    // in the set, and the scan reads those directories.
    auto changes = journal_.TakeChanges(v, LiveDir(v));
    ScanState state;
    {
      std::lock_guard<std::mutex> l(scan_mu_);
      state = scan_state_[v];
      scan_state_.erase(v);  // restored only if this scan succeeds
    }
    bool incremental = Incremental(changes, state, snaps, old, created);
    Result<dir::ScanResult> scan = Internal("no scan");
    if (incremental) {
      // A write through another link of a file does not show up in its
      // directory: such directories are always rescanned.
      for (std::string d : state.multi_link_dirs) {
        while (changes->insert(d).second && !d.empty()) {
          size_t slash = d.rfind('/');
          d = slash == std::string::npos ? "" : d.substr(0, slash);
        }
      }
      dir::ScanHints hints{snaps.back().rec.tree, &*changes, &reader_};
      scan = dir::ScanLiveIncremental(LiveDir(v), std::move(old), &chunks_, hints);
      // A new hard link: its other names may sit in directories the journal
      // did not report, so only a full scan can be trusted now.
      bool new_links = scan.ok() && scan->new_multi_link;
      if (new_links) {
        incremental = false;
        old = ReadCache(v);  // the incremental scan consumed its copy
      }
    }
    if (!incremental) {
      scan = dir::ScanLive(LiveDir(v), std::move(old), &chunks_);
      state.last_full_ns = created;
      state.multi_link_dirs.clear();
    }
    Status thawed = opts.thaw ? opts.thaw() : Status::Ok();
    if (!scan.ok()) return scan.status().Annotate("snapshot '" + v + "@" + name + "'");
    HC_RETURN_IF_ERROR(thawed.Annotate("thaw after snapshot"));
    if (opts.skip_if_unchanged && !snaps.empty() && scan->root == snaps.back().rec.tree) {
      state.root = scan->root;
      state.multi_link_dirs.merge(scan->multi_link_dirs);
      NoteNewest(v, &state, snaps.back().Info());
      {
        std::lock_guard<std::mutex> l(scan_mu_);
        scan_state_[v] = std::move(state);
      }
      if (scan->files_read > 0) {
        (void)WriteFileAtomic(VolDir(v) + "/statcache", dir::EncodeStatCache(scan->cache), false);
      }
      return snaps.back().Info();
    }
    // Snapshot times must increase within a volume even if the clock steps
    // back: the order of snapshots is their time order.
    if (!snaps.empty() && created <= snaps.back().rec.created_unix_ns) {
      created = snaps.back().rec.created_unix_ns + 1;
    }
    SnapshotRecord rec;
    rec.name = name;
    rec.created_unix_ns = created;
    rec.tree = scan->root;
    if (!snaps.empty()) rec.parent = snaps.back().id;
    rec.logical_bytes = scan->logical_bytes;
    rec.file_count = scan->file_count;
    if (scan->chunks_added > 0) HC_RETURN_IF_ERROR(Sync());
    HC_RETURN_IF_ERROR(WriteRecord(VolDir(v), rec));
    // An unchanged scan leaves the cache as it was: rewriting it would only
    // cost time on the path of the most frequent snapshot, the idle one.
    if (scan->files_read > 0 || scan->chunks_added > 0 || snaps.empty() ||
        scan->root != snaps.back().rec.tree) {
      (void)WriteFileAtomic(VolDir(v) + "/statcache", dir::EncodeStatCache(scan->cache), false);
    }
    state.root = scan->root;
    state.multi_link_dirs.merge(scan->multi_link_dirs);
    SnapshotInfo info = Snap{rec, dir::SnapshotId(rec)}.Info();
    NoteNewest(v, &state, info);
    {
      std::lock_guard<std::mutex> l(scan_mu_);
      scan_state_[v] = std::move(state);
    }
    return info;
  }

  // Moves snapshots after index `ti` and the live data (by full checkout of
  // the newest snapshot) to a new volume `branch`.
  Status MakeBranch(const std::string& v, const std::vector<Snap>& snaps, size_t ti,
                    const std::string& branch) {
    HC_ASSIGN_OR_RETURN(FileLock bl, FileLock::Acquire(root_ + "/locks/" + branch, true));
    std::string tmp = root_ + "/volumes/.branch-" + Unique();
    HC_RETURN_IF_ERROR(MakeDirs(tmp + "/live", 0755));
    HC_RETURN_IF_ERROR(MakeDirs(tmp + "/snapshots", 0755));
    for (size_t i = ti + 1; i < snaps.size(); ++i) {
      HC_RETURN_IF_ERROR(WriteRecord(tmp, snaps[i].rec));
    }
    StatCache cache;
    Status s = dir::Checkout(tmp + "/live", reader_, nullptr, snaps.back().rec.tree, {}, &cache);
    if (!s.ok()) {
      (void)RemoveTree(tmp);
      return s.Annotate("create branch '" + branch + "'");
    }
    (void)WriteFileAtomic(tmp + "/statcache", dir::EncodeStatCache(cache), false);
    HC_RETURN_IF_ERROR(
        WriteFileAtomic(tmp + "/meta", EncodeMeta({false, v + "@" + snaps[ti].rec.name}), sync_));
    HC_RETURN_IF_ERROR(Sync());
    return Publish(tmp, branch);
  }

  Result<dir::TreeEntry> Resolve(const std::string& v, const std::string& snap,
                                 const std::string& path, bool follow_last) {
    HC_RETURN_IF_ERROR(ValidateName("volume", v));
    HC_RETURN_IF_ERROR(MustExist(v));
    HC_ASSIGN_OR_RETURN(auto snaps, LoadSnaps(v));
    HC_ASSIGN_OR_RETURN(const Snap* s, Find(v, snaps, snap));
    HC_ASSIGN_OR_RETURN(auto segs, dir::SplitSnapshotPath(path));
    dir::TreeEntry root;
    root.name = "/";
    root.type = FileType::kDirectory;
    root.mode = 0755;
    root.subtree = s->rec.tree;
    // Resolve like the kernel would inside a chroot at the snapshot root,
    // except that any way out (absolute or ".." symlinks) is refused.
    std::vector<dir::TreeEntry> stack{root};
    int links = 0;
    std::vector<std::string> todo(segs.rbegin(), segs.rend());
    while (!todo.empty()) {
      std::string seg = std::move(todo.back());
      todo.pop_back();
      if (seg == "..") {
        // Only symlink targets bring ".." here (user paths with ".." were
        // refused): resolve it against the directories walked so far.
        if (stack.size() <= 1) {
          return PermissionDenied("'" + path +
                                  "' goes through a symlink that leads outside "
                                  "the snapshot");
        }
        stack.pop_back();
        continue;
      }
      const dir::TreeEntry& cur = stack.back();
      if (cur.type != FileType::kDirectory) {
        return NotFound("'" + path + "' does not exist in snapshot '" + snap + "'");
      }
      HC_ASSIGN_OR_RETURN(dir::Tree t, reader_.LoadTree(cur.subtree));
      const dir::TreeEntry* e = t.Find(seg);
      if (e == nullptr) {
        return NotFound("'" + path + "' does not exist in snapshot '" + snap + "' of volume '" + v +
                        "'");
      }
      if (e->type == FileType::kSymlink && (follow_last || !todo.empty())) {
        if (++links > 40) return InvalidArgument("too many symlinks resolving '" + path + "'");
        const std::string& target = e->link_target;
        if (target[0] == '/') {
          return PermissionDenied("'" + path + "' is a symlink to an absolute path (" + target +
                                  "), which leads outside the snapshot");
        }
        std::vector<std::string> parts = dir::SplitPathSegments(target);
        todo.insert(todo.end(), parts.rbegin(), parts.rend());
        continue;
      }
      stack.push_back(*e);
    }
    return stack.back();
  }

  // Checks one stored object against its id; a problem goes to *bad.
  void CheckObject(const Digest& id, ChunkKind kind, uint64_t* bytes,
                   std::map<Digest, ScrubProblem>* bad) {
    auto c = chunks_.ReadStored(id);
    Status st = c.ok() ? ChunkStore::Verify(id, *c, nullptr) : c.status();
    if (st.ok() && c->kind != kind) st = Corrupt("chunk has the wrong kind");
    if (st.ok()) {
      *bytes += c->raw_len;
      return;
    }
    (*bad)[id] = ScrubProblem{ToHex(id), st.code() == Code::kNotFound, st.message()};
  }

  // Every object volume `v` refers to: its snapshots' trees and chunks (a
  // damaged tree hides what is below it) and the chunks in its scan cache.
  // REQUIRES: the store lock is held.
  Result<DigestSet> Referenced(const std::string& v) {
    HC_ASSIGN_OR_RETURN(auto snaps, LoadSnaps(v));
    DigestSet out;
    for (const auto& s : snaps) {
      HC_RETURN_IF_ERROR(dir::WalkObjects(
          reader_, s.rec.tree, &out,
          [](const Digest&, ChunkKind, const std::string&) { return Status::Ok(); }));
    }
    StatCache cache = ReadCache(v);
    for (const auto& [d, files] : cache.dirs) {
      for (const auto& f : files) {
        for (const auto& c : f.chunks) out.insert(c.id);
      }
    }
    return out;
  }

  static DirEntry ToDirEntry(const dir::TreeEntry& e) {
    return {e.name, e.type, e.mode, e.size, e.mtime_ns, e.link_target};
  }

  static Status Drain(StreamReader& r) {
    for (;;) {
      HC_ASSIGN_OR_RETURN(StreamRecord rec, r.Next());
      if (rec.type == kRecordEnd) return Status::Ok();
    }
  }

  // What this store's last scan of a volume produced; an incremental scan
  // is only valid against exactly that tree.
  struct ScanState {
    Digest root{};
    int64_t last_full_ns = 0;
    std::set<std::string> multi_link_dirs;
    // The newest snapshot when `root` was scanned (its tree is `root`), and
    // the mtimes of the snapshots directory and the meta file then: while
    // they are unchanged no snapshot came or went and the volume did not
    // become read-only (QuietNewest).
    std::optional<SnapshotInfo> newest;
    int64_t snapdir_ns = 0, meta_ns = 0;
  };

  // Whether a scan may visit only the journal's `changes`: the last scan
  // was of the newest snapshot's tree, no periodic full scan is due, and
  // not most directories changed (then the parallel full scan is faster).
  static bool Incremental(const std::optional<std::set<std::string>>& changes, const ScanState& st,
                          const std::vector<Snap>& snaps, const StatCache& cache, int64_t now) {
    return changes.has_value() && !snaps.empty() && cache.scan_start_ns != 0 &&
           st.root == snaps.back().rec.tree && now - st.last_full_ns < kFullScanEveryNs &&
           changes->size() * 2 <= cache.dirs.size() + 2;
  }
  static int64_t MtimeNs(const std::string& path) {
    struct stat sb;
    if (::stat(path.c_str(), &sb) != 0) return -1;
    return int64_t{sb.st_mtim.tv_sec} * 1'000'000'000 + sb.st_mtim.tv_nsec;
  }
  void NoteNewest(const std::string& v, ScanState* state, const SnapshotInfo& newest) {
    state->newest = newest;
    state->snapdir_ns = MtimeNs(VolDir(v) + "/snapshots");
    state->meta_ns = MtimeNs(VolDir(v) + "/meta");
  }
  // The idle volume's check without a lock, a listing or a scan: the newest
  // snapshot, if the change journal vouches that nothing changed since the
  // scan that found it and nothing else touched the volume's snapshots.
  std::optional<SnapshotInfo> QuietNewest(const std::string& v) {
    ScanState st;
    {
      std::lock_guard<std::mutex> l(scan_mu_);
      auto it = scan_state_.find(v);
      if (it == scan_state_.end() || !it->second.newest) return std::nullopt;
      st = it->second;
    }
    if (!st.multi_link_dirs.empty() || NowNs() - st.last_full_ns >= kFullScanEveryNs ||
        st.newest->id.empty() || MtimeNs(VolDir(v) + "/snapshots") != st.snapdir_ns ||
        MtimeNs(VolDir(v) + "/meta") != st.meta_ns || !journal_.Quiet(v, LiveDir(v))) {
      return std::nullopt;
    }
    return st.newest;
  }
  void ForgetScanState(const std::string& v) {
    journal_.Forget(v);
    std::lock_guard<std::mutex> l(scan_mu_);
    scan_state_.erase(v);
  }

  std::string root_;
  bool sync_;
  ChunkStore chunks_;
  ChunkReader reader_;
  dir::ChangeJournal journal_;
  std::mutex scan_mu_;
  std::unordered_map<std::string, ScanState> scan_state_;  // GUARDED_BY(scan_mu_)
};

}  // namespace

Result<std::unique_ptr<Store>> OpenDirStore(const StoreConfig& config) {
  if (config.root.empty()) {
    return InvalidArgument("the dir backend needs a root directory (--root or HC_STORE_ROOT)");
  }
  auto s = std::make_unique<DirStore>(config.root, config.sync);
  HC_RETURN_IF_ERROR(s->Init());
  return std::unique_ptr<Store>(std::move(s));
}

}  // namespace hc::storage
