#include "agent/leader.h"

#include <chrono>
#include <memory>

#include "common/log.h"
#include "scheduler/placement.h"

namespace hc::agent {
namespace {

using std::chrono::milliseconds;

std::vector<std::string> NodesOf(const cluster::Placement& p) {
  std::vector<std::string> n = {p.primary};
  n.insert(n.end(), p.replicas.begin(), p.replicas.end());
  return n;
}

}  // namespace

Leader::Leader(cluster::ClusterStore* cs, std::string node_id, std::function<int64_t()> lease)
    : cs_(cs), node_id_(std::move(node_id)), lease_(std::move(lease)) {}

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
  // The three prefixes the planner reads; each watch resumes on its own.
  std::vector<std::unique_ptr<cluster::Watch>> watches;
  for (const auto& p : {cs_->NodesPrefix(), cs_->AppsPrefix(), cs_->PlacementsPrefix()})
    watches.push_back(std::make_unique<cluster::Watch>(cs_->etcd(), p, rev + 1, on_events, resync));

  std::thread loss_watch([&] {
    election->WaitLost(&lost);
    lost.store(true);
    cv_.notify_all();
  });

  while (!stop_.load() && !step_down_.load() && !lost.load()) {
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_for(l, milliseconds(1000), [&] {
        std::lock_guard<std::mutex> v(vmu);
        return dirty || stop_.load() || step_down_.load() || lost.load();
      });
    }
    if (stop_.load() || step_down_.load() || lost.load()) break;
    std::this_thread::sleep_for(milliseconds(20));  // let a burst of events land
    // Plan on the live view under its lock (no copy of 10,000s of apps per
    // round); the watches wait for the few milliseconds this takes.
    std::vector<cluster::PlacementWrite> writes;
    size_t placed = 0;
    {
      std::lock_guard<std::mutex> l(vmu);
      if (!dirty) continue;
      dirty = false;
      placed = view.placements.size();
      auto plan = scheduler::PlanPlacements(view);
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
        LogDebug("leader: %s %s: %s",
                 c.kind == scheduler::PlacementChange::kDelete ? "unplace" : "place", app.c_str(),
                 c.reason.c_str());
        writes.push_back(std::move(w));
      }
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      stats_.plans++;
      stats_.placed_apps = static_cast<int64_t>(placed);
    }
    if (writes.empty()) continue;
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
      std::lock_guard<std::mutex> s(mu_);
      stats_.writes += static_cast<int64_t>(*applied);
      if (*applied > 0) LogInfo("leader: wrote %zu placement change(s)", *applied);
      continue;
    }
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
  }
  lost.store(true);  // ends loss_watch
  loss_watch.join();
  watches.clear();
}

}  // namespace hc::agent
