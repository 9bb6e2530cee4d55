#include "agent/agent.h"

#include <chrono>
#include <cstdio>
#include <ctime>

#include "common/log.h"
#include "runtime/templates.h"

namespace hc::agent {
namespace {

int64_t NowUnix() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "unreplicated-20261202-034512": what a returning primary held beyond its
// last snapshot.
std::string UnreplicatedSnapshotName() {
  time_t t = ::time(nullptr);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "unreplicated-%Y%m%d-%H%M%S", &tm);
  return buf;
}

int64_t NowUnixNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Reported fields that matter at once (usage only every status interval).
bool SameState(const cluster::AppObserved& a, const cluster::AppObserved& b) {
  return a.role == b.role && a.epoch == b.epoch && a.state == b.state && a.ready == b.ready &&
         a.port == b.port && a.restarts == b.restarts && a.message == b.message;
}

}  // namespace

Agent::Agent(AgentOptions opts, cluster::ClusterStore* cs, storage::Store* volumes,
             runtime::Runtime* rt, std::function<int64_t()> lease)
    : opts_(std::move(opts)), cs_(cs), volumes_(volumes), rt_(rt), lease_(std::move(lease)) {}

Agent::~Agent() {
  Stop();
}

Status Agent::Start() {
  thread_ = std::thread([this] { Loop(); });
  return Status::Ok();
}

void Agent::Stop() {
  stop_.store(true);
  cv_.notify_all();
  if (watch_) watch_->Stop();
  if (thread_.joinable()) thread_.join();
  watch_.reset();
}

void Agent::Kick(bool full_report) {
  std::lock_guard<std::mutex> l(mu_);
  kicked_ = true;
  if (full_report) full_report_pending_ = true;
  cv_.notify_all();
}

AgentStats Agent::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  AgentStats s = stats_;
  s.synced = synced_;
  return s;
}

int64_t Agent::Resync() {
  int64_t rev = 0;
  auto list = cs_->LoadAssignments(opts_.node_id, &rev);
  if (!list.ok()) {
    // Said once, then every ~10 tries: etcd may be down for a while.
    if (resync_failures_++ % 10 == 0)
      LogWarn("agent: cannot read assignments (will retry): %s", list.status().ToString().c_str());
    return 0;
  }
  resync_failures_ = 0;
  std::lock_guard<std::mutex> l(mu_);
  std::map<std::string, cluster::Assignment> fresh;
  for (auto& a : *list) fresh[a.app.name] = std::move(a);
  for (const auto& [name, a] : assigned_)
    if (!fresh.count(name)) released_.insert(name);
  assigned_ = std::move(fresh);
  synced_ = true;
  kicked_ = true;
  cv_.notify_all();
  return rev;
}

void Agent::OnEvents(const std::vector<cluster::WatchEvent>& evs) {
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& e : evs) {
    std::string app = cs_->AssignKeyApp(opts_.node_id, e.kv.key);
    if (app.empty()) continue;
    if (e.type == cluster::WatchEvent::kDelete) {
      assigned_.erase(app);
      released_.insert(app);
      continue;
    }
    auto a = cs_->ParseAssignment(opts_.node_id, e.kv.value);
    if (!a.ok()) {
      LogWarn("agent: ignoring unreadable assignment %s: %s", e.kv.key.c_str(),
              a.status().ToString().c_str());
      continue;
    }
    assigned_[app] = std::move(*a);
    released_.erase(app);
  }
  kicked_ = true;
  cv_.notify_all();
}

void Agent::Loop() {
  // First read of the assignments, then the watch from the next revision.
  int64_t rev = 0;
  while (!stop_.load() && (rev = Resync()) == 0) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::milliseconds(500), [&] { return stop_.load(); });
  }
  if (stop_.load()) return;
  watch_ = std::make_unique<cluster::Watch>(
      cs_->etcd(), cs_->AssignPrefix(opts_.node_id), rev + 1,
      [this](const std::vector<cluster::WatchEvent>& evs, int64_t) { OnEvents(evs); },
      [this] { return Resync(); });
  while (!stop_.load()) {
    bool full = false;
    bool resync = false;
    std::vector<std::function<void()>> then;
    {
      std::unique_lock<std::mutex> l(mu_);
      // An app that was just started (a move, a failover) is looked at again
      // within 100 ms until it is ready: the proxies hold its requests.
      int wait_ms =
          starting_ ? std::min(100, opts_.reconcile_interval_ms) : opts_.reconcile_interval_ms;
      cv_.wait_for(l, std::chrono::milliseconds(wait_ms), [&] { return kicked_ || stop_.load(); });
      if (stop_.load()) break;
      kicked_ = false;
      full = full_report_pending_;
      full_report_pending_ = false;
      resync = resync_pending_;
      resync_pending_ = false;
      then.swap(after_resync_);
    }
    if (resync && Resync() == 0) {
      // etcd still unreachable: try again shortly, callbacks kept.
      std::lock_guard<std::mutex> l(mu_);
      resync_pending_ = true;
      for (auto& f : then) after_resync_.push_back(std::move(f));
      full_report_pending_ = full_report_pending_ || full;
      continue;
    }
    ReconcileOnce(full || resync);
    for (auto& f : then) f();
  }
}

Status Agent::EnsureVolume(const cluster::AppDef& app, std::string* path) {
  // Known volumes are not looked up again (on zfs every look-up is a command).
  if (auto known = volume_paths_.find(app.name); known != volume_paths_.end()) {
    *path = known->second;
    return Status::Ok();
  }
  auto v = volumes_->GetVolume(app.name);
  bool created = false;
  if (!v.ok()) {
    if (v.status().code() != Code::kNotFound) return v.status();
    HC_RETURN_IF_ERROR(volumes_->CreateVolume(app.name));
    created = true;
  } else if (v->read_only) {
    // A replica promoted to primary: its copy takes the app's writes now.
    HC_RETURN_IF_ERROR(volumes_->SetReadOnly(app.name, false));
    LogInfo("agent: volume %s is writable now (primary here)", app.name.c_str());
  }
  HC_ASSIGN_OR_RETURN(*path, volumes_->LivePath(app.name));
  if (created) LogInfo("agent: created volume %s", app.name.c_str());
  volume_paths_[app.name] = *path;
  return Status::Ok();
}

Result<runtime::AppSpec> Agent::SpecFor(const cluster::AppDef& app, const runtime::AppStatus* st,
                                        const std::string& path) {
  runtime::TemplateRequest req;
  req.template_name = app.template_name;
  req.app_name = app.name;
  req.volume_path = path;
  req.command = app.command;
  req.env = app.env;
  req.limits.memory_bytes = app.limits.memory_bytes;
  req.limits.cpu_millis = app.limits.cpu_millis;
  req.limits.pids = app.limits.pids;
  if (st && st->port) {
    req.port = st->port;  // keep the port the app had (or was prepared with) here
  } else {
    HC_ASSIGN_OR_RETURN(req.port, rt_->PickPort());
  }
  return runtime::ApplyTemplate(req);
}

Status Agent::StartApp(const cluster::AppDef& app, const runtime::AppStatus* st,
                       const std::string& path) {
  HC_RETURN_IF_ERROR(runtime::SeedVolume(app.template_name, path, app.name));
  HC_ASSIGN_OR_RETURN(auto spec, SpecFor(app, st, path));
  const bool prepared = st && st->state == runtime::AppState::kPrepared;
  Status s = rt_->Start(spec);
  if (!s.ok() && s.code() == Code::kConflict && st && st->port) {
    // The old port is taken by now: take a new one.
    HC_ASSIGN_OR_RETURN(spec.port, rt_->PickPort());
    s = rt_->Start(spec);
  }
  if (s.ok()) {
    std::lock_guard<std::mutex> l(mu_);
    stats_.starts++;
    LogInfo("agent: started %s on port %u%s", app.name.c_str(), spec.port,
            prepared ? " (prepared ahead)" : "");
  }
  return s;
}

Status Agent::PrepareMove(const std::string& app, int64_t max_ms) {
  std::lock_guard<std::mutex> busy(reconcile_mu_);
  cluster::AppDef def;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto a = assigned_.find(app);
    if (a == assigned_.end() || a->second.primary_here)
      return Conflict("node '" + opts_.node_id + "' holds no replica of '" + app + "'");
    def = a->second.app;
  }
  // The replica's volume as it is; the last increment lands in it in place.
  // On zfs a receive may need the dataset unmounted, which a container
  // holding it would refuse: not prepared there (not tested yet).
  if (volumes_->backend() == "zfs")
    return Unavailable("apps on the " + volumes_->backend() +
                       " store are not prepared ahead; the move starts it in full");
  HC_ASSIGN_OR_RETURN(std::string path, volumes_->LivePath(app));
  auto st = rt_->GetStatus(app);
  HC_ASSIGN_OR_RETURN(auto spec, SpecFor(def, st.ok() ? &*st : nullptr, path));
  HC_RETURN_IF_ERROR(rt_->Prepare(spec));
  std::lock_guard<std::mutex> l(mu_);
  prepared_[app] = std::chrono::steady_clock::now() + std::chrono::milliseconds(max_ms);
  LogInfo("agent: %s prepared here for a move (port %u)", app.c_str(), spec.port);
  return Status::Ok();
}

cluster::AppObserved Agent::ObservePrimary(const cluster::Assignment& a,
                                           const runtime::AppStatus* st) {
  cluster::AppObserved o;
  o.app = a.app.name;
  o.node = opts_.node_id;
  o.role = "primary";
  o.epoch = a.placement.epoch;
  if (!st) {
    o.state = "starting";
    return o;
  }
  o.state = runtime::AppStateName(st->state);
  o.port = st->port;
  o.restarts = st->restarts;
  o.message = st->message;
  if (st->crash_looping) o.state = "crash-looping";
  return o;
}

Status Agent::WithAppStopped(const std::string& app, const std::function<Status()>& work) {
  Status stopped = Status::Ok();
  {
    // Between reconciles: none is starting the app right now.
    std::lock_guard<std::mutex> busy(reconcile_mu_);
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!held_.insert(app).second) {
        return Conflict("app '" + app + "' is already stopped for maintenance here");
      }
    }
    auto st = rt_->GetStatus(app);
    if (st.ok() && st->state != runtime::AppState::kStopped) {
      LogInfo("agent: stopping %s for maintenance of its volume", app.c_str());
      stopped = rt_->Stop(app);
      ready_.erase(app);
    }
  }
  Status done = stopped.ok() ? work() : stopped.Annotate("cannot stop '" + app + "'");
  {
    std::lock_guard<std::mutex> l(mu_);
    held_.erase(app);
  }
  LogInfo("agent: maintenance of %s done; starting it again", app.c_str());
  Kick();
  return done;
}

Status Agent::HoldForHandoff(const std::string& app, int64_t max_ms) {
  std::lock_guard<std::mutex> busy(reconcile_mu_);
  {
    std::lock_guard<std::mutex> l(mu_);
    auto a = assigned_.find(app);
    if (a == assigned_.end() || !a->second.primary_here)
      return Conflict("node '" + opts_.node_id + "' is not the primary of '" + app + "'");
    if (held_.count(app))
      return Conflict("app '" + app + "' is stopped for maintenance of its volume here");
    handoff_[app] = std::chrono::steady_clock::now() + std::chrono::milliseconds(max_ms);
  }
  auto st = rt_->GetStatus(app);
  if (!st.ok() || st->state == runtime::AppState::kStopped) return Status::Ok();
  LogInfo("agent: stopping %s: it is moving to another node", app.c_str());
  Status s = rt_->Stop(app);
  ready_.erase(app);
  if (!s.ok()) {
    std::lock_guard<std::mutex> l(mu_);
    handoff_.erase(app);
    kicked_ = true;
    cv_.notify_all();
    return s.Annotate("cannot stop '" + app + "'");
  }
  std::lock_guard<std::mutex> l(mu_);
  stats_.stops++;
  return Status::Ok();
}

void Agent::ReleaseHandoff(const std::string& app) {
  std::lock_guard<std::mutex> l(mu_);
  if (handoff_.erase(app)) {
    LogInfo("agent: %s stays here (the move did not switch); starting it again", app.c_str());
    kicked_ = true;
    cv_.notify_all();
  }
}

void Agent::ResyncThen(std::function<void()> done) {
  std::lock_guard<std::mutex> l(mu_);
  resync_pending_ = true;
  after_resync_.push_back(std::move(done));
  kicked_ = true;
  cv_.notify_all();
}

void Agent::ReconcileOnce(bool full_report) {
  std::lock_guard<std::mutex> busy(reconcile_mu_);
  std::map<std::string, cluster::Assignment> assigned;
  std::set<std::string> released;
  std::set<std::string> held;
  std::set<std::string> handing_off;
  std::set<std::string> prepared;  // for a move here: kept, not run
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!synced_) return;
    assigned = assigned_;
    held = held_;
    auto now = std::chrono::steady_clock::now();
    for (auto it = handoff_.begin(); it != handoff_.end();) {
      auto a = assigned_.find(it->first);
      if (a == assigned_.end() || !a->second.primary_here) {
        it = handoff_.erase(it);  // switched: a replica here now (or gone)
      } else if (now >= it->second) {
        LogWarn("agent: the move of %s did not finish in time; starting it here again",
                it->first.c_str());
        it = handoff_.erase(it);
      } else {
        handing_off.insert(it->first);
        ++it;
      }
    }
    for (auto it = prepared_.begin(); it != prepared_.end();) {
      auto a = assigned_.find(it->first);
      if (a == assigned_.end() || a->second.primary_here || now >= it->second) {
        it = prepared_.erase(it);  // started here, gone, or the move did not come
      } else {
        prepared.insert(it->first);
        ++it;
      }
    }
    released.swap(released_);
    stats_.reconciles++;
  }
  std::map<std::string, runtime::AppStatus> running;
  auto list = rt_->List();
  if (!list.ok()) {
    LogWarn("agent: cannot list apps: %s", list.status().ToString().c_str());
    return;
  }
  for (auto& s : *list) running[s.name] = std::move(s);

  int64_t now = NowUnix();
  bool starting = false;
  bool usage_due = full_report || now - last_usage_report_ >= opts_.status_interval_seconds;
  if (usage_due) last_usage_report_ = now;  // a failed report re-sends everything anyway
  std::vector<cluster::AppObserved> to_report;

  for (const auto& [name, a] : assigned) {
    if (stop_.load()) return;
    auto it = running.find(name);
    const runtime::AppStatus* st = it == running.end() ? nullptr : &it->second;
    cluster::AppObserved o;
    std::string path;
    // A replica's volume is created by its first (full) replication stream;
    // an empty one made here would make that stream refuse to land.
    Status vs = a.primary_here ? EnsureVolume(a.app, &path) : Status::Ok();
    if (a.primary_here) {
      replica_volumes_.erase(name);
      bool needs_start = !st || st->state == runtime::AppState::kStopped ||
                         st->state == runtime::AppState::kLost ||
                         st->state == runtime::AppState::kPrepared;
      if (held.count(name) || handing_off.count(name)) needs_start = false;
      Status s = vs;
      if (s.ok() && needs_start) {
        s = StartApp(a.app, st, path);
        auto fresh = rt_->GetStatus(name);
        if (fresh.ok()) running[name] = std::move(*fresh);
        it = running.find(name);
        st = it == running.end() ? nullptr : &it->second;
        ready_.erase(name);
      }
      o = ObservePrimary(a, st);
      if (held.count(name)) o.message = "stopped here for maintenance of its volume";
      if (handing_off.count(name)) o.message = "stopped here: moving to another node";
      if (!s.ok()) {
        o.state = "error";
        o.message = s.message();
      } else if (st && st->state == runtime::AppState::kRunning) {
        bool was_ready = ready_.count(name) > 0;
        if (!was_ready || now - probed_at_[name] >= opts_.ready_recheck_seconds) {
          probed_at_[name] = now;
          bool ready = rt_->WaitReady(name, was_ready ? 1000 : opts_.ready_probe_ms).ok();
          if (ready && !was_ready && st->started_unix_ns > 0)
            LogInfo("agent: %s is ready, %lld ms after its start", name.c_str(),
                    static_cast<long long>((NowUnixNs() - st->started_unix_ns) / 1000000));
          if (ready)
            ready_.insert(name);
          else
            ready_.erase(name);
        }
        o.ready = ready_.count(name) > 0;
        if (!o.ready && st->started_unix_ns / 1'000'000'000 > now - 60) starting = true;
        if (usage_due) {
          auto u = rt_->GetUsage(name);
          if (u.ok()) {
            o.cpu_seconds = u->cpu_seconds;
            o.memory_bytes = u->memory_bytes;
          }
        } else if (auto r = reported_.find(name); r != reported_.end()) {
          o.cpu_seconds = r->second.cpu_seconds;
          o.memory_bytes = r->second.memory_bytes;
        }
      } else {
        ready_.erase(name);
      }
    } else {
      // Replica: data only (filled by replication), never running here;
      // prepared for a move here at most (created, not run).
      const bool was_prepared = st && st->state == runtime::AppState::kPrepared;
      const bool keep = was_prepared && prepared.count(name);
      if (!keep && st && st->state != runtime::AppState::kStopped) {
        LogInfo(was_prepared
                    ? "agent: %s was prepared here for a move that did not come; removing it"
                    : "agent: %s is a replica here now; stopping it",
                name.c_str());
        (void)rt_->Stop(name);
        std::lock_guard<std::mutex> l(mu_);
        stats_.stops++;
      }
      if (st && !keep) (void)rt_->Remove(name);
      ready_.erase(name);
      probed_at_.erase(name);
      volume_paths_.erase(name);
      if (replica_volumes_.insert(name).second) {
        // Became a replica (or hcd started): its copy takes only streams.
        auto v = volumes_->GetVolume(name);
        if (v.ok() && !v->read_only) {
          // Writes made here after its last snapshot (a primary that died, or
          // was cut off, and came back) become a snapshot first: the next
          // stream from the new primary then finds them and keeps them as a
          // diverged branch, where a writable copy with unsnapshotted writes
          // would refuse every stream.
          storage::SnapshotOptions so;
          so.skip_if_unchanged = true;
          auto kept = volumes_->Snapshot(name, UnreplicatedSnapshotName(), so);
          if (!kept.ok())
            LogWarn("agent: cannot snapshot what %s holds here before it turns replica: %s",
                    name.c_str(), kept.status().ToString().c_str());
          else if (kept->name.rfind("unreplicated-", 0) == 0)
            LogWarn("agent: %s had writes here that no snapshot held; kept in snapshot %s",
                    name.c_str(), kept->name.c_str());
          vs = volumes_->SetReadOnly(name, true);
          LogInfo("agent: volume %s is read-only now (a replica)", name.c_str());
        }
      }
      o.app = name;
      o.node = opts_.node_id;
      o.role = "replica";
      o.epoch = a.placement.epoch;
      o.state = vs.ok() ? "replica" : "error";
      if (!vs.ok()) o.message = vs.message();
    }
    o.updated_unix = now;
    auto r = reported_.find(name);
    bool usage_moved = r != reported_.end() && usage_due &&
                       (o.cpu_seconds - r->second.cpu_seconds > 0.05 ||
                        o.memory_bytes > r->second.memory_bytes * 21 / 20 ||
                        o.memory_bytes < r->second.memory_bytes * 19 / 20);
    if (full_report || usage_moved || r == reported_.end() || !SameState(r->second, o))
      to_report.push_back(o);
    else
      o = r->second;  // keep the reported copy (its time stamp)
  }

  {
    std::lock_guard<std::mutex> l(mu_);
    starting_ = starting;
  }
  // Apps the runtime has that nobody assigned to us any more.
  std::vector<std::string> gone;
  for (const auto& [name, st] : running) {
    if (assigned.count(name)) continue;
    if (st.state != runtime::AppState::kStopped) {
      LogInfo("agent: %s is no longer assigned here; stopping it", name.c_str());
      Status s = rt_->Stop(name);
      if (!s.ok()) LogWarn("agent: stop %s: %s", name.c_str(), s.ToString().c_str());
      std::lock_guard<std::mutex> l(mu_);
      stats_.stops++;
    }
    (void)rt_->Remove(name);
    ready_.erase(name);
    probed_at_.erase(name);
  }
  // Volumes of apps that were deleted (not merely moved elsewhere).
  for (const auto& name : released) {
    if (assigned.count(name)) continue;
    volume_paths_.erase(name);
    replica_volumes_.erase(name);
    auto def = cs_->GetApp(name);
    if (def.ok() && !def->has_value()) {
      Status s = volumes_->DestroyVolume(name);
      if (s.ok())
        LogInfo("agent: app %s was deleted; destroyed its volume", name.c_str());
      else if (s.code() != Code::kNotFound)
        LogWarn("agent: destroy volume %s: %s", name.c_str(), s.ToString().c_str());
    } else if (def.ok()) {
      LogInfo("agent: %s is no longer held here; its volume is kept", name.c_str());
    } else {
      std::lock_guard<std::mutex> l(mu_);
      released_.insert(name);  // etcd unreachable: decide later
    }
  }
  for (const auto& [name, o] : reported_)
    if (!assigned.count(name)) gone.push_back(name);

  if (to_report.empty() && gone.empty()) return;
  Status s = cs_->ReportObserved(opts_.node_id, to_report, gone, lease_());
  if (!s.ok()) {
    LogWarn("agent: cannot report status: %s", s.ToString().c_str());
    std::lock_guard<std::mutex> l(mu_);
    full_report_pending_ = true;  // say everything again once etcd answers
    return;
  }
  for (const auto& o : to_report) reported_[o.app] = o;
  for (const auto& g : gone) reported_.erase(g);
  std::lock_guard<std::mutex> l(mu_);
  stats_.status_writes += static_cast<int64_t>(to_report.size() + gone.size());
}

}  // namespace hc::agent
