// The DNS server as a node runs it: reads nodes/ and apps/ from the cluster
// state, keeps them current with watches, rebuilds the zones when their
// content changes (the SOA serial is then the etcd revision of the change,
// so nodes that saw the same history agree on it, and it only grows) and
// swaps the compiled answers into the running server.
//
// Until the first read of the state succeeds, queries get SERVFAIL (never a
// negative answer a resolver would cache).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cluster/cluster_store.h"
#include "dns/server.h"
#include "dns/zone.h"

namespace hc::dns {

struct DnsServiceStats {
  uint32_t serial = 0;
  int64_t rebuilds = 0;      // zones compiled since start
  double last_build_ms = 0;  // build + compile time of the last one
  size_t names = 0;
  size_t image_bytes = 0;
  ServerStats server;
};

class DnsService {
 public:
  DnsService(cluster::ClusterStore* cs, DnsSettings settings, ServerOptions server);
  ~DnsService();  // Stop()

  // Binds the listeners (errors say which address and what to do) and starts
  // following the cluster state in the background.
  Status Start();
  void Stop();

  // The zones currently served (nullptr before the first read).
  std::shared_ptr<const ZoneSet> zones() const;
  DnsServiceStats stats() const;
  std::vector<net::HostPort> bound() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The DNS counters in the Prometheus text format (GET /metrics):
// hc_dns_queries_total{transport}, hc_dns_responses_total,
// hc_dns_dropped_total, hc_dns_tcp_connections_total, hc_dns_zone_serial,
// hc_dns_zone_rebuilds_total, hc_dns_zone_build_seconds, hc_dns_names.
std::string PrometheusText(const DnsServiceStats& s);

// Converts cluster state into the zone builder's input (live nodes with
// their public addresses, apps with domains and aliases).
void ZoneInputOf(const cluster::ClusterView& view, std::vector<NodeEntry>* nodes,
                 std::vector<AppEntry>* apps);

}  // namespace hc::dns
