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
  explicit Planner(const ClusterView& view) : view_(view) {
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

  std::vector<PlacementChange> Plan(const PlanOptions& opts) {
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
      std::optional<PlacementChange> c = existing == view_.placements.end()
                                             ? PlaceNew(name, def)
                                             : AdjustReplicas(name, def, existing->second);
      if (c) out.push_back(std::move(*c));
    }
    return out;
  }

 private:
  int Find(const std::string& id) const {
    auto it = index_.find(id);
    return it == index_.end() ? kNotLive : it->second;
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

    int primary = Find(p.primary);
    std::vector<int> used_dcs;
    if (primary != kNotLive) used_dcs.push_back(slots_[primary].dc);

    if (held.size() < want) {
      std::vector<int> taken = {primary};
      for (const std::string& r : held) {
        int i = Find(r);
        taken.push_back(i);
        if (i != kNotLive) used_dcs.push_back(slots_[i].dc);
      }
      std::vector<std::string> added = AddReplicas(want - held.size(), taken, used_dcs);
      if (!added.empty()) {
        note("replicas " + std::to_string(held.size()) + " -> " +
             std::to_string(held.size() + added.size()) + ": added " + List(added) +
             Shortfall(held.size() + added.size(), want));
        held.insert(held.end(), added.begin(), added.end());
      }
    } else if (held.size() > want) {
      // Keep the replicas placement would have chosen: live ones first, then
      // data centre spread, then the least busy nodes. The rest go.
      std::vector<int> candidates;
      candidates.reserve(held.size());
      for (const std::string& r : held) candidates.push_back(Find(r));
      std::vector<bool> keep(held.size(), false);
      for (size_t k = 0; k < want; ++k) {
        size_t best = held.size();
        for (size_t h = 0; h < held.size(); ++h) {
          if (keep[h]) continue;
          if (best == held.size() || BetterReplica(candidates[h], candidates[best], used_dcs)) {
            best = h;
          }
        }
        keep[best] = true;
        if (candidates[best] != kNotLive) used_dcs.push_back(slots_[candidates[best]].dc);
      }
      std::vector<std::string> kept, removed;
      for (size_t h = 0; h < held.size(); ++h) {
        if (keep[h]) {
          kept.push_back(held[h]);
        } else {
          removed.push_back(held[h]);
          if (candidates[h] != kNotLive) --slots_[candidates[h]].replicas;
        }
      }
      note("replicas " + std::to_string(held.size()) + " -> " + std::to_string(want) +
           ": removed " + List(removed));
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
  std::vector<Slot> slots_;  // live nodes, by id
  std::unordered_map<std::string_view, int> index_;
};

}  // namespace

std::vector<PlacementChange> PlanPlacements(const ClusterView& view, const PlanOptions& opts) {
  return Planner(view).Plan(opts);
}

}  // namespace hc::scheduler
