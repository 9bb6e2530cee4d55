#include "proxy/engine.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>

namespace hc::proxy {
namespace {

constexpr int kListenBacklog = 4096;
constexpr int kPortZeroAttempts = 8;

int OpenListener(const struct sockaddr_storage& ss, socklen_t len, UniqueFd* out,
                 const char** step) {
  *step = "bind";
  UniqueFd fd(::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return errno;
  int one = 1;
  (void)::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) return errno;
  if (ss.ss_family == AF_INET6 &&
      ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) {
    return errno;
  }
  if (::bind(fd.get(), reinterpret_cast<const struct sockaddr*>(&ss), len) != 0) return errno;
  *step = "listen on";
  if (::listen(fd.get(), kListenBacklog) != 0) return errno;
  *out = std::move(fd);
  return 0;
}

uint16_t PortOf(const struct sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
  return ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
}

void SetPort(struct sockaddr_storage* ss, uint16_t port) {
  if (ss->ss_family == AF_INET) {
    reinterpret_cast<sockaddr_in*>(ss)->sin_port = htons(port);
  } else {
    reinterpret_cast<sockaddr_in6*>(ss)->sin6_port = htons(port);
  }
}

Status BindError(const char* what, const net::HostPort& at, const char* step, int err) {
  std::string msg =
      std::string(what) + ": cannot " + step + " " + at.ToString() + ": " + std::strerror(err);
  Code code = Code::kIo;
  if (err == EACCES || err == EPERM) {
    code = Code::kPermissionDenied;
    msg += " (port " + std::to_string(at.port) + " needs root or CAP_NET_BIND_SERVICE)";
  } else if (err == EADDRINUSE) {
    code = Code::kUnavailable;
    msg += " (another server listens there? `ss -ltnp` shows it)";
  } else if (err == EADDRNOTAVAIL) {
    code = Code::kUnavailable;
    msg += " (no interface of this host has that address)";
  }
  return Status(code, std::move(msg));
}

}  // namespace

SpliceResult SpliceStep(int src, bool* src_rd, int dst, bool* dst_wr, uint64_t* left, SplicePipe& p,
                        uint64_t* moved, bool* progress) {
  constexpr unsigned kFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
  if (p.in_pipe > 0 && *dst_wr) {
    ssize_t n = ::splice(p.r.get(), nullptr, dst, nullptr, p.in_pipe, kFlags);
    if (n > 0) {
      p.in_pipe -= static_cast<size_t>(n);
      *moved += static_cast<uint64_t>(n);
      *progress = true;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      *dst_wr = false;
    } else if (n < 0 && errno != EINTR) {
      return SpliceResult::kError;
    }
  }
  if (p.in_pipe == 0 && *left > 0 && *src_rd) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(*left, p.capacity));
    ssize_t n = ::splice(src, nullptr, p.w.get(), nullptr, want, kFlags);
    if (n > 0) {
      p.in_pipe += static_cast<size_t>(n);
      *left -= static_cast<uint64_t>(n);
      *progress = true;
    } else if (n == 0) {
      return SpliceResult::kEof;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      *src_rd = false;
    } else if (errno != EINTR) {
      return SpliceResult::kError;
    }
  }
  return SpliceResult::kOk;
}

ssize_t ReadInto(int fd, bool* readable, Buffer& b) {
  if (!*readable || b.Space() == 0) return kAgain;
  for (;;) {
    ssize_t r = ::recv(fd, b.tail(), b.Space(), 0);
    if (r > 0) {
      b.Produced(static_cast<size_t>(r));
      return r;
    }
    if (r == 0) return kEof;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      *readable = false;
      return kAgain;
    }
    return kError;
  }
}

ssize_t WriteFrom(int fd, bool* writable, const char* p, size_t n) {
  if (!*writable || n == 0) return kAgain;
  for (;;) {
    ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      *writable = false;
      return kAgain;
    }
    return kError;
  }
}

// Sends a then b (either may be empty) in one call.
ssize_t WriteTwo(int fd, bool* writable, const char* a, size_t alen, const char* b, size_t blen) {
  if (!*writable || alen + blen == 0) return kAgain;
  struct iovec iov[2];
  int cnt = 0;
  if (alen > 0) iov[cnt++] = {const_cast<char*>(a), alen};
  if (blen > 0) iov[cnt++] = {const_cast<char*>(b), blen};
  struct msghdr msg = {};
  msg.msg_iov = iov;
  msg.msg_iovlen = static_cast<size_t>(cnt);
  for (;;) {
    ssize_t r = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      *writable = false;
      return kAgain;
    }
    return kError;
  }
}

Status BindListeners(const char* what, const std::vector<net::HostPort>& listen, int workers,
                     std::vector<std::vector<UniqueFd>>* per_worker,
                     std::vector<net::HostPort>* bound) {
  per_worker->clear();
  per_worker->resize(static_cast<size_t>(workers));
  bound->clear();
  for (const net::HostPort& at : listen) {
    struct sockaddr_storage ss = {};
    socklen_t len = 0;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
    if (::inet_pton(AF_INET, at.host.c_str(), &v4->sin_addr) == 1) {
      v4->sin_family = AF_INET;
      len = sizeof(sockaddr_in);
    } else if (::inet_pton(AF_INET6, at.host.c_str(), &v6->sin6_addr) == 1) {
      v6->sin6_family = AF_INET6;
      len = sizeof(sockaddr_in6);
    } else {
      return InvalidArgument(std::string(what) + ": listen address '" + at.host +
                             "' is not an IP address (write e.g. 0.0.0.0 or ::)");
    }
    SetPort(&ss, at.port);
    for (int attempt = 1;; ++attempt) {
      std::vector<UniqueFd> fds;
      struct sockaddr_storage a = ss;
      int err = 0;
      const char* step = "bind";
      for (int w = 0; w < workers && err == 0; ++w) {
        UniqueFd fd;
        err = OpenListener(a, len, &fd, &step);
        if (err != 0) break;
        if (w == 0 && at.port == 0) {
          struct sockaddr_storage got = {};
          socklen_t glen = sizeof got;
          if (::getsockname(fd.get(), reinterpret_cast<struct sockaddr*>(&got), &glen) != 0) {
            return ErrnoStatus(std::string(what) + ": getsockname", errno);
          }
          SetPort(&a, PortOf(got));
        }
        fds.push_back(std::move(fd));
      }
      if (err == EADDRINUSE && at.port == 0 && attempt < kPortZeroAttempts) continue;
      if (err != 0) return BindError(what, at, step, err);
      for (int w = 0; w < workers; ++w) {
        (*per_worker)[static_cast<size_t>(w)].push_back(std::move(fds[static_cast<size_t>(w)]));
      }
      bound->push_back(net::HostPort{at.host, PortOf(a)});
      break;
    }
  }
  return Status::Ok();
}

void PeerAddress(const struct sockaddr_storage& ss, char* out, size_t len) {
  out[0] = 0;
  if (ss.ss_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, out,
                static_cast<socklen_t>(len));
  } else if (ss.ss_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr, out,
                static_cast<socklen_t>(len));
  }
}

int WorkerCount(int configured) {
  if (configured > 0) return configured;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace hc::proxy
