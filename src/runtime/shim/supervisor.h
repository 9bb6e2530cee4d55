// The per-app supervisor loop of hc-shim: launches the app, restarts it with
// back-off when it crashes, copies its output to the log, and answers the
// runtime on a control socket (docs/runtime.md, "Supervisor protocol").
// Single-threaded: everything happens in Run().
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "runtime/shim/launcher.h"

namespace hc::runtime::shim {

// The line a failed start reports on the ready pipe: "error <code> <message>\n".
std::string ReadyLine(const Status& s);

// Runs until the app is stopped on request. `ready_fd` (or -1) receives "ok\n"
// once the first launch succeeded, or "error: <why>\n" before returning an error.
Status RunSupervisor(const ShimConfig& cfg, const AppSpec& spec, int ready_fd);

}  // namespace hc::runtime::shim
