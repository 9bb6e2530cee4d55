// Retention (src/replication/retention.h): ParseRetention sees grid text from
// app specs and the cluster default (API input). Input: the grid text, then
// optionally a NUL and a plan scenario: 8 bytes `now`, 8 bytes a later time
// step, then 5 bytes per snapshot (flags: bit 0 protect, bits 1-2 unit of
// the age s/min/h/d, bit 3 future, bit 4 raw extreme; 4 bytes magnitude).
// Must never crash, and:
//  - a parsed grid is valid (1..16 tiers, ascending ages <= 100y, bucket <=
//    age, buckets never finer with age), its text is canonical and
//    parse(format(g)) == g; a rejection is kInvalidArgument with a message;
//  - the plan keeps or removes every input exactly once, keeps the newest,
//    every protected id and every future-dated snapshot, gives a reason per
//    kept id, and lists both sides oldest first;
//  - stability: planning again later over what was kept never removes a
//    snapshot the first plan kept by thinning while it is still in that tier.
#include <stddef.h>
#include <stdint.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "replication/retention.h"

namespace {

using hc::replication::RetentionGrid;
using hc::replication::RetentionInput;
using hc::replication::RetentionPlan;

void Require(bool cond) {
  if (!cond) std::abort();
}

int64_t Load64(const uint8_t* p) {
  uint64_t v = 0;
  std::memcpy(&v, p, 8);
  return static_cast<int64_t>(v);
}

size_t TierOf(const RetentionGrid& g, int64_t created, int64_t now) {
  int64_t age = 0;
  if (created > now || __builtin_sub_overflow(now, created, &age)) return g.tiers.size();
  size_t t = 0;
  while (t < g.tiers.size() && age > g.tiers[t].age_limit_s) ++t;
  return t;
}

void CheckPlan(const RetentionGrid& g, const std::vector<RetentionInput>& in, int64_t now,
               const std::set<std::string>& protect, const RetentionPlan& plan) {
  Require(plan.keep.size() + plan.remove.size() == in.size());
  Require(plan.reasons.size() == plan.keep.size());
  std::map<std::string, int64_t> created;
  for (const RetentionInput& s : in) created[s.id] = s.created_unix_s;
  std::multiset<std::string> all(plan.keep.begin(), plan.keep.end());
  all.insert(plan.remove.begin(), plan.remove.end());
  std::multiset<std::string> want;
  for (const RetentionInput& s : in) want.insert(s.id);
  Require(all == want);
  std::set<std::string> kept(plan.keep.begin(), plan.keep.end());
  for (const std::string& p : protect) Require(!created.count(p) || kept.count(p));
  for (const RetentionInput& s : in) {
    if (s.created_unix_s > now) Require(kept.count(s.id));
  }
  for (const std::vector<std::string>* side : {&plan.keep, &plan.remove}) {
    for (size_t i = 1; i < side->size(); ++i) {
      Require(created[(*side)[i - 1]] <= created[(*side)[i]]);
    }
  }
  if (!in.empty()) {
    auto newest = std::max_element(in.begin(), in.end(), [](const auto& a, const auto& b) {
      return a.created_unix_s != b.created_unix_s ? a.created_unix_s < b.created_unix_s
                                                  : a.id < b.id;
    });
    Require(kept.count(newest->id));
  }
  for (const std::string& r : plan.reasons) Require(!r.empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const uint8_t* nul = static_cast<const uint8_t*>(std::memchr(data, 0, size));
  size_t text_len = nul ? static_cast<size_t>(nul - data) : size;
  std::string text(reinterpret_cast<const char*>(data), text_len);  // exact size for ASan
  hc::Result<RetentionGrid> g = hc::replication::ParseRetention(text);
  if (!g.ok()) {
    Require(g.status().code() == hc::Code::kInvalidArgument);
    Require(g.status().message().rfind("retention ", 0) == 0);
    return 0;
  }
  const RetentionGrid& grid = *g;
  Require(!grid.tiers.empty() && grid.tiers.size() <= hc::replication::kMaxRetentionTiers);
  for (size_t i = 0; i < grid.tiers.size(); ++i) {
    const auto& t = grid.tiers[i];
    Require(t.age_limit_s > 0 && t.age_limit_s <= hc::replication::kMaxRetentionAgeS);
    Require(t.bucket_s >= 0 && t.bucket_s <= t.age_limit_s);
    if (i > 0) {
      Require(t.age_limit_s > grid.tiers[i - 1].age_limit_s);
      Require(grid.tiers[i - 1].bucket_s == 0 || t.bucket_s >= grid.tiers[i - 1].bucket_s);
    }
  }
  Require(grid.text == hc::replication::FormatRetention(grid));
  hc::Result<RetentionGrid> again = hc::replication::ParseRetention(grid.text);
  Require(again.ok() && *again == grid);

  // The plan scenario.
  const uint8_t* p = nul ? nul + 1 : data + size;
  const uint8_t* end = data + size;
  int64_t now = 1'717'200'000;
  int64_t step = 3600;
  if (end - p >= 16) {
    now = Load64(p);
    step = Load64(p + 8);
    p += 16;
  }
  static constexpr int64_t kUnits[] = {1, 60, 3600, 86400};
  std::vector<RetentionInput> in;
  std::set<std::string> protect;
  for (int i = 0; end - p >= 5 && i < 128; ++i, p += 5) {
    uint8_t flags = p[0];
    uint32_t mag = 0;
    std::memcpy(&mag, p + 1, 4);
    int64_t created;
    if (flags & 16) {
      created = (flags & 8) ? std::numeric_limits<int64_t>::max() - mag
                            : std::numeric_limits<int64_t>::min() + mag;
    } else {
      int64_t delta = static_cast<int64_t>(mag) * kUnits[(flags >> 1) & 3];
      int64_t c = 0;
      bool ovf = (flags & 8) ? __builtin_add_overflow(now, delta, &c)
                             : __builtin_sub_overflow(now, delta, &c);
      created = ovf ? now : c;
    }
    std::string id = "i" + std::to_string(i);
    if (flags & 1) protect.insert(id);
    in.push_back({id, created});
  }
  RetentionPlan plan = hc::replication::PlanRetention(grid, in, now, protect);
  CheckPlan(grid, in, now, protect, plan);

  // Stability: apply the plan, plan again at a later time over the rest.
  int64_t later = 0;
  if (step < 0 || __builtin_add_overflow(now, step, &later)) return 0;
  std::map<std::string, int64_t> created;
  for (const RetentionInput& s : in) created[s.id] = s.created_unix_s;
  std::set<std::string> thinned_keep;
  for (size_t i = 0; i < plan.keep.size(); ++i) {
    if (plan.reasons[i].find("oldest in its bucket") != std::string::npos) {
      thinned_keep.insert(plan.keep[i]);
    }
  }
  std::set<std::string> kept(plan.keep.begin(), plan.keep.end());
  std::vector<RetentionInput> rest;
  for (const RetentionInput& s : in) {
    if (kept.count(s.id)) rest.push_back(s);
  }
  RetentionPlan next = hc::replication::PlanRetention(grid, rest, later, protect);
  CheckPlan(grid, rest, later, protect, next);
  for (const std::string& id : next.remove) {
    if (!thinned_keep.count(id)) continue;
    size_t before = TierOf(grid, created[id], now);
    size_t after = TierOf(grid, created[id], later);
    Require(after != before);  // left the tier it was kept by
  }
  return 0;
}
