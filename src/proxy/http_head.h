// The proxy's HTTP/1.1 head parser and chunked-body scanner: zero-copy and
// allocation-free, for the hot path (src/net/http.h is the control plane's
// parser, which copies into std::string).
//
// A parsed head is a set of string_views into the caller's buffer (like
// picohttpparser): valid only while that buffer is unchanged. Parsing is
// strict where leniency lets two parsers disagree about where a message
// ends (request smuggling, RFC 9112 section 11.2): bare LF, bare CR, obs-fold,
// whitespace before ':', NUL and other controls in values, Transfer-Encoding
// together with Content-Length, differing Content-Lengths are all errors.
//
//   HttpHead head;
//   switch (ParseRequestHead(buf, HeadLimits{}, &head)) {
//     case ParseResult::kIncomplete: /* read more */ break;
//     case ParseResult::kError: /* answer head.error_status */ break;
//     case ParseResult::kComplete: /* head.head_size bytes were the head */ break;
//   }
//
// Thread-safety: pure functions; an HttpHead or ChunkScanner belongs to one
// thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace hc::proxy {

inline constexpr size_t kMaxHeaders = 100;

struct HeadLimits {
  size_t max_head = size_t{16} << 10;  // bytes through the blank line; more -> 431
  size_t max_headers = kMaxHeaders;    // at most kMaxHeaders; more -> 431
};

enum class ParseResult : uint8_t { kComplete, kIncomplete, kError };

// How the body after a head is delimited (RFC 9112 section 6.3).
enum class Framing : uint8_t {
  kNone,        // no body
  kLength,      // content_length bytes
  kChunked,     // chunked transfer coding (see ChunkScanner)
  kUntilClose,  // responses only: until the server closes
};

struct HeaderField {
  std::string_view name;   // a token, as sent (case preserved)
  std::string_view value;  // surrounding whitespace removed
};

struct HttpHead {
  // Request line (requests) or status line (responses).
  std::string_view method;  // requests: "GET"
  std::string_view target;  // requests: "/path?q" (any form, not decoded)
  int status = 0;           // responses: 100-999
  std::string_view reason;  // responses
  int version_minor = 1;    // HTTP/1.x

  std::array<HeaderField, kMaxHeaders> headers;
  size_t num_headers = 0;
  size_t head_size = 0;  // bytes of the head, leading blank lines included

  // Derived from the headers.
  Framing framing = Framing::kNone;
  uint64_t content_length = 0;  // for kLength
  bool has_content_length = false;
  bool has_transfer_encoding = false;
  bool conn_close = false;       // Connection: close
  bool conn_keep_alive = false;  // Connection: keep-alive
  bool conn_upgrade = false;     // Connection: upgrade
  bool expect_continue = false;  // requests: Expect: 100-continue
  // Requests: the authority of an absolute-form target, else the Host
  // header ("" if absent).
  std::string_view host;
  std::string_view upgrade;  // the Upgrade header ("" if absent)

  // On kError: the status to answer (400, 431, 501, 505 for requests; for
  // responses the proxy answers 502) and a static reason for logs.
  int error_status = 0;
  const char* error = "";

  // Whether the sender wants the connection kept after this message
  // (HTTP/1.1: unless "close"; HTTP/1.0: only with "keep-alive").
  bool KeepAlive() const { return !conn_close && (version_minor >= 1 || conn_keep_alive); }
  // True if a Connection header of this head lists `name` (any case): such
  // a header is hop-by-hop and must not be forwarded.
  bool ConnectionListed(std::string_view name) const;
  // The first header named `name` (any case), or nullptr.
  const HeaderField* Find(std::string_view name) const;
};

// Parses the request head at the start of `buf` (up to 4 empty lines before
// the request line are skipped, RFC 9112 section 2.2). Requires an HTTP/1.1
// request to have exactly one Host; rejects Transfer-Encoding in HTTP/1.0
// requests, a final coding other than chunked (501) and "chunked" twice.
ParseResult ParseRequestHead(std::string_view buf, const HeadLimits& limits, HttpHead* out);

// Parses a response head. `request_method` decides the framing: responses
// to HEAD, 1xx, 204 and 304 have no body; a 2xx to CONNECT is a tunnel
// (reported as kUntilClose). Content-Length together with
// Transfer-Encoding is an error here too (the proxy answers 502).
ParseResult ParseResponseHead(std::string_view buf, std::string_view request_method,
                              const HeadLimits& limits, HttpHead* out);

bool EqualsIgnoreCase(std::string_view a, std::string_view b);
// True if the comma-separated list `list` has `token` (any case).
bool ListHasToken(std::string_view list, std::string_view token);

// Finds where a chunked body ends, without decoding it, so that the body can
// be forwarded as it arrives. Validates the framing: hex sizes (at most 16
// digits, below 2^62), CRLF after each chunk, extension and trailer lines
// without controls (at most 4 KiB each, 16 KiB of trailers in all).
class ChunkScanner {
 public:
  // Consumes bytes of the body from `in`; returns how many belong to the
  // body: all of them, unless the body ends inside `in` (then done()) or
  // the framing is broken (then failed(); the return value is what was
  // valid). Never more than in.size().
  size_t Scan(std::string_view in);
  bool done() const { return state_ == kDone; }
  bool failed() const { return state_ == kFailed; }
  void Reset() { *this = ChunkScanner(); }

 private:
  enum State : uint8_t {
    kSize,
    kExt,
    kSizeLf,
    kData,
    kDataCr,
    kDataLf,
    kTrailerStart,
    kTrailer,
    kTrailerLf,
    kEndLf,
    kDone,
    kFailed,
  };
  State state_ = kSize;
  uint8_t digits_ = 0;
  uint32_t line_ = 0;      // bytes of the current extension/trailer line
  uint32_t trailers_ = 0;  // bytes of all trailer lines
  uint64_t remaining_ = 0;
};

}  // namespace hc::proxy
