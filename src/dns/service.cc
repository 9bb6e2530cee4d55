#include "dns/service.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "cluster/view_follower.h"
#include "common/log.h"
#include "dns/answer.h"

namespace hc::dns {
namespace {

using std::chrono::milliseconds;

// The server's view of the answers: SERVFAIL until the first zones arrive.
class AnswerResponder : public Responder {
 public:
  explicit AnswerResponder(std::shared_ptr<const Answerer> a) : answerer_(std::move(a)) {}
  size_t Respond(std::span<const uint8_t> query, Transport t,
                 std::span<uint8_t> out) const override {
    if (answerer_) return answerer_->Respond(query, t == Transport::kTcp, out);
    Query q;
    if (ParseQuery(query, &q) == ParseOutcome::kDrop) return 0;
    ResponseBuilder b(q, false, rcode::kServFail);
    if (q.edns.present) b.AddOpt(kOurUdpSize, rcode::kServFail);
    std::vector<uint8_t> bytes = b.Finish(512);
    if (bytes.size() > out.size()) return 0;
    std::memcpy(out.data(), bytes.data(), bytes.size());
    return bytes.size();
  }

 private:
  std::shared_ptr<const Answerer> answerer_;
};

}  // namespace

std::string PrometheusText(const DnsServiceStats& s) {
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help,
                    const std::string& samples) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
           samples;
  };
  auto n = [](auto v) { return std::to_string(v); };
  metric("hc_dns_queries_total", "counter", "DNS queries received.",
         "hc_dns_queries_total{transport=\"udp\"} " + n(s.server.udp_queries) +
             "\nhc_dns_queries_total{transport=\"tcp\"} " + n(s.server.tcp_queries) + "\n");
  metric("hc_dns_responses_total", "counter", "DNS responses sent over UDP.",
         "hc_dns_responses_total " + n(s.server.udp_responses) + "\n");
  metric("hc_dns_dropped_total", "counter", "Packets not answered (malformed, responses).",
         "hc_dns_dropped_total " + n(s.server.dropped) + "\n");
  metric("hc_dns_tcp_connections_total", "counter", "DNS TCP connections served.",
         "hc_dns_tcp_connections_total " + n(s.server.tcp_connections) + "\n");
  metric("hc_dns_zone_serial", "gauge", "SOA serial of the zones served.",
         "hc_dns_zone_serial " + n(s.serial) + "\n");
  metric("hc_dns_zone_rebuilds_total", "counter", "Zone rebuilds after changes.",
         "hc_dns_zone_rebuilds_total " + n(s.rebuilds) + "\n");
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.6f", s.last_build_ms / 1000.0);
  metric("hc_dns_zone_build_seconds", "gauge", "Time the last rebuild took.",
         std::string("hc_dns_zone_build_seconds ") + secs + "\n");
  metric("hc_dns_names", "gauge", "Names with precompiled answers.",
         "hc_dns_names " + n(s.names) + "\n");
  return out;
}

void ZoneInputOf(const cluster::ClusterView& view, std::vector<NodeEntry>* nodes,
                 std::vector<AppEntry>* apps) {
  for (const auto& [id, n] : view.nodes) {
    NodeEntry e{id, n.datacenter, n.public_addresses, n.drained};
    if (e.addresses.empty()) e.addresses = {n.address};
    // Only addresses the zone can hold (a bad value from an old node is skipped).
    std::erase_if(e.addresses, [](const std::string& a) {
      std::array<uint8_t, 16> b;
      bool v6;
      return !ParseAddress(a, &b, &v6);
    });
    nodes->push_back(std::move(e));
  }
  for (const auto& [name, a] : view.apps) apps->push_back({name, a.domains, a.aliases});
}

struct DnsService::Impl {
  cluster::ClusterStore* cs;
  DnsSettings settings;
  Server server;
  cluster::ViewFollower follower;

  mutable std::mutex mu;  // zones and stats
  std::shared_ptr<const ZoneSet> zones;
  DnsServiceStats stats;

  Impl(cluster::ClusterStore* c, DnsSettings s, ServerOptions o)
      : cs(c),
        settings(std::move(s)),
        server(std::move(o)),
        follower(c, {.name = "dns",
                     .prefixes = {c->NodesPrefix(), c->AppsPrefix()},
                     .rebuild = [this] { Rebuild(); },
                     // Keep rebuilding to at most half of a core: with 10,000
                     // apps a rebuild takes about 0.3 s, and apps may be
                     // created hundreds a second.
                     .delay =
                         [this] {
                           std::lock_guard<std::mutex> l(mu);
                           return milliseconds(20 + static_cast<int>(stats.last_build_ms));
                         }}) {}

  void Rebuild() {
    auto t0 = std::chrono::steady_clock::now();
    std::vector<NodeEntry> nodes;
    std::vector<AppEntry> apps;
    int64_t revision;
    follower.Read([&](const cluster::ClusterView& view, const auto&) {
      ZoneInputOf(view, &nodes, &apps);
      revision = view.revision;
    });
    uint32_t prev = zones ? zones->serial : 0;
    ZoneSet next = BuildZones(settings, nodes, apps, 0);
    if (zones && next.SameContent(*zones)) return;
    // The revision of the change; strictly increasing even if etcd's
    // revision wrapped past 2^32 (RFC 1982 arithmetic is not needed here).
    uint32_t serial = static_cast<uint32_t>(revision);
    if (zones && serial <= prev) serial = prev + 1;
    next.serial = serial;
    for (Zone& z : next.zones)
      for (Record& r : z.records)
        if (r.type == type::kSOA) r.soa.serial = serial;
    auto answerer = Answerer::Compile(next);
    server.SetResponder(std::make_shared<AnswerResponder>(answerer));
    double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::lock_guard<std::mutex> l(mu);
    zones = std::make_shared<const ZoneSet>(std::move(next));
    ++stats.rebuilds;
    stats.serial = serial;
    stats.last_build_ms = ms;
    stats.names = answerer->names();
    stats.image_bytes = answerer->image_bytes();
    LogInfo("dns: zones rebuilt, serial %u, %zu names, %.1f ms", serial, answerer->names(), ms);
    for (const auto& w : zones->warnings) LogDebug("dns: %s", w.c_str());
  }
};

DnsService::DnsService(cluster::ClusterStore* cs, DnsSettings settings, ServerOptions server)
    : impl_(std::make_unique<Impl>(cs, std::move(settings), std::move(server))) {}

DnsService::~DnsService() {
  Stop();
}

Status DnsService::Start() {
  HC_RETURN_IF_ERROR(impl_->server.Start(std::make_shared<AnswerResponder>(nullptr)));
  impl_->follower.Start();
  return Status::Ok();
}

void DnsService::Stop() {
  impl_->follower.Stop();
  impl_->server.Stop();
}

std::shared_ptr<const ZoneSet> DnsService::zones() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->zones;
}

DnsServiceStats DnsService::stats() const {
  DnsServiceStats s;
  {
    std::lock_guard<std::mutex> l(impl_->mu);
    s = impl_->stats;
  }
  s.server = impl_->server.stats();
  return s;
}

std::vector<net::HostPort> DnsService::bound() const {
  return impl_->server.bound();
}

}  // namespace hc::dns
