// The scheduling core of continuous replication: which snapshot checks and
// which transfers to start now. Pure: no I/O, no threads, no clock — the
// caller passes the time in and reports results, so every decision can be
// replayed in simulated time (tests/replication/schedule_test.cc).
//
// Work items:
//  - a *check* of an app's volume: "snapshot if changed". Each app is checked
//    at most once per interval (default 30 s, at least 1 s); a check that
//    finds no change takes no snapshot but still records `last_checked`, so an
//    idle app (checks succeed) and a broken one (checks fail) look different.
//  - a *transfer* to one (app, replica): send the primary's newest snapshot,
//    incrementally from the replica's newest (`base_id`) or in full when the
//    replica has nothing (an initial sync).
//
// Fairness and limits (ScheduleLimits): due checks run oldest due first;
// transfers run oldest pending first, where a transfer's age is the time of
// the oldest snapshot its replica lacks. At most `max_per_replica` transfers
// go to one replica node at once, so a slow or hung node holds only its own
// slots and the other nodes keep going; at most `max_full_sends` initial syncs
// run at once, so they cannot take the slots incremental traffic needs. There
// is never more than one task per (app, replica), nor two checks of one app.
// A failed check or transfer is retried after an exponential backoff of its
// own; others are unaffected. Next() costs O(log n) per task it returns.
// The scheduler cannot tell a hung transfer from a slow one: the caller
// aborts a transfer that makes no progress for a while (a stall timeout) and
// reports it through TransferDone as failed, which frees its slots.
//
// Lag (ReplicaLag), exactly:
//  - A snapshot *covers* the instant its check was issued (the Next() time
//    that returned the check): every write before that instant is in it.
//    A later check that finds no change moves that snapshot's `confirmed_ms`
//    forward (writes before that check's issue time are in it too).
//  - lag_ms = now − covers_ms of the oldest snapshot of the primary that the
//    replica lacks; 0 when it has the newest. "How long has data that is
//    already snapshotted on the primary been waiting for this replica."
//  - rpo_ms = now − confirmed_ms of the replica's newest snapshot: every write
//    made more than rpo_ms ago is durable in a snapshot the replica holds;
//    newer writes may be lost if the primary dies now. A write made at time w
//    becomes durable on the replica at the first instant at which
//    now − rpo_ms ≥ w, so the write→durable latency of the worst write is the
//    peak of rpo_ms (≈ interval + check time + queueing + transfer time).
//    It keeps growing while checks fail even though lag_ms stays 0.
//  - lag_bytes = the sum of the changed bytes (SnapshotMade::delta_bytes) of
//    the snapshots the replica lacks; for a replica with nothing, the newest
//    snapshot's logical size (what a full send carries).
//
// Example (the agent's replication loop owns one Scheduler):
//   Scheduler s(ScheduleLimits{});
//   HC_RETURN_IF_ERROR(s.SetApp("shop", 30'000, {"node-b", "node-c"}));
//   s.ReplicaHas("shop", "node-b", "9f2…");    // what the replica reported
//   s.ReplicaHas("shop", "node-c", std::nullopt);  // empty: full send
//   for (auto& t : s.Next(now_ms)) start(t);    // results come back via
//   s.CheckDone(...) / s.TransferDone(...);     // CheckDone / TransferDone
//   sleep until s.NextWakeMs(now_ms) or a result arrives.
//
// Thread-safety: none; one thread (the replication loop) owns a Scheduler.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace hc::replication {

inline constexpr int64_t kDefaultIntervalMs = 30'000;
inline constexpr int64_t kMinIntervalMs = 1'000;

// REQUIRES: every count >= 1, 0 < retry_base_ms <= retry_max_ms.
struct ScheduleLimits {
  int max_checks = 4;             // checks (snapshot-if-changed) at once, all apps
  int max_transfers = 8;          // transfers at once, all apps and replicas
  int max_per_replica = 2;        // transfers at once to one replica node
  int max_full_sends = 1;         // initial syncs at once (cannot starve increments)
  int64_t retry_base_ms = 1'000;  // first retry after a failure
  int64_t retry_max_ms = 60'000;  // backoff doubles per failure up to this
};

// A snapshot on the primary as the scheduler knows it.
struct SnapshotMade {
  std::string id;              // stable identity (storage::SnapshotInfo::id)
  uint64_t delta_bytes = 0;    // bytes changed since the previous snapshot
  uint64_t logical_bytes = 0;  // size of the data it refers to
};

struct KnownSnapshot {
  std::string id;
  int64_t covers_ms = 0;  // writes before this instant are in it
  uint64_t delta_bytes = 0;
  uint64_t logical_bytes = 0;
};

struct Task {
  enum Kind { kCheck, kTransfer };
  Kind kind = kCheck;
  std::string app;
  std::string replica;          // kTransfer only
  bool full = false;            // kTransfer: the replica has nothing; send in full
  std::string snapshot_id;      // kTransfer: send up to this snapshot
  std::string base_id;          // kTransfer, incremental: the replica's newest
  uint64_t expected_bytes = 0;  // kTransfer: lag_bytes when issued (estimate)
};

struct ReplicaLag {
  enum State {
    kUnknown,       // no ReplicaHas yet: nothing is sent until it reports
    kInSync,        // has the primary's newest snapshot (or there is none)
    kPending,       // lacks snapshots, waiting for a transfer slot
    kTransferring,  // a transfer is in flight
    kRetrying,      // the last transfer failed; waiting for the backoff
    kBlocked,       // holds a snapshot the primary does not know (see error)
  };
  std::string app;
  std::string replica;  // "" for an app without replicas (check data only)
  State state = kUnknown;
  std::optional<KnownSnapshot> primary_newest;
  std::optional<std::string> replica_newest;  // nullopt: none or unknown
  int64_t lag_ms = 0;
  uint64_t lag_bytes = 0;
  std::optional<int64_t> rpo_ms;  // nullopt: the replica holds nothing we know
  Status last_error;              // of the last transfer (kept after recovery)
  int64_t last_error_ms = 0;
  int consecutive_failures = 0;  // 0 once a transfer succeeded again
  int64_t retry_at_ms = 0;       // kRetrying
  // In flight (kTransferring):
  bool full_send = false;
  std::string sending_snapshot;
  uint64_t progress_bytes = 0;  // from TransferProgress / TransferDone
  uint64_t expected_bytes = 0;  // Task::expected_bytes
  // The app's checks (the same in every row of the app):
  std::optional<int64_t> last_checked_ms;  // issue time of the last good check
  Status check_error;                      // of the last check, if it failed
  int check_failures = 0;                  // consecutive
  std::optional<int64_t> next_check_ms;    // nullopt while a check runs
};

// "unknown", "in_sync", "pending", "transferring", "retrying", "blocked".
const char* ReplicaStateName(ReplicaLag::State s);

class Scheduler {
 public:
  explicit Scheduler(ScheduleLimits limits);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Adds an app this node is primary for, or updates its interval and
  // replica set (when placement changes). A new app's first check is due at
  // once; a changed interval applies from its last check. A new replica is
  // kUnknown until ReplicaHas. A removed replica loses its pending work.
  // Errors: kInvalidArgument (interval < 1 s, empty or repeated replica).
  Status SetApp(const std::string& app, int64_t interval_ms, std::vector<std::string> replicas);

  // Forgets the app and all its pending work. Tasks already handed out stay
  // counted against the limits until their Done call (which then changes
  // nothing), so the limits bound real work; re-adding the app meanwhile
  // adopts them.
  void RemoveApp(const std::string& app);

  // Seeds or replaces what the primary holds for `app`, oldest first (at
  // start-up, and after retention destroyed snapshots). No-op for an unknown
  // app. covers_ms of a snapshot from before start-up is its creation time.
  void SetSnapshots(const std::string& app, std::vector<KnownSnapshot> oldest_first);

  // The replica's newest snapshot (nullopt: it has no copy, so the next
  // transfer is a full send). Call at start-up and whenever the replica
  // reports; ignored for unknown apps/replicas and while a transfer to it is
  // in flight (its result is newer).
  void ReplicaHas(const std::string& app, const std::string& replica,
                  std::optional<std::string> newest_id);

  // What to start at `now_ms`, up to the limits: due checks oldest due
  // first, then transfers oldest pending first. Each task is in flight until
  // its Done call. `now_ms` must not go backwards.
  std::vector<Task> Next(int64_t now_ms);

  // Result of a check from Next(): `error` not OK = failed (retried after a
  // backoff; last_checked unchanged); else `made` = a snapshot was taken,
  // nullopt = no change (only last_checked moves). Ignored without a check
  // in flight for `app`.
  void CheckDone(const std::string& app, int64_t now_ms, std::optional<SnapshotMade> made,
                 const Status& error);

  // Progress of an in-flight transfer (bytes sent so far); for Lag only.
  void TransferProgress(const std::string& app, const std::string& replica, uint64_t bytes);

  // Result of a transfer from Next(): OK = the replica now holds the task's
  // snapshot_id; else retried after a backoff of this (app, replica) alone.
  // `bytes` = bytes sent. Ignored without a transfer in flight for the pair.
  void TransferDone(const std::string& app, const std::string& replica, int64_t now_ms,
                    const Status& error, uint64_t bytes);

  // The earliest time at which Next() could return a task that it cannot
  // return now, or a time <= now_ms if it can return one now (call after
  // Next(now_ms)), or nullopt when only a Done call can create work. Work
  // blocked by a full limit is not counted: the Done that frees the slot is
  // the wake-up.
  std::optional<int64_t> NextWakeMs(int64_t now_ms) const;

  // One row per (app, replica), sorted by app then replica.
  std::vector<ReplicaLag> Lag(int64_t now_ms) const;

  // In flight now (including tasks of removed apps not yet done).
  int checks_in_flight() const { return checks_in_flight_; }
  int transfers_in_flight() const { return transfers_in_flight_; }

 private:
  struct App;
  struct Replica;
  struct Node;
  using AppId = uint32_t;
  using NodeId = uint32_t;

  App* FindApp(const std::string& app);
  Replica* FindReplica(App& a, const std::string& replica);
  NodeId NodeFor(const std::string& replica);
  int64_t Backoff(int failures) const;
  // Puts the pair in the node's queue if it lacks the newest snapshot and may
  // be sent now; takes it out otherwise.
  void Reevaluate(App& a, Replica& r);
  void Dequeue(App& a, Replica& r);
  void UpdateHeads(NodeId node);
  void ReleaseTransfer(NodeId node, bool full);
  ReplicaLag RowFor(const App& a, const Replica* r, int64_t now_ms) const;

  ScheduleLimits limits_;
  AppId next_app_id_ = 1;
  std::unordered_map<std::string, AppId> app_ids_;
  std::unordered_map<AppId, std::unique_ptr<App>> apps_;
  std::unordered_map<std::string, NodeId> node_ids_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::set<std::pair<int64_t, AppId>> checks_due_;
  std::set<std::tuple<int64_t, AppId, NodeId>> retries_;  // (retry_at, app, node)
  // Per kind (0 incremental, 1 full): (oldest since, node) of every node
  // that has queued transfers of that kind and a free per-replica slot.
  std::set<std::pair<int64_t, NodeId>> heads_[2];
  // Tasks handed out for apps/replicas since removed: released by Done.
  struct Orphan {
    bool check = false;
    NodeId node = 0;
    bool full = false;
    std::string snapshot_id;
    int64_t issued_ms = 0;
  };
  std::map<std::pair<std::string, std::string>, Orphan> orphans_;  // (app, replica|"")
  int checks_in_flight_ = 0;
  int transfers_in_flight_ = 0;
  int full_in_flight_ = 0;
};

}  // namespace hc::replication
