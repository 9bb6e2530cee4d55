// hcd: the HybridCluster node daemon (src/agent/node.h). One per server.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "agent/config.h"
#include "agent/node.h"
#include "common/fs.h"
#include "common/log.h"

namespace {
hc::agent::Node* g_node = nullptr;
void OnSignal(int) {
  if (g_node) g_node->Shutdown();
}
}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  hc::agent::Config cfg;
  CLI::App app{
      "hcd - the HybridCluster node daemon. Run one on every server; nodes find each other "
      "through etcd.\n\nSettings come from the config file (YAML), then the flags below.\n\n" +
      hc::agent::ConfigHelp()};
  app.set_version_flag("--version", "hcd 0.1.0");
  std::string config_path = "/etc/hybridcluster/hcd.yaml";
  bool config_given = false;
  app.add_option("-c,--config", config_path, "config file (YAML)")
      ->capture_default_str()
      ->each([&](const std::string&) { config_given = true; });
  std::string node_id, data_dir, address, api_listen, datacenter, etcd, prefix, runtime_backend,
      storage_backend, log_level, cgroup_parent, memory, cpus;
  app.add_option("--node-id", node_id, "sets node_id (see above)");
  app.add_option("--data-dir", data_dir, "sets data_dir (see above)");
  app.add_option("--address", address, "sets address (see above)");
  app.add_option("--api-listen", api_listen, "sets api_listen (see above)");
  app.add_option("--datacenter", datacenter, "sets datacenter (see above)");
  app.add_option("--etcd", etcd, "sets etcd_endpoints (comma-separated URLs)");
  app.add_option("--etcd-prefix", prefix, "sets etcd_prefix (see above)");
  app.add_option("--runtime", runtime_backend, "sets runtime_backend (see above)");
  app.add_option("--storage", storage_backend, "sets storage_backend (see above)");
  app.add_option("--cgroup-parent", cgroup_parent, "sets cgroup_parent (see above)");
  app.add_option("--memory-capacity", memory, "sets memory_capacity (see above)");
  app.add_option("--cpu-capacity", cpus, "sets cpu_capacity (see above)");
  app.add_option("--log-level", log_level, "sets log_level (see above)");
  std::string join_token, join_file;
  app.add_option("--join", join_token,
                 "join an existing cluster with this token (from `hc cluster join-token` on a "
                 "member); needed only on a node's first start");
  app.add_option("--join-file", join_file, "the same, with the token read from a file");
  bool check = false;
  app.add_flag("--check-config", check, "check the configuration, print it and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (config_given || hc::PathExists(config_path)) {
    hc::Status s = hc::agent::LoadConfigFile(config_path, &cfg);
    if (!s.ok()) {
      std::fprintf(stderr, "hcd: %s\n", s.message().c_str());
      return 2;
    }
  }
  auto set = [](std::string* field, const std::string& v) {
    if (!v.empty()) *field = v;
  };
  set(&cfg.node_id, node_id);
  set(&cfg.data_dir, data_dir);
  set(&cfg.address, address);
  set(&cfg.api_listen, api_listen);
  set(&cfg.datacenter, datacenter);
  set(&cfg.etcd_prefix, prefix);
  set(&cfg.runtime_backend, runtime_backend);
  set(&cfg.storage_backend, storage_backend);
  set(&cfg.cgroup_parent, cgroup_parent);
  set(&cfg.memory_capacity, memory);
  set(&cfg.cpu_capacity, cpus);
  set(&cfg.log_level, log_level);
  if (!join_token.empty() || !join_file.empty()) {
    cfg.join_token = join_token;
    cfg.join_token_file = join_file;
  }
  if (!etcd.empty()) {
    cfg.etcd_endpoints.clear();
    size_t start = 0;
    while (start <= etcd.size()) {
      size_t comma = etcd.find(',', start);
      if (comma == std::string::npos) comma = etcd.size();
      if (comma > start) cfg.etcd_endpoints.push_back(etcd.substr(start, comma - start));
      start = comma + 1;
    }
  }
  hc::Status s = hc::agent::ResolveConfig(&cfg);
  if (!s.ok()) {
    std::fprintf(stderr, "hcd: configuration: %s\n", s.message().c_str());
    return 2;
  }
  hc::LogLevel level;
  if (hc::ParseLogLevel(cfg.log_level, &level)) hc::SetLogLevel(level);
  if (check) {
    std::printf(
        "config: %s\ndata_dir: %s\naddress: %s\napi_listen: %s\ndatacenter: %s\n"
        "etcd_endpoints: %zu\nmemory: %llu bytes\ncpu: %u millicores\n",
        cfg.config_path.empty() ? "(defaults)" : cfg.config_path.c_str(), cfg.data_dir.c_str(),
        cfg.address.c_str(), cfg.api_listen.c_str(), cfg.datacenter.c_str(),
        cfg.etcd_endpoints.size(), static_cast<unsigned long long>(cfg.memory_bytes),
        cfg.cpu_millis);
    return 0;
  }
  hc::agent::Node node(cfg);
  g_node = &node;
  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  s = node.Run();
  g_node = nullptr;
  if (!s.ok()) {
    std::fprintf(stderr, "hcd: %s\n", s.message().c_str());
    return 1;
  }
  return 0;
}
