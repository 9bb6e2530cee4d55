#include "replication/retention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "golden.h"

namespace hc::replication {
namespace {

constexpr int64_t kMin = 60;
constexpr int64_t kHour = 3600;
constexpr int64_t kDay = 86400;
constexpr int64_t kMonth = 30 * kDay;

RetentionGrid MustParse(std::string_view text) {
  Result<RetentionGrid> g = ParseRetention(text);
  EXPECT_TRUE(g.ok()) << text << ": " << g.status().ToString();
  return g.ok() ? *g : RetentionGrid{};
}

// ---- parser -------------------------------------------------------------

TEST(RetentionParse, DefaultGridHasFourTiersAndIsCanonical) {
  RetentionGrid g = MustParse(kDefaultRetention);
  std::vector<RetentionTier> want = {
      {kHour, 0}, {24 * kHour, kHour}, {30 * kDay, kDay}, {12 * kMonth, kMonth}};
  EXPECT_EQ(g.tiers, want);
  EXPECT_EQ(g.text, kDefaultRetention);
  EXPECT_EQ(FormatRetention(g), kDefaultRetention);
}

TEST(RetentionParse, ToleratesCaseSpacingPluralsAndSynonyms) {
  RetentionGrid want = MustParse(kDefaultRetention);
  for (std::string_view text : {
           "1H:KEEP ALL|24 h : 1 per Hour|30d:1 per 1 day|12mo: 1 per months",
           "  60min : keep   all |\t1d: 1 PER 1 hours | 720h: 1 per day | 360d: 1 per 30 days ",
           "3600s: keep all | 24h: 1 per 60 minutes | 30d: 1 per 24 hours | 12m: 1 per month",
           "1h: keep all | 24h: 1 per hour | 30d: 1 per day | 12m: 1 per 1month",
       }) {
    Result<RetentionGrid> g = ParseRetention(text);
    ASSERT_TRUE(g.ok()) << text << ": " << g.status().ToString();
    EXPECT_EQ(*g, want) << text;
  }
}

TEST(RetentionParse, AgeMIsMonthsAndMinIsMinutes) {
  EXPECT_EQ(MustParse("12m: keep all").tiers[0].age_limit_s, 12 * kMonth);
  EXPECT_EQ(MustParse("12 M: keep all").tiers[0].age_limit_s, 12 * kMonth);
  EXPECT_EQ(MustParse("12min: keep all").tiers[0].age_limit_s, 12 * kMin);
  EXPECT_EQ(MustParse("2w: keep all").tiers[0].age_limit_s, 14 * kDay);
  EXPECT_EQ(MustParse("1y: keep all").tiers[0].age_limit_s, 365 * kDay);
  EXPECT_EQ(MustParse("100y: 1 per year").tiers[0].age_limit_s, 100 * 365 * kDay);
}

TEST(RetentionParse, FormatIsCanonicalAndRoundTrips) {
  struct Case {
    const char* in;
    const char* canonical;
  };
  const Case cases[] = {
      {"1d: keep all", "24h: keep all"},
      {"48h: keep all", "2d: keep all"},
      {"1w: keep all", "7d: keep all"},
      {"60d: 1 per 7 days", "2m: 1 per week"},
      {"730d: 1 per 14 days", "2y: 1 per 2 weeks"},
      {"120s: 1 per 60 seconds", "2min: 1 per minute"},
      {"90s: 1 per 45 seconds", "90s: 1 per 45 seconds"},
      {"90min: keep all | 2d: 1 per 15 minutes | 8w: 1 per 6 hours | 2y: 1 per 2 weeks",
       "90min: keep all | 2d: 1 per 15 minutes | 56d: 1 per 6 hours | 2y: 1 per 2 weeks"},
      {"1y: 1 per 365 days", "1y: 1 per year"},
      {"13m: 1 per 13 months", "13m: 1 per 13 months"},
  };
  for (const Case& c : cases) {
    RetentionGrid g = MustParse(c.in);
    EXPECT_EQ(g.text, c.canonical) << c.in;
    EXPECT_EQ(FormatRetention(g), c.canonical) << c.in;
    Result<RetentionGrid> again = ParseRetention(FormatRetention(g));
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_EQ(*again, g) << c.in;
  }
}

TEST(RetentionParse, RejectsBadGridsWithMessagesSayingWhatToWrite) {
  struct Case {
    std::string in;
    std::string message;  // the whole message after "invalid_argument: "
  };
  const Case cases[] = {
      {"", "retention is empty; write e.g. '" + std::string(kDefaultRetention) + "'"},
      {"  \t ", "retention is empty; write e.g. '" + std::string(kDefaultRetention) + "'"},
      {"1h: keep all | 1h: 1 per hour",
       "retention tier 2 '1h: 1 per hour': age must be larger than the previous tier's 1h (tiers "
       "go from young to old)"},
      {"1h: keep all | 24h: 1 per hour | 12h: 1 per hour",
       "retention tier 3 '12h: 1 per hour': age must be larger than the previous tier's 24h "
       "(tiers go from young to old)"},
      {"1h keep all",
       "retention tier 1 '1h keep all': missing ':' between age and rule; write e.g. '24h: 1 per "
       "hour'"},
      {"1h: keep all |",
       "retention tier 2 is empty; remove the extra '|' or write e.g. '24h: 1 per hour'"},
      {"1h: keep all || 24h: 1 per hour",
       "retention tier 2 is empty; remove the extra '|' or write e.g. '24h: 1 per hour'"},
      {"1x: keep all",
       "retention tier 1 '1x: keep all': unknown unit 'x' in the age; write s, min, h, d, w, m "
       "(months) or y, e.g. '90min', '24h', '30d', '12m'"},
      {"30minutes: keep all",
       "retention tier 1 '30minutes: keep all': unknown unit 'minutes' in the age (minutes are "
       "'min'); write s, min, h, d, w, m (months) or y, e.g. '90min', '24h', '30d', '12m'"},
      {"h: keep all",
       "retention tier 1 'h: keep all': the age 'h' must be a number and a unit: s, min, h, d, "
       "w, m (months) or y, e.g. '90min', '24h', '30d', '12m'"},
      {"24: keep all",
       "retention tier 1 '24: keep all': the age '24' must be a number and a unit: s, min, h, "
       "d, w, m (months) or y, e.g. '90min', '24h', '30d', '12m'"},
      {"-1h: keep all",
       "retention tier 1 '-1h: keep all': unexpected character '-' in the age; write s, min, h, "
       "d, w, m (months) or y, e.g. '90min', '24h', '30d', '12m'"},
      {"0h: keep all", "retention tier 1 '0h: keep all': age must be at least 1s"},
      {"101y: 1 per year",
       "retention tier 1 '101y: 1 per year': age is longer than 100 years; write at most '100y'"},
      {"99999999999999999999d: keep all",
       "retention tier 1 '99999999999999999999d: keep all': age is longer than 100 years; write "
       "at most '100y'"},
      {"1h: keep some",
       "retention tier 1 '1h: keep some': cannot read the rule 'keep some'; write 'keep all', '1 "
       "per hour', '1 per day', '1 per 6 hours' (periods: second, minute, hour, day, week, "
       "month, year)"},
      {"24h: 2 per hour",
       "retention tier 1 '24h: 2 per hour': only '1 per ...' is supported; for more, use a "
       "shorter period, e.g. '1 per 30 minutes' instead of '2 per hour'"},
      {"24h: 1 per fortnight",
       "retention tier 1 '24h: 1 per fortnight': unknown period 'fortnight'; write 'keep all', "
       "'1 per hour', '1 per day', '1 per 6 hours' (periods: second, minute, hour, day, week, "
       "month, year)"},
      {"24h: 1 per 0 hours",
       "retention tier 1 '24h: 1 per 0 hours': the period must be at least 1 second"},
      {"1h: 1 per day",
       "retention tier 1 '1h: 1 per day': the period in '1 per day' is longer than the tier's "
       "age 1h; shorten the period or raise the age"},
      {"24h: 1 per 25 hours",
       "retention tier 1 '24h: 1 per 25 hours': the period in '1 per 25 hours' is longer than "
       "the tier's age 24h; shorten the period or raise the age"},
      {"24h: 1 per day | 30d: 1 per hour",
       "retention tier 2 '30d: 1 per hour': keeps more (1 per hour) than the previous tier (1 "
       "per day); older tiers must keep the same or fewer, e.g. '30d: 1 per day'"},
      {"24h: 1 per hour | 30d: keep all",
       "retention tier 2 '30d: keep all': keeps more (keep all) than the previous tier (1 per "
       "hour); older tiers must keep the same or fewer, e.g. '30d: 1 per hour'"},
      {"1h: keep all; 24h: 1 per hour",
       "retention tier 1 '1h: keep all; 24h: 1 per hour': unexpected character ';' in the "
       "rule; tiers are separated by '|', e.g. '1h: keep all | 24h: 1 per hour'"},
  };
  for (const Case& c : cases) {
    Result<RetentionGrid> g = ParseRetention(c.in);
    ASSERT_FALSE(g.ok()) << "accepted: " << c.in;
    EXPECT_EQ(g.status().code(), Code::kInvalidArgument);
    EXPECT_EQ(g.status().message(), c.message) << c.in;
  }
}

TEST(RetentionParse, RejectsUnexpectedCharactersInTheRule) {
  Result<RetentionGrid> g = ParseRetention("1h: keep all | 24h: 1 per hour.");
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("tier 2 '24h: 1 per hour.': unexpected character '.'"),
            std::string::npos)
      << g.status().message();
}

TEST(RetentionParse, EnforcesTierAndLengthLimits) {
  std::string text;
  for (int i = 1; i <= 16; ++i) text += (i > 1 ? " | " : "") + std::to_string(i) + "h: keep all";
  EXPECT_TRUE(ParseRetention(text).ok());
  Result<RetentionGrid> g = ParseRetention(text + " | 17h: keep all");
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().message(), "retention has more than 16 tiers; merge some");
  Result<RetentionGrid> huge = ParseRetention(std::string(5000, ' '));
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.status().message().find("longer than 4096 bytes"), std::string::npos);
  // A long tier is quoted cut short.
  Result<RetentionGrid> junk = ParseRetention("1h " + std::string(200, 'x'));
  ASSERT_FALSE(junk.ok());
  EXPECT_LT(junk.status().message().size(), 200u);
}

// ---- planner: single rules ----------------------------------------------

struct Decision {
  bool kept;
  std::string reason;
};

std::map<std::string, Decision> Decide(const RetentionPlan& plan) {
  std::map<std::string, Decision> out;
  EXPECT_EQ(plan.keep.size(), plan.reasons.size());
  for (size_t i = 0; i < plan.keep.size(); ++i) out[plan.keep[i]] = {true, plan.reasons[i]};
  for (const std::string& id : plan.remove) out[id] = {false, ""};
  return out;
}

constexpr int64_t kNow = 1'717'200'000;  // 2024-06-01T00:00:00Z, a UTC midnight

TEST(RetentionPlan, KeepsNewestEvenWhenOlderThanEveryTier) {
  RetentionGrid g = MustParse("1h: keep all");
  RetentionPlan p =
      PlanRetention(g, {{"old", kNow - 10 * kDay}, {"older", kNow - 20 * kDay}}, kNow, {});
  EXPECT_EQ(p.keep, std::vector<std::string>{"old"});
  EXPECT_EQ(p.reasons, std::vector<std::string>{"newest"});
  EXPECT_EQ(p.remove, std::vector<std::string>{"older"});
}

TEST(RetentionPlan, KeepsProtectedSnapshotsAtAnyAge) {
  RetentionGrid g = MustParse(kDefaultRetention);
  RetentionPlan p = PlanRetention(g,
                                  {{"base", kNow - 3 * 365 * kDay},
                                   {"pin", kNow - 5 * kHour - 10},
                                   {"same-hour", kNow - 5 * kHour - 20},
                                   {"new", kNow - 10}},
                                  kNow, {"base", "pin"});
  auto d = Decide(p);
  EXPECT_EQ(d["base"].reason, "protected");
  EXPECT_EQ(d["pin"].reason, "protected");
  // The pin does not steal the bucket: the oldest of the hour is still kept.
  EXPECT_EQ(d["same-hour"].reason, "tier 2 '24h: 1 per hour': oldest in its bucket");
  EXPECT_EQ(d["new"].reason, "newest");
}

TEST(RetentionPlan, KeepsSnapshotsFromTheFuture) {
  RetentionGrid g = MustParse("1h: 1 per 10 minutes");
  RetentionPlan p =
      PlanRetention(g, {{"a", kNow + 100}, {"b", kNow + 200}, {"c", kNow - 5}}, kNow, {});
  auto d = Decide(p);
  EXPECT_EQ(d["a"].reason, "created in the future (clock skew)");
  EXPECT_EQ(d["b"].reason, "created in the future (clock skew)");
  EXPECT_TRUE(d["c"].kept);  // oldest (only) one of its bucket
  EXPECT_TRUE(p.remove.empty());
}

TEST(RetentionPlan, KeepsTheOldestOfEachBucketAndOrdersOutputOldestFirst) {
  RetentionGrid g = MustParse("24h: 1 per hour");
  // kNow is on the hour: [kNow-2h, kNow-1h) and [kNow-1h, kNow) are buckets.
  std::vector<RetentionInput> in = {{"h1-b", kNow - 2 * kHour + 600},
                                    {"h2-a", kNow - kHour},
                                    {"h1-a", kNow - 2 * kHour + 1},
                                    {"h2-b", kNow - kHour + 1},
                                    {"h2-c", kNow - 60}};
  RetentionPlan p = PlanRetention(g, in, kNow, {});
  EXPECT_EQ(p.keep, (std::vector<std::string>{"h1-a", "h2-a", "h2-c"}));
  EXPECT_EQ(p.remove, (std::vector<std::string>{"h1-b", "h2-b"}));
}

TEST(RetentionPlan, TierBoundaryIsInclusive) {
  RetentionGrid g = MustParse("1h: keep all");
  RetentionPlan p =
      PlanRetention(g, {{"edge", kNow - kHour}, {"past", kNow - kHour - 1}, {"n", kNow}}, kNow, {});
  EXPECT_EQ(p.keep, (std::vector<std::string>{"edge", "n"}));
  EXPECT_EQ(p.remove, std::vector<std::string>{"past"});
}

TEST(RetentionPlan, SurvivesExtremeTimestamps) {
  RetentionGrid g = MustParse(kDefaultRetention);
  const int64_t lo = std::numeric_limits<int64_t>::min(), hi = std::numeric_limits<int64_t>::max();
  for (int64_t now : {lo, int64_t{-1}, int64_t{0}, kNow, hi}) {
    RetentionPlan p = PlanRetention(
        g, {{"lo", lo}, {"neg", -kHour - 7}, {"zero", 0}, {"now", kNow}, {"hi", hi}}, now, {});
    EXPECT_EQ(p.keep.size() + p.remove.size(), 5u);
    EXPECT_EQ(p.keep.back(), "hi");  // newest, and in the future unless now == hi
  }
}

TEST(RetentionPlan, EmptyInputGivesEmptyPlan) {
  RetentionPlan p = PlanRetention(MustParse(kDefaultRetention), {}, kNow, {"x"});
  EXPECT_TRUE(p.keep.empty() && p.remove.empty() && p.reasons.empty());
}

// ---- planner: simulated time --------------------------------------------

// Takes a snapshot every `cadence` seconds from `start` for `duration`,
// applies the plan after each one (as a node does) and checks the
// invariants every `check_every` seconds. Protection mimics a replica whose
// base is the previous snapshot, except while it is "down" (the base stays
// at the snapshot from the outage's start), and a user pin on one snapshot
// for a while.
struct SimOptions {
  std::string grid;
  int64_t start;
  int64_t cadence;
  int64_t duration;
  int64_t check_every;
  int64_t outage_from = -1, outage_to = -1;  // offsets from start
  int64_t pin_at = -1, unpin_at = -1;        // offsets from start
};

struct SimStats {
  int checks = 0;
  size_t max_kept = 0;
  size_t bound = 0;
};

class Sim {
 public:
  explicit Sim(const SimOptions& o) : o_(o), grid_(MustParse(o.grid)) {}

  SimStats Run() {
    const RetentionTier& last = grid_.tiers.back();
    stats_.bound = 2;  // newest + replica base
    int64_t prev = 0;
    for (const RetentionTier& t : grid_.tiers) {
      int64_t band = t.age_limit_s - prev;
      stats_.bound += t.bucket_s == 0 ? band / o_.cadence + 1 : band / t.bucket_s + 2;
      prev = t.age_limit_s;
    }
    std::string base, outage_base, pin;
    int64_t next_check = o_.start;
    for (int64_t now = o_.start; now < o_.start + o_.duration; now += o_.cadence) {
      std::string id = "s" + std::to_string((now - o_.start) / o_.cadence);
      live_.push_back({id, now});
      created_[id] = now;
      int64_t off = now - o_.start;
      std::set<std::string> protect;
      bool down = off >= o_.outage_from && off < o_.outage_to;
      if (down && outage_base.empty()) outage_base = base;
      if (!down) outage_base.clear();
      if (!down) base = live_.size() >= 2 ? live_[live_.size() - 2].id : "";
      if (!(down ? outage_base : base).empty()) protect.insert(down ? outage_base : base);
      if (off == o_.pin_at) pin = id;
      if (off >= o_.unpin_at) pin.clear();
      if (!pin.empty()) protect.insert(pin);

      RetentionPlan plan = PlanRetention(grid_, live_, now, protect);
      if (plan.keep.size() + plan.remove.size() != live_.size()) {
        ADD_FAILURE() << "plan lost snapshots at " << off;
        return stats_;
      }
      CheckStableRemovals(plan, now);
      std::set<std::string> removed(plan.remove.begin(), plan.remove.end());
      std::erase_if(live_, [&](const RetentionInput& s) { return removed.count(s.id) != 0; });
      for (const std::string& r : plan.remove) created_.erase(r);
      stats_.max_kept = std::max(stats_.max_kept, live_.size());

      if (now >= next_check) {
        next_check += o_.check_every;
        Check(plan, now, protect);
        if (::testing::Test::HasFailure()) return stats_;
      }
      (void)last;
    }
    return stats_;
  }

 private:
  // A snapshot kept by a thinned tier at a check stays until it leaves that
  // tier's age band.
  void CheckStableRemovals(const RetentionPlan& plan, int64_t now) {
    for (const std::string& id : plan.remove) {
      auto it = thinned_keep_.find(id);
      if (it == thinned_keep_.end()) continue;
      int64_t age = now - created_.at(id);
      EXPECT_GT(age, grid_.tiers[it->second].age_limit_s)
          << id << " was kept by tier " << it->second + 1 << " and removed at age " << age
          << " while still inside it";
      thinned_keep_.erase(it);
    }
  }

  size_t TierOf(int64_t age) const {
    size_t t = 0;
    while (t < grid_.tiers.size() && age > grid_.tiers[t].age_limit_s) ++t;
    return t;
  }

  // First snapshot the simulation ever created in [from, to), if any <= now.
  std::optional<int64_t> FirstCreated(int64_t from, int64_t to, int64_t now) const {
    int64_t k = from <= o_.start ? 0 : (from - o_.start + o_.cadence - 1) / o_.cadence;
    int64_t t = o_.start + k * o_.cadence;
    if (t >= to || t > now) return std::nullopt;
    return t;
  }

  void Check(const RetentionPlan& plan, int64_t now, const std::set<std::string>& protect) {
    ++stats_.checks;
    const std::string& newest = live_.back().id;
    ASSERT_FALSE(plan.keep.empty());
    EXPECT_EQ(plan.keep.back(), newest);
    for (const std::string& p : protect) EXPECT_EQ(created_.count(p), 1u) << "protected " << p;
    EXPECT_LE(live_.size(), stats_.bound) << "at " << now - o_.start;

    std::set<int64_t> kept_times;
    for (const RetentionInput& s : live_) {
      int64_t age = now - s.created_unix_s;
      size_t tier = TierOf(age);
      EXPECT_TRUE(tier < grid_.tiers.size() || protect.count(s.id) || s.id == newest)
          << s.id << " is " << age << " s old, older than every tier";
      kept_times.insert(s.created_unix_s);
    }
    // Record thinned-tier keeps for the stability check.
    for (size_t i = 0; i < plan.keep.size(); ++i) {
      if (plan.reasons[i].find("oldest in its bucket") == std::string::npos) continue;
      thinned_keep_[plan.keep[i]] = TierOf(now - created_.at(plan.keep[i]));
    }
    // Keep-all tiers hold every snapshot created in their band; thinned
    // tiers hold, for every bucket wholly inside their band, exactly the
    // first snapshot ever created in it (plus protected ones).
    // With nesting buckets (each a multiple of every earlier one) the kept
    // one is the first ever created in the bucket; otherwise some earlier
    // tier may have thinned that one away, but a bucket at least twice the
    // previous one still holds a survivor.
    int64_t prev = 0;
    bool nests = true;
    int64_t prev_bucket = 0;
    for (const RetentionTier& t : grid_.tiers) {
      nests = nests && (prev_bucket == 0 || t.bucket_s % prev_bucket == 0);
      bool coarse = t.bucket_s >= 2 * prev_bucket;
      prev_bucket = t.bucket_s;
      int64_t band_from = now - t.age_limit_s, band_to = now - prev;  // created in [from, to)
      prev = t.age_limit_s;
      if (t.bucket_s == 0) {
        for (std::optional<int64_t> c = FirstCreated(band_from, band_to, now); c;
             c = FirstCreated(*c + 1, band_to, now)) {
          EXPECT_TRUE(kept_times.count(*c)) << "keep-all tier lost the snapshot of " << *c;
        }
        continue;
      }
      int64_t b = t.bucket_s;
      int64_t first_bucket = (band_from + b - 1) / b;  // band_from > 0 here
      for (int64_t k = first_bucket; (k + 1) * b <= band_to; ++k) {
        std::optional<int64_t> first = FirstCreated(k * b, (k + 1) * b, now);
        if (!first) continue;
        auto lo = kept_times.lower_bound(k * b), hi = kept_times.lower_bound((k + 1) * b);
        if (nests) {
          EXPECT_TRUE(kept_times.count(*first))
              << "bucket " << k << " of '" << FormatRetention({{t}, ""})
              << "' lost its first snapshot at " << now - o_.start;
        }
        int unprotected = 0;
        for (auto it = lo; it != hi; ++it) {
          std::string id = "s" + std::to_string((*it - o_.start) / o_.cadence);
          if (!protect.count(id)) ++unprotected;
        }
        bool has_protected = std::distance(lo, hi) > unprotected;
        EXPECT_LE(unprotected, 1) << "bucket " << k << " of tier '" << FormatRetention({{t}, ""})
                                  << "' keeps more than one unprotected snapshot at "
                                  << now - o_.start;
        if (coarse && *first + t.bucket_s / 2 < (k + 1) * b && !has_protected) {
          EXPECT_EQ(unprotected, 1) << "bucket " << k << " of tier '" << FormatRetention({{t}, ""})
                                    << "' is empty at " << now - o_.start;
        }
      }
    }
  }

  SimOptions o_;
  RetentionGrid grid_;
  std::vector<RetentionInput> live_;  // oldest first
  std::unordered_map<std::string, int64_t> created_;
  std::unordered_map<std::string, size_t> thinned_keep_;
  SimStats stats_;
};

// Not on a bucket boundary, so the first buckets are partial.
constexpr int64_t kSimStart = 1'700'000'017;

// Debug and sanitizer builds (CI's ASan run) are ~30x slower: they simulate
// the same spans with sparser snapshots (the rules are the same; only the
// size of the keep-all tier changes).
#ifdef NDEBUG
constexpr int64_t kCadence400Days = 30;
constexpr int64_t kCadence3Hours = 1;
#else
constexpr int64_t kCadence400Days = 600;
constexpr int64_t kCadence3Hours = 20;
#endif

TEST(RetentionSimulation, DefaultGridEvery30SecondsFor400Days) {
  Sim sim({.grid = std::string(kDefaultRetention),
           .start = kSimStart - 17,  // a multiple of 30: snapshots on the minute
           .cadence = kCadence400Days,
           .duration = 400 * kDay,
           .check_every = 3 * kHour + 7 * kMin,
           .outage_from = 50 * kDay + 5 * kHour,
           .outage_to = 60 * kDay,
           .pin_at = (3 * kDay + 11 * kHour + 30) / kCadence400Days * kCadence400Days,
           .unpin_at = 380 * kDay});
  SimStats s = sim.Run();
  EXPECT_GT(s.checks, 3000);
  // 120 (every 30 s) + 1 (last hour) + 24 + 31 + 12 + newest/base/pin; measured at most.
  const size_t last_hour = static_cast<size_t>(kHour / kCadence400Days) + 1;
  EXPECT_LE(s.max_kept, last_hour + 24 + 31 + 12 + 3);
  EXPECT_GE(s.max_kept, last_hour + 23 + 29 + 11);
  std::printf("%lld s for 400 days: at most %zu snapshots kept, %d checks\n",
              static_cast<long long>(kCadence400Days), s.max_kept, s.checks);
}

TEST(RetentionSimulation, DefaultGridEverySecondForThreeHours) {
  Sim sim({.grid = std::string(kDefaultRetention),
           .start = kSimStart,
           .cadence = kCadence3Hours,
           .duration = 3 * kHour,
           .check_every = 97,
           .outage_from = 20 * kMin,
           .outage_to = 2 * kHour + 30 * kMin});
  SimStats s = sim.Run();
  EXPECT_GT(s.checks, 100);
  EXPECT_LE(s.max_kept, static_cast<size_t>(kHour / kCadence3Hours) + 1 + 4);
  std::printf("%lld s for 3 hours: at most %zu snapshots kept, %d checks\n",
              static_cast<long long>(kCadence3Hours), s.max_kept, s.checks);
}

TEST(RetentionSimulation, FineGridWithOddCadenceFor10Days) {
  // A cadence that divides no bucket, buckets that do not divide each
  // other, and a tier starting thinned.
  Sim sim({.grid = "10min: 1 per 45 seconds | 90min: 1 per 7 minutes | 13h: 1 per 50 minutes | "
                   "3d: 1 per 5 hours | 10d: 1 per 2 days",
           .start = kSimStart,
           .cadence = 13,
           .duration = 10 * kDay,
           .check_every = 17 * kMin,
           .outage_from = 2 * kDay,
           .outage_to = 4 * kDay,
           .pin_at = 13 * 1000,
           .unpin_at = 8 * kDay});
  SimStats s = sim.Run();
  EXPECT_GT(s.checks, 800);
  std::printf("13 s for 10 days: at most %zu snapshots kept (bound %zu), %d checks\n", s.max_kept,
              s.bound, s.checks);
}

// ---- golden -------------------------------------------------------------

std::string Utc(int64_t t) {
  time_t tt = static_cast<time_t>(t);
  struct tm tm;
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string Age(int64_t s) {
  char buf[48];
  if (s < 0) return "in " + Age(-s);
  std::snprintf(buf, sizeof buf, "%lldd %02lldh %02lldm %02llds", static_cast<long long>(s / kDay),
                static_cast<long long>(s % kDay / kHour), static_cast<long long>(s % kHour / kMin),
                static_cast<long long>(s % kMin));
  return buf;
}

std::string RenderPlan(std::string_view grid_text, const std::vector<RetentionInput>& in,
                       const std::set<std::string>& protect) {
  RetentionGrid grid = MustParse(grid_text);
  RetentionPlan plan = PlanRetention(grid, in, kNow, protect);
  auto d = Decide(plan);
  std::vector<RetentionInput> sorted = in;
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.created_unix_s < b.created_unix_s; });
  std::string out = "### grid: " + grid.text + "\n### now: " + Utc(kNow) + "; protected:";
  for (const std::string& p : protect) out += " " + p;
  out += "\n";
  if (protect.empty()) out.replace(out.size() - 13, 13, "\n");
  for (const RetentionInput& s : sorted) {
    char line[256];
    const Decision& dec = d[s.id];
    std::snprintf(line, sizeof line, "%-12s %s  age %-21s %s\n", s.id.c_str(),
                  Utc(s.created_unix_s).c_str(), Age(kNow - s.created_unix_s).c_str(),
                  dec.kept ? ("KEEP    " + dec.reason).c_str() : "remove");
    out += line;
  }
  out += "kept " + std::to_string(plan.keep.size()) + ", removed " +
         std::to_string(plan.remove.size()) + "\n\n";
  return out;
}

TEST(RetentionGolden, ReadablePlansForAFixedSetOfSnapshots) {
  std::vector<RetentionInput> in;
  auto add = [&](const std::string& id, int64_t age) { in.push_back({id, kNow - age}); };
  add("future", -120);
  add("m5", 5 * kMin);
  add("m30", 30 * kMin);
  add("m59", 59 * kMin);
  add("h1", kHour);
  add("h1m1", kHour + kMin);
  add("h1m30", kHour + 30 * kMin);
  add("h1m45", kHour + 45 * kMin);
  add("h1m59", kHour + 59 * kMin);
  add("h2m10", 2 * kHour + 10 * kMin);
  add("h23", 23 * kHour);
  add("h25", 25 * kHour);
  add("h26", 26 * kHour);
  add("h47", 47 * kHour);
  add("d3", 3 * kDay);
  add("d3h2", 3 * kDay + 2 * kHour);
  add("d29", 29 * kDay);
  add("d31", 31 * kDay);
  add("d45", 45 * kDay);
  add("d55", 55 * kDay);
  add("d200", 200 * kDay);
  add("d359", 359 * kDay);
  add("d361", 361 * kDay);
  add("d500", 500 * kDay);
  std::string got = RenderPlan(kDefaultRetention, in, {"d500", "h1m45"});
  got += RenderPlan("6h: 1 per 30 minutes | 7d: 1 per day | 1y: 1 per week", in, {});
  got += RenderPlan("1h: keep all", in, {"d3"});
  ::hc::testing::ExpectGolden("tests/replication/golden/retention.txt", got);
}

}  // namespace
}  // namespace hc::replication
