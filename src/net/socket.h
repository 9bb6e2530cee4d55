// TCP sockets with deadlines: the blocking building blocks of the control
// plane (etcd client, REST API, hc). The proxy's hot path has its own loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/fs.h"
#include "common/status.h"

namespace hc::net {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

inline Deadline DeadlineIn(std::chrono::milliseconds d) {
  return Clock::now() + d;
}

struct HostPort {
  std::string host;  // IPv4 literal, IPv6 literal (no brackets) or a name
  uint16_t port = 0;
  std::string ToString() const;  // "127.0.0.1:7480", "[::1]:7480"
};

// Parses "host:port", "[v6]:port", or "host" (then default_port; 0 = port
// required). Errors say what was wrong, e.g. "port 99999 out of range".
Result<HostPort> ParseHostPort(std::string_view s, uint16_t default_port = 0);

// Parses "http://host:port[/...]" (the path is ignored) or "host:port".
Result<HostPort> ParseHttpUrl(std::string_view url, uint16_t default_port = 80);

// Connects with a timeout; TCP_NODELAY and SO_KEEPALIVE (short probes) on.
Result<UniqueFd> ConnectTcp(const HostPort& to, Deadline deadline);

// Listens (SO_REUSEADDR, CLOEXEC, non-blocking off). Port 0 picks a free port.
Result<UniqueFd> ListenTcp(const HostPort& at, int backlog = 512);
Result<uint16_t> LocalPort(int fd);

// Write everything or fail (Unavailable on timeout / peer gone).
Status WriteAll(int fd, std::string_view data, Deadline deadline);
// Reads what is there (at least 1 byte) before the deadline; 0 = orderly EOF.
// Unavailable("timed out ...") on deadline.
Result<size_t> ReadSome(int fd, char* buf, size_t n, Deadline deadline);

}  // namespace hc::net
