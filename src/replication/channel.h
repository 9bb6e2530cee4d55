// The node-to-node transfer of one snapshot: the replica's Receiver and the
// primary's Push (docs/design.md, "Replication: transfer protocol").
//
// The Receiver does not listen itself: it sits behind a TlsTerminator whose
// policy requires a client certificate from the cluster CA and ALPN
// "hc-repl" (kReplicationAlpn), and takes the plain end of each connection:
//
//   Receiver rx(store, {.node_id = "node-b", .is_primary = lookup});
//   TlsTerminator tls({.listen = {{"10.0.0.2", 7443}}},
//                     [&](UniqueFd fd, const TlsConnInfo& i) { rx.Adopt(std::move(fd), i); });
//   ...
//   rx.Stop();  // before the store goes away
//
// The sender connects to the replica through TlsTunnels (or any socket that
// ends in such a terminator) and calls Push.
//
// Threads: Receiver::Adopt starts one thread per connection (transfers are
// few and long; the scheduler bounds them per replica); Stop joins them.
// Push runs on the caller's thread and blocks until the transfer ends.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/fs.h"
#include "common/status.h"
#include "net/socket.h"
#include "proxy/tls.h"
#include "replication/wire.h"
#include "storage/store.h"

namespace hc::replication {

// Whether `node` is the primary of `app` at `epoch` (the etcd placement in
// production). A kNotFound/kPermissionDenied error means "no"; other errors
// refuse the transfer too, with their message.
using PrimaryCheck =
    std::function<Status(const std::string& app, const std::string& node, uint64_t epoch)>;

struct ReceiverOptions {
  std::string node_id;  // this node, for messages
  PrimaryCheck is_primary;
  int io_timeout_ms = 60000;  // per read or write: no progress for this long ends the transfer
  // Connections served at once; one more is closed at once (counted in
  // `refused`). The primary's scheduler sends a few at a time per replica.
  int max_connections = 64;
  // Resume: stream bytes of a transfer cut by the network are kept here
  // (`<app>.part`, `<app>.key` naming base and target) and a new transfer of
  // the same (base, target) continues after them. Empty: no resume. One
  // partial transfer per app; any other (base, target) discards it.
  std::string spool_dir;
  // A transfer from the current primary found this copy diverged (it has
  // snapshots after the stream's base): they and any live data were kept as
  // volume `branch` (Store::Rollback) before the stream was received.
  // Called on the connection's thread.
  std::function<void(const std::string& app, const std::string& branch, const std::string& detail)>
      on_diverged;
};

class Receiver {
 public:
  // `store` is borrowed and must outlive the Receiver (or Stop()).
  Receiver(storage::Store& store, ReceiverOptions opts);
  ~Receiver();  // Stop()
  Receiver(const Receiver&) = delete;
  Receiver& operator=(const Receiver&) = delete;

  // Takes the plain end of a verified mutual-TLS connection; `info.peer_cn`
  // is the sender's node id. The connection carries a transfer (a `Q`
  // request) or a repair fetch (a `G` request, see FetchRepair): repair
  // fetches are served to any node of the cluster (the TLS layer checked its
  // certificate) for an app that exists here; no primary check, as they
  // only read. Does not block (safe in a TlsTerminator sink).
  // Closed at once after Stop() or beyond max_connections.
  void Adopt(UniqueFd plain, const proxy::TlsConnInfo& info);

  // Ends every transfer in flight (their sockets are shut down; a store
  // receive in progress fails and changes nothing) and joins the threads.
  // Idempotent.
  void Stop();

  struct Stats {
    uint64_t received = 0;  // snapshots stored
    uint64_t already_present = 0;
    uint64_t refused = 0;         // answered with a refusal, or over max_connections
    uint64_t failed = 0;          // accepted, then failed (corrupt, cut, store error)
    uint64_t active = 0;          // connections being served now
    uint64_t diverged = 0;        // copies that diverged and were kept as branches
    uint64_t repairs_served = 0;  // repair fetches answered with a repair stream
  };
  Stats stats() const;

 private:
  struct Conn {
    UniqueFd fd;
    std::thread thread;
    bool done = false;
  };
  void Serve(Conn& conn, std::string peer_cn);
  void ReapLocked();
  Result<std::string> KeepDiverged(const TransferRequest& req,
                                   const std::vector<storage::SnapshotInfo>& have);

  storage::Store& store_;
  ReceiverOptions opts_;
  mutable std::mutex mu_;
  bool stopped_ = false;             // GUARDED_BY(mu_)
  std::list<Conn> conns_;            // GUARDED_BY(mu_)
  std::set<std::string> busy_apps_;  // GUARDED_BY(mu_): a transfer in progress
  std::atomic<uint64_t> received_{0}, already_{0}, refused_{0}, failed_{0}, diverged_{0};
  std::atomic<uint64_t> repairs_served_{0};
};

struct PushOptions {
  std::string app;  // the volume name, the same on every node
  std::string sender_node;
  uint64_t epoch = 0;
  std::string base_id;  // "" = full stream
  std::string target_id;
  int io_timeout_ms = 60000;
  // Test hook: called with each encoded data frame (header, payload and
  // check; index from 0) just before it is written, so a test can damage
  // bytes in transit. Never set in production.
  std::function<void(uint64_t data_frame, std::string& frame)> corrupt_for_test;
  // Set to the replica's newest snapshot id ("" = none) from its answer,
  // also when it refuses; the caller learns where to send from.
  std::string* receiver_newest = nullptr;
  // Called after each data frame with the stream bytes sent so far.
  std::function<void(uint64_t bytes)> progress;
};

struct PushResult {
  std::string snapshot_id;
  bool already_present = false;
  uint64_t stream_bytes = 0;  // sent on this connection
  uint64_t resumed_from = 0;  // stream bytes the replica already had
};

// Sends snapshot `target_id` of `app` from `store` (incrementally from
// `base_id`) over `conn`, a connected stream socket to a Receiver. Errors:
// kNotFound (no such snapshot here), kPermissionDenied (receiver: not the
// primary at that epoch), kConflict (receiver: base missing, diverged),
// kCorrupt (the receiver found damage; nothing changed there),
// kUnavailable (connection failed or timed out). Retrying is the caller's.
// `conn` is borrowed: close it when Push returns (the receiver waits for
// that EOF before it lets go of the connection).
Result<PushResult> Push(storage::Store& store, int conn, const PushOptions& opts);

struct FetchRepairOptions {
  std::string app;             // the volume name, the same on every node
  std::string requester_node;  // this node: the CN of its certificate
  // What to fetch, e.g. store.Scrub(app, {})->DamagedIds(); 1 to
  // kMaxRepairObjectIds ids.
  std::vector<std::string> object_ids;
  int io_timeout_ms = 60000;
};

struct FetchRepairResult {
  storage::RepairResult repair;  // what ApplyRepair did here
  // Requested ids that are still not intact here (the peer lacked a healthy
  // copy, or did not send one): ask another node.
  std::vector<std::string> still_damaged;
  uint64_t stream_bytes = 0;
};

// Fetches healthy copies of `object_ids` of `app` from the node at the other
// end of `conn` (a connected stream socket to a Receiver) and applies them
// to `store` with Store::ApplyRepair: each object is checked against its id
// on both nodes, and a copy that is damaged on the peer is never sent. Runs
// on the caller's thread. Errors: kInvalidArgument (no ids, too many),
// kNotFound (the peer has no such app), kCorrupt (damaged frames or stream;
// objects that verified before the damage stay repaired), kUnavailable
// (connection failed or timed out), or ApplyRepair's errors. A scrub after
// it shows what remains (objects below a repaired tree are only seen then).
// `conn` is borrowed: close it when FetchRepair returns.
Result<FetchRepairResult> FetchRepair(storage::Store& store, int conn,
                                      const FetchRepairOptions& opts);

// Opens a connection to one other node holding the app (in production a
// TlsTunnels tunnel to that node's replication listener).
using PeerConnect = std::function<Result<UniqueFd>()>;

struct ScrubAndRepairOptions {
  std::string app;
  std::string node_id;  // this node: the CN of its certificate
  // The app's other nodes, in order of preference: (node id, connect).
  std::vector<std::pair<std::string, PeerConnect>> peers;
  storage::ScrubOptions scrub;
  int io_timeout_ms = 60000;
  // A damaged tree hides what is below it, so each round can reveal more
  // damage; a round that repairs nothing ends the run.
  int max_rounds = 8;
  // Runs each fetch-and-apply (only when the scrub found damage); e.g. with
  // the app stopped, for a zfs repair that replaces the live directory.
  std::function<Status(const std::function<Status()>&)> around_repair;
};

struct ScrubAndRepairResult {
  uint64_t repaired = 0;  // objects rewritten from a peer's verified copy
  int rounds = 0;         // scrubs run
  // The last scrub: ok() when the volume is intact; otherwise what no peer
  // could provide a healthy copy of.
  storage::ScrubReport last;
  std::vector<std::string> peer_errors;  // "node-b: <why the fetch failed>"
  // zfs: volumes keeping what only the damaged copy had (RepairResult).
  std::vector<std::string> kept_branches;
};

// Scrubs `app` in `store` and fetches healthy copies of whatever is damaged
// or missing from the peers in turn (an object a peer lacks or has damaged
// is asked of the next), until a scrub is clean, a round repairs nothing,
// or max_rounds. What a periodic scrub on every node runs. Errors: only the
// scrub's own (kNotFound, kUnavailable for backends without repair, kIo);
// peer failures are collected in peer_errors.
Result<ScrubAndRepairResult> ScrubAndRepair(storage::Store& store,
                                            const ScrubAndRepairOptions& opts);

}  // namespace hc::replication
