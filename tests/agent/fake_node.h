// Fakes of the runtime and the volume store for agent tests and the
// control-plane benchmark: apps "run" the moment they are started, volumes
// are names. Only what the agent uses is implemented; the rest returns
// Internal("not faked").
#pragma once

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "runtime/runtime.h"
#include "storage/store.h"

namespace hc::testing {

inline Status NotFaked() {
  return Internal("not faked");
}

// A runtime whose apps run and are ready the moment Start returns.
class FakeRuntime final : public runtime::Runtime {
 public:
  std::string backend() const override { return "fake"; }

  Status Start(const runtime::AppSpec& spec) override {
    std::lock_guard<std::mutex> l(mu_);
    auto& st = apps_[spec.name];
    if (st.state == runtime::AppState::kRunning)
      return AlreadyExists("app " + spec.name + " is running");
    if (st.state == runtime::AppState::kPrepared && st.port == spec.port) prepared_starts_++;
    st.name = spec.name;
    st.backend = "fake";
    st.state = runtime::AppState::kRunning;
    st.pid = 1;
    st.port = spec.port;
    st.started_unix_ns = 1;
    starts_++;
    return Status::Ok();
  }
  Status Stop(const std::string& name) override {
    std::lock_guard<std::mutex> l(mu_);
    auto it = apps_.find(name);
    if (it == apps_.end()) return NotFound("no app " + name);
    if (it->second.state == runtime::AppState::kRunning) stops_++;
    it->second.state = runtime::AppState::kStopped;
    it->second.pid = 0;
    return Status::Ok();
  }
  // Prepared apps show kPrepared until Start.
  Status Prepare(const runtime::AppSpec& spec) override {
    std::lock_guard<std::mutex> l(mu_);
    auto& st = apps_[spec.name];
    if (st.state == runtime::AppState::kRunning)
      return AlreadyExists("app " + spec.name + " is running");
    st.name = spec.name;
    st.backend = "fake";
    st.state = runtime::AppState::kPrepared;
    st.pid = 0;
    st.port = spec.port;
    return Status::Ok();
  }
  Status Restart(const std::string&) override { return NotFaked(); }
  Result<runtime::AppStatus> GetStatus(const std::string& name) override {
    std::lock_guard<std::mutex> l(mu_);
    status_calls_++;
    auto it = apps_.find(name);
    if (it == apps_.end()) return NotFound("no app " + name);
    return it->second;
  }
  Result<std::vector<runtime::AppStatus>> List() override {
    std::lock_guard<std::mutex> l(mu_);
    std::vector<runtime::AppStatus> out;
    out.reserve(apps_.size());
    status_calls_ +=
        static_cast<int64_t>(apps_.size());  // one per app, as a real runtime asks each supervisor
    for (const auto& [name, st] : apps_) out.push_back(st);
    return out;
  }
  Status WaitReady(const std::string& name, int) override {
    std::lock_guard<std::mutex> l(mu_);
    probes_++;
    auto it = apps_.find(name);
    if (it == apps_.end() || it->second.state != runtime::AppState::kRunning)
      return Unavailable("app " + name + " is not running");
    return Status::Ok();
  }
  Result<runtime::Usage> GetUsage(const std::string&) override {
    runtime::Usage u;
    u.cpu_seconds = 1.5;
    u.memory_bytes = 24ull << 20;
    u.processes = 2;
    return u;
  }
  Status Freeze(const std::string&) override { return NotFaked(); }
  Status Thaw(const std::string&) override { return NotFaked(); }
  std::string LogPath(const std::string&) const override { return ""; }
  Result<uint16_t> PickPort() override {
    std::lock_guard<std::mutex> l(mu_);
    next_port_ = next_port_ >= 29999 ? 20000 : next_port_ + 1;
    return next_port_;
  }
  Status Remove(const std::string& name) override {
    std::lock_guard<std::mutex> l(mu_);
    auto it = apps_.find(name);
    if (it == apps_.end()) return NotFound("no app " + name);
    if (it->second.state == runtime::AppState::kRunning) return Conflict(name + " runs");
    apps_.erase(it);
    return Status::Ok();
  }

  // Per-app status questions (GetStatus, and one per app in List) and readiness probes.
  int64_t status_calls() {
    std::lock_guard<std::mutex> l(mu_);
    return status_calls_;
  }
  int64_t probes() {
    std::lock_guard<std::mutex> l(mu_);
    return probes_;
  }
  int starts() {
    std::lock_guard<std::mutex> l(mu_);
    return starts_;
  }
  int stops() {
    std::lock_guard<std::mutex> l(mu_);
    return stops_;
  }
  // Starts that let a prepared app go.
  int prepared_starts() {
    std::lock_guard<std::mutex> l(mu_);
    return prepared_starts_;
  }

  // Names of the apps in state running.
  std::vector<std::string> Running() {
    std::lock_guard<std::mutex> l(mu_);
    std::vector<std::string> out;
    for (const auto& [name, st] : apps_)
      if (st.state == runtime::AppState::kRunning) out.push_back(name);
    return out;
  }

 private:
  std::mutex mu_;
  std::map<std::string, runtime::AppStatus> apps_;
  uint16_t next_port_ = 19999;
  int starts_ = 0;
  int stops_ = 0;
  int prepared_starts_ = 0;
  int64_t status_calls_ = 0;
  int64_t probes_ = 0;
};

// A volume store that only keeps names. Every live path is one shared
// directory whose public/ already exists, so the agent's SeedVolume (static
// template) finds the volume seeded and writes nothing.
class FakeStore final : public storage::Store {
 public:
  explicit FakeStore(std::string live_dir) : live_dir_(std::move(live_dir)) {}
  std::string backend() const override { return "fake"; }

  Status CreateVolume(const std::string& volume) override {
    std::lock_guard<std::mutex> l(mu_);
    if (!volumes_.insert(volume).second) return AlreadyExists("volume " + volume + " exists");
    return Status::Ok();
  }
  Status DestroyVolume(const std::string& volume) override {
    std::lock_guard<std::mutex> l(mu_);
    if (volumes_.erase(volume) == 0) return NotFound("no volume " + volume);
    return Status::Ok();
  }
  Result<std::vector<storage::VolumeInfo>> ListVolumes() override {
    std::lock_guard<std::mutex> l(mu_);
    std::vector<storage::VolumeInfo> out;
    for (const auto& v : volumes_) out.push_back(Info(v));
    return out;
  }
  Result<storage::VolumeInfo> GetVolume(const std::string& volume) override {
    std::lock_guard<std::mutex> l(mu_);
    lookups_++;
    if (!volumes_.count(volume)) return NotFound("no volume " + volume);
    return Info(volume);
  }
  Result<std::string> LivePath(const std::string& volume) override {
    std::lock_guard<std::mutex> l(mu_);
    lookups_++;
    if (!volumes_.count(volume)) return NotFound("no volume " + volume);
    return live_dir_;
  }
  int64_t volume_count() {
    std::lock_guard<std::mutex> l(mu_);
    return static_cast<int64_t>(volumes_.size());
  }
  // GetVolume and LivePath calls (each is a `zfs` command on the zfs backend).
  int64_t lookups() {
    std::lock_guard<std::mutex> l(mu_);
    return lookups_;
  }
  bool Has(const std::string& volume) {
    std::lock_guard<std::mutex> l(mu_);
    return volumes_.count(volume) > 0;
  }
  Status SetReadOnly(const std::string&, bool) override { return NotFaked(); }
  Result<storage::SnapshotInfo> Snapshot(const std::string&, const std::string&,
                                         const storage::SnapshotOptions&) override {
    return NotFaked();
  }
  Result<std::vector<storage::SnapshotInfo>> ListSnapshots(const std::string&) override {
    return NotFaked();
  }
  Result<std::vector<storage::DiffEntry>> Diff(const std::string&, const std::string&,
                                               const std::string&) override {
    return NotFaked();
  }
  Status Send(const std::string&, const std::optional<std::string>&, const std::string&,
              ByteSink&) override {
    return NotFaked();
  }
  Result<storage::ReceiveResult> Receive(const std::string&, ByteSource&,
                                         const storage::ReceiveOptions&) override {
    return NotFaked();
  }
  Result<storage::RollbackResult> Rollback(const std::string&, const std::string&,
                                           const storage::RollbackOptions&) override {
    return NotFaked();
  }
  Result<std::vector<storage::DirEntry>> ListDir(const std::string&, const std::string&,
                                                 const std::string&) override {
    return NotFaked();
  }
  Result<storage::DirEntry> Stat(const std::string&, const std::string&,
                                 const std::string&) override {
    return NotFaked();
  }
  Status ReadFile(const std::string&, const std::string&, const std::string&, ByteSink&) override {
    return NotFaked();
  }
  Status Clone(const std::string&, const std::string&, const std::string&) override {
    return NotFaked();
  }
  Status DestroySnapshot(const std::string&, const std::string&) override { return NotFaked(); }
  Result<storage::VerifyReport> Verify(const std::string&) override { return NotFaked(); }
  Result<storage::SpaceUsage> Space(const std::string&) override { return NotFaked(); }

 private:
  storage::VolumeInfo Info(const std::string& v) const {
    storage::VolumeInfo i;
    i.name = v;
    i.live_path = live_dir_;
    return i;
  }
  std::string live_dir_;
  std::mutex mu_;
  std::set<std::string> volumes_;
  int64_t lookups_ = 0;
};

}  // namespace hc::testing
