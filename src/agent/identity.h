// How hcd gets its place in the cluster PKI at start-up (docs/design.md,
// "Cluster PKI"), and keeps its certificate fresh:
//
//   1. <data_dir>/pki/node.crt exists and verifies  -> use it (renewed or
//      re-issued first when it expires within 30 days, has expired, or no
//      longer names this node's addresses; the node holds the CA key).
//   2. etcd holds no CA yet                          -> first node: create the
//      CA (create-if-absent in etcd) and issue its own certificate.
//   3. a join token is configured                    -> join through a live
//      member (POST /v1/cluster/join), see pki/join.h.
//   4. otherwise                                     -> refuse to start, saying
//      what to do (`hc cluster join-token` on a member, then --join TOKEN).
//
// Threads: EstablishIdentity runs on hcd's main thread before the services
// start; IdentityRenewer owns one thread that wakes every `check_every`.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster_store.h"
#include "common/status.h"
#include "pki/identity.h"

namespace hc::agent {

struct IdentityOptions {
  std::string data_dir;  // files in <data_dir>/pki
  std::string node_id;
  std::vector<std::string> addresses;  // address + public addresses: the SANs
  std::string join_token;              // "" = none (text of the token)
  int renew_before_days = 30;
};

// Steps 1-4 above. Waits for etcd when it must ask it (until *cancel); with
// a usable certificate it asks etcd only once, to check that the node's CA
// is the cluster's (publishing it if etcd lost it). The CA's private key
// stays in <data_dir>/pki/ca.key.
Result<pki::NodeIdentity> EstablishIdentity(const IdentityOptions& o, cluster::ClusterStore* cs,
                                            const std::atomic<bool>* cancel);

// Re-signs the node's certificate (same key) when fewer than
// renew_before_days are left or the addresses changed. nullopt: nothing to
// do. Without the CA key it only warns.
Result<std::optional<pki::NodeIdentity>> RenewIdentityIfDue(const IdentityOptions& o,
                                                            const pki::NodeIdentity& current,
                                                            int64_t now = 0);

// Checks RenewIdentityIfDue every `check_every` on its own thread and hands
// a renewed identity to `on_renewed` (on that thread).
class IdentityRenewer {
 public:
  IdentityRenewer(IdentityOptions o, pki::NodeIdentity current,
                  std::function<void(const pki::NodeIdentity&)> on_renewed,
                  std::chrono::seconds check_every = std::chrono::hours(6));
  ~IdentityRenewer();  // stops the thread
  IdentityRenewer(const IdentityRenewer&) = delete;
  IdentityRenewer& operator=(const IdentityRenewer&) = delete;

 private:
  void Loop();

  IdentityOptions opts_;
  pki::NodeIdentity current_;  // owned by the thread
  std::function<void(const pki::NodeIdentity&)> on_renewed_;
  std::chrono::seconds every_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace hc::agent
