// How `hc` reaches a cluster: --api URL, else $HC_API, else the client config
// that `hc demo` writes ($HC_CLIENT_CONFIG, default
// ~/.config/hybridcluster/client.json: {"api": "http://...", "token": "..."}),
// else http://127.0.0.1:7480. The token likewise: --token, $HC_TOKEN, config.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "common/status.h"

namespace hc::cli {

struct ApiFlags {
  std::string api;
  std::string token;
  bool json = false;
  void AddTo(CLI::App* cmd, bool with_json);
};

std::string ClientConfigPath();
Status WriteClientConfig(const std::string& path, const std::string& api, const std::string& token);

struct ApiReply {
  int status = 0;
  std::string body;  // JSON
};

// Performs one call. Transport failures become Unavailable with a hint
// ("is hcd running? hc looked at URL because ..."); HTTP errors carry the
// server's message and map back to a Status code.
Result<std::string> CallApi(const ApiFlags& f, const std::string& method, const std::string& path,
                            const std::string& body = "");

}  // namespace hc::cli
