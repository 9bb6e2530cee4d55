#include "runtime/probe.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string_view>
#include <thread>

#include "common/fs.h"
#include "common/io.h"

namespace hc::runtime {
namespace {

using Clock = std::chrono::steady_clock;

// The most we read while looking for the status line: an untrusted app must
// not make the supervisor buffer without bound.
constexpr size_t kMaxStatusLineBytes = 1024;

constexpr int kFirstBackoffMs = 5;
constexpr int kMaxBackoffMs = 100;
constexpr int kMaxAttemptMs = 1000;

// Whole milliseconds left until `deadline`, rounded up so that poll() does not
// spin with a 0 timeout while a fraction of a millisecond remains.

std::string Endpoint(uint16_t port) {
  return "127.0.0.1:" + std::to_string(port);
}

Status TimedOut(int attempt_ms, const std::string& what) {
  return Unavailable("timed out after " + std::to_string(attempt_ms) + " ms " + what);
}

// Up to 40 bytes of what the app sent, printable, for "not HTTP" errors.
std::string Quote(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (unsigned char c : bytes.substr(0, 40)) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  out += bytes.size() > 40 ? "\"..." : "\"";
  return out;
}

bool IsDigit(char c) {
  return c >= '0' && c <= '9';
}

// The expected start of a status line; '#' stands for one digit.
constexpr std::string_view kVersionPattern = "HTTP/#.# ";

// False as soon as `prefix` cannot be the start of "HTTP/d.d ", so garbage is
// reported without waiting for a line ending that may never come.
bool CouldBeHttp(std::string_view prefix) {
  size_t n = std::min(prefix.size(), kVersionPattern.size());
  for (size_t i = 0; i < n; ++i) {
    char want = kVersionPattern[i];
    if (want == '#' ? !IsDigit(prefix[i]) : prefix[i] != want) return false;
  }
  return true;
}

}  // namespace

int ParseHttpStatusLine(std::string_view line) {
  if (line.size() < kVersionPattern.size() + 3 || !CouldBeHttp(line)) return -1;
  std::string_view rest = line.substr(kVersionPattern.size());
  if (!IsDigit(rest[0]) || !IsDigit(rest[1]) || !IsDigit(rest[2])) return -1;
  if (rest.size() > 3 && rest[3] != ' ') return -1;
  int code = (rest[0] - '0') * 100 + (rest[1] - '0') * 10 + (rest[2] - '0');
  if (code < 100) return -1;
  return code;
}

namespace {

Result<UniqueFd> Connect(uint16_t port, int attempt_ms, Clock::time_point deadline) {
  const std::string where = Endpoint(port);
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket for probe of " + where, errno);

  struct sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int err = 0;
  if (::connect(fd.get(), reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) != 0) {
    err = errno;
    if (err == EINPROGRESS || err == EINTR) {
      int r = PollUntil(fd.get(), POLLOUT, deadline);
      if (r < 0) return ErrnoStatus("poll for probe of " + where, errno);
      if (r == 0) return TimedOut(attempt_ms, "connecting to " + where);
      socklen_t len = sizeof err;
      if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    }
  }
  if (err == ECONNREFUSED) return Unavailable("connection refused on " + where);
  if (err != 0) return Unavailable("connect to " + where + ": " + std::strerror(err));
  return fd;
}

Status SendAll(int fd, std::string_view data, int attempt_ms, Clock::time_point deadline,
               const std::string& where) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n >= 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return Unavailable("sending the HTTP request to " + where + ": " + std::strerror(errno));
    }
    int r = PollUntil(fd, POLLOUT, deadline);
    if (r < 0) return ErrnoStatus("poll for probe of " + where, errno);
    if (r == 0) return TimedOut(attempt_ms, "sending the HTTP request to " + where);
  }
  return Status::Ok();
}

Status HttpCheck(int fd, const std::string& path, int attempt_ms, Clock::time_point deadline,
                 const std::string& where) {
  std::string request =
      "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: hc-probe\r\n\r\n";
  HC_RETURN_IF_ERROR(SendAll(fd, request, attempt_ms, deadline, where));

  char buf[kMaxStatusLineBytes];
  size_t have = 0;
  for (;;) {
    std::string_view got(buf, have);
    size_t eol = got.find("\r\n");
    if (eol != std::string_view::npos) {
      int code = ParseHttpStatusLine(got.substr(0, eol));
      if (code < 0) {
        return Unavailable("not HTTP from " + where + ": bad status line " +
                           Quote(got.substr(0, eol)));
      }
      if (code >= 500) return Unavailable("HTTP " + std::to_string(code) + " from " + where);
      return Status::Ok();
    }
    if (!CouldBeHttp(got)) {
      return Unavailable("not HTTP from " + where + ": response starts with " + Quote(got));
    }
    if (have == sizeof buf) {
      return Unavailable("not HTTP from " + where + ": no status line in the first " +
                         std::to_string(sizeof buf) + " bytes");
    }
    ssize_t n = ::recv(fd, buf + have, sizeof buf - have, 0);
    if (n > 0) {
      have += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) {
      return Unavailable(where + " closed the connection before sending an HTTP status line" +
                         (have > 0 ? " (sent " + Quote(got) + ")" : std::string()));
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return Unavailable("reading the HTTP response from " + where + ": " + std::strerror(errno));
    }
    int r = PollUntil(fd, POLLIN, deadline);
    if (r < 0) return ErrnoStatus("poll for probe of " + where, errno);
    if (r == 0) return TimedOut(attempt_ms, "waiting for the HTTP status line from " + where);
  }
}

// The path goes into the request line verbatim, so it must not be able to
// end that line or add headers.
Status CheckHttpPath(const std::string& path) {
  if (path.empty() || path[0] != '/') {
    return InvalidArgument("HTTP probe path " + Quote(path) + " does not start with '/'");
  }
  for (unsigned char c : path) {
    if (c <= 0x20 || c == 0x7f) {
      return InvalidArgument("HTTP probe path " + Quote(path) +
                             " contains a space or control character");
    }
  }
  return Status::Ok();
}

}  // namespace

Status ProbeOnce(const ReadinessProbe& probe, uint16_t port, int attempt_ms) {
  if (probe.kind == ProbeKind::kNone) return Status::Ok();
  if (port == 0) return InvalidArgument("probe needs a port, got 0");
  if (probe.kind == ProbeKind::kHttp) HC_RETURN_IF_ERROR(CheckHttpPath(probe.http_path));
  attempt_ms = std::max(attempt_ms, 0);
  const auto deadline = Clock::now() + std::chrono::milliseconds(attempt_ms);

  HC_ASSIGN_OR_RETURN(UniqueFd fd, Connect(port, attempt_ms, deadline));
  if (probe.kind == ProbeKind::kTcp) return Status::Ok();
  return HttpCheck(fd.get(), probe.http_path, attempt_ms, deadline, Endpoint(port));
}

Status WaitForProbe(const ReadinessProbe& probe, uint16_t port, int timeout_ms,
                    const std::function<Status()>& keep_going) {
  timeout_ms = std::max(timeout_ms, 0);
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  int backoff_ms = kFirstBackoffMs;
  Status last;
  for (;;) {
    Status s = ProbeOnce(probe, port, std::min(RemainingMs(deadline), kMaxAttemptMs));
    if (s.ok()) return s;
    // A malformed probe fails the same way every time.
    if (s.code() == Code::kInvalidArgument) return s;
    last = std::move(s);
    // Also after the last attempt: "the app exited" explains more than a timeout.
    if (keep_going) {
      Status k = keep_going();
      if (!k.ok()) return k;
    }
    int left = RemainingMs(deadline);
    if (left <= 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(backoff_ms, left)));
    if (RemainingMs(deadline) <= 0) break;
    backoff_ms = std::min(backoff_ms * 2, kMaxBackoffMs);
  }
  return Unavailable("not ready after " + std::to_string(timeout_ms) + " ms: " + last.message());
}

}  // namespace hc::runtime
