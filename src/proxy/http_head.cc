#include "proxy/http_head.h"

#include <cstring>

namespace hc::proxy {
namespace {

// RFC 9112 section 2.2: a server SHOULD ignore at least one empty line
// before a request line (clients that send an extra CRLF after a body).
constexpr int kMaxLeadingEmptyLines = 4;
// Content-Length and chunk sizes stay below this, so sums never overflow.
constexpr uint64_t kMaxBodySize = uint64_t{1} << 62;
constexpr int kMaxChunkSizeDigits = 16;
constexpr uint32_t kMaxChunkLine = 4096;
constexpr uint32_t kMaxTrailerBytes = 16 * 1024;

// Lookup table for RFC 9110 section 5.6.2 tchar.
constexpr std::array<bool, 256> MakeTokenTable() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}
constexpr std::array<bool, 256> kTokenChar = MakeTokenTable();

bool IsTokenChar(char c) {
  return kTokenChar[static_cast<unsigned char>(c)];
}

// field-vchar / SP / HTAB: visible ASCII and obs-text; no NUL, CR, LF,
// other controls or DEL.
bool IsFieldChar(char ch) {
  auto c = static_cast<unsigned char>(ch);
  return c == '\t' || (c >= 0x20 && c != 0x7f);
}

bool IsOws(char c) {
  return c == ' ' || c == '\t';
}

char Lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && IsOws(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsOws(s.back())) s.remove_suffix(1);
  return s;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

ParseResult Fail(HttpHead* out, int status, const char* why) {
  out->error_status = status;
  out->error = why;
  return ParseResult::kError;
}

// The line starting at `pos`, without its CRLF; `next` is where the next
// line starts. kIncomplete if no CRLF yet; kError on a CR not followed by LF
// or an LF with no CR before it (a bare LF inside a line that a later CRLF
// ends is caught by the callers' character checks).
ParseResult NextLine(std::string_view buf, size_t pos, std::string_view* line, size_t* next) {
  const void* cr = std::memchr(buf.data() + pos, '\r', buf.size() - pos);
  if (cr == nullptr) {
    // A bare LF is an error now, not after the header timeout.
    return std::memchr(buf.data() + pos, '\n', buf.size() - pos) != nullptr
               ? ParseResult::kError
               : ParseResult::kIncomplete;
  }
  size_t at = static_cast<size_t>(static_cast<const char*>(cr) - buf.data());
  if (at + 1 >= buf.size()) return ParseResult::kIncomplete;
  if (buf[at + 1] != '\n') return ParseResult::kError;
  *line = buf.substr(pos, at - pos);
  *next = at + 2;
  return ParseResult::kComplete;
}

// "HTTP/1.x": the minor version (1 for any x >= 1), -1 if not HTTP/1, -2 if
// not a version at all.
int ParseVersion(std::string_view v) {
  if (v.size() != 8 || v.substr(0, 5) != "HTTP/" || v[6] != '.') return -2;
  if (v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9') return -2;
  if (v[5] != '1') return -1;
  return v[7] == '0' ? 0 : 1;
}

// Parses every header line through the blank line, starting at `pos`.
ParseResult ParseFields(std::string_view buf, size_t pos, const HeadLimits& limits, HttpHead* out) {
  const size_t max_headers = limits.max_headers < kMaxHeaders ? limits.max_headers : kMaxHeaders;
  for (;;) {
    std::string_view line;
    size_t next = 0;
    ParseResult r = NextLine(buf, pos, &line, &next);
    if (r == ParseResult::kError) return Fail(out, 400, "bare CR or LF in header section");
    if (r == ParseResult::kIncomplete) return r;
    if (next > limits.max_head) return Fail(out, 431, "header section too large");
    pos = next;
    if (line.empty()) {
      out->head_size = pos;
      return ParseResult::kComplete;
    }
    if (IsOws(line.front())) return Fail(out, 400, "obsolete line folding");
    size_t colon = 0;
    while (colon < line.size() && IsTokenChar(line[colon])) ++colon;
    if (colon == line.size() || line[colon] != ':') {
      return Fail(out, 400,
                  colon < line.size() && IsOws(line[colon]) ? "whitespace before ':'"
                                                            : "invalid header name");
    }
    if (colon == 0) return Fail(out, 400, "empty header name");
    std::string_view value = line.substr(colon + 1);
    for (char c : value) {
      if (!IsFieldChar(c)) return Fail(out, 400, "control character in header value");
    }
    if (out->num_headers >= max_headers) return Fail(out, 431, "too many headers");
    out->headers[out->num_headers++] = HeaderField{line.substr(0, colon), TrimOws(value)};
  }
}

// Content-Length values: every list element of every header must be the
// same decimal number.
bool ParseContentLength(std::string_view list, HttpHead* out) {
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    std::string_view item = TrimOws(list.substr(start, comma - start));
    if (item.empty()) return false;
    uint64_t v = 0;
    for (char c : item) {
      if (c < '0' || c > '9') return false;
      v = v * 10 + static_cast<uint64_t>(c - '0');
      if (v >= kMaxBodySize) return false;
    }
    if (out->has_content_length && v != out->content_length) return false;
    out->has_content_length = true;
    out->content_length = v;
    start = comma + 1;
  }
  return true;
}

// Transfer-Encoding: counts "chunked" codings and whether the last coding
// seen so far is chunked. False on an empty header.
bool ScanTransferEncoding(std::string_view list, int* chunked, bool* last_chunked) {
  bool any = false;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    std::string_view item = TrimOws(list.substr(start, comma - start));
    start = comma + 1;
    if (item.empty()) continue;
    any = true;
    size_t semi = item.find(';');
    std::string_view coding = TrimOws(item.substr(0, semi));
    *last_chunked = EqualsIgnoreCase(coding, "chunked");
    if (*last_chunked) ++*chunked;
  }
  return any;
}

bool ValidHost(std::string_view h) {
  for (char c : h) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']';
    if (!ok) return false;
  }
  return true;
}

struct Derived {
  int te_chunked = 0;
  bool te_last_chunked = false;
  int hosts = 0;
};

// Fills the derived fields from the headers; false with the error set.
bool Derive(HttpHead* out, Derived* d) {
  for (size_t i = 0; i < out->num_headers; ++i) {
    const HeaderField& h = out->headers[i];
    switch (Lower(h.name.front())) {
      case 'c':
        if (EqualsIgnoreCase(h.name, "content-length")) {
          if (!ParseContentLength(h.value, out)) {
            Fail(out, 400, "invalid or conflicting Content-Length");
            return false;
          }
        } else if (EqualsIgnoreCase(h.name, "connection")) {
          out->conn_close |= ListHasToken(h.value, "close");
          out->conn_keep_alive |= ListHasToken(h.value, "keep-alive");
          out->conn_upgrade |= ListHasToken(h.value, "upgrade");
        }
        break;
      case 't':
        if (EqualsIgnoreCase(h.name, "transfer-encoding")) {
          out->has_transfer_encoding = true;
          if (!ScanTransferEncoding(h.value, &d->te_chunked, &d->te_last_chunked)) {
            Fail(out, 400, "empty Transfer-Encoding");
            return false;
          }
        }
        break;
      case 'h':
        if (EqualsIgnoreCase(h.name, "host")) {
          ++d->hosts;
          out->host = h.value;
        }
        break;
      case 'e':
        if (EqualsIgnoreCase(h.name, "expect")) {
          out->expect_continue = EqualsIgnoreCase(h.value, "100-continue");
        }
        break;
      case 'u':
        if (EqualsIgnoreCase(h.name, "upgrade")) out->upgrade = h.value;
        break;
      default: break;
    }
  }
  return true;
}

void ResetHead(HttpHead* out) {
  out->method = {};
  out->target = {};
  out->status = 0;
  out->reason = {};
  out->version_minor = 1;
  out->num_headers = 0;
  out->head_size = 0;
  out->framing = Framing::kNone;
  out->content_length = 0;
  out->has_content_length = false;
  out->has_transfer_encoding = false;
  out->conn_close = false;
  out->conn_keep_alive = false;
  out->conn_upgrade = false;
  out->expect_continue = false;
  out->host = {};
  out->upgrade = {};
  out->error_status = 0;
  out->error = "";
}

// Incomplete heads that already reach the limit can never fit.
ParseResult Incomplete(std::string_view buf, const HeadLimits& limits, HttpHead* out) {
  if (buf.size() >= limits.max_head) return Fail(out, 431, "header section too large");
  return ParseResult::kIncomplete;
}

}  // namespace

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

bool ListHasToken(std::string_view list, std::string_view token) {
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    if (EqualsIgnoreCase(TrimOws(list.substr(start, comma - start)), token)) return true;
    start = comma + 1;
  }
  return false;
}

const HeaderField* HttpHead::Find(std::string_view name) const {
  for (size_t i = 0; i < num_headers; ++i) {
    if (EqualsIgnoreCase(headers[i].name, name)) return &headers[i];
  }
  return nullptr;
}

bool HttpHead::ConnectionListed(std::string_view name) const {
  for (size_t i = 0; i < num_headers; ++i) {
    if (EqualsIgnoreCase(headers[i].name, "connection") && ListHasToken(headers[i].value, name)) {
      return true;
    }
  }
  return false;
}

ParseResult ParseRequestHead(std::string_view buf, const HeadLimits& limits, HttpHead* out) {
  ResetHead(out);
  size_t pos = 0;
  for (int i = 0; i < kMaxLeadingEmptyLines && buf.size() - pos >= 2 && buf[pos] == '\r' &&
                  buf[pos + 1] == '\n';
       ++i) {
    pos += 2;
  }
  std::string_view line;
  size_t next = 0;
  ParseResult r = NextLine(buf, pos, &line, &next);
  if (r == ParseResult::kError) return Fail(out, 400, "bare CR or LF in request line");
  if (r == ParseResult::kIncomplete) {
    // Reject garbage early instead of waiting for a CRLF that may never come.
    for (size_t i = pos; i < buf.size() && buf[i] != ' ' && buf[i] != '\r'; ++i) {
      if (!IsTokenChar(buf[i])) return Fail(out, 400, "invalid method");
    }
    return Incomplete(buf, limits, out);
  }
  if (next > limits.max_head) return Fail(out, 431, "request line too long");

  size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos || sp1 == 0) return Fail(out, 400, "malformed request line");
  out->method = line.substr(0, sp1);
  for (char c : out->method) {
    if (!IsTokenChar(c)) return Fail(out, 400, "invalid method");
  }
  size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || sp2 == sp1 + 1) {
    return Fail(out, 400, "malformed request line");
  }
  out->target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  for (char ch : out->target) {
    auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7f) return Fail(out, 400, "invalid request target");
  }
  int minor = ParseVersion(line.substr(sp2 + 1));
  if (minor == -2) return Fail(out, 400, "malformed HTTP version");
  if (minor == -1) return Fail(out, 505, "HTTP version not supported");
  out->version_minor = minor;

  r = ParseFields(buf, next, limits, out);
  if (r == ParseResult::kIncomplete) return Incomplete(buf, limits, out);
  if (r != ParseResult::kComplete) return r;

  Derived d;
  if (!Derive(out, &d)) return ParseResult::kError;
  if (d.hosts > 1) return Fail(out, 400, "more than one Host header");
  if (d.hosts == 0 && out->version_minor >= 1) return Fail(out, 400, "missing Host header");
  if (!ValidHost(out->host)) return Fail(out, 400, "invalid Host header");
  // Absolute form ("GET http://a.example/x"): the authority in the target
  // wins over Host (RFC 9112 section 3.2.2), for routing as for the app.
  std::string_view t = out->target;
  size_t scheme = EqualsIgnoreCase(t.substr(0, 7), "http://")    ? 7
                  : EqualsIgnoreCase(t.substr(0, 8), "https://") ? 8
                                                                 : 0;
  if (scheme > 0) {
    std::string_view authority = t.substr(scheme);
    authority = authority.substr(0, authority.find_first_of("/?#"));
    if (authority.empty() || !ValidHost(authority)) {
      return Fail(out, 400, "invalid authority in the request target");
    }
    out->host = authority;
  }
  if (out->has_transfer_encoding) {
    if (out->has_content_length) {
      return Fail(out, 400, "both Transfer-Encoding and Content-Length");
    }
    if (out->version_minor == 0) return Fail(out, 400, "Transfer-Encoding in an HTTP/1.0 request");
    if (!d.te_last_chunked) return Fail(out, 501, "transfer coding other than chunked");
    if (d.te_chunked > 1) return Fail(out, 400, "chunked applied more than once");
    out->framing = Framing::kChunked;
  } else if (out->has_content_length && out->content_length > 0) {
    out->framing = Framing::kLength;
  }
  return ParseResult::kComplete;
}

ParseResult ParseResponseHead(std::string_view buf, std::string_view request_method,
                              const HeadLimits& limits, HttpHead* out) {
  ResetHead(out);
  std::string_view line;
  size_t next = 0;
  ParseResult r = NextLine(buf, 0, &line, &next);
  if (r == ParseResult::kError) return Fail(out, 400, "bare CR or LF in status line");
  if (r == ParseResult::kIncomplete) {
    if (buf.size() >= 5 && buf.substr(0, 5) != "HTTP/") return Fail(out, 400, "not HTTP");
    return Incomplete(buf, limits, out);
  }
  if (next > limits.max_head) return Fail(out, 431, "status line too long");
  if (line.size() < 12 || line[8] != ' ') return Fail(out, 400, "malformed status line");
  int minor = ParseVersion(line.substr(0, 8));
  if (minor < 0) return Fail(out, 400, "malformed HTTP version in status line");
  out->version_minor = minor;
  int status = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') return Fail(out, 400, "malformed status code");
    status = status * 10 + (line[i] - '0');
  }
  if (status < 100) return Fail(out, 400, "malformed status code");
  out->status = status;
  if (line.size() > 12) {
    if (line[12] != ' ') return Fail(out, 400, "malformed status line");
    out->reason = line.substr(13);
    for (char c : out->reason) {
      if (!IsFieldChar(c)) return Fail(out, 400, "control character in reason phrase");
    }
  }

  r = ParseFields(buf, next, limits, out);
  if (r == ParseResult::kIncomplete) return Incomplete(buf, limits, out);
  if (r != ParseResult::kComplete) return r;

  Derived d;
  if (!Derive(out, &d)) return ParseResult::kError;
  if ((status >= 100 && status < 200) || status == 204 || status == 304 ||
      EqualsIgnoreCase(request_method, "HEAD")) {
    out->framing = Framing::kNone;
  } else if (status < 300 && EqualsIgnoreCase(request_method, "CONNECT")) {
    out->framing = Framing::kUntilClose;
  } else if (out->has_transfer_encoding) {
    if (out->has_content_length) {
      return Fail(out, 400, "both Transfer-Encoding and Content-Length");
    }
    if (d.te_chunked > 1) return Fail(out, 400, "chunked applied more than once");
    out->framing = d.te_last_chunked ? Framing::kChunked : Framing::kUntilClose;
  } else if (out->has_content_length) {
    out->framing = out->content_length > 0 ? Framing::kLength : Framing::kNone;
  } else {
    out->framing = Framing::kUntilClose;
  }
  return ParseResult::kComplete;
}

size_t ChunkScanner::Scan(std::string_view in) {
  size_t i = 0;
  const size_t n = in.size();
  while (i < n) {
    char c = in[i];
    switch (state_) {
      case kSize: {
        int v = HexValue(c);
        if (v >= 0) {
          // Leading zeros count as digits too: a long run of them is how
          // some smuggling payloads make two parsers disagree.
          if (++digits_ > kMaxChunkSizeDigits) {
            state_ = kFailed;
            return i;
          }
          remaining_ = remaining_ * 16 + static_cast<uint64_t>(v);
          if (remaining_ >= kMaxBodySize) {
            state_ = kFailed;
            return i;
          }
          ++i;
          break;
        }
        if (digits_ == 0) {
          state_ = kFailed;
          return i;
        }
        line_ = 0;
        if (c == '\r') {
          state_ = kSizeLf;
        } else if (c == ';' || IsOws(c)) {
          state_ = kExt;
        } else {
          state_ = kFailed;
          return i;
        }
        ++i;
        break;
      }
      case kExt:
        if (c == '\r') {
          state_ = kSizeLf;
        } else if (!IsFieldChar(c) || ++line_ > kMaxChunkLine) {
          state_ = kFailed;
          return i;
        }
        ++i;
        break;
      case kSizeLf:
        if (c != '\n') {
          state_ = kFailed;
          return i;
        }
        ++i;
        if (remaining_ == 0) {
          state_ = kTrailerStart;
        } else {
          state_ = kData;
        }
        break;
      case kData: {
        uint64_t take = n - i;
        if (take > remaining_) take = remaining_;
        i += static_cast<size_t>(take);
        remaining_ -= take;
        if (remaining_ == 0) state_ = kDataCr;
        break;
      }
      case kDataCr:
        if (c != '\r') {
          state_ = kFailed;
          return i;
        }
        state_ = kDataLf;
        ++i;
        break;
      case kDataLf:
        if (c != '\n') {
          state_ = kFailed;
          return i;
        }
        state_ = kSize;
        digits_ = 0;
        ++i;
        break;
      case kTrailerStart:
        line_ = 0;
        if (c == '\r') {
          state_ = kEndLf;
          ++i;
          break;
        }
        state_ = kTrailer;
        [[fallthrough]];
      case kTrailer:
        if (c == '\r') {
          state_ = kTrailerLf;
        } else if (!IsFieldChar(c) || ++line_ > kMaxChunkLine || ++trailers_ > kMaxTrailerBytes) {
          state_ = kFailed;
          return i;
        }
        ++i;
        break;
      case kTrailerLf:
        if (c != '\n') {
          state_ = kFailed;
          return i;
        }
        state_ = kTrailerStart;
        ++i;
        break;
      case kEndLf:
        if (c != '\n') {
          state_ = kFailed;
          return i;
        }
        state_ = kDone;
        return i + 1;
      case kDone:
      case kFailed: return i;
    }
  }
  return i;
}

}  // namespace hc::proxy
