#include "storage/zfs/zfs_store.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <optional>
#include <set>
#include <thread>

#include "common/fs.h"
#include "common/subprocess.h"
#include "storage/stream_format.h"
#include "storage/zfs/zfs_util.h"

namespace hc::storage {
namespace {

using zfs::ParseGetOutput;
using zfs::ParseU64;
using zfs::PropertyTable;

constexpr size_t kSendRecord = 1 << 20;
// zfs-fuse reports "dataset is busy" for a moment after an unmount.
constexpr int kBusyRetries = 50;
constexpr auto kBusyDelay = std::chrono::milliseconds(100);
// Temporary datasets live next to the volumes with names no volume can have
// (volume names start with a letter or digit), so ListVolumes skips them.
constexpr char kBrowsePrefix[] = ".hc-browse-";
constexpr char kRollbackPrefix[] = ".hc-rollback-";
constexpr char kRepairPrefix[] = ".hc-repair-";
constexpr char kProbePrefix[] = "hc-probe-";
constexpr char kRuntimeDir[] = "/run/hc-zfs";
constexpr char kReadOnlyProp[] = "hc:readonly";
// Repair streams: the plan envelope's header names this target; 'M' names
// a requested id this node cannot serve (str id, str reason), 'P' is the
// plan (u32 segments, u32 n, n x str covered id). Request ids that start
// with kBaseHint name a snapshot the requester holds intact.
constexpr char kRepairMarker[] = "repair";
constexpr uint8_t kRecordRepairMissing = 'M';
constexpr uint8_t kRecordRepairPlan = 'P';
constexpr char kBaseHint[] = "base:";

// What the installed ZFS can do beyond zfs-fuse (pool v23); see
// docs/zfs-backend.md. One code path per flag.
struct Capabilities {
  bool written = false;  // `written` property: detects unsnapshotted writes
  bool snapdir = false;  // <mountpoint>/.zfs/snapshot/<name> is browsable
  // Datasets are mounted through FUSE (zfs-fuse), whose kernel cache keeps
  // serving old pages and attributes after `zfs receive` changed the files
  // underneath: received volumes are remounted to drop that cache.
  bool fuse_mounts = false;
};

std::string Join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

std::string FirstLine(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

struct SnapRow {
  SnapshotInfo info;
  uint64_t createtxg = 0;
};

// A volume as one `zfs get -r` sees it: every command costs tens of
// milliseconds on zfs-fuse, so an operation lists once and reuses this.
struct Listing {
  bool exists = false;
  std::map<std::string, std::string> props;  // requested extra properties
  std::vector<SnapRow> snaps;                // oldest first
};

const SnapRow* RowById(const std::vector<SnapRow>& snaps, const std::string& id) {
  for (const auto& s : snaps) {
    if (s.info.id == id) return &s;
  }
  return nullptr;
}

bool HasId(const std::vector<SnapRow>& snaps, const std::string& id) {
  return RowById(snaps, id) != nullptr;
}

Status CheckRepairSegment(const StreamHeader& h) {
  if (h.backend != "zfs") {
    return InvalidArgument("a repair stream of the zfs backend carries a '" + h.backend +
                           "' stream");
  }
  return ValidateName("snapshot", h.to_name);
}

const std::string& Prop(const std::map<std::string, std::string>& props, const std::string& name) {
  static const std::string kNone;
  auto it = props.find(name);
  return it == props.end() ? kNone : it->second;
}

class ZfsStore;

// A snapshot made readable: either its .zfs/snapshot directory (OpenZFS) or
// a temporary read-only clone that is destroyed with this object.
class SnapshotView {
 public:
  SnapshotView(ZfsStore* store, std::string clone, std::string mountpoint, UniqueFd root)
      : store_(store),
        clone_(std::move(clone)),
        mountpoint_(std::move(mountpoint)),
        root_(std::move(root)) {}
  SnapshotView(const SnapshotView&) = delete;
  SnapshotView& operator=(const SnapshotView&) = delete;
  ~SnapshotView();
  int root() const { return root_.get(); }
  void set_root(UniqueFd root) { root_ = std::move(root); }

 private:
  ZfsStore* store_;
  std::string clone_;  // "" when no clone was needed
  std::string mountpoint_;
  UniqueFd root_;
};

class ZfsStore : public Store {
 public:
  ZfsStore(std::string parent, std::string pool, Capabilities caps)
      : parent_(std::move(parent)), pool_(std::move(pool)), caps_(caps) {}

  std::string backend() const override { return "zfs"; }

  Status CreateVolume(const std::string& volume) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", volume));
    HC_ASSIGN_OR_RETURN(FileLock lock, Lock(volume));
    HC_ASSIGN_OR_RETURN(bool exists, Exists(Ds(volume)));
    if (exists) return AlreadyExists("volume '" + volume + "' already exists");
    HC_RETURN_IF_ERROR(Run({"create", "-o", "atime=off", Ds(volume)}));
    return EnsureMounted(Ds(volume));
  }

  Status DestroyVolume(const std::string& volume) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", volume));
    HC_ASSIGN_OR_RETURN(FileLock lock, Lock(volume));
    HC_RETURN_IF_ERROR(MustExist(volume));
    HC_ASSIGN_OR_RETURN(auto clones, ClonesOf(Ds(volume) + "@"));
    if (!clones.empty()) {
      return Conflict("volume '" + volume + "' cannot be destroyed: " + Join(clones, ", ") +
                      " depend on its snapshots; destroy them first");
    }
    return DestroyDataset(Ds(volume), /*recursive=*/true);
  }

  Result<std::vector<VolumeInfo>> ListVolumes() override {
    HC_ASSIGN_OR_RETURN(PropertyTable t, GetProps({"-r"}, kVolumeProps, parent_));
    std::vector<VolumeInfo> out;
    for (const auto& [name, props] : t) {
      std::string volume = VolumeOf(name);
      if (volume.empty() || name.find('@') != std::string::npos) continue;
      out.push_back(MakeVolumeInfo(volume, props, t));
    }
    std::sort(out.begin(), out.end(),
              [](const VolumeInfo& a, const VolumeInfo& b) { return a.name < b.name; });
    return out;
  }

  Result<VolumeInfo> GetVolume(const std::string& volume) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", volume));
    HC_ASSIGN_OR_RETURN(auto t, GetPropsIfExists({"-r"}, kVolumeProps, Ds(volume)));
    if (!t) return NotFound("volume '" + volume + "' does not exist");
    return MakeVolumeInfo(volume, (*t)[Ds(volume)], *t);
  }

  Result<std::string> LivePath(const std::string& volume) override {
    HC_ASSIGN_OR_RETURN(VolumeInfo v, GetVolume(volume));
    if (v.live_path.empty() || v.live_path[0] != '/') {
      return Unavailable("volume '" + volume + "' has mountpoint '" + v.live_path +
                         "'; set a mountpoint on dataset '" + parent_ + "' so volumes are mounted");
    }
    return v.live_path;
  }

  Status SetReadOnly(const std::string& volume, bool read_only) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", volume));
    HC_ASSIGN_OR_RETURN(FileLock lock, Lock(volume));
    HC_RETURN_IF_ERROR(MustExist(volume));
    return SetReadOnlyProps(Ds(volume), read_only);
  }

  Result<SnapshotInfo> Snapshot(const std::string& volume, const std::string& snapshot,
                                const SnapshotOptions& options) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", volume));
    HC_RETURN_IF_ERROR(ValidateName("snapshot", snapshot));
    if (options.quick_only) {
      return Unavailable("zfs cannot tell cheaply whether '" + volume + "' changed");
    }
    HC_ASSIGN_OR_RETURN(FileLock lock, Lock(volume));
    HC_ASSIGN_OR_RETURN(Listing l, ListExisting(volume, std::string("readonly,") + kReadOnlyProp));
    if (Prop(l.props, "readonly") == "on" || Prop(l.props, kReadOnlyProp) == "on") {
      return PermissionDenied("volume '" + volume +
                              "' is read-only (a replica); snapshots are "
                              "taken on its primary");
    }
    for (const auto& s : l.snaps) {
      if (s.info.name == snapshot) {
        return AlreadyExists("volume '" + volume + "' already has a snapshot '" + snapshot + "'");
      }
    }
    if (options.skip_if_unchanged && !l.snaps.empty()) {
      HC_ASSIGN_OR_RETURN(bool changed, LiveDiffersFrom(volume, l.snaps.back().info.name));
      if (!changed) return l.snaps.back().info;
    }
    if (options.freeze) HC_RETURN_IF_ERROR(options.freeze());
    Status taken = Run({"snapshot", Ds(volume) + "@" + snapshot});
    Status thawed = options.thaw ? options.thaw() : Status::Ok();
    HC_RETURN_IF_ERROR(taken);
    HC_RETURN_IF_ERROR(thawed);
    return FindSnapshot(volume, snapshot);
  }

  Result<std::vector<SnapshotInfo>> ListSnapshots(const std::string& volume) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", volume));
    HC_ASSIGN_OR_RETURN(auto rows, Snaps(volume));
    std::vector<SnapshotInfo> out;
    for (auto& r : rows) out.push_back(std::move(r.info));
    return out;
  }

  Result<std::vector<DiffEntry>> Diff(const std::string& volume, const std::string& from,
                                      const std::string& to) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", volume));
    HC_RETURN_IF_ERROR(ValidateName("snapshot", from));
    HC_RETURN_IF_ERROR(ValidateName("snapshot", to));
    HC_ASSIGN_OR_RETURN(FileLock lock, Lock(volume));
    HC_ASSIGN_OR_RETURN(Listing l, ListExisting(volume));
    HC_RETURN_IF_ERROR(FindRowIn(l, volume, from).status());
    HC_RETURN_IF_ERROR(FindRowIn(l, volume, to).status());
    return DiffLocked(volume, from, to);
  }

  Status Send(const std::string& volume, const std::optional<std::string>& from,
              const std::string& to, ByteSink& out) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", volume));
    HC_RETURN_IF_ERROR(ValidateName("snapshot", to));
    if (from) HC_RETURN_IF_ERROR(ValidateName("snapshot", *from));
    HC_ASSIGN_OR_RETURN(FileLock lock, Lock(volume));
    HC_ASSIGN_OR_RETURN(Listing l, ListExisting(volume));
    HC_ASSIGN_OR_RETURN(SnapRow to_row, FindRowIn(l, volume, to));
    StreamHeader h;
    h.backend = "zfs";
    h.volume = volume;
    h.to_id = to_row.info.id;
    h.to_name = to;
    h.to_created_unix_ns = to_row.info.created_unix_ns;
    std::vector<std::string> argv = {"zfs", "send"};
    if (from) {
      HC_ASSIGN_OR_RETURN(SnapRow from_row, FindRowIn(l, volume, *from));
      if (from_row.createtxg >= to_row.createtxg) {
        return InvalidArgument("snapshot '" + *from + "' of volume '" + volume +
                               "' is not older than '" + to +
                               "'; an incremental stream goes from an older "
                               "snapshot to a newer one");
      }
      h.from_id = from_row.info.id;
      h.from_name = *from;
      argv.insert(argv.end(), {"-i", "@" + *from});
    }
    argv.push_back(Ds(volume) + "@" + to);
    return SendCommand(argv, h, &out).status();
  }

  Result<ReceiveResult> Receive(const std::string& volume, ByteSource& in,
                                const ReceiveOptions& options) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", volume));
    StreamReader reader(in);
    // The volume is listed (under its lock) while the header is awaited: the
    // sender runs a few commands before it can write it.
    Result<FileLock> lock = Lock(volume);
    std::future<Result<Listing>> listing;
    if (lock.ok()) {
      listing = std::async(std::launch::async, [this, &volume] {
        return List(volume, caps_.written ? "written" : "");
      });
    }
    Result<StreamHeader> header = reader.Begin();
    Result<Listing> listed = listing.valid() ? listing.get() : Result<Listing>(lock.status());
    HC_ASSIGN_OR_RETURN(StreamHeader h, std::move(header));
    if (h.backend != "zfs") {
      return InvalidArgument("the stream was written by the '" + h.backend +
                             "' backend; a 'zfs' store can only receive "
                             "streams from 'zfs' stores");
    }
    HC_RETURN_IF_ERROR(ValidateName("snapshot", h.to_name));
    HC_RETURN_IF_ERROR(lock.status());
    HC_ASSIGN_OR_RETURN(Listing before, std::move(listed));
    const bool exists = before.exists;
    const std::vector<SnapRow>& snaps = before.snaps;
    ReceiveResult result;
    result.volume = volume;
    if (h.from_id.empty() && exists) {
      for (const auto& s : snaps) {
        if (s.info.id == h.to_id) return AlreadyPresent(reader, s.info, result);
      }
      return Conflict("volume '" + volume +
                      "' already exists; a full stream creates a new volume "
                      "(send an incremental stream, or receive into another "
                      "name)");
    }
    if (!h.from_id.empty()) {
      if (!exists) {
        return Conflict("volume '" + volume +
                        "' does not exist; the incremental stream needs its "
                        "base snapshot '" +
                        h.from_name + "' (id " + h.from_id + "): send a full stream first");
      }
      for (const auto& s : snaps) {
        if (s.info.id == h.to_id) return AlreadyPresent(reader, s.info, result);
      }
      size_t base = snaps.size();
      for (size_t i = 0; i < snaps.size(); ++i) {
        if (snaps[i].info.id == h.from_id) base = i;
      }
      if (base == snaps.size()) {
        return Conflict("volume '" + volume + "' has no snapshot with identity " + h.from_id +
                        " (the stream's base '" + h.from_name +
                        "'); send a full stream or an increment from a "
                        "snapshot the volume has");
      }
      if (base + 1 != snaps.size()) {
        std::vector<std::string> newer;
        for (size_t i = base + 1; i < snaps.size(); ++i) {
          newer.push_back(snaps[i].info.name);
        }
        return Conflict("volume '" + volume +
                        "' has diverged from the sender: "
                        "it has snapshots newer than the base '" +
                        snaps[base].info.name + "': " + Join(newer, ", ") +
                        "; roll back (keeping a branch) before receiving");
      }
      for (const auto& s : snaps) {
        if (s.info.name == h.to_name) {
          return Conflict("volume '" + volume + "' already has a snapshot '" + h.to_name +
                          "' with a different identity (" + s.info.id + ", stream has " + h.to_id +
                          ")");
        }
      }
      if (caps_.written && ParseU64(Prop(before.props, "written")) > 0) {
        return ModifiedConflict(volume, snaps.back().info.name);
      }
    }
    HC_ASSIGN_OR_RETURN(uint64_t bytes,
                        ReceiveCommand(volume, Ds(volume) + "@" + h.to_name, reader, h,
                                       snaps.empty() ? "" : snaps.back().info.name));
    result.stream_bytes = bytes;
    const std::string ds = Ds(volume);
    // zfs-fuse: an existing volume is remounted to drop the FUSE cache.
    // Unmounting before reading the properties also makes `readonly` show
    // the stored value instead of the mount option, so the sets below are
    // skipped when nothing changes.
    const bool remount = caps_.fuse_mounts && exists;
    Status unmounted = remount ? Unmount(ds) : Status::Ok();
    auto settle = [&](Listing& after) -> Status {
      HC_ASSIGN_OR_RETURN(SnapRow row, FindRowIn(after, volume, h.to_name));
      result.snapshot = row.info;
      if (result.snapshot.id != h.to_id) {
        return Corrupt("received snapshot '" + h.to_name + "' of volume '" + volume +
                       "' has identity " + result.snapshot.id + " but the stream announced " +
                       h.to_id);
      }
      std::vector<std::vector<std::string>> sets;
      if (Prop(after.props, "atime") != "off") {
        sets.push_back({"set", "atime=off", ds});
      }
      for (auto& set : ReadOnlySets(ds, options.read_only, &after.props)) {
        sets.push_back(std::move(set));
      }
      return RunConcurrently(sets);
    };
    auto after =
        ListExisting(volume, std::string("atime,readonly,mounted,mountpoint,") + kReadOnlyProp);
    Status settled = after.ok() ? settle(*after) : after.status();
    if (!settled.ok()) {
      // Mounted again, as it was before the receive.
      if (remount && unmounted.ok()) (void)EnsureMounted(ds);
      return settled;
    }
    HC_RETURN_IF_ERROR(unmounted);
    if (remount) after->props["mounted"] = "no";
    HC_RETURN_IF_ERROR(MountIfNeeded(ds, after->props));
    return result;
  }

  Result<RollbackResult> Rollback(const std::string& volume, const std::string& snapshot,
                                  const RollbackOptions& options) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", volume));
    HC_RETURN_IF_ERROR(ValidateName("snapshot", snapshot));
    if (!options.branch_name.empty()) {
      HC_RETURN_IF_ERROR(ValidateName("branch volume", options.branch_name));
    }
    HC_ASSIGN_OR_RETURN(FileLock lock, Lock(volume));
    HC_ASSIGN_OR_RETURN(Listing l, ListExisting(volume));
    HC_ASSIGN_OR_RETURN(SnapRow target, FindRowIn(l, volume, snapshot));
    const std::vector<SnapRow>& snaps = l.snaps;
    std::vector<std::string> newer;
    for (const auto& s : snaps) {
      if (s.createtxg > target.createtxg) newer.push_back(s.info.name);
    }
    const std::string ds = Ds(volume);
    RollbackResult result;
    if (options.discard_newer) {
      HC_ASSIGN_OR_RETURN(auto clones, ClonesOfSnapshots(volume, newer));
      if (!clones.empty()) {
        return Conflict("cannot discard the snapshots of volume '" + volume + "' newer than '" +
                        snapshot + "': " + Join(clones, ", ") + " depend on them");
      }
      std::vector<std::string> argv = {"rollback"};
      if (!newer.empty()) argv.push_back("-r");
      argv.push_back(ds + "@" + snapshot);
      HC_RETURN_IF_ERROR(Run(argv, /*retry_busy=*/true));
      HC_RETURN_IF_ERROR(EnsureMounted(ds));
      result.discarded = newer;
      return result;
    }
    if (newer.empty()) {
      HC_ASSIGN_OR_RETURN(bool dirty, LiveDiffersFrom(volume, snapshot));
      if (!dirty) {
        HC_RETURN_IF_ERROR(Run({"rollback", ds + "@" + snapshot}, true));
        HC_RETURN_IF_ERROR(EnsureMounted(ds));
        return result;
      }
    }
    std::string branch = options.branch_name;
    if (branch.empty()) {
      HC_ASSIGN_OR_RETURN(branch, FreeName(volume + "-branch-" + std::to_string(::time(nullptr))));
    } else {
      HC_ASSIGN_OR_RETURN(bool taken, Exists(Ds(branch)));
      if (taken) {
        return AlreadyExists("branch volume '" + branch +
                             "' already exists; choose another branch name");
      }
    }
    HC_RETURN_IF_ERROR(BranchOff(volume, snapshot, branch));
    result.branch = branch;
    return result;
  }

  Result<std::vector<DirEntry>> ListDir(const std::string& volume, const std::string& snapshot,
                                        const std::string& path) override {
    HC_ASSIGN_OR_RETURN(FileLock lock, LockForBrowse(volume, snapshot));
    HC_ASSIGN_OR_RETURN(auto view, View(volume, snapshot));
    return zfs::BrowseListDir(view->root(), path, Label(volume, snapshot));
  }

  Result<DirEntry> Stat(const std::string& volume, const std::string& snapshot,
                        const std::string& path) override {
    HC_ASSIGN_OR_RETURN(FileLock lock, LockForBrowse(volume, snapshot));
    HC_ASSIGN_OR_RETURN(auto view, View(volume, snapshot));
    return zfs::BrowseStat(view->root(), path, Label(volume, snapshot));
  }

  Status ReadFile(const std::string& volume, const std::string& snapshot, const std::string& path,
                  ByteSink& out) override {
    HC_ASSIGN_OR_RETURN(FileLock lock, LockForBrowse(volume, snapshot));
    HC_ASSIGN_OR_RETURN(auto view, View(volume, snapshot));
    return zfs::BrowseReadFile(view->root(), path, Label(volume, snapshot), out);
  }

  Status Clone(const std::string& volume, const std::string& snapshot,
               const std::string& target) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", volume));
    HC_RETURN_IF_ERROR(ValidateName("snapshot", snapshot));
    HC_RETURN_IF_ERROR(ValidateName("volume", target));
    HC_ASSIGN_OR_RETURN(FileLock lock, Lock(volume));
    HC_RETURN_IF_ERROR(FindSnapshot(volume, snapshot).status());
    HC_ASSIGN_OR_RETURN(FileLock target_lock, Lock(target));
    HC_ASSIGN_OR_RETURN(bool exists, Exists(Ds(target)));
    if (exists) return AlreadyExists("volume '" + target + "' already exists");
    HC_RETURN_IF_ERROR(Run({"clone", "-o", "atime=off", Ds(volume) + "@" + snapshot, Ds(target)}));
    // A clone of a replica is a new primary.
    HC_RETURN_IF_ERROR(SetReadOnlyProps(Ds(target), false));
    return EnsureMounted(Ds(target));
  }

  Status DestroySnapshot(const std::string& volume, const std::string& snapshot) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", volume));
    HC_RETURN_IF_ERROR(ValidateName("snapshot", snapshot));
    HC_ASSIGN_OR_RETURN(FileLock lock, Lock(volume));
    HC_RETURN_IF_ERROR(FindSnapshot(volume, snapshot).status());
    HC_ASSIGN_OR_RETURN(auto clones, ClonesOfSnapshots(volume, {snapshot}));
    if (!clones.empty()) {
      return Conflict("snapshot '" + snapshot + "' of volume '" + volume +
                      "' cannot be destroyed: " + Join(clones, ", ") +
                      " depend on it; destroy them first");
    }
    return Run({"destroy", Ds(volume) + "@" + snapshot}, true);
  }

  Result<VerifyReport> Verify(const std::string& volume) override {
    VerifyReport report;
    if (volume.empty()) {
      HC_RETURN_IF_ERROR(Scrub(report));
      return report;
    }
    HC_RETURN_IF_ERROR(ValidateName("volume", volume));
    HC_ASSIGN_OR_RETURN(FileLock lock, Lock(volume));
    HC_ASSIGN_OR_RETURN(auto snaps, Snaps(volume));
    for (const auto& s : snaps) {
      // Reading every block of the snapshot makes ZFS verify its checksums.
      StreamHeader h;
      h.backend = "zfs";
      h.to_id = s.info.id;
      auto bytes = SendCommand({"zfs", "send", Ds(volume) + "@" + s.info.name}, h, nullptr);
      ++report.objects_checked;
      if (!bytes.ok()) {
        report.problems.push_back("snapshot '" + s.info.name + "' of volume '" + volume +
                                  "' cannot be read: " + bytes.status().message());
        continue;
      }
      report.bytes_checked += *bytes;
    }
    HC_RETURN_IF_ERROR(PoolHealth(report));
    return report;
  }

  // ---- Scrub and repair (docs/design.md, "Storage: scrub and repair").

  Result<ScrubReport> Scrub(const std::string& volume, const ScrubOptions& options) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", volume));
    HC_ASSIGN_OR_RETURN(Listing l, ListExisting(volume));
    ScrubReport report;
    std::vector<SnapRow> todo = std::move(l.snaps);
    std::vector<SnapRow> intact;  // read without error, oldest first
    std::optional<SnapRow> prev;  // the newest of them, base of the next read
    int relists = 0;
    for (size_t i = 0; i < todo.size();) {
      const SnapRow s = todo[i];
      // Only the blocks born since `prev`: each block is read once.
      std::vector<std::string> argv = {"zfs", "send"};
      if (prev) argv.insert(argv.end(), {"-i", "@" + prev->info.name});
      argv.push_back(Ds(volume) + "@" + s.info.name);
      StreamHeader h;
      h.backend = "zfs";
      h.to_id = s.info.id;
      auto bytes = SendCommand(argv, h, nullptr, options.max_bytes_per_sec);
      if (bytes.ok()) {
        ++report.objects_checked;
        report.bytes_checked += *bytes;
        intact.push_back(s);
        prev = s;
        ++i;
        continue;
      }
      // Retention may have destroyed one of the two meanwhile: list again
      // and go on after the last snapshot read.
      HC_ASSIGN_OR_RETURN(Listing again, ListExisting(volume));
      bool gone = !HasId(again.snaps, s.info.id) || (prev && !HasId(again.snaps, prev->info.id));
      if (gone && relists++ < 8) {
        uint64_t after = prev ? prev->createtxg : 0;
        if (prev && !HasId(again.snaps, prev->info.id)) prev.reset();  // read the next in full
        todo.clear();
        for (auto& r : again.snaps) {
          if (r.createtxg > after) todo.push_back(std::move(r));
        }
        std::erase_if(intact, [&](const SnapRow& r) { return !HasId(again.snaps, r.info.id); });
        i = 0;
        continue;
      }
      ++report.objects_checked;
      std::string newer = i + 1 < todo.size() ? "; the " + std::to_string(todo.size() - i - 1) +
                                                    " newer snapshot(s) are re-received with it"
                                              : "";
      report.problems.push_back(
          {s.info.id, false,
           "snapshot '" + s.info.name + "' of volume '" + volume + "' is damaged (" +
               (prev ? "blocks written after '" + prev->info.name + "'" : "read in full") +
               "): " + bytes.status().message() + newer});
      for (auto it = intact.rbegin(); it != intact.rend() && report.repair_hints.size() < 32; ++it)
        report.repair_hints.push_back(std::string(kBaseHint) + it->info.id);
      break;
    }
    return report;
  }

  // The repair stream: a plan envelope (header to_id "repair"; records 'M'
  // per requested id this node cannot serve, or one 'P': segment count and
  // the requested ids it covers), then that many ordinary zfs streams:
  // `-I base newest`, or a full stream of the oldest snapshot and
  // `-I oldest newest`.
  Status ExportRepair(const std::string& volume, const std::vector<std::string>& ids,
                      ByteSink& out) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", volume));
    if (ids.size() > kMaxRepairObjects) {
      return InvalidArgument("a repair asks for " + std::to_string(ids.size()) +
                             " objects; at most " + std::to_string(kMaxRepairObjects) +
                             " per request");
    }
    HC_ASSIGN_OR_RETURN(FileLock lock, Lock(volume));
    HC_ASSIGN_OR_RETURN(Listing l, ListExisting(volume));
    std::vector<std::string> damaged;
    std::set<std::string> bases;
    for (const auto& id : ids) {
      if (id.starts_with(kBaseHint)) {
        bases.insert(id.substr(std::strlen(kBaseHint)));
      } else {
        damaged.push_back(id);
      }
    }
    // Re-sent from the newest base we share that is older than all damage.
    std::string why;
    uint64_t oldest_damage = UINT64_MAX;
    for (const auto& id : damaged) {
      const SnapRow* r = RowById(l.snaps, id);
      if (!r) {
        why = "node has no snapshot with identity " + id + " of volume '" + volume + "'";
        break;
      }
      oldest_damage = std::min(oldest_damage, r->createtxg);
    }
    if (damaged.empty()) why = "the request names no damaged snapshot";
    const SnapRow* base = nullptr;
    for (const auto& r : l.snaps) {
      if (bases.count(r.info.id) && r.createtxg < oldest_damage) base = &r;
    }
    StreamHeader h;
    h.backend = "zfs";
    h.volume = volume;
    h.to_id = kRepairMarker;
    h.to_name = kRepairMarker;
    StreamWriter w(out);
    HC_RETURN_IF_ERROR(w.Begin(h));
    if (!why.empty()) {
      for (const auto& id : damaged) {
        Encoder e;
        e.Str(id.substr(0, 128));
        e.Str(why);
        HC_RETURN_IF_ERROR(
            w.Write(static_cast<RecordType>(kRecordRepairMissing), AsBytes(e.out())));
      }
      return w.Finish();
    }
    const SnapRow& newest = l.snaps.back();
    const SnapRow& first = base ? *base : l.snaps.front();
    const uint32_t segments = base ? 1 : (&first == &newest ? 1 : 2);
    Encoder plan;
    plan.U32(segments);
    plan.U32(static_cast<uint32_t>(ids.size()));
    for (const auto& id : ids) plan.Str(id.substr(0, 128));
    HC_RETURN_IF_ERROR(w.Write(static_cast<RecordType>(kRecordRepairPlan), AsBytes(plan.out())));
    HC_RETURN_IF_ERROR(w.Finish());
    // ZFS checks every block it sends: a damaged copy here fails the send,
    // and the requester, seeing no end record, keeps what it had.
    if (!base) HC_RETURN_IF_ERROR(SendRows(volume, nullptr, first, out));
    if (base || &first != &newest) HC_RETURN_IF_ERROR(SendRows(volume, &first, newest, out));
    return Status::Ok();
  }

  Result<RepairResult> ApplyRepair(const std::string& volume, ByteSource& in) override {
    HC_RETURN_IF_ERROR(ValidateName("volume", volume));
    StreamReader plan_reader(in);
    HC_ASSIGN_OR_RETURN(StreamHeader ph, plan_reader.Begin());
    if (ph.backend != "zfs" || ph.to_id != kRepairMarker) {
      return InvalidArgument("not a repair stream of the zfs backend (a '" + ph.backend +
                             "' stream of snapshot '" + ph.to_name + "')");
    }
    RepairResult result;
    uint32_t segments = 0;
    std::vector<std::string> covered;
    for (;;) {
      HC_ASSIGN_OR_RETURN(StreamRecord r, plan_reader.Next());
      if (r.type == kRecordEnd) break;
      Decoder d(r.payload);
      if (r.type == kRecordRepairMissing) {
        result.peer_missing.push_back(d.Str(128));
        result.peer_missing_reasons.push_back(d.Str(4096));
      } else if (r.type == kRecordRepairPlan && segments == 0) {
        segments = d.U32();
        uint32_t n = d.U32();
        if (!d.ok() || segments < 1 || segments > 2 || n > kMaxRepairObjects) {
          return Corrupt("repair stream has a malformed plan");
        }
        for (uint32_t i = 0; i < n && d.ok(); ++i) covered.push_back(d.Str(128));
      } else {
        return Corrupt("repair stream has a record of unexpected type " + std::to_string(r.type));
      }
      if (!d.done()) return Corrupt("repair stream has a malformed record");
    }
    if (segments == 0) return result;  // the peer could not help

    HC_ASSIGN_OR_RETURN(FileLock lock, Lock(volume));
    HC_ASSIGN_OR_RETURN(Listing before,
                        ListExisting(volume, std::string("readonly,") + kReadOnlyProp));
    const bool read_only =
        Prop(before.props, "readonly") == "on" || Prop(before.props, kReadOnlyProp) == "on";
    StreamReader first(in);
    HC_ASSIGN_OR_RETURN(StreamHeader h1, first.Begin());
    HC_RETURN_IF_ERROR(CheckRepairSegment(h1));
    const SnapRow* base = h1.from_id.empty() ? nullptr : RowById(before.snaps, h1.from_id);
    if (!h1.from_id.empty() && !base) {
      return Conflict("volume '" + volume + "' has no snapshot with identity " + h1.from_id +
                      " (the repair's base '" + h1.from_name + "')");
    }
    if (base && segments != 1) return Corrupt("repair stream has a base and two segments");
    // A fresh copy is built next to the volume: from the base by clone and
    // promote (the clone takes the snapshots up to the base, the volume keeps
    // the newer, damaged ones), or from nothing.
    const std::string ds = Ds(volume);
    const std::string tmp = TempName(kRepairPrefix);
    if (base) {
      HC_RETURN_IF_ERROR(Run({"clone", "-o", "mountpoint=none", ds + "@" + base->info.name, tmp}));
      Status promoted = Run({"promote", tmp});
      if (!promoted.ok()) {
        DestroyTemp(tmp);
        return promoted;
      }
    }
    auto undo = [&](Status why) {
      if (base) (void)Run({"promote", ds});
      auto exists = Exists(tmp);
      if (exists.ok() && *exists) {
        Status d = Run({"destroy", "-r", tmp}, true);
        if (!d.ok()) {
          std::fprintf(stderr, "warning: temporary dataset %s was not removed: %s\n", tmp.c_str(),
                       d.ToString().c_str());
        }
      }
      (void)EnsureMounted(ds);
      return why.Annotate("repair of volume '" + volume + "' abandoned; the volume is as it was");
    };
    const std::string newest_before = before.snaps.empty() ? "" : before.snaps.back().info.name;
    auto received =
        ReceiveCommand(volume, base ? tmp : tmp + "@" + h1.to_name, first, h1, newest_before);
    std::string final_id = h1.to_id;
    if (received.ok() && segments == 2) {
      StreamReader second(in);
      auto h2 = second.Begin();
      Status ok = h2.ok() ? CheckRepairSegment(*h2) : h2.status();
      if (ok.ok() && h2->from_id != h1.to_id) ok = Corrupt("repair stream segments do not chain");
      received =
          ok.ok() ? ReceiveCommand(volume, tmp, second, *h2, newest_before) : Result<uint64_t>(ok);
      if (h2.ok()) final_id = h2->to_id;
    }
    if (!received.ok()) return undo(received.status());
    auto fresh = ListDs(tmp);
    if (!fresh.ok()) return undo(fresh.status());
    if (!RowById(fresh->snaps, final_id)) {
      return undo(Corrupt("the repair stream did not recreate snapshot " + final_id));
    }
    // What only the damaged copy has: snapshots the peer lacks, and (on a
    // writable copy) writes since its newest snapshot. Kept, never dropped.
    std::vector<std::string> only_here;
    for (const auto& s : before.snaps) {
      if (!RowById(fresh->snaps, s.info.id)) only_here.push_back(s.info.name);
    }
    bool dirty = false;
    if (!read_only && !newest_before.empty() && only_here.empty()) {
      auto d = LiveDiffersFrom(volume, newest_before);
      dirty = !d.ok() || *d;  // unreadable (damaged) files: keep, to be safe
    }
    std::string branch;
    Status moved;
    if (!only_here.empty() || dirty) {
      HC_ASSIGN_OR_RETURN(branch, FreeName(volume + "-damaged-" + std::to_string(::time(nullptr))));
      moved = Rename(ds, Ds(branch));
    } else {
      moved = DestroyDataset(ds, /*recursive=*/true);
    }
    if (!moved.ok()) return undo(moved);
    Status s = Rename(tmp, ds);
    if (!s.ok()) {
      return s.Annotate("repair of volume '" + volume + "' interrupted: the repaired copy is " +
                        tmp + (branch.empty() ? "" : ", the damaged one volume '" + branch + "'"));
    }
    (void)Run({"inherit", "mountpoint", ds});
    std::vector<std::vector<std::string>> sets = {{"set", "atime=off", ds}};
    for (auto& set : ReadOnlySets(ds, read_only, nullptr)) sets.push_back(std::move(set));
    HC_RETURN_IF_ERROR(RunConcurrently(sets));
    HC_RETURN_IF_ERROR(EnsureMounted(ds));
    if (!branch.empty()) HC_RETURN_IF_ERROR(EnsureMounted(Ds(branch)));
    result.kept_branch = branch;
    for (const auto& r : fresh->snaps) {
      if (!base || r.createtxg > base->createtxg) ++result.repaired;
    }
    result.intact_ids = covered;
    return result;
  }

  Result<SpaceUsage> Space(const std::string& volume) override {
    std::string ds = parent_;
    if (!volume.empty()) {
      HC_RETURN_IF_ERROR(ValidateName("volume", volume));
      HC_RETURN_IF_ERROR(MustExist(volume));
      ds = Ds(volume);
    }
    HC_ASSIGN_OR_RETURN(PropertyTable t, GetProps({}, "used,usedbysnapshots,referenced", ds));
    auto& p = t[ds];
    SpaceUsage u;
    u.live_bytes = ParseU64(p["referenced"]);
    u.snapshot_bytes = ParseU64(p["usedbysnapshots"]);
    u.total_bytes = ParseU64(p["used"]);
    return u;
  }

  // Destroys a temporary dataset (unmounting first; zfs-fuse needs a retry).
  void DestroyTemp(const std::string& ds) {
    Status s = DestroyDataset(ds, false);
    if (!s.ok()) {
      std::fprintf(stderr, "warning: temporary dataset %s was not removed: %s\n", ds.c_str(),
                   s.ToString().c_str());
    }
  }

  // Removes browse clones left by processes that died.
  void CleanStaleTemps() {
    auto r = RunCommand({"zfs", "list", "-H", "-o", "name", "-d", "1", parent_});
    if (!r.ok() || !r->ok()) return;
    const std::string prefix = parent_ + "/" + kBrowsePrefix;
    size_t pos = 0;
    const std::string& out = r->out;
    while (pos < out.size()) {
      size_t nl = out.find('\n', pos);
      if (nl == std::string::npos) nl = out.size();
      std::string name = out.substr(pos, nl - pos);
      pos = nl + 1;
      if (name.rfind(prefix, 0) != 0) continue;
      pid_t pid = static_cast<pid_t>(
          ParseU64(name.substr(prefix.size(), name.find('-', prefix.size()) - prefix.size())));
      if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) DestroyTemp(name);
    }
  }

 private:
  static constexpr char kVolumeProps[] =
      "type,readonly,origin,mountpoint,"
      "hc:readonly";

  std::string Ds(const std::string& volume) const { return parent_ + "/" + volume; }

  static std::string Label(const std::string& volume, const std::string& snap) {
    return "volume '" + volume + "' snapshot '" + snap + "'";
  }

  // "tank/hc/shop" -> "shop"; "" for anything that is not a volume.
  std::string VolumeOf(const std::string& ds) const {
    if (ds.size() <= parent_.size() + 1 || ds.compare(0, parent_.size(), parent_) ||
        ds[parent_.size()] != '/') {
      return "";
    }
    std::string rest = ds.substr(parent_.size() + 1);
    size_t at = rest.find('@');
    std::string vol = rest.substr(0, at);
    if (vol.find('/') != std::string::npos || !ValidateName("volume", vol).ok()) {
      return "";
    }
    return vol;
  }

  // "tank/hc/shop@s1" -> "shop@s1"; other origins are shown in full.
  std::string ShowOrigin(const std::string& origin) const {
    if (origin.empty() || origin == "-") return "";
    if (origin.rfind(parent_ + "/", 0) == 0) return origin.substr(parent_.size() + 1);
    return origin;
  }

  VolumeInfo MakeVolumeInfo(const std::string& volume, std::map<std::string, std::string> props,
                            const PropertyTable& all) const {
    VolumeInfo v;
    v.name = volume;
    v.live_path = props["mountpoint"];
    v.read_only = props["readonly"] == "on" || props[kReadOnlyProp] == "on";
    v.origin = ShowOrigin(props["origin"]);
    const std::string prefix = Ds(volume) + "@";
    for (const auto& [name, p] : all) {
      if (name.rfind(prefix, 0) == 0) ++v.snapshot_count;
    }
    return v;
  }

  Result<CommandResult> Zfs(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"zfs"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  }

  Status Run(const std::vector<std::string>& args, bool retry_busy = false) {
    std::vector<std::string> argv = {"zfs"};
    argv.insert(argv.end(), args.begin(), args.end());
    for (int attempt = 0;; ++attempt) {
      HC_ASSIGN_OR_RETURN(CommandResult r, RunCommand(argv));
      if (r.ok()) return Status::Ok();
      if (retry_busy && zfs::IsBusyError(r.err) && attempt < kBusyRetries) {
        std::this_thread::sleep_for(kBusyDelay);
        continue;
      }
      return IoError(DescribeFailure(argv, r));
    }
  }

  Result<bool> Exists(const std::string& ds) {
    HC_ASSIGN_OR_RETURN(CommandResult r, Zfs({"list", "-H", "-o", "name", ds}));
    if (r.ok()) return true;
    if (r.err.find("does not exist") != std::string::npos) return false;
    return IoError(DescribeFailure({"zfs", "list", ds}, r));
  }

  Status MustExist(const std::string& volume) {
    HC_ASSIGN_OR_RETURN(bool exists, Exists(Ds(volume)));
    if (!exists) return NotFound("volume '" + volume + "' does not exist");
    return Status::Ok();
  }

  Result<PropertyTable> GetProps(std::vector<std::string> flags, const std::string& props,
                                 const std::string& ds) {
    HC_ASSIGN_OR_RETURN(auto t, GetPropsIfExists(std::move(flags), props, ds));
    if (!t) return NotFound("dataset '" + ds + "' does not exist");
    return std::move(*t);
  }

  // Like GetProps, but a dataset that does not exist gives nullopt.
  Result<std::optional<PropertyTable>> GetPropsIfExists(std::vector<std::string> flags,
                                                        const std::string& props,
                                                        const std::string& ds) {
    std::vector<std::string> args = {"get", "-H", "-p", "-o", "name,property,value"};
    args.insert(args.end(), flags.begin(), flags.end());
    args.push_back(props);
    args.push_back(ds);
    HC_ASSIGN_OR_RETURN(CommandResult r, Zfs(args));
    if (r.ok()) return std::optional<PropertyTable>(ParseGetOutput(r.out));
    if (r.err.find("does not exist") != std::string::npos) {
      return std::optional<PropertyTable>();
    }
    args.insert(args.begin(), "zfs");
    return IoError(DescribeFailure(args, r));
  }

  // The volume's snapshots, oldest first (by creation transaction group:
  // creation times have whole seconds only), and the `extra` properties
  // (comma-separated, may be empty) of its dataset, in one command.
  Result<Listing> List(const std::string& volume, const std::string& extra = "") {
    return ListDs(Ds(volume), extra);
  }

  // List for any dataset (temporary ones too).
  Result<Listing> ListDs(const std::string& ds, const std::string& extra = "") {
    std::string props = "guid,creation,referenced,createtxg";
    if (!extra.empty()) props += "," + extra;
    HC_ASSIGN_OR_RETURN(auto t, GetPropsIfExists({"-r"}, props, ds));
    Listing l;
    if (!t) return l;
    l.exists = true;
    l.props = std::move((*t)[ds]);
    const std::string prefix = ds + "@";
    for (auto& [name, p] : *t) {
      if (name.rfind(prefix, 0) != 0) continue;
      SnapRow r;
      r.info.name = name.substr(prefix.size());
      r.info.id = p["guid"];
      r.info.created_unix_ns = static_cast<int64_t>(ParseU64(p["creation"])) * 1000000000;
      r.info.logical_bytes = ParseU64(p["referenced"]);
      r.createtxg = ParseU64(p["createtxg"]);
      l.snaps.push_back(std::move(r));
    }
    std::sort(l.snaps.begin(), l.snaps.end(),
              [](const SnapRow& a, const SnapRow& b) { return a.createtxg < b.createtxg; });
    return l;
  }

  // List, with kNotFound for a volume that does not exist.
  Result<Listing> ListExisting(const std::string& volume, const std::string& extra = "") {
    HC_ASSIGN_OR_RETURN(Listing l, List(volume, extra));
    if (!l.exists) return NotFound("volume '" + volume + "' does not exist");
    return l;
  }

  Result<std::vector<SnapRow>> Snaps(const std::string& volume) {
    HC_ASSIGN_OR_RETURN(Listing l, ListExisting(volume));
    return std::move(l.snaps);
  }

  Result<SnapRow> FindRow(const std::string& volume, const std::string& snap) {
    HC_ASSIGN_OR_RETURN(Listing l, ListExisting(volume));
    return FindRowIn(l, volume, snap);
  }

  static Result<SnapRow> FindRowIn(const Listing& l, const std::string& volume,
                                   const std::string& snap) {
    const auto& snaps = l.snaps;
    for (auto& s : snaps) {
      if (s.info.name == snap) return s;
    }
    return NotFound("volume '" + volume + "' has no snapshot '" + snap + "'; " +
                    (snaps.empty() ? std::string("it has no snapshots")
                                   : "newest is '" + snaps.back().info.name + "'"));
  }

  Result<SnapshotInfo> FindSnapshot(const std::string& volume, const std::string& snap) {
    HC_ASSIGN_OR_RETURN(SnapRow r, FindRow(volume, snap));
    return r.info;
  }

  // Datasets (shown as volume names where possible) whose origin starts
  // with `origin_prefix`.
  Result<std::vector<std::string>> ClonesOf(const std::string& origin_prefix) {
    HC_ASSIGN_OR_RETURN(PropertyTable t, GetProps({"-r"}, "origin", pool_));
    std::vector<std::string> out;
    for (auto& [name, p] : t) {
      const std::string& o = p["origin"];
      if (o.rfind(origin_prefix, 0) != 0) continue;
      std::string vol = VolumeOf(name);
      out.push_back(vol.empty() ? "dataset '" + name + "'" : "volume '" + vol + "'");
    }
    return out;
  }

  Result<std::vector<std::string>> ClonesOfSnapshots(const std::string& volume,
                                                     const std::vector<std::string>& snaps) {
    std::vector<std::string> out;
    if (snaps.empty()) return out;
    HC_ASSIGN_OR_RETURN(PropertyTable t, GetProps({"-r"}, "origin", pool_));
    for (auto& [name, p] : t) {
      const std::string& o = p["origin"];
      // Exact match: "shop@s1" must not match "shop@s10".
      bool depends = false;
      for (const auto& s : snaps) depends |= o == Ds(volume) + "@" + s;
      if (!depends) continue;
      std::string vol = VolumeOf(name);
      out.push_back(vol.empty() ? "dataset '" + name + "'" : "volume '" + vol + "'");
    }
    return out;
  }

  // zfs-fuse reports the `readonly` property of a mounted dataset as the
  // mount option ("off", source "temporary") even when it is on, so the
  // store also records the state in a user property it can read back.
  Status SetReadOnlyProps(const std::string& ds, bool read_only) {
    for (const auto& set : ReadOnlySets(ds, read_only, nullptr)) {
      HC_RETURN_IF_ERROR(Run(set));
    }
    return Status::Ok();
  }

  // The `zfs set` commands (without "zfs") for SetReadOnlyProps. With
  // `current` (the dataset's readonly and hc:readonly values), a property
  // that already has the wanted value is left out.
  static std::vector<std::vector<std::string>> ReadOnlySets(
      const std::string& ds, bool read_only, const std::map<std::string, std::string>* current) {
    const std::string v = read_only ? "on" : "off";
    std::vector<std::vector<std::string>> out;
    if (!current || Prop(*current, "readonly") != v) {
      out.push_back({"set", "readonly=" + v, ds});
    }
    if (!current || Prop(*current, kReadOnlyProp) != v) {
      out.push_back({"set", std::string(kReadOnlyProp) + "=" + v, ds});
    }
    return out;
  }

  // Runs independent `zfs` commands (without "zfs") at the same time, so
  // their round trips to the daemon overlap. Returns the first failure in
  // list order, as running them one by one would.
  Status RunConcurrently(const std::vector<std::vector<std::string>>& cmds) {
    if (cmds.size() == 1) return Run(cmds[0]);
    std::vector<std::vector<std::string>> argvs;
    std::vector<Result<Subprocess>> procs;
    for (const auto& args : cmds) {
      argvs.push_back({"zfs"});
      argvs.back().insert(argvs.back().end(), args.begin(), args.end());
      procs.push_back(Subprocess::Spawn(argvs.back(), false, false));
    }
    Status first = Status::Ok();
    for (size_t i = 0; i < procs.size(); ++i) {
      Status s = procs[i].status();
      if (s.ok()) {
        auto r = procs[i]->Wait();
        if (!r.ok()) {
          s = r.status();
        } else if (!r->ok()) {
          s = IoError(DescribeFailure(argvs[i], *r));
        }
      }
      if (first.ok() && !s.ok()) first = s;
    }
    return first;
  }

  Status EnsureMounted(const std::string& ds) {
    HC_ASSIGN_OR_RETURN(PropertyTable t, GetProps({}, "mounted,mountpoint", ds));
    return MountIfNeeded(ds, t[ds]);
  }

  // `props` holds the dataset's current mounted and mountpoint values.
  Status MountIfNeeded(const std::string& ds, const std::map<std::string, std::string>& props) {
    const std::string& mp = Prop(props, "mountpoint");
    if (Prop(props, "mounted") == "yes" || mp.empty() || mp[0] != '/') {
      return Status::Ok();
    }
    HC_ASSIGN_OR_RETURN(CommandResult r, Zfs({"mount", ds}));
    if (!r.ok() && r.err.find("already mounted") == std::string::npos) {
      return IoError(DescribeFailure({"zfs", "mount", ds}, r));
    }
    return Status::Ok();
  }

  Status Unmount(const std::string& ds) {
    for (int attempt = 0;; ++attempt) {
      HC_ASSIGN_OR_RETURN(CommandResult r, Zfs({"unmount", ds}));
      if (r.ok() || r.err.find("not currently mounted") != std::string::npos) {
        return Status::Ok();
      }
      if (zfs::IsBusyError(r.err) && attempt < kBusyRetries) {
        std::this_thread::sleep_for(kBusyDelay);
        continue;
      }
      return IoError(DescribeFailure({"zfs", "unmount", ds}, r) +
                     " (is a process still using its files?)");
    }
  }

  Status DestroyDataset(const std::string& ds, bool recursive) {
    HC_RETURN_IF_ERROR(Unmount(ds));
    if (recursive) return Run({"destroy", "-r", ds}, true);
    return Run({"destroy", ds}, true);
  }

  Status Rename(const std::string& from, const std::string& to) {
    HC_RETURN_IF_ERROR(Unmount(from));
    return Run({"rename", from, to}, true);
  }

  Result<FileLock> Lock(const std::string& volume) {
    std::string dir = std::string(kRuntimeDir) + "/locks";
    HC_RETURN_IF_ERROR(MakeDirs(dir, 0700));
    std::string key = parent_ + "/" + volume;
    std::replace(key.begin(), key.end(), '/', '%');
    return FileLock::Acquire(dir + "/" + key + ".lock", true);
  }

  Result<FileLock> LockForBrowse(const std::string& volume, const std::string& snapshot) {
    HC_RETURN_IF_ERROR(ValidateName("volume", volume));
    HC_RETURN_IF_ERROR(ValidateName("snapshot", snapshot));
    HC_ASSIGN_OR_RETURN(FileLock lock, Lock(volume));
    HC_RETURN_IF_ERROR(FindSnapshot(volume, snapshot).status());
    return lock;
  }

  // `base`, or `base-2`, `base-3`... whichever no volume has yet.
  Result<std::string> FreeName(const std::string& base) {
    std::string name = base;
    for (int i = 2;; ++i) {
      HC_ASSIGN_OR_RETURN(bool taken, Exists(Ds(name)));
      if (!taken) return name;
      name = base + "-" + std::to_string(i);
    }
  }

  // Sends one ordinary zfs stream: snapshot `to` in full (`from` null) or
  // every snapshot after `from` up to `to` (`zfs send -I`).
  Status SendRows(const std::string& volume, const SnapRow* from, const SnapRow& to,
                  ByteSink& out) {
    StreamHeader h;
    h.backend = "zfs";
    h.volume = volume;
    h.to_id = to.info.id;
    h.to_name = to.info.name;
    h.to_created_unix_ns = to.info.created_unix_ns;
    std::vector<std::string> argv = {"zfs", "send"};
    if (from) {
      h.from_id = from->info.id;
      h.from_name = from->info.name;
      argv.insert(argv.end(), {"-I", "@" + from->info.name});
    }
    argv.push_back(Ds(volume) + "@" + to.info.name);
    return SendCommand(argv, h, &out).status();
  }

  std::string TempName(const char* prefix) {
    return parent_ + "/" + prefix + std::to_string(::getpid()) + "-" +
           std::to_string(counter_.fetch_add(1));
  }

  // REQUIRES: the volume lock is held and the snapshot exists.
  Result<std::unique_ptr<SnapshotView>> View(const std::string& volume,
                                             const std::string& snapshot) {
    if (caps_.snapdir) {
      HC_ASSIGN_OR_RETURN(PropertyTable t, GetProps({}, "mountpoint", Ds(volume)));
      std::string dir = t[Ds(volume)]["mountpoint"] + "/.zfs/snapshot/" + snapshot;
      HC_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(dir, O_RDONLY | O_DIRECTORY));
      return std::make_unique<SnapshotView>(this, "", "", std::move(fd));
    }
    if (!cleaned_.exchange(true)) CleanStaleTemps();
    std::string clone = TempName(kBrowsePrefix);
    std::string mnt = std::string(kRuntimeDir) + "/browse/" + clone.substr(clone.rfind('/') + 1);
    HC_RETURN_IF_ERROR(MakeDirs(mnt, 0700));
    HC_RETURN_IF_ERROR(Run({"clone", "-o", "readonly=on", "-o", "atime=off", "-o",
                            "mountpoint=" + mnt, Ds(volume) + "@" + snapshot, clone}));
    // From here the view owns the clone and destroys it on every path.
    auto view = std::make_unique<SnapshotView>(this, clone, mnt, UniqueFd());
    HC_RETURN_IF_ERROR(EnsureMounted(clone));
    struct stat a, b;
    if (::stat(mnt.c_str(), &a) != 0 || ::stat((mnt + "/..").c_str(), &b) != 0 ||
        a.st_dev == b.st_dev) {
      return IoError("the temporary clone of " + Label(volume, snapshot) + " did not mount at " +
                     mnt);
    }
    HC_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(mnt, O_RDONLY | O_DIRECTORY));
    view->set_root(std::move(fd));
    return view;
  }

  Result<std::vector<DiffEntry>> DiffLocked(const std::string& volume, const std::string& from,
                                            const std::string& to) {
    HC_ASSIGN_OR_RETURN(auto a, View(volume, from));
    HC_ASSIGN_OR_RETURN(auto b, View(volume, to));
    return zfs::DiffTrees(a->root(), b->root());
  }

  Result<bool> HasUnsnapshottedWrites(const std::string& volume) {
    HC_ASSIGN_OR_RETURN(PropertyTable t, GetProps({}, "written", Ds(volume)));
    return ParseU64(t[Ds(volume)]["written"]) > 0;
  }

  // Whether the live data differs from `snapshot` (the newest). With the
  // `written` property ZFS knows; otherwise a probe snapshot is taken and
  // the incremental stream from `snapshot` to it measured: with no change
  // it holds only its BEGIN and END records (312 bytes each), and any
  // change (data, metadata, a touch) adds records. That reads only blocks
  // written since `snapshot`, never the files themselves.
  // REQUIRES: the volume lock is held.
  Result<bool> LiveDiffersFrom(const std::string& volume, const std::string& snapshot) {
    if (caps_.written) return HasUnsnapshottedWrites(volume);
    constexpr uint64_t kEmptyIncrementalBytes = 2 * 312;
    std::string probe =
        kProbePrefix + std::to_string(::getpid()) + "-" + std::to_string(counter_.fetch_add(1));
    HC_RETURN_IF_ERROR(Run({"snapshot", Ds(volume) + "@" + probe}));
    StreamHeader h;
    h.backend = "zfs";
    auto bytes =
        SendCommand({"zfs", "send", "-i", "@" + snapshot, Ds(volume) + "@" + probe}, h, nullptr);
    Status destroyed = Run({"destroy", Ds(volume) + "@" + probe}, true);
    HC_RETURN_IF_ERROR(bytes.status());
    HC_RETURN_IF_ERROR(destroyed);
    return *bytes > kEmptyIncrementalBytes;
  }

  // Moves the volume's newer snapshots and live data to `branch` and makes
  // the volume a copy of `snapshot` again, without destroying anything:
  // clone + promote hands the older snapshots to the clone, then the two
  // datasets swap names.
  Status BranchOff(const std::string& volume, const std::string& snapshot,
                   const std::string& branch) {
    const std::string ds = Ds(volume);
    const std::string tmp = TempName(kRollbackPrefix);
    HC_RETURN_IF_ERROR(Run({"clone", ds + "@" + snapshot, tmp}));
    Status s = Run({"promote", tmp});
    if (!s.ok()) {
      DestroyTemp(tmp);
      return s;
    }
    s = Rename(ds, Ds(branch));
    if (!s.ok()) {
      // Undo the promotion so the volume owns its snapshots again.
      (void)Run({"promote", ds});
      (void)EnsureMounted(ds);
      DestroyTemp(tmp);
      return s;
    }
    s = Rename(tmp, ds);
    if (!s.ok()) {
      Status back = Rename(Ds(branch), ds);
      if (back.ok()) {
        (void)Run({"promote", ds});
        (void)EnsureMounted(ds);
        DestroyTemp(tmp);
      }
      return s.Annotate(back.ok() ? "rollback undone"
                                  : "rollback interrupted: volume data is in " + Ds(branch) +
                                        " and " + tmp);
    }
    (void)Run({"inherit", "mountpoint", ds});
    HC_RETURN_IF_ERROR(EnsureMounted(ds));
    return EnsureMounted(Ds(branch));
  }

  Result<ReceiveResult> AlreadyPresent(StreamReader& reader, const SnapshotInfo& snap,
                                       ReceiveResult result) {
    for (;;) {
      HC_ASSIGN_OR_RETURN(StreamRecord r, reader.Next());
      if (r.type == kRecordEnd) break;
    }
    result.snapshot = snap;
    result.already_present = true;
    result.stream_bytes = reader.bytes_read();
    return result;
  }

  Status ModifiedConflict(const std::string& volume, const std::string& newest) {
    return Conflict("volume '" + volume + "' has writes that are not in a snapshot (since '" +
                    newest +
                    "'); it has diverged from the sender: roll it "
                    "back to '" +
                    newest +
                    "' (keeping a branch) before "
                    "receiving");
  }

  // Feeds verified 'D' records to `zfs receive <target>` (a snapshot, or
  // a dataset for a stream of several snapshots); on any stream error kills
  // it before it has seen the end of the ZFS stream, so ZFS discards the
  // partial receive.
  Result<uint64_t> ReceiveCommand(const std::string& volume, const std::string& target,
                                  StreamReader& reader, const StreamHeader& h,
                                  const std::string& newest) {
    std::vector<std::string> argv = {"zfs", "receive", target};
    HC_ASSIGN_OR_RETURN(Subprocess p, Subprocess::Spawn(argv, true, false, kStreamPipeBytes));
    FdSink to_zfs(p.stdin_fd());
    Status stream_status;
    bool child_gone = false;
    // One record of look-ahead: `zfs receive` commits as soon as it reads
    // the ZFS end record, without waiting for EOF. Holding back the last
    // data record until our own end record has been verified means a stream
    // that is damaged or cut anywhere after it never gets committed.
    std::vector<uint8_t> pending_buf;
    std::span<const uint8_t> pending;
    bool have_pending = false;
    auto flush = [&]() -> bool {
      if (!have_pending) return true;
      have_pending = false;
      return to_zfs.Write(pending).ok();
    };
    for (;;) {
      auto rec = reader.Next();
      if (!rec.ok()) {
        stream_status = rec.status();
        break;
      }
      if (rec->type == kRecordEnd) {
        if (!flush()) child_gone = true;
        break;
      }
      if (rec->type != kRecordZfsData) {
        stream_status =
            Corrupt("stream has an unexpected record type '" +
                    std::string(1, static_cast<char>(rec->type)) + "' for a zfs stream");
        break;
      }
      if (!flush()) {
        child_gone = true;  // zfs receive exited early; its stderr says why
        break;
      }
      reader.SwapBuffer(&pending_buf);
      pending = rec->payload;  // now points into pending_buf
      have_pending = true;
    }
    if (!stream_status.ok()) {
      p.Kill();
      (void)p.Wait();
      return stream_status;
    }
    p.CloseStdin();
    HC_ASSIGN_OR_RETURN(CommandResult r, p.Wait());
    if (r.ok() && !child_gone) return reader.bytes_read();
    const std::string& e = r.err;
    if (e.find("has been modified") != std::string::npos) {
      return ModifiedConflict(volume, newest);
    }
    if (e.find("does not match incremental source") != std::string::npos ||
        e.find("already exists") != std::string::npos) {
      return Conflict("volume '" + volume + "' cannot take this stream: " + FirstLine(e));
    }
    if (e.find("invalid backup stream") != std::string::npos ||
        e.find("checksum") != std::string::npos) {
      return Corrupt("zfs rejected the stream data for volume '" + volume + "': " + FirstLine(e));
    }
    return IoError(DescribeFailure(argv, r));
  }

  // Runs `zfs send` and wraps its output; with no sink it only counts the
  // bytes (Verify, Scrub), reading at most `max_bytes_per_sec` (0 = no
  // limit). Returns the raw ZFS stream size.
  Result<uint64_t> SendCommand(const std::vector<std::string>& argv, const StreamHeader& h,
                               ByteSink* out, uint64_t max_bytes_per_sec = 0) {
    const auto started = std::chrono::steady_clock::now();
    HC_ASSIGN_OR_RETURN(Subprocess p, Subprocess::Spawn(argv, false, true, kStreamPipeBytes));
    std::optional<StreamWriter> writer;
    if (out) {
      writer.emplace(*out);
      Status s = writer->Begin(h);
      if (!s.ok()) {
        p.Kill();
        return s;
      }
    }
    std::vector<uint8_t> buf(kSendRecord);
    uint64_t total = 0;
    for (;;) {
      size_t got = 0;
      while (got < buf.size()) {
        ssize_t n = ::read(p.stdout_fd(), buf.data() + got, buf.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          p.Kill();
          return ErrnoStatus("read from zfs send", errno);
        }
        if (n == 0) break;
        got += static_cast<size_t>(n);
      }
      if (got == 0) break;
      total += got;
      if (max_bytes_per_sec > 0) {
        auto due = started + std::chrono::microseconds(total * 1000000 / max_bytes_per_sec);
        std::this_thread::sleep_until(due);
      }
      if (writer) {
        Status s = writer->Write(kRecordZfsData, std::span(buf.data(), got));
        if (!s.ok()) {
          p.Kill();
          return s;
        }
      }
    }
    HC_ASSIGN_OR_RETURN(CommandResult r, p.Wait());
    // Without a successful exit the end record is not written, so a
    // receiver sees a truncated stream.
    if (!r.ok()) return IoError(DescribeFailure(argv, r));
    if (writer) HC_RETURN_IF_ERROR(writer->Finish());
    return total;
  }

  Status PoolHealth(VerifyReport& report) {
    HC_ASSIGN_OR_RETURN(CommandResult r, RunCommand({"zpool", "status", "-x", pool_}));
    if (!r.ok() || r.out.find("is healthy") == std::string::npos) {
      report.problems.push_back("pool '" + pool_ + "' is not healthy: " + FirstLine(r.out + r.err) +
                                " (see 'zpool status -v " + pool_ + "')");
    }
    return Status::Ok();
  }

  Status Scrub(VerifyReport& report) {
    HC_ASSIGN_OR_RETURN(CommandResult r, RunCommand({"zpool", "scrub", pool_}));
    if (!r.ok()) return IoError(DescribeFailure({"zpool", "scrub", pool_}, r));
    std::string status;
    for (;;) {
      HC_ASSIGN_OR_RETURN(CommandResult s, RunCommand({"zpool", "status", "-v", pool_}));
      if (!s.ok()) return IoError(DescribeFailure({"zpool", "status", pool_}, s));
      status = s.out;
      if (status.find("in progress") == std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    HC_ASSIGN_OR_RETURN(PropertyTable t, GetProps({"-r"}, "type", parent_));
    report.objects_checked = t.size();
    HC_ASSIGN_OR_RETURN(PropertyTable u, GetProps({}, "used", parent_));
    report.bytes_checked = ParseU64(u[parent_]["used"]);
    if (status.find("with 0 errors") == std::string::npos ||
        status.find("No known data errors") == std::string::npos) {
      for (size_t pos = 0; pos < status.size();) {
        size_t nl = status.find('\n', pos);
        if (nl == std::string::npos) nl = status.size();
        std::string line = status.substr(pos, nl - pos);
        pos = nl + 1;
        if (line.find("scrub") != std::string::npos || line.find("errors") != std::string::npos ||
            line.find('/') != std::string::npos) {
          while (!line.empty() && (line[0] == ' ' || line[0] == '\t')) line.erase(0, 1);
          if (!line.empty()) report.problems.push_back("pool '" + pool_ + "': " + line);
        }
      }
      if (report.problems.empty()) {
        report.problems.push_back("pool '" + pool_ +
                                  "' scrub found errors; see "
                                  "'zpool status -v " +
                                  pool_ + "'");
      }
    }
    return PoolHealth(report);
  }

  std::string parent_;
  std::string pool_;
  Capabilities caps_;
  std::atomic<uint64_t> counter_{0};
  // Browse clones left by dead processes are removed before this store
  // creates its first one (not at open, which would cost every command).
  std::atomic<bool> cleaned_{false};
};

SnapshotView::~SnapshotView() {
  root_.Reset();
  if (!clone_.empty()) store_->DestroyTemp(clone_);
  if (!mountpoint_.empty()) ::rmdir(mountpoint_.c_str());
}

}  // namespace

Result<std::unique_ptr<Store>> OpenZfsStore(const StoreConfig& config) {
  if (config.dataset.empty()) {
    return InvalidArgument(
        "the zfs backend needs a parent dataset "
        "(e.g. 'tank/hc')");
  }
  const std::string& ds = config.dataset;
  // One command for everything: `zfs get` of a property this ZFS lacks
  // (zfs-fuse has no `written`) fails as a whole, `all` lists what exists.
  auto r = RunCommand({"zfs", "get", "-H", "-p", "-o", "name,property,value", "all", ds});
  if (!r.ok()) {
    return Unavailable("the 'zfs' command is not available (" + r.status().message() +
                       "); install OpenZFS (zfsutils-linux) or zfs-fuse, or "
                       "use the 'dir' backend");
  }
  if (!r->ok()) {
    if (r->err.find("does not exist") != std::string::npos) {
      return NotFound("parent dataset '" + ds +
                      "' does not exist; create it "
                      "with 'zfs create -p " +
                      ds + "'");
    }
    return Unavailable("ZFS is not usable: " + DescribeFailure({"zfs", "get", "type", ds}, *r) +
                       " (is the zfs-fuse daemon or the zfs module loaded?)");
  }
  PropertyTable t = ParseGetOutput(r->out);
  const auto& props = t[ds];
  const std::string& type = Prop(props, "type");
  if (type != "filesystem") {
    return InvalidArgument("'" + ds + "' is a " + type + ", not a filesystem dataset");
  }
  Capabilities caps;
  caps.written = props.count("written") > 0;
  {
    const std::string& dir = Prop(props, "mountpoint");
    caps.snapdir = !dir.empty() && dir[0] == '/' && PathExists(dir + "/.zfs/snapshot");
    struct statfs fs;
    constexpr long kFuseSuperMagic = 0x65735546;
    caps.fuse_mounts = !dir.empty() && dir[0] == '/' && ::statfs(dir.c_str(), &fs) == 0 &&
                       fs.f_type == kFuseSuperMagic;
  }
  std::string pool = ds.substr(0, ds.find('/'));
  auto store = std::make_unique<ZfsStore>(ds, pool, caps);
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace hc::storage
