#include "replication/retention.h"

#include <algorithm>
#include <numeric>
#include <optional>

namespace hc::replication {
namespace {

constexpr int64_t kMinute = 60;
constexpr int64_t kHour = 3600;
constexpr int64_t kDay = 86400;
constexpr int64_t kWeek = 7 * kDay;
constexpr int64_t kMonth = 30 * kDay;
constexpr int64_t kYear = 365 * kDay;
constexpr size_t kMaxTextBytes = 4096;

constexpr std::string_view kAgeUnitsHelp =
    "s, min, h, d, w, m (months) or y, e.g. '90min', '24h', '30d', '12m'";
constexpr std::string_view kRuleHelp =
    "'keep all', '1 per hour', '1 per day', '1 per 6 hours' (periods: second, minute, hour, day, "
    "week, month, year)";

bool IsSpace(char c) {
  return c == ' ' || c == '\t';
}
bool IsDigit(char c) {
  return c >= '0' && c <= '9';
}
bool IsAlpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

// Quotes user text in a message, cut so a huge input gives a short message.
std::string Quote(std::string_view s) {
  if (s.size() > 60) return "'" + std::string(s.substr(0, 57)) + "...'";
  return "'" + std::string(s) + "'";
}

struct Token {
  bool number;
  std::string text;  // lower case
};

// Splits at whitespace and at digit/letter boundaries ("6hours" -> 6, hours),
// so spacing is free. Anything but digits, letters and spaces is an error.
std::optional<std::vector<Token>> Tokenize(std::string_view s, char* bad) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (IsSpace(c)) {
      ++i;
      continue;
    }
    size_t j = i;
    if (IsDigit(c)) {
      while (j < s.size() && IsDigit(s[j])) ++j;
      out.push_back({true, std::string(s.substr(i, j - i))});
    } else if (IsAlpha(c)) {
      while (j < s.size() && IsAlpha(s[j])) ++j;
      out.push_back({false, Lower(s.substr(i, j - i))});
    } else {
      *bad = c;
      return std::nullopt;
    }
    i = j;
  }
  return out;
}

// A count: digits only, at most 9 of them (the limits below are far smaller
// than 10^9 * a year, so nothing overflows later).
std::optional<int64_t> Count(const std::string& digits) {
  std::string_view d = digits;
  while (d.size() > 1 && d.front() == '0') d.remove_prefix(1);
  if (d.empty() || d.size() > 9) return std::nullopt;
  int64_t v = 0;
  for (char c : d) v = v * 10 + (c - '0');
  return v;
}

std::optional<int64_t> AgeUnit(const std::string& u) {
  if (u == "s") return 1;
  if (u == "min") return kMinute;
  if (u == "h") return kHour;
  if (u == "d") return kDay;
  if (u == "w") return kWeek;
  if (u == "m" || u == "mo") return kMonth;
  if (u == "y") return kYear;
  return std::nullopt;
}

std::optional<int64_t> PeriodUnit(std::string u) {
  if (u.size() > 1 && u.back() == 's') u.pop_back();
  if (u == "second") return 1;
  if (u == "minute") return kMinute;
  if (u == "hour") return kHour;
  if (u == "day") return kDay;
  if (u == "week") return kWeek;
  if (u == "month") return kMonth;
  if (u == "year") return kYear;
  return std::nullopt;
}

std::string FormatAge(int64_t s) {
  // Days only from 2d and months only from 2 months: "24h" and "30d" read
  // better than "1d" and "1m" in a grid.
  struct Unit {
    int64_t len;
    const char* name;
    int64_t min_count;
  };
  static constexpr Unit kUnits[] = {
      {kYear, "y", 1}, {kMonth, "m", 2}, {kDay, "d", 2}, {kHour, "h", 1}, {kMinute, "min", 1}};
  for (const Unit& u : kUnits) {
    if (s % u.len == 0 && s / u.len >= u.min_count) return std::to_string(s / u.len) + u.name;
  }
  return std::to_string(s) + "s";
}

std::string FormatRule(int64_t bucket_s) {
  if (bucket_s == 0) return "keep all";
  struct Unit {
    int64_t len;
    const char* name;
  };
  static constexpr Unit kUnits[] = {{kYear, "year"}, {kMonth, "month"}, {kWeek, "week"},
                                    {kDay, "day"},   {kHour, "hour"},   {kMinute, "minute"},
                                    {1, "second"}};
  for (const Unit& u : kUnits) {
    if (bucket_s % u.len != 0) continue;
    int64_t n = bucket_s / u.len;
    if (n == 1) return std::string("1 per ") + u.name;
    return "1 per " + std::to_string(n) + " " + u.name + "s";
  }
  return "";  // unreachable: every length is a multiple of a second
}

std::string FormatTier(const RetentionTier& t) {
  return FormatAge(t.age_limit_s) + ": " + FormatRule(t.bucket_s);
}

Status TierError(size_t index, std::string_view tier_text, const std::string& what) {
  return InvalidArgument("retention tier " + std::to_string(index + 1) + " " + Quote(tier_text) +
                         ": " + what);
}

Result<RetentionTier> ParseTier(size_t index, std::string_view tier_text) {
  size_t colon = tier_text.find(':');
  if (colon == std::string_view::npos) {
    return TierError(index, tier_text,
                     "missing ':' between age and rule; write e.g. '24h: 1 per hour'");
  }
  std::string_view age_text = Trim(tier_text.substr(0, colon));
  std::string_view rule_text = Trim(tier_text.substr(colon + 1));
  char bad = 0;
  auto age = Tokenize(age_text, &bad);
  if (!age) {
    return TierError(index, tier_text,
                     "unexpected character '" + std::string(1, bad) + "' in the age; write " +
                         std::string(kAgeUnitsHelp));
  }
  if (age->size() != 2 || !(*age)[0].number || (*age)[1].number) {
    return TierError(index, tier_text,
                     "the age " + Quote(age_text) +
                         " must be a number and a unit: " + std::string(kAgeUnitsHelp));
  }
  std::optional<int64_t> unit = AgeUnit((*age)[1].text);
  if (!unit) {
    std::string hint =
        (*age)[1].text == "mi" || (*age)[1].text == "minute" || (*age)[1].text == "minutes"
            ? " (minutes are 'min')"
            : "";
    return TierError(index, tier_text,
                     "unknown unit '" + (*age)[1].text + "' in the age" + hint + "; write " +
                         std::string(kAgeUnitsHelp));
  }
  std::optional<int64_t> n = Count((*age)[0].text);
  if (!n || *n > kMaxRetentionAgeS / *unit) {
    return TierError(index, tier_text, "age is longer than 100 years; write at most '100y'");
  }
  if (*n == 0) return TierError(index, tier_text, "age must be at least 1s");
  RetentionTier tier{.age_limit_s = *n * *unit, .bucket_s = 0};

  auto rule = Tokenize(rule_text, &bad);
  if (!rule) {
    if (bad == ';' || bad == ',') {
      return TierError(index, tier_text,
                       "unexpected character '" + std::string(1, bad) +
                           "' in the rule; tiers are separated by '|', e.g. '1h: keep all | 24h: "
                           "1 per hour'");
    }
    return TierError(index, tier_text,
                     "unexpected character '" + std::string(1, bad) + "' in the rule; write " +
                         std::string(kRuleHelp));
  }
  const std::vector<Token>& r = *rule;
  if (r.size() == 2 && r[0].text == "keep" && r[1].text == "all") return tier;
  bool one_per = r.size() >= 3 && r[0].number && r[1].text == "per";
  if (!one_per || (r.size() != 3 && r.size() != 4)) {
    return TierError(
        index, tier_text,
        "cannot read the rule " + Quote(rule_text) + "; write " + std::string(kRuleHelp));
  }
  if (Count(r[0].text) != 1) {
    return TierError(index, tier_text,
                     "only '1 per ...' is supported; for more, use a shorter period, e.g. '1 per "
                     "30 minutes' instead of '2 per hour'");
  }
  int64_t period_count = 1;
  if (r.size() == 4) {
    std::optional<int64_t> c = r[2].number ? Count(r[2].text) : std::nullopt;
    if (!c) {
      return TierError(
          index, tier_text,
          "cannot read the rule " + Quote(rule_text) + "; write " + std::string(kRuleHelp));
    }
    if (*c == 0) return TierError(index, tier_text, "the period must be at least 1 second");
    period_count = *c;
  }
  const Token& word = r.back();
  std::optional<int64_t> period = word.number ? std::nullopt : PeriodUnit(word.text);
  if (!period) {
    return TierError(index, tier_text,
                     "unknown period '" + word.text + "'; write " + std::string(kRuleHelp));
  }
  if (period_count > tier.age_limit_s / *period) {
    return TierError(index, tier_text,
                     "the period in '" + FormatRule(period_count * *period) +
                         "' is longer than the tier's age " + FormatAge(tier.age_limit_s) +
                         "; shorten the period or raise the age");
  }
  tier.bucket_s = period_count * *period;
  return tier;
}

}  // namespace

Result<RetentionGrid> ParseRetention(std::string_view text) {
  std::string example = "write e.g. '" + std::string(kDefaultRetention) + "'";
  if (text.size() > kMaxTextBytes) {
    return InvalidArgument("retention is longer than " + std::to_string(kMaxTextBytes) +
                           " bytes; " + example);
  }
  if (Trim(text).empty()) return InvalidArgument("retention is empty; " + example);
  RetentionGrid grid;
  size_t start = 0;
  for (size_t index = 0;; ++index) {
    size_t bar = text.find('|', start);
    std::string_view tier_text =
        Trim(text.substr(start, bar == std::string_view::npos ? text.npos : bar - start));
    if (index >= kMaxRetentionTiers) {
      return InvalidArgument("retention has more than " + std::to_string(kMaxRetentionTiers) +
                             " tiers; merge some");
    }
    if (tier_text.empty()) {
      return InvalidArgument("retention tier " + std::to_string(index + 1) +
                             " is empty; remove the extra '|' or write e.g. '24h: 1 per hour'");
    }
    HC_ASSIGN_OR_RETURN(RetentionTier tier, ParseTier(index, tier_text));
    if (!grid.tiers.empty()) {
      const RetentionTier& prev = grid.tiers.back();
      if (tier.age_limit_s <= prev.age_limit_s) {
        return TierError(index, tier_text,
                         "age must be larger than the previous tier's " +
                             FormatAge(prev.age_limit_s) + " (tiers go from young to old)");
      }
      if (prev.bucket_s != 0 && tier.bucket_s < prev.bucket_s) {
        return TierError(index, tier_text,
                         "keeps more (" + FormatRule(tier.bucket_s) + ") than the previous tier (" +
                             FormatRule(prev.bucket_s) +
                             "); older tiers must keep the same or fewer, e.g. '" +
                             FormatAge(tier.age_limit_s) + ": " + FormatRule(prev.bucket_s) + "'");
      }
    }
    grid.tiers.push_back(tier);
    if (bar == std::string_view::npos) break;
    start = bar + 1;
  }
  grid.text = FormatRetention(grid);
  return grid;
}

std::string FormatRetention(const RetentionGrid& grid) {
  std::string out;
  for (const RetentionTier& t : grid.tiers) {
    if (!out.empty()) out += " | ";
    out += FormatTier(t);
  }
  return out;
}

RetentionPlan PlanRetention(const RetentionGrid& grid, std::vector<RetentionInput> snapshots,
                            int64_t now_unix_s, const std::set<std::string>& protect) {
  std::sort(snapshots.begin(), snapshots.end(),
            [](const RetentionInput& a, const RetentionInput& b) {
              if (a.created_unix_s != b.created_unix_s) return a.created_unix_s < b.created_unix_s;
              return a.id < b.id;
            });
  const size_t n_tiers = grid.tiers.size();
  std::vector<std::string> tier_reasons(n_tiers);
  for (size_t i = 0; i < n_tiers; ++i) {
    tier_reasons[i] = "tier " + std::to_string(i + 1) + " '" + FormatTier(grid.tiers[i]) + "'";
    if (grid.tiers[i].bucket_s != 0) tier_reasons[i] += ": oldest in its bucket";
  }
  // Inputs are visited oldest first, so within a tier bucket numbers never
  // decrease and the first snapshot seen in a bucket is its oldest.
  std::vector<std::optional<int64_t>> last_bucket(n_tiers);

  RetentionPlan plan;
  plan.keep.reserve(snapshots.size());
  plan.reasons.reserve(snapshots.size());
  for (size_t k = 0; k < snapshots.size(); ++k) {
    RetentionInput& s = snapshots[k];
    const std::string* reason = nullptr;
    static const std::string kFuture = "created in the future (clock skew)";
    static const std::string kNewest = "newest";
    static const std::string kProtected = "protected";

    const bool future = s.created_unix_s > now_unix_s;
    int64_t age = 0;
    // Not future, so an overflow means "older than anything representable".
    bool overflow = __builtin_sub_overflow(now_unix_s, s.created_unix_s, &age);
    size_t tier = n_tiers;  // n_tiers: older than every tier, or in the future
    if (!future && !overflow) {
      // Few tiers (<= 16): a linear scan beats anything clever.
      tier = 0;
      while (tier < n_tiers && age > grid.tiers[tier].age_limit_s) ++tier;
    }
    bool tier_keeps = false;
    if (tier < n_tiers) {
      int64_t b = grid.tiers[tier].bucket_s;
      if (b == 0) {
        tier_keeps = true;
      } else {
        int64_t bucket = s.created_unix_s / b;
        if (s.created_unix_s % b != 0 && s.created_unix_s < 0) --bucket;
        tier_keeps = last_bucket[tier] != bucket;
        last_bucket[tier] = bucket;
      }
    }

    if (future) {
      reason = &kFuture;
    } else if (k + 1 == snapshots.size()) {
      reason = &kNewest;
    } else if (protect.count(s.id) != 0) {
      reason = &kProtected;
    } else if (tier_keeps) {
      reason = &tier_reasons[tier];
    }
    if (reason != nullptr) {
      plan.keep.push_back(std::move(s.id));
      plan.reasons.push_back(*reason);
    } else {
      plan.remove.push_back(std::move(s.id));
    }
  }
  return plan;
}

}  // namespace hc::replication
