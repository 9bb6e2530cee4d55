#include "net/http_client.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>

namespace hc::net {
namespace {

constexpr size_t kReadChunk = 16 * 1024;
constexpr int kCancelCheckMs = 200;
// How much of an error response's body goes into the Status message.
constexpr size_t kMaxErrorBodyInMessage = 1000;

// The request bytes, with a Host header when the caller did not set one.
std::string WireRequest(const HttpRequest& req, const HostPort& to) {
  std::string wire = SerializeRequest(req);
  if (!req.headers.Has("Host")) {
    size_t eol = wire.find("\r\n");
    wire.insert(eol + 2, "Host: " + to.ToString() + "\r\n");
  }
  return wire;
}

std::string Describe(const HttpRequest& req, const HostPort& to) {
  return "HTTP " + req.method + " " + req.target.substr(0, 200) + " to " + to.ToString();
}

// True when a kept-alive connection has become readable while idle: the
// server closed it (EOF, reset) or sent something unsolicited. Either way it
// cannot carry the next request.
bool IdleConnectionUnusable(int fd) {
  struct pollfd p = {fd, POLLIN, 0};
  int r;
  do {
    r = ::poll(&p, 1, 0);
  } while (r < 0 && errno == EINTR);
  return r != 0;
}

Status StatusFromHttp(const HttpResponse& resp, const std::string& what) {
  std::string body = resp.body.substr(0, kMaxErrorBodyInMessage);
  while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
  std::string msg = what + ": HTTP " + std::to_string(resp.status) + " " +
                    (resp.reason.empty() ? std::string(StatusReason(resp.status)) : resp.reason);
  if (!body.empty()) msg += ": " + body;
  Code code = Code::kInvalidArgument;
  switch (resp.status) {
    case 401:
    case 403: code = Code::kPermissionDenied; break;
    case 404: code = Code::kNotFound; break;
    case 409:
    case 412: code = Code::kConflict; break;
    case 408:
    case 429: code = Code::kUnavailable; break;
    default:
      if (resp.status >= 500 || resp.status < 400) code = Code::kUnavailable;
  }
  return Status(code, msg);
}

// Reads one response from `fd` whose first bytes may already be in `buf`.
// Leaves bytes past the response in `buf`. `received` counts bytes read from
// the socket; `reusable` says whether the connection may carry another
// request.
Result<HttpResponse> ReadResponse(int fd, std::string* buf, std::string_view method,
                                  const HttpLimits& limits, Deadline deadline, size_t* received,
                                  bool* reusable) {
  *reusable = false;
  char tmp[kReadChunk];
  auto fill = [&]() -> Result<size_t> {
    HC_ASSIGN_OR_RETURN(size_t n, ReadSome(fd, tmp, sizeof tmp, deadline));
    buf->append(tmp, n);
    *received += n;
    return n;
  };

  HttpResponse resp;
  bool http10 = false;
  for (;;) {
    auto end = ParseResponseHead(*buf, &resp, limits);
    if (!end.ok()) return Unavailable("invalid response: " + end.status().message());
    if (!*end) {
      HC_ASSIGN_OR_RETURN(size_t n, fill());
      if (n == 0) {
        return Unavailable(*received == 0 ? "connection closed before the response"
                                          : "connection closed in the response head");
      }
      continue;
    }
    http10 = buf->compare(0, 8, "HTTP/1.0") == 0;
    buf->erase(0, **end);
    // Interim responses (100 Continue, 103 Early Hints) precede the real one.
    if (resp.status >= 100 && resp.status < 200 && resp.status != 101) continue;
    break;
  }

  auto framing = ResponseFraming(resp, method);
  if (!framing.ok()) return Unavailable("invalid response: " + framing.status().message());
  const std::string too_big =
      "response body larger than " + std::to_string(limits.max_body_bytes) + " bytes";
  bool close = resp.status == 101 || resp.headers.HasToken("Connection", "close") ||
               (http10 && !resp.headers.HasToken("Connection", "keep-alive"));
  switch (framing->kind) {
    case BodyFraming::kNone: break;
    case BodyFraming::kLength: {
      if (framing->length > limits.max_body_bytes) return Unavailable(too_big);
      auto length = static_cast<size_t>(framing->length);
      while (buf->size() < length) {
        HC_ASSIGN_OR_RETURN(size_t n, fill());
        if (n == 0) return Unavailable("connection closed in the response body");
      }
      resp.body = buf->substr(0, length);
      buf->erase(0, length);
      break;
    }
    case BodyFraming::kChunked: {
      ChunkedDecoder decoder;
      for (;;) {
        auto used = decoder.Feed(*buf, &resp.body);
        if (!used.ok()) return Unavailable("invalid response: " + used.status().message());
        buf->erase(0, *used);
        if (resp.body.size() > limits.max_body_bytes) return Unavailable(too_big);
        if (decoder.done()) break;
        HC_ASSIGN_OR_RETURN(size_t n, fill());
        if (n == 0) return Unavailable("connection closed in the chunked response body");
      }
      break;
    }
    case BodyFraming::kUntilClose: {
      for (;;) {
        if (buf->size() > limits.max_body_bytes) return Unavailable(too_big);
        HC_ASSIGN_OR_RETURN(size_t n, fill());
        if (n == 0) break;
      }
      resp.body = std::move(*buf);
      buf->clear();
      close = true;
      break;
    }
  }
  *reusable = !close;
  return resp;
}

// Stream()'s reading side: blocks without a deadline, but gives up when
// *cancel turns true (checked every kCancelCheckMs).
class CancellableReader {
 public:
  enum Outcome { kData, kEof, kCancelled };
  CancellableReader(int fd, const std::atomic<bool>* cancel) : fd_(fd), cancel_(cancel) {}

  bool cancelled() const { return cancel_ != nullptr && cancel_->load(); }

  // Appends what arrives to `buf`.
  Result<Outcome> Fill(std::string* buf) {
    for (;;) {
      if (cancelled()) return kCancelled;
      struct pollfd p = {fd_, POLLIN, 0};
      int r = ::poll(&p, 1, kCancelCheckMs);
      if (r < 0 && errno != EINTR) return ErrnoStatus("poll", errno);
      if (r <= 0) continue;
      char tmp[kReadChunk];
      HC_ASSIGN_OR_RETURN(size_t n, ReadSome(fd_, tmp, sizeof tmp, DeadlineIn(kPollSlice)));
      if (n == 0) return kEof;
      buf->append(tmp, n);
      return kData;
    }
  }

 private:
  static constexpr std::chrono::milliseconds kPollSlice{kCancelCheckMs};
  int fd_;
  const std::atomic<bool>* cancel_;
};

// Passes the body that follows a head (starting with the bytes in `buf`) to
// `sink` as it arrives. OK when the body ended, `sink` returned false or the
// reader was cancelled; Unavailable when the peer closed before the end of a
// delimited body.
Status PumpBody(const BodyFraming& framing, std::string* buf, CancellableReader& reader,
                const std::function<bool(std::string_view)>& sink) {
  if (framing.kind == BodyFraming::kNone) return Status::Ok();
  uint64_t left = framing.length;
  ChunkedDecoder decoder;
  std::string decoded;
  for (;;) {
    switch (framing.kind) {
      case BodyFraming::kNone: return Status::Ok();
      case BodyFraming::kLength: {
        auto n = static_cast<size_t>(std::min<uint64_t>(left, buf->size()));
        left -= n;
        if (n > 0 && !sink(std::string_view(*buf).substr(0, n))) return Status::Ok();
        buf->erase(0, n);
        if (left == 0) return Status::Ok();
        break;
      }
      case BodyFraming::kChunked: {
        decoded.clear();
        auto used = decoder.Feed(*buf, &decoded);
        if (!used.ok()) return Unavailable("invalid response: " + used.status().message());
        buf->erase(0, *used);
        if (!decoded.empty() && !sink(decoded)) return Status::Ok();
        if (decoder.done()) return Status::Ok();
        break;
      }
      case BodyFraming::kUntilClose:
        if (!buf->empty() && !sink(*buf)) return Status::Ok();
        buf->clear();
        break;
    }
    HC_ASSIGN_OR_RETURN(CancellableReader::Outcome got, reader.Fill(buf));
    if (got == CancellableReader::kCancelled) return Status::Ok();
    if (got == CancellableReader::kEof) {
      if (framing.kind == BodyFraming::kUntilClose) return Status::Ok();
      return Unavailable("connection closed before the end of the response body");
    }
  }
}

}  // namespace

HttpClient::HttpClient(HostPort to, HttpClientOptions opts)
    : to_(std::move(to)), opts_(std::move(opts)) {}

HttpClient::~HttpClient() = default;

void HttpClient::Close() {
  fd_.Reset();
  buf_.clear();
}

Result<HttpResponse> HttpClient::Do(const HttpRequest& req, std::chrono::milliseconds timeout) {
  Deadline deadline = DeadlineIn(timeout.count() > 0 ? timeout : opts_.request_timeout);
  const std::string wire = WireRequest(req, to_);
  for (int attempt = 0;; ++attempt) {
    bool reused = fd_.valid();
    if (reused && (!buf_.empty() || IdleConnectionUnusable(fd_.get()))) {
      Close();
      reused = false;
    }
    if (!fd_.valid()) {
      Deadline connect_deadline = std::min(deadline, DeadlineIn(opts_.connect_timeout));
      auto fd = ConnectTcp(to_, connect_deadline);
      if (!fd.ok()) return fd.status().Annotate(Describe(req, to_));
      fd_ = std::move(*fd);
    }
    // A kept-alive connection the server closed just now fails in the write
    // or with EOF before any response byte: the request was not processed,
    // so one retry on a fresh connection is safe.
    const bool may_retry = reused && attempt == 0;
    Status written = WriteAll(fd_.get(), wire, deadline);
    if (!written.ok()) {
      Close();
      if (may_retry && Clock::now() < deadline) continue;
      return written.Annotate(Describe(req, to_));
    }
    size_t received = 0;
    bool reusable = false;
    auto resp =
        ReadResponse(fd_.get(), &buf_, req.method, opts_.limits, deadline, &received, &reusable);
    if (!resp.ok()) {
      Close();
      if (may_retry && received == 0 && Clock::now() < deadline) continue;
      return resp.status().Annotate(Describe(req, to_));
    }
    if (!reusable || !req.KeepAlive()) Close();
    return resp;
  }
}

Result<HttpResponse> HttpClient::Do(std::string_view method, std::string_view target,
                                    std::string body, std::string_view content_type,
                                    std::chrono::milliseconds timeout) {
  HttpRequest req;
  req.method = std::string(method);
  req.target = std::string(target);
  if (!body.empty() && !content_type.empty()) {
    req.headers.Add("Content-Type", std::string(content_type));
  }
  req.body = std::move(body);
  return Do(req, timeout);
}

Status HttpClient::Stream(const HttpRequest& req,
                          const std::function<bool(std::string_view)>& on_data,
                          const std::atomic<bool>* cancel, HttpResponse* head) {
  const std::string what = Describe(req, to_);
  auto fd = ConnectTcp(to_, DeadlineIn(opts_.connect_timeout));
  if (!fd.ok()) return fd.status().Annotate(what);
  Status written = WriteAll(fd->get(), WireRequest(req, to_), DeadlineIn(opts_.request_timeout));
  if (!written.ok()) return written.Annotate(what);

  CancellableReader reader(fd->get(), cancel);
  std::string buf;
  HttpResponse resp;
  for (;;) {
    auto end = ParseResponseHead(buf, &resp, opts_.limits);
    if (!end.ok()) return Unavailable(what + ": invalid response: " + end.status().message());
    if (*end) {
      buf.erase(0, **end);
      if (resp.status >= 100 && resp.status < 200 && resp.status != 101) continue;
      break;
    }
    auto got = reader.Fill(&buf);
    if (!got.ok()) return got.status().Annotate(what);
    if (*got == CancellableReader::kCancelled) return Status::Ok();
    if (*got == CancellableReader::kEof) {
      return Unavailable(what + ": connection closed before the response");
    }
  }
  if (head != nullptr) *head = resp;
  auto framing = ResponseFraming(resp, req.method);
  if (!framing.ok()) return Unavailable(what + ": invalid response: " + framing.status().message());

  if (resp.status < 200 || resp.status > 299) {
    // Collect (a bounded part of) the error body for the message.
    const size_t limit = std::min(opts_.limits.max_body_bytes, kMaxErrorBodyInMessage);
    auto collect = [&](std::string_view data) {
      resp.body.append(data.substr(0, limit - resp.body.size()));
      return resp.body.size() < limit;
    };
    (void)PumpBody(*framing, &buf, reader, collect);
    return StatusFromHttp(resp, what);
  }
  Status pumped = PumpBody(*framing, &buf, reader, on_data);
  if (!pumped.ok()) return pumped.Annotate(what);
  return Status::Ok();
}

}  // namespace hc::net
