// Retention: which snapshots of one volume to keep as they age. Pure
// functions, no I/O, no threads; the node applies the plan (on the primary
// and on every replica) by destroying the snapshots in `remove`.
//
// A grid is a list of tiers with ascending age limits. A snapshot whose age
// (now - created) is at most a tier's limit, and more than the previous
// tier's, belongs to that tier; the tier either keeps everything or keeps one
// snapshot per bucket. Snapshots older than the last tier are removed.
//
//   HC_ASSIGN_OR_RETURN(RetentionGrid grid, ParseRetention(app.retention));
//   RetentionPlan plan = PlanRetention(grid, snapshots, now_s, {replica_base_id});
//   for (const std::string& id : plan.remove) ... destroy id ...
//
// Grammar (case-insensitive; spaces and tabs are allowed around every token
// and between a number and its unit, "12m" == "12 M"):
//
//   grid   := tier ( "|" tier )*             at most 16 tiers
//   tier   := age ":" rule
//   age    := N unit                         1 second .. 100 years
//   unit   := s | min | h | d | w | m | mo | y
//   rule   := "keep all" | "1 per" [N] period
//   period := second(s) | minute(s) | hour(s) | day(s) | week(s) | month(s) | year(s)
//
// Units: a month is 30 days and a year 365 days, everywhere. In an age, "m"
// means MONTHS (the "12m"), so that "12m: 1 per month" reads as
// intended; minutes are written "min" ("90min"). "mo" is accepted for months.
//
// Validation: ages strictly ascending; a tier's bucket is not longer than its
// age limit; buckets never get finer with age ("keep all" only before any
// thinned tier). Errors name the tier and say what to write instead, e.g.
//   tier 2 '24h: 1 per hour': age must be larger than the previous tier's 1h
//
// Buckets are aligned to the Unix epoch: bucket = floor(created / length).
// For minutes, hours and days this is the UTC clock and calendar; weeks start
// on Thursday 00:00 UTC; "months" are 30-day periods since 1970-01-01 (not
// calendar months). Epoch alignment makes buckets independent of `now`, so a
// snapshot kept as the oldest of its bucket stays kept until it ages out of
// its tier (thinning is stable: it never swaps a kept snapshot for a
// neighbour).
#pragma once

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace hc::replication {

struct RetentionTier {
  int64_t age_limit_s = 0;  // this tier holds snapshots up to this old
  int64_t bucket_s = 0;     // keep one per bucket of this length; 0 = keep all
  bool operator==(const RetentionTier&) const = default;
};

struct RetentionGrid {
  std::vector<RetentionTier> tiers;  // ascending age_limit_s, at least one
  std::string text;                  // canonical text (FormatRetention)
  bool operator==(const RetentionGrid&) const = default;
};

inline constexpr std::string_view kDefaultRetention =
    "1h: keep all | 24h: 1 per hour | 30d: 1 per day | 12m: 1 per month";
inline constexpr size_t kMaxRetentionTiers = 16;
inline constexpr int64_t kMaxRetentionAgeS = 100LL * 365 * 86400;

// Parses and validates a grid (see the grammar above). kInvalidArgument with
// a message naming the tier and what to write. The result's `text` is the
// canonical form, so two spellings of one grid compare equal.
Result<RetentionGrid> ParseRetention(std::string_view text);

// Canonical text of `grid.tiers` (ignores grid.text): ages in the largest
// unit that divides them (days only from 2d, months only from 2 months, so
// "24h" and "30d" stay as written; never weeks), periods as "1 per hour",
// "1 per 6 hours". ParseRetention(FormatRetention(g)) == g for every g that
// ParseRetention returned; the default grid formats to kDefaultRetention.
std::string FormatRetention(const RetentionGrid& grid);

struct RetentionInput {
  std::string id;              // stable snapshot identity (SnapshotInfo::id)
  int64_t created_unix_s = 0;  // SnapshotInfo::created_unix_ns / 1e9
};

struct RetentionPlan {
  // Both oldest first (by created time, then id). Every input appears in
  // exactly one of them (an id given twice appears twice).
  std::vector<std::string> keep, remove;
  // reasons[i] says why keep[i] is kept, for logs, `hc` and tests: one of
  //   "created in the future (clock skew)", "newest", "protected",
  //   "tier 1 '1h: keep all'", "tier 2 '24h: 1 per hour': oldest in its bucket".
  std::vector<std::string> reasons;
};

// Decides which snapshots to remove at `now_unix_s`, first rule that applies:
//  1. created after now (clock skew): kept — its age is unknown;
//  2. the newest snapshot (latest created time; ties: greatest id): kept;
//  3. an id in `protect` (bases replicas still need, user pins): kept;
//  4. in a keep-all tier: kept;
//  5. in a thinned tier: kept if it is the oldest snapshot of its bucket
//     among the inputs in that tier, else removed;
//  6. older than the last tier's limit: removed.
// Never fails: any grid from ParseRetention and any timestamps are accepted
// (an age that overflows int64 counts as older than every tier). Protected
// and newest snapshots do not change which snapshot a bucket keeps.
RetentionPlan PlanRetention(const RetentionGrid& grid, std::vector<RetentionInput> snapshots,
                            int64_t now_unix_s, const std::set<std::string>& protect);

}  // namespace hc::replication
