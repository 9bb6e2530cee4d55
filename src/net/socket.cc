#include "net/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>

#include "common/io.h"

namespace hc::net {
namespace {

// Keep-alive probes: a peer that vanished (power loss, partition) is noticed
// within ~25 s instead of the kernel's default two hours.
constexpr int kKeepIdleS = 10;
constexpr int kKeepIntervalS = 5;
constexpr int kKeepCount = 3;

bool IsHostChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_';
}

bool IsIpv6Literal(const std::string& s) {
  // inet_pton stops at a NUL; zone ids ("%eth0") are not supported.
  for (char c : s) {
    if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.') return false;
  }
  struct in6_addr a;
  return ::inet_pton(AF_INET6, s.c_str(), &a) == 1;
}

Result<uint16_t> ParsePort(std::string_view s, std::string_view whole) {
  if (s.empty()) return InvalidArgument("empty port in '" + std::string(whole) + "'");
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') {
      return InvalidArgument("port '" + std::string(s) + "' in '" + std::string(whole) +
                             "' is not a number");
    }
    v = v * 10 + static_cast<uint32_t>(c - '0');
    if (v > 65535) {
      return InvalidArgument("port " + std::string(s.substr(0, 12)) + " out of range (0-65535)");
    }
  }
  return static_cast<uint16_t>(v);
}

Result<std::string> CheckHostName(std::string_view host, std::string_view whole) {
  if (host.empty()) return InvalidArgument("no host in '" + std::string(whole) + "'");
  for (char c : host) {
    if (!IsHostChar(c)) {
      return InvalidArgument("invalid character in host '" + std::string(host) + "'");
    }
  }
  return std::string(host);
}

struct AddrInfoDeleter {
  void operator()(struct addrinfo* a) const { ::freeaddrinfo(a); }
};
using AddrInfoPtr = std::unique_ptr<struct addrinfo, AddrInfoDeleter>;

Result<AddrInfoPtr> Resolve(const HostPort& hp, bool passive) {
  struct addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  struct addrinfo* res = nullptr;
  std::string port = std::to_string(hp.port);
  int rc = ::getaddrinfo(hp.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) {
    std::string why = rc == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(rc);
    return Unavailable("cannot resolve '" + hp.host + "': " + why);
  }
  return AddrInfoPtr(res);
}

void SetKeepAlive(int fd) {
  int one = 1;
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  (void)::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &kKeepIdleS, sizeof kKeepIdleS);
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &kKeepIntervalS, sizeof kKeepIntervalS);
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &kKeepCount, sizeof kKeepCount);
}

// One connect attempt: 0 on success, else the errno (ETIMEDOUT at the deadline).
int ConnectOne(int fd, const struct addrinfo* ai, Deadline deadline) {
  if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) return 0;
  int err = errno;
  if (err != EINPROGRESS && err != EINTR) return err;
  int r = PollUntil(fd, POLLOUT, deadline);
  if (r < 0) return errno;
  if (r == 0) return ETIMEDOUT;
  socklen_t len = sizeof err;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

}  // namespace

std::string HostPort::ToString() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

Result<HostPort> ParseHostPort(std::string_view s, uint16_t default_port) {
  if (s.empty()) return InvalidArgument("empty address (want host:port)");
  HostPort hp;
  std::string_view port_text;
  bool has_port = false;
  if (s.front() == '[') {
    size_t close = s.find(']');
    if (close == std::string_view::npos) {
      return InvalidArgument("missing ']' in '" + std::string(s) + "'");
    }
    hp.host = std::string(s.substr(1, close - 1));
    if (!IsIpv6Literal(hp.host)) {
      return InvalidArgument("'" + hp.host + "' in brackets is not an IPv6 address");
    }
    std::string_view rest = s.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        return InvalidArgument("unexpected '" + std::string(rest) + "' after ']' in '" +
                               std::string(s) + "'");
      }
      has_port = true;
      port_text = rest.substr(1);
    }
  } else {
    size_t colon = s.find(':');
    if (colon != std::string_view::npos && s.find(':', colon + 1) != std::string_view::npos) {
      // Several colons: only a bare IPv6 address (no port) is unambiguous.
      std::string host(s);
      if (!IsIpv6Literal(host)) {
        return InvalidArgument("'" + host + "' is neither host:port nor an IPv6 address" +
                               " (write [v6]:port)");
      }
      hp.host = std::move(host);
    } else {
      HC_ASSIGN_OR_RETURN(hp.host, CheckHostName(s.substr(0, colon), s));
      if (colon != std::string_view::npos) {
        has_port = true;
        port_text = s.substr(colon + 1);
      }
    }
  }
  if (has_port) {
    HC_ASSIGN_OR_RETURN(hp.port, ParsePort(port_text, s));
  } else {
    if (default_port == 0) return InvalidArgument("no port in '" + std::string(s) + "'");
    hp.port = default_port;
  }
  return hp;
}

Result<HostPort> ParseHttpUrl(std::string_view url, uint16_t default_port) {
  std::string_view rest = url;
  constexpr std::string_view kHttp = "http://";
  if (rest.size() >= kHttp.size() &&
      std::equal(kHttp.begin(), kHttp.end(), rest.begin(),
                 [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); })) {
    rest.remove_prefix(kHttp.size());
  } else if (rest.find("://") != std::string_view::npos) {
    return InvalidArgument("unsupported URL scheme in '" + std::string(url) + "' (only http://)");
  }
  rest = rest.substr(0, rest.find_first_of("/?#"));
  if (rest.find('@') != std::string_view::npos) {
    return InvalidArgument("user info in URL '" + std::string(url) + "' is not supported");
  }
  return ParseHostPort(rest, default_port);
}

Result<UniqueFd> ConnectTcp(const HostPort& to, Deadline deadline) {
  // Name resolution itself is not bounded by the deadline (getaddrinfo has no
  // timeout); the control plane mostly uses literals.
  HC_ASSIGN_OR_RETURN(AddrInfoPtr addrs, Resolve(to, false));
  int last_err = 0;
  for (const struct addrinfo* ai = addrs.get(); ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
      last_err = errno;
      continue;
    }
    last_err = ConnectOne(fd.get(), ai, deadline);
    if (last_err == ETIMEDOUT && Clock::now() >= deadline) break;
    if (last_err != 0) continue;
    // Callers may use the fd with plain blocking I/O; our own I/O polls.
    int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags >= 0) (void)::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
    SetKeepAlive(fd.get());
    return fd;
  }
  if (last_err == ETIMEDOUT) return Unavailable("timed out connecting to " + to.ToString());
  if (last_err == ECONNREFUSED) return Unavailable("connection refused by " + to.ToString());
  return Unavailable("connect to " + to.ToString() + ": " +
                     (last_err ? std::strerror(last_err) : "no address"));
}

Result<UniqueFd> ListenTcp(const HostPort& at, int backlog) {
  HC_ASSIGN_OR_RETURN(AddrInfoPtr addrs, Resolve(at, true));
  int last_err = 0;
  for (const struct addrinfo* ai = addrs.get(); ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
      last_err = errno;
      continue;
    }
    int one = 1;
    (void)::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd.get(), backlog) != 0) {
      last_err = errno;
      continue;
    }
    return fd;
  }
  return ErrnoStatus("listen on " + at.ToString(), last_err ? last_err : EADDRNOTAVAIL);
}

Result<uint16_t> LocalPort(int fd) {
  struct sockaddr_storage ss = {};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<struct sockaddr*>(&ss), &len) != 0) {
    return ErrnoStatus("getsockname", errno);
  }
  if (ss.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<struct sockaddr_in*>(&ss)->sin_port);
  }
  if (ss.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<struct sockaddr_in6*>(&ss)->sin6_port);
  }
  return InvalidArgument("socket " + std::to_string(fd) + " is not a TCP socket");
}

Status WriteAll(int fd, std::string_view data, Deadline deadline) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    int err = errno;
    if (err == EINTR) continue;
    if (err == EPIPE || err == ECONNRESET) return Unavailable("peer closed the connection");
    if (err != EAGAIN && err != EWOULDBLOCK)
      return Unavailable(std::string("send: ") + strerror(err));
    int r = PollUntil(fd, POLLOUT, deadline);
    if (r < 0) return ErrnoStatus("poll", errno);
    if (r == 0)
      return Unavailable("timed out sending (" + std::to_string(data.size()) + " bytes left)");
  }
  return Status::Ok();
}

Result<size_t> ReadSome(int fd, char* buf, size_t n, Deadline deadline) {
  if (n == 0) return InvalidArgument("ReadSome into an empty buffer");
  for (;;) {
    ssize_t got = ::recv(fd, buf, n, MSG_DONTWAIT);
    if (got >= 0) return static_cast<size_t>(got);
    int err = errno;
    if (err == EINTR) continue;
    if (err == ECONNRESET) return Unavailable("connection reset by peer");
    if (err != EAGAIN && err != EWOULDBLOCK)
      return Unavailable(std::string("recv: ") + strerror(err));
    int r = PollUntil(fd, POLLIN, deadline);
    if (r < 0) return ErrnoStatus("poll", errno);
    if (r == 0) return Unavailable("timed out waiting for data");
  }
}

}  // namespace hc::net
