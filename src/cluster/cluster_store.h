// Typed access to the cluster state in etcd. The only place that knows the
// key layout (docs/design.md, "Cluster state"):
//
//   <prefix>nodes/<id>            NodeInfo           lease of the node
//   <prefix>apps/<name>           AppDef             written by the API
//   <prefix>placement/<name>      Placement          written by the leader (CAS)
//   <prefix>assign/<node>/<app>   Assignment         written by the leader, in the
//                                                     same transaction as placement
//   <prefix>status/<node>/<app>   AppObserved        lease of the node
//   <prefix>leader                node id            lease of the leader
//   <prefix>holds/<app>           {"until_unix",...} a lease of the hold's length:
//                                                     every proxy queues the app's
//                                                     new requests while it exists
//   <prefix>certs/<app>           AppCertificate     the app's TLS certificate
//   <prefix>pki/ca                CA certificate     PEM; created once (txn)
//   <prefix>pki/tokens/<id>       JoinTokenRecord    lease = the token's lifetime
//
// `assign/` is an index of placement by node: each agent watches only its own
// assignments, so etcd's watch fan-out grows with apps, not apps x nodes.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "cluster/etcd_client.h"
#include "cluster/state.h"

namespace hc::cluster {

// What one node is told to hold: the placement (with its epoch) and the spec.
struct Assignment {
  Placement placement;
  AppDef app;
  bool primary_here = false;  // derived: placement.primary == the node reading it
};

// One placement write by the leader.
struct PlacementWrite {
  enum Kind { kCreate, kUpdate, kDelete } kind = kCreate;
  Placement placement;                      // kDelete: .app only
  std::optional<AppDef> app;                // required for kCreate/kUpdate (goes into assignments)
  int64_t expected_mod_revision = 0;        // kUpdate/kDelete: compare-and-swap on placement/<app>
  std::vector<std::string> previous_nodes;  // nodes whose assignment must go (kUpdate/kDelete)
};

class ClusterStore {
 public:
  ClusterStore(EtcdClient* etcd, std::string prefix);  // prefix like "/hc/" ('/' added)

  EtcdClient* etcd() const { return etcd_; }
  const std::string& prefix() const { return prefix_; }
  std::string NodesPrefix() const { return prefix_ + "nodes/"; }
  std::string AppsPrefix() const { return prefix_ + "apps/"; }
  std::string PlacementsPrefix() const { return prefix_ + "placement/"; }
  std::string AssignPrefix(const std::string& node) const {
    return prefix_ + "assign/" + node + "/";
  }
  std::string StatusPrefix() const { return prefix_ + "status/"; }
  std::string HoldsPrefix() const { return prefix_ + "holds/"; }
  std::string CertsPrefix() const { return prefix_ + "certs/"; }
  std::string MovesPrefix() const { return prefix_ + "moves/"; }
  std::string DrainPrefix() const { return prefix_ + "drain/"; }
  std::string MoveKey(const std::string& app) const { return MovesPrefix() + app; }
  std::string DrainKey(const std::string& node) const { return DrainPrefix() + node; }
  std::string LeaderKey() const { return prefix_ + "leader"; }
  std::string NodeKey(const std::string& id) const { return NodesPrefix() + id; }
  std::string AppKey(const std::string& name) const { return AppsPrefix() + name; }
  std::string PlacementKey(const std::string& app) const { return PlacementsPrefix() + app; }
  std::string AssignKey(const std::string& node, const std::string& app) const {
    return AssignPrefix(node) + app;
  }
  std::string StatusKey(const std::string& node, const std::string& app) const {
    return StatusPrefix() + node + "/" + app;
  }

  std::string CaKey() const { return prefix_ + "pki/ca"; }
  std::string JoinTokenKey(const std::string& id) const { return prefix_ + "pki/tokens/" + id; }

  // --- nodes
  Status RegisterNode(const NodeInfo& n, int64_t lease);
  // Live nodes (registered under their leases), in id order.
  Result<std::vector<NodeInfo>> ListNodes();

  // --- cluster PKI (docs/design.md, "Cluster PKI")
  // The cluster CA certificate (PEM), or nullopt before the first node made one.
  Result<std::optional<std::string>> GetCaCert();
  // Stores `pem` as the CA certificate unless one exists (one transaction, so
  // of two fresh first nodes exactly one wins). Returns the CA certificate
  // etcd holds afterwards: `pem` if it won, the other one if not.
  Result<std::string> CreateCaCertIfAbsent(const std::string& pem);
  // Stores a join token under a new lease of ttl_seconds (etcd deletes it
  // when it expires). AlreadyExists if the id is taken.
  Status CreateJoinToken(const JoinTokenRecord& t, int64_t ttl_seconds);
  // nullopt when unknown or expired.
  Result<std::optional<JoinTokenRecord>> GetJoinToken(const std::string& id);
  // Deleting an unknown token is NotFound.
  Status DeleteJoinToken(const std::string& id);

  // --- apps (API). AlreadyExists / NotFound with a message for people.
  Status CreateApp(const AppDef& a);
  Status DeleteApp(const std::string& name);

  // Holds an app at every proxy for `seconds` (1..300), or until
  // ReleaseHold; a second hold of the same app replaces the first.
  Status PutHold(const std::string& app, int seconds, const std::string& by);
  Status ReleaseHold(const std::string& app);  // holding nothing is fine
  // The app's TLS certificate (chain and key, PEM); nullopt if none.
  // Events (events/<13-digit ms>-<node>-<seq>): recorded by any node, the
  // oldest beyond kMaxEvents removed by the writers. ListEvents: oldest
  // first, the newest `limit` (0 = all kept) of `app` ("" = all).
  static constexpr size_t kMaxEvents = 2000;
  std::string EventsPrefix() const { return prefix_ + "events/"; }
  Status RecordEvent(const Event& e);
  Result<std::vector<Event>> ListEvents(const std::string& app, size_t limit);

  // --- moves (moves/<app>) and drains (drain/<node>)
  // A new move request: stored unless a move of the app is under way
  // (Conflict naming its state). A finished record is replaced.
  Status RequestMove(const MoveRecord& m);
  // The app's move record (nullopt: never moved) and its mod revision.
  Result<std::optional<std::pair<MoveRecord, int64_t>>> GetMove(const std::string& app);
  // The leader's progress updates, guarded by its leadership.
  Status UpdateMove(const MoveRecord& m, const Compare& guard);
  // drain/<node> present = the node takes no new primaries and the leader
  // moves its primaries away (it survives restarts of the node).
  Status SetDrain(const std::string& node, bool drained, const std::string& by);

  Status PutCertificate(const AppCertificate& c);
  Status DeleteCertificate(const std::string& app);  // NotFound if none
  Result<std::optional<AppCertificate>> GetCertificate(const std::string& app);
  Result<std::optional<AppDef>> GetApp(const std::string& name);

  // --- the whole picture at one revision (one read transaction).
  Result<ClusterView> LoadView();
  // Applies watch events on nodes/, apps/, placement/, drain/ and moves/ to a view (other
  // keys are ignored; a placement event older than the view's is skipped;
  // values that do not parse are skipped as a watch cannot refuse them).
  void ApplyEvents(const std::vector<WatchEvent>& events, ClusterView* view) const;

  // --- leader: applies writes in transactions of at most ~120 operations,
  // each guarded by `guard` (leadership) and the per-placement CAS. Returns
  // the number of writes applied; Conflict if a compare failed (the caller
  // reloads its view and plans again). On success the view is updated.
  Result<size_t> ApplyPlacements(const std::vector<PlacementWrite>& writes, const Compare& guard,
                                 ClusterView* view);

  // --- agent
  Result<Assignment> ParseAssignment(const std::string& node, std::string_view json) const;
  // The app name of an assign/<node>/<app> key, or "" if the key is not one.
  std::string AssignKeyApp(const std::string& node, const std::string& key) const;
  Result<std::vector<Assignment>> LoadAssignments(const std::string& node, int64_t* revision);
  // Puts `observed` and deletes status of `gone` apps, lease-bound, batched.
  Status ReportObserved(const std::string& node, const std::vector<AppObserved>& observed,
                        const std::vector<std::string>& gone, int64_t lease);
  // All observed status (every node), or of one app.
  Result<std::vector<AppObserved>> ListObserved(const std::string& app = "");

 private:
  EtcdClient* etcd_;
  std::string prefix_;
};

}  // namespace hc::cluster
