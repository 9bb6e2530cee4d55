#include "cli/api_client.h"

#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "net/http_client.h"

namespace hc::cli {
namespace {

using json = nlohmann::json;

struct Resolved {
  std::string api;
  std::string token;
  std::string source;
};

Resolved Resolve(const ApiFlags& f) {
  Resolved r;
  json cfg;
  std::string path = ClientConfigPath();
  if (auto text = ReadFileToString(path); text.ok()) {
    cfg = json::parse(*text, nullptr, false);
    if (!cfg.is_object()) cfg = json::object();
  }
  if (!f.api.empty()) {
    r.api = f.api;
    r.source = "--api";
  } else if (const char* e = getenv("HC_API"); e && *e) {
    r.api = e;
    r.source = "$HC_API";
  } else if (cfg.contains("api") && cfg["api"].is_string()) {
    r.api = cfg["api"].get<std::string>();
    r.source = path;
  } else {
    r.api = "http://127.0.0.1:7480";
    r.source = "the default (no --api, $HC_API or " + path + ")";
  }
  if (!f.token.empty())
    r.token = f.token;
  else if (const char* e = getenv("HC_TOKEN"); e && *e)
    r.token = e;
  else if (cfg.contains("token") && cfg["token"].is_string())
    r.token = cfg["token"].get<std::string>();
  return r;
}

}  // namespace

void ApiFlags::AddTo(CLI::App* cmd, bool with_json) {
  cmd->add_option("--api", api,
                  "cluster API URL (default: $HC_API, the client config, http://127.0.0.1:7480)");
  cmd->add_option("--token", token, "API token (default: $HC_TOKEN or the client config)");
  if (with_json) cmd->add_flag("--json", json, "print JSON for scripts");
}

std::string ClientConfigPath() {
  if (const char* e = getenv("HC_CLIENT_CONFIG"); e && *e) return e;
  const char* xdg = getenv("XDG_CONFIG_HOME");
  std::string base =
      xdg && *xdg ? xdg : std::string(getenv("HOME") ? getenv("HOME") : "/root") + "/.config";
  return base + "/hybridcluster/client.json";
}

Status WriteClientConfig(const std::string& path, const std::string& api,
                         const std::string& token) {
  auto slash = path.rfind('/');
  if (slash != std::string::npos) HC_RETURN_IF_ERROR(MakeDirs(path.substr(0, slash), 0700));
  json j = {{"api", api}};
  if (!token.empty()) j["token"] = token;
  return WriteFileAtomic(path, j.dump(2) + "\n", true);
}

Result<std::string> CallApi(const ApiFlags& f, const std::string& method, const std::string& path,
                            const std::string& body) {
  Resolved r = Resolve(f);
  auto hp = net::ParseHttpUrl(r.api, 7480);
  if (!hp.ok())
    return InvalidArgument("API URL '" + r.api + "' (from " + r.source +
                           "): " + hp.status().message());
  net::HttpClient client(*hp, {.connect_timeout = std::chrono::milliseconds(3000),
                               .request_timeout = std::chrono::milliseconds(30000)});
  net::HttpRequest req;
  req.method = method;
  req.target = path;
  req.body = body;
  if (!body.empty()) req.headers.Set("Content-Type", "application/json");
  if (!r.token.empty()) req.headers.Set("Authorization", "Bearer " + r.token);
  auto resp = client.Do(req);
  if (!resp.ok())
    return Unavailable("cannot reach the cluster API at " + r.api + " (from " + r.source +
                       "): " + resp.status().message() + "; is hcd running there?");
  if (resp->status >= 200 && resp->status < 300) return std::move(resp->body);
  std::string msg = resp->body;
  json j = json::parse(resp->body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object())
    msg = j["error"].value("message", resp->body);
  switch (resp->status) {
    case 400: return InvalidArgument(msg);
    case 401:
    case 403: return PermissionDenied(msg);
    case 404: return NotFound(msg);
    case 409: return AlreadyExists(msg);
    case 503: return Unavailable(msg);
    default: return Internal("HTTP " + std::to_string(resp->status) + ": " + msg);
  }
}

}  // namespace hc::cli
