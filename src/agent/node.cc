#include "agent/node.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <mutex>

#include "agent/agent.h"
#include "agent/identity.h"
#include "agent/leader.h"
#include "api/api.h"
#include "cluster/cluster_store.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/shared_slot.h"
#include "dns/service.h"
#include "net/http_server.h"
#include "pki/identity.h"
#include "proxy/metrics.h"
#include "proxy/service.h"
#include "replication/service.h"
#include "runtime/fence.h"
#include "runtime/runtime.h"
#include "storage/store.h"

namespace hc::agent {
namespace {

constexpr const char* kVersion = "0.1.0";

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

std::string HostName() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "node";
  return buf;
}

}  // namespace

Result<std::string> LoadOrCreateNodeId(const Config& cfg) {
  std::string path = JoinPath(cfg.data_dir, "node-id");
  if (PathExists(path)) {
    HC_ASSIGN_OR_RETURN(auto text, ReadFileToString(path));
    std::string id = Trim(text);
    HC_RETURN_IF_ERROR(cluster::ValidateNodeId(id).Annotate(path));
    if (!cfg.node_id.empty() && cfg.node_id != id)
      return InvalidArgument(
          "node_id '" + cfg.node_id + "' differs from the id '" + id + "' stored in " + path +
          "; a node keeps its id for life (remove the setting, or use another data_dir)");
    return id;
  }
  std::string id = cfg.node_id;
  if (id.empty()) {
    unsigned char r[5];
    if (getrandom(r, sizeof r, 0) != sizeof r) return ErrnoStatus("getrandom", errno);
    char hex[16];
    std::snprintf(hex, sizeof hex, "n%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4]);
    id = hex;
  }
  HC_RETURN_IF_ERROR(WriteFileAtomic(path, id + "\n", true));
  return id;
}

struct Node::Impl {
  Config cfg;
  int wake[2] = {-1, -1};
  std::atomic<bool> shutdown{false};
};

Node::Node(Config cfg) : impl_(std::make_unique<Impl>()) {
  impl_->cfg = std::move(cfg);
  if (pipe2(impl_->wake, O_CLOEXEC | O_NONBLOCK) != 0) impl_->wake[0] = impl_->wake[1] = -1;
}

Node::~Node() {
  for (int fd : impl_->wake)
    if (fd >= 0) close(fd);
}

void Node::Shutdown() {
  impl_->shutdown.store(true);
  if (impl_->wake[1] >= 0) {
    char c = 1;
    (void)!write(impl_->wake[1], &c, 1);
  }
}

Status Node::Run() {
  const Config& cfg = impl_->cfg;
  HC_RETURN_IF_ERROR(MakeDirs(cfg.data_dir, 0755));
  HC_ASSIGN_OR_RETURN(UniqueFd lock,
                      OpenFile(JoinPath(cfg.data_dir, "hcd.lock"), O_RDWR | O_CREAT, 0644));
  if (flock(lock.get(), LOCK_EX | LOCK_NB) != 0)
    return Conflict("another hcd is running with data_dir " + cfg.data_dir +
                    " (stop it first, or give this one its own data_dir)");
  HC_ASSIGN_OR_RETURN(std::string node_id, LoadOrCreateNodeId(cfg));

  // Local parts: volumes and the runtime.
  storage::StoreConfig sc;
  bool zfs =
      cfg.storage_backend == "zfs" || (cfg.storage_backend == "auto" && !cfg.zfs_dataset.empty());
  sc.backend = zfs ? "zfs" : "dir";
  if (zfs)
    sc.dataset = cfg.zfs_dataset;
  else
    sc.root = JoinPath(cfg.data_dir, "volumes");
  HC_ASSIGN_OR_RETURN(auto volumes, storage::OpenStore(sc));
  runtime::RuntimeConfig rc;
  rc.backend = cfg.runtime_backend;
  rc.state_dir = JoinPath(cfg.data_dir, "runtime");
  rc.cgroup_parent = cfg.cgroup_parent;
  // Self-fencing (docs/design.md, "Failover and self-fencing"): every app
  // supervisor kills its app when this deadline passes; hcd extends it after
  // each lease renewal, to (renewal sent) + TTL - margin, so apps stop before
  // etcd can expire the lease and another node can take over.
  std::string data_dir_abs = cfg.data_dir;
  if (data_dir_abs.empty() || data_dir_abs[0] != '/') {
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) return ErrnoStatus("getcwd", errno);
    data_dir_abs = JoinPath(cwd, cfg.data_dir);
  }
  const std::string fence_path = JoinPath(data_dir_abs, "fence");
  const int64_t fence_ns =
      int64_t{cfg.lease_ttl_seconds} * 1'000'000'000 -
      std::max<int64_t>(500'000'000, int64_t{cfg.lease_ttl_seconds} * 1'000'000'000 / 6);
  if (auto d = runtime::ReadFenceDeadline(fence_path);
      d.ok() && *d > runtime::BoottimeNowNs() + fence_ns) {
    // From before a reboot (CLOCK_BOOTTIME restarted): not ours to trust.
    HC_RETURN_IF_ERROR(runtime::WriteFenceDeadline(fence_path, 0));
  }
  rc.fence_file = fence_path;
  HC_ASSIGN_OR_RETURN(auto rt, runtime::OpenRuntime(rc));

  cluster::EtcdClient etcd({.endpoints = cfg.etcd_endpoints});
  cluster::ClusterStore cs(&etcd, cfg.etcd_prefix);

  // ---- Cluster PKI: this node's identity (agent/identity.h), before any
  // service starts. A node without a valid certificate does not start.
  // `identity` is what TLS uses (ca_pem, cert_pem, key_pem, node_id);
  // `identity_slot` always holds the current one (renewals replace it).
  IdentityOptions identity_opts;
  identity_opts.data_dir = cfg.data_dir;
  identity_opts.node_id = node_id;
  identity_opts.addresses.push_back(cfg.address);
  for (const auto& a : cfg.public_addresses)
    if (std::find(identity_opts.addresses.begin(), identity_opts.addresses.end(), a) ==
        identity_opts.addresses.end())
      identity_opts.addresses.push_back(a);
  HC_ASSIGN_OR_RETURN(identity_opts.join_token, JoinTokenOf(cfg));
  auto established = EstablishIdentity(identity_opts, &cs, &impl_->shutdown);
  if (impl_->shutdown.load()) return Status::Ok();
  if (!established.ok()) return established.status();
  const pki::NodeIdentity identity = std::move(*established);
  SharedSlot<const pki::NodeIdentity> identity_slot;
  identity_slot.Set(std::make_shared<const pki::NodeIdentity>(identity));
  // The proxy, once it runs, takes renewed certificates too.
  std::mutex renew_mu;
  proxy::ProxyService* renew_proxy = nullptr;                    // GUARDED_BY(renew_mu)
  replication::ReplicationService* renew_replication = nullptr;  // GUARDED_BY(renew_mu)
  IdentityRenewer identity_renewer(
      identity_opts, identity,
      [&identity_slot, &renew_mu, &renew_proxy,
       &renew_replication](const pki::NodeIdentity& renewed) {
        identity_slot.Set(std::make_shared<const pki::NodeIdentity>(renewed));
        std::lock_guard<std::mutex> l(renew_mu);
        if (renew_replication != nullptr) {
          Status r =
              renew_replication->SetIdentity({renewed.ca_pem, renewed.cert_pem, renewed.key_pem});
          if (!r.ok()) LogWarn("replication keeps its old certificate: %s", r.ToString().c_str());
        }
        if (renew_proxy == nullptr) return;
        Status s = renew_proxy->SetIdentity({renewed.ca_pem, renewed.cert_pem, renewed.key_pem});
        if (!s.ok()) LogWarn("proxy keeps its old certificate: %s", s.ToString().c_str());
      });
  const std::string pki_dir = JoinPath(cfg.data_dir, "pki");
  LogInfo("pki: node certificate for %s valid until %lld; cluster CA SHA-256 %s", node_id.c_str(),
          static_cast<long long>(identity.not_after),
          pki::FingerprintText(identity.ca_fingerprint).c_str());
  // ---- end of the cluster PKI block

  cluster::NodeInfo info;
  info.id = node_id;
  info.name = cfg.node_name.empty() ? HostName() : cfg.node_name;
  info.address = cfg.address;
  HC_ASSIGN_OR_RETURN(auto api_at, net::ParseHostPort(cfg.api_listen));
  info.api_port = api_at.port;
  info.datacenter = cfg.datacenter;
  info.memory_bytes = cfg.memory_bytes;
  info.cpu_millis = cfg.cpu_millis;
  info.version = kVersion;
  info.started_unix = time(nullptr);
  info.public_addresses = cfg.public_addresses;

  // The API first, so a taken port is reported before joining the cluster.
  std::string token;
  if (!cfg.api_token_file.empty()) {
    HC_ASSIGN_OR_RETURN(auto t, ReadFileToString(cfg.api_token_file));
    token = Trim(t);
    if (token.empty()) return InvalidArgument("api_token_file " + cfg.api_token_file + " is empty");
  }
  // DNS: bound before joining too (port 53 needs root or CAP_NET_BIND_SERVICE).
  std::unique_ptr<dns::DnsService> dns;
  if (!cfg.dns_zones.empty()) {
    dns::ServerOptions so;
    for (const auto& l : cfg.dns_listen) {
      HC_ASSIGN_OR_RETURN(auto hp, net::ParseHostPort(l, 53));
      so.listen.push_back(hp);
    }
    so.udp_workers = cfg.dns_workers;
    dns = std::make_unique<dns::DnsService>(&cs, DnsSettingsOf(cfg), so);
    HC_RETURN_IF_ERROR(dns->Start());
  }
  // The proxy: bound before joining as well (ports below 1024 need root).
  std::unique_ptr<proxy::ProxyService> http_proxy;
  if (cfg.proxy == "on") {
    proxy::ProxyServiceOptions po;
    po.node_id = node_id;
    for (const auto& l : cfg.proxy_listen) {
      HC_ASSIGN_OR_RETURN(auto hp, net::ParseHostPort(l, 80));
      po.public_proxy.listen.push_back(hp);
    }
    po.public_proxy.workers = cfg.proxy_workers;
    po.internal_proxy.workers = 1;
    po.node_channel = net::HostPort{cfg.address, static_cast<uint16_t>(cfg.proxy_internal_port)};
    const std::pair<const std::vector<std::string>*, proxy::StreamProtocol> streams[] = {
        {&cfg.proxy_tls_listen, proxy::StreamProtocol::kTls},
        {&cfg.proxy_postgres_listen, proxy::StreamProtocol::kPostgres},
        {&cfg.proxy_imap_listen, proxy::StreamProtocol::kImap},
        {&cfg.proxy_pop3_listen, proxy::StreamProtocol::kPop3}};
    for (const auto& [list, protocol] : streams) {
      if (list->size() == 1 && (*list)[0] == "off") continue;
      for (const auto& l : *list) {
        HC_ASSIGN_OR_RETURN(auto hp, net::ParseHostPort(l));
        po.streams.listen.push_back({hp, protocol});
      }
    }
    for (const auto& hp : po.public_proxy.listen) po.streams.tcp_hosts.push_back(hp.host);
    po.streams.workers = cfg.proxy_workers;
    po.streams.server_name = cfg.node_name.empty() ? node_id : cfg.node_name;
    po.identity = proxy::TlsClientIdentity{identity.ca_pem, identity.cert_pem, identity.key_pem};
    if (!cfg.proxy_tls_cert.empty()) {
      proxy::CertSpec def{"default", {}, "", ""};
      HC_ASSIGN_OR_RETURN(def.cert_pem, ReadFileToString(cfg.proxy_tls_cert));
      HC_ASSIGN_OR_RETURN(def.key_pem, ReadFileToString(cfg.proxy_tls_key));
      po.default_cert = std::move(def);
    }
    http_proxy = std::make_unique<proxy::ProxyService>(&cs, po);
    HC_RETURN_IF_ERROR(http_proxy->Start());
    {
      std::lock_guard<std::mutex> l(renew_mu);
      renew_proxy = http_proxy.get();
    }
    info.proxy_port = static_cast<uint16_t>(cfg.proxy_internal_port);
  }
  // Replication: its listener is bound before joining too.
  replication::ServiceOptions ro;
  ro.node_id = node_id;
  ro.listen = net::HostPort{cfg.address, static_cast<uint16_t>(cfg.replication_port)};
  ro.spool_dir = JoinPath(cfg.data_dir, "replication-spool");
  ro.identity = proxy::TlsClientIdentity{identity.ca_pem, identity.cert_pem, identity.key_pem};
  ro.default_interval_ms = int64_t{cfg.replication_interval_seconds} * 1000;
  ro.default_retention = cfg.retention;
  ro.limits.max_transfers = cfg.replication_max_transfers;
  ro.scrub_interval_ms = int64_t{cfg.scrub_interval_hours} * 3600 * 1000;
  ro.tunnel_host = "127.0.0.1";
  if (const char* t = std::getenv("HC_TEST_CORRUPT_NEXT_TRANSFER"); t && std::string(t) == "1") {
    LogWarn("test hook: the next replication transfer sent gets one byte flipped");
    ro.corrupt_next_transfer_for_test = true;
  }
  // The session's thread and the replication service look at these; they
  // are set after the agent and the leader start.
  std::atomic<Agent*> agent_ptr{nullptr};
  std::atomic<Leader*> leader_ptr{nullptr};
  ro.with_app_stopped = [&agent_ptr](const std::string& app,
                                     const std::function<Status()>& work) -> Status {
    Agent* a = agent_ptr.load();
    if (!a) return Unavailable("the agent is not running yet");
    return a->WithAppStopped(app, work);
  };
  auto replication =
      std::make_unique<replication::ReplicationService>(&cs, volumes.get(), rt.get(), ro);
  HC_RETURN_IF_ERROR(replication->Start());
  {
    std::lock_guard<std::mutex> l(renew_mu);
    renew_replication = replication.get();
  }
  info.replication_port = replication->bound().port;
  api::ApiOptions ao{.node_id = node_id, .version = kVersion, .token = token};
  ao.replication = [&replication](const std::string& app) { return replication->Describe(app); };
  ao.scrub = [&replication](const std::string& app) { return replication->ScrubNow(app); };
  // Moves and failovers: what the leader asks of this node.
  ao.newest_snapshots = [&replication](const std::vector<std::string>& apps) {
    return replication->NewestSnapshots(apps);
  };
  ao.sync = [&replication](const std::string& app, const std::string& peer) {
    return replication->SyncTo(app, peer, /*app_stopped=*/false);
  };
  ao.handoff = [&replication, &agent_ptr, &http_proxy](
                   const std::string& app, const std::string& peer,
                   int64_t max_ms) -> Result<replication::SyncResult> {
    Agent* a = agent_ptr.load();
    if (!a) return Unavailable("the agent is not running yet");
    // The hold is on: let the requests this node's proxies already sent to
    // the app finish before it stops.
    auto t0 = std::chrono::steady_clock::now();
    auto ms_since = [](std::chrono::steady_clock::time_point t) {
      return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::steady_clock::now() - t)
                                        .count());
    };
    if (http_proxy && !http_proxy->WaitIdle(app, 2000))
      LogWarn("move of %s: requests still in flight after 2 s; stopping it anyway", app.c_str());
    long long idle_ms = ms_since(t0);
    HC_RETURN_IF_ERROR(a->HoldForHandoff(app, max_ms));
    long long stop_ms = ms_since(t0);
    auto r = replication->SyncTo(app, peer, /*app_stopped=*/true);
    if (!r.ok()) a->ReleaseHandoff(app);  // the app runs here again
    LogInfo(
        "move of %s: handed off in %lld ms (in-flight requests done %lld, stopped %lld, "
        "last increment %s)",
        app.c_str(), ms_since(t0), idle_ms, stop_ms,
        r.ok() ? (std::to_string(r->bytes) + " bytes").c_str() : r.status().ToString().c_str());
    return r;
  };
  ao.resume = [&agent_ptr](const std::string& app) -> Status {
    Agent* a = agent_ptr.load();
    if (!a) return Unavailable("the agent is not running yet");
    a->ReleaseHandoff(app);
    return Status::Ok();
  };
  ao.prepare = [&agent_ptr](const std::string& app, int64_t max_ms) -> Status {
    Agent* a = agent_ptr.load();
    if (!a) return Unavailable("the agent is not running yet");
    return a->PrepareMove(app, max_ms);
  };
  ao.cluster_ca = [pki_dir] { return pki::PkiDir(pki_dir).LoadCa(); };
  if (dns) ao.dns_zones = [&dns] { return dns->zones(); };
  ao.metrics = [&dns, &http_proxy, &replication] {
    std::string m;
    if (http_proxy) m += http_proxy->MetricsText();
    m += replication->MetricsText();
    if (dns) m += dns::PrometheusText(dns->stats());
    return m;
  };
  api::Api api(ao, &cs);
  net::HttpServer server([&api](const net::HttpRequest& r) { return api.Handle(r); });
  HC_RETURN_IF_ERROR(server.Start(api_at).Annotate("REST API on " + cfg.api_listen));

  std::unique_ptr<Agent> agent;
  std::unique_ptr<Leader> leader;
  std::atomic<int64_t> lease{0};
  // Extended only while armed: armed at once when the apps were never
  // fenced (a quick restart of hcd, a short etcd hiccup), else only after the
  // agent re-read its assignments and stopped what is no longer ours.
  std::atomic<bool> fence_armed{false};
  auto extend_fence = [&](std::chrono::steady_clock::time_point sent) {
    int64_t sent_boot =
        runtime::BoottimeNowNs() - std::chrono::duration_cast<std::chrono::nanoseconds>(
                                       std::chrono::steady_clock::now() - sent)
                                       .count();
    Status s = runtime::WriteFenceDeadline(fence_path, sent_boot + fence_ns);
    if (!s.ok()) LogWarn("cannot extend the fence deadline: %s", s.ToString().c_str());
  };
  auto arm_after_resync = [&] {
    Agent* a = agent_ptr.load();
    if (!a) return;  // armed after the agent's first pass (below)
    a->ResyncThen([&fence_armed] {
      if (!fence_armed.exchange(true)) LogInfo("self-fencing lifted: assignments re-read");
    });
  };
  cluster::LeaseSession session(
      &etcd, cfg.lease_ttl_seconds,
      {.on_new =
           [&](int64_t id) {
             lease.store(id);
             Status s = cs.RegisterNode(info, id);
             if (!s.ok()) LogWarn("cannot register node: %s", s.ToString().c_str());
             auto d = runtime::ReadFenceDeadline(fence_path);
             if (s.ok() && d.ok() && *d > runtime::BoottimeNowNs()) {
               fence_armed.store(true);  // nothing was fenced: carry on
             } else {
               arm_after_resync();
             }
             if (Agent* a = agent_ptr.load()) a->Kick(/*full_report=*/true);
             if (Leader* l = leader_ptr.load()) l->LeaseChanged();
           },
       .on_lost =
           [&](int64_t id) {
             fence_armed.store(false);
             LogWarn(
                 "lease %lld lost (etcd unreachable or lease expired); apps here are "
                 "fenced until it is back; re-registering",
                 static_cast<long long>(id));
           },
       .on_renewed =
           [&](int64_t, std::chrono::steady_clock::time_point sent) {
             if (fence_armed.load()) extend_fence(sent);
           }});
  LogInfo("hcd %s: node %s (%s) in %s, API on %s, etcd %s", kVersion, node_id.c_str(),
          info.address.c_str(), cfg.datacenter.c_str(), api_at.ToString().c_str(),
          cfg.etcd_endpoints.front().c_str());
  if (http_proxy) {
    std::string at;
    for (const auto& b : http_proxy->bound()) at += (at.empty() ? "" : ", ") + b.ToString();
    LogInfo("proxy on %s (HTTP, the node channel, then TLS/PostgreSQL/IMAP/POP3)", at.c_str());
  }
  if (dns) {
    std::string at;
    for (const auto& b : dns->bound()) at += (at.empty() ? "" : ", ") + b.ToString();
    LogInfo("DNS for %zu zone(s) on %s", cfg.dns_zones.size(), at.c_str());
  }
  // Wait for etcd as long as it takes (a node may boot before etcd does).
  while (!impl_->shutdown.load()) {
    Status s = session.Start(std::chrono::milliseconds(5000));
    if (s.ok()) break;
    LogWarn("waiting for etcd: %s", s.ToString().c_str());
  }
  if (impl_->shutdown.load()) return Status::Ok();

  agent =
      std::make_unique<Agent>(AgentOptions{.node_id = node_id,
                                           .status_interval_seconds = cfg.status_interval_seconds,
                                           .reconcile_interval_ms = cfg.reconcile_interval_ms},
                              &cs, volumes.get(), rt.get(), [&lease] { return lease.load(); });
  HC_RETURN_IF_ERROR(agent->Start());
  agent_ptr.store(agent.get());
  if (!fence_armed.load()) arm_after_resync();
  leader = std::make_unique<Leader>(
      &cs, node_id, [&lease] { return lease.load(); }, LeaderOptions{.api_token = token});
  leader->Start();
  leader_ptr.store(leader.get());
  LogInfo("node %s joined the cluster", node_id.c_str());

  while (!impl_->shutdown.load()) {
    struct pollfd p = {impl_->wake[0], POLLIN, 0};
    poll(&p, 1, 1000);
  }
  LogInfo("shutting down (apps keep running)");
  server.Stop();
  if (dns) dns->Stop();
  {
    std::lock_guard<std::mutex> l(renew_mu);
    renew_proxy = nullptr;
  }
  if (http_proxy) http_proxy->Stop();
  {
    std::lock_guard<std::mutex> l(renew_mu);
    renew_replication = nullptr;
  }
  replication->Stop();
  agent_ptr.store(nullptr);
  leader_ptr.store(nullptr);
  leader->Stop();
  agent->Stop();
  leader.reset();
  agent.reset();
  // The apps keep running (a restart of hcd must not restart them), so the
  // lease is not revoked but renewed once more, which moves the fence
  // deadline a full window past the end of the shutdown: a restart that is
  // back within it finds its apps untouched. If hcd is not back by then, the
  // supervisors stop the apps, and only then can the lease expire and
  // another node take over.
  session.RenewAndAbandon();
  return Status::Ok();
}

}  // namespace hc::agent
