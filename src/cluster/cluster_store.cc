#include "cluster/cluster_store.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <nlohmann/json.hpp>

namespace hc::cluster {
namespace {

using json = nlohmann::json;

// etcd's default --max-txn-ops is 128.
constexpr size_t kMaxOpsPerTxn = 120;

std::string AssignmentJson(const Placement& p, const AppDef& a) {
  return "{\"placement\":" + ToJson(p) + ",\"app\":" + ToJson(a) + "}";
}

std::string Tail(const std::string& key, const std::string& prefix) {
  return key.compare(0, prefix.size(), prefix) == 0 ? key.substr(prefix.size()) : std::string();
}

}  // namespace

ClusterStore::ClusterStore(EtcdClient* etcd, std::string prefix)
    : etcd_(etcd), prefix_(std::move(prefix)) {
  if (prefix_.empty() || prefix_.back() != '/') prefix_ += '/';
}

Status ClusterStore::RegisterNode(const NodeInfo& n, int64_t lease) {
  return etcd_->Put(NodeKey(n.id), ToJson(n), lease).status();
}

Result<std::vector<NodeInfo>> ClusterStore::ListNodes() {
  HC_ASSIGN_OR_RETURN(auto r, etcd_->GetPrefix(NodesPrefix()));
  std::vector<NodeInfo> out;
  for (const auto& kv : r.kvs)
    if (auto n = NodeInfoFromJson(kv.value); n.ok()) out.push_back(std::move(*n));
  return out;
}

Result<std::optional<std::string>> ClusterStore::GetCaCert() {
  HC_ASSIGN_OR_RETURN(auto r, etcd_->Get(CaKey()));
  if (r.kvs.empty()) return std::optional<std::string>();
  return std::optional<std::string>(r.kvs[0].value);
}

Result<std::string> ClusterStore::CreateCaCertIfAbsent(const std::string& pem) {
  HC_ASSIGN_OR_RETURN(auto t, etcd_->Txn({Compare::Absent(CaKey())}, {TxnOp::Put(CaKey(), pem)},
                                         {TxnOp::Get(CaKey())}));
  if (t.succeeded) return pem;
  if (t.ranges.empty() || t.ranges[0].kvs.empty())
    return Internal("etcd: the CA transaction failed but returned no CA");
  return t.ranges[0].kvs[0].value;
}

Status ClusterStore::CreateJoinToken(const JoinTokenRecord& t, int64_t ttl_seconds) {
  HC_ASSIGN_OR_RETURN(int64_t lease, etcd_->GrantLease(ttl_seconds));
  HC_ASSIGN_OR_RETURN(auto r, etcd_->Txn({Compare::Absent(JoinTokenKey(t.id))},
                                         {TxnOp::Put(JoinTokenKey(t.id), ToJson(t), lease)}));
  if (!r.succeeded) {
    (void)etcd_->RevokeLease(lease);
    return AlreadyExists("a join token with id " + t.id + " exists");
  }
  return Status::Ok();
}

Result<std::optional<JoinTokenRecord>> ClusterStore::GetJoinToken(const std::string& id) {
  HC_ASSIGN_OR_RETURN(auto r, etcd_->Get(JoinTokenKey(id)));
  if (r.kvs.empty()) return std::optional<JoinTokenRecord>();
  HC_ASSIGN_OR_RETURN(auto t, JoinTokenRecordFromJson(r.kvs[0].value));
  return std::optional<JoinTokenRecord>(std::move(t));
}

Status ClusterStore::DeleteJoinToken(const std::string& id) {
  HC_ASSIGN_OR_RETURN(auto t,
                      etcd_->Txn({Compare::CreateRevision(JoinTokenKey(id), Compare::kGreater, 0)},
                                 {TxnOp::Delete(JoinTokenKey(id))}));
  if (!t.succeeded) return NotFound("no join token with id " + id + " (expired already?)");
  return Status::Ok();
}

Status ClusterStore::CreateApp(const AppDef& a) {
  HC_ASSIGN_OR_RETURN(auto t, etcd_->Txn({Compare::Absent(AppKey(a.name))},
                                         {TxnOp::Put(AppKey(a.name), ToJson(a))}));
  if (!t.succeeded)
    return AlreadyExists("an app named '" + a.name +
                         "' already exists; pick another name or delete it first");
  return Status::Ok();
}

Status ClusterStore::DeleteApp(const std::string& name) {
  HC_ASSIGN_OR_RETURN(auto t,
                      etcd_->Txn({Compare::CreateRevision(AppKey(name), Compare::kGreater, 0)},
                                 {TxnOp::Delete(AppKey(name))}));
  if (!t.succeeded) return NotFound("no app named '" + name + "'");
  return Status::Ok();
}

Status ClusterStore::PutHold(const std::string& app, int seconds, const std::string& by) {
  if (seconds < 1 || seconds > 300)
    return InvalidArgument("a hold lasts 1 to 300 seconds, not " + std::to_string(seconds));
  HC_ASSIGN_OR_RETURN(int64_t lease, etcd_->GrantLease(seconds));
  int64_t until = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count() +
                  seconds;
  nlohmann::json j = {{"app", app}, {"until_unix", until}, {"by", by}};
  HC_ASSIGN_OR_RETURN(auto rev, etcd_->Put(prefix_ + "holds/" + app, j.dump(), lease));
  (void)rev;
  return Status::Ok();
}

Status ClusterStore::ReleaseHold(const std::string& app) {
  HC_ASSIGN_OR_RETURN(auto rev, etcd_->Delete(prefix_ + "holds/" + app));
  (void)rev;
  return Status::Ok();
}

Status ClusterStore::RequestMove(const MoveRecord& m) {
  HC_ASSIGN_OR_RETURN(auto old, GetMove(m.app));
  Compare c = Compare::Absent(MoveKey(m.app));
  if (old) {
    if (!old->first.finished())
      return Conflict("app '" + m.app + "' is already moving to '" + old->first.target + "' (" +
                      old->first.state + (old->first.message.empty() ? "" : ": ") +
                      old->first.message + "); wait for it to end (hc app move-status " + m.app +
                      ")");
    c = Compare::ModRevision(MoveKey(m.app), Compare::kEqual, old->second);
  }
  HC_ASSIGN_OR_RETURN(auto t, etcd_->Txn({c}, {TxnOp::Put(MoveKey(m.app), ToJson(m))}, {}));
  if (!t.succeeded) return Conflict("another move of '" + m.app + "' was requested just now");
  return Status::Ok();
}

Result<std::optional<std::pair<MoveRecord, int64_t>>> ClusterStore::GetMove(
    const std::string& app) {
  HC_ASSIGN_OR_RETURN(auto r, etcd_->Get(MoveKey(app)));
  for (const auto& kv : r.kvs) {
    HC_ASSIGN_OR_RETURN(auto m, MoveRecordFromJson(kv.value));
    return std::optional<std::pair<MoveRecord, int64_t>>(std::make_pair(m, kv.mod_revision));
  }
  return std::optional<std::pair<MoveRecord, int64_t>>();
}

Status ClusterStore::UpdateMove(const MoveRecord& m, const Compare& guard) {
  HC_ASSIGN_OR_RETURN(auto t, etcd_->Txn({guard}, {TxnOp::Put(MoveKey(m.app), ToJson(m))}, {}));
  if (!t.succeeded) return Conflict("not the leader any more");
  return Status::Ok();
}

Status ClusterStore::SetDrain(const std::string& node, bool drained, const std::string& by) {
  if (!drained) {
    HC_ASSIGN_OR_RETURN(auto rev, etcd_->Delete(DrainKey(node)));
    (void)rev;
    return Status::Ok();
  }
  nlohmann::json j = {{"node", node},
                      {"by", by},
                      {"since_unix", std::chrono::duration_cast<std::chrono::seconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count()}};
  HC_ASSIGN_OR_RETURN(auto rev, etcd_->Put(DrainKey(node), j.dump()));
  (void)rev;
  return Status::Ok();
}

Status ClusterStore::RecordEvent(const Event& e) {
  static std::atomic<uint64_t> seq{0};
  char key[64];
  uint64_t n = seq.fetch_add(1);
  std::snprintf(key, sizeof key, "%013lld-", static_cast<long long>(e.time_ms));
  std::string k = EventsPrefix() + key + e.node + "-" + std::to_string(n);
  HC_ASSIGN_OR_RETURN(auto rev, etcd_->Put(k, ToJson(e)));
  (void)rev;
  if (n % 64 != 0) return Status::Ok();
  // Now and then: drop the oldest beyond kMaxEvents (keys sort by time).
  HC_ASSIGN_OR_RETURN(auto keys, etcd_->GetPrefix(EventsPrefix(), 0, 0, /*keys_only=*/true));
  if (keys.kvs.size() <= kMaxEvents) return Status::Ok();
  size_t excess = keys.kvs.size() - kMaxEvents;
  for (size_t i = 0; i < excess; i += 100) {
    std::vector<TxnOp> ops;
    for (size_t j = i; j < std::min(excess, i + 100); ++j)
      ops.push_back(TxnOp::Delete(keys.kvs[j].key));
    HC_ASSIGN_OR_RETURN(auto t, etcd_->Txn({}, ops));
    (void)t;
  }
  return Status::Ok();
}

Result<std::vector<Event>> ClusterStore::ListEvents(const std::string& app, size_t limit) {
  HC_ASSIGN_OR_RETURN(auto r, etcd_->GetPrefix(EventsPrefix()));
  std::vector<Event> out;
  for (const auto& kv : r.kvs) {
    auto e = EventFromJson(kv.value);
    if (!e.ok()) continue;  // written by a newer version, or damaged: skipped
    if (!app.empty() && e->app != app) continue;
    out.push_back(std::move(*e));
  }
  if (limit != 0 && out.size() > limit)
    out.erase(out.begin(), out.end() - static_cast<long>(limit));
  return out;
}

Status ClusterStore::PutCertificate(const AppCertificate& c) {
  HC_ASSIGN_OR_RETURN(auto rev, etcd_->Put(CertsPrefix() + c.app, ToJson(c)));
  (void)rev;
  return Status::Ok();
}

Status ClusterStore::DeleteCertificate(const std::string& app) {
  HC_ASSIGN_OR_RETURN(
      auto t, etcd_->Txn({Compare::CreateRevision(CertsPrefix() + app, Compare::kGreater, 0)},
                         {TxnOp::Delete(CertsPrefix() + app)}));
  if (!t.succeeded) return NotFound("app '" + app + "' has no certificate");
  return Status::Ok();
}

Result<std::optional<AppCertificate>> ClusterStore::GetCertificate(const std::string& app) {
  HC_ASSIGN_OR_RETURN(auto r, etcd_->Get(CertsPrefix() + app));
  if (r.kvs.empty()) return std::optional<AppCertificate>();
  HC_ASSIGN_OR_RETURN(auto c, AppCertificateFromJson(r.kvs[0].value));
  return std::optional<AppCertificate>(std::move(c));
}

Result<std::optional<AppDef>> ClusterStore::GetApp(const std::string& name) {
  HC_ASSIGN_OR_RETURN(auto r, etcd_->Get(AppKey(name)));
  if (r.kvs.empty()) return std::optional<AppDef>();
  HC_ASSIGN_OR_RETURN(auto a, AppDefFromJson(r.kvs[0].value));
  return std::optional<AppDef>(std::move(a));
}

void ClusterStore::ApplyEvents(const std::vector<WatchEvent>& events, ClusterView* view) const {
  for (const auto& e : events) {
    const std::string& k = e.kv.key;
    bool del = e.type == WatchEvent::kDelete;
    if (k.starts_with(NodesPrefix())) {
      std::string id = k.substr(NodesPrefix().size());
      if (del) {
        view->nodes.erase(id);
      } else if (auto n = NodeInfoFromJson(e.kv.value); n.ok()) {
        n->drained = n->drained || view->drained.count(id) > 0;
        view->nodes[id] = std::move(*n);
      }
    } else if (k.starts_with(DrainPrefix())) {
      std::string id = k.substr(DrainPrefix().size());
      if (del)
        view->drained.erase(id);
      else
        view->drained.insert(id);
      if (auto n = view->nodes.find(id); n != view->nodes.end()) n->second.drained = !del;
    } else if (k.starts_with(MovesPrefix())) {
      std::string app = k.substr(MovesPrefix().size());
      if (del) {
        view->moves.erase(app);
        view->move_mod_revision.erase(app);
      } else if (auto m = MoveRecordFromJson(e.kv.value); m.ok()) {
        view->moves[app] = std::move(*m);
        view->move_mod_revision[app] = e.kv.mod_revision;
      }
    } else if (k.starts_with(AppsPrefix())) {
      std::string name = k.substr(AppsPrefix().size());
      if (del) {
        view->apps.erase(name);
      } else if (auto a = AppDefFromJson(e.kv.value); a.ok()) {
        view->apps[name] = std::move(*a);
      }
    } else if (k.starts_with(PlacementsPrefix())) {
      std::string app = k.substr(PlacementsPrefix().size());
      auto known = view->placement_mod_revision.find(app);
      if (known != view->placement_mod_revision.end() && known->second > e.kv.mod_revision)
        continue;  // older than what the view already has (e.g. the leader's own write)
      if (del) {
        view->placements.erase(app);
        view->placement_mod_revision.erase(app);
      } else if (auto p = PlacementFromJson(e.kv.value); p.ok()) {
        view->placements[app] = std::move(*p);
        view->placement_mod_revision[app] = e.kv.mod_revision;
      }
    }
    view->revision = std::max(view->revision, e.kv.mod_revision);
  }
}

Result<ClusterView> ClusterStore::LoadView() {
  HC_ASSIGN_OR_RETURN(
      auto t, etcd_->Txn({}, {TxnOp::GetPrefix(NodesPrefix()), TxnOp::GetPrefix(AppsPrefix()),
                              TxnOp::GetPrefix(PlacementsPrefix()), TxnOp::Get(LeaderKey()),
                              TxnOp::GetPrefix(DrainPrefix()), TxnOp::GetPrefix(MovesPrefix())}));
  if (t.ranges.size() != 6) return Internal("etcd: read transaction returned too few results");
  ClusterView v;
  v.revision = t.revision;
  for (const auto& kv : t.ranges[4].kvs) v.drained.insert(kv.key.substr(DrainPrefix().size()));
  for (const auto& kv : t.ranges[5].kvs) {
    auto m = MoveRecordFromJson(kv.value);
    if (!m.ok()) continue;
    v.move_mod_revision[m->app] = kv.mod_revision;
    v.moves[m->app] = std::move(*m);
  }
  for (const auto& kv : t.ranges[0].kvs) {
    auto n = NodeInfoFromJson(kv.value);
    if (!n.ok()) continue;
    n->drained = n->drained || v.drained.count(n->id) > 0;
    v.nodes[n->id] = std::move(*n);
  }
  for (const auto& kv : t.ranges[1].kvs) {
    auto a = AppDefFromJson(kv.value);
    if (a.ok()) v.apps[a->name] = std::move(*a);
  }
  for (const auto& kv : t.ranges[2].kvs) {
    auto p = PlacementFromJson(kv.value);
    if (!p.ok()) continue;
    v.placement_mod_revision[p->app] = kv.mod_revision;
    v.placements[p->app] = std::move(*p);
  }
  if (!t.ranges[3].kvs.empty()) v.leader = t.ranges[3].kvs[0].value;
  return v;
}

Result<size_t> ClusterStore::ApplyPlacements(const std::vector<PlacementWrite>& writes,
                                             const Compare& guard, ClusterView* view) {
  size_t applied = 0;
  size_t i = 0;
  while (i < writes.size()) {
    std::vector<Compare> cmps = {guard};
    std::vector<TxnOp> ops;
    size_t first = i;
    while (i < writes.size()) {
      const PlacementWrite& w = writes[i];
      std::vector<TxnOp> mine;
      const std::string& app = w.placement.app;
      std::vector<std::string> now_nodes;
      if (w.kind != PlacementWrite::kDelete) {
        if (!w.app) return InvalidArgument("placement write for '" + app + "' lacks the app spec");
        now_nodes.push_back(w.placement.primary);
        for (const auto& r : w.placement.replicas) now_nodes.push_back(r);
        mine.push_back(TxnOp::Put(PlacementKey(app), ToJson(w.placement)));
        std::string value = AssignmentJson(w.placement, *w.app);
        for (const auto& n : now_nodes) mine.push_back(TxnOp::Put(AssignKey(n, app), value));
      } else {
        mine.push_back(TxnOp::Delete(PlacementKey(app)));
      }
      for (const auto& n : w.previous_nodes)
        if (std::find(now_nodes.begin(), now_nodes.end(), n) == now_nodes.end())
          mine.push_back(TxnOp::Delete(AssignKey(n, app)));
      if (!ops.empty() && ops.size() + mine.size() > kMaxOpsPerTxn) break;
      if (w.kind == PlacementWrite::kCreate)
        cmps.push_back(Compare::Absent(PlacementKey(app)));
      else
        cmps.push_back(
            Compare::ModRevision(PlacementKey(app), Compare::kEqual, w.expected_mod_revision));
      for (auto& o : mine) ops.push_back(std::move(o));
      i++;
    }
    HC_ASSIGN_OR_RETURN(auto t, etcd_->Txn(cmps, ops));
    if (!t.succeeded)
      return Conflict("placement changed under the leader (or leadership lost); re-reading");
    for (size_t k = first; k < i; k++) {
      const PlacementWrite& w = writes[k];
      if (!view) continue;
      if (w.kind == PlacementWrite::kDelete) {
        view->placements.erase(w.placement.app);
        view->placement_mod_revision.erase(w.placement.app);
      } else {
        view->placements[w.placement.app] = w.placement;
        view->placement_mod_revision[w.placement.app] = t.revision;
      }
    }
    if (view) view->revision = std::max(view->revision, t.revision);
    applied += i - first;
  }
  return applied;
}

Result<Assignment> ClusterStore::ParseAssignment(const std::string& node,
                                                 std::string_view text) const {
  json j = json::parse(text, nullptr, false);
  if (!j.is_object() || !j.contains("placement") || !j.contains("app"))
    return Corrupt("assignment is not {placement, app}");
  Assignment a;
  HC_ASSIGN_OR_RETURN(a.placement, PlacementFromJson(j["placement"].dump()));
  HC_ASSIGN_OR_RETURN(a.app, AppDefFromJson(j["app"].dump()));
  a.primary_here = a.placement.primary == node;
  return a;
}

std::string ClusterStore::AssignKeyApp(const std::string& node, const std::string& key) const {
  return Tail(key, AssignPrefix(node));
}

Result<std::vector<Assignment>> ClusterStore::LoadAssignments(const std::string& node,
                                                              int64_t* revision) {
  HC_ASSIGN_OR_RETURN(auto r, etcd_->GetPrefix(AssignPrefix(node)));
  std::vector<Assignment> out;
  for (const auto& kv : r.kvs) {
    auto a = ParseAssignment(node, kv.value);
    if (a.ok()) out.push_back(std::move(*a));
  }
  if (revision) *revision = r.revision;
  return out;
}

Status ClusterStore::ReportObserved(const std::string& node,
                                    const std::vector<AppObserved>& observed,
                                    const std::vector<std::string>& gone, int64_t lease) {
  std::vector<TxnOp> ops;
  auto flush = [&]() -> Status {
    if (ops.empty()) return Status::Ok();
    auto t = etcd_->Txn({}, ops);
    ops.clear();
    return t.status();
  };
  for (const auto& o : observed) {
    ops.push_back(TxnOp::Put(StatusKey(node, o.app), ToJson(o), lease));
    if (ops.size() >= kMaxOpsPerTxn) HC_RETURN_IF_ERROR(flush());
  }
  for (const auto& g : gone) {
    ops.push_back(TxnOp::Delete(StatusKey(node, g)));
    if (ops.size() >= kMaxOpsPerTxn) HC_RETURN_IF_ERROR(flush());
  }
  return flush();
}

Result<std::vector<AppObserved>> ClusterStore::ListObserved(const std::string& app) {
  HC_ASSIGN_OR_RETURN(auto r, etcd_->GetPrefix(StatusPrefix()));
  std::vector<AppObserved> out;
  for (const auto& kv : r.kvs) {
    auto o = AppObservedFromJson(kv.value);
    if (!o.ok()) continue;
    if (!app.empty() && o->app != app) continue;
    out.push_back(std::move(*o));
  }
  return out;
}

}  // namespace hc::cluster
