#include "agent/leader.h"

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "agent/mover.h"
#include "common/log.h"
#include "net/http_client.h"
#include "scheduler/placement.h"

namespace hc::agent {
namespace {

using std::chrono::milliseconds;

int64_t WallMs() {
  return std::chrono::duration_cast<milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::vector<std::string> NodesOf(const cluster::Placement& p) {
  std::vector<std::string> n = {p.primary};
  n.insert(n.end(), p.replicas.begin(), p.replicas.end());
  return n;
}

// Moves that take primaries off drained nodes, at most `max_moves` under
// way at once. The target: a live, undrained replica (it holds the data
// already) with the fewest primaries, else any live undrained node. An app
// whose last drain move failed waits a minute before the next try.
std::vector<cluster::MoveRecord> PlanDrains(const cluster::ClusterView& view, int64_t now,
                                            int max_moves) {
  std::vector<cluster::MoveRecord> out;
  if (view.drained.empty()) return out;
  int under_way = 0;
  for (const auto& [app, m] : view.moves)
    if (!m.finished() && m.reason == "drain") ++under_way;
  std::map<std::string, int> primaries;
  for (const auto& [app, p] : view.placements) primaries[p.primary]++;
  auto fewest = [&](const std::vector<std::string>& ids, const std::string& not_this) {
    std::string best;
    for (const auto& id : ids) {
      auto n = view.nodes.find(id);
      if (id == not_this || n == view.nodes.end() || n->second.drained) continue;
      if (best.empty() || primaries[id] < primaries[best]) best = id;
    }
    return best;
  };
  std::vector<std::string> all;
  for (const auto& [id, n] : view.nodes) all.push_back(id);
  for (const auto& [app, p] : view.placements) {
    if (under_way + static_cast<int>(out.size()) >= max_moves) break;
    auto node = view.nodes.find(p.primary);
    if (node == view.nodes.end() || !node->second.drained || !view.apps.count(app)) continue;
    if (auto m = view.moves.find(app); m != view.moves.end()) {
      if (!m->second.finished()) continue;
      if (m->second.state == "failed" && now - m->second.updated_ms < 60'000) continue;
    }
    std::string target = fewest(p.replicas, p.primary);
    if (target.empty()) target = fewest(all, p.primary);
    if (target.empty()) continue;  // nowhere to go
    primaries[target]++;
    cluster::MoveRecord m;
    m.app = app;
    m.target = target;
    m.reason = "drain";
    m.by = "drain of " + p.primary;
    m.state = "pending";
    m.requested_ms = now;
    m.updated_ms = now;
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace

Leader::Leader(cluster::ClusterStore* cs, std::string node_id, std::function<int64_t()> lease,
               LeaderOptions opts)
    : cs_(cs), node_id_(std::move(node_id)), lease_(std::move(lease)), opts_(std::move(opts)) {}

Result<std::string> Leader::CallNode(const cluster::NodeInfo& n, const std::string& path,
                                     const std::string& body, milliseconds timeout) {
  net::HttpClientOptions co;
  co.connect_timeout = milliseconds(1000);
  co.request_timeout = timeout;
  net::HttpClient client(net::HostPort{n.address, n.api_port}, co);
  net::HttpRequest req;
  req.method = "POST";
  req.target = path;
  req.body = body;
  req.headers.Set("Content-Type", "application/json");
  if (!opts_.api_token.empty()) req.headers.Set("Authorization", "Bearer " + opts_.api_token);
  auto r = client.Do(req, timeout);
  if (!r.ok()) return r.status().Annotate("node '" + n.id + "' " + path);
  if (r->status != 200) {
    auto j = nlohmann::json::parse(r->body, nullptr, false);
    std::string msg = r->body.substr(0, 300);
    if (j.is_object() && j.contains("error") && j["error"].is_object())
      msg = j["error"].value("message", msg);
    return Unavailable("node '" + n.id + "' " + path + ": HTTP " + std::to_string(r->status) +
                       ": " + msg);
  }
  return std::move(r->body);
}

std::map<std::string, std::map<std::string, int64_t>> Leader::AskNewest(
    const std::map<std::string, std::vector<std::string>>& candidates,
    const std::map<std::string, cluster::NodeInfo>& nodes) {
  std::map<std::string, std::vector<std::string>> by_node;
  for (const auto& [app, replicas] : candidates)
    for (const auto& r : replicas) by_node[r].push_back(app);
  std::map<std::string, std::map<std::string, int64_t>> out;
  for (const auto& [node, apps] : by_node) {
    auto n = nodes.find(node);
    if (n == nodes.end()) continue;
    auto r = CallNode(n->second, "/v1/node/newest-snapshots", nlohmann::json{{"apps", apps}}.dump(),
                      milliseconds(1500));
    if (!r.ok()) {
      LogWarn("leader: failover: cannot ask %s for its snapshots: %s", node.c_str(),
              r.status().ToString().c_str());
      continue;
    }
    auto j = nlohmann::json::parse(*r, nullptr, false);
    if (!j.is_object() || !j["newest"].is_object()) continue;
    for (const auto& [app, ns] : j["newest"].items())
      if (ns.is_number_integer()) out[app][node] = ns.get<int64_t>();
  }
  return out;
}

Leader::~Leader() {
  Stop();
}

void Leader::Start() {
  thread_ = std::thread([this] { Run(); });
}

void Leader::Stop() {
  stop_.store(true);
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::vector<std::thread> movers;
  {
    std::lock_guard<std::mutex> l(movers_mu_);
    movers.swap(movers_);
  }
  for (auto& t : movers) t.join();
}

void Leader::LeaseChanged() {
  step_down_.store(true);
  cv_.notify_all();
}

LeaderStats Leader::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

void Leader::Run() {
  while (!stop_.load()) {
    step_down_.store(false);
    cluster::Election election(cs_->etcd(), cs_->LeaderKey(), node_id_);
    int64_t lease = lease_();
    // Campaign until elected; a lease change restarts the campaign.
    std::atomic<bool> cancel{false};
    std::thread canceller([&] {
      std::unique_lock<std::mutex> l(mu_);
      while (!stop_.load() && !step_down_.load() && !cancel.load())
        cv_.wait_for(l, milliseconds(200));
      cancel.store(true);
    });
    Status s = election.Campaign(lease, &cancel);
    if (!s.ok() || stop_.load() || step_down_.load()) {
      cancel.store(true);
      cv_.notify_all();
      canceller.join();
      continue;
    }
    LogInfo("leader: this node (%s) is the leader now", node_id_.c_str());
    {
      std::lock_guard<std::mutex> l(mu_);
      stats_.leading = true;
      stats_.terms++;
    }
    Lead(&election);
    cancel.store(true);
    cv_.notify_all();
    canceller.join();
    {
      std::lock_guard<std::mutex> l(mu_);
      stats_.leading = false;
    }
    if (stop_.load()) (void)election.Resign();
    LogInfo("leader: %s stepped down", node_id_.c_str());
  }
}

void Leader::Lead(cluster::Election* election) {
  std::mutex vmu;  // guards view and dirty
  cluster::ClusterView view;
  bool dirty = true;
  std::atomic<bool> lost{false};

  auto load = [&]() -> int64_t {
    while (!stop_.load() && !lost.load()) {
      auto v = cs_->LoadView();
      if (v.ok()) {
        std::lock_guard<std::mutex> l(vmu);
        view = std::move(*v);
        dirty = true;
        return view.revision;
      }
      LogWarn("leader: cannot read the cluster state: %s", v.status().ToString().c_str());
      std::this_thread::sleep_for(milliseconds(300));
    }
    return 0;
  };
  int64_t rev = load();
  if (rev == 0) return;

  auto on_events = [&](const std::vector<cluster::WatchEvent>& evs, int64_t) {
    std::lock_guard<std::mutex> l(vmu);
    cs_->ApplyEvents(evs, &view);
    dirty = true;
    cv_.notify_all();
  };
  auto resync = [&]() -> int64_t { return load(); };
  // The prefixes the planner and the movers read; each watch resumes on its own.
  std::vector<std::unique_ptr<cluster::Watch>> watches;
  for (const auto& p : {cs_->NodesPrefix(), cs_->AppsPrefix(), cs_->PlacementsPrefix(),
                        cs_->DrainPrefix(), cs_->MovesPrefix()})
    watches.push_back(std::make_unique<cluster::Watch>(cs_->etcd(), p, rev + 1, on_events, resync));

  std::thread loss_watch([&] {
    election->WaitLost(&lost);
    lost.store(true);
    cv_.notify_all();
  });

  // Nodes that left while we lead (or were already gone when we started):
  // when, and their data centre, for failover and the replica grace.
  std::map<std::string, int64_t> departed_ms;
  std::map<std::string, std::string> departed_dc, known_dc;
  {
    std::lock_guard<std::mutex> l(vmu);
    int64_t now = WallMs();
    for (const auto& [id, n] : view.nodes) known_dc[id] = n.datacenter;
    for (const auto& [app, p] : view.placements)
      for (const auto& id : NodesOf(p))
        if (!view.nodes.count(id)) departed_ms.emplace(id, now);
  }
  std::set<std::pair<std::string, std::string>> stuck_reported;  // (app, gone primary)
  // What this term's movers share; it outlives the term if they do.
  struct Term {
    MoveEnv env;
    std::atomic<bool> over{false};
  };
  auto term = std::make_shared<Term>();
  term->env.cs = cs_;
  term->env.guard = election->Guard();
  term->env.call = [this](const cluster::NodeInfo& n, const std::string& path,
                          const std::string& body,
                          milliseconds timeout) { return CallNode(n, path, body, timeout); };
  term->env.cancelled = [t = term.get(), this] { return t->over.load() || stop_.load(); };
  int64_t next_timer_round = 0;

  while (!stop_.load() && !step_down_.load() && !lost.load()) {
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_for(l, milliseconds(1000), [&] {
        std::lock_guard<std::mutex> v(vmu);
        return dirty || stop_.load() || step_down_.load() || lost.load();
      });
    }
    if (stop_.load() || step_down_.load() || lost.load()) break;
    int64_t now = WallMs();
    {
      // Timed decisions (replica grace, drains, retries) need rounds without
      // events too.
      std::lock_guard<std::mutex> l(vmu);
      if (now >= next_timer_round) {
        next_timer_round = now + 2000;
        dirty = true;
      }
    }
    std::this_thread::sleep_for(milliseconds(20));  // let a burst of events land
    // Who left, who came back.
    std::map<std::string, std::vector<std::string>> candidates;
    std::map<std::string, cluster::NodeInfo> live_nodes;
    {
      std::lock_guard<std::mutex> l(vmu);
      if (!dirty) continue;
      for (auto it = known_dc.begin(); it != known_dc.end();) {
        if (view.nodes.count(it->first)) {
          ++it;
          continue;
        }
        LogInfo("leader: node %s is gone", it->first.c_str());
        departed_ms.emplace(it->first, now);
        departed_dc[it->first] = it->second;
        it = known_dc.erase(it);
      }
      for (const auto& [id, n] : view.nodes) {
        known_dc[id] = n.datacenter;
        departed_ms.erase(id);
        departed_dc.erase(id);
      }
      candidates = scheduler::FailoverCandidates(view);
      if (!candidates.empty()) live_nodes = view.nodes;
      // Apps whose primary is gone with no live copy to promote: said once.
      for (const auto& [app, p] : view.placements) {
        if (view.nodes.count(p.primary) || candidates.count(app) || !view.apps.count(app)) continue;
        if (stuck_reported.insert({app, p.primary}).second) {
          std::string msg = "cannot fail over: node '" + p.primary +
                            "' is gone and no live node holds a replica of '" + app + "'";
          LogWarn("leader: %s", msg.c_str());
          (void)cs_->RecordEvent({now, node_id_, app, "failover-blocked", msg});
        }
      }
    }
    // What each candidate holds: asked outside the view's lock.
    std::map<std::string, std::map<std::string, int64_t>> newest;
    if (!candidates.empty()) newest = AskNewest(candidates, live_nodes);
    // Plan on the live view under its lock (no copy of 10,000s of apps per
    // round); the watches wait for the few milliseconds this takes.
    std::vector<cluster::PlacementWrite> writes;
    std::vector<cluster::Event> events;
    std::vector<cluster::MoveRecord> drain_requests;
    size_t placed = 0;
    {
      std::lock_guard<std::mutex> l(vmu);
      dirty = false;
      placed = view.placements.size();
      scheduler::PlanOptions po;
      po.newest_snapshot_ns = &newest;
      po.departed_ms = &departed_ms;
      po.departed_dc = &departed_dc;
      po.now_ms = now;
      po.replica_grace_ms = opts_.replica_grace_ms;
      auto plan = scheduler::PlanPlacements(view, po);
      writes.reserve(plan.size());
      for (auto& c : plan) {
        cluster::PlacementWrite w;
        w.placement = std::move(c.placement);
        const std::string& app = w.placement.app;
        if (auto a = view.apps.find(app); a != view.apps.end()) w.app = a->second;
        if (auto old = view.placements.find(app); old != view.placements.end())
          w.previous_nodes = NodesOf(old->second);
        if (auto m = view.placement_mod_revision.find(app); m != view.placement_mod_revision.end())
          w.expected_mod_revision = m->second;
        switch (c.kind) {
          case scheduler::PlacementChange::kCreate:
            w.kind = cluster::PlacementWrite::kCreate;
            break;
          case scheduler::PlacementChange::kUpdate:
            w.kind = cluster::PlacementWrite::kUpdate;
            break;
          case scheduler::PlacementChange::kDelete:
            w.kind = cluster::PlacementWrite::kDelete;
            break;
        }
        if (w.kind != cluster::PlacementWrite::kDelete && !w.app) continue;
        if (c.failover) {
          LogInfo("leader: %s", c.reason.c_str());
          events.push_back({now, node_id_, app, "failover", c.reason});
        } else {
          LogDebug("leader: %s %s: %s",
                   c.kind == scheduler::PlacementChange::kDelete ? "unplace" : "place", app.c_str(),
                   c.reason.c_str());
        }
        writes.push_back(std::move(w));
      }
      drain_requests = PlanDrains(view, now, opts_.max_drain_moves);
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      stats_.plans++;
      stats_.placed_apps = static_cast<int64_t>(placed);
    }
    if (!writes.empty()) {
      cluster::ClusterView after;  // receives only what was written
      auto applied = cs_->ApplyPlacements(writes, election->Guard(), &after);
      if (applied.ok()) {
        {
          std::lock_guard<std::mutex> l(vmu);
          for (const auto& w : writes) {
            const std::string& app = w.placement.app;
            if (w.kind == cluster::PlacementWrite::kDelete) {
              view.placements.erase(app);
              view.placement_mod_revision.erase(app);
            } else if (after.placement_mod_revision.count(app)) {
              view.placements[app] = after.placements[app];
              view.placement_mod_revision[app] =
                  std::max(view.placement_mod_revision[app], after.placement_mod_revision[app]);
            }
          }
        }
        for (const auto& e : events) (void)cs_->RecordEvent(e);
        std::lock_guard<std::mutex> s(mu_);
        stats_.writes += static_cast<int64_t>(*applied);
        stats_.failovers += static_cast<int64_t>(events.size());
        if (*applied > 0) LogInfo("leader: wrote %zu placement change(s)", *applied);
      } else {
        // Partly applied batches are fine: re-read and plan again from the truth.
        LogInfo("leader: %s", applied.status().ToString().c_str());
        {
          std::lock_guard<std::mutex> s(mu_);
          stats_.conflicts++;
        }
        if (applied.status().code() == Code::kConflict) {
          auto who = election->Leader();
          if (who.ok() && *who != node_id_) break;  // not the leader any more
        }
        load();
        continue;
      }
    }
    for (const auto& m : drain_requests) {
      Status s = cs_->RequestMove(m);
      if (!s.ok())
        LogInfo("leader: drain: move of %s not requested: %s", m.app.c_str(), s.ToString().c_str());
    }
    // Moves: one thread each, a few at a time.
    std::vector<cluster::MoveRecord> to_start;
    {
      std::lock_guard<std::mutex> v(vmu);
      std::lock_guard<std::mutex> l(movers_mu_);
      for (const auto& [app, m] : view.moves) {
        if (m.finished() || moving_.count(app)) continue;
        if (auto f = finished_moves_.find(app);
            f != finished_moves_.end() && f->second == m.requested_ms)
          continue;  // our own end result has not come back through the watch yet
        if (moving_.size() + to_start.size() >= static_cast<size_t>(opts_.max_moves)) break;
        to_start.push_back(m);
      }
      for (const auto& m : to_start) {
        moving_.insert(m.app);
        movers_.emplace_back([this, term, m] {
          cluster::MoveRecord end = RunMove(term->env, m);
          std::lock_guard<std::mutex> l(movers_mu_);
          moving_.erase(m.app);
          if (end.finished()) {
            finished_moves_[m.app] = m.requested_ms;
            std::lock_guard<std::mutex> s(mu_);
            stats_.moves++;
          }
          cv_.notify_all();
        });
      }
    }
  }
  term->over.store(true);
  lost.store(true);                          // ends loss_watch
  for (auto& w : watches) w->RequestStop();  // all at once, then join
  loss_watch.join();
  watches.clear();
}

}  // namespace hc::agent
