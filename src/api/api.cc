#include "api/api.h"

#include <nlohmann/json.hpp>
#include <set>

#include "common/log.h"
#include "common/names.h"
#include "net/http_client.h"
#include "pki/crypto.h"
#include "pki/join.h"
#include "proxy/tls.h"

namespace hc::api {
namespace {

using json = nlohmann::json;

constexpr size_t kMaxBody = 256 * 1024;

net::HttpResponse JsonResponse(int status, const json& j) {
  net::HttpResponse r;
  r.status = status;
  r.headers.Set("Content-Type", "application/json");
  r.body = j.dump(2) + "\n";
  return r;
}

json Parse(const std::string& s) {
  return json::parse(s, nullptr, false);
}

json AppJson(const cluster::AppDef& a, const cluster::Placement* p,
             const std::vector<cluster::AppObserved>& observed) {
  json j = Parse(cluster::ToJson(a));
  j["placement"] = p ? Parse(cluster::ToJson(*p)) : json(nullptr);
  json st = json::array();
  for (const auto& o : observed)
    if (o.app == a.name) st.push_back(Parse(cluster::ToJson(o)));
  j["status"] = st;
  // One word for people: where and how it runs.
  std::string summary = "pending";
  if (p) {
    summary = "placed";
    for (const auto& o : observed)
      if (o.app == a.name && o.node == p->primary && o.epoch == p->epoch)
        summary = o.ready ? "running" : o.state;
  }
  j["summary"] = summary;
  return j;
}

bool ValidAppName(const std::string& s) {
  return ValidateName("app", s).ok();
}

}  // namespace

net::HttpResponse ErrorResponse(const Status& s) {
  int http = 500;
  std::string code = "internal";
  switch (s.code()) {
    case Code::kInvalidArgument:
      http = 400;
      code = "invalid_argument";
      break;
    case Code::kNotFound:
      http = 404;
      code = "not_found";
      break;
    case Code::kAlreadyExists:
      http = 409;
      code = "already_exists";
      break;
    case Code::kConflict:
      http = 409;
      code = "conflict";
      break;
    case Code::kPermissionDenied:
      http = 403;
      code = "permission_denied";
      break;
    case Code::kUnavailable:
      http = 503;
      code = "unavailable";
      break;
    default: break;
  }
  return JsonResponse(http, {{"error", {{"code", code}, {"message", s.message()}}}});
}

Api::Api(ApiOptions opts, cluster::ClusterStore* cs) : opts_(std::move(opts)), cs_(cs) {}

net::HttpResponse Api::Handle(const net::HttpRequest& req) {
  try {
    net::HttpResponse r = Route(req);
    r.headers.Set("X-HC-Node", opts_.node_id);
    return r;
  } catch (const std::exception& e) {
    LogError("api: %s %s: %s", req.method.c_str(), req.target.c_str(), e.what());
    return ErrorResponse(Internal(std::string("internal error: ") + e.what()));
  }
}

net::HttpResponse Api::Route(const net::HttpRequest& req) {
  std::string path(req.Path());
  if (path == "/v1/health" && req.method == "GET")
    return JsonResponse(200, {{"ok", true}, {"node", opts_.node_id}, {"version", opts_.version}});
  // A joining node has no API token: the join token's proof is its credential.
  if (path == "/v1/cluster/join") {
    if (req.method != "POST") {
      auto r = ErrorResponse(InvalidArgument("POST is the only method on " + path));
      r.status = 405;
      r.headers.Set("Allow", "POST");
      return r;
    }
    return Join(req);
  }
  if (!opts_.token.empty()) {
    auto auth = req.headers.Get("Authorization");
    if (!auth || *auth != "Bearer " + opts_.token) {
      auto r = ErrorResponse(PermissionDenied(
          "missing or wrong API token: pass --token, HC_TOKEN, or the client config's token"));
      r.status = 401;
      r.headers.Set("WWW-Authenticate", "Bearer");
      return r;
    }
  }
  auto method_not_allowed = [&](const char* allowed) {
    auto r = JsonResponse(405, {{"error",
                                 {{"code", "method_not_allowed"},
                                  {"message", req.method + " is not allowed on " + path +
                                                  " (allowed: " + allowed + ")"}}}});
    r.headers.Set("Allow", allowed);
    return r;
  };
  if (path == "/v1/cluster") {
    if (req.method != "GET") return method_not_allowed("GET");
    return GetCluster();
  }
  if (path == "/v1/cluster/join-tokens") {
    if (req.method != "POST") return method_not_allowed("POST");
    return CreateJoinToken(req);
  }
  const std::string tokens = "/v1/cluster/join-tokens/";
  if (path.rfind(tokens, 0) == 0) {
    if (req.method != "DELETE") return method_not_allowed("DELETE");
    return DeleteJoinToken(path.substr(tokens.size()));
  }
  if (path == "/v1/nodes") {
    if (req.method != "GET") return method_not_allowed("GET");
    return ListNodes();
  }
  const std::string nodes = "/v1/nodes/";
  if (path.rfind(nodes, 0) == 0) {
    std::string rest = path.substr(nodes.size());
    size_t slash = rest.find('/');
    std::string what = slash == std::string::npos ? "" : rest.substr(slash + 1);
    std::string id = rest.substr(0, slash);
    if (!cluster::ValidateNodeId(id).ok() || (what != "drain" && what != "undrain"))
      return ErrorResponse(NotFound("no such API path: " + path.substr(0, 200) +
                                    " (nodes have /drain and /undrain; see docs/api.md)"));
    if (req.method != "POST") return method_not_allowed("POST");
    return Drain(id, what == "drain");
  }
  const std::string node_calls = "/v1/node/";
  if (path.rfind(node_calls, 0) == 0) {
    if (req.method != "POST") return method_not_allowed("POST");
    return NodeCall(req, path.substr(node_calls.size()));
  }
  if (path == "/v1/events") {
    if (req.method != "GET") return method_not_allowed("GET");
    std::string app = req.QueryParam("app").value_or("");
    std::string limit_text = req.QueryParam("limit").value_or("100");
    char* end = nullptr;
    unsigned long limit = std::strtoul(limit_text.c_str(), &end, 10);
    if (limit_text.empty() || *end != '\0' || limit > 100000)
      return ErrorResponse(InvalidArgument("limit must be a number from 0 (all) to 100000"));
    auto evs = cs_->ListEvents(app, limit);
    if (!evs.ok()) return ErrorResponse(evs.status());
    json list = json::array();
    for (const auto& e : *evs) list.push_back(Parse(cluster::ToJson(e)));
    return JsonResponse(200, {{"events", list}});
  }
  if (path == "/metrics" && opts_.metrics) {
    if (req.method != "GET") return method_not_allowed("GET");
    net::HttpResponse r;
    r.status = 200;
    r.headers.Set("Content-Type", "text/plain; version=0.0.4");
    r.body = opts_.metrics();
    return r;
  }
  if (path == "/v1/dns") {
    if (req.method != "GET") return method_not_allowed("GET");
    return GetDns();
  }
  if (path == "/v1/apps") {
    if (req.method == "GET") return ListApps();
    if (req.method == "POST") return CreateApp(req);
    return method_not_allowed("GET, POST");
  }
  const std::string apps = "/v1/apps/";
  if (path.rfind(apps, 0) == 0) {
    std::string name = path.substr(apps.size());
    if (size_t slash = name.find('/'); slash != std::string::npos) {
      std::string what = name.substr(slash + 1);
      name.resize(slash);
      if (!ValidAppName(name))
        return ErrorResponse(NotFound("no app named '" + name.substr(0, 80) + "'"));
      return AppSub(req, name, what);
    }
    if (!ValidAppName(name))
      return ErrorResponse(NotFound("no app named '" + name.substr(0, 80) + "'"));
    if (req.method == "GET") return GetApp(name);
    if (req.method == "DELETE") return DeleteApp(name);
    return method_not_allowed("GET, DELETE");
  }
  return ErrorResponse(NotFound("no such API path: " + path.substr(0, 200) + " (see docs/api.md)"));
}

net::HttpResponse Api::GetCluster() {
  auto view = cs_->LoadView();
  if (!view.ok()) return ErrorResponse(view.status());
  auto observed = cs_->ListObserved();
  if (!observed.ok()) return ErrorResponse(observed.status());
  json nodes = json::array();
  for (const auto& [id, n] : view->nodes) {
    json j = Parse(cluster::ToJson(n));
    int primaries = 0, replicas = 0;
    for (const auto& [app, p] : view->placements) {
      if (p.primary == id) primaries++;
      for (const auto& r : p.replicas)
        if (r == id) replicas++;
    }
    j["leader"] = id == view->leader;
    j["primaries"] = primaries;
    j["replicas"] = replicas;
    nodes.push_back(j);
  }
  json apps = json::array();
  for (const auto& [name, a] : view->apps) {
    auto p = view->placements.find(name);
    apps.push_back(AppJson(a, p == view->placements.end() ? nullptr : &p->second, *observed));
  }
  json ca = nullptr;
  if (auto pem = cs_->GetCaCert(); pem.ok() && *pem) {
    if (auto ci = pki::InspectCert(**pem); ci.ok())
      ca = {{"common_name", ci->common_name},
            {"fingerprint_sha256", pki::FingerprintText(ci->fingerprint)},
            {"not_after_unix", ci->not_after}};
  }
  return JsonResponse(200, {{"leader", view->leader},
                            {"revision", view->revision},
                            {"ca", ca},
                            {"answered_by", opts_.node_id},
                            {"nodes", nodes},
                            {"apps", apps}});
}

net::HttpResponse Api::ListNodes() {
  auto view = cs_->LoadView();
  if (!view.ok()) return ErrorResponse(view.status());
  json nodes = json::array();
  for (const auto& [id, n] : view->nodes) {
    json j = Parse(cluster::ToJson(n));
    j["leader"] = id == view->leader;
    nodes.push_back(j);
  }
  return JsonResponse(200, {{"nodes", nodes}});
}

net::HttpResponse Api::ListApps() {
  auto view = cs_->LoadView();
  if (!view.ok()) return ErrorResponse(view.status());
  auto observed = cs_->ListObserved();
  if (!observed.ok()) return ErrorResponse(observed.status());
  json apps = json::array();
  for (const auto& [name, a] : view->apps) {
    auto p = view->placements.find(name);
    apps.push_back(AppJson(a, p == view->placements.end() ? nullptr : &p->second, *observed));
  }
  return JsonResponse(200, {{"apps", apps}});
}

net::HttpResponse Api::GetApp(const std::string& name) {
  auto t = cs_->etcd()->Txn(
      {}, {cluster::TxnOp::Get(cs_->AppKey(name)), cluster::TxnOp::Get(cs_->PlacementKey(name))});
  if (!t.ok()) return ErrorResponse(t.status());
  if (t->ranges.size() != 2 || t->ranges[0].kvs.empty())
    return ErrorResponse(NotFound("no app named '" + name + "'"));
  auto a = cluster::AppDefFromJson(t->ranges[0].kvs[0].value);
  if (!a.ok()) return ErrorResponse(a.status());
  std::optional<cluster::Placement> p;
  if (!t->ranges[1].kvs.empty()) {
    auto pp = cluster::PlacementFromJson(t->ranges[1].kvs[0].value);
    if (pp.ok()) p = std::move(*pp);
  }
  // Only the nodes the placement names report on this app.
  std::vector<cluster::AppObserved> observed;
  if (p) {
    std::vector<cluster::TxnOp> gets = {cluster::TxnOp::Get(cs_->StatusKey(p->primary, name))};
    for (const auto& r : p->replicas) gets.push_back(cluster::TxnOp::Get(cs_->StatusKey(r, name)));
    auto st = cs_->etcd()->Txn({}, gets);
    if (!st.ok()) return ErrorResponse(st.status());
    for (const auto& range : st->ranges)
      for (const auto& kv : range.kvs)
        if (auto o = cluster::AppObservedFromJson(kv.value); o.ok())
          observed.push_back(std::move(*o));
  }
  return JsonResponse(200, AppJson(*a, p ? &*p : nullptr, observed));
}

net::HttpResponse Api::CreateApp(const net::HttpRequest& req) {
  if (req.body.size() > kMaxBody)
    return ErrorResponse(InvalidArgument("request body is too large"));
  json j = Parse(req.body);
  if (!j.is_object())
    return ErrorResponse(
        InvalidArgument("the body must be a JSON object describing the app (see docs/api.md)"));
  static const std::set<std::string> kFields = {"name",
                                                "template",
                                                "command",
                                                "env",
                                                "domains",
                                                "aliases",
                                                "protocol",
                                                "tcp_ports",
                                                "replicas",
                                                "limits",
                                                "snapshot_interval_seconds",
                                                "retention"};
  for (const auto& [k, v] : j.items())
    if (!kFields.count(k))
      return ErrorResponse(
          InvalidArgument("unknown field '" + k.substr(0, 64) +
                          "' (allowed: name, template, command, env, domains, aliases, protocol, "
                          "tcp_ports, replicas, limits, snapshot_interval_seconds, retention)"));
  if (auto l = j.find("limits"); l != j.end()) {
    if (!l->is_object()) return ErrorResponse(InvalidArgument("limits must be an object"));
    for (const auto& [k, v] : l->items())
      if (k != "memory_bytes" && k != "cpu_millis" && k != "pids")
        return ErrorResponse(InvalidArgument("unknown field 'limits." + k.substr(0, 64) +
                                             "' (allowed: memory_bytes, cpu_millis, pids)"));
  }
  auto def = cluster::AppDefFromJson(req.body);
  if (!def.ok()) return ErrorResponse(def.status());
  def->created_unix = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  Status v = cluster::ValidateAppDef(*def);
  if (!v.ok()) return ErrorResponse(v);
  if (!def->tcp_ports.empty()) {
    auto view = cs_->LoadView();
    if (!view.ok()) return ErrorResponse(view.status());
    for (const auto& [other, a] : view->apps)
      for (uint16_t port : a.tcp_ports)
        if (std::find(def->tcp_ports.begin(), def->tcp_ports.end(), port) != def->tcp_ports.end())
          return ErrorResponse(AlreadyExists("tcp port " + std::to_string(port) +
                                             " already belongs to app '" + other +
                                             "'; pick another port"));
  }
  Status s = cs_->CreateApp(*def);
  if (!s.ok()) return ErrorResponse(s);
  LogInfo("api: app %s created (template %s)", def->name.c_str(), def->template_name.c_str());
  auto r = JsonResponse(201, AppJson(*def, nullptr, {}));
  r.headers.Set("Location", "/v1/apps/" + def->name);
  return r;
}

net::HttpResponse Api::DeleteApp(const std::string& name) {
  Status s = cs_->DeleteApp(name);
  if (!s.ok()) return ErrorResponse(s);
  LogInfo("api: app %s deleted", name.c_str());
  return JsonResponse(200, {{"deleted", name}});
}

namespace {

json ScrubJson(const replication::ScrubOutcome& o) {
  return {{"app", o.app},
          {"node", o.node},
          {"finished_unix_ms", o.finished_ms},
          {"objects_checked", o.objects_checked},
          {"bytes_checked", o.bytes_checked},
          {"repaired", o.repaired},
          {"rounds", o.rounds},
          {"problems", o.problems},
          {"peer_errors", o.peer_errors},
          {"kept_branches", o.kept_branches},
          {"error", o.error},
          {"ok", o.ok()}};
}

// One request to another node's API for this node-local answer, with the
// caller's token: the JSON object of a 200, else an error naming the answer.
Result<json> AskNode(const cluster::NodeInfo& n, const std::string& method,
                     const std::string& target, const net::HttpRequest& caller,
                     std::chrono::milliseconds timeout) {
  net::HttpClient client(net::HostPort{n.address, n.api_port}, {.request_timeout = timeout});
  net::HttpRequest fwd;
  fwd.method = method;
  fwd.target = target;
  if (auto auth = caller.headers.Get("Authorization"))
    fwd.headers.Set("Authorization", std::string(*auth));
  HC_ASSIGN_OR_RETURN(auto r, client.Do(fwd, timeout));
  json j = Parse(r.body);
  if (r.status != 200 || !j.is_object())
    return Unavailable("HTTP " + std::to_string(r.status) + ": " + r.body.substr(0, 200));
  return j;
}

json ReplicationJson(const replication::AppReplicationStatus& s, const std::string& node) {
  auto ms_to_s = [](int64_t ms) { return static_cast<double>(ms) / 1000.0; };
  json out = {{"app", s.app},
              {"node", node},
              {"role", s.role},
              {"epoch", s.epoch},
              {"diverged_branches", s.diverged_branches},
              {"last_error", s.last_error}};
  if (!s.newest_snapshot.empty())
    out["newest_snapshot"] = {{"id", s.newest_snapshot},
                              {"name", s.newest_snapshot_name},
                              {"created_unix_ns", s.newest_created_ns}};
  json rows = json::array();
  for (const auto& r : s.replicas) {
    json row = {{"replica", r.replica},
                {"state", replication::ReplicaStateName(r.state)},
                {"newest_snapshot", r.replica_newest ? *r.replica_newest : ""},
                {"lag_seconds", ms_to_s(r.lag_ms)},
                {"lag_bytes", r.lag_bytes},
                {"last_error", r.last_error.ok() ? "" : r.last_error.message()},
                {"consecutive_failures", r.consecutive_failures}};
    if (r.rpo_ms) row["rpo_seconds"] = ms_to_s(*r.rpo_ms);
    if (r.primary_newest) row["primary_newest_snapshot"] = r.primary_newest->id;
    if (r.last_checked_ms) row["last_checked_unix_ms"] = *r.last_checked_ms;
    if (!r.check_error.ok()) row["check_error"] = r.check_error.message();
    if (r.state == replication::ReplicaLag::kTransferring)
      row["transfer"] = {{"full", r.full_send},
                         {"snapshot", r.sending_snapshot},
                         {"progress_bytes", r.progress_bytes},
                         {"expected_bytes", r.expected_bytes}};
    rows.push_back(std::move(row));
  }
  out["replicas"] = std::move(rows);
  if (s.last_scrub) out["last_scrub"] = ScrubJson(*s.last_scrub);
  return out;
}

}  // namespace

// GET /v1/apps/{name}/replication: the primary knows the lag of every
// replica, so a node that is not the primary asks it (node to node, with
// the caller's token) unless ?local=1.
net::HttpResponse Api::Replication(const net::HttpRequest& req, const std::string& name) {
  if (!opts_.replication)
    return ErrorResponse(Unavailable("replication is not running on this node"));
  auto local = opts_.replication(name);
  json here = ReplicationJson(local, opts_.node_id);
  if (local.role == "primary" || req.QueryParam("local").value_or("") == "1")
    return JsonResponse(200, here);
  auto view = cs_->LoadView();
  if (!view.ok()) return ErrorResponse(view.status());
  auto p = view->placements.find(name);
  if (p == view->placements.end()) return JsonResponse(200, here);
  auto n = view->nodes.find(p->second.primary);
  if (n == view->nodes.end()) {
    here["primary_error"] = "primary node '" + p->second.primary + "' is not live";
    return JsonResponse(200, here);
  }
  auto j = AskNode(n->second, "GET", "/v1/apps/" + name + "/replication?local=1", req,
                   std::chrono::milliseconds(3000));
  if (j.ok()) {
    // What this node holds too (a replica's own copy, diverged branches).
    if (!local.role.empty()) (*j)["asked_node"] = here;
    return JsonResponse(200, *j);
  }
  here["primary_error"] =
      "asking primary node '" + p->second.primary + "': " + j.status().message();
  return JsonResponse(200, here);
}

// POST /v1/apps/{name}/scrub: every node holding the app scrubs its copy now
// and repairs it from the others (?local=1: only this node). Synchronous.
net::HttpResponse Api::Scrub(const net::HttpRequest& req, const std::string& name) {
  if (!opts_.scrub) return ErrorResponse(Unavailable("replication is not running on this node"));
  if (req.QueryParam("local").value_or("") == "1") {
    auto r = opts_.scrub(name);
    if (!r.ok()) return ErrorResponse(r.status());
    return JsonResponse(200, ScrubJson(*r));
  }
  auto view = cs_->LoadView();
  if (!view.ok()) return ErrorResponse(view.status());
  auto p = view->placements.find(name);
  if (p == view->placements.end())
    return ErrorResponse(NotFound("app '" + name + "' is not placed on any node"));
  std::vector<std::string> holders = {p->second.primary};
  holders.insert(holders.end(), p->second.replicas.begin(), p->second.replicas.end());
  json nodes = json::array();
  for (const auto& id : holders) {
    if (id == opts_.node_id) {
      auto r = opts_.scrub(name);
      nodes.push_back(r.ok() ? ScrubJson(*r)
                             : json{{"node", id}, {"ok", false}, {"error", r.status().message()}});
      continue;
    }
    auto n = view->nodes.find(id);
    if (n == view->nodes.end()) {
      nodes.push_back({{"node", id}, {"ok", false}, {"error", "node is not live"}});
      continue;
    }
    auto j = AskNode(n->second, "POST", "/v1/apps/" + name + "/scrub?local=1", req,
                     std::chrono::milliseconds(600000));
    nodes.push_back(j.ok() ? *j
                           : json{{"node", id}, {"ok", false}, {"error", j.status().message()}});
  }
  return JsonResponse(200, {{"app", name}, {"nodes", nodes}});
}

// /v1/apps/{name}/hold and /v1/apps/{name}/certificate.
net::HttpResponse Api::AppSub(const net::HttpRequest& req, const std::string& name,
                              const std::string& what) {
  auto method_not_allowed = [&](const char* allowed) {
    auto r = ErrorResponse(InvalidArgument(req.method + " is not allowed on /v1/apps/" + name +
                                           "/" + what + " (allowed: " + allowed + ")"));
    r.status = 405;
    r.headers.Set("Allow", allowed);
    return r;
  };
  if (what == "replication") {
    if (req.method != "GET") return method_not_allowed("GET");
    return Replication(req, name);
  }
  if (what == "scrub") {
    if (req.method != "POST") return method_not_allowed("POST");
    return Scrub(req, name);
  }
  if (what == "move") {
    if (req.method != "POST" && req.method != "GET") return method_not_allowed("GET, POST");
    return Move(req, name);
  }
  if (what != "hold" && what != "certificate")
    return ErrorResponse(NotFound("no such API path: /v1/apps/" + name + "/" + what.substr(0, 80) +
                                  " (see docs/api.md)"));
  if (req.body.size() > kMaxBody)
    return ErrorResponse(InvalidArgument("request body is too large"));
  auto app = cs_->GetApp(name);
  if (!app.ok()) return ErrorResponse(app.status());
  if (!*app) return ErrorResponse(NotFound("no app named '" + name + "'"));
  if (what == "hold") {
    if (req.method == "DELETE") {
      Status s = cs_->ReleaseHold(name);
      if (!s.ok()) return ErrorResponse(s);
      LogInfo("api: app %s released", name.c_str());
      return JsonResponse(200, {{"released", name}});
    }
    if (req.method != "POST") return method_not_allowed("POST, DELETE");
    int seconds = 30;
    if (!req.body.empty()) {
      json j = Parse(req.body);
      if (!j.is_object())
        return ErrorResponse(
            InvalidArgument("the body must be a JSON object like {\"seconds\": 30}"));
      for (const auto& [k, v] : j.items()) {
        if (k != "seconds")
          return ErrorResponse(
              InvalidArgument("unknown field '" + k.substr(0, 64) + "' (allowed: seconds)"));
        if (!v.is_number_integer())
          return ErrorResponse(InvalidArgument("seconds must be an integer from 1 to 300"));
        int64_t n = v.get<int64_t>();
        if (n < 1 || n > 300)
          return ErrorResponse(InvalidArgument("seconds must be an integer from 1 to 300"));
        seconds = static_cast<int>(n);
      }
    }
    Status s = cs_->PutHold(name, seconds, opts_.node_id);
    if (!s.ok()) return ErrorResponse(s);
    LogInfo("api: app %s held for at most %d s", name.c_str(), seconds);
    return JsonResponse(200, {{"held", name}, {"seconds", seconds}});
  }
  // certificate
  if (req.method == "GET") {
    auto c = cs_->GetCertificate(name);
    if (!c.ok()) return ErrorResponse(c.status());
    if (!*c) return ErrorResponse(NotFound("app '" + name + "' has no certificate"));
    return JsonResponse(
        200, {{"app", name}, {"cert_pem", (*c)->cert_pem}, {"updated_unix", (*c)->updated_unix}});
  }
  if (req.method == "DELETE") {
    Status s = cs_->DeleteCertificate(name);
    if (!s.ok()) return ErrorResponse(s);
    return JsonResponse(200, {{"deleted", name}});
  }
  if (req.method != "PUT") return method_not_allowed("GET, PUT, DELETE");
  json j = Parse(req.body);
  if (!j.is_object() || !j.contains("cert_pem") || !j.contains("key_pem") ||
      !j["cert_pem"].is_string() || !j["key_pem"].is_string() || j.size() != 2)
    return ErrorResponse(InvalidArgument(
        "the body must be {\"cert_pem\": \"<chain, PEM>\", \"key_pem\": \"<key, PEM>\"}"));
  cluster::AppCertificate c{name, j["cert_pem"].get<std::string>(), j["key_pem"].get<std::string>(),
                            std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count()};
  std::vector<std::string> names = (*app)->domains;
  for (const auto& a : (*app)->aliases) names.push_back(a);
  auto table = proxy::CertTable::Build({proxy::CertSpec{name, names, c.cert_pem, c.key_pem}},
                                       std::nullopt, proxy::TlsServerPolicy{});
  if (!table.ok()) return ErrorResponse(InvalidArgument(table.status().message()));
  Status s = cs_->PutCertificate(c);
  if (!s.ok()) return ErrorResponse(s);
  LogInfo("api: certificate of app %s stored", name.c_str());
  return JsonResponse(200, {{"app", name}, {"updated_unix", c.updated_unix}});
}

namespace {

json MoveJson(const cluster::MoveRecord& m) {
  return Parse(cluster::ToJson(m));
}

// The body of a node call: a JSON object with exactly these string fields
// (and optionally the integer ones).
Result<json> NodeCallBody(const net::HttpRequest& req, std::initializer_list<const char*> strings,
                          std::initializer_list<const char*> ints = {}) {
  if (req.body.size() > (1 << 20)) return InvalidArgument("request body is too large");
  json j = Parse(req.body);
  if (!j.is_object()) return InvalidArgument("the body must be a JSON object");
  for (const char* k : strings) {
    if (!j.contains(k) || !j[k].is_string())
      return InvalidArgument(std::string("field '") + k + "' (a string) is required");
  }
  for (const char* k : ints) {
    if (j.contains(k) && !j[k].is_number_integer())
      return InvalidArgument(std::string("field '") + k + "' must be an integer");
  }
  return j;
}

json SyncJson(const replication::SyncResult& r) {
  return {{"snapshot", r.snapshot_id}, {"bytes", r.bytes}, {"full", r.full}};
}

}  // namespace

// POST /v1/node/<what>: what the leader asks of one node (docs/api.md).
net::HttpResponse Api::NodeCall(const net::HttpRequest& req, const std::string& what) {
  if (what == "newest-snapshots") {
    if (!opts_.newest_snapshots) return ErrorResponse(Unavailable("replication is not running"));
    if (req.body.size() > (4 << 20)) return ErrorResponse(InvalidArgument("body too large"));
    json j = Parse(req.body);
    if (!j.is_object() || !j["apps"].is_array())
      return ErrorResponse(InvalidArgument("the body must be {\"apps\": [\"name\", ...]}"));
    std::vector<std::string> apps;
    for (const auto& a : j["apps"]) {
      if (!a.is_string() || !ValidAppName(a.get<std::string>()))
        return ErrorResponse(InvalidArgument("apps must be a list of app names"));
      apps.push_back(a.get<std::string>());
    }
    json out = json::object();
    for (const auto& [app, ns] : opts_.newest_snapshots(apps)) out[app] = ns;
    return JsonResponse(200, {{"node", opts_.node_id}, {"newest", out}});
  }
  if (what == "prepare") {
    if (!opts_.prepare) return ErrorResponse(Unavailable("moves are not possible on this node"));
    auto j = NodeCallBody(req, {"app"}, {"max_ms"});
    if (!j.ok()) return ErrorResponse(j.status());
    std::string app = (*j)["app"].get<std::string>();
    if (!ValidAppName(app)) return ErrorResponse(InvalidArgument("invalid app name"));
    int64_t max_ms = j->value("max_ms", int64_t{120000});
    if (max_ms < 1000 || max_ms > 3600000)
      return ErrorResponse(InvalidArgument("max_ms must be from 1000 to 3600000"));
    Status s = opts_.prepare(app, max_ms);
    if (!s.ok()) return ErrorResponse(s);
    return JsonResponse(200, {{"app", app}, {"prepared", true}});
  }
  if (what == "sync" || what == "handoff" || what == "resume") {
    if (!opts_.sync || !opts_.handoff || !opts_.resume)
      return ErrorResponse(Unavailable("moves are not possible on this node"));
    auto j = what == "resume" ? NodeCallBody(req, {"app"})
                              : NodeCallBody(req, {"app", "peer"}, {"max_ms"});
    if (!j.ok()) return ErrorResponse(j.status());
    std::string app = (*j)["app"].get<std::string>();
    if (!ValidAppName(app)) return ErrorResponse(InvalidArgument("invalid app name"));
    if (what == "resume") {
      Status s = opts_.resume(app);
      if (!s.ok()) return ErrorResponse(s);
      return JsonResponse(200, {{"app", app}, {"resumed", true}});
    }
    std::string peer = (*j)["peer"].get<std::string>();
    if (!cluster::ValidateNodeId(peer).ok())
      return ErrorResponse(InvalidArgument("invalid node id '" + peer.substr(0, 64) + "'"));
    if (what == "sync") {
      auto r = opts_.sync(app, peer);
      if (!r.ok()) return ErrorResponse(r.status());
      return JsonResponse(200, SyncJson(*r));
    }
    int64_t max_ms = j->value("max_ms", int64_t{120000});
    if (max_ms < 1000 || max_ms > 3600000)
      return ErrorResponse(InvalidArgument("max_ms must be from 1000 to 3600000"));
    auto r = opts_.handoff(app, peer, max_ms);
    if (!r.ok()) return ErrorResponse(r.status());
    return JsonResponse(200, SyncJson(*r));
  }
  return ErrorResponse(NotFound("no such node call: " + what.substr(0, 80)));
}

// POST /v1/apps/{name}/move {"node": id}: asks the leader to move the app
// (202 and the pending record); GET: the app's last move and its progress.
net::HttpResponse Api::Move(const net::HttpRequest& req, const std::string& name) {
  if (req.method == "GET") {
    auto m = cs_->GetMove(name);
    if (!m.ok()) return ErrorResponse(m.status());
    if (!*m) return ErrorResponse(NotFound("app '" + name + "' has never been moved"));
    return JsonResponse(200, MoveJson((*m)->first));
  }
  auto j = NodeCallBody(req, {"node"});
  if (!j.ok())
    return ErrorResponse(InvalidArgument(j.status().message() + " (body: {\"node\": \"<id>\"})"));
  std::string target = (*j)["node"].get<std::string>();
  auto view = cs_->LoadView();
  if (!view.ok()) return ErrorResponse(view.status());
  if (!view->apps.count(name)) return ErrorResponse(NotFound("no app named '" + name + "'"));
  auto p = view->placements.find(name);
  if (p == view->placements.end())
    return ErrorResponse(Unavailable("app '" + name + "' is not placed yet; try again shortly"));
  auto n = view->nodes.find(target);
  if (n == view->nodes.end()) {
    std::string live;
    for (const auto& [id, info] : view->nodes) live += (live.empty() ? "" : ", ") + id;
    return ErrorResponse(InvalidArgument("node '" + target.substr(0, 64) +
                                         "' is not a live node (live: " + live + ")"));
  }
  if (n->second.drained)
    return ErrorResponse(InvalidArgument("node '" + target + "' is drained; undrain it first"));
  if (p->second.primary == target)
    return ErrorResponse(InvalidArgument("app '" + name + "' already runs on '" + target + "'"));
  if (!view->nodes.count(p->second.primary))
    return ErrorResponse(Unavailable("app '" + name + "' has no live primary (node '" +
                                     p->second.primary + "' is gone); failover comes first"));
  int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  cluster::MoveRecord m;
  m.app = name;
  m.target = target;
  m.reason = "user";
  m.by = "api on " + opts_.node_id;
  m.state = "pending";
  m.message = "waiting for the leader";
  m.requested_ms = now;
  m.updated_ms = now;
  Status s = cs_->RequestMove(m);
  if (!s.ok()) return ErrorResponse(s);
  LogInfo("api: move of %s to %s requested", name.c_str(), target.c_str());
  return JsonResponse(202, MoveJson(m));
}

net::HttpResponse Api::Drain(const std::string& node, bool drained) {
  auto view = cs_->LoadView();
  if (!view.ok()) return ErrorResponse(view.status());
  if (drained && !view->nodes.count(node))
    return ErrorResponse(NotFound("node '" + node + "' is not a live node"));
  if (drained) {
    size_t others = 0;
    for (const auto& [id, n] : view->nodes) others += id != node && !n.drained;
    if (others == 0)
      return ErrorResponse(InvalidArgument(
          "node '" + node + "' is the last undrained node: its apps could not go anywhere"));
  }
  Status s = cs_->SetDrain(node, drained, "api on " + opts_.node_id);
  if (!s.ok()) return ErrorResponse(s);
  size_t primaries = 0;
  for (const auto& [app, p] : view->placements) primaries += p.primary == node;
  LogInfo("api: node %s %s", node.c_str(), drained ? "drained" : "undrained");
  return JsonResponse(200, {{"node", node}, {"drained", drained}, {"primaries", primaries}});
}

net::HttpResponse Api::CreateJoinToken(const net::HttpRequest& req) {
  if (!opts_.cluster_ca)
    return ErrorResponse(Unavailable("this node holds no cluster CA, so it cannot issue tokens"));
  int64_t ttl = 3600;
  if (!req.body.empty()) {
    if (req.body.size() > 4096) return ErrorResponse(InvalidArgument("request body is too large"));
    json j = Parse(req.body);
    if (!j.is_object())
      return ErrorResponse(
          InvalidArgument("the body must be a JSON object like {\"ttl_seconds\": 3600}"));
    for (const auto& [k, v] : j.items())
      if (k != "ttl_seconds")
        return ErrorResponse(
            InvalidArgument("unknown field '" + k.substr(0, 64) + "' (allowed: ttl_seconds)"));
    if (j.contains("ttl_seconds")) {
      if (!j["ttl_seconds"].is_number_integer())
        return ErrorResponse(InvalidArgument("ttl_seconds must be a whole number of seconds"));
      ttl = j["ttl_seconds"].get<int64_t>();
    }
  }
  if (ttl < 60 || ttl > 7 * 86400)
    return ErrorResponse(InvalidArgument(
        "ttl_seconds must be from 60 (1 minute) to 604800 (7 days), got " + std::to_string(ttl)));
  auto ca = opts_.cluster_ca();
  if (!ca.ok())
    return ErrorResponse(Unavailable("this node cannot read its CA: " + ca.status().message()));
  auto fp = pki::CertFingerprint(ca->cert_pem);
  if (!fp.ok()) return ErrorResponse(fp.status());
  pki::JoinToken t = pki::NewJoinToken(*fp);
  cluster::JoinTokenRecord rec;
  rec.id = t.id;
  rec.public_key = pki::Base64UrlEncode(pki::JoinTokenPublicKey(t));
  rec.created_unix = time(nullptr);
  rec.expires_unix = rec.created_unix + ttl;
  rec.created_by = opts_.node_id;
  Status s = cs_->CreateJoinToken(rec, ttl);
  if (!s.ok()) return ErrorResponse(s);
  LogInfo("api: join token %s issued (valid %lld s)", t.id.c_str(), static_cast<long long>(ttl));
  return JsonResponse(201, {{"token", pki::FormatJoinToken(t)},
                            {"id", t.id},
                            {"expires_unix", rec.expires_unix},
                            {"ttl_seconds", ttl},
                            {"ca_fingerprint_sha256", pki::FingerprintText(*fp)}});
}

net::HttpResponse Api::DeleteJoinToken(const std::string& id) {
  if (!pki::ValidJoinTokenId(id))
    return ErrorResponse(NotFound("no join token with id '" + id.substr(0, 40) + "'"));
  Status s = cs_->DeleteJoinToken(id);
  if (!s.ok()) return ErrorResponse(s);
  LogInfo("api: join token %s revoked", id.c_str());
  return JsonResponse(200, {{"deleted", id}});
}

net::HttpResponse Api::Join(const net::HttpRequest& req) {
  if (req.body.size() > 64 * 1024) return ErrorResponse(InvalidArgument("join request too large"));
  auto r = pki::JoinRequestFromJson(req.body);
  if (!r.ok()) return ErrorResponse(r.status().Annotate("join request"));
  if (!opts_.cluster_ca)
    return ErrorResponse(Unavailable("this node holds no cluster CA; join through another member"));
  auto rec = cs_->GetJoinToken(r->token_id);
  if (!rec.ok()) return ErrorResponse(rec.status());
  const std::string ask = "; ask for a new one with `hc cluster join-token` on a member";
  if (!*rec || (*rec)->expires_unix <= time(nullptr))
    return ErrorResponse(
        PermissionDenied("join token " + r->token_id + " is unknown, revoked or expired" + ask));
  auto pub = pki::Base64UrlDecode((*rec)->public_key);
  if (!pub.ok())
    return ErrorResponse(Corrupt("join token " + r->token_id + " in etcd is damaged" + ask));
  Status proof = pki::CheckJoinProof(*r, *pub);
  if (!proof.ok()) {
    LogWarn("api: join of '%s' refused: %s", r->node_id.c_str(), proof.message().c_str());
    return ErrorResponse(proof);
  }
  Status id_ok = cluster::ValidateNodeId(r->node_id);
  if (!id_ok.ok()) return ErrorResponse(id_ok);
  auto nodes = cs_->ListNodes();
  if (!nodes.ok()) return ErrorResponse(nodes.status());
  for (const auto& n : *nodes)
    if (n.id == r->node_id)
      return ErrorResponse(Conflict("a node with id '" + r->node_id +
                                    "' is a live member already; give the new node another "
                                    "node_id (or stop the old one first)"));
  auto ca = opts_.cluster_ca();
  if (!ca.ok())
    return ErrorResponse(Unavailable("this node cannot read its CA: " + ca.status().message()));
  auto cert =
      pki::SignNodeCert(*ca, r->csr_pem, {.node_id = r->node_id, .addresses = r->addresses});
  if (!cert.ok()) return ErrorResponse(cert.status());
  auto answer = pki::SealJoinGrant(*r, {*cert, ca->cert_pem, ca->key_pem});
  if (!answer.ok()) return ErrorResponse(answer.status());
  LogInfo("api: node %s admitted with join token %s", r->node_id.c_str(), r->token_id.c_str());
  net::HttpResponse out;
  out.status = 200;
  out.headers.Set("Content-Type", "application/json");
  out.body = pki::ToJson(*answer) + "\n";
  return out;
}

net::HttpResponse Api::GetDns() {
  std::shared_ptr<const dns::ZoneSet> z = opts_.dns_zones ? opts_.dns_zones() : nullptr;
  if (!z) {
    return JsonResponse(200, {{"enabled", static_cast<bool>(opts_.dns_zones)},
                              {"answered_by", opts_.node_id},
                              {"zones", json::array()}});
  }
  json zones = json::array(), ns = json::array();
  for (const auto& zone : z->zones)
    zones.push_back({{"apex", zone.apex}, {"text", dns::ZoneFileText(*z, zone)}});
  for (const auto& n : z->name_servers)
    ns.push_back({{"name", n.name}, {"node", n.node_id}, {"datacenter", n.datacenter}});
  return JsonResponse(200, {{"enabled", true},
                            {"answered_by", opts_.node_id},
                            {"serial", z->serial},
                            {"name_servers", ns},
                            {"warnings", z->warnings},
                            {"zones", zones}});
}

}  // namespace hc::api
