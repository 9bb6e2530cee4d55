// HTTP/1.1 messages: incremental head parser, body framing, chunked decoder,
// serialisation. Pure functions over bytes, shared by the client and the
// server and fuzzed (tests/fuzz/fuzz_http.cc). RFC 9110/9112.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace hc::net {

struct HttpLimits {
  size_t max_head_bytes = 16 * 1024;  // request/status line + headers
  size_t max_headers = 100;
  size_t max_body_bytes = 4 * 1024 * 1024;  // for fully buffered bodies
};

class HttpHeaders {
 public:
  void Add(std::string name, std::string value);
  void Set(std::string name, std::string value);  // replaces all of that name
  // Case-insensitive; first match.
  std::optional<std::string_view> Get(std::string_view name) const;
  bool Has(std::string_view name) const { return Get(name).has_value(); }
  // True if a comma-separated header (e.g. Connection) has `token`, any case.
  bool HasToken(std::string_view name, std::string_view token) const;
  const std::vector<std::pair<std::string, std::string>>& all() const { return h_; }

 private:
  std::vector<std::pair<std::string, std::string>> h_;
};

struct HttpRequest {
  std::string method;     // "GET"
  std::string target;     // "/v1/apps?x=1" (origin form)
  int version_minor = 1;  // HTTP/1.x
  HttpHeaders headers;
  std::string body;

  std::string_view Path() const;   // target without "?query"
  std::string_view Query() const;  // after '?', or ""
  // Value of a query parameter (percent-decoded), or nullopt.
  std::optional<std::string> QueryParam(std::string_view name) const;
  bool KeepAlive() const;  // HTTP/1.1 default on; "Connection: close" off
};

struct HttpResponse {
  int status = 200;
  std::string reason;  // filled with the standard phrase by Serialize if empty
  HttpHeaders headers;
  std::string body;
};

// Parses a request head at the start of `buf`. Returns the number of bytes
// of the head (through the blank line) when complete, nullopt when more bytes
// are needed, or InvalidArgument naming the problem (bad request line,
// header too large -> message starts with "431:" for the caller's status).
// Obsolete line folding, NUL/CR in values, spaces before ':' are rejected.
Result<std::optional<size_t>> ParseRequestHead(std::string_view buf, HttpRequest* out,
                                               const HttpLimits& limits = {});
Result<std::optional<size_t>> ParseResponseHead(std::string_view buf, HttpResponse* out,
                                                const HttpLimits& limits = {});

// How the body that follows a head is delimited.
struct BodyFraming {
  enum Kind { kNone, kLength, kChunked, kUntilClose } kind = kNone;
  uint64_t length = 0;
};
// Request: Transfer-Encoding chunked (must be last coding) wins; conflicting
// or invalid Content-Length -> error; no body headers -> kNone. A coding
// other than chunked before the final chunked gives a message starting with
// "501:" (Not Implemented); other errors are for a 400.
Result<BodyFraming> RequestFraming(const HttpRequest& req);
// Response: 1xx/204/304 and responses to HEAD have no body; otherwise
// chunked, length, or until close.
Result<BodyFraming> ResponseFraming(const HttpResponse& resp, std::string_view request_method);

// Incremental chunked-body decoder (chunk extensions ignored, trailers
// skipped). Feed returns bytes consumed from `in`; decoded data is appended
// to `out`. done() after the last chunk and its trailers.
class ChunkedDecoder {
 public:
  Result<size_t> Feed(std::string_view in, std::string* out);
  bool done() const { return state_ == kDone; }

 private:
  enum State { kSize, kSizeLf, kExt, kData, kDataCr, kDataLf, kTrailer, kTrailerLf, kDone };
  State state_ = kSize;
  uint64_t remaining_ = 0;
  int size_digits_ = 0;
  size_t trailer_line_ = 0;
};

// Serialisation. Content-Length is added from body (unless chunked is set;
// the body is then written as is, so it must already be chunk-encoded).
std::string SerializeRequest(const HttpRequest& req);
std::string SerializeResponse(const HttpResponse& resp);
std::string_view StatusReason(int status);

std::string PercentDecode(std::string_view s);  // '+' stays '+'
std::string PercentEncode(std::string_view s);  // unreserved kept

}  // namespace hc::net
