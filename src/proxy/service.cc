#include "proxy/service.h"

#include <chrono>
#include <mutex>
#include <set>

#include "cluster/view_follower.h"
#include "common/log.h"

namespace hc::proxy {

using std::chrono::milliseconds;

NodeRoutes RoutesFor(const std::string& node_id, const cluster::ClusterView& view,
                     const std::vector<cluster::AppObserved>& local_status) {
  NodeRoutes out;
  std::set<std::string> claimed;
  for (const auto& [name, app] : view.apps) {
    auto p = view.placements.find(name);
    if (p == view.placements.end()) continue;  // not placed yet: unknown host
    std::vector<std::string> names;
    for (const auto& list : {app.domains, app.aliases})
      for (const auto& d : list) {
        if (claimed.insert(d).second) {
          names.push_back(d);
        } else {
          out.warnings.push_back("domain " + d + " of app " + name +
                                 " is claimed by another app too; routed to the first");
        }
      }
    if (names.empty()) continue;
    if (p->second.primary == node_id) {
      const cluster::AppObserved* st = nullptr;
      for (const auto& o : local_status)
        if (o.app == name && o.epoch == p->second.epoch && o.port != 0) st = &o;
      if (!st) {
        out.warnings.push_back("app " + name + " is not running here yet");
        continue;
      }
      RouteSpec local{name, names, net::HostPort{"127.0.0.1", st->port}};
      out.public_routes.push_back(local);
      out.internal_routes.push_back(local);
      continue;
    }
    auto n = view.nodes.find(p->second.primary);
    if (n == view.nodes.end() || n->second.proxy_port == 0) {
      out.warnings.push_back("app " + name + ": its node " + p->second.primary +
                             " is gone or runs no proxy");
      continue;
    }
    out.public_routes.push_back({name, names, {n->second.address, n->second.proxy_port}});
  }
  return out;
}

struct ProxyService::Impl {
  cluster::ClusterStore* cs;
  ProxyServiceOptions opts;
  HttpProxy pub;
  HttpProxy internal;
  cluster::ViewFollower follower;

  Impl(cluster::ClusterStore* c, ProxyServiceOptions o)
      : cs(c),
        opts(std::move(o)),
        pub(opts.public_proxy),
        internal(opts.internal_proxy),
        follower(c, {.name = "proxy",
                     .prefixes = {c->NodesPrefix(), c->AppsPrefix(), c->PlacementsPrefix()},
                     .extra_prefix = c->StatusPrefix() + opts.node_id + "/",
                     .rebuild = [this] { Rebuild(); },
                     .delay = [] { return std::chrono::milliseconds(10); }}) {}

  void Rebuild() {
    NodeRoutes r = follower.Read(
        [&](const cluster::ClusterView& view, const std::map<std::string, std::string>& local) {
          std::vector<cluster::AppObserved> st;
          for (const auto& [app, json] : local)
            if (auto o = cluster::AppObservedFromJson(json); o.ok()) st.push_back(*o);
          return RoutesFor(opts.node_id, view, st);
        });
    auto pt = RouteTable::Build(r.public_routes);
    auto it = RouteTable::Build(r.internal_routes);
    if (!pt.ok() || !it.ok()) {
      LogWarn("proxy: routes not updated: %s",
              (pt.ok() ? it.status() : pt.status()).ToString().c_str());
      return;
    }
    pub.SetRoutes(*pt);
    internal.SetRoutes(*it);
    LogDebug("proxy: %zu routes (%zu local)", (*pt)->size(), (*it)->size());
  }
};

ProxyService::ProxyService(cluster::ClusterStore* cs, ProxyServiceOptions opts)
    : impl_(std::make_unique<Impl>(cs, std::move(opts))) {}

ProxyService::~ProxyService() {
  Stop();
}

Status ProxyService::Start() {
  auto empty = RouteTable::Build({});
  HC_RETURN_IF_ERROR(empty.status());
  HC_RETURN_IF_ERROR(impl_->pub.Start(*empty).Annotate("proxy"));
  Status s = impl_->internal.Start(*empty);
  if (!s.ok()) {
    impl_->pub.Stop();
    return s.Annotate("internal proxy");
  }
  impl_->follower.Start();
  return Status::Ok();
}

void ProxyService::Stop() {
  impl_->follower.Stop();
  impl_->pub.Stop();
  impl_->internal.Stop();
}

HttpProxy& ProxyService::public_proxy() {
  return impl_->pub;
}

std::vector<net::HostPort> ProxyService::bound() const {
  std::vector<net::HostPort> out = impl_->pub.bound();
  for (const auto& b : impl_->internal.bound()) out.push_back(b);
  return out;
}

}  // namespace hc::proxy
