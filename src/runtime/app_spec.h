// What the runtime needs to know to run one app: its command, port, volume,
// identity and limits. Built by a template (templates.h) or from the cluster's
// app spec; stored by the runtime as JSON (docs/runtime.md).
//
// Example:
//   AppSpec s;
//   s.name = "shop";
//   s.argv = {"/bin/sh", "-c", "exec busybox httpd -f -p 127.0.0.1:$PORT -h public"};
//   s.port = 8080;
//   s.volume_path = "/var/lib/hybridcluster/store/live/shop";
//   HC_RETURN_IF_ERROR(ValidateAppSpec(s));
#pragma once

#include <signal.h>
#include <stdint.h>

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace hc::runtime {

// Where an app's volume appears inside a runc container. The process backend
// runs the app in the volume's host path instead; apps find either in $APP_DIR.
inline constexpr std::string_view kContainerAppDir = "/srv/app";

struct Limits {
  uint64_t memory_bytes = 256ull << 20;  // 0 = unlimited
  uint32_t cpu_millis = 1000;            // thousandths of a core; 0 = unlimited
  uint32_t pids = 512;                   // 0 = unlimited
};

enum class ProbeKind { kNone, kTcp, kHttp };

struct ReadinessProbe {
  ProbeKind kind = ProbeKind::kTcp;
  std::string http_path = "/";  // kHttp: any status below 500 counts as ready
  int timeout_ms = 30000;       // how long WaitReady waits by default
};

struct RestartPolicy {
  int initial_backoff_ms = 1000;  // delay before the first restart after a crash
  int max_backoff_ms = 30000;     // doubled per consecutive crash up to this
  int stable_after_ms = 10000;    // a run this long resets the back-off
  int crash_loop_after = 3;       // consecutive crashes that make it "crash-looping"
};

struct AppSpec {
  std::string name;           // volume-style name: [a-z0-9][a-z0-9_.-]{0,62}
  std::string template_name;  // "static", "command", "postgres", "mariadb" or ""
  std::vector<std::string>
      argv;  // argv[0] absolute, or found in PATH=/usr/sbin:/usr/bin:/sbin:/bin
  std::vector<std::string>
      env;                  // extra KEY=VALUE; PORT, APP_DIR, HOME, PATH are set by the runtime
  uint16_t port = 0;        // the one TCP/UDP port the app may bind (on loopback)
  std::string volume_path;  // host path of the app's live volume (must exist)
  uint32_t uid = 0;         // user the app runs as when the runtime runs as root; 0 = AppUid(name)
  uint32_t gid = 0;         // 0 = same as uid
  Limits limits;
  ReadinessProbe probe;
  RestartPolicy restart;
  int stop_signal = SIGTERM;
  int stop_timeout_ms = 10000;  // then SIGKILL to every process of the app
};

// Checks names, paths, port and limits; the message says which field and why.
Status ValidateAppSpec(const AppSpec& spec);

// A stable uid for an app, derived from its name, in [kAppUidBase, kAppUidBase + 2^20):
// the same on every node, so files keep their owner when the volume moves.
inline constexpr uint32_t kAppUidBase = 200000;
uint32_t AppUid(std::string_view name);

std::string AppSpecToJson(const AppSpec& spec);
Result<AppSpec> AppSpecFromJson(std::string_view json);

}  // namespace hc::runtime
