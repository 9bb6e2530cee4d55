// Readiness probes: is the app answering on its port yet?
#pragma once

#include <stdint.h>

#include <functional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "runtime/app_spec.h"

namespace hc::runtime {

// One attempt against 127.0.0.1:port within attempt_ms: kTcp succeeds when a
// connection is accepted; kHttp when a "GET path HTTP/1.0" gets a status line
// with a code below 500. kNone always succeeds. The error says what failed
// ("connection refused", "HTTP 503", "timed out after 200 ms").
Status ProbeOnce(const ReadinessProbe& probe, uint16_t port, int attempt_ms);

// Repeats ProbeOnce (first retry after 5 ms, growing to 100 ms) until it succeeds
// or timeout_ms passes; then Unavailable with the last error. `keep_going` is
// called between attempts; when it returns a non-OK status, that is returned
// (e.g. "the app exited with code 1").
Status WaitForProbe(const ReadinessProbe& probe, uint16_t port, int timeout_ms,
                    const std::function<Status()>& keep_going = {});

// Parses "HTTP/d.d NNN[ reason]" (an RFC 9112 status-line without its CRLF)
// and returns the code (100-999), or -1 when the line is not one. The bytes
// come from the app: any input is safe.
int ParseHttpStatusLine(std::string_view line);

}  // namespace hc::runtime
