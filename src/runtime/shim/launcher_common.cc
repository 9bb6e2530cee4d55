// Pieces both launchers use: identity, environment, process trees, settings.
#include <dirent.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "runtime/cgroup.h"
#include "runtime/shim/launcher.h"

namespace hc::runtime::shim {

using nlohmann::json;

Result<ShimConfig> ShimConfigFromJson(std::string_view text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("shim.json is not an object");
  ShimConfig c;
  try {
    c.backend = j.at("backend").get<std::string>();
    c.app_dir = j.at("app_dir").get<std::string>();
    c.runc_path = j.value("runc_path", "runc");
    c.runc_root = j.value("runc_root", "");
    c.rootfs = j.value("rootfs", "");
    c.cgroup_parent = j.value("cgroup_parent", "hybridcluster");
    c.log_max_bytes = j.value("log_max_bytes", c.log_max_bytes);
    c.log_files = j.value("log_files", c.log_files);
    c.fence_file = j.value("fence_file", "");
    c.prepare_only = j.value("prepare_only", false);
  } catch (const json::exception& e) {
    return InvalidArgument(std::string("shim.json: ") + e.what());
  }
  return c;
}

std::string ShimConfigToJson(const ShimConfig& c) {
  return json{{"backend", c.backend},
              {"app_dir", c.app_dir},
              {"runc_path", c.runc_path},
              {"runc_root", c.runc_root},
              {"rootfs", c.rootfs},
              {"cgroup_parent", c.cgroup_parent},
              {"log_max_bytes", c.log_max_bytes},
              {"log_files", c.log_files},
              {"fence_file", c.fence_file},
              {"prepare_only", c.prepare_only}}
      .dump(1);
}

Usage UsageFromCgroup(const CgroupUsage& cu) {
  Usage u;
  u.cpu_seconds = static_cast<double>(cu.cpu_ns) / 1e9;
  u.memory_bytes = cu.memory_bytes;
  u.memory_peak_bytes = cu.memory_peak_bytes;
  u.memory_limit_bytes = cu.memory_limit_bytes;
  u.processes = cu.processes;
  u.oom_kills = cu.oom_kills;
  u.from_cgroup = true;
  return u;
}

void AppIdentity(const AppSpec& spec, uint32_t* uid, uint32_t* gid) {
  if (::geteuid() != 0) {
    *uid = ::geteuid();
    *gid = ::getegid();
    return;
  }
  *uid = spec.uid ? spec.uid : AppUid(spec.name);
  *gid = spec.gid ? spec.gid : *uid;
}

std::vector<std::string> AppEnvironment(const AppSpec& spec, const std::string& app_dir_seen) {
  std::vector<std::string> env = {
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "HOME=" + app_dir_seen,
      "APP_DIR=" + app_dir_seen,
      "APP_NAME=" + spec.name,
      "PORT=" + std::to_string(spec.port),
      "LANG=C.UTF-8",
  };
  // A spec entry overrides a default of the same name (but never PORT/APP_DIR).
  for (const auto& e : spec.env) {
    std::string key = e.substr(0, e.find('='));
    if (key == "PORT" || key == "APP_DIR" || key == "APP_NAME") continue;
    bool replaced = false;
    for (auto& d : env) {
      if (d.compare(0, key.size() + 1, key + "=") == 0) {
        d = e;
        replaced = true;
      }
    }
    if (!replaced) env.push_back(e);
  }
  return env;
}

std::vector<pid_t> Descendants(pid_t root) {
  std::multimap<pid_t, pid_t> children;  // parent -> child
  DIR* d = ::opendir("/proc");
  if (!d) return {};
  while (struct dirent* e = ::readdir(d)) {
    char* end;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    auto stat = ReadFileToString("/proc/" + std::string(e->d_name) + "/stat");
    if (!stat.ok()) continue;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    size_t rp = stat->rfind(')');
    if (rp == std::string::npos || rp + 4 >= stat->size()) continue;
    long ppid = std::strtol(stat->c_str() + rp + 4, nullptr, 10);  // ") S <ppid>"
    children.emplace(static_cast<pid_t>(ppid), static_cast<pid_t>(pid));
  }
  ::closedir(d);
  std::vector<pid_t> out;
  std::vector<pid_t> todo = {root};
  while (!todo.empty()) {
    pid_t p = todo.back();
    todo.pop_back();
    auto [b, e] = children.equal_range(p);
    for (auto it = b; it != e; ++it) {
      out.push_back(it->second);
      todo.push_back(it->second);
    }
  }
  return out;
}

}  // namespace hc::runtime::shim
