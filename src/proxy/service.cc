#include "proxy/service.h"

#include <chrono>
#include <mutex>
#include <set>
#include <thread>

#include "cluster/view_follower.h"
#include "common/log.h"
#include "proxy/metrics.h"

namespace hc::proxy {

namespace {

constexpr const char* kAlpnHttp = "hc-http";
constexpr const char* kAlpnStream = "hc-stream";

// Requests the proxy lets through to one of the app's processes at once.
// The `static` template serves with busybox httpd, which listens with a
// backlog of 9 and forks per connection: under a burst (the requests a move
// held, released at once) its accept queue overflows, the kernel drops the
// SYNs, and each such request waits a full second for TCP to retransmit.
// Queued in the proxy instead, they wait only for a free place.
uint32_t BackendConnections(const cluster::AppDef& app) {
  if (app.template_name == "static" && app.command.empty()) return 8;
  return 0;
}

}  // namespace

NodeRoutes RoutesFor(const std::string& node_id, const cluster::ClusterView& view,
                     const std::vector<cluster::AppObserved>& local_status,
                     const std::vector<cluster::AppCertificate>& certs) {
  NodeRoutes out;
  std::set<std::string> claimed;
  std::set<uint16_t> ports;
  std::map<std::string, const cluster::AppCertificate*> cert_of;
  for (const auto& c : certs) cert_of[c.app] = &c;
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
    net::HostPort backend;
    bool hop = false;
    if (p->second.primary == node_id) {
      const cluster::AppObserved* st = nullptr;
      for (const auto& o : local_status)
        if (o.app == name && o.epoch == p->second.epoch && o.port != 0) st = &o;
      if (st) {
        backend = net::HostPort{"127.0.0.1", st->port};
      } else {
        out.warnings.push_back("app " + name + " is not running here yet (held)");
        out.starting.push_back(name);
        backend = net::HostPort{"127.0.0.1", 9};  // never used while held
      }
    } else {
      auto n = view.nodes.find(p->second.primary);
      if (n == view.nodes.end() || n->second.proxy_port == 0) {
        out.warnings.push_back("app " + name + ": its node " + p->second.primary +
                               " is gone or runs no proxy");
        continue;
      }
      backend = net::HostPort{n->second.address, n->second.proxy_port};
      hop = true;
      out.channel_nodes[backend.ToString()] = n->first;
    }
    const std::string protocol = cluster::AppProtocol(app);
    if (protocol == "http" && !names.empty()) {
      const uint32_t cap = hop ? 0 : BackendConnections(app);
      out.public_routes.push_back({name, names, backend, hop, cap});
      if (!hop) out.internal_routes.push_back({name, names, backend, false, cap});
      if (auto c = cert_of.find(name); c != cert_of.end()) {
        out.certs.push_back(CertSpec{name, names, c->second->cert_pem, c->second->key_pem});
      }
    }
    StreamRouteSpec s{name, backend, hop, {}, {}, {}, {}, {}};
    if (protocol == "postgres") s.databases = {name};
    if (protocol == "imap") s.imap_domains = app.domains;
    if (protocol == "pop3") s.pop3_domains = app.domains;
    if (protocol == "https") s.tls_passthrough = names;
    for (uint16_t port : app.tcp_ports) {
      if (ports.insert(port).second) {
        s.tcp_ports.push_back(port);
      } else {
        out.warnings.push_back("tcp port " + std::to_string(port) + " of app " + name +
                               " is claimed by another app too; routed to the first");
      }
    }
    if (!s.databases.empty() || !s.imap_domains.empty() || !s.pop3_domains.empty() ||
        !s.tls_passthrough.empty() || !s.tcp_ports.empty()) {
      out.streams.push_back(std::move(s));
    }
  }
  return out;
}

struct ProxyService::Impl {
  cluster::ClusterStore* cs;
  const ProxyServiceOptions opts;
  HttpProxy pub;
  HttpProxy internal;
  TlsTerminator tls_public;  // TLS from clients, after StreamProxy saw the SNI
  TlsTerminator channel;     // the node channel: mutual TLS from other nodes
  StreamProxy streams;
  TlsTunnels tunnels;  // to other nodes' channels
  cluster::ViewFollower follower;

  std::mutex mu;
  std::set<std::string> local_holds;                           // GUARDED_BY(mu)
  std::set<std::string> applied_holds;                         // GUARDED_BY(mu)
  std::set<std::string> etcd_holds;                            // GUARDED_BY(mu)
  std::set<std::string> starting_holds;                        // GUARDED_BY(mu)
  std::set<std::string> applied_inner_holds;                   // GUARDED_BY(mu)
  std::set<std::pair<std::string, std::string>> open_tunnels;  // follower thread: (remote, alpn)
  std::vector<CertSpec> certs_in_use;                          // follower thread

  // The internal engine's clients are other nodes' proxies: a local backend
  // that is down is for them to retry elsewhere (see close_when_backend_down).
  static ProxyOptions Internal(ProxyOptions o) {
    o.close_when_backend_down = true;
    return o;
  }

  Impl(cluster::ClusterStore* c, ProxyServiceOptions o)
      : cs(c),
        opts(std::move(o)),
        pub(opts.public_proxy),
        internal(Internal(opts.internal_proxy)),
        tls_public(TlsTerminatorOptions{.workers = 1},
                   [this](UniqueFd fd, const TlsConnInfo& info) {
                     pub.Adopt(std::move(fd), info.client.host, true);
                   }),
        channel(TlsTerminatorOptions{.listen = {opts.node_channel}, .workers = 1},
                [this](UniqueFd fd, const TlsConnInfo& info) { FromChannel(std::move(fd), info); }),
        streams(opts.streams,
                [this](UniqueFd fd, std::string bytes, const net::HostPort& client) {
                  tls_public.Adopt(std::move(fd), std::move(bytes), client);
                }),
        tunnels(opts.identity),
        follower(c, {.name = "proxy",
                     .prefixes = {c->NodesPrefix(), c->AppsPrefix(), c->PlacementsPrefix()},
                     .extra_prefixes = {StatusPrefix(c, opts.node_id), c->CertsPrefix(),
                                        c->HoldsPrefix()},
                     .rebuild = [this] { Rebuild(); },
                     .delay = [] { return std::chrono::milliseconds(10); }}) {}

  static std::string StatusPrefix(cluster::ClusterStore* c, const std::string& node) {
    return c->StatusPrefix() + node + "/";
  }

  void FromChannel(UniqueFd fd, const TlsConnInfo& info) {
    // No ALPN is HTTP too (curl --no-alpn, for people looking at a node).
    if (info.alpn == kAlpnHttp || info.alpn.empty())
      return internal.Adopt(std::move(fd), info.client.host, false);
    if (info.alpn == kAlpnStream) {
      return streams.Adopt(std::move(fd), info.client.host, StreamProtocol::kHop);
    }
    LogWarn("proxy: node channel: %s (%s) asked for protocol '%s'; closed",
            info.client.ToString().c_str(), info.peer_cn.c_str(), info.alpn.c_str());
  }

  static Result<std::shared_ptr<const CertTable>> ChannelCerts(const TlsClientIdentity& id) {
    TlsServerPolicy policy{id.ca_pem, {kAlpnHttp, kAlpnStream}};
    return CertTable::Build({}, CertSpec{"node", {}, id.cert_pem, id.key_pem}, policy);
  }

  // Replaces hop backends by the local end of a tunnel to that node.
  template <typename Spec>
  bool Tunnel(std::vector<Spec>* specs, const NodeRoutes& r, const char* alpn,
              std::set<std::pair<std::string, std::string>>* used) {
    for (Spec& s : *specs) {
      if (!s.hop) continue;
      std::string remote = s.backend.ToString();
      auto node = r.channel_nodes.find(remote);
      if (node == r.channel_nodes.end()) return false;
      auto local = tunnels.Open(
          TlsTunnelOptions{.remote = s.backend, .expect_server_name = node->second, .alpn = alpn});
      if (!local.ok()) {
        LogWarn("proxy: no tunnel to %s: %s", remote.c_str(), local.status().ToString().c_str());
        return false;
      }
      used->insert({remote, alpn});
      s.backend = *local;
    }
    return true;
  }

  void Rebuild() {
    std::set<std::string> held;
    NodeRoutes r = follower.Read(
        [&](const cluster::ClusterView& view, const cluster::ViewFollower::Extra& extra) {
          std::vector<cluster::AppObserved> st;
          std::vector<cluster::AppCertificate> certs;
          if (auto e = extra.find(StatusPrefix(cs, opts.node_id)); e != extra.end()) {
            for (const auto& [app, json] : e->second)
              if (auto o = cluster::AppObservedFromJson(json); o.ok()) st.push_back(*o);
          }
          if (auto e = extra.find(cs->CertsPrefix()); e != extra.end()) {
            for (const auto& [app, json] : e->second) {
              if (auto c = cluster::AppCertificateFromJson(json); c.ok()) {
                certs.push_back(*c);
              } else {
                LogWarn("proxy: certificate of %s unreadable: %s", app.c_str(),
                        c.status().ToString().c_str());
              }
            }
          }
          if (auto e = extra.find(cs->HoldsPrefix()); e != extra.end()) {
            for (const auto& [app, json] : e->second) held.insert(app);
          }
          return RoutesFor(opts.node_id, view, st, certs);
        });
    std::set<std::pair<std::string, std::string>> used;
    if (!Tunnel(&r.public_routes, r, kAlpnHttp, &used) ||
        !Tunnel(&r.streams, r, kAlpnStream, &used)) {
      LogWarn("proxy: routes not updated (node channel)");
      return;
    }
    auto pt = RouteTable::Build(r.public_routes);
    auto it = RouteTable::Build(r.internal_routes);
    auto st = StreamRoutes::Build(r.streams);
    if (!pt.ok() || !it.ok() || !st.ok()) {
      Status s = !pt.ok() ? pt.status() : !it.ok() ? it.status() : st.status();
      LogWarn("proxy: routes not updated: %s", s.ToString().c_str());
      return;
    }
    // Certificates: a new table only when they changed (building one parses
    // every PEM).
    bool certs_changed = r.certs.size() != certs_in_use.size();
    for (size_t i = 0; !certs_changed && i < r.certs.size(); ++i) {
      const CertSpec &a = r.certs[i], &b = certs_in_use[i];
      certs_changed =
          a.id != b.id || a.names != b.names || a.cert_pem != b.cert_pem || a.key_pem != b.key_pem;
    }
    if (certs_changed) {
      auto ct = CertTable::Build(r.certs, opts.default_cert, TlsServerPolicy{});
      if (ct.ok()) {
        tls_public.SetCerts(*ct);
        certs_in_use = r.certs;
      } else {
        LogWarn("proxy: certificates not updated: %s", ct.status().ToString().c_str());
      }
    }
    pub.SetRoutes(*pt);
    internal.SetRoutes(*it);
    streams.SetRoutes(*st);
    for (const auto& t : open_tunnels) {
      if (used.count(t) != 0) continue;
      auto hp = net::ParseHostPort(t.first);
      if (hp.ok()) tunnels.Close(*hp, t.second);
    }
    open_tunnels = std::move(used);
    {
      std::lock_guard<std::mutex> l(mu);
      etcd_holds = std::move(held);
      starting_holds = std::set<std::string>(r.starting.begin(), r.starting.end());
      ApplyHolds();
    }
    for (const auto& w : r.warnings) LogDebug("proxy: %s", w.c_str());
    LogDebug("proxy: %zu routes (%zu local), %zu stream routes", (*pt)->size(), (*it)->size(),
             r.streams.size());
  }

  // REQUIRES: mu held.
  // Holds at the edge (holds/<app>: the public engines) and holds of apps
  // starting here (every engine, the internal one too: requests other nodes
  // forward must wait for the app). The internal engine does not hold on
  // holds/<app>: what other nodes' edges sent before they held is in flight
  // to the app here, and a move waits for it (WaitIdle) before stopping it;
  // held here, it would find no local route once the app moved.
  void ApplyHolds() {
    std::set<std::string> edge = local_holds;
    edge.insert(etcd_holds.begin(), etcd_holds.end());
    edge.insert(starting_holds.begin(), starting_holds.end());
    std::set<std::string> inner = local_holds;
    inner.insert(starting_holds.begin(), starting_holds.end());
    for (const auto& app : edge) {
      if (applied_holds.count(app) != 0) continue;
      pub.Hold(app);
      streams.Hold(app);
      LogInfo("proxy: holding new requests of %s", app.c_str());
    }
    for (const auto& app : applied_holds) {
      if (edge.count(app) != 0) continue;
      pub.Release(app);
      streams.Release(app);
      LogInfo("proxy: released %s", app.c_str());
    }
    for (const auto& app : inner)
      if (applied_inner_holds.count(app) == 0) internal.Hold(app);
    for (const auto& app : applied_inner_holds)
      if (inner.count(app) == 0) internal.Release(app);
    applied_holds = std::move(edge);
    applied_inner_holds = std::move(inner);
  }
};

bool ProxyService::WaitIdle(const std::string& app, int timeout_ms) {
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (impl_->pub.InFlight(app) + impl_->internal.InFlight(app) > 0) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

ProxyService::ProxyService(cluster::ClusterStore* cs, ProxyServiceOptions opts)
    : impl_(std::make_unique<Impl>(cs, std::move(opts))) {}

ProxyService::~ProxyService() {
  Stop();
}

Status ProxyService::Start() {
  auto empty = RouteTable::Build({});
  HC_RETURN_IF_ERROR(empty.status());
  auto no_streams = StreamRoutes::Build({});
  HC_RETURN_IF_ERROR(no_streams.status());
  auto certs = CertTable::Build({}, impl_->opts.default_cert, TlsServerPolicy{});
  HC_RETURN_IF_ERROR(certs.status().Annotate("proxy: default certificate"));
  auto channel_certs = Impl::ChannelCerts(impl_->opts.identity);
  HC_RETURN_IF_ERROR(channel_certs.status().Annotate("proxy: node certificate"));
  Status s = impl_->pub.Start(*empty).Annotate("proxy");
  if (s.ok()) s = impl_->internal.Start(*empty).Annotate("internal proxy");
  if (s.ok()) s = impl_->tls_public.Start(*certs).Annotate("TLS");
  if (s.ok()) s = impl_->tunnels.Start().Annotate("node channel tunnels");
  if (s.ok()) s = impl_->channel.Start(*channel_certs).Annotate("node channel");
  if (s.ok()) s = impl_->streams.Start(*no_streams).Annotate("stream proxy");
  if (!s.ok()) {
    Stop();
    return s;
  }
  impl_->follower.Start();
  return Status::Ok();
}

void ProxyService::Stop() {
  impl_->follower.Stop();
  impl_->streams.Stop();
  impl_->channel.Stop();
  impl_->tls_public.Stop();
  impl_->tunnels.Stop();
  impl_->pub.Stop();
  impl_->internal.Stop();
}

void ProxyService::Hold(const std::string& app) {
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->local_holds.insert(app);
  impl_->ApplyHolds();
}

void ProxyService::Release(const std::string& app) {
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->local_holds.erase(app);
  impl_->ApplyHolds();
}

Status ProxyService::SetIdentity(const TlsClientIdentity& id) {
  HC_ASSIGN_OR_RETURN(auto certs, Impl::ChannelCerts(id));
  HC_RETURN_IF_ERROR(impl_->tunnels.SetIdentity(id));
  impl_->channel.SetCerts(std::move(certs));
  LogInfo("proxy: node channel uses the renewed certificate");
  return Status::Ok();
}

HttpProxy& ProxyService::public_proxy() {
  return impl_->pub;
}

StreamProxy& ProxyService::streams() {
  return impl_->streams;
}

std::vector<net::HostPort> ProxyService::bound() const {
  std::vector<net::HostPort> out = impl_->pub.bound();
  for (const auto& b : impl_->channel.bound()) out.push_back(b);
  for (const auto& b : impl_->streams.bound()) out.push_back(b);
  return out;
}

std::string ProxyService::MetricsText() const {
  return PrometheusText(impl_->pub.stats()) + PrometheusText(impl_->streams.stats());
}

}  // namespace hc::proxy
