// hc-shim: supervises one app. Started by the runtime (never by hand) as
//   hc-shim <app-dir>
// with <app-dir>/shim.json and <app-dir>/spec.json in place and fd 3 as the
// pipe on which it reports that the app started.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "common/fs.h"
#include "runtime/shim/supervisor.h"

using namespace hc;
using namespace hc::runtime;
using hc::runtime::shim::ReadyLine;

int main(int argc, char** argv) {
  if (argc != 2 || argv[1][0] != '/') {
    std::fprintf(stderr,
                 "usage: hc-shim <app-dir>\n"
                 "hc-shim supervises one app for the HybridCluster runtime; it is started by\n"
                 "`hc local run` and hcd, not by hand.\n");
    return 2;
  }
  int ready_fd = ::fcntl(3, F_GETFD) >= 0 ? 3 : -1;
  if (ready_fd >= 0) ::fcntl(ready_fd, F_SETFD, FD_CLOEXEC);
  auto fail = [&](const Status& s) {
    if (ready_fd >= 0) {
      std::string msg = ReadyLine(s);
      (void)!::write(ready_fd, msg.data(), msg.size());
    }
    return 1;
  };
  std::string dir = argv[1];
  auto cfg_text = ReadFileToString(JoinPath(dir, "shim.json"));
  if (!cfg_text.ok()) return fail(cfg_text.status());
  auto cfg = runtime::shim::ShimConfigFromJson(*cfg_text);
  if (!cfg.ok()) return fail(cfg.status());
  auto spec_text = ReadFileToString(JoinPath(dir, "spec.json"));
  if (!spec_text.ok()) return fail(spec_text.status());
  auto spec = AppSpecFromJson(*spec_text);
  if (!spec.ok()) return fail(spec.status());
  Status s = runtime::shim::RunSupervisor(*cfg, *spec, ready_fd);
  return s.ok() ? 0 : 1;
}
