#include "net/http_server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <list>
#include <system_error>

namespace hc::net {
namespace {

constexpr size_t kReadChunk = 16 * 1024;
// After the last response, input is drained for a while before the close so
// that unread request bytes do not turn the close into a reset that could
// destroy the response on its way (e.g. a 413 sent while the body arrives).
constexpr std::chrono::milliseconds kLingerTime{1000};
constexpr size_t kMaxLingerBytes = 1 << 20;
// How often the accept thread wakes up to reap finished connections.
constexpr int kAcceptPollMs = 1000;

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// A plain-text error; the connection is closed after it unless `keep_open`.
HttpResponse ErrorResponse(int status, std::string_view detail, bool keep_open = false) {
  HttpResponse resp;
  resp.status = status;
  resp.headers.Add("Content-Type", "text/plain; charset=utf-8");
  if (!keep_open) resp.headers.Add("Connection", "close");
  resp.body = std::string(StatusReason(status));
  if (!detail.empty()) resp.body += ": " + std::string(detail);
  resp.body += "\n";
  return resp;
}

// The status for a request-head parse error: the parser marks some messages
// with a "NNN: " prefix.
std::pair<int, std::string_view> ErrorStatus(const Status& s) {
  std::string_view msg = s.message();
  if (msg.starts_with("431: ")) return {431, msg.substr(5)};
  if (msg.starts_with("501: ")) return {501, msg.substr(5)};
  if (msg.starts_with("unsupported HTTP version")) return {505, msg};
  return {400, msg};
}

void LingeringClose(int fd) {
  (void)::shutdown(fd, SHUT_WR);
  Deadline deadline = DeadlineIn(kLingerTime);
  char tmp[4096];
  size_t drained = 0;
  while (drained < kMaxLingerBytes) {
    auto n = ReadSome(fd, tmp, sizeof tmp, deadline);
    if (!n.ok() || *n == 0) break;
    drained += *n;
  }
}

}  // namespace

// Threads: Start() spawns the accept thread, which spawns one thread per
// connection (at most max_connections) and joins those that finished. The
// handler runs on connection threads, concurrently. Stop() joins them all.
struct HttpServer::Impl {
  // One client connection. `fd` is reset by its own thread when it finishes,
  // under `mu`, so Stop() never shuts down a number the kernel reused.
  struct Conn {
    UniqueFd fd;            // GUARDED_BY(mu)
    bool finished = false;  // GUARDED_BY(mu)
    std::thread thread;     // written by the accept thread before it is joined
  };

  Impl(HttpHandler h, HttpServerOptions o) : handler(std::move(h)), opts(std::move(o)) {}

  void AcceptLoop();
  // REQUIRES: mu held. Joins the threads of finished connections.
  void ReapLocked();
  void Reject(UniqueFd fd);
  void Serve(Conn* conn);
  // One request/response exchange; whether the connection stays open.
  bool ServeOne(int fd, std::string& buf, bool first);
  bool Send(int fd, const HttpResponse& resp, bool head_only);
  bool Stopping() {
    std::lock_guard<std::mutex> lock(mu);
    return stopping;
  }

  const HttpHandler handler;
  const HttpServerOptions opts;
  UniqueFd listen_fd;
  uint16_t port = 0;
  std::thread accept_thread;

  std::mutex mu;
  bool started = false;                    // GUARDED_BY(mu)
  bool stopping = false;                   // GUARDED_BY(mu)
  std::list<std::unique_ptr<Conn>> conns;  // GUARDED_BY(mu)
};

void HttpServer::Impl::AcceptLoop() {
  for (;;) {
    struct pollfd p = {listen_fd.get(), POLLIN, 0};
    int r = ::poll(&p, 1, kAcceptPollMs);
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stopping) return;
      ReapLocked();
    }
    if (r <= 0) continue;
    int fd = ::accept4(listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      // Out of descriptors or memory: back off instead of spinning on a
      // listening socket that stays readable.
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      continue;
    }
    UniqueFd client(fd);
    int one = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::lock_guard<std::mutex> lock(mu);
    if (stopping) return;
    if (conns.size() >= opts.max_connections) {
      Reject(std::move(client));
      continue;
    }
    auto conn = std::make_unique<Conn>();
    conn->fd = std::move(client);
    Conn* raw = conn.get();
    conns.push_back(std::move(conn));
    try {
      raw->thread = std::thread([this, raw] { Serve(raw); });
    } catch (const std::system_error&) {
      Reject(std::move(raw->fd));
      conns.pop_back();
    }
  }
}

void HttpServer::Impl::ReapLocked() {
  for (auto it = conns.begin(); it != conns.end();) {
    if ((*it)->finished) {
      // The thread set `finished` as its last action under mu; it no longer
      // needs the lock, so joining here cannot deadlock.
      (*it)->thread.join();
      it = conns.erase(it);
    } else {
      ++it;
    }
  }
}

void HttpServer::Impl::Reject(UniqueFd fd) {
  // Best effort from the accept thread, which must not block on one client.
  std::string wire = SerializeResponse(ErrorResponse(503, "too many connections"));
  (void)!::send(fd.get(), wire.data(), wire.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)::shutdown(fd.get(), SHUT_WR);
}

void HttpServer::Impl::Serve(Conn* conn) {
  int fd;
  {
    std::lock_guard<std::mutex> lock(mu);
    fd = conn->fd.get();
  }
  std::string buf;
  for (bool first = true; ServeOne(fd, buf, first); first = false) {
  }
  LingeringClose(fd);
  std::lock_guard<std::mutex> lock(mu);
  conn->fd.Reset();
  conn->finished = true;
}

bool HttpServer::Impl::Send(int fd, const HttpResponse& resp, bool head_only) {
  std::string wire = SerializeResponse(resp);
  if (head_only) {
    // Header values cannot contain CRLF (serialisation replaces them), so
    // the first blank line ends the head.
    size_t end = wire.find("\r\n\r\n");
    if (end != std::string::npos) wire.resize(end + 4);
  }
  return WriteAll(fd, wire, DeadlineIn(opts.body_timeout)).ok();
}

bool HttpServer::Impl::ServeOne(int fd, std::string& buf, bool first) {
  if (Stopping()) return false;
  char tmp[kReadChunk];
  HttpRequest req;

  // The head. Waiting for its first byte is bounded by the idle timeout
  // (header timeout on a new connection); from then on, the header timeout.
  bool started = !buf.empty();
  bool parse = started;
  Deadline deadline = DeadlineIn(started || first ? opts.header_timeout : opts.idle_timeout);
  for (;;) {
    if (parse) {
      auto end = ParseRequestHead(buf, &req, opts.limits);
      if (!end.ok()) {
        auto [status, detail] = ErrorStatus(end.status());
        Send(fd, ErrorResponse(status, detail), false);
        return false;
      }
      if (*end) {
        buf.erase(0, **end);
        break;
      }
    }
    auto n = ReadSome(fd, tmp, sizeof tmp, deadline);
    if (!n.ok()) {
      if (started && Clock::now() >= deadline) {
        Send(fd, ErrorResponse(408, "request head not received in time"), false);
      }
      return false;
    }
    if (*n == 0) return false;
    if (!started) {
      started = true;
      deadline = DeadlineIn(opts.header_timeout);
    }
    buf.append(tmp, *n);
    // Re-parse only when a line may have completed, or to enforce the limit:
    // a client trickling bytes must not make parsing quadratic.
    parse = std::memchr(tmp, '\n', *n) != nullptr || buf.size() >= opts.limits.max_head_bytes;
  }

  auto framing = RequestFraming(req);
  if (!framing.ok()) {
    auto [status, detail] = ErrorStatus(framing.status());
    Send(fd, ErrorResponse(status, detail), false);
    return false;
  }
  bool keep_alive = req.KeepAlive();
  // Content-Length beside Transfer-Encoding is a smuggling pattern: serve
  // the request but do not trust the connection afterwards (RFC 9112 6.3).
  if (framing->kind == BodyFraming::kChunked && req.headers.Has("Content-Length")) {
    keep_alive = false;
  }
  bool expect_continue = false;
  if (auto expect = req.headers.Get("Expect"); expect && req.version_minor >= 1) {
    if (!EqualsIgnoreCase(*expect, "100-continue")) {
      Send(fd, ErrorResponse(417, "only 'Expect: 100-continue' is supported"), false);
      return false;
    }
    expect_continue = true;
  }
  const size_t max_body = opts.limits.max_body_bytes;
  if (framing->kind == BodyFraming::kLength && framing->length > max_body) {
    Send(fd, ErrorResponse(413, "body larger than " + std::to_string(max_body) + " bytes"), false);
    return false;
  }
  bool has_body = framing->kind == BodyFraming::kChunked ||
                  (framing->kind == BodyFraming::kLength && framing->length > 0);
  Deadline body_deadline = DeadlineIn(opts.body_timeout);
  if (expect_continue && has_body && buf.empty()) {
    if (!WriteAll(fd, "HTTP/1.1 100 Continue\r\n\r\n", body_deadline).ok()) return false;
  }

  // The body. Returns false from ServeOne on EOF; 408 on timeout.
  auto read_more = [&]() -> bool {
    auto n = ReadSome(fd, tmp, sizeof tmp, body_deadline);
    if (!n.ok() || *n == 0) {
      if (Clock::now() >= body_deadline) {
        Send(fd, ErrorResponse(408, "request body not received in time"), false);
      }
      return false;
    }
    buf.append(tmp, *n);
    return true;
  };
  if (framing->kind == BodyFraming::kLength) {
    auto length = static_cast<size_t>(framing->length);
    while (buf.size() < length) {
      if (!read_more()) return false;
    }
    req.body = buf.substr(0, length);
    buf.erase(0, length);
  } else if (framing->kind == BodyFraming::kChunked) {
    ChunkedDecoder decoder;
    for (;;) {
      auto used = decoder.Feed(buf, &req.body);
      if (!used.ok()) {
        Send(fd, ErrorResponse(400, used.status().message()), false);
        return false;
      }
      buf.erase(0, *used);
      if (req.body.size() > max_body) {
        Send(fd, ErrorResponse(413, "body larger than " + std::to_string(max_body) + " bytes"),
             false);
        return false;
      }
      if (decoder.done()) break;
      if (!read_more()) return false;
    }
  }

  HttpResponse resp;
  try {
    resp = handler(req);
  } catch (...) {
    // The handler's exception text may expose internals; the client gets
    // only the status.
    resp = ErrorResponse(500, "", /*keep_open=*/true);
  }
  if (resp.headers.HasToken("Connection", "close") || Stopping()) keep_alive = false;
  if (!keep_alive) {
    resp.headers.Set("Connection", "close");
  } else if (req.version_minor == 0) {
    resp.headers.Set("Connection", "keep-alive");
  }
  if (!Send(fd, resp, req.method == "HEAD")) return false;
  return keep_alive;
}

HttpServer::HttpServer(HttpHandler handler, HttpServerOptions opts)
    : impl_(std::make_unique<Impl>(std::move(handler), std::move(opts))) {}

HttpServer::~HttpServer() {
  Stop();
}

Status HttpServer::Start(const HostPort& at) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->started)
      return InvalidArgument("HTTP server on " + at.ToString() + " already started");
  }
  HC_ASSIGN_OR_RETURN(UniqueFd fd, ListenTcp(at));
  HC_ASSIGN_OR_RETURN(uint16_t port, LocalPort(fd.get()));
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->listen_fd = std::move(fd);
  impl_->port = port;
  impl_->started = true;
  impl_->accept_thread = std::thread([impl = impl_.get()] { impl->AcceptLoop(); });
  return Status::Ok();
}

uint16_t HttpServer::port() const {
  return impl_->port;
}

void HttpServer::Stop() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (!impl_->started || impl_->stopping) return;
    impl_->stopping = true;
    // Wakes the accept thread; reads of idle connections return EOF, while
    // handlers that are running can still write their response.
    (void)::shutdown(impl_->listen_fd.get(), SHUT_RDWR);
    for (auto& conn : impl_->conns) {
      if (conn->fd.valid()) (void)::shutdown(conn->fd.get(), SHUT_RD);
    }
  }
  impl_->accept_thread.join();
  // The accept thread is gone: nobody else adds to or erases from `conns`.
  for (auto& conn : impl_->conns) conn->thread.join();
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->conns.clear();
  impl_->listen_fd.Reset();
}

}  // namespace hc::net
