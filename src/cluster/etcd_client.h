// The one door to etcd (v3.4). Speaks etcd's v3 JSON gateway over HTTP/1.1
// (POST /v3/kv/range, /v3/kv/txn, /v3/lease/*, /v3/watch): no gRPC stack, no
// generated code, and the same small HTTP client as the rest of the control
// plane. Why this and not gRPC: docs/design.md, "etcd client".
//
// Failing endpoints are retried across the configured list: a call that
// cannot reach one member (connect error, timeout, 5xx "unavailable") goes to
// the next. Everything here is thread-safe.
//
// Example:
//   EtcdClient etcd({.endpoints = {"http://127.0.0.1:2379"}});
//   HC_ASSIGN_OR_RETURN(int64_t lease, etcd.GrantLease(3));
//   HC_RETURN_IF_ERROR(etcd.Put("/hc/nodes/n1", json, lease).status());
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"

namespace hc::net {
class HttpClient;
}

namespace hc::cluster {

struct EtcdOptions {
  std::vector<std::string> endpoints;  // "http://127.0.0.1:2379" or "127.0.0.1:2379"
  std::chrono::milliseconds dial_timeout{1000};
  std::chrono::milliseconds request_timeout{5000};
};

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;
};

struct RangeResult {
  int64_t revision = 0;  // store revision the read was served at
  std::vector<KeyValue> kvs;
  bool more = false;
};

// One comparison of a transaction (etcd's Compare).
struct Compare {
  enum Target { kVersion, kCreateRevision, kModRevision, kValue, kLease };
  enum Op { kEqual, kNotEqual, kGreater, kLess };
  std::string key;
  Target target = kVersion;
  Op op = kEqual;
  int64_t number = 0;
  std::string value;

  static Compare CreateRevision(std::string key, Op op, int64_t rev) {
    return {std::move(key), kCreateRevision, op, rev, {}};
  }
  static Compare ModRevision(std::string key, Op op, int64_t rev) {
    return {std::move(key), kModRevision, op, rev, {}};
  }
  static Compare Value(std::string key, Op op, std::string v) {
    return {std::move(key), kValue, op, 0, std::move(v)};
  }
  // "key does not exist"
  static Compare Absent(std::string key) { return CreateRevision(std::move(key), kEqual, 0); }
};

struct TxnOp {
  enum Kind { kPut, kDelete, kDeletePrefix, kGet, kGetPrefix } kind = kPut;
  std::string key;
  std::string value;
  int64_t lease = 0;

  static TxnOp Put(std::string k, std::string v, int64_t lease = 0) {
    return {kPut, std::move(k), std::move(v), lease};
  }
  static TxnOp Delete(std::string k) { return {kDelete, std::move(k), {}, 0}; }
  static TxnOp DeletePrefix(std::string k) { return {kDeletePrefix, std::move(k), {}, 0}; }
  static TxnOp Get(std::string k) { return {kGet, std::move(k), {}, 0}; }
  static TxnOp GetPrefix(std::string k) { return {kGetPrefix, std::move(k), {}, 0}; }
};

struct TxnResult {
  bool succeeded = false;
  int64_t revision = 0;             // revision after the transaction
  std::vector<RangeResult> ranges;  // results of kGet/kGetPrefix ops, in order
};

struct WatchEvent {
  enum Type { kPut, kDelete } type = kPut;
  KeyValue kv;  // for kDelete: key and mod_revision only
};

// The end of the range that covers every key starting with `prefix`.
std::string PrefixEnd(const std::string& prefix);

class EtcdClient {
 public:
  explicit EtcdClient(EtcdOptions opts);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  // Checks every endpoint's URL; the constructor never fails.
  static Status ValidateEndpoints(const std::vector<std::string>& endpoints);

  Result<RangeResult> Get(const std::string& key);
  // Keys starting with prefix, in key order; limit 0 = all; revision 0 = latest.
  Result<RangeResult> GetPrefix(const std::string& prefix, int64_t limit = 0, int64_t revision = 0,
                                bool keys_only = false);
  // Returns the revision of the write.
  Result<int64_t> Put(const std::string& key, const std::string& value, int64_t lease = 0);
  Result<int64_t> Delete(const std::string& key);  // revision; deleting nothing is fine
  Result<int64_t> DeletePrefix(const std::string& prefix);
  Result<TxnResult> Txn(const std::vector<Compare>& compares, const std::vector<TxnOp>& success,
                        const std::vector<TxnOp>& failure = {});

  // Leases. KeepAliveOnce returns the remaining TTL; NotFound when the lease
  // has expired or was revoked.
  Result<int64_t> GrantLease(int64_t ttl_seconds);
  Result<int64_t> KeepAliveOnce(int64_t lease);
  Status RevokeLease(int64_t lease);

  // Current store revision (a cheap read).
  Result<int64_t> Revision();

  // One POST to the gateway with endpoint failover. Public for Watch.
  Result<std::string> Call(const std::string& path, const std::string& body,
                           std::chrono::milliseconds timeout = {});
  const EtcdOptions& options() const { return opts_; }
  // Opens a streaming POST on the current endpoint (rotating on failure).
  Status Stream(const std::string& path, const std::string& body,
                const std::function<bool(std::string_view)>& on_data,
                const std::atomic<bool>* cancel);

 private:
  struct Endpoint;
  std::unique_ptr<net::HttpClient> Checkout(size_t endpoint);
  void Checkin(size_t endpoint, std::unique_ptr<net::HttpClient> c);

  EtcdOptions opts_;
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
  std::atomic<size_t> current_{0};
};

// A watch on a key prefix that survives reconnects: it resumes from the
// revision after the last event delivered. If etcd has compacted past that
// revision, `on_resync` is called (the owner must re-read the prefix, and the
// watch continues from the revision the owner returns + 1).
//
// Callbacks run on the watch's own thread, in revision order.
class Watch {
 public:
  using EventsFn = std::function<void(const std::vector<WatchEvent>&, int64_t revision)>;
  using ResyncFn = std::function<int64_t()>;  // returns the revision it read at

  Watch(EtcdClient* etcd, std::string prefix, int64_t start_revision, EventsFn on_events,
        ResyncFn on_resync);
  ~Watch();  // stops and joins
  void Stop();
  // Asks the thread to end without waiting for it (Stop or the destructor
  // then joins): owners of several watches stop them all at once, since
  // each may take a poll slice (~200 ms) to notice.
  void RequestStop();
  // Connected and created on the server (for tests and status).
  bool connected() const { return connected_.load(); }
  int64_t reconnects() const { return reconnects_.load(); }

 private:
  void Run();
  EtcdClient* etcd_;
  std::string prefix_;
  int64_t next_revision_;
  EventsFn on_events_;
  ResyncFn on_resync_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> connected_{false};
  std::atomic<int64_t> reconnects_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;
};

// A lease kept alive by a background thread (keep-alive every ttl/3).
// If the lease is lost (expired on etcd's side, or etcd unreachable for
// longer than the TTL) `on_lost` runs; a new lease is then granted and
// `on_new` runs with it, so the owner re-creates its lease-bound keys.
class LeaseSession {
 public:
  struct Callbacks {
    std::function<void(int64_t lease)> on_new;   // after every grant (incl. the first)
    std::function<void(int64_t lease)> on_lost;  // the old lease is gone or may be gone
    // After every successful grant or renewal, with the time the request was
    // sent: etcd cannot expire the lease before sent + TTL (self-fencing).
    std::function<void(int64_t lease, std::chrono::steady_clock::time_point sent)> on_renewed;
  };
  LeaseSession(EtcdClient* etcd, int64_t ttl_seconds, Callbacks cb);
  ~LeaseSession();  // stops the thread and revokes the lease (best effort)
  // Grants the first lease (retrying until deadline) and starts the thread.
  Status Start(std::chrono::milliseconds deadline);
  int64_t lease() const { return lease_.load(); }
  int64_t ttl_seconds() const { return ttl_; }
  // Stop without revoking: the lease expires on its own (a crash in tests).
  void Abandon();
  // The same after one last renewal, reported through on_renewed: whatever
  // hangs on the lease (the self-fencing deadline) lives a full TTL from now,
  // so that a process restarted within it finds everything still in place.
  void RenewAndAbandon();

 private:
  void Run();
  EtcdClient* etcd_;
  int64_t ttl_;
  Callbacks cb_;
  std::atomic<int64_t> lease_{0};
  std::atomic<bool> stop_{false};
  bool revoke_on_stop_ = true;
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;
};

// Leader election on one key: the first to create the key (bound to its
// lease) leads until the key goes (resign, or lease expiry). Writes made as
// leader should carry Guard() in their compares, so a deposed leader's late
// writes fail instead of landing.
class Election {
 public:
  Election(EtcdClient* etcd, std::string key, std::string value);
  // Blocks until elected with `lease`, or cancelled / lease lost (error).
  Status Campaign(int64_t lease, const std::atomic<bool>* cancel);
  // Blocks while still leader; returns when the key is gone or changed, or
  // on cancel.
  void WaitLost(const std::atomic<bool>* cancel);
  Compare Guard() const;  // create revision of our key == ours
  Status Resign();
  // Who leads now ("" when nobody).
  Result<std::string> Leader();

 private:
  EtcdClient* etcd_;
  std::string key_;
  std::string value_;
  int64_t create_revision_ = 0;
};

}  // namespace hc::cluster
