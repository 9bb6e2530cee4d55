// Continuous replication on one node (docs/design.md, "Replication: the
// node's loop"): run by every hcd.
//
// As a primary, for every app placed here it
//   - checks the volume every interval (the app's snapshot_interval_seconds
//     or the cluster default) and snapshots it when it changed, freezing a
//     running app around `dir` snapshots (runtime Freeze/Thaw);
//   - pushes each new snapshot to every replica node named by the placement,
//     incrementally from what that replica holds (learnt from the replica
//     itself: a probe, then every answer), driven by the Scheduler (fair,
//     bounded, per-replica backoff);
//   - applies the app's retention grid, never removing a replica's newest
//     snapshot (the base of its next increment).
// As a replica, it receives streams on <address>:replication_port (mutual
// TLS with the cluster CA, ALPN hc-repl) from the node the placement names
// primary at the stream's epoch, keeps diverged copies as branch volumes,
// and applies retention to its copies too.
//
// Everything it learns is visible through Lag() (the API and `hc app show`)
// and MetricsText() (Prometheus, /metrics).
//
// Threads: one loop thread owns the decisions; a small pool runs checks,
// transfers and retention; the Receiver serves incoming streams.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "net/socket.h"
#include "proxy/tls.h"
#include "replication/retention.h"
#include "replication/schedule.h"

namespace hc::cluster {
class ClusterStore;
}
namespace hc::runtime {
class Runtime;
}
namespace hc::storage {
class Store;
}

namespace hc::replication {

struct ServiceOptions {
  std::string node_id;
  net::HostPort listen;   // <address>:replication_port
  std::string spool_dir;  // partial incoming streams (resume)
  proxy::TlsClientIdentity identity;
  int64_t default_interval_ms = kDefaultIntervalMs;
  std::string default_retention = std::string(kDefaultRetention);
  ScheduleLimits limits;
  int io_timeout_ms = 30000;              // a transfer with no progress this long fails
  int64_t retention_every_ms = 60000;     // retention runs at most this often per app
  int64_t probe_retry_ms = 5000;          // an unreachable replica is asked again after this
  std::string tunnel_host = "127.0.0.1";  // local end of the TLS tunnels to other nodes
  // Test hook (hcd: environment HC_TEST_CORRUPT_NEXT_TRANSFER=1): flips a
  // byte in the first data frame of the next transfer, once.
  bool corrupt_next_transfer_for_test = false;
  // Scrub: every volume here is re-read and checked this often (0 = never),
  // at idle CPU and I/O priority, at most scrub_bytes_per_sec; damage is
  // repaired from the app's other nodes (primary first).
  int64_t scrub_interval_ms = 7LL * 24 * 3600 * 1000;
  uint64_t scrub_bytes_per_sec = 64ull << 20;
  // Runs `work` with the app stopped here and starts it again after (hcd:
  // the agent). Needed to repair the primary copy on zfs, where the repair
  // replaces the live directory; without it such a repair is refused.
  std::function<Status(const std::string& app, const std::function<Status()>& work)>
      with_app_stopped;
};

// One scrub of one volume on this node (and the repairs it made).
struct ScrubOutcome {
  std::string app;
  std::string node;
  int64_t finished_ms = 0;
  uint64_t objects_checked = 0, bytes_checked = 0;
  uint64_t repaired = 0;
  int rounds = 0;
  std::vector<std::string> problems;     // damage left (no healthy copy anywhere)
  std::vector<std::string> peer_errors;  // peers that could not help
  // zfs: what only the damaged copy had, kept as these volumes.
  std::vector<std::string> kept_branches;
  std::string error;  // the scrub itself failed
  bool ok() const { return error.empty() && problems.empty(); }
};

// What this node knows about one app's replication, for the API.
struct AppReplicationStatus {
  std::string app;
  std::string role;  // "primary" (rows filled), "replica", "" (not here)
  uint64_t epoch = 0;
  std::vector<ReplicaLag> replicas;  // primary only
  std::string newest_snapshot;       // this node's newest (id), replica or primary
  std::string newest_snapshot_name;
  int64_t newest_created_ns = 0;
  std::vector<std::string> diverged_branches;  // kept here, newest last
  std::string last_error;                      // of the last retention/probe here
  std::optional<ScrubOutcome> last_scrub;      // here
};

// One synchronous push of an app's newest state to one peer (a move).
struct SyncResult {
  std::string snapshot_id;  // what the peer holds now (our newest)
  uint64_t bytes = 0;       // stream bytes sent (0: it had it already)
  bool full = false;        // a full send (the peer held nothing in common)
};

class ReplicationService {
 public:
  // Borrows everything; they must outlive Stop().
  ReplicationService(cluster::ClusterStore* cs, storage::Store* store, runtime::Runtime* rt,
                     ServiceOptions opts);
  ~ReplicationService();  // Stop()
  ReplicationService(const ReplicationService&) = delete;
  ReplicationService& operator=(const ReplicationService&) = delete;

  // Binds the listener (an error names the address), starts following the
  // cluster and the loop.
  Status Start();
  void Stop();  // idempotent; transfers in flight are cut (they resume later)
  // Certificate renewal: new handshakes both ways use `id`.
  Status SetIdentity(const proxy::TlsClientIdentity& id);
  net::HostPort bound() const;

  // nullopt-like: role "" when this node neither is primary of `app` nor
  // holds a replica of it.
  AppReplicationStatus Describe(const std::string& app) const;
  // Scrubs `app`'s volume here now (at full speed) and repairs what it can
  // from the app's other nodes. Errors: kNotFound (no volume here).
  Result<ScrubOutcome> ScrubNow(const std::string& app);
  // For a move: snapshots `app` now if it changed (freezing it unless
  // `app_stopped`) and pushes it to `peer`, incrementally from what the peer
  // holds, before returning. Only on the app's primary (FailedPrecondition
  // otherwise); `peer` must be listed as a replica in the placement.
  Result<SyncResult> SyncTo(const std::string& app, const std::string& peer, bool app_stopped);
  // Newest complete snapshot here (creation time, unix ns) of each of
  // `apps` that has one; for the leader choosing whom to promote.
  std::map<std::string, int64_t> NewestSnapshots(const std::vector<std::string>& apps) const;
  std::string MetricsText() const;

  struct Stats {
    uint64_t checks = 0, snapshots = 0, check_failures = 0;
    uint64_t transfers = 0, transfer_failures = 0, bytes_sent = 0;
    uint64_t snapshots_pruned = 0;
    uint64_t received = 0, refused = 0, receive_failures = 0, diverged = 0;
    uint64_t scrubs = 0, scrub_bytes = 0, repaired_objects = 0, unrepaired_objects = 0;
  };
  Stats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hc::replication
