#include "proxy/service.h"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

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

  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  bool dirty = false;
  cluster::ClusterView view;
  std::map<std::string, cluster::AppObserved> local;  // by app
  std::thread thread;

  Impl(cluster::ClusterStore* c, ProxyServiceOptions o)
      : cs(c), opts(std::move(o)), pub(opts.public_proxy), internal(opts.internal_proxy) {}

  std::string LocalStatusPrefix() const { return cs->StatusPrefix() + opts.node_id + "/"; }

  // Reads the view and this node's status; retries until it works or stop.
  bool Load() {
    while (true) {
      {
        std::lock_guard<std::mutex> l(mu);
        if (stop) return false;
      }
      auto v = cs->LoadView();
      auto st = v.ok() ? cs->etcd()->GetPrefix(LocalStatusPrefix(), 0, v->revision)
                       : Result<cluster::RangeResult>(v.status());
      if (v.ok() && st.ok()) {
        std::lock_guard<std::mutex> l(mu);
        view = std::move(*v);
        local.clear();
        for (const auto& kv : st->kvs)
          if (auto o = cluster::AppObservedFromJson(kv.value); o.ok()) local[o->app] = *o;
        dirty = true;
        return true;
      }
      LogWarn("proxy: cannot read the cluster state: %s",
              (v.ok() ? st.status() : v.status()).ToString().c_str());
      std::unique_lock<std::mutex> l(mu);
      cv.wait_for(l, milliseconds(500), [&] { return stop; });
    }
  }

  void Rebuild() {
    NodeRoutes r;
    {
      std::lock_guard<std::mutex> l(mu);
      std::vector<cluster::AppObserved> st;
      for (const auto& [app, o] : local) st.push_back(o);
      r = RoutesFor(opts.node_id, view, st);
      dirty = false;
    }
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

  void Run() {
    if (!Load()) return;
    int64_t rev;
    {
      std::lock_guard<std::mutex> l(mu);
      rev = view.revision;
    }
    std::string status_prefix = LocalStatusPrefix();
    auto on_events = [&](const std::vector<cluster::WatchEvent>& evs, int64_t) {
      std::lock_guard<std::mutex> l(mu);
      for (const auto& e : evs) {
        if (!e.kv.key.starts_with(status_prefix)) continue;
        std::string app = e.kv.key.substr(status_prefix.size());
        if (e.type == cluster::WatchEvent::kDelete) {
          local.erase(app);
        } else if (auto o = cluster::AppObservedFromJson(e.kv.value); o.ok()) {
          local[app] = *o;
        }
      }
      cs->ApplyEvents(evs, &view);
      dirty = true;
      cv.notify_all();
    };
    auto resync = [&]() -> int64_t {
      Load();
      std::lock_guard<std::mutex> l(mu);
      return view.revision;
    };
    std::vector<std::unique_ptr<cluster::Watch>> watches;
    for (const auto& p :
         {cs->NodesPrefix(), cs->AppsPrefix(), cs->PlacementsPrefix(), status_prefix})
      watches.push_back(
          std::make_unique<cluster::Watch>(cs->etcd(), p, rev + 1, on_events, resync));
    while (true) {
      {
        std::unique_lock<std::mutex> l(mu);
        cv.wait(l, [&] { return stop || dirty; });
        if (stop) break;
      }
      std::this_thread::sleep_for(milliseconds(10));  // let a burst land
      Rebuild();
    }
    for (auto& w : watches) w->Stop();
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
  impl_->thread = std::thread([this] { impl_->Run(); });
  return Status::Ok();
}

void ProxyService::Stop() {
  {
    std::lock_guard<std::mutex> l(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
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
