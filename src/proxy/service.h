// The proxy as a node runs it: every engine of src/proxy fed from the
// cluster state.
//
//   clients ──▶ public HttpProxy (proxy_listen, :80) ─┐
//           ──▶ StreamProxy (:443 :5432 :143 :110, apps' tcp ports)
//                 │ TLS not passed through ─▶ TlsTerminator (SNI cert) ─▶ public HttpProxy
//                 │
//   an app on this node: its port on 127.0.0.1
//   an app elsewhere:    TlsTunnels ══ mutual TLS (cluster CA) ══▶ that node's
//                        node channel (proxy_internal_port), ALPN "hc-http" ─▶ its
//                        internal HttpProxy, "hc-stream" ─▶ its StreamProxy (kHop)
//
// The internal engines route only to apps running on their node, so a
// request crosses at most one node and can never loop, whatever two nodes
// believe for a moment. A peer without a certificate of the cluster CA is
// refused by the node channel's handshake.
//
// Routes follow placement/ (which node is primary, with its epoch),
// status/<this node>/ (the local app's port once it runs at that epoch),
// apps/ (domains, protocol, tcp ports), nodes/ (where peers are), certs/
// (apps' TLS certificates) and holds/ (apps held cluster-wide), through
// resuming watches; each change rebuilds every table (cheap) and swaps it
// in; connections in flight keep their backend.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cluster/cluster_store.h"
#include "proxy/http_proxy.h"
#include "proxy/stream_proxy.h"
#include "proxy/tls.h"

namespace hc::proxy {

struct ProxyServiceOptions {
  std::string node_id;
  ProxyOptions public_proxy;    // listen: where HTTP clients come in
  ProxyOptions internal_proxy;  // listen stays empty: its clients come from the node channel
  StreamProxyOptions streams;   // 443, 5432, 143, 110 and where apps' tcp ports open
  net::HostPort node_channel;   // <address>:<proxy_internal_port>, mutual TLS
  TlsClientIdentity identity;   // this node's certificate and the cluster CA
  std::optional<CertSpec> default_cert;  // for TLS names without a certificate of their own
};

// Where a route's backend is: this node's loopback, or another node's
// channel (then `node` names it, and its certificate must name it too).
struct NodeRoutes {
  std::vector<RouteSpec> public_routes;              // hop routes: backend = the node channel
  std::vector<RouteSpec> internal_routes;            // local apps only
  std::vector<StreamRouteSpec> streams;              // hop specs: backend = the node channel
  std::vector<CertSpec> certs;                       // apps' certificates for TLS termination
  std::map<std::string, std::string> channel_nodes;  // "host:port" of a node channel -> node id
  std::vector<std::string> warnings;  // names or ports claimed twice, apps not running yet
  // Apps placed here that do not run yet at the placement's epoch (being
  // started: a new app, a move, a failover). They are routed to a dead
  // backend and held, so their requests wait for the app instead of failing.
  std::vector<std::string> starting;
};
// The routes of one node, from a view, the node's own observed status and
// the apps' certificates (a pure function, unit-tested).
NodeRoutes RoutesFor(const std::string& node_id, const cluster::ClusterView& view,
                     const std::vector<cluster::AppObserved>& local_status,
                     const std::vector<cluster::AppCertificate>& certs = {});

class ProxyService {
 public:
  ProxyService(cluster::ClusterStore* cs, ProxyServiceOptions opts);
  ~ProxyService();  // Stop()
  // Binds every listener (errors name the address), then follows the state.
  Status Start();
  void Stop();

  // Holds an app on this node only (the agent during a move); holds/ in
  // etcd holds it on every node. Either keeps it held.
  void Hold(const std::string& app);
  void Release(const std::string& app);
  // Waits until no request of `app` is being forwarded by this node's HTTP
  // proxies (held ones aside), at most timeout_ms; false on timeout. A move
  // calls it between the hold and stopping the app, so that no request in
  // flight is cut.
  bool WaitIdle(const std::string& app, int timeout_ms);

  // Certificate renewal: handshakes on the node channel and tunnels opened
  // after this use `id`; connections in flight keep theirs. An invalid
  // identity is refused and the current one stays.
  Status SetIdentity(const TlsClientIdentity& id);

  HttpProxy& public_proxy();
  StreamProxy& streams();
  // HTTP listeners, then the node channel, then the stream listeners.
  std::vector<net::HostPort> bound() const;
  // /metrics text of every engine.
  std::string MetricsText() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hc::proxy
