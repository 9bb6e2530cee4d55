// Self-fencing of apps: hcd writes a deadline to a file while this node's
// cluster lease is confirmed, and every app supervisor (hc-shim) kills its app
// when the deadline passes without being extended, so an app never keeps
// running as primary after the lease may have expired, even when hcd itself
// has crashed or hangs (docs/runtime.md, "Fencing").
//
// The file holds one decimal number and "\n": the deadline in nanoseconds of
// CLOCK_BOOTTIME. That clock is the same for every process of the host, never
// jumps with the wall clock (NTP, an operator's `date`), and keeps counting
// through a suspend, during which the lease's TTL keeps running too.
#pragma once

#include <stdint.h>

#include <string>
#include <string_view>

#include "common/status.h"

namespace hc::runtime {

// clock_gettime(CLOCK_BOOTTIME) in nanoseconds.
int64_t BoottimeNowNs();

// Replaces `path` atomically (temporary file, then rename; no fsync: it is
// rewritten every second and means nothing after a reboot, as CLOCK_BOOTTIME
// restarts at 0). Safe to call from several threads or processes at once.
Status WriteFenceDeadline(const std::string& path, int64_t deadline_boottime_ns);

// The deadline in `path`. NotFound when the file is missing; Corrupt (with
// the path) when it does not hold exactly a non-negative decimal number and
// an optional final "\n".
Result<int64_t> ReadFenceDeadline(const std::string& path);

// The parser of ReadFenceDeadline, on the file's bytes.
Result<int64_t> ParseFenceDeadline(std::string_view text);
std::string FormatFenceDeadline(int64_t deadline_boottime_ns);

}  // namespace hc::runtime
