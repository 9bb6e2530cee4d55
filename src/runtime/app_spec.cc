#include "runtime/app_spec.h"

#include <limits>
#include <nlohmann/json.hpp>

#include "common/names.h"
#include "runtime/runtime.h"

namespace hc::runtime {

using nlohmann::json;

Status ValidateAppSpec(const AppSpec& s) {
  HC_RETURN_IF_ERROR(ValidateName("app", s.name));
  if (s.argv.empty() || s.argv[0].empty()) {
    return InvalidArgument("app '" + s.name + "' has no command to run");
  }
  if (s.port == 0) {
    return InvalidArgument("app '" + s.name + "' needs a port (1-65535) to listen on");
  }
  if (s.volume_path.empty() || s.volume_path[0] != '/') {
    return InvalidArgument("app '" + s.name + "': volume path '" + s.volume_path +
                           "' must be absolute");
  }
  for (const auto& e : s.env) {
    size_t eq = e.find('=');
    if (eq == 0 || eq == std::string::npos || e.find('\0') != std::string::npos) {
      return InvalidArgument("app '" + s.name + "': environment entry '" + e +
                             "' must look like NAME=value");
    }
  }
  for (const auto& a : s.argv) {
    if (a.find('\0') != std::string::npos) {
      return InvalidArgument("app '" + s.name + "': command contains a NUL byte");
    }
  }
  if (s.limits.memory_bytes != 0 && s.limits.memory_bytes < (4ull << 20)) {
    return InvalidArgument("app '" + s.name + "': memory limit below 4 MiB cannot run anything");
  }
  if (s.limits.pids != 0 && s.limits.pids < 2) {
    return InvalidArgument("app '" + s.name + "': a process limit below 2 cannot run anything");
  }
  if (s.stop_timeout_ms < 0 || s.stop_timeout_ms > 3600 * 1000) {
    return InvalidArgument("app '" + s.name + "': stop timeout must be 0 to 3600 s");
  }
  if (s.stop_signal <= 0 || s.stop_signal >= NSIG) {
    return InvalidArgument("app '" + s.name + "': stop signal " + std::to_string(s.stop_signal) +
                           " is not a signal");
  }
  const RestartPolicy& r = s.restart;
  if (r.initial_backoff_ms < 0 || r.max_backoff_ms < r.initial_backoff_ms ||
      r.stable_after_ms < 0 || r.crash_loop_after < 1) {
    return InvalidArgument("app '" + s.name +
                           "': restart policy needs 0 <= initial back-off <= max back-off and "
                           "crash_loop_after >= 1");
  }
  if (s.probe.timeout_ms < 0) {
    return InvalidArgument("app '" + s.name + "': probe timeout must not be negative");
  }
  if (s.probe.kind == ProbeKind::kHttp &&
      (s.probe.http_path.empty() || s.probe.http_path[0] != '/' ||
       s.probe.http_path.find_first_of(" \r\n") != std::string::npos)) {
    return InvalidArgument("app '" + s.name + "': probe path '" + s.probe.http_path +
                           "' must start with '/' and contain no spaces");
  }
  return Status::Ok();
}

const char* AppStateName(AppState s) {
  switch (s) {
    case AppState::kStarting: return "starting";
    case AppState::kRunning: return "running";
    case AppState::kBackoff: return "backoff";
    case AppState::kStopping: return "stopping";
    case AppState::kStopped: return "stopped";
    case AppState::kLost: return "lost";
    case AppState::kFenced: return "fenced";
    case AppState::kPrepared: return "prepared";
  }
  return "unknown";
}

uint32_t AppUid(std::string_view name) {
  // FNV-1a: stable across builds and machines, unlike std::hash.
  uint32_t h = 2166136261u;
  for (unsigned char c : name) h = (h ^ c) * 16777619u;
  return kAppUidBase + (h & ((1u << 20) - 1));
}

static const char* ProbeKindName(ProbeKind k) {
  switch (k) {
    case ProbeKind::kNone: return "none";
    case ProbeKind::kTcp: return "tcp";
    case ProbeKind::kHttp: return "http";
  }
  return "tcp";
}

std::string AppSpecToJson(const AppSpec& s) {
  json j = {
      {"name", s.name},
      {"template", s.template_name},
      {"argv", s.argv},
      {"env", s.env},
      {"port", s.port},
      {"volume_path", s.volume_path},
      {"uid", s.uid},
      {"gid", s.gid},
      {"limits",
       {{"memory_bytes", s.limits.memory_bytes},
        {"cpu_millis", s.limits.cpu_millis},
        {"pids", s.limits.pids}}},
      {"probe",
       {{"kind", ProbeKindName(s.probe.kind)},
        {"http_path", s.probe.http_path},
        {"timeout_ms", s.probe.timeout_ms}}},
      {"restart",
       {{"initial_backoff_ms", s.restart.initial_backoff_ms},
        {"max_backoff_ms", s.restart.max_backoff_ms},
        {"stable_after_ms", s.restart.stable_after_ms},
        {"crash_loop_after", s.restart.crash_loop_after}}},
      {"stop_signal", s.stop_signal},
      {"stop_timeout_ms", s.stop_timeout_ms},
  };
  return j.dump(2);
}

namespace {

// Reads an optional integer field, refusing values that do not fit (JSON
// numbers would otherwise be silently truncated: port 70000 -> 4464).
template <typename T>
Status GetInt(const json& j, const char* key, T* out) {
  if (!j.contains(key)) return Status::Ok();
  const json& v = j[key];
  bool fits = false;
  if (v.is_number_unsigned()) {
    fits = v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
  } else if (v.is_number_integer()) {
    int64_t x = v.get<int64_t>();
    fits =
        x >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
        (x < 0 || static_cast<uint64_t>(x) <= static_cast<uint64_t>(std::numeric_limits<T>::max()));
  }
  if (!fits) {
    return InvalidArgument(std::string("app spec: '") + key + "' must be an integer from " +
                           std::to_string(std::numeric_limits<T>::min()) + " to " +
                           std::to_string(std::numeric_limits<T>::max()));
  }
  *out = v.get<T>();
  return Status::Ok();
}

}  // namespace

Result<AppSpec> AppSpecFromJson(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgument("app spec is not a JSON object");
  }
  AppSpec s;
  try {
    s.name = j.at("name").get<std::string>();
    s.template_name = j.value("template", "");
    s.argv = j.at("argv").get<std::vector<std::string>>();
    s.env = j.value("env", std::vector<std::string>{});
    if (!j.contains("port")) return InvalidArgument("app spec has no 'port'");
    HC_RETURN_IF_ERROR(GetInt(j, "port", &s.port));
    s.volume_path = j.at("volume_path").get<std::string>();
    HC_RETURN_IF_ERROR(GetInt(j, "uid", &s.uid));
    HC_RETURN_IF_ERROR(GetInt(j, "gid", &s.gid));
    if (j.contains("limits")) {
      const json& l = j["limits"];
      if (!l.is_object()) return InvalidArgument("app spec: 'limits' must be an object");
      HC_RETURN_IF_ERROR(GetInt(l, "memory_bytes", &s.limits.memory_bytes));
      HC_RETURN_IF_ERROR(GetInt(l, "cpu_millis", &s.limits.cpu_millis));
      HC_RETURN_IF_ERROR(GetInt(l, "pids", &s.limits.pids));
    }
    if (j.contains("probe")) {
      const json& p = j["probe"];
      if (!p.is_object()) return InvalidArgument("app spec: 'probe' must be an object");
      std::string kind = p.value("kind", "tcp");
      if (kind == "none") {
        s.probe.kind = ProbeKind::kNone;
      } else if (kind == "tcp") {
        s.probe.kind = ProbeKind::kTcp;
      } else if (kind == "http") {
        s.probe.kind = ProbeKind::kHttp;
      } else {
        return InvalidArgument("probe kind '" + kind + "' is not none, tcp or http");
      }
      s.probe.http_path = p.value("http_path", s.probe.http_path);
      HC_RETURN_IF_ERROR(GetInt(p, "timeout_ms", &s.probe.timeout_ms));
    }
    if (j.contains("restart")) {
      const json& r = j["restart"];
      if (!r.is_object()) return InvalidArgument("app spec: 'restart' must be an object");
      HC_RETURN_IF_ERROR(GetInt(r, "initial_backoff_ms", &s.restart.initial_backoff_ms));
      HC_RETURN_IF_ERROR(GetInt(r, "max_backoff_ms", &s.restart.max_backoff_ms));
      HC_RETURN_IF_ERROR(GetInt(r, "stable_after_ms", &s.restart.stable_after_ms));
      HC_RETURN_IF_ERROR(GetInt(r, "crash_loop_after", &s.restart.crash_loop_after));
    }
    HC_RETURN_IF_ERROR(GetInt(j, "stop_signal", &s.stop_signal));
    HC_RETURN_IF_ERROR(GetInt(j, "stop_timeout_ms", &s.stop_timeout_ms));
  } catch (const json::exception& e) {
    return InvalidArgument(std::string("app spec: ") + e.what());
  }
  HC_RETURN_IF_ERROR(ValidateAppSpec(s));
  return s;
}

}  // namespace hc::runtime
