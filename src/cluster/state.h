// The cluster state as typed structs: what lives in etcd (docs/design.md,
// "Cluster state") without the keys. Only cluster/ knows where each struct is
// stored (cluster_store.h); everything else sees these types.
//
// All structs have strict JSON codecs: unknown fields are ignored (forward
// compatibility), wrong types and out-of-range values are errors that name
// the field.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace hc::cluster {

// A node as it registers itself (nodes/<id>, lease-bound).
struct NodeInfo {
  std::string id;             // stable across restarts (data_dir/node-id)
  std::string name;           // host name, for people
  std::string address;        // address other nodes and hc reach it at ("127.0.0.11")
  uint16_t api_port = 0;      // REST API
  std::string datacenter;     // "dc1"
  uint64_t memory_bytes = 0;  // capacity offered to apps
  uint32_t cpu_millis = 0;
  std::string version;
  int64_t started_unix = 0;
  bool drained = false;  // accepts no new primaries (issue 7: hc node drain)
  // Addresses the world reaches this node at (DNS A/AAAA records); empty =
  // `address`.
  std::vector<std::string> public_addresses;
  uint16_t proxy_port = 0;        // internal proxy other nodes forward to; 0 = no proxy
  uint16_t replication_port = 0;  // where replication streams are pushed; 0 = none
};

// Resource limits of an app (the runtime's Limits plus nothing else).
struct AppLimitsSpec {
  uint64_t memory_bytes = 256ull << 20;
  uint32_t cpu_millis = 1000;
  uint32_t pids = 512;
};

// The desired spec of an app (apps/<name>), written by the API.
struct AppDef {
  std::string name;
  std::string template_name;         // static|command|postgres|mariadb
  std::string command;               // template "command" only
  std::vector<std::string> env;      // KEY=VALUE
  std::vector<std::string> domains;  // lower-case host names, "*.example.com" allowed
  std::vector<std::string> aliases;  // more names, answered in DNS as CNAME -> domains[0]
  // What the app's port speaks, which decides how the proxies reach it:
  //   http      Host on port 80, TLS terminated by the proxy on 443 (SNI)
  //   https     the app terminates TLS itself: 443 relayed by SNI (passthrough)
  //   postgres  5432, by the startup message's database = the app's name
  //   imap pop3 143 / 110, by the login name's domain (one of `domains`)
  //   mysql tcp only through tcp_ports
  // "" = the template's: postgres -> postgres, mariadb -> mysql, else http.
  std::string protocol;
  std::vector<uint16_t> tcp_ports;  // ports every node relays to the app's port as they are
  uint32_t replicas = 1;            // copies besides the primary
  // Continuous replication (docs/design.md, "Replication"): check the volume
  // for changes (and snapshot + push them) every this many seconds; 0 = the
  // cluster default (hcd's replication_interval_seconds, 30). 1-86400.
  uint32_t snapshot_interval_seconds = 0;
  // Which snapshots to keep, e.g. "1h: keep all | 24h: 1 per hour" (see
  // replication/retention.h); "" = the cluster default.
  std::string retention;
  AppLimitsSpec limits;
  int64_t created_unix = 0;
};

enum class PlacementState { kRunning, kMigrating, kFailingOver };
const char* PlacementStateName(PlacementState s);

// Where an app runs (placement/<name>), written only by the leader.
struct Placement {
  std::string app;
  std::string primary;                // node id
  std::vector<std::string> replicas;  // node ids, no duplicates, not the primary
  uint64_t epoch = 0;                 // +1 on every change of primary
  PlacementState state = PlacementState::kRunning;
};

// What a node observes about one app it holds (status/<node>/<app>, lease-bound).
struct AppObserved {
  std::string app;
  std::string node;
  std::string role;  // "primary" or "replica"
  uint64_t epoch = 0;
  std::string state;  // runtime state name ("running", "backoff", ...) or "replica"/"error"
  bool ready = false;
  uint16_t port = 0;  // the app's port on that node's loopback
  double cpu_seconds = 0;
  uint64_t memory_bytes = 0;
  int restarts = 0;
  std::string message;  // last error or notable event
  int64_t updated_unix = 0;
};

// A live migration of one app (moves/<app>): requested by the API (state
// "pending"), carried out and updated step by step by the leader, kept after
// it ends (state "done" or "failed") until the app's next move.
struct MoveRecord {
  std::string app;
  std::string target;   // node id
  std::string source;   // the primary when the move began ("" while pending)
  std::string reason;   // "user" (hc app move) or "drain"
  std::string state;    // pending, copying, handing-off, switching, starting, done, failed
  std::string message;  // progress, or why it failed
  std::string by;       // who asked ("api", "drain of <node>")
  int64_t requested_ms = 0;
  int64_t updated_ms = 0;
  int64_t pause_ms = 0;        // hold -> release (done)
  uint64_t precopy_bytes = 0;  // sent while the app ran
  uint64_t final_bytes = 0;    // sent while it was stopped
  uint64_t epoch = 0;          // the placement epoch after the switch
  bool finished() const { return state == "done" || state == "failed"; }
};
std::string ToJson(const MoveRecord& m);
Result<MoveRecord> MoveRecordFromJson(std::string_view json);

// An app's TLS certificate (certs/<app>), for the proxies' TLS termination.
struct AppCertificate {
  std::string app;
  std::string cert_pem;  // leaf first, then the chain
  std::string key_pem;
  int64_t updated_unix = 0;
};

// A join token as etcd keeps it (pki/tokens/<id>, under a lease of its
// lifetime): never the secret, only the Ed25519 public key that checks a
// joiner's proof (docs/design.md, "Cluster PKI").
struct JoinTokenRecord {
  std::string id;
  std::string public_key;  // base64url of the raw 32-byte Ed25519 key
  int64_t created_unix = 0;
  int64_t expires_unix = 0;
  std::string created_by;  // node id that issued it
};

std::string ToJson(const NodeInfo& n);
// Something that happened to an app or a node, for people (events/<key>):
// repairs, divergences, moves, failovers. Kept bounded (the newest
// ClusterStore::kMaxEvents).
struct Event {
  int64_t time_ms = 0;  // wall clock
  std::string node;     // where it happened
  std::string app;      // "" for node events
  std::string kind;     // "repair", "diverged", "corruption", ...
  std::string message;
};
std::string ToJson(const Event& e);
Result<Event> EventFromJson(std::string_view json);

std::string ToJson(const AppCertificate& c);
Result<AppCertificate> AppCertificateFromJson(std::string_view json);
std::string ToJson(const AppDef& a);
std::string ToJson(const JoinTokenRecord& t);
Result<JoinTokenRecord> JoinTokenRecordFromJson(std::string_view json);
std::string ToJson(const Placement& p);
std::string ToJson(const AppObserved& o);
Result<NodeInfo> NodeInfoFromJson(std::string_view json);
Result<AppDef> AppDefFromJson(std::string_view json);
Result<Placement> PlacementFromJson(std::string_view json);
Result<AppObserved> AppObservedFromJson(std::string_view json);

// Validation of what users send (the API calls these before writing).
Status ValidateAppDef(const AppDef& a);
// The protocol an app's port speaks (AppDef::protocol or its template's).
std::string AppProtocol(const AppDef& a);
// Ports the proxies themselves listen on, which no app may claim.
bool ReservedPort(uint16_t port);            // name, template, domains, limits, replicas
Status ValidateDomain(std::string_view d);   // RFC 1123 host name, optional "*." prefix
Status ValidateNodeId(std::string_view id);  // [a-z0-9][a-z0-9-]{0,62}

// Everything one reader knows about the cluster at one revision.
struct ClusterView {
  int64_t revision = 0;
  std::map<std::string, NodeInfo> nodes;                  // live nodes by id
  std::map<std::string, AppDef> apps;                     // by name
  std::map<std::string, Placement> placements;            // by app name
  std::map<std::string, int64_t> placement_mod_revision;  // for compare-and-swap
  std::string leader;                                     // node id, "" when none
  std::set<std::string> drained;                          // drain/<node> (live or not)
  std::map<std::string, MoveRecord> moves;                // moves/<app>, by app
  std::map<std::string, int64_t> move_mod_revision;       // for compare-and-swap
};

}  // namespace hc::cluster
