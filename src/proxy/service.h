// The proxy as a node runs it: two HttpProxy instances fed from the cluster
// state.
//
// - The public proxy (proxy_listen) accepts any app's requests: an app whose
//   primary runs on this node goes to the app's port on loopback; any other
//   goes to the internal proxy of the node that hosts it.
// - The internal proxy (proxy_internal_port on the node's address) routes
//   only to apps running on this node, so a request crosses at most one
//   node and can never loop, whatever two nodes believe for a moment.
//
// Routes follow placement/ (which node is primary, with its epoch),
// status/<this node>/ (the local app's port once it runs at that epoch),
// apps/ (domains and aliases) and nodes/ (where peers are), through
// resuming watches; each change rebuilds both tables (cheap) and swaps them
// in; connections in flight keep their backend.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cluster/cluster_store.h"
#include "proxy/http_proxy.h"

namespace hc::proxy {

struct ProxyServiceOptions {
  std::string node_id;
  ProxyOptions public_proxy;    // listen: where clients come in
  ProxyOptions internal_proxy;  // listen: <address>:<proxy_internal_port>
};

// The two routing tables for one node, from a view and the node's own
// observed status (a pure function, unit-tested).
struct NodeRoutes {
  std::vector<RouteSpec> public_routes;
  std::vector<RouteSpec> internal_routes;
  std::vector<std::string> warnings;  // domains claimed twice, apps not running yet
};
NodeRoutes RoutesFor(const std::string& node_id, const cluster::ClusterView& view,
                     const std::vector<cluster::AppObserved>& local_status);

class ProxyService {
 public:
  ProxyService(cluster::ClusterStore* cs, ProxyServiceOptions opts);
  ~ProxyService();  // Stop()
  // Binds both proxies (errors name the address), then follows the state.
  Status Start();
  void Stop();
  HttpProxy& public_proxy();
  std::vector<net::HostPort> bound() const;  // public listeners, then the internal one

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hc::proxy
