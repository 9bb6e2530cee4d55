#include "agent/identity.h"

#include <algorithm>
#include <ctime>
#include <nlohmann/json.hpp>
#include <random>

#include "common/fs.h"
#include "common/log.h"
#include "net/http_client.h"
#include "pki/cert.h"
#include "pki/crypto.h"
#include "pki/join.h"

namespace hc::agent {
namespace {

using json = nlohmann::json;
constexpr int64_t kDay = 86400;

const char* kHowToJoin =
    "on a member run `hc cluster join-token`, then start this node with `hcd --join TOKEN` (or "
    "set join_token / join_token_file in hcd.yaml)";

std::string Date(int64_t t) {
  time_t tt = static_cast<time_t>(t);
  struct tm tm;
  gmtime_r(&tt, &tm);
  char buf[40];
  strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

std::string Fp(const Digest& d) {
  return pki::FingerprintText(d);
}

// The certificate no longer names every address (the config changed).
bool MissesAddresses(const pki::CertInfo& ci, const std::vector<std::string>& addrs) {
  for (const auto& a : addrs)
    if (std::find(ci.ip_addresses.begin(), ci.ip_addresses.end(), a) == ci.ip_addresses.end() &&
        std::find(ci.dns_names.begin(), ci.dns_names.end(), a) == ci.dns_names.end())
      return true;
  return false;
}

Result<pki::NodeIdentity> Reissue(const IdentityOptions& o, const pki::PkiDir& dir,
                                  const std::string& key_pem, int64_t now) {
  HC_ASSIGN_OR_RETURN(pki::CaMaterial ca, dir.LoadCa());
  HC_ASSIGN_OR_RETURN(std::string csr, pki::CreateCsr(key_pem, o.node_id));
  HC_ASSIGN_OR_RETURN(
      std::string cert,
      pki::SignNodeCert(ca, csr, {.node_id = o.node_id, .addresses = o.addresses, .now = now}));
  HC_RETURN_IF_ERROR(dir.SaveNode(cert, key_pem));
  return dir.LoadIdentity(o.node_id);
}

// Waits until etcd answers (a node may start before etcd does).
Result<std::optional<std::string>> WaitForCa(cluster::ClusterStore* cs,
                                             const std::atomic<bool>* cancel) {
  int64_t waited = 0;
  while (true) {
    auto ca = cs->GetCaCert();
    if (ca.ok()) return ca;
    if (cancel && cancel->load()) return Unavailable("stopped while waiting for etcd");
    if (waited++ % 10 == 0)
      LogWarn("pki: waiting for etcd to look up the cluster CA: %s",
              ca.status().ToString().c_str());
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

Result<pki::NodeIdentity> BecomeFirstNode(const IdentityOptions& o, const pki::PkiDir& dir,
                                          cluster::ClusterStore* cs) {
  std::string rnd = pki::RandomBytes(4);
  std::string cluster_id = ToHex({reinterpret_cast<const uint8_t*>(rnd.data()), rnd.size()});
  HC_ASSIGN_OR_RETURN(pki::CaMaterial ca, pki::CreateCa("HybridCluster CA " + cluster_id));
  HC_ASSIGN_OR_RETURN(pki::KeyAndCsr key, pki::CreateKeyAndCsr(o.node_id));
  HC_ASSIGN_OR_RETURN(
      std::string cert,
      pki::SignNodeCert(ca, key.csr_pem, {.node_id = o.node_id, .addresses = o.addresses}));
  // Files first: if we crash before etcd has the CA, the next start finds
  // them and publishes the CA (see the consistency check below).
  HC_RETURN_IF_ERROR(dir.SaveCa(ca));
  HC_RETURN_IF_ERROR(dir.SaveNode(cert, key.key_pem));
  auto in_etcd = cs->CreateCaCertIfAbsent(ca.cert_pem);
  if (!in_etcd.ok()) {
    (void)dir.RemoveAll();
    return in_etcd.status().Annotate("storing the new cluster CA in etcd");
  }
  if (*in_etcd != ca.cert_pem) {
    (void)dir.RemoveAll();
    return Conflict(std::string("another node created the cluster CA at the same moment, so this "
                                "node must join it: ") +
                    kHowToJoin);
  }
  HC_ASSIGN_OR_RETURN(pki::NodeIdentity id, dir.LoadIdentity(o.node_id));
  LogInfo("pki: first node: created the cluster CA 'HybridCluster CA %s' (SHA-256 %s)",
          cluster_id.c_str(), Fp(id.ca_fingerprint).c_str());
  return id;
}

Result<pki::NodeIdentity> Join(const IdentityOptions& o, const pki::PkiDir& dir,
                               cluster::ClusterStore* cs, const std::string& etcd_ca,
                               const std::atomic<bool>* cancel) {
  HC_ASSIGN_OR_RETURN(pki::JoinToken token, pki::ParseJoinToken(o.join_token));
  HC_ASSIGN_OR_RETURN(Digest etcd_fp, pki::CertFingerprint(etcd_ca));
  if (etcd_fp != token.ca_fingerprint)
    return PermissionDenied("the join token is for another cluster: its CA fingerprint is " +
                            Fp(token.ca_fingerprint) + " but the cluster in etcd has " +
                            Fp(etcd_fp) +
                            " (check etcd_endpoints and etcd_prefix, or get a token from a member "
                            "of this cluster)");
  HC_ASSIGN_OR_RETURN(pki::KeyAndCsr key, pki::CreateKeyAndCsr(o.node_id));
  pki::ExchangeKey exchange = pki::NewExchangeKey();
  pki::JoinRequest req = pki::MakeJoinRequest(token, o.node_id, o.addresses, key.csr_pem, exchange);
  std::string body = pki::ToJson(req);
  // A member that has just started may not be registered yet: wait a little.
  std::vector<cluster::NodeInfo> members;
  for (int tries = 0; tries < 60 && !(cancel && cancel->load()); tries++) {
    HC_ASSIGN_OR_RETURN(members, cs->ListNodes());
    members.erase(std::remove_if(members.begin(), members.end(),
                                 [&](const cluster::NodeInfo& n) { return n.id == o.node_id; }),
                  members.end());
    if (!members.empty()) break;
    if (tries == 0) LogInfo("pki: waiting for a live member to join through");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  if (members.empty())
    return Unavailable(
        "no live member to join through (etcd lists no other node); start a member of the "
        "cluster first, then this node");
  std::shuffle(members.begin(), members.end(), std::mt19937(std::random_device()()));
  std::string tried;
  for (const auto& m : members) {
    net::HttpClientOptions co;
    co.connect_timeout = std::chrono::milliseconds(2000);
    co.request_timeout = std::chrono::seconds(15);
    net::HttpClient c({m.address, m.api_port}, co);
    auto r = c.Do("POST", "/v1/cluster/join", body);
    std::string where = m.id + " (" + m.address + ":" + std::to_string(m.api_port) + ")";
    if (!r.ok()) {
      tried += (tried.empty() ? "" : "; ") + where + ": " + r.status().message();
      continue;
    }
    if (r->status != 200) {
      json j = json::parse(r->body, nullptr, false);
      std::string msg = j.is_object() && j.contains("error") && j["error"].is_object()
                            ? j["error"].value("message", r->body)
                            : r->body.substr(0, 300);
      if (r->status >= 500) {
        tried += (tried.empty() ? "" : "; ") + where + ": " + msg;
        continue;
      }
      // The token or the request is bad: every member would say the same.
      return PermissionDenied("member " + where + " refused to admit this node: " + msg);
    }
    HC_ASSIGN_OR_RETURN(pki::JoinAnswer answer, pki::JoinAnswerFromJson(r->body));
    HC_ASSIGN_OR_RETURN(pki::JoinGrant grant,
                        pki::OpenJoinAnswer(token, req, exchange, key.key_pem, answer));
    HC_RETURN_IF_ERROR(dir.SaveCa({grant.ca_cert_pem, grant.ca_key_pem}));
    HC_RETURN_IF_ERROR(dir.SaveNode(grant.node_cert_pem, key.key_pem));
    LogInfo("pki: joined through %s with token %s; certificate issued for %s", m.id.c_str(),
            token.id.c_str(), o.node_id.c_str());
    return dir.LoadIdentity(o.node_id);
  }
  return Unavailable("no member could be reached to join through: " + tried);
}

}  // namespace

Result<std::optional<pki::NodeIdentity>> RenewIdentityIfDue(const IdentityOptions& o,
                                                            const pki::NodeIdentity& current,
                                                            int64_t now) {
  if (now == 0) now = time(nullptr);
  pki::PkiDir dir(JoinPath(o.data_dir, "pki"));
  HC_ASSIGN_OR_RETURN(pki::CertInfo ci, pki::InspectCert(current.cert_pem));
  bool due = ci.not_after - now < int64_t{o.renew_before_days} * kDay;
  bool moved = MissesAddresses(ci, o.addresses);
  if (auto ca = pki::InspectCert(current.ca_pem); ca.ok() && ca->not_after - now < 365 * kDay)
    LogWarn("pki: the cluster CA expires on %s; plan a new CA before then",
            Date(ca->not_after).c_str());
  if (!due && !moved) return std::optional<pki::NodeIdentity>();
  if (!dir.HasCaKey()) {
    LogWarn(
        "pki: this node's certificate %s (%s) but %s is missing, so it cannot renew itself; "
        "move %s away and join again with a token",
        due ? "expires on" : "lacks a current address, valid until", Date(ci.not_after).c_str(),
        dir.CaKeyPath().c_str(), dir.dir().c_str());
    return std::optional<pki::NodeIdentity>();
  }
  HC_ASSIGN_OR_RETURN(pki::NodeIdentity id, Reissue(o, dir, current.key_pem, now));
  LogInfo("pki: node certificate %s (was valid until %s, now until %s)",
          due ? "renewed" : "re-issued for the new addresses", Date(ci.not_after).c_str(),
          Date(id.not_after).c_str());
  return std::optional<pki::NodeIdentity>(std::move(id));
}

Result<pki::NodeIdentity> EstablishIdentity(const IdentityOptions& o, cluster::ClusterStore* cs,
                                            const std::atomic<bool>* cancel) {
  pki::PkiDir dir(JoinPath(o.data_dir, "pki"));
  if (dir.HasNodeCert()) {
    auto loaded = dir.LoadIdentity(o.node_id);
    if (!loaded.ok()) return loaded.status().Annotate(dir.dir());
    pki::NodeIdentity id = std::move(*loaded);
    Status v = pki::VerifyNodeCert(id.ca_pem, id.cert_pem, o.node_id);
    if (!v.ok()) {
      // Only an out-of-date certificate is ours to fix; anything else (a
      // foreign CA, another node's files) needs a person.
      auto ci = pki::InspectCert(id.cert_pem);
      bool expired =
          ci.ok() && ci->not_after < time(nullptr) && ci->common_name == o.node_id &&
          pki::VerifyNodeCert(id.ca_pem, id.cert_pem, o.node_id, ci->not_after - 60).ok();
      if (!expired || !dir.HasCaKey())
        return PermissionDenied(dir.NodeCertPath() + ": " + v.message() + "; move " + dir.dir() +
                                " away and join again: " + kHowToJoin);
    }
    HC_ASSIGN_OR_RETURN(auto renewed, RenewIdentityIfDue(o, id));
    if (renewed) id = std::move(*renewed);
    // Is the node's CA the cluster's? One try: etcd may be down, and a
    // node with a certificate must be able to start without it.
    auto in_etcd = cs->GetCaCert();
    if (!in_etcd.ok()) {
      LogWarn("pki: cannot compare this node's CA with the cluster's (etcd: %s); going on",
              in_etcd.status().ToString().c_str());
    } else if (!*in_etcd) {
      auto now_there = cs->CreateCaCertIfAbsent(id.ca_pem);
      if (now_there.ok() && *now_there == id.ca_pem)
        LogWarn("pki: etcd held no cluster CA; published this node's (SHA-256 %s)",
                Fp(id.ca_fingerprint).c_str());
      else if (now_there.ok())
        in_etcd = std::optional<std::string>(*now_there);
    }
    if (in_etcd.ok() && *in_etcd && **in_etcd != id.ca_pem) {
      auto theirs = pki::CertFingerprint(**in_etcd);
      return PermissionDenied("this node's certificate is from another cluster: its CA is " +
                              Fp(id.ca_fingerprint) + ", the cluster in etcd has " +
                              (theirs.ok() ? Fp(*theirs) : std::string("an unreadable CA")) +
                              "; move " + dir.dir() + " away and join: " + kHowToJoin);
    }
    return id;
  }
  // Fail fast on a damaged token, before waiting for anything.
  if (!o.join_token.empty()) HC_RETURN_IF_ERROR(pki::ParseJoinToken(o.join_token).status());
  HC_ASSIGN_OR_RETURN(std::optional<std::string> etcd_ca, WaitForCa(cs, cancel));
  if (!etcd_ca) {
    if (!o.join_token.empty())
      return NotFound(
          "a join token is set, but etcd holds no cluster CA under this etcd_prefix: the token "
          "is for a cluster this node cannot see (check etcd_endpoints and etcd_prefix), or "
          "remove the token to make this node the first of a new cluster");
    return BecomeFirstNode(o, dir, cs);
  }
  if (o.join_token.empty())
    return PermissionDenied(
        "this node has no certificate (" + dir.NodeCertPath() +
        ") and the cluster already has a CA, so it must be admitted with a join token: " +
        kHowToJoin);
  return Join(o, dir, cs, *etcd_ca, cancel);
}

IdentityRenewer::IdentityRenewer(IdentityOptions o, pki::NodeIdentity current,
                                 std::function<void(const pki::NodeIdentity&)> on_renewed,
                                 std::chrono::seconds check_every)
    : opts_(std::move(o)),
      current_(std::move(current)),
      on_renewed_(std::move(on_renewed)),
      every_(check_every) {
  thread_ = std::thread([this] { Loop(); });
}

IdentityRenewer::~IdentityRenewer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void IdentityRenewer::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, every_, [this] { return stop_; })) {
    lock.unlock();
    auto r = RenewIdentityIfDue(opts_, current_);
    if (!r.ok()) {
      LogWarn("pki: renewing the node certificate failed: %s", r.status().ToString().c_str());
    } else if (*r) {
      current_ = std::move(**r);
      if (on_renewed_) on_renewed_(current_);
    }
    lock.lock();
  }
}

}  // namespace hc::agent
