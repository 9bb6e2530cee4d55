#include "cluster/state.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <type_traits>

#include "common/names.h"
#include "replication/retention.h"

namespace hc::cluster {

using nlohmann::json;

namespace {

// The runtime's TemplateNames() (runtime/templates.h), repeated here so that
// cluster/ does not depend on the runtime library. Keep the two in step.
constexpr const char* kTemplates[] = {"static", "command", "postgres", "mariadb"};

// Set by the runtime for every app; a user value would be overwritten or,
// worse, break the app's view of itself.
constexpr const char* kReservedEnv[] = {"PORT", "APP_DIR", "HOME", "PATH"};

constexpr size_t kMaxEnv = 64;
constexpr size_t kMaxEnvBytes = 4096;
constexpr size_t kMaxDomains = 32;
constexpr uint32_t kMaxReplicas = 5;
constexpr uint64_t kMinMemory = 16ull << 20;
constexpr uint64_t kMaxMemory = 1ull << 40;
constexpr uint32_t kMinCpuMillis = 10;
constexpr uint32_t kMaxCpuMillis = 256000;
constexpr uint32_t kMinPids = 16;
constexpr uint32_t kMaxPids = 1000000;

// Strings in the state may hold whatever a process printed (AppObserved
// .message); dumping must not throw on invalid UTF-8.
std::string Dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// "1 MiB", "1536 KiB", "100 bytes": exact, in the largest unit that divides.
std::string Bytes(uint64_t n) {
  constexpr const char* kUnits[] = {"TiB", "GiB", "MiB", "KiB"};
  for (int i = 0; i < 4; ++i) {
    uint64_t unit = 1ull << (10 * (4 - i));
    if (n != 0 && n % unit == 0) return std::to_string(n / unit) + " " + kUnits[i];
  }
  return std::to_string(n) + (n == 1 ? " byte" : " bytes");
}

// Typed, range-checked access to the fields of one JSON object. Errors read
// "<what>: field '<prefix><key>' must be ...".
class Fields {
 public:
  Fields(const json& j, std::string what, std::string prefix = "")
      : j_(j), what_(std::move(what)), prefix_(std::move(prefix)) {}

  Status Str(const char* key, std::string* out) const {
    const json* v = Find(key);
    if (v == nullptr) return Status::Ok();
    if (!v->is_string()) return Error(key, "must be a string");
    *out = v->get<std::string>();
    return Status::Ok();
  }

  Status RequiredStr(const char* key, std::string* out) const {
    const json* v = Find(key);
    if (v == nullptr) return Error(key, "is required");
    HC_RETURN_IF_ERROR(Str(key, out));
    if (out->empty()) return Error(key, "must not be empty");
    return Status::Ok();
  }

  Status StrList(const char* key, std::vector<std::string>* out) const {
    const json* v = Find(key);
    if (v == nullptr) return Status::Ok();
    if (!v->is_array()) return Error(key, "must be a list of strings");
    std::vector<std::string> list;
    list.reserve(v->size());
    for (const json& e : *v) {
      if (!e.is_string()) return Error(key, "must be a list of strings");
      list.push_back(e.get<std::string>());
    }
    *out = std::move(list);
    return Status::Ok();
  }

  Status PortList(const char* key, std::vector<uint16_t>* out) const {
    const json* v = Find(key);
    if (v == nullptr) return Status::Ok();
    std::vector<uint16_t> list;
    if (v->is_array()) {
      for (const json& e : *v) {
        if (!e.is_number_unsigned() || e.get<uint64_t>() < 1 || e.get<uint64_t>() > 65535) {
          list.clear();
          break;
        }
        list.push_back(static_cast<uint16_t>(e.get<uint64_t>()));
      }
      if (list.size() == v->size()) {
        *out = std::move(list);
        return Status::Ok();
      }
    }
    return Error(key, "must be a list of port numbers from 1 to 65535");
  }

  Status Bool(const char* key, bool* out) const {
    const json* v = Find(key);
    if (v == nullptr) return Status::Ok();
    if (!v->is_boolean()) return Error(key, "must be true or false");
    *out = v->get<bool>();
    return Status::Ok();
  }

  Status NonNegativeNumber(const char* key, double* out) const {
    const json* v = Find(key);
    if (v == nullptr) return Status::Ok();
    double x = v->is_number() ? v->get<double>() : -1;
    if (!std::isfinite(x) || x < 0) return Error(key, "must be a non-negative number");
    *out = x;
    return Status::Ok();
  }

  // JSON numbers would otherwise be truncated silently (port 70000 -> 4464).
  // Floats are refused even when integral: nothing writes them.
  template <typename T>
  Status Int(const char* key, T* out, T min = std::numeric_limits<T>::min()) const {
    static_assert(std::is_integral_v<T>);
    const json* v = Find(key);
    if (v == nullptr) return Status::Ok();
    constexpr T kMax = std::numeric_limits<T>::max();
    // Every int64 and uint64 fits in __int128, so one comparison covers all.
    __int128 x = 0;
    bool integer = true;
    if (v->is_number_unsigned()) {
      x = v->get<uint64_t>();
    } else if (v->is_number_integer()) {
      x = v->get<int64_t>();
    } else {
      integer = false;
    }
    if (!integer || x < static_cast<__int128>(min) || x > static_cast<__int128>(kMax)) {
      return Error(key, RangeText<T>(min));
    }
    *out = static_cast<T>(x);
    return Status::Ok();
  }

  // The nested object `key`, or nullptr when absent.
  Result<const json*> Object(const char* key) const {
    const json* v = Find(key);
    if (v != nullptr && !v->is_object()) return Error(key, "must be an object");
    return v;
  }

  Status Error(const char* key, const std::string& problem) const {
    return InvalidArgument(what_ + ": field '" + prefix_ + key + "' " + problem);
  }

 private:
  const json* Find(const char* key) const {
    auto it = j_.find(key);
    return it == j_.end() ? nullptr : &*it;
  }

  template <typename T>
  static std::string RangeText(T min) {
    constexpr T kMax = std::numeric_limits<T>::max();
    if constexpr (sizeof(T) == 8) {
      if (min == 0) return "must be a non-negative integer";
      if (min == std::numeric_limits<T>::min()) return "must be an integer";
    }
    return "must be an integer from " + std::to_string(min) + " to " + std::to_string(kMax);
  }

  const json& j_;
  std::string what_;
  std::string prefix_;
};

// Parses `text` as a JSON object; the message says what was expected.
Result<json> ParseObject(std::string_view text, const std::string& what) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    // parse_error, or out_of_range for a number beyond a double ("1e400").
    std::string detail = e.what();
    // Drop the "[json.exception.parse_error.101] " tag; keep the position.
    if (size_t close = detail.find("] "); close != std::string::npos) {
      detail = detail.substr(close + 2);
    }
    return InvalidArgument(what + ": not valid JSON (" + detail + ")");
  }
  if (!j.is_object()) {
    return InvalidArgument(what + ": expected a JSON object, got " + j.type_name());
  }
  return j;
}

bool ValidEnvKey(std::string_view k) {
  if (k.empty()) return false;
  auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
  if (!alpha(k[0])) return false;
  for (char c : k) {
    if (!alpha(c) && !(c >= '0' && c <= '9')) return false;
  }
  return true;
}

Status ValidateEnv(const std::string& app, const std::vector<std::string>& env) {
  if (env.size() > kMaxEnv) {
    return InvalidArgument("app '" + app + "': env: " + std::to_string(env.size()) +
                           " entries is more than the maximum of " + std::to_string(kMaxEnv));
  }
  for (size_t i = 0; i < env.size(); ++i) {
    const std::string& e = env[i];
    std::string where = "app '" + app + "': env[" + std::to_string(i) + "]: ";
    if (e.size() > kMaxEnvBytes) {
      return InvalidArgument(where + "entry is " + std::to_string(e.size()) +
                             " bytes long; the maximum is " + std::to_string(kMaxEnvBytes));
    }
    if (e.find('\0') != std::string::npos) {
      return InvalidArgument(where + "entry contains a NUL byte");
    }
    size_t eq = e.find('=');
    std::string key = e.substr(0, eq);
    if (eq == std::string::npos || !ValidEnvKey(key)) {
      return InvalidArgument(where + "'" + e +
                             "' must look like KEY=VALUE with KEY of letters, digits and '_', "
                             "not starting with a digit");
    }
    for (const char* r : kReservedEnv) {
      if (key == r) {
        return InvalidArgument(where + key +
                               " is set by the runtime and cannot be overridden "
                               "(reserved: PORT, APP_DIR, HOME, PATH)");
      }
    }
  }
  return Status::Ok();
}

Status ValidateDomains(const std::string& app, const std::vector<std::string>& domains,
                       const char* field, std::set<std::string_view>* seen_before) {
  if (domains.size() > kMaxDomains) {
    return InvalidArgument("app '" + app + "': " + field + ": " + std::to_string(domains.size()) +
                           " " + field + " is more than the maximum of " +
                           std::to_string(kMaxDomains));
  }
  std::set<std::string_view>& seen = *seen_before;
  for (size_t i = 0; i < domains.size(); ++i) {
    std::string where = "app '" + app + "': " + field + "[" + std::to_string(i) + "]";
    HC_RETURN_IF_ERROR(ValidateDomain(domains[i]).Annotate(where));
    if (!seen.insert(domains[i]).second) {
      return InvalidArgument(where + ": '" + domains[i] + "' is listed twice");
    }
  }
  return Status::Ok();
}

template <typename T>
Status CheckRange(const std::string& app, const char* field, T v, T min, T max,
                  std::string (*show)(T)) {
  if (v < min) {
    return InvalidArgument("app '" + app + "': " + field + ": " + show(v) +
                           " is below the minimum of " + show(min));
  }
  if (v > max) {
    return InvalidArgument("app '" + app + "': " + field + ": " + show(v) +
                           " is above the maximum of " + show(max));
  }
  return Status::Ok();
}

std::string Count(uint32_t n) {
  return std::to_string(n);
}

Result<PlacementState> ParsePlacementState(const std::string& s) {
  for (PlacementState p :
       {PlacementState::kRunning, PlacementState::kMigrating, PlacementState::kFailingOver}) {
    if (s == PlacementStateName(p)) return p;
  }
  return InvalidArgument(
      "placement: field 'state' must be one of running, migrating, "
      "failing-over; got '" +
      s + "'");
}

}  // namespace

const char* PlacementStateName(PlacementState s) {
  switch (s) {
    case PlacementState::kRunning: return "running";
    case PlacementState::kMigrating: return "migrating";
    case PlacementState::kFailingOver: return "failing-over";
  }
  return "running";
}

std::string ToJson(const NodeInfo& n) {
  json j = {
      {"id", n.id},
      {"name", n.name},
      {"address", n.address},
      {"api_port", n.api_port},
      {"datacenter", n.datacenter},
      {"memory_bytes", n.memory_bytes},
      {"cpu_millis", n.cpu_millis},
      {"version", n.version},
      {"started_unix", n.started_unix},
      {"drained", n.drained},
      {"public_addresses", n.public_addresses},
      {"proxy_port", n.proxy_port},
      {"replication_port", n.replication_port},
  };
  return Dump(j);
}

std::string ToJson(const AppDef& a) {
  json j = {
      {"name", a.name},
      {"template", a.template_name},
      {"command", a.command},
      {"env", a.env},
      {"domains", a.domains},
      {"aliases", a.aliases},
      {"protocol", a.protocol},
      {"tcp_ports", a.tcp_ports},
      {"replicas", a.replicas},
      {"snapshot_interval_seconds", a.snapshot_interval_seconds},
      {"retention", a.retention},
      {"limits",
       {{"memory_bytes", a.limits.memory_bytes},
        {"cpu_millis", a.limits.cpu_millis},
        {"pids", a.limits.pids}}},
      {"created_unix", a.created_unix},
  };
  return Dump(j);
}

std::string ToJson(const AppCertificate& c) {
  json j = {{"app", c.app},
            {"cert_pem", c.cert_pem},
            {"key_pem", c.key_pem},
            {"updated_unix", c.updated_unix}};
  return Dump(j);
}

std::string ToJson(const Event& e) {
  json j = {{"time_ms", e.time_ms},
            {"node", e.node},
            {"app", e.app},
            {"kind", e.kind},
            {"message", e.message}};
  return Dump(j);
}

Result<Event> EventFromJson(std::string_view text) {
  HC_ASSIGN_OR_RETURN(json j, ParseObject(text, "event"));
  Fields f(j, "event");
  Event e;
  HC_RETURN_IF_ERROR(f.Int("time_ms", &e.time_ms));
  HC_RETURN_IF_ERROR(f.Str("node", &e.node));
  HC_RETURN_IF_ERROR(f.Str("app", &e.app));
  HC_RETURN_IF_ERROR(f.RequiredStr("kind", &e.kind));
  HC_RETURN_IF_ERROR(f.Str("message", &e.message));
  return e;
}

Result<AppCertificate> AppCertificateFromJson(std::string_view text) {
  HC_ASSIGN_OR_RETURN(json j, ParseObject(text, "certificate"));
  Fields f(j, "certificate");
  AppCertificate c;
  HC_RETURN_IF_ERROR(f.RequiredStr("app", &c.app));
  HC_RETURN_IF_ERROR(f.RequiredStr("cert_pem", &c.cert_pem));
  HC_RETURN_IF_ERROR(f.RequiredStr("key_pem", &c.key_pem));
  HC_RETURN_IF_ERROR(f.Int("updated_unix", &c.updated_unix));
  return c;
}

std::string ToJson(const Placement& p) {
  json j = {
      {"app", p.app},
      {"primary", p.primary},
      {"replicas", p.replicas},
      {"epoch", p.epoch},
      {"state", PlacementStateName(p.state)},
  };
  return Dump(j);
}

std::string ToJson(const AppObserved& o) {
  json j = {
      {"app", o.app},
      {"node", o.node},
      {"role", o.role},
      {"epoch", o.epoch},
      {"state", o.state},
      {"ready", o.ready},
      {"port", o.port},
      {"cpu_seconds", o.cpu_seconds},
      {"memory_bytes", o.memory_bytes},
      {"restarts", o.restarts},
      {"message", o.message},
      {"updated_unix", o.updated_unix},
  };
  return Dump(j);
}

Result<NodeInfo> NodeInfoFromJson(std::string_view text) {
  HC_ASSIGN_OR_RETURN(json j, ParseObject(text, "node"));
  Fields f(j, "node");
  NodeInfo n;
  HC_RETURN_IF_ERROR(f.RequiredStr("id", &n.id));
  HC_RETURN_IF_ERROR(f.Str("name", &n.name));
  HC_RETURN_IF_ERROR(f.Str("address", &n.address));
  HC_RETURN_IF_ERROR(f.Int("api_port", &n.api_port));
  HC_RETURN_IF_ERROR(f.Str("datacenter", &n.datacenter));
  HC_RETURN_IF_ERROR(f.Int("memory_bytes", &n.memory_bytes));
  HC_RETURN_IF_ERROR(f.Int("cpu_millis", &n.cpu_millis));
  HC_RETURN_IF_ERROR(f.Str("version", &n.version));
  HC_RETURN_IF_ERROR(f.Int("started_unix", &n.started_unix));
  HC_RETURN_IF_ERROR(f.Bool("drained", &n.drained));
  HC_RETURN_IF_ERROR(f.StrList("public_addresses", &n.public_addresses));
  HC_RETURN_IF_ERROR(f.Int("proxy_port", &n.proxy_port));
  HC_RETURN_IF_ERROR(f.Int("replication_port", &n.replication_port));
  return n;
}

Result<AppDef> AppDefFromJson(std::string_view text) {
  HC_ASSIGN_OR_RETURN(json j, ParseObject(text, "app"));
  Fields f(j, "app");
  AppDef a;
  HC_RETURN_IF_ERROR(f.RequiredStr("name", &a.name));
  HC_RETURN_IF_ERROR(f.RequiredStr("template", &a.template_name));
  HC_RETURN_IF_ERROR(f.Str("command", &a.command));
  HC_RETURN_IF_ERROR(f.StrList("env", &a.env));
  HC_RETURN_IF_ERROR(f.StrList("domains", &a.domains));
  HC_RETURN_IF_ERROR(f.StrList("aliases", &a.aliases));
  HC_RETURN_IF_ERROR(f.Str("protocol", &a.protocol));
  HC_RETURN_IF_ERROR(f.PortList("tcp_ports", &a.tcp_ports));
  HC_RETURN_IF_ERROR(f.Int("replicas", &a.replicas));
  HC_RETURN_IF_ERROR(f.Int("snapshot_interval_seconds", &a.snapshot_interval_seconds));
  HC_RETURN_IF_ERROR(f.Str("retention", &a.retention));
  HC_ASSIGN_OR_RETURN(const json* limits, f.Object("limits"));
  if (limits != nullptr) {
    Fields l(*limits, "app", "limits.");
    HC_RETURN_IF_ERROR(l.Int("memory_bytes", &a.limits.memory_bytes));
    HC_RETURN_IF_ERROR(l.Int("cpu_millis", &a.limits.cpu_millis));
    HC_RETURN_IF_ERROR(l.Int("pids", &a.limits.pids));
  }
  HC_RETURN_IF_ERROR(f.Int("created_unix", &a.created_unix));
  return a;
}

Result<Placement> PlacementFromJson(std::string_view text) {
  HC_ASSIGN_OR_RETURN(json j, ParseObject(text, "placement"));
  Fields f(j, "placement");
  Placement p;
  HC_RETURN_IF_ERROR(f.RequiredStr("app", &p.app));
  HC_RETURN_IF_ERROR(f.RequiredStr("primary", &p.primary));
  HC_RETURN_IF_ERROR(f.StrList("replicas", &p.replicas));
  HC_RETURN_IF_ERROR(f.Int("epoch", &p.epoch));
  std::string state = PlacementStateName(p.state);
  HC_RETURN_IF_ERROR(f.Str("state", &state));
  HC_ASSIGN_OR_RETURN(p.state, ParsePlacementState(state));
  return p;
}

std::string ToJson(const MoveRecord& m) {
  json j = {{"app", m.app},
            {"target", m.target},
            {"source", m.source},
            {"reason", m.reason},
            {"state", m.state},
            {"message", m.message},
            {"by", m.by},
            {"requested_ms", m.requested_ms},
            {"updated_ms", m.updated_ms},
            {"pause_ms", m.pause_ms},
            {"precopy_bytes", m.precopy_bytes},
            {"final_bytes", m.final_bytes},
            {"epoch", m.epoch}};
  return Dump(j);
}

Result<MoveRecord> MoveRecordFromJson(std::string_view text) {
  HC_ASSIGN_OR_RETURN(json j, ParseObject(text, "move"));
  Fields f(j, "move");
  MoveRecord m;
  HC_RETURN_IF_ERROR(f.RequiredStr("app", &m.app));
  HC_RETURN_IF_ERROR(f.RequiredStr("target", &m.target));
  HC_RETURN_IF_ERROR(f.Str("source", &m.source));
  HC_RETURN_IF_ERROR(f.Str("reason", &m.reason));
  HC_RETURN_IF_ERROR(f.RequiredStr("state", &m.state));
  HC_RETURN_IF_ERROR(f.Str("message", &m.message));
  HC_RETURN_IF_ERROR(f.Str("by", &m.by));
  HC_RETURN_IF_ERROR(f.Int("requested_ms", &m.requested_ms));
  HC_RETURN_IF_ERROR(f.Int("updated_ms", &m.updated_ms));
  HC_RETURN_IF_ERROR(f.Int("pause_ms", &m.pause_ms));
  HC_RETURN_IF_ERROR(f.Int("precopy_bytes", &m.precopy_bytes));
  HC_RETURN_IF_ERROR(f.Int("final_bytes", &m.final_bytes));
  HC_RETURN_IF_ERROR(f.Int("epoch", &m.epoch));
  static const char* kStates[] = {"pending",  "copying", "handing-off", "switching",
                                  "starting", "done",    "failed"};
  if (std::find(std::begin(kStates), std::end(kStates), m.state) == std::end(kStates))
    return InvalidArgument("move: unknown state '" + m.state.substr(0, 40) + "'");
  HC_RETURN_IF_ERROR(ValidateNodeId(m.target).Annotate("move: target"));
  return m;
}

std::string ToJson(const JoinTokenRecord& t) {
  json j = {{"id", t.id},
            {"public_key", t.public_key},
            {"created_unix", t.created_unix},
            {"expires_unix", t.expires_unix},
            {"created_by", t.created_by}};
  return Dump(j);
}

Result<JoinTokenRecord> JoinTokenRecordFromJson(std::string_view text) {
  HC_ASSIGN_OR_RETURN(json j, ParseObject(text, "join token"));
  Fields f(j, "join token");
  JoinTokenRecord t;
  HC_RETURN_IF_ERROR(f.RequiredStr("id", &t.id));
  HC_RETURN_IF_ERROR(f.RequiredStr("public_key", &t.public_key));
  HC_RETURN_IF_ERROR(f.Int("created_unix", &t.created_unix));
  HC_RETURN_IF_ERROR(f.Int("expires_unix", &t.expires_unix));
  HC_RETURN_IF_ERROR(f.Str("created_by", &t.created_by));
  return t;
}

Result<AppObserved> AppObservedFromJson(std::string_view text) {
  HC_ASSIGN_OR_RETURN(json j, ParseObject(text, "app status"));
  Fields f(j, "app status");
  AppObserved o;
  HC_RETURN_IF_ERROR(f.RequiredStr("app", &o.app));
  HC_RETURN_IF_ERROR(f.RequiredStr("node", &o.node));
  HC_RETURN_IF_ERROR(f.Str("role", &o.role));
  HC_RETURN_IF_ERROR(f.Int("epoch", &o.epoch));
  HC_RETURN_IF_ERROR(f.Str("state", &o.state));
  HC_RETURN_IF_ERROR(f.Bool("ready", &o.ready));
  HC_RETURN_IF_ERROR(f.Int("port", &o.port));
  HC_RETURN_IF_ERROR(f.NonNegativeNumber("cpu_seconds", &o.cpu_seconds));
  HC_RETURN_IF_ERROR(f.Int("memory_bytes", &o.memory_bytes));
  HC_RETURN_IF_ERROR(f.Int("restarts", &o.restarts, 0));
  HC_RETURN_IF_ERROR(f.Str("message", &o.message));
  HC_RETURN_IF_ERROR(f.Int("updated_unix", &o.updated_unix));
  return o;
}

Status ValidateAppDef(const AppDef& a) {
  HC_RETURN_IF_ERROR(ValidateName("app", a.name));
  const std::string& name = a.name;
  bool known = false;
  for (const char* t : kTemplates) known = known || a.template_name == t;
  if (!known) {
    return InvalidArgument("app '" + name + "': template: '" + a.template_name +
                           "' is not one of static, command, postgres, mariadb");
  }
  if (a.template_name == "command") {
    if (a.command.empty()) {
      return InvalidArgument("app '" + name +
                             "': command: template 'command' needs a command to run");
    }
    if (a.command.find('\0') != std::string::npos) {
      return InvalidArgument("app '" + name + "': command: contains a NUL byte");
    }
  } else if (!a.command.empty()) {
    return InvalidArgument("app '" + name + "': command: only template 'command' takes one; '" +
                           a.template_name + "' runs its own");
  }
  HC_RETURN_IF_ERROR(ValidateEnv(name, a.env));
  std::set<std::string_view> names;
  HC_RETURN_IF_ERROR(ValidateDomains(name, a.domains, "domains", &names));
  HC_RETURN_IF_ERROR(ValidateDomains(name, a.aliases, "aliases", &names));
  if (!a.aliases.empty() && a.domains.empty())
    return InvalidArgument("app '" + name +
                           "': aliases: an alias points to the app's first domain; add a domain");
  static constexpr std::string_view kProtocols[] = {"",      "http", "https", "postgres",
                                                    "mysql", "imap", "pop3",  "tcp"};
  if (std::find(std::begin(kProtocols), std::end(kProtocols), a.protocol) == std::end(kProtocols)) {
    return InvalidArgument("app '" + name + "': protocol: '" + a.protocol +
                           "' is not one of http, https, postgres, mysql, imap, pop3, tcp");
  }
  const std::string protocol = AppProtocol(a);
  if ((protocol == "imap" || protocol == "pop3") && a.domains.empty()) {
    return InvalidArgument("app '" + name + "': protocol " + protocol +
                           " routes logins by their domain (user@domain); add the mail domains "
                           "with domains");
  }
  std::set<uint16_t> ports;
  for (uint16_t port : a.tcp_ports) {
    if (ReservedPort(port)) {
      return InvalidArgument("app '" + name + "': tcp_ports: " + std::to_string(port) +
                             " is a port the cluster serves itself (22, 53, 80, 110, 143, 443, "
                             "2379, 2380, 5432, 7480-7483); pick another");
    }
    if (!ports.insert(port).second) {
      return InvalidArgument("app '" + name + "': tcp_ports: " + std::to_string(port) +
                             " is listed twice");
    }
  }
  HC_RETURN_IF_ERROR(CheckRange(name, "replicas", a.replicas, 0u, kMaxReplicas, &Count));
  if (a.snapshot_interval_seconds != 0) {
    HC_RETURN_IF_ERROR(CheckRange(name, "snapshot_interval_seconds", a.snapshot_interval_seconds,
                                  1u, 86400u, &Count));
  }
  if (!a.retention.empty()) {
    auto grid = replication::ParseRetention(a.retention);
    if (!grid.ok())
      return InvalidArgument("app '" + name + "': retention: " + grid.status().message());
  }
  HC_RETURN_IF_ERROR(
      CheckRange(name, "limits.memory", a.limits.memory_bytes, kMinMemory, kMaxMemory, &Bytes));
  HC_RETURN_IF_ERROR(CheckRange(name, "limits.cpu_millis", a.limits.cpu_millis, kMinCpuMillis,
                                kMaxCpuMillis, &Count));
  HC_RETURN_IF_ERROR(CheckRange(name, "limits.pids", a.limits.pids, kMinPids, kMaxPids, &Count));
  return Status::Ok();
}

std::string AppProtocol(const AppDef& a) {
  if (!a.protocol.empty()) return a.protocol;
  if (a.template_name == "postgres") return "postgres";
  if (a.template_name == "mariadb") return "mysql";
  return "http";
}

bool ReservedPort(uint16_t port) {
  switch (port) {
    case 22:
    case 53:
    case 80:
    case 110:
    case 143:
    case 443:
    case 2379:
    case 2380:
    case 5432:
    case 7480:
    case 7481:
    case 7482:
    case 7483: return true;
    default: return false;
  }
}

Status ValidateDomain(std::string_view d) {
  std::string quoted = "domain '" + std::string(d) + "'";
  if (d.empty()) return InvalidArgument("domain is empty");
  if (d.size() > 253) {
    return InvalidArgument(quoted + " is " + std::to_string(d.size()) +
                           " characters long; the maximum is 253");
  }
  if (d.back() == '.') {
    return InvalidArgument(quoted + " ends with a dot; write it without the trailing dot");
  }
  std::string_view rest = d;
  if (rest.starts_with("*.")) rest.remove_prefix(2);
  if (rest.find('*') != std::string_view::npos) {
    return InvalidArgument(quoted +
                           ": a wildcard '*' is only allowed as the whole first label "
                           "('*.example.com')");
  }
  size_t labels = 0;
  std::string_view last;
  while (true) {
    size_t dot = rest.find('.');
    std::string_view label = rest.substr(0, dot);
    ++labels;
    if (label.empty())
      return InvalidArgument(quoted + " has an empty label ('..' or a leading dot)");
    if (label.size() > 63) {
      return InvalidArgument(quoted + ": label '" + std::string(label) + "' is " +
                             std::to_string(label.size()) + " characters long; the maximum is 63");
    }
    for (char c : label) {
      if (c >= 'A' && c <= 'Z') {
        std::string lower(d);
        for (char& l : lower) l = (l >= 'A' && l <= 'Z') ? static_cast<char>(l - 'A' + 'a') : l;
        return InvalidArgument(quoted + " contains upper case; use lower case ('" + lower + "')");
      }
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
        return InvalidArgument(quoted + " contains '" + std::string(1, c) +
                               "'; labels may use only a-z, 0-9 and '-'");
      }
    }
    if (label.front() == '-' || label.back() == '-') {
      return InvalidArgument(quoted + ": label '" + std::string(label) +
                             "' must not start or end with '-'");
    }
    last = label;
    if (dot == std::string_view::npos) break;
    rest.remove_prefix(dot + 1);
  }
  if (labels < 2) {
    return InvalidArgument(quoted + " needs at least two labels ('example.com', not 'example')");
  }
  bool numeric = true;
  for (char c : last) numeric = numeric && c >= '0' && c <= '9';
  if (numeric) {
    return InvalidArgument(quoted + ": the last label '" + std::string(last) +
                           "' is all digits; IP addresses are not domains");
  }
  return Status::Ok();
}

Status ValidateNodeId(std::string_view id) {
  std::string quoted = "node id '" + std::string(id) + "'";
  if (id.empty() || id.size() > 63) {
    return InvalidArgument(quoted + " must be 1 to 63 characters long");
  }
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(id[0])) {
    return InvalidArgument(quoted + " must start with a lower-case letter or a digit");
  }
  for (char c : id) {
    if (!alnum(c) && c != '-') {
      return InvalidArgument(quoted + " contains '" + std::string(1, c) +
                             "'; use only a-z, 0-9 and '-'");
    }
  }
  return Status::Ok();
}

}  // namespace hc::cluster
