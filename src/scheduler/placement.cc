#include "scheduler/placement.h"

#include <algorithm>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace hc::scheduler {

using cluster::AppDef;
using cluster::ClusterView;
using cluster::Placement;

namespace {

constexpr int kNotLive = -1;

// One live node and what the plan has put on it so far. Loads start from
// the existing placements and are updated as each app is placed, so a batch
// of new apps spreads instead of piling onto the node that was emptiest at
// the start.
struct Slot {
  const std::string* id;
  int dc;
  bool drained;
  uint64_t memory;
  uint64_t primary_memory = 0;  // saturating: unvalidated specs may be huge
  uint32_t primaries = 0;
  uint32_t replicas = 0;
};

uint64_t SaturatingAdd(uint64_t a, uint64_t b) {
  return a > std::numeric_limits<uint64_t>::max() - b ? std::numeric_limits<uint64_t>::max()
                                                      : a + b;
}

class Planner {
 public:
  Planner(const ClusterView& view, const PlanOptions& opts) : view_(view), opts_(opts) {
    std::map<std::string_view, int> dcs;
    slots_.reserve(view.nodes.size());
    // view.nodes is ordered by id, so a lower slot index is a lower id.
    for (const auto& [id, n] : view.nodes) {
      auto [it, inserted] = dcs.emplace(n.datacenter, static_cast<int>(dcs.size()));
      index_.emplace(id, static_cast<int>(slots_.size()));
      slots_.push_back(Slot{&id, it->second, n.drained, n.memory_bytes});
    }
    for (const auto& [app, p] : view.placements) {
      auto def = view.apps.find(app);
      if (def == view.apps.end()) continue;  // about to be deleted
      if (int i = Find(p.primary); i != kNotLive) AddPrimary(i, def->second.limits.memory_bytes);
      for (const std::string& r : Normalized(p)) {
        if (int i = Find(r); i != kNotLive) ++slots_[i].replicas;
      }
    }
  }

  std::vector<PlacementChange> Plan() {
    const PlanOptions& opts = opts_;
    std::vector<PlacementChange> out;
    auto full = [&] { return opts.max_changes != 0 && out.size() >= opts.max_changes; };
    // Deletions first: under max_changes they are the cheapest progress and
    // already left the loads above.
    for (const auto& [app, p] : view_.placements) {
      if (view_.apps.count(app) != 0) continue;
      if (full()) return out;
      PlacementChange c;
      c.kind = PlacementChange::kDelete;
      c.placement.app = app;
      c.reason = "app '" + app + "' was deleted";
      out.push_back(std::move(c));
    }
    for (const auto& [name, def] : view_.apps) {
      if (full()) return out;
      auto existing = view_.placements.find(name);
      std::optional<PlacementChange> c;
      if (existing == view_.placements.end())
        c = PlaceNew(name, def);
      else if (Find(existing->second.primary) == kNotLive)
        c = Failover(name, def, existing->second);
      if (!c && existing != view_.placements.end()) c = AdjustReplicas(name, def, existing->second);
      if (c) out.push_back(std::move(*c));
    }
    return out;
  }

 private:
  int Find(const std::string& id) const {
    auto it = index_.find(id);
    return it == index_.end() ? kNotLive : it->second;
  }

  int64_t DepartedMs(const std::string& id) const {
    if (opts_.departed_ms) {
      auto it = opts_.departed_ms->find(id);
      if (it != opts_.departed_ms->end()) return it->second;
    }
    return opts_.now_ms;
  }
  // A move adds its target as a replica before it switches: no trim then.
  bool Moving(const std::string& app) const {
    auto m = view_.moves.find(app);
    return m != view_.moves.end() && !m->second.finished();
  }

  // A replica on a node that is gone but may come back soon.
  bool Graced(const std::string& id) const {
    return Find(id) == kNotLive && opts_.now_ms - DepartedMs(id) < opts_.replica_grace_ms;
  }
  bool Forgotten(const std::string& id) const {
    return Find(id) == kNotLive && opts_.now_ms - DepartedMs(id) >= opts_.forget_departed_ms;
  }

  // The live replica that takes over from a primary whose node is gone.
  std::optional<PlacementChange> Failover(const std::string& name, const AppDef& def,
                                          const Placement& p) {
    std::vector<std::string> held = Normalized(p);
    std::string dead_dc;
    if (opts_.departed_dc) {
      if (auto d = opts_.departed_dc->find(p.primary); d != opts_.departed_dc->end())
        dead_dc = d->second;
    }
    const std::map<std::string, int64_t>* newest = nullptr;
    if (opts_.newest_snapshot_ns) {
      if (auto n = opts_.newest_snapshot_ns->find(name); n != opts_.newest_snapshot_ns->end())
        newest = &n->second;
    }
    auto newest_of = [&](const std::string& id) -> int64_t {
      if (!newest) return -1;
      auto it = newest->find(id);
      return it == newest->end() ? -1 : it->second;
    };
    int best = kNotLive;
    std::string best_id;
    for (const std::string& r : held) {
      int i = Find(r);
      if (i == kNotLive) continue;
      if (best == kNotLive) {
        best = i;
        best_id = r;
        continue;
      }
      const Slot& a = slots_[i];
      const Slot& b = slots_[best];
      bool better;
      bool sa = !dead_dc.empty() && view_.nodes.at(r).datacenter == dead_dc;
      bool sb = !dead_dc.empty() && view_.nodes.at(best_id).datacenter == dead_dc;
      if (sa != sb) {
        better = sa;
      } else if (newest_of(r) != newest_of(best_id)) {
        better = newest_of(r) > newest_of(best_id);
      } else if (a.drained != b.drained) {
        better = !a.drained;
      } else {
        better = LessLoaded(i, best, def.limits.memory_bytes);
      }
      if (better) {
        best = i;
        best_id = r;
      }
    }
    if (best == kNotLive) return std::nullopt;  // nothing to promote
    AddPrimary(best, def.limits.memory_bytes);
    --slots_[best].replicas;
    PlacementChange c;
    c.kind = PlacementChange::kUpdate;
    c.failover = true;
    c.failed_primary = p.primary;
    c.placement = p;
    c.placement.app = name;
    c.placement.primary = best_id;
    c.placement.epoch = p.epoch + 1;
    c.placement.state = cluster::PlacementState::kRunning;
    std::vector<std::string> replicas = {p.primary};
    size_t counted = 0;
    std::vector<int> taken = {best};
    std::vector<int> used_dcs = {slots_[best].dc};
    for (const std::string& r : held) {
      if (r == best_id) continue;
      replicas.push_back(r);
      int i = Find(r);
      taken.push_back(i);
      if (i != kNotLive) {
        used_dcs.push_back(slots_[i].dc);
        ++counted;
      } else if (Graced(r)) {
        ++counted;
      }
    }
    std::vector<std::string> added;
    if (counted < def.replicas) added = AddReplicas(def.replicas - counted, taken, used_dcs);
    replicas.insert(replicas.end(), added.begin(), added.end());
    c.placement.replicas = std::move(replicas);
    int64_t ns = newest_of(best_id);
    c.reason = "failover of '" + name + "': node '" + p.primary + "' is gone; promoted '" +
               best_id + "'" +
               (ns > 0 ? " (newest snapshot " + std::to_string(ns / 1'000'000) + " ms)" : "") +
               ", epoch " + std::to_string(c.placement.epoch);
    if (!added.empty()) c.reason += "; new replicas on " + List(added);
    return c;
  }

  void AddPrimary(int i, uint64_t memory) {
    slots_[i].primary_memory = SaturatingAdd(slots_[i].primary_memory, memory);
    ++slots_[i].primaries;
  }

  // The replica list without duplicates and without the primary: the leader
  // never writes those, but a hand-edited key must not make an app look
  // better protected than it is.
  static std::vector<std::string> Normalized(const Placement& p) {
    std::vector<std::string> out;
    for (const std::string& r : p.replicas) {
      if (r != p.primary && std::find(out.begin(), out.end(), r) == out.end()) out.push_back(r);
    }
    return out;
  }

  // Lowest (primary memory + app) / node memory, compared by
  // cross-multiplication: exact, and a node offering no memory sorts last.
  bool LessLoaded(int a, int b, uint64_t app_memory) const {
    const Slot& x = slots_[a];
    const Slot& y = slots_[b];
    using U = unsigned __int128;
    U lx = static_cast<U>(SaturatingAdd(x.primary_memory, app_memory)) * y.memory;
    U ly = static_cast<U>(SaturatingAdd(y.primary_memory, app_memory)) * x.memory;
    if (lx != ly) return lx < ly;
    if (x.primaries != y.primaries) return x.primaries < y.primaries;
    return a < b;
  }

  int ChoosePrimary(uint64_t app_memory) const {
    int best = kNotLive;
    for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
      if (slots_[i].drained) continue;
      if (best == kNotLive || LessLoaded(i, best, app_memory)) best = i;
    }
    return best;
  }

  // Replica rank: a node not live last, then a data centre not in
  // `used_dcs` first, then the fewest replicas held, then the lowest id.
  bool BetterReplica(int a, int b, const std::vector<int>& used_dcs) const {
    if (a == kNotLive || b == kNotLive) return b == kNotLive && a != kNotLive;
    auto used = [&](int i) {
      return std::find(used_dcs.begin(), used_dcs.end(), slots_[i].dc) != used_dcs.end();
    };
    bool ua = used(a), ub = used(b);
    if (ua != ub) return ub;
    if (slots_[a].replicas != slots_[b].replicas) return slots_[a].replicas < slots_[b].replicas;
    return a < b;
  }

  // Adds up to `want` replicas on live nodes not in `taken`; returns the ids.
  std::vector<std::string> AddReplicas(size_t want, std::vector<int> taken,
                                       std::vector<int> used_dcs) {
    std::vector<std::string> added;
    while (added.size() < want) {
      int best = kNotLive;
      for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
        if (std::find(taken.begin(), taken.end(), i) != taken.end()) continue;
        if (best == kNotLive || BetterReplica(i, best, used_dcs)) best = i;
      }
      if (best == kNotLive) break;
      taken.push_back(best);
      ++slots_[best].replicas;
      used_dcs.push_back(slots_[best].dc);
      added.push_back(*slots_[best].id);
    }
    return added;
  }

  static std::string List(const std::vector<std::string>& ids) {
    std::string s;
    for (const std::string& id : ids) s += (s.empty() ? "'" : ", '") + id + "'";
    return s;
  }

  static std::string Shortfall(size_t have, size_t want) {
    if (have >= want) return "";
    return " (" + std::to_string(have) + " of " + std::to_string(want) +
           " replicas: not enough live nodes)";
  }

  std::optional<PlacementChange> PlaceNew(const std::string& name, const AppDef& def) {
    int primary = ChoosePrimary(def.limits.memory_bytes);
    if (primary == kNotLive) return std::nullopt;
    AddPrimary(primary, def.limits.memory_bytes);
    PlacementChange c;
    c.kind = PlacementChange::kCreate;
    c.placement.app = name;
    c.placement.primary = *slots_[primary].id;
    c.placement.epoch = 1;
    c.placement.replicas = AddReplicas(def.replicas, {primary}, {slots_[primary].dc});
    c.reason = "new app '" + name + "': primary on '" + c.placement.primary + "'";
    if (!c.placement.replicas.empty()) c.reason += ", replicas on " + List(c.placement.replicas);
    c.reason += Shortfall(c.placement.replicas.size(), def.replicas);
    return c;
  }

  std::optional<PlacementChange> AdjustReplicas(const std::string& name, const AppDef& def,
                                                const Placement& p) {
    std::vector<std::string> held = Normalized(p);
    const size_t want = def.replicas;
    std::string reason;
    if (held.size() != p.replicas.size()) reason = "dropped duplicate or primary replica entries";
    auto note = [&](const std::string& s) { reason += (reason.empty() ? "" : "; ") + s; };

    // Replicas on nodes gone for very long are forgotten.
    std::vector<std::string> forgotten;
    for (auto it = held.begin(); it != held.end();) {
      if (Forgotten(*it)) {
        forgotten.push_back(*it);
        it = held.erase(it);
      } else {
        ++it;
      }
    }
    if (!forgotten.empty()) note("forgot replicas on nodes gone for long: " + List(forgotten));

    int primary = Find(p.primary);
    std::vector<int> used_dcs;
    if (primary != kNotLive) used_dcs.push_back(slots_[primary].dc);
    size_t live = 0, counted = 0;
    for (const std::string& r : held) {
      if (Find(r) != kNotLive) {
        ++live;
        ++counted;
      } else if (Graced(r)) {
        ++counted;
      }
    }

    if (counted < want) {
      std::vector<int> taken = {primary};
      for (const std::string& r : held) {
        int i = Find(r);
        taken.push_back(i);
        if (i != kNotLive) used_dcs.push_back(slots_[i].dc);
      }
      std::vector<std::string> added = AddReplicas(want - counted, taken, used_dcs);
      if (!added.empty()) {
        note("replicas " + std::to_string(counted) + " -> " +
             std::to_string(counted + added.size()) + ": added " + List(added) +
             Shortfall(counted + added.size(), want));
        held.insert(held.end(), added.begin(), added.end());
      }
    } else if (live > want && !Moving(name)) {
      // Keep the live replicas placement would have chosen: data centre
      // spread, then the least busy nodes. Replicas on nodes that are gone
      // stay listed (see Forgotten).
      std::vector<size_t> live_pos;
      std::vector<int> candidates(held.size(), kNotLive);
      for (size_t h = 0; h < held.size(); ++h) {
        candidates[h] = Find(held[h]);
        if (candidates[h] != kNotLive) live_pos.push_back(h);
      }
      std::vector<bool> keep(held.size(), true);
      for (size_t h : live_pos) keep[h] = false;
      for (size_t k = 0; k < want; ++k) {
        size_t best = held.size();
        for (size_t h : live_pos) {
          if (keep[h]) continue;
          if (best == held.size() || BetterReplica(candidates[h], candidates[best], used_dcs))
            best = h;
        }
        keep[best] = true;
        used_dcs.push_back(slots_[candidates[best]].dc);
      }
      std::vector<std::string> kept, removed;
      for (size_t h = 0; h < held.size(); ++h) {
        if (keep[h]) {
          kept.push_back(held[h]);
        } else {
          removed.push_back(held[h]);
          --slots_[candidates[h]].replicas;
        }
      }
      note("replicas " + std::to_string(live) + " -> " + std::to_string(want) + ": removed " +
           List(removed));
      held = std::move(kept);
    }
    if (reason.empty()) return std::nullopt;
    PlacementChange c;
    c.kind = PlacementChange::kUpdate;
    c.placement = p;
    c.placement.app = name;
    c.placement.replicas = std::move(held);
    c.reason = "app '" + name + "': " + reason;
    return c;
  }

  const ClusterView& view_;
  const PlanOptions& opts_;
  std::vector<Slot> slots_;  // live nodes, by id
  std::unordered_map<std::string_view, int> index_;
};

}  // namespace

std::vector<PlacementChange> PlanPlacements(const ClusterView& view, const PlanOptions& opts) {
  return Planner(view, opts).Plan();
}

std::map<std::string, std::vector<std::string>> FailoverCandidates(const ClusterView& view) {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& [app, p] : view.placements) {
    if (view.nodes.count(p.primary) || !view.apps.count(app)) continue;
    std::vector<std::string> live;
    for (const std::string& r : p.replicas)
      if (r != p.primary && view.nodes.count(r)) live.push_back(r);
    if (!live.empty()) out[app] = std::move(live);
  }
  return out;
}

}  // namespace hc::scheduler
