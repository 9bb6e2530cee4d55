// The REST API every node serves (docs/api.md). Any node answers any call:
// reads come from etcd, writes go to etcd (apps/), and the leader and the
// agents act on them. Input is validated before anything is written.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cluster/cluster_store.h"
#include "dns/zone.h"
#include "net/http.h"
#include "pki/cert.h"
#include "replication/service.h"

namespace hc::api {

struct ApiOptions {
  std::string node_id;
  std::string version;
  std::string token;  // "" = no Authorization required
  // The zones this node's DNS server answers from; unset or nullptr = DNS off.
  std::function<std::shared_ptr<const dns::ZoneSet>()> dns_zones;
  // The node's metrics in the Prometheus text format; unset = 404.
  std::function<std::string()> metrics;
  // The cluster CA (certificate and key) this node holds, to admit new nodes
  // and issue join tokens; unset = this node cannot (503).
  std::function<Result<pki::CaMaterial>()> cluster_ca;
  // What this node knows of an app's replication; unset = 503.
  std::function<replication::AppReplicationStatus(const std::string& app)> replication;
  // Scrub an app's volume here now (and repair from other nodes); unset = 503.
  std::function<Result<replication::ScrubOutcome>(const std::string& app)> scrub;
  // Node-to-node calls of the leader (docs/api.md, "Node calls"); unset = 503.
  // Newest snapshot here (ns) of each of these apps.
  std::function<std::map<std::string, int64_t>(const std::vector<std::string>& apps)>
      newest_snapshots;
  // Push the app's newest state to `peer` now (pre-copy of a move).
  std::function<Result<replication::SyncResult>(const std::string& app, const std::string& peer)>
      sync;
  // Stop the app here, keep it stopped up to max_ms, push the last increment.
  std::function<Result<replication::SyncResult>(const std::string& app, const std::string& peer,
                                                int64_t max_ms)>
      handoff;
  // The move did not switch: run the app here again.
  std::function<Status(const std::string& app)> resume;
  // A move's target, before the hold: create the app's container here (not
  // run it) so that the start after the switch takes milliseconds.
  std::function<Status(const std::string& app, int64_t max_ms)> prepare;
};

class Api {
 public:
  Api(ApiOptions opts, cluster::ClusterStore* cs);
  // Thread-safe; the HTTP server calls it from its connection threads.
  net::HttpResponse Handle(const net::HttpRequest& req);

 private:
  net::HttpResponse Route(const net::HttpRequest& req);
  net::HttpResponse GetCluster();
  net::HttpResponse ListApps();
  net::HttpResponse GetApp(const std::string& name);
  net::HttpResponse Replication(const net::HttpRequest& req, const std::string& name);
  net::HttpResponse Scrub(const net::HttpRequest& req, const std::string& name);
  net::HttpResponse CreateApp(const net::HttpRequest& req);
  net::HttpResponse DeleteApp(const std::string& name);
  net::HttpResponse AppSub(const net::HttpRequest& req, const std::string& name,
                           const std::string& what);
  net::HttpResponse ListNodes();
  net::HttpResponse NodeCall(const net::HttpRequest& req, const std::string& what);
  net::HttpResponse Move(const net::HttpRequest& req, const std::string& name);
  net::HttpResponse Drain(const std::string& node, bool drained);
  net::HttpResponse GetDns();
  net::HttpResponse CreateJoinToken(const net::HttpRequest& req);
  net::HttpResponse DeleteJoinToken(const std::string& id);
  net::HttpResponse Join(const net::HttpRequest& req);

  ApiOptions opts_;
  cluster::ClusterStore* cs_;
};

// Maps a Status to the HTTP error response {"error":{"code","message"}}.
net::HttpResponse ErrorResponse(const Status& s);

}  // namespace hc::api
