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
  // is the sender's node id. Does not block (safe in a TlsTerminator sink).
  // Closed at once after Stop() or beyond max_connections.
  void Adopt(UniqueFd plain, const proxy::TlsConnInfo& info);

  // Ends every transfer in flight (their sockets are shut down; a store
  // receive in progress fails and changes nothing) and joins the threads.
  // Idempotent.
  void Stop();

  struct Stats {
    uint64_t received = 0;  // snapshots stored
    uint64_t already_present = 0;
    uint64_t refused = 0;  // answered with a refusal, or over max_connections
    uint64_t failed = 0;   // accepted, then failed (corrupt, cut, store error)
    uint64_t active = 0;   // connections being served now
    uint64_t diverged = 0;  // copies that diverged and were kept as branches
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

}  // namespace hc::replication
