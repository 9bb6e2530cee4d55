#include "replication/service.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "cluster/cluster_store.h"
#include "cluster/view_follower.h"
#include "common/log.h"
#include "replication/channel.h"
#include "runtime/runtime.h"
#include "storage/store.h"

namespace hc::replication {
namespace {

int64_t WallMs() {
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  return static_cast<int64_t>(tv.tv_sec) * 1000 + tv.tv_usec / 1000;
}

// "auto-20261202-034512-123": sortable, readable, valid as a snapshot name.
std::string AutoSnapshotName(int64_t ms) {
  time_t s = static_cast<time_t>(ms / 1000);
  struct tm tm;
  gmtime_r(&s, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "auto-%04d%02d%02d-%02d%02d%02d-%03d", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  return buf;
}

std::string Label(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

struct ReplicationService::Impl {
  cluster::ClusterStore* cs;
  storage::Store* store;
  runtime::Runtime* rt;
  ServiceOptions opts;

  // What the placement says about one app, from the cluster view.
  struct Desired {
    bool primary = false;  // else replica
    uint64_t epoch = 0;
    std::vector<std::string> replicas;
    int64_t interval_ms = 0;
    std::string retention;
  };
  // An app this node is primary for.
  struct PrimaryApp {
    uint64_t epoch = 0;
    std::vector<std::string> replicas;
    int64_t interval_ms = 0;
    RetentionGrid grid;
    bool seeded = false;  // the scheduler knows it (after the first listing)
    bool seeding = false;
    std::vector<KnownSnapshot> snaps;          // mirror of the scheduler's, oldest first
    std::map<std::string, int64_t> created_s;  // id -> creation (retention)
    std::map<std::string, int64_t> probe_at;   // replica -> when to ask what it holds
    std::set<std::string> probing;
    int64_t last_retention_ms = 0;
    bool retention_running = false;
    uint64_t last_logical = 0;
  };
  struct ReplicaApp {
    uint64_t epoch = 0;
    std::string primary;
    RetentionGrid grid;
    int64_t last_retention_ms = 0;
    bool retention_running = false;
  };

  mutable std::mutex mu;
  std::condition_variable cv;       // the loop: results, view changes, stop
  std::condition_variable jobs_cv;  // the pool
  bool stop = false;
  bool view_dirty = true;
  bool work_done = false;
  std::deque<std::function<void()>> jobs;
  Scheduler sched;
  std::map<std::string, PrimaryApp> primaries;
  std::map<std::string, ReplicaApp> replicas_here;
  std::map<std::string, net::HostPort> endpoints;            // node id -> replication endpoint
  std::map<std::string, std::vector<std::string>> branches;  // app -> diverged branches kept
  std::map<std::string, std::string> app_errors;             // app -> last local error
  std::map<std::string, storage::SnapshotInfo> newest_here;  // app -> newest snapshot here
  Stats st;
  int64_t last_now = 0;
  std::atomic<bool> corrupt_next{false};
  int64_t next_sweep_ms = 0;  // StartWork's sweep of probes and retention
  bool sweep_now = true;      // a probe was asked for
  // Scrub (one at a time: periodic or asked for).
  std::mutex scrub_run_mu;
  std::map<std::string, int64_t> scrub_due;      // app -> when its next periodic scrub is due
  std::map<std::string, ScrubOutcome> scrubbed;  // app -> last outcome here
  std::thread scrubber;

  std::unique_ptr<cluster::ViewFollower> follower;
  std::unique_ptr<Receiver> receiver;
  std::unique_ptr<proxy::TlsTerminator> server;
  std::unique_ptr<proxy::TlsTunnels> tunnels;
  std::vector<std::thread> pool;
  std::thread loop;

  Impl(cluster::ClusterStore* c, storage::Store* s, runtime::Runtime* r, ServiceOptions o)
      : cs(c), store(s), rt(r), opts(std::move(o)), sched(opts.limits) {
    corrupt_next = opts.corrupt_next_transfer_for_test;
  }

  int64_t Now() {  // REQUIRES: mu held. Wall clock, never backwards.
    last_now = std::max(last_now, WallMs());
    return last_now;
  }

  void Post(std::function<void()> job) {  // REQUIRES: mu held
    jobs.push_back(std::move(job));
    jobs_cv.notify_one();
  }

  void Worker() {
    std::unique_lock l(mu);
    while (true) {
      jobs_cv.wait(l, [&] { return stop || !jobs.empty(); });
      if (stop) return;
      auto job = std::move(jobs.front());
      jobs.pop_front();
      l.unlock();
      job();
      l.lock();
      work_done = true;
      cv.notify_all();
    }
  }

  // ---- The receiving side

  Status IsPrimary(const std::string& app, const std::string& node, uint64_t epoch) {
    return follower->Read([&](const cluster::ClusterView& v, const auto&) -> hc::Status {
      auto p = v.placements.find(app);
      if (p == v.placements.end()) return NotFound("app '" + app + "' has no placement");
      if (p->second.primary != node || p->second.epoch != epoch)
        return PermissionDenied("the placement names '" + p->second.primary + "' at epoch " +
                                std::to_string(p->second.epoch));
      const auto& r = p->second.replicas;
      if (std::find(r.begin(), r.end(), opts.node_id) == r.end())
        return PermissionDenied("node '" + opts.node_id + "' is not a replica of '" + app + "'");
      return hc::Status::Ok();
    });
  }

  void OnDiverged(const std::string& app, const std::string& branch, const std::string& detail) {
    std::lock_guard l(mu);
    branches[app].push_back(branch);
    st.diverged++;
    app_errors[app] = "diverged: kept " + detail + " as volume '" + branch + "'";
    Record("diverged", app, "kept " + detail + " as volume '" + branch + "'");
  }

  // An event for `hc events`, written by the pool. REQUIRES: mu held.
  void Record(const std::string& kind, const std::string& app, const std::string& message) {
    cluster::Event e{WallMs(), opts.node_id, app, kind, message};
    Post([this, e] {
      hc::Status s = cs->RecordEvent(e);
      if (!s.ok()) LogWarn("replication: event not recorded: %s", s.ToString().c_str());
    });
  }

  // ---- Following the cluster

  std::map<std::string, Desired> ReadDesired(std::map<std::string, net::HostPort>* eps) {
    return follower->Read([&](const cluster::ClusterView& v, const auto&) {
      std::map<std::string, Desired> out;
      for (const auto& [id, n] : v.nodes) {
        if (n.replication_port != 0) (*eps)[id] = net::HostPort{n.address, n.replication_port};
      }
      for (const auto& [app, p] : v.placements) {
        auto def = v.apps.find(app);
        if (def == v.apps.end()) continue;
        bool replica =
            std::find(p.replicas.begin(), p.replicas.end(), opts.node_id) != p.replicas.end();
        if (p.primary != opts.node_id && !replica) continue;
        Desired d;
        d.primary = p.primary == opts.node_id;
        d.epoch = p.epoch;
        d.replicas = p.replicas;
        d.interval_ms = def->second.snapshot_interval_seconds != 0
                            ? int64_t{def->second.snapshot_interval_seconds} * 1000
                            : opts.default_interval_ms;
        d.retention =
            def->second.retention.empty() ? opts.default_retention : def->second.retention;
        out[app] = std::move(d);
      }
      return out;
    });
  }

  RetentionGrid GridOf(const std::string& app, const std::string& text) {
    auto g = ParseRetention(text);
    if (g.ok()) return *g;
    LogWarn("replication: %s: retention '%s' is invalid (%s); using the default", app.c_str(),
            text.c_str(), g.status().message().c_str());
    return *ParseRetention(kDefaultRetention);
  }

  // REQUIRES: mu held.
  void ApplyDesired(std::map<std::string, Desired> desired,
                    std::map<std::string, net::HostPort> eps) {
    endpoints = std::move(eps);
    for (auto it = primaries.begin(); it != primaries.end();) {
      auto d = desired.find(it->first);
      if (d == desired.end() || !d->second.primary) {
        LogInfo("replication: %s is no longer primary here", it->first.c_str());
        sched.RemoveApp(it->first);
        it = primaries.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = replicas_here.begin(); it != replicas_here.end();) {
      auto d = desired.find(it->first);
      if (d == desired.end() || d->second.primary)
        it = replicas_here.erase(it);
      else
        ++it;
    }
    for (auto& [app, d] : desired) {
      if (!d.primary) {
        auto& r = replicas_here[app];
        r.epoch = d.epoch;
        r.grid = GridOf(app, d.retention);
        continue;
      }
      auto& p = primaries[app];
      bool changed =
          p.replicas != d.replicas || p.interval_ms != d.interval_ms || p.epoch != d.epoch;
      std::set<std::string> added;
      for (const auto& r : d.replicas)
        if (std::find(p.replicas.begin(), p.replicas.end(), r) == p.replicas.end()) added.insert(r);
      p.epoch = d.epoch;
      p.replicas = d.replicas;
      p.interval_ms = std::max<int64_t>(d.interval_ms, kMinIntervalMs);
      p.grid = GridOf(app, d.retention);
      if (!p.seeded) {
        if (!p.seeding) {
          p.seeding = true;
          Post([this, app = app] { Seed(app); });
        }
        continue;
      }
      if (changed) {
        hc::Status s = sched.SetApp(app, p.interval_ms, p.replicas);
        if (!s.ok()) LogWarn("replication: %s: %s", app.c_str(), s.ToString().c_str());
      }
      for (const auto& r : added) p.probe_at[r] = 0;
      if (!added.empty()) sweep_now = true;
    }
  }

  // Job: learn what the primary holds, then hand the app to the scheduler.
  void Seed(const std::string& app) {
    auto snaps = store->ListSnapshots(app);
    std::unique_lock l(mu);
    auto it = primaries.find(app);
    if (it == primaries.end()) return;
    PrimaryApp& p = it->second;
    p.seeding = false;
    if (!snaps.ok() && snaps.status().code() != Code::kNotFound) {
      app_errors[app] = snaps.status().message();
      view_dirty = true;  // try again on the next pass
      return;
    }
    p.snaps.clear();
    p.created_s.clear();
    if (snaps.ok()) {
      for (const auto& s : *snaps) {
        p.snaps.push_back({s.id, s.created_unix_ns / 1'000'000, 0, s.logical_bytes});
        p.created_s[s.id] = s.created_unix_ns / 1'000'000'000;
      }
      if (!snaps->empty()) {
        newest_here[app] = snaps->back();
        p.last_logical = snaps->back().logical_bytes;
      }
    }
    hc::Status s = sched.SetApp(app, p.interval_ms, p.replicas);
    if (!s.ok()) {
      LogWarn("replication: %s: %s", app.c_str(), s.ToString().c_str());
      return;
    }
    sched.SetSnapshots(app, p.snaps);
    p.seeded = true;
    for (const auto& r : p.replicas) p.probe_at[r] = 0;
    sweep_now = true;
  }

  // ---- Checks

  void Check(const std::string& app, bool freeze_app) {
    storage::SnapshotOptions so;
    std::chrono::steady_clock::time_point frozen_at{};
    so.skip_if_unchanged = true;
    if (freeze_app) {
      // Only a running app is frozen; one that is not running (unknown
      // here, stopped, crashed, backing off between restarts) writes
      // nothing, and its data must still be snapshotted and replicated.
      auto not_running = [this, app](const hc::Status& s) {
        if (s.ok() || s.code() == Code::kNotFound) return true;
        auto st = rt->GetStatus(app);
        return st.ok() && st->state != runtime::AppState::kRunning &&
               st->state != runtime::AppState::kStarting;
      };
      so.freeze = [this, app, not_running, &frozen_at] {
        hc::Status s = rt->Freeze(app);
        if (s.ok()) frozen_at = std::chrono::steady_clock::now();
        return not_running(s) ? hc::Status::Ok() : s;
      };
      so.thaw = [this, app, not_running, &frozen_at] {
        hc::Status s = rt->Thaw(app);
        if (frozen_at != std::chrono::steady_clock::time_point{}) {
          // The app answers nothing meanwhile: a long freeze is worth a line.
          auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - frozen_at)
                        .count();
          if (ms >= 200)
            LogInfo("replication: %s was frozen %lld ms for its snapshot (the scan of its volume)",
                    app.c_str(), static_cast<long long>(ms));
        }
        return not_running(s) ? hc::Status::Ok() : s;
      };
    }
    int64_t started;
    {
      std::lock_guard l(mu);
      started = Now();
    }
    auto snap = store->Snapshot(app, AutoSnapshotName(started), so);
    std::lock_guard l(mu);
    FinishCheck(app, started, snap);
  }

  // REQUIRES: mu held.
  void FinishCheck(const std::string& app, int64_t started,
                   const Result<storage::SnapshotInfo>& snap) {
    int64_t now = Now();
    st.checks++;
    auto it = primaries.find(app);
    if (!snap.ok()) {
      st.check_failures++;
      app_errors[app] = "snapshot: " + snap.status().message();
      sched.CheckDone(app, now, std::nullopt, snap.status());
      return;
    }
    if (it == primaries.end()) {
      sched.CheckDone(app, now, std::nullopt, hc::Status::Ok());
      return;
    }
    PrimaryApp& p = it->second;
    bool made = p.snaps.empty() || p.snaps.back().id != snap->id;
    if (!made) {
      sched.CheckDone(app, now, std::nullopt, hc::Status::Ok());
      return;
    }
    st.snapshots++;
    uint64_t delta = snap->logical_bytes > p.last_logical ? snap->logical_bytes - p.last_logical
                                                          : p.last_logical - snap->logical_bytes;
    delta = std::max<uint64_t>(delta, 4096);
    p.last_logical = snap->logical_bytes;
    p.snaps.push_back({snap->id, started, delta, snap->logical_bytes});
    p.created_s[snap->id] = snap->created_unix_ns / 1'000'000'000;
    newest_here[app] = *snap;
    sched.CheckDone(app, now, SnapshotMade{snap->id, delta, snap->logical_bytes}, hc::Status::Ok());
  }

  // ---- Transfers and probes

  Result<UniqueFd> Connect(const std::string& replica) {
    net::HostPort remote;
    {
      std::lock_guard l(mu);
      auto e = endpoints.find(replica);
      if (e == endpoints.end())
        return Unavailable("node '" + replica + "' is not live (or has no replication port)");
      remote = e->second;
    }
    HC_ASSIGN_OR_RETURN(auto local, tunnels->Open({.remote = remote,
                                                   .expect_server_name = replica,
                                                   .alpn = std::string(kReplicationAlpn)}));
    return net::ConnectTcp(local, net::DeadlineIn(std::chrono::seconds(5)));
  }

  Result<PushResult> PushTo(const std::string& replica, PushOptions po) {
    HC_ASSIGN_OR_RETURN(UniqueFd fd, Connect(replica));
    po.sender_node = opts.node_id;
    po.io_timeout_ms = opts.io_timeout_ms;
    return Push(*store, fd.get(), po);
  }

  void Transfer(Task t, uint64_t epoch) {
    std::string newest;
    PushOptions po;
    po.app = t.app;
    po.epoch = epoch;
    po.base_id = t.full ? "" : t.base_id;
    po.target_id = t.snapshot_id;
    po.receiver_newest = &newest;
    if (corrupt_next.exchange(false)) {
      po.corrupt_for_test = [](uint64_t frame, std::string& bytes) {
        if (frame == 0 && bytes.size() > 64) bytes[bytes.size() / 2] ^= 0x20;
      };
    }
    po.progress = [this, &t](uint64_t bytes) {
      std::lock_guard l(mu);
      sched.TransferProgress(t.app, t.replica, bytes);
    };
    auto r = PushTo(t.replica, po);
    std::lock_guard l(mu);
    int64_t now = Now();
    st.transfers++;
    if (r.ok()) {
      st.bytes_sent += r->stream_bytes;
      sched.TransferDone(t.app, t.replica, now, hc::Status::Ok(), r->stream_bytes);
      return;
    }
    st.transfer_failures++;
    sched.TransferDone(t.app, t.replica, now, r.status(), 0);
    if (r.status().code() == Code::kCorrupt &&
        r.status().message().find("the replica") == std::string::npos) {
      // Damage found reading our own copy: scrub (and repair) it now.
      LogWarn("replication: %s: reading the volume failed (%s); scrubbing it now", t.app.c_str(),
              r.status().message().c_str());
      scrub_due[t.app] = 0;
      cv.notify_all();
    }
    if (r.status().code() == Code::kConflict) {
      // The replica holds something else than we thought: ask it again.
      auto p = primaries.find(t.app);
      if (p != primaries.end()) p->second.probe_at[t.replica] = 0;
      sweep_now = true;
    }
  }

  // Job: asks `replica` what it holds of `app` (a request for our newest
  // snapshot from itself: "already present" or "base missing" + its newest).
  // A copy that holds snapshots we do not know is resolved by sending from
  // the newest snapshot both hold: the replica keeps its extra ones as a
  // branch (Receiver::KeepDiverged).
  void Probe(const std::string& app, const std::string& replica, uint64_t epoch,
             std::vector<std::string> ours_newest_first) {
    std::optional<std::string> holds;
    hc::Status err;
    if (ours_newest_first.empty()) {
      holds = std::nullopt;  // nothing to send yet; a full send follows the first snapshot
    } else {
      std::string newest;
      PushOptions po;
      po.app = app;
      po.epoch = epoch;
      po.base_id = po.target_id = ours_newest_first.front();
      po.receiver_newest = &newest;
      auto r = PushTo(replica, po);
      if (r.ok()) {
        holds = ours_newest_first.front();
      } else if (r.status().code() == Code::kConflict) {
        std::set<std::string> ours(ours_newest_first.begin(), ours_newest_first.end());
        if (newest.empty() || ours.count(newest)) {
          if (!newest.empty()) holds = newest;
        } else {
          err = r.status();
          // Diverged: find the newest common snapshot by trying bases.
          for (size_t i = 1; i < ours_newest_first.size(); ++i) {
            PushOptions pi;
            pi.app = app;
            pi.epoch = epoch;
            pi.base_id = ours_newest_first[i];
            pi.target_id = ours_newest_first.front();
            auto ri = PushTo(replica, pi);
            if (ri.ok()) {
              holds = ours_newest_first.front();
              err = hc::Status::Ok();
              break;
            }
            if (ri.status().code() != Code::kConflict) {
              err = ri.status();
              break;
            }
          }
          if (!holds && err.ok())
            err = Conflict("the copy on node '" + replica + "' shares no snapshot with this one");
          if (!holds) holds = newest;  // blocked: reported in its row
        }
      } else {
        err = r.status();
      }
    }
    std::lock_guard l(mu);
    auto it = primaries.find(app);
    if (it == primaries.end()) return;
    it->second.probing.erase(replica);
    int64_t now = Now();
    if (!err.ok() && !holds) {
      it->second.probe_at[replica] = now + opts.probe_retry_ms;
      app_errors[app] = "replica " + replica + ": " + err.message();
      return;
    }
    if (!err.ok()) app_errors[app] = "replica " + replica + ": " + err.message();
    sched.ReplicaHas(app, replica, holds);
  }

  // ---- Retention

  // Job: destroys what the grid does not keep of `app` here.
  void Retain(const std::string& app, RetentionGrid grid, std::set<std::string> protect,
              bool primary) {
    auto snaps = store->ListSnapshots(app);
    std::vector<std::string> removed;
    hc::Status err;
    if (snaps.ok() && !snaps->empty()) {
      std::vector<RetentionInput> in;
      for (const auto& s : *snaps) in.push_back({s.id, s.created_unix_ns / 1'000'000'000});
      int64_t now_s = WallMs() / 1000;
      auto plan = PlanRetention(grid, std::move(in), now_s, protect);
      std::map<std::string, std::string> names;
      for (const auto& s : *snaps) names[s.id] = s.name;
      for (const auto& id : plan.remove) {
        hc::Status s = store->DestroySnapshot(app, names[id]);
        if (s.ok() || s.code() == Code::kNotFound) {
          removed.push_back(id);
        } else if (s.code() == Code::kConflict) {
          // A kept branch (zfs clone) depends on it: keep it, thin the rest.
          err = s;
        } else {
          err = s;
          break;
        }
      }
      if (!snaps->empty()) {
        std::lock_guard l(mu);
        newest_here[app] = snaps->back();
      }
    } else if (!snaps.ok() && snaps.status().code() != Code::kNotFound) {
      err = snaps.status();
    }
    std::lock_guard l(mu);
    st.snapshots_pruned += removed.size();
    if (!err.ok()) app_errors[app] = "retention: " + err.message();
    if (primary) {
      auto it = primaries.find(app);
      if (it == primaries.end()) return;
      it->second.retention_running = false;
      if (removed.empty()) return;
      std::set<std::string> gone(removed.begin(), removed.end());
      auto& v = it->second.snaps;
      v.erase(std::remove_if(v.begin(), v.end(), [&](auto& k) { return gone.count(k.id) > 0; }),
              v.end());
      for (const auto& id : gone) it->second.created_s.erase(id);
      sched.SetSnapshots(app, v);
    } else {
      auto it = replicas_here.find(app);
      if (it != replicas_here.end()) it->second.retention_running = false;
    }
  }

  // ---- Scrub and repair

  Result<ScrubOutcome> Scrub(const std::string& app, uint64_t bytes_per_sec) {
    std::lock_guard run(scrub_run_mu);
    ScrubAndRepairOptions so;
    so.app = app;
    so.node_id = opts.node_id;
    so.scrub.max_bytes_per_sec = bytes_per_sec;
    so.io_timeout_ms = opts.io_timeout_ms;
    // The app's other nodes, primary first.
    std::vector<std::string> peers =
        follower->Read([&](const cluster::ClusterView& v, const auto&) {
          std::vector<std::string> out;
          auto p = v.placements.find(app);
          if (p == v.placements.end()) return out;
          if (p->second.primary != opts.node_id) out.push_back(p->second.primary);
          for (const auto& r : p->second.replicas)
            if (r != opts.node_id) out.push_back(r);
          return out;
        });
    for (const auto& peer : peers)
      so.peers.push_back({peer, [this, peer] { return Connect(peer); }});
    // A zfs repair replaces the live directory: the app must not run on it.
    bool primary_here = follower->Read([&](const cluster::ClusterView& v, const auto&) {
      auto p = v.placements.find(app);
      return p != v.placements.end() && p->second.primary == opts.node_id;
    });
    if (primary_here && store->backend() == "zfs") {
      so.around_repair = [this, &app](const std::function<Status()>& work) {
        if (!opts.with_app_stopped) {
          return Unavailable("this node cannot stop '" + app + "' for the repair");
        }
        LogWarn("replication: %s: stopping the app to repair its volume", app.c_str());
        return opts.with_app_stopped(app, work);
      };
    }
    auto r = ScrubAndRepair(*store, so);
    ScrubOutcome out;
    out.app = app;
    out.node = opts.node_id;
    out.finished_ms = WallMs();
    if (!r.ok()) {
      if (r.status().code() == Code::kNotFound) return r.status();
      out.error = r.status().message();
    } else {
      out.objects_checked = r->last.objects_checked;
      out.bytes_checked = r->last.bytes_checked;
      out.repaired = r->repaired;
      out.rounds = r->rounds;
      for (const auto& p : r->last.problems) out.problems.push_back(p.text);
      out.peer_errors = r->peer_errors;
      out.kept_branches = r->kept_branches;
    }
    std::lock_guard l(mu);
    st.scrubs++;
    st.scrub_bytes += out.bytes_checked;
    st.repaired_objects += out.repaired;
    st.unrepaired_objects += out.problems.size();
    scrubbed[app] = out;
    if (out.repaired > 0) {
      std::string from = peers.empty() ? "" : " (asked " + peers.front() + " first)";
      LogWarn("replication: %s: scrub repaired %llu damaged object(s) from other nodes%s",
              app.c_str(), static_cast<unsigned long long>(out.repaired), from.c_str());
      std::string kept;
      for (const auto& b : out.kept_branches) {
        kept +=
            (kept.empty() ? "; what only the damaged copy had is kept as volume '" : "', '") + b;
      }
      if (!kept.empty()) kept += "'";
      Record("repair", app,
             "scrub found damage; " + std::to_string(out.repaired) +
                 " object(s) rewritten from a verified copy on another node" + from + kept);
    }
    if (!out.problems.empty()) {
      std::string what = out.problems.front();
      LogError("replication: %s: %zu damaged object(s) left, no healthy copy found: %s",
               app.c_str(), out.problems.size(), what.c_str());
      Record("corruption", app,
             std::to_string(out.problems.size()) +
                 " damaged object(s) with no healthy copy on any node, e.g. " + what);
      app_errors[app] = "scrub: damage left: " + what;
    }
    if (!out.error.empty()) app_errors[app] = "scrub: " + out.error;
    return out;
  }

  // The periodic scrub: the volume due first, at idle priority.
  void ScrubLoop() {
    setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 19);
    // IOPRIO_WHO_PROCESS = 1, class idle = 3 (<< 13).
    syscall(SYS_ioprio_set, 1, static_cast<int>(syscall(SYS_gettid)), 3 << 13);
    std::unique_lock l(mu);
    while (!stop) {
      int64_t now = Now();
      std::string next;
      int64_t next_at = INT64_MAX;
      for (auto it = scrub_due.begin(); it != scrub_due.end();) {
        if (!primaries.count(it->first) && !replicas_here.count(it->first)) {
          it = scrub_due.erase(it);
          continue;
        }
        if (it->second < next_at) next = it->first, next_at = it->second;
        ++it;
      }
      auto add = [&](const std::string& app) {
        if (scrub_due.count(app)) return;
        // Spread first scrubs over the interval instead of all at start.
        uint64_t h = std::hash<std::string>{}(app);
        scrub_due[app] =
            now + static_cast<int64_t>(h % static_cast<uint64_t>(opts.scrub_interval_ms));
      };
      for (const auto& [app, p] : primaries) add(app);
      for (const auto& [app, r] : replicas_here) add(app);
      if (!next.empty() && next_at <= now) {
        scrub_due[next] = now + opts.scrub_interval_ms;
        l.unlock();
        auto r = Scrub(next, opts.scrub_bytes_per_sec);
        l.lock();
        continue;
      }
      cv.wait_for(l, std::chrono::seconds(10), [&] { return stop; });
    }
  }

  // ---- The loop

  // REQUIRES: mu held.
  void StartWork(int64_t now) {
    for (Task& t : sched.Next(now)) {
      if (t.kind == Task::kCheck) {
        // Most checks find an idle volume: the store can often tell at once
        // (quick_only), here, without a trip through the pool.
        storage::SnapshotOptions quick;
        quick.skip_if_unchanged = true;
        quick.quick_only = true;
        auto q = store->Snapshot(t.app, AutoSnapshotName(now), quick);
        if (q.ok()) {
          FinishCheck(t.app, now, q);
          continue;
        }
        Post([this, app = t.app] { Check(app, store->backend() == "dir"); });
      } else {
        auto p = primaries.find(t.app);
        uint64_t epoch = p == primaries.end() ? 0 : p->second.epoch;
        Post([this, t, epoch] { Transfer(t, epoch); });
      }
    }
    // Probes and retention are timed in hundreds of milliseconds: sweep the
    // apps twice a second (or at once when a probe was asked for), not on
    // every completed check.
    if (now < next_sweep_ms && !sweep_now) return;
    next_sweep_ms = now + 500;
    sweep_now = false;
    for (auto& [app, p] : primaries) {
      if (!p.seeded) continue;
      for (auto& [replica, at] : p.probe_at) {
        if (at > now || p.probing.count(replica)) continue;
        if (std::find(p.replicas.begin(), p.replicas.end(), replica) == p.replicas.end()) continue;
        at = INT64_MAX;
        p.probing.insert(replica);
        std::vector<std::string> ours;
        for (auto s = p.snaps.rbegin(); s != p.snaps.rend(); ++s) ours.push_back(s->id);
        Post([this, app = app, replica = replica, epoch = p.epoch, ours = std::move(ours)] {
          Probe(app, replica, epoch, ours);
        });
      }
      for (auto it = p.probe_at.begin(); it != p.probe_at.end();)
        it = it->second == INT64_MAX && !p.probing.count(it->first) ? p.probe_at.erase(it)
                                                                    : std::next(it);
      if (!p.retention_running && p.snaps.size() > 1 &&
          now - p.last_retention_ms >= opts.retention_every_ms) {
        p.retention_running = true;
        p.last_retention_ms = now;
        std::set<std::string> protect;
        for (const auto& row : sched.Lag(now)) {
          if (row.app != app) continue;
          if (row.replica_newest) protect.insert(*row.replica_newest);
          if (!row.sending_snapshot.empty()) protect.insert(row.sending_snapshot);
        }
        Post([this, app = app, grid = p.grid, protect] { Retain(app, grid, protect, true); });
      }
    }
    for (auto& [app, r] : replicas_here) {
      if (r.retention_running || now - r.last_retention_ms < opts.retention_every_ms) continue;
      r.retention_running = true;
      r.last_retention_ms = now;
      Post([this, app = app, grid = r.grid] { Retain(app, grid, {}, false); });
    }
  }

  void Loop() {
    std::unique_lock l(mu);
    while (!stop) {
      if (view_dirty) {
        view_dirty = false;
        l.unlock();
        std::map<std::string, net::HostPort> eps;
        auto desired = ReadDesired(&eps);
        l.lock();
        ApplyDesired(std::move(desired), std::move(eps));
      }
      int64_t now = Now();
      StartWork(now);
      int64_t wait_ms = 1000;  // probes and retention are timed here
      if (auto wake = sched.NextWakeMs(now)) wait_ms = std::clamp<int64_t>(*wake - now, 0, 1000);
      if (wait_ms > 0) {
        cv.wait_for(l, std::chrono::milliseconds(wait_ms),
                    [&] { return stop || view_dirty || work_done; });
      }
      work_done = false;
    }
  }
};

ReplicationService::ReplicationService(cluster::ClusterStore* cs, storage::Store* store,
                                       runtime::Runtime* rt, ServiceOptions opts)
    : impl_(std::make_unique<Impl>(cs, store, rt, std::move(opts))) {}

ReplicationService::~ReplicationService() {
  Stop();
}

Status ReplicationService::Start() {
  Impl& m = *impl_;
  m.follower = std::make_unique<cluster::ViewFollower>(
      m.cs, cluster::ViewFollower::Options{
                .name = "replication",
                .prefixes = {m.cs->NodesPrefix(), m.cs->AppsPrefix(), m.cs->PlacementsPrefix()},
                .extra_prefixes = {},
                .rebuild =
                    [&m] {
                      std::lock_guard l(m.mu);
                      m.view_dirty = true;
                      m.cv.notify_all();
                    },
                .delay = [] { return std::chrono::milliseconds(20); }});
  ReceiverOptions ro;
  ro.node_id = m.opts.node_id;
  ro.is_primary = [&m](const std::string& app, const std::string& node, uint64_t epoch) {
    return m.IsPrimary(app, node, epoch);
  };
  ro.io_timeout_ms = m.opts.io_timeout_ms;
  ro.spool_dir = m.opts.spool_dir;
  ro.on_diverged = [&m](const std::string& app, const std::string& branch,
                        const std::string& detail) { m.OnDiverged(app, branch, detail); };
  m.receiver = std::make_unique<Receiver>(*m.store, ro);
  m.server = std::make_unique<proxy::TlsTerminator>(
      proxy::TlsTerminatorOptions{.listen = {m.opts.listen}, .workers = 1},
      [&m](UniqueFd fd, const proxy::TlsConnInfo& info) {
        m.receiver->Adopt(std::move(fd), info);
      });
  auto certs = proxy::CertTable::Build(
      {},
      proxy::CertSpec{
          m.opts.node_id, {m.opts.node_id}, m.opts.identity.cert_pem, m.opts.identity.key_pem},
      proxy::TlsServerPolicy{.client_ca_pem = m.opts.identity.ca_pem,
                             .alpn = {std::string(kReplicationAlpn)}});
  HC_RETURN_IF_ERROR(certs.status().Annotate("replication: node certificate"));
  HC_RETURN_IF_ERROR(
      m.server->Start(*certs).Annotate("replication listener on " + m.opts.listen.ToString()));
  m.tunnels = std::make_unique<proxy::TlsTunnels>(m.opts.identity, m.opts.tunnel_host);
  HC_RETURN_IF_ERROR(m.tunnels->Start().Annotate("replication tunnels"));
  m.follower->Start();
  int workers = m.opts.limits.max_checks + m.opts.limits.max_transfers + 2;
  for (int i = 0; i < workers; ++i) m.pool.emplace_back([&m] { m.Worker(); });
  m.loop = std::thread([&m] { m.Loop(); });
  if (m.opts.scrub_interval_ms > 0) m.scrubber = std::thread([&m] { m.ScrubLoop(); });
  return Status::Ok();
}

void ReplicationService::Stop() {
  Impl& m = *impl_;
  {
    std::lock_guard l(m.mu);
    if (m.stop) return;
    m.stop = true;
    m.cv.notify_all();
    m.jobs_cv.notify_all();
  }
  if (m.follower) m.follower->Stop();
  // Cut transfers in flight so the pool's threads return.
  if (m.tunnels) m.tunnels->Stop();
  if (m.server) m.server->Stop();
  if (m.receiver) m.receiver->Stop();
  if (m.loop.joinable()) m.loop.join();
  if (m.scrubber.joinable()) m.scrubber.join();
  for (auto& t : m.pool)
    if (t.joinable()) t.join();
}

Status ReplicationService::SetIdentity(const proxy::TlsClientIdentity& id) {
  Impl& m = *impl_;
  auto certs = proxy::CertTable::Build(
      {}, proxy::CertSpec{m.opts.node_id, {m.opts.node_id}, id.cert_pem, id.key_pem},
      proxy::TlsServerPolicy{.client_ca_pem = id.ca_pem, .alpn = {std::string(kReplicationAlpn)}});
  HC_RETURN_IF_ERROR(certs.status());
  HC_RETURN_IF_ERROR(m.tunnels->SetIdentity(id));
  m.server->SetCerts(std::move(*certs));
  return Status::Ok();
}

net::HostPort ReplicationService::bound() const {
  auto b = impl_->server->bound();
  return b.empty() ? net::HostPort{} : b[0];
}

AppReplicationStatus ReplicationService::Describe(const std::string& app) const {
  Impl& m = *impl_;
  std::unique_lock l(m.mu);
  AppReplicationStatus out;
  out.app = app;
  if (auto p = m.primaries.find(app); p != m.primaries.end()) {
    out.role = "primary";
    out.epoch = p->second.epoch;
    for (auto& row : m.sched.Lag(m.Now()))
      if (row.app == app && !row.replica.empty()) out.replicas.push_back(std::move(row));
  } else if (auto r = m.replicas_here.find(app); r != m.replicas_here.end()) {
    out.role = "replica";
    out.epoch = r->second.epoch;
  }
  if (auto n = m.newest_here.find(app); n != m.newest_here.end()) {
    out.newest_snapshot = n->second.id;
    out.newest_snapshot_name = n->second.name;
    out.newest_created_ns = n->second.created_unix_ns;
  }
  if (auto e = m.app_errors.find(app); e != m.app_errors.end()) out.last_error = e->second;
  if (auto s = m.scrubbed.find(app); s != m.scrubbed.end()) out.last_scrub = s->second;
  // Copies kept here are volumes named <app>-diverged-<time> (divergence)
  // or <app>-damaged-<time> (a zfs repair); they outlive restarts, so the
  // store is the record.
  l.unlock();
  if (!out.role.empty()) {
    if (auto vols = m.store->ListVolumes(); vols.ok()) {
      for (const auto& v : *vols) {
        if (v.name.starts_with(app + "-diverged-") || v.name.starts_with(app + "-damaged-"))
          out.diverged_branches.push_back(v.name);
      }
    }
  }
  return out;
}

Result<ScrubOutcome> ReplicationService::ScrubNow(const std::string& app) {
  return impl_->Scrub(app, 0);
}

std::map<std::string, int64_t> ReplicationService::NewestSnapshots(
    const std::vector<std::string>& apps) const {
  std::map<std::string, int64_t> out;
  for (const auto& app : apps) {
    auto snaps = impl_->store->ListSnapshots(app);
    if (snaps.ok() && !snaps->empty()) out[app] = snaps->back().created_unix_ns;
  }
  return out;
}

Result<SyncResult> ReplicationService::SyncTo(const std::string& app, const std::string& peer,
                                              bool app_stopped) {
  Impl& m = *impl_;
  uint64_t epoch;
  int64_t started;
  {
    // The placement that made `peer` a replica was just written: give this
    // node's view of it a few seconds to arrive.
    std::unique_lock l(m.mu);
    hc::Status why = hc::Status::Ok();
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (true) {
      auto p = m.primaries.find(app);
      if (p == m.primaries.end() || !p->second.seeded)
        why = Conflict("node '" + m.opts.node_id + "' is not (yet) the primary of '" + app + "'");
      else if (std::find(p->second.replicas.begin(), p->second.replicas.end(), peer) ==
               p->second.replicas.end())
        why = Conflict("node '" + peer + "' is not a replica of '" + app + "' yet");
      else
        why = hc::Status::Ok();
      if (why.ok() || m.stop || std::chrono::steady_clock::now() >= until) break;
      m.cv.wait_for(l, std::chrono::milliseconds(50));
    }
    if (!why.ok()) return why;
    epoch = m.primaries[app].epoch;
    started = m.Now();
  }
  // 1. The newest state as a snapshot.
  storage::SnapshotOptions so;
  so.skip_if_unchanged = true;
  if (!app_stopped && m.store->backend() == "dir") {
    so.freeze = [&m, app] {
      hc::Status s = m.rt->Freeze(app);
      return s.code() == Code::kNotFound ? hc::Status::Ok() : s;
    };
    so.thaw = [&m, app] {
      hc::Status s = m.rt->Thaw(app);
      return s.code() == Code::kNotFound ? hc::Status::Ok() : s;
    };
  }
  auto snap = m.store->Snapshot(app, AutoSnapshotName(started), so);
  if (!snap.ok() && snap.status().code() == Code::kAlreadyExists)
    snap = m.store->Snapshot(app, AutoSnapshotName(started + 1), so);
  if (!snap.ok()) return snap.status().Annotate("snapshot of '" + app + "'");
  {
    std::lock_guard l(m.mu);
    auto p = m.primaries.find(app);
    if (p == m.primaries.end()) return Conflict("'" + app + "' moved away meanwhile");
    Impl::PrimaryApp& pa = p->second;
    if (pa.snaps.empty() || pa.snaps.back().id != snap->id) {
      // Known to the scheduler too, so the other replicas get it as usual.
      pa.snaps.push_back({snap->id, started, 4096, snap->logical_bytes});
      pa.created_s[snap->id] = snap->created_unix_ns / 1'000'000'000;
      pa.last_logical = snap->logical_bytes;
      m.newest_here[app] = *snap;
      m.st.snapshots++;
      m.sched.SetSnapshots(app, pa.snaps);
    }
  }
  // 2. Push it from what the peer holds (learnt from its answer). A
  // scheduled transfer to the same peer may be running: its answer is
  // "already in progress" or "base missing": try again until it is done
  // (a scheduled initial sync of a big volume takes a while).
  SyncResult out;
  out.snapshot_id = snap->id;
  hc::Status last = hc::Status::Ok();
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  for (int attempt = 0; std::chrono::steady_clock::now() < give_up; ++attempt) {
    std::string newest;
    PushOptions po;
    po.app = app;
    po.epoch = epoch;
    po.base_id = po.target_id = snap->id;
    po.receiver_newest = &newest;
    auto probe = m.PushTo(peer, po);
    if (probe.ok()) {  // it holds it (e.g. a scheduled transfer just sent it)
      last = hc::Status::Ok();
      break;
    }
    if (probe.status().code() != Code::kConflict) {
      last = probe.status();
    } else {
      PushOptions full;
      full.app = app;
      full.epoch = epoch;
      full.target_id = snap->id;
      full.base_id = newest;  // "" = it holds nothing: a full send
      full.receiver_newest = &newest;
      auto r = m.PushTo(peer, full);
      if (r.ok()) {
        out.bytes += r->stream_bytes;
        out.full = full.base_id.empty();
        last = hc::Status::Ok();
        break;
      }
      last = r.status();
    }
    if (last.code() == Code::kNotFound || last.code() == Code::kCorrupt) break;
    {
      std::lock_guard l(m.mu);
      if (m.stop) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(50 + 50 * attempt, 500)));
  }
  if (!last.ok()) return last.Annotate("push of '" + app + "' to '" + peer + "'");
  std::lock_guard l(m.mu);
  m.sched.ReplicaHas(app, peer, snap->id);
  return out;
}

ReplicationService::Stats ReplicationService::stats() const {
  Impl& m = *impl_;
  Stats s;
  {
    std::lock_guard l(m.mu);
    s = m.st;
  }
  if (m.receiver) {
    auto r = m.receiver->stats();
    s.received = r.received;
    s.refused = r.refused;
    s.receive_failures = r.failed;
  }
  return s;
}

std::string ReplicationService::MetricsText() const {
  Impl& m = *impl_;
  Stats s = stats();
  std::string out;
  auto counter = [&](const char* name, const char* help, uint64_t v) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name +
           " " + std::to_string(v) + "\n";
  };
  counter("hc_replication_checks_total", "Volume checks (snapshot if changed) run here.", s.checks);
  counter("hc_replication_snapshots_total", "Snapshots taken by checks here.", s.snapshots);
  counter("hc_replication_check_failures_total", "Checks that failed.", s.check_failures);
  counter("hc_replication_transfers_total", "Transfers sent (or tried) to replicas.", s.transfers);
  counter("hc_replication_transfer_failures_total", "Transfers that failed.", s.transfer_failures);
  counter("hc_replication_sent_bytes_total", "Stream bytes sent to replicas.", s.bytes_sent);
  counter("hc_replication_pruned_total", "Snapshots removed by retention here.",
          s.snapshots_pruned);
  counter("hc_replication_received_total", "Snapshots received from primaries.", s.received);
  counter("hc_replication_refused_total", "Incoming transfers refused.", s.refused);
  counter("hc_replication_receive_failures_total", "Incoming transfers that failed.",
          s.receive_failures);
  counter("hc_replication_diverged_total", "Diverged copies kept as branches here.", s.diverged);
  counter("hc_scrub_runs_total", "Volume scrubs run here.", s.scrubs);
  counter("hc_scrub_bytes_total", "Bytes re-read and checked by scrubs.", s.scrub_bytes);
  counter("hc_scrub_repaired_total", "Damaged objects rewritten from another node's copy.",
          s.repaired_objects);
  counter("hc_scrub_unrepaired_total", "Damaged objects no node had a healthy copy of.",
          s.unrepaired_objects);
  std::vector<ReplicaLag> rows;
  {
    std::lock_guard l(m.mu);
    rows = m.sched.Lag(m.Now());
  }
  std::string lag =
      "# HELP hc_replication_lag_seconds Age of the oldest snapshot a replica lacks.\n"
      "# TYPE hc_replication_lag_seconds gauge\n";
  std::string bytes =
      "# HELP hc_replication_lag_bytes Changed bytes a replica lacks.\n"
      "# TYPE hc_replication_lag_bytes gauge\n";
  std::string rpo =
      "# HELP hc_replication_rpo_seconds Writes older than this are on the replica.\n"
      "# TYPE hc_replication_rpo_seconds gauge\n";
  std::string state =
      "# HELP hc_replication_replica_state 1 for the replica's current state.\n"
      "# TYPE hc_replication_replica_state gauge\n";
  char buf[64];
  for (const auto& r : rows) {
    if (r.replica.empty()) continue;
    std::string labels = "{app=\"" + Label(r.app) + "\",replica=\"" + Label(r.replica) + "\"}";
    std::snprintf(buf, sizeof buf, "%.3f", r.lag_ms / 1000.0);
    lag += "hc_replication_lag_seconds" + labels + " " + buf + "\n";
    bytes += "hc_replication_lag_bytes" + labels + " " + std::to_string(r.lag_bytes) + "\n";
    if (r.rpo_ms) {
      std::snprintf(buf, sizeof buf, "%.3f", *r.rpo_ms / 1000.0);
      rpo += "hc_replication_rpo_seconds" + labels + " " + buf + "\n";
    }
    state += "hc_replication_replica_state{app=\"" + Label(r.app) + "\",replica=\"" +
             Label(r.replica) + "\",state=\"" + ReplicaStateName(r.state) + "\"} 1\n";
  }
  return out + lag + bytes + rpo + state;
}

}  // namespace hc::replication
