// `hc volume ...`: local use of the storage engine.
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "common/fs.h"

namespace hc::cli {
namespace {

using nlohmann::json;
using storage::Store;

struct Shared {
  StoreFlags store;
  bool json = false;
};

void Print(const json& j) {
  std::printf("%s\n", j.dump(2).c_str());
}

std::string DefaultSnapshotName() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y%m%dt%H%M%S", &tm);
  return std::string("s") + buf + "." + std::to_string(ts.tv_nsec / 1'000'000);
}

class CountingSink : public ByteSink {
 public:
  CountingSink(ByteSink& inner, Progress& p) : inner_(inner), p_(p) {}
  Status Write(std::span<const uint8_t> d) override {
    p_.Add(d.size());
    return inner_.Write(d);
  }

 private:
  ByteSink& inner_;
  Progress& p_;
};

class CountingSource : public ByteSource {
 public:
  CountingSource(ByteSource& inner, Progress& p) : inner_(inner), p_(p) {}
  Result<size_t> Read(std::span<uint8_t> d) override {
    auto r = inner_.Read(d);
    if (r.ok()) p_.Add(*r);
    return r;
  }

 private:
  ByteSource& inner_;
  Progress& p_;
};

// Runs `fn` with an opened store; converts errors to an exit code.
template <typename Fn>
std::function<void()> WithStore(Shared& sh, int* exit_code, Fn fn) {
  return [&sh, exit_code, fn] {
    auto store = sh.store.Open();
    if (!store.ok()) {
      *exit_code = Fail(store.status());
      return;
    }
    Status s = fn(**store);
    *exit_code = s.ok() ? 0 : Fail(s);
  };
}

json SnapshotJson(const storage::SnapshotInfo& s) {
  return {{"name", s.name},
          {"id", s.id},
          {"created_unix_ns", s.created_unix_ns},
          {"created", FormatTime(s.created_unix_ns)},
          {"logical_bytes", s.logical_bytes},
          {"file_count", s.file_count}};
}

}  // namespace

void AddVolumeCommands(CLI::App& app, int* exit_code) {
  auto* vol = app.add_subcommand("volume",
                                 "Volumes on this machine: create, snapshot, send, "
                                 "receive, roll back, browse");
  vol->require_subcommand(1);
  // Shared flags may also follow the subcommand: `hc volume list --json`.
  vol->fallthrough();
  auto sh = std::make_shared<Shared>();
  // The shared flags live as long as the App: keep them in a static list.
  static std::vector<std::shared_ptr<Shared>> keep;
  keep.push_back(sh);
  Shared& S = *sh;
  S.store.AddTo(*vol);
  vol->add_flag("--json", S.json, "Print listings as JSON");

  // create
  {
    auto* c = vol->add_subcommand("create", "Create an empty volume");
    static std::string name;
    c->add_option("NAME", name, "Volume name (a-z, 0-9, '.', '_', '-')")->required();
    c->callback(WithStore(S, exit_code, [](Store& st) -> Status {
      HC_RETURN_IF_ERROR(st.CreateVolume(name));
      HC_ASSIGN_OR_RETURN(auto path, st.LivePath(name));
      std::printf("created volume '%s'; its live data is in %s\n", name.c_str(), path.c_str());
      return Status::Ok();
    }));
  }
  // list
  {
    auto* c = vol->add_subcommand("list", "List volumes");
    c->callback(WithStore(S, exit_code, [&S](Store& st) -> Status {
      HC_ASSIGN_OR_RETURN(auto vols, st.ListVolumes());
      if (S.json) {
        json j = json::array();
        for (const auto& v : vols) {
          j.push_back({{"name", v.name},
                       {"live_path", v.live_path},
                       {"read_only", v.read_only},
                       {"origin", v.origin},
                       {"snapshots", v.snapshot_count}});
        }
        Print(j);
        return Status::Ok();
      }
      if (vols.empty()) {
        std::printf("no volumes (create one with: hc volume create NAME)\n");
        return Status::Ok();
      }
      std::printf("%-24s %-9s %-5s %-20s %s\n", "NAME", "SNAPSHOTS", "MODE", "ORIGIN", "LIVE PATH");
      for (const auto& v : vols) {
        std::printf("%-24s %-9llu %-5s %-20s %s\n", v.name.c_str(),
                    static_cast<unsigned long long>(v.snapshot_count), v.read_only ? "ro" : "rw",
                    v.origin.empty() ? "-" : v.origin.c_str(), v.live_path.c_str());
      }
      return Status::Ok();
    }));
  }
  // snapshot
  {
    auto* c = vol->add_subcommand("snapshot", "Snapshot a volume's live data");
    static std::string name, snap;
    c->add_option("NAME", name, "Volume")->required();
    c->add_option("SNAPSHOT", snap, "Snapshot name (default: s<UTC time>)");
    c->callback(WithStore(S, exit_code, [](Store& st) -> Status {
      std::string n = snap.empty() ? DefaultSnapshotName() : snap;
      HC_ASSIGN_OR_RETURN(auto info, st.Snapshot(name, n, {}));
      std::printf("snapshot %s@%s (id %s, %llu files, %s)\n", name.c_str(), info.name.c_str(),
                  info.id.c_str(), static_cast<unsigned long long>(info.file_count),
                  FormatBytes(info.logical_bytes).c_str());
      return Status::Ok();
    }));
  }
  // snapshots
  {
    auto* c = vol->add_subcommand("snapshots", "List a volume's snapshots, oldest first");
    static std::string name;
    c->add_option("NAME", name, "Volume")->required();
    c->callback(WithStore(S, exit_code, [&S](Store& st) -> Status {
      HC_ASSIGN_OR_RETURN(auto snaps, st.ListSnapshots(name));
      if (S.json) {
        json j = json::array();
        for (const auto& s : snaps) j.push_back(SnapshotJson(s));
        Print(j);
        return Status::Ok();
      }
      if (snaps.empty()) {
        std::printf("volume '%s' has no snapshots yet (hc volume snapshot %s)\n", name.c_str(),
                    name.c_str());
        return Status::Ok();
      }
      std::printf("%-28s %-24s %-8s %-10s %s\n", "NAME", "CREATED", "FILES", "SIZE", "ID");
      for (const auto& s : snaps) {
        std::printf("%-28s %-24s %-8llu %-10s %s\n", s.name.c_str(),
                    FormatTime(s.created_unix_ns).c_str(),
                    static_cast<unsigned long long>(s.file_count),
                    FormatBytes(s.logical_bytes).c_str(), s.id.c_str());
      }
      return Status::Ok();
    }));
  }
  // diff
  {
    auto* c = vol->add_subcommand("diff", "Show what changed between two snapshots");
    static std::string name, from, to;
    c->add_option("NAME", name, "Volume")->required();
    c->add_option("FROM", from, "Older snapshot")->required();
    c->add_option("TO", to, "Newer snapshot")->required();
    c->callback(WithStore(S, exit_code, [&S](Store& st) -> Status {
      HC_ASSIGN_OR_RETURN(auto d, st.Diff(name, from, to));
      if (S.json) {
        json j = json::array();
        for (const auto& e : d) {
          const char* kind = e.kind == storage::DiffEntry::Kind::kAdded     ? "added"
                             : e.kind == storage::DiffEntry::Kind::kDeleted ? "deleted"
                                                                            : "modified";
          j.push_back({{"change", kind}, {"path", e.path}, {"type", FileTypeName(e.type)}});
        }
        Print(j);
        return Status::Ok();
      }
      for (const auto& e : d) {
        std::printf("%s %s%s\n", DiffKindName(e.kind), e.path.c_str(),
                    e.type == storage::FileType::kDirectory ? "/" : "");
      }
      if (d.empty()) std::printf("no changes\n");
      return Status::Ok();
    }));
  }
  // send
  {
    auto* c = vol->add_subcommand("send",
                                  "Write a snapshot as a stream (full, or incremental "
                                  "with --from)");
    static std::string name, snap, from, out_path;
    c->add_option("NAME", name, "Volume")->required();
    c->add_option("SNAPSHOT", snap, "Snapshot to send")->required();
    c->add_option("--from,-i", from, "Send only the changes since this older snapshot");
    c->add_option("--output,-o", out_path, "Write to this file instead of standard output");
    c->callback(WithStore(S, exit_code, [](Store& st) -> Status {
      UniqueFd file;
      int fd = 1;
      if (!out_path.empty()) {
        HC_ASSIGN_OR_RETURN(file, OpenFile(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600));
        fd = file.get();
      } else if (::isatty(1)) {
        return InvalidArgument(
            "refusing to write a binary stream to a terminal; redirect it "
            "(hc volume send ... > file, or | hc volume receive NAME) or "
            "use --output FILE");
      }
      FdSink sink(fd);
      Progress p("sending " + name + "@" + snap, true);
      CountingSink counted(sink, p);
      std::optional<std::string> base;
      if (!from.empty()) base = from;
      HC_RETURN_IF_ERROR(st.Send(name, base, snap, counted));
      p.Done();
      return Status::Ok();
    }));
  }
  // receive
  {
    auto* c = vol->add_subcommand("receive", "Apply a stream from `hc volume send` to a volume");
    static std::string name, in_path;
    static bool writable = false;
    c->add_option("NAME", name, "Target volume (created by a full stream)")->required();
    c->add_option("--input,-i", in_path, "Read from this file instead of standard input");
    c->add_flag("--writable", writable,
                "Leave the volume writable (default: read-only, as a replica)");
    c->callback(WithStore(S, exit_code, [](Store& st) -> Status {
      UniqueFd file;
      int fd = 0;
      if (!in_path.empty()) {
        HC_ASSIGN_OR_RETURN(file, OpenFile(in_path, O_RDONLY));
        fd = file.get();
      } else if (::isatty(0)) {
        return InvalidArgument(
            "expected a stream on standard input (hc volume send ... | hc "
            "volume receive NAME), or use --input FILE");
      }
      FdSource src(fd);
      Progress p("receiving " + name, true);
      CountingSource counted(src, p);
      HC_ASSIGN_OR_RETURN(auto r, st.Receive(name, counted, {.read_only = !writable}));
      p.Done();
      if (r.already_present) {
        std::printf("volume '%s' already has snapshot '%s'; nothing to do\n", name.c_str(),
                    r.snapshot.name.c_str());
      } else {
        std::printf("received %s@%s (%s streamed)\n", name.c_str(), r.snapshot.name.c_str(),
                    FormatBytes(r.stream_bytes).c_str());
      }
      return Status::Ok();
    }));
  }
  // rollback
  {
    auto* c = vol->add_subcommand("rollback",
                                  "Make a volume's live data equal to a snapshot; "
                                  "newer data is kept on a branch volume");
    static std::string name, snap, branch;
    static bool discard = false;
    c->add_option("NAME", name, "Volume")->required();
    c->add_option("SNAPSHOT", snap, "Snapshot to return to")->required();
    c->add_option("--branch", branch,
                  "Name of the volume that keeps newer snapshots and writes "
                  "(default: NAME-branch-<time>)");
    c->add_flag("--discard-newer", discard,
                "Destroy newer snapshots and unsnapshotted writes instead of keeping them");
    c->callback(WithStore(S, exit_code, [](Store& st) -> Status {
      HC_ASSIGN_OR_RETURN(auto r, st.Rollback(name, snap, {discard, branch}));
      std::printf("volume '%s' rolled back to '%s'\n", name.c_str(), snap.c_str());
      if (!r.branch.empty()) {
        std::printf("newer snapshots and writes are kept in volume '%s'\n", r.branch.c_str());
      }
      for (const auto& d : r.discarded) std::printf("discarded snapshot '%s'\n", d.c_str());
      return Status::Ok();
    }));
  }
  // ls
  {
    auto* c = vol->add_subcommand("ls", "List a directory in a snapshot");
    static std::string name, snap, path;
    c->add_option("NAME", name, "Volume")->required();
    c->add_option("SNAPSHOT", snap, "Snapshot")->required();
    c->add_option("PATH", path, "Directory inside the snapshot (default: its root)");
    c->callback(WithStore(S, exit_code, [&S](Store& st) -> Status {
      HC_ASSIGN_OR_RETURN(auto entries, st.ListDir(name, snap, path));
      if (S.json) {
        json j = json::array();
        for (const auto& e : entries) {
          j.push_back({{"name", e.name},
                       {"type", FileTypeName(e.type)},
                       {"mode", e.mode},
                       {"size", e.size},
                       {"mtime_unix_ns", e.mtime_ns},
                       {"link_target", e.link_target}});
        }
        Print(j);
        return Status::Ok();
      }
      for (const auto& e : entries) {
        std::printf("%-7s %04o %12llu  %s  %s%s%s\n", FileTypeName(e.type), e.mode,
                    static_cast<unsigned long long>(e.size), FormatTime(e.mtime_ns).c_str(),
                    e.name.c_str(), e.type == storage::FileType::kSymlink ? " -> " : "",
                    e.link_target.c_str());
      }
      return Status::Ok();
    }));
  }
  // cat
  {
    auto* c = vol->add_subcommand("cat", "Print a file from a snapshot");
    static std::string name, snap, path;
    c->add_option("NAME", name, "Volume")->required();
    c->add_option("SNAPSHOT", snap, "Snapshot")->required();
    c->add_option("PATH", path, "File inside the snapshot")->required();
    c->callback(WithStore(S, exit_code, [](Store& st) -> Status {
      FdSink out(1);
      return st.ReadFile(name, snap, path, out);
    }));
  }
  // clone
  {
    auto* c = vol->add_subcommand("clone", "Create a new writable volume from a snapshot");
    static std::string name, snap, target;
    c->add_option("NAME", name, "Volume")->required();
    c->add_option("SNAPSHOT", snap, "Snapshot")->required();
    c->add_option("NEW", target, "Name of the new volume")->required();
    c->callback(WithStore(S, exit_code, [](Store& st) -> Status {
      HC_RETURN_IF_ERROR(st.Clone(name, snap, target));
      std::printf("cloned %s@%s to new volume '%s'\n", name.c_str(), snap.c_str(), target.c_str());
      return Status::Ok();
    }));
  }
  // verify
  {
    auto* c = vol->add_subcommand("verify", "Re-read and check stored data (scrub)");
    static std::string name;
    c->add_option("NAME", name, "Volume (default: the whole store)");
    c->callback(WithStore(S, exit_code, [&S](Store& st) -> Status {
      HC_ASSIGN_OR_RETURN(auto r, st.Verify(name));
      if (S.json) {
        Print({{"ok", r.ok()},
               {"objects_checked", r.objects_checked},
               {"bytes_checked", r.bytes_checked},
               {"problems", r.problems}});
      } else {
        std::printf("checked %llu objects, %s\n",
                    static_cast<unsigned long long>(r.objects_checked),
                    FormatBytes(r.bytes_checked).c_str());
        for (const auto& p : r.problems) std::printf("DAMAGED: %s\n", p.c_str());
        if (r.ok()) std::printf("no damage found\n");
      }
      if (!r.ok()) {
        return Corrupt(std::to_string(r.problems.size()) +
                       " damaged object(s); restore them from a replica");
      }
      return Status::Ok();
    }));
  }
  // space
  {
    auto* c = vol->add_subcommand("space", "Show the space a volume uses");
    static std::string name;
    c->add_option("NAME", name, "Volume")->required();
    c->callback(WithStore(S, exit_code, [&S](Store& st) -> Status {
      HC_ASSIGN_OR_RETURN(auto u, st.Space(name));
      if (S.json) {
        Print({{"live_bytes", u.live_bytes},
               {"snapshot_bytes", u.snapshot_bytes},
               {"total_bytes", u.total_bytes}});
      } else {
        std::printf("live data %s, snapshots %s, total %s\n", FormatBytes(u.live_bytes).c_str(),
                    FormatBytes(u.snapshot_bytes).c_str(), FormatBytes(u.total_bytes).c_str());
      }
      return Status::Ok();
    }));
  }
  // readonly
  {
    auto* c = vol->add_subcommand("readonly", "Mark a volume read-only (replica) or writable");
    static std::string name, mode;
    c->add_option("NAME", name, "Volume")->required();
    c->add_option("MODE", mode, "on or off")->required()->check(CLI::IsMember({"on", "off"}));
    c->callback(WithStore(S, exit_code, [](Store& st) -> Status {
      HC_RETURN_IF_ERROR(st.SetReadOnly(name, mode == "on"));
      std::printf("volume '%s' is now %s\n", name.c_str(), mode == "on" ? "read-only" : "writable");
      return Status::Ok();
    }));
  }
  // destroy
  {
    auto* c = vol->add_subcommand("destroy", "Destroy a snapshot, or a whole volume with --yes");
    static std::string name, snap;
    static bool yes = false;
    c->add_option("NAME", name, "Volume")->required();
    c->add_option("SNAPSHOT", snap, "Destroy only this snapshot");
    c->add_flag("--yes", yes, "Confirm destroying a whole volume with all its snapshots");
    c->callback(WithStore(S, exit_code, [](Store& st) -> Status {
      if (!snap.empty()) {
        HC_RETURN_IF_ERROR(st.DestroySnapshot(name, snap));
        std::printf("destroyed snapshot %s@%s\n", name.c_str(), snap.c_str());
        return Status::Ok();
      }
      if (!yes) {
        return InvalidArgument("destroying volume '" + name +
                               "' deletes its live data and every "
                               "snapshot; add --yes to confirm");
      }
      HC_RETURN_IF_ERROR(st.DestroyVolume(name));
      std::printf("destroyed volume '%s'\n", name.c_str());
      return Status::Ok();
    }));
  }
}

}  // namespace hc::cli
