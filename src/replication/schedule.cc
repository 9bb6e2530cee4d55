#include "replication/schedule.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace hc::replication {

const char* ReplicaStateName(ReplicaLag::State s) {
  switch (s) {
    case ReplicaLag::kUnknown: return "unknown";
    case ReplicaLag::kInSync: return "in_sync";
    case ReplicaLag::kPending: return "pending";
    case ReplicaLag::kTransferring: return "transferring";
    case ReplicaLag::kRetrying: return "retrying";
    case ReplicaLag::kBlocked: return "blocked";
  }
  return "unknown";
}

namespace {
// A new app's first check sorts before every real due time.
constexpr int64_t kDueNow = std::numeric_limits<int64_t>::min();
}  // namespace

struct Scheduler::Replica {
  enum Known { kUnknown, kNone, kHas };
  enum Where { kIdle, kQueued, kRetry, kInFlight };

  std::string name;
  NodeId node = 0;
  Known known = kUnknown;
  std::string newest_id;  // kHas
  Where where = kIdle;
  int64_t queued_since = 0;  // kQueued: key in the node's queue
  bool queued_full = false;
  int64_t retry_at = 0;  // kRetry: key in retries_
  Status blocked;        // not OK: holds a snapshot the primary does not know
  Status last_error;
  int64_t last_error_ms = 0;
  int failures = 0;
  // kInFlight (the last values stay for Lag):
  bool full = false;
  std::string sending;
  uint64_t progress = 0;
  uint64_t expected = 0;
  int64_t issued_ms = 0;
};

struct Scheduler::App {
  struct Snap {
    KnownSnapshot s;
    int64_t confirmed_ms = 0;
    uint64_t cum_delta = 0;  // delta_bytes summed over this and older ones
  };

  AppId id = 0;
  std::string name;
  int64_t interval_ms = kDefaultIntervalMs;
  std::vector<Replica> replicas;
  // Everything the primary holds that the scheduler knows of, oldest first.
  // Grows by one per snapshot until SetSnapshots replaces it (retention).
  std::vector<Snap> snaps;
  std::unordered_map<std::string, size_t> index_of;
  bool check_in_flight = false;
  int64_t check_issued_ms = 0;
  int64_t due_ms = kDueNow;  // key in checks_due_ unless a check is in flight
  std::optional<int64_t> last_issued_ms;
  std::optional<int64_t> last_checked_ms;
  Status check_error;
  int check_failures = 0;
};

struct Scheduler::Node {
  std::string name;
  int in_flight = 0;
  std::set<std::pair<int64_t, AppId>> queue[2];  // (since, app) per kind
  std::optional<int64_t> head[2];                // our entry in heads_[kind]
};

Scheduler::Scheduler(ScheduleLimits limits) : limits_(limits) {
  HC_CHECK(limits_.max_checks >= 1 && limits_.max_transfers >= 1 && limits_.max_per_replica >= 1 &&
               limits_.max_full_sends >= 1,
           "replication schedule limits must be at least 1");
  HC_CHECK(limits_.retry_base_ms > 0 && limits_.retry_base_ms <= limits_.retry_max_ms,
           "replication retry backoff must satisfy 0 < base <= max");
}

Scheduler::~Scheduler() = default;

Scheduler::App* Scheduler::FindApp(const std::string& app) {
  auto it = app_ids_.find(app);
  return it == app_ids_.end() ? nullptr : apps_.at(it->second).get();
}

Scheduler::Replica* Scheduler::FindReplica(App& a, const std::string& replica) {
  for (Replica& r : a.replicas) {
    if (r.name == replica) return &r;
  }
  return nullptr;
}

Scheduler::NodeId Scheduler::NodeFor(const std::string& replica) {
  auto [it, added] = node_ids_.try_emplace(replica, static_cast<NodeId>(nodes_.size()));
  if (added) {
    nodes_.push_back(std::make_unique<Node>());
    nodes_.back()->name = replica;
  }
  return it->second;
}

int64_t Scheduler::Backoff(int failures) const {
  int64_t d = limits_.retry_base_ms;
  for (int i = 1; i < failures && d < limits_.retry_max_ms; ++i) d *= 2;
  return std::min(d, limits_.retry_max_ms);
}

Status Scheduler::SetApp(const std::string& app, int64_t interval_ms,
                         std::vector<std::string> replicas) {
  if (interval_ms < kMinIntervalMs) {
    return InvalidArgument("app '" + app + "': snapshot interval " + std::to_string(interval_ms) +
                           " ms is below the minimum of " + std::to_string(kMinIntervalMs) + " ms");
  }
  for (size_t i = 0; i < replicas.size(); ++i) {
    if (replicas[i].empty()) return InvalidArgument("app '" + app + "': empty replica name");
    for (size_t j = 0; j < i; ++j) {
      if (replicas[i] == replicas[j]) {
        return InvalidArgument("app '" + app + "': replica '" + replicas[i] + "' listed twice");
      }
    }
  }

  App* a = FindApp(app);
  if (a == nullptr) {
    auto owned = std::make_unique<App>();
    a = owned.get();
    a->id = next_app_id_++;
    a->name = app;
    a->interval_ms = interval_ms;
    app_ids_[app] = a->id;
    apps_[a->id] = std::move(owned);
    // A check handed out before the app was removed is still running: adopt
    // it rather than starting a second one.
    if (auto o = orphans_.find({app, ""}); o != orphans_.end()) {
      a->check_in_flight = true;
      a->check_issued_ms = o->second.issued_ms;
      a->last_issued_ms = o->second.issued_ms;
      orphans_.erase(o);
    } else {
      checks_due_.insert({a->due_ms, a->id});
    }
  } else if (a->interval_ms != interval_ms) {
    a->interval_ms = interval_ms;
    if (!a->check_in_flight && a->check_failures == 0 && a->last_issued_ms) {
      checks_due_.erase({a->due_ms, a->id});
      a->due_ms = *a->last_issued_ms + interval_ms;
      checks_due_.insert({a->due_ms, a->id});
    }
  }

  std::vector<Replica> next;
  next.reserve(replicas.size());
  for (const std::string& name : replicas) {
    if (Replica* old = FindReplica(*a, name)) {
      next.push_back(std::move(*old));
      old->name.clear();  // moved: not dropped below
      continue;
    }
    Replica r;
    r.name = name;
    r.node = NodeFor(name);
    if (auto o = orphans_.find({app, name}); o != orphans_.end()) {
      r.where = Replica::kInFlight;
      r.full = o->second.full;
      r.sending = o->second.snapshot_id;
      r.issued_ms = o->second.issued_ms;
      orphans_.erase(o);
    }
    next.push_back(std::move(r));
  }
  for (Replica& old : a->replicas) {
    if (old.name.empty()) continue;
    if (old.where == Replica::kInFlight) {
      orphans_[{app, old.name}] = {.check = false,
                                   .node = old.node,
                                   .full = old.full,
                                   .snapshot_id = old.sending,
                                   .issued_ms = old.issued_ms};
    } else {
      Dequeue(*a, old);
    }
  }
  a->replicas = std::move(next);
  for (Replica& r : a->replicas) Reevaluate(*a, r);
  return Status::Ok();
}

void Scheduler::RemoveApp(const std::string& app) {
  App* a = FindApp(app);
  if (a == nullptr) return;
  if (a->check_in_flight) {
    Orphan& o = orphans_[{app, ""}];
    o.check = true;
    o.issued_ms = a->check_issued_ms;
  } else {
    checks_due_.erase({a->due_ms, a->id});
  }
  for (Replica& r : a->replicas) {
    if (r.where == Replica::kInFlight) {
      orphans_[{app, r.name}] = {.check = false,
                                 .node = r.node,
                                 .full = r.full,
                                 .snapshot_id = r.sending,
                                 .issued_ms = r.issued_ms};
    } else {
      Dequeue(*a, r);
    }
  }
  AppId id = a->id;
  app_ids_.erase(app);
  apps_.erase(id);
}

void Scheduler::SetSnapshots(const std::string& app, std::vector<KnownSnapshot> oldest_first) {
  App* a = FindApp(app);
  if (a == nullptr) return;
  a->snaps.clear();
  a->index_of.clear();
  uint64_t cum = 0;
  for (KnownSnapshot& s : oldest_first) {
    if (a->index_of.contains(s.id)) continue;
    cum += s.delta_bytes;
    a->index_of[s.id] = a->snaps.size();
    int64_t covers = s.covers_ms;
    a->snaps.push_back({.s = std::move(s), .confirmed_ms = covers, .cum_delta = cum});
  }
  for (Replica& r : a->replicas) Reevaluate(*a, r);
}

void Scheduler::ReplicaHas(const std::string& app, const std::string& replica,
                           std::optional<std::string> newest_id) {
  App* a = FindApp(app);
  if (a == nullptr) return;
  Replica* r = FindReplica(*a, replica);
  if (r == nullptr || r->where == Replica::kInFlight) return;
  r->known = newest_id ? Replica::kHas : Replica::kNone;
  r->newest_id = newest_id.value_or("");
  Reevaluate(*a, *r);
}

void Scheduler::Dequeue(App& a, Replica& r) {
  if (r.where == Replica::kQueued) {
    nodes_[r.node]->queue[r.queued_full ? 1 : 0].erase({r.queued_since, a.id});
    UpdateHeads(r.node);
  } else if (r.where == Replica::kRetry) {
    retries_.erase({r.retry_at, a.id, r.node});
  }
  if (r.where != Replica::kInFlight) r.where = Replica::kIdle;
}

void Scheduler::Reevaluate(App& a, Replica& r) {
  if (r.where == Replica::kInFlight) return;
  bool need = false;
  bool full = false;
  int64_t since = 0;
  r.blocked = Status::Ok();
  if (r.known == Replica::kNone) {
    if (!a.snaps.empty()) {
      need = true;
      full = true;
      since = a.snaps.front().s.covers_ms;
    }
  } else if (r.known == Replica::kHas) {
    auto it = a.index_of.find(r.newest_id);
    if (it == a.index_of.end()) {
      r.blocked = Conflict("replica '" + r.name + "' of app '" + a.name + "' holds snapshot '" +
                           r.newest_id +
                           "', which the primary does not have; it cannot be updated "
                           "incrementally (diverged, or its base was destroyed)");
    } else if (it->second + 1 < a.snaps.size()) {
      need = true;
      since = a.snaps[it->second + 1].s.covers_ms;
    }
  }
  // A backoff runs to its end; Next() re-evaluates the pair then.
  if (r.where == Replica::kRetry) return;
  if (r.where == Replica::kQueued) {
    if (need && since == r.queued_since && full == r.queued_full) return;
    Dequeue(a, r);
  }
  if (!need) return;
  r.where = Replica::kQueued;
  r.queued_since = since;
  r.queued_full = full;
  nodes_[r.node]->queue[full ? 1 : 0].insert({since, a.id});
  UpdateHeads(r.node);
}

void Scheduler::UpdateHeads(NodeId id) {
  Node& n = *nodes_[id];
  for (int k = 0; k < 2; ++k) {
    std::optional<int64_t> want;
    if (!n.queue[k].empty() && n.in_flight < limits_.max_per_replica) {
      want = n.queue[k].begin()->first;
    }
    if (want == n.head[k]) continue;
    if (n.head[k]) heads_[k].erase({*n.head[k], id});
    n.head[k] = want;
    if (want) heads_[k].insert({*want, id});
  }
}

void Scheduler::ReleaseTransfer(NodeId node, bool full) {
  --nodes_[node]->in_flight;
  --transfers_in_flight_;
  if (full) --full_in_flight_;
  UpdateHeads(node);
}

std::vector<Task> Scheduler::Next(int64_t now_ms) {
  std::vector<Task> tasks;
  while (checks_in_flight_ < limits_.max_checks && !checks_due_.empty() &&
         checks_due_.begin()->first <= now_ms) {
    AppId id = checks_due_.begin()->second;
    checks_due_.erase(checks_due_.begin());
    App& a = *apps_.at(id);
    a.check_in_flight = true;
    a.check_issued_ms = now_ms;
    a.last_issued_ms = now_ms;
    ++checks_in_flight_;
    Task t;
    t.kind = Task::kCheck;
    t.app = a.name;
    tasks.push_back(std::move(t));
  }

  while (!retries_.empty() && std::get<0>(*retries_.begin()) <= now_ms) {
    auto [at, app_id, node] = *retries_.begin();
    retries_.erase(retries_.begin());
    App& a = *apps_.at(app_id);
    for (Replica& r : a.replicas) {
      if (r.node != node) continue;
      r.where = Replica::kIdle;
      Reevaluate(a, r);
    }
  }

  while (transfers_in_flight_ < limits_.max_transfers) {
    // The oldest head among nodes with a free slot; full sends only while
    // fewer than max_full_sends run. On a tie the increment goes first.
    int kind = -1;
    if (!heads_[0].empty()) kind = 0;
    if (!heads_[1].empty() && full_in_flight_ < limits_.max_full_sends &&
        (kind < 0 || heads_[1].begin()->first < heads_[0].begin()->first)) {
      kind = 1;
    }
    if (kind < 0) break;
    NodeId node_id = heads_[kind].begin()->second;
    Node& node = *nodes_[node_id];
    AppId app_id = node.queue[kind].begin()->second;
    node.queue[kind].erase(node.queue[kind].begin());
    App& a = *apps_.at(app_id);
    Replica* r = nullptr;
    for (Replica& c : a.replicas) {
      if (c.node == node_id) r = &c;
    }
    HC_CHECK(r != nullptr && r->where == Replica::kQueued && !a.snaps.empty(),
             "queued transfer of app '" + a.name + "' to '" + node.name + "' has no state");
    const App::Snap& newest = a.snaps.back();
    Task t;
    t.kind = Task::kTransfer;
    t.app = a.name;
    t.replica = r->name;
    t.full = kind == 1;
    t.snapshot_id = newest.s.id;
    if (t.full) {
      t.expected_bytes = newest.s.logical_bytes;
    } else {
      t.base_id = r->newest_id;
      t.expected_bytes = newest.cum_delta - a.snaps[a.index_of.at(r->newest_id)].cum_delta;
    }
    r->where = Replica::kInFlight;
    r->full = t.full;
    r->sending = t.snapshot_id;
    r->progress = 0;
    r->expected = t.expected_bytes;
    r->issued_ms = now_ms;
    ++node.in_flight;
    ++transfers_in_flight_;
    if (t.full) ++full_in_flight_;
    UpdateHeads(node_id);
    tasks.push_back(std::move(t));
  }
  return tasks;
}

void Scheduler::CheckDone(const std::string& app, int64_t now_ms, std::optional<SnapshotMade> made,
                          const Status& error) {
  App* a = FindApp(app);
  if (a == nullptr || !a->check_in_flight) {
    auto o = orphans_.find({app, ""});
    if (o != orphans_.end()) {
      orphans_.erase(o);
      --checks_in_flight_;
    }
    return;
  }
  a->check_in_flight = false;
  --checks_in_flight_;
  if (!error.ok()) {
    a->check_error = error;
    ++a->check_failures;
    a->due_ms = now_ms + Backoff(a->check_failures);
  } else {
    a->check_error = Status::Ok();
    a->check_failures = 0;
    a->last_checked_ms = a->check_issued_ms;
    if (made && !a->index_of.contains(made->id)) {
      uint64_t cum = (a->snaps.empty() ? 0 : a->snaps.back().cum_delta) + made->delta_bytes;
      a->index_of[made->id] = a->snaps.size();
      a->snaps.push_back({.s = {.id = std::move(made->id),
                                .covers_ms = a->check_issued_ms,
                                .delta_bytes = made->delta_bytes,
                                .logical_bytes = made->logical_bytes},
                          .confirmed_ms = a->check_issued_ms,
                          .cum_delta = cum});
      for (Replica& r : a->replicas) Reevaluate(*a, r);
    } else if (!a->snaps.empty()) {
      // No change since the newest snapshot: it holds every write made
      // before this check was issued.
      App::Snap& newest = a->snaps.back();
      newest.confirmed_ms = std::max(newest.confirmed_ms, a->check_issued_ms);
    }
    // From the issue time, so the cadence does not drift by the check's
    // duration; a check slower than the interval makes the next one due now.
    a->due_ms = a->check_issued_ms + a->interval_ms;
  }
  checks_due_.insert({a->due_ms, a->id});
}

void Scheduler::TransferProgress(const std::string& app, const std::string& replica,
                                 uint64_t bytes) {
  App* a = FindApp(app);
  if (a == nullptr) return;
  Replica* r = FindReplica(*a, replica);
  if (r != nullptr && r->where == Replica::kInFlight) r->progress = bytes;
}

void Scheduler::TransferDone(const std::string& app, const std::string& replica, int64_t now_ms,
                             const Status& error, uint64_t bytes) {
  App* a = FindApp(app);
  Replica* r = a == nullptr ? nullptr : FindReplica(*a, replica);
  if (r == nullptr || r->where != Replica::kInFlight) {
    auto o = orphans_.find({app, replica});
    if (o != orphans_.end() && !o->second.check) {
      ReleaseTransfer(o->second.node, o->second.full);
      orphans_.erase(o);
    }
    return;
  }
  ReleaseTransfer(r->node, r->full);
  r->where = Replica::kIdle;
  r->progress = bytes;
  if (error.ok()) {
    r->known = Replica::kHas;
    r->newest_id = r->sending;
    r->failures = 0;
    Reevaluate(*a, *r);
  } else {
    ++r->failures;
    r->last_error = error;
    r->last_error_ms = now_ms;
    r->retry_at = now_ms + Backoff(r->failures);
    r->where = Replica::kRetry;
    retries_.insert({r->retry_at, a->id, r->node});
  }
}

std::optional<int64_t> Scheduler::NextWakeMs(int64_t now_ms) const {
  std::optional<int64_t> wake;
  auto consider = [&](int64_t t) {
    t = std::max(t, now_ms);
    if (!wake || t < *wake) wake = t;
  };
  if (checks_in_flight_ < limits_.max_checks && !checks_due_.empty()) {
    consider(checks_due_.begin()->first);
  }
  if (!retries_.empty()) consider(std::get<0>(*retries_.begin()));
  if (transfers_in_flight_ < limits_.max_transfers &&
      (!heads_[0].empty() || (!heads_[1].empty() && full_in_flight_ < limits_.max_full_sends))) {
    consider(now_ms);
  }
  return wake;
}

ReplicaLag Scheduler::RowFor(const App& a, const Replica* r, int64_t now_ms) const {
  ReplicaLag row;
  row.app = a.name;
  row.state = ReplicaLag::kInSync;
  if (!a.snaps.empty()) row.primary_newest = a.snaps.back().s;
  row.last_checked_ms = a.last_checked_ms;
  row.check_error = a.check_error;
  row.check_failures = a.check_failures;
  if (!a.check_in_flight) row.next_check_ms = a.due_ms == kDueNow ? now_ms : a.due_ms;
  if (r == nullptr) return row;

  row.replica = r->name;
  row.last_error = r->blocked.ok() ? r->last_error : r->blocked;
  row.last_error_ms = r->last_error_ms;
  row.consecutive_failures = r->failures;
  row.full_send = r->full;
  row.sending_snapshot = r->sending;
  row.progress_bytes = r->progress;
  row.expected_bytes = r->expected;
  if (r->known == Replica::kNone && !a.snaps.empty()) {
    row.lag_ms = now_ms - a.snaps.front().s.covers_ms;
    row.lag_bytes = a.snaps.back().s.logical_bytes;
  } else if (r->known == Replica::kHas) {
    row.replica_newest = r->newest_id;
    auto it = a.index_of.find(r->newest_id);
    if (it != a.index_of.end()) {
      const App::Snap& has = a.snaps[it->second];
      row.rpo_ms = now_ms - has.confirmed_ms;
      if (it->second + 1 < a.snaps.size()) {
        row.lag_ms = now_ms - a.snaps[it->second + 1].s.covers_ms;
        row.lag_bytes = a.snaps.back().cum_delta - has.cum_delta;
      }
    }
  }
  switch (r->where) {
    case Replica::kInFlight: row.state = ReplicaLag::kTransferring; break;
    case Replica::kRetry:
      row.state = ReplicaLag::kRetrying;
      row.retry_at_ms = r->retry_at;
      break;
    case Replica::kQueued: row.state = ReplicaLag::kPending; break;
    case Replica::kIdle:
      if (!r->blocked.ok()) {
        row.state = ReplicaLag::kBlocked;
      } else if (r->known == Replica::kUnknown) {
        row.state = ReplicaLag::kUnknown;
      }
      break;
  }
  return row;
}

std::vector<ReplicaLag> Scheduler::Lag(int64_t now_ms) const {
  std::vector<const App*> apps;
  apps.reserve(apps_.size());
  for (const auto& [id, a] : apps_) apps.push_back(a.get());
  std::sort(apps.begin(), apps.end(), [](const App* x, const App* y) { return x->name < y->name; });
  std::vector<ReplicaLag> rows;
  for (const App* a : apps) {
    if (a->replicas.empty()) {
      rows.push_back(RowFor(*a, nullptr, now_ms));
      continue;
    }
    std::vector<const Replica*> reps;
    for (const Replica& r : a->replicas) reps.push_back(&r);
    std::sort(reps.begin(), reps.end(),
              [](const Replica* x, const Replica* y) { return x->name < y->name; });
    for (const Replica* r : reps) rows.push_back(RowFor(*a, r, now_ms));
  }
  return rows;
}

}  // namespace hc::replication
