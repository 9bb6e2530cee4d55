#include "net/http.h"

#include <algorithm>

namespace hc::net {
namespace {

// Whole lines (trailers, chunk-size lines with extensions) longer than this
// are refused: their content is ignored, so nobody needs more.
constexpr size_t kMaxChunkLineBytes = 4096;
// 16 hex digits fit in uint64_t; the value bound leaves headroom for sums.
constexpr int kMaxChunkSizeDigits = 16;
constexpr uint64_t kMaxChunkSize = uint64_t{1} << 62;
// Content-Length has the same bound as a chunk: no overflow when added up.
constexpr uint64_t kMaxContentLength = uint64_t{1} << 62;
// Blank lines tolerated before a request line (RFC 9112 2.2: a client may
// send an extra CRLF after a body).
constexpr size_t kMaxLeadingBlankLines = 4;

char ToLower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (ToLower(a[i]) != ToLower(b[i])) return false;
  }
  return true;
}

bool IsDigit(char c) {
  return c >= '0' && c <= '9';
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// RFC 9110 5.6.2 tchar.
bool IsTokenChar(char c) {
  static constexpr std::string_view kSymbols = "!#$%&'*+-.^_`|~";
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || IsDigit(c) ||
         kSymbols.find(c) != std::string_view::npos;
}

bool IsToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsTokenChar);
}

// field-vchar / SP / HTAB: visible ASCII and obs-text; no CTLs, no DEL.
bool IsFieldValueChar(char ch) {
  auto c = static_cast<unsigned char>(ch);
  return c == '\t' || (c >= 0x20 && c != 0x7f);
}

bool IsOws(char c) {
  return c == ' ' || c == '\t';
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && IsOws(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsOws(s.back())) s.remove_suffix(1);
  return s;
}

// Up to 40 bytes of untrusted input, printable, for error messages.
std::string Quote(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "'";
  for (unsigned char c : bytes.substr(0, 40)) {
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  out += bytes.size() > 40 ? "'..." : "'";
  return out;
}

Status TooLarge(const std::string& what) {
  return InvalidArgument("431: " + what);
}

// Splits `buf` into CRLF-terminated lines of a head. Each call to Next()
// yields one line without its CRLF; bare LF and CR inside a line are errors.
class LineReader {
 public:
  explicit LineReader(std::string_view buf) : buf_(buf) {}
  // Result: the line, nullopt when no complete line is buffered yet.
  Result<std::optional<std::string_view>> Next() {
    size_t lf = buf_.find('\n', pos_);
    std::string_view avail =
        buf_.substr(pos_, lf == std::string_view::npos ? buf_.npos : lf - pos_);
    size_t cr = avail.find('\r');
    if (cr != std::string_view::npos && cr + 1 < avail.size()) {
      return InvalidArgument("bare CR in header line " + Quote(avail));
    }
    if (lf == std::string_view::npos) return std::optional<std::string_view>();
    if (avail.empty() || avail.back() != '\r') {
      return InvalidArgument("line ends in LF without CR: " + Quote(avail));
    }
    pos_ = lf + 1;
    return std::optional<std::string_view>(avail.substr(0, avail.size() - 1));
  }
  size_t pos() const { return pos_; }

 private:
  std::string_view buf_;
  size_t pos_ = 0;
};

Result<int> ParseVersion(std::string_view v) {
  if (v == "HTTP/1.1") return 1;
  if (v == "HTTP/1.0") return 0;
  if (v.size() == 8 && v.substr(0, 5) == "HTTP/" && IsDigit(v[5]) && v[6] == '.' && IsDigit(v[7])) {
    return InvalidArgument("unsupported HTTP version " + Quote(v) + " (want HTTP/1.0 or 1.1)");
  }
  return InvalidArgument("malformed HTTP version " + Quote(v));
}

Status ParseHeaderLine(std::string_view line, HttpHeaders* headers) {
  if (IsOws(line.front())) {
    return InvalidArgument("obsolete line folding (header line starts with whitespace)");
  }
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) {
    return InvalidArgument("header line without ':' " + Quote(line));
  }
  std::string_view name = line.substr(0, colon);
  if (!name.empty() && IsOws(name.back())) {
    return InvalidArgument("whitespace before ':' in header " + Quote(name));
  }
  if (!IsToken(name)) return InvalidArgument("invalid header name " + Quote(name));
  std::string_view value = TrimOws(line.substr(colon + 1));
  for (char c : value) {
    if (!IsFieldValueChar(c)) {
      return InvalidArgument("control character in the value of header " + Quote(name));
    }
  }
  headers->Add(std::string(name), std::string(value));
  return Status::Ok();
}

// The head's header lines after the start line. nullopt: need more bytes.
Result<std::optional<size_t>> ParseHeaderLines(LineReader& lines, std::string_view buf,
                                               HttpHeaders* headers, const HttpLimits& limits) {
  for (;;) {
    HC_ASSIGN_OR_RETURN(std::optional<std::string_view> line, lines.Next());
    if (lines.pos() > limits.max_head_bytes) {
      return TooLarge("head larger than " + std::to_string(limits.max_head_bytes) + " bytes");
    }
    if (!line) {
      if (buf.size() >= limits.max_head_bytes) {
        return TooLarge("head larger than " + std::to_string(limits.max_head_bytes) + " bytes");
      }
      return std::optional<size_t>();
    }
    if (line->empty()) return std::optional<size_t>(lines.pos());
    if (headers->all().size() >= limits.max_headers) {
      return TooLarge("more than " + std::to_string(limits.max_headers) + " header fields");
    }
    HC_RETURN_IF_ERROR(ParseHeaderLine(*line, headers));
  }
}

// Content-Length (all occurrences, comma lists included) must be one value.
Result<std::optional<uint64_t>> ContentLength(const HttpHeaders& headers) {
  std::optional<uint64_t> length;
  for (const auto& [name, value] : headers.all()) {
    if (!EqualsIgnoreCase(name, "content-length")) continue;
    std::string_view rest = value;
    for (;;) {
      size_t comma = rest.find(',');
      std::string_view item = TrimOws(rest.substr(0, comma));
      if (item.empty() || !std::all_of(item.begin(), item.end(), IsDigit)) {
        return InvalidArgument("invalid Content-Length " + Quote(value));
      }
      uint64_t v = 0;
      for (char c : item) {
        auto digit = static_cast<uint64_t>(c - '0');
        if (v > (kMaxContentLength - digit) / 10) {
          return InvalidArgument("Content-Length " + Quote(item) + " too large");
        }
        v = v * 10 + digit;
      }
      if (length && *length != v) return InvalidArgument("conflicting Content-Length values");
      length = v;
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return length;
}

// Transfer-Encoding codings of all header occurrences, in order.
std::vector<std::string_view> TransferCodings(const HttpHeaders& headers) {
  std::vector<std::string_view> codings;
  for (const auto& [name, value] : headers.all()) {
    if (!EqualsIgnoreCase(name, "transfer-encoding")) continue;
    std::string_view rest = value;
    for (;;) {
      size_t comma = rest.find(',');
      codings.push_back(TrimOws(rest.substr(0, comma)));
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return codings;
}

bool HasTransferEncoding(const HttpHeaders& headers) {
  for (const auto& [name, value] : headers.all()) {
    if (EqualsIgnoreCase(name, "transfer-encoding")) return true;
  }
  return false;
}

bool IsChunked(const HttpHeaders& headers) {
  auto codings = TransferCodings(headers);
  return !codings.empty() && EqualsIgnoreCase(codings.back(), "chunked");
}

void AppendHeaders(const HttpHeaders& headers, bool add_length, size_t length, std::string* out) {
  for (const auto& [name, value] : headers.all()) {
    if (add_length && EqualsIgnoreCase(name, "content-length")) continue;
    // Header values can carry caller data; a CR or LF must not split the head.
    for (char c : name) *out += (c == '\r' || c == '\n' || c == ':') ? '_' : c;
    *out += ": ";
    for (char c : value) *out += (c == '\r' || c == '\n' || c == '\0') ? ' ' : c;
    *out += "\r\n";
  }
  if (add_length) *out += "Content-Length: " + std::to_string(length) + "\r\n";
  *out += "\r\n";
}

}  // namespace

void HttpHeaders::Add(std::string name, std::string value) {
  h_.emplace_back(std::move(name), std::move(value));
}

void HttpHeaders::Set(std::string name, std::string value) {
  std::erase_if(h_, [&](const auto& kv) { return EqualsIgnoreCase(kv.first, name); });
  h_.emplace_back(std::move(name), std::move(value));
}

std::optional<std::string_view> HttpHeaders::Get(std::string_view name) const {
  for (const auto& [n, v] : h_) {
    if (EqualsIgnoreCase(n, name)) return std::string_view(v);
  }
  return std::nullopt;
}

bool HttpHeaders::HasToken(std::string_view name, std::string_view token) const {
  for (const auto& [n, v] : h_) {
    if (!EqualsIgnoreCase(n, name)) continue;
    std::string_view rest = v;
    for (;;) {
      size_t comma = rest.find(',');
      if (EqualsIgnoreCase(TrimOws(rest.substr(0, comma)), token)) return true;
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return false;
}

std::string_view HttpRequest::Path() const {
  std::string_view t = target;
  return t.substr(0, t.find('?'));
}

std::string_view HttpRequest::Query() const {
  std::string_view t = target;
  size_t q = t.find('?');
  return q == std::string_view::npos ? std::string_view() : t.substr(q + 1);
}

std::optional<std::string> HttpRequest::QueryParam(std::string_view name) const {
  std::string_view rest = Query();
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view item = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    size_t eq = item.find('=');
    if (PercentDecode(item.substr(0, eq)) != name) continue;
    return eq == std::string_view::npos ? std::string() : PercentDecode(item.substr(eq + 1));
  }
  return std::nullopt;
}

bool HttpRequest::KeepAlive() const {
  if (headers.HasToken("Connection", "close")) return false;
  return version_minor >= 1 || headers.HasToken("Connection", "keep-alive");
}

Result<std::optional<size_t>> ParseRequestHead(std::string_view buf, HttpRequest* out,
                                               const HttpLimits& limits) {
  LineReader lines(buf);
  std::optional<std::string_view> line;
  for (size_t blank = 0;; ++blank) {
    HC_ASSIGN_OR_RETURN(line, lines.Next());
    if (!line) {
      if (buf.size() >= limits.max_head_bytes) {
        return TooLarge("request line longer than " + std::to_string(limits.max_head_bytes) +
                        " bytes");
      }
      return std::optional<size_t>();
    }
    if (!line->empty()) break;
    if (blank >= kMaxLeadingBlankLines) return InvalidArgument("blank lines before the request");
  }

  size_t sp1 = line->find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line->find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line->find(' ', sp2 + 1) != std::string_view::npos) {
    return InvalidArgument("malformed request line " + Quote(*line));
  }
  std::string_view method = line->substr(0, sp1);
  std::string_view target = line->substr(sp1 + 1, sp2 - sp1 - 1);
  if (!IsToken(method)) return InvalidArgument("invalid method " + Quote(method));
  if (target.empty()) return InvalidArgument("empty request target");
  for (char c : target) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || c == '#') {
      return InvalidArgument("invalid character in request target " + Quote(target));
    }
  }
  if (target == "*") {
    if (method != "OPTIONS") return InvalidArgument("request target '*' is only for OPTIONS");
  } else if (target.front() != '/') {
    return InvalidArgument("request target " + Quote(target) + " is not a path (origin form)");
  }
  HC_ASSIGN_OR_RETURN(int minor, ParseVersion(line->substr(sp2 + 1)));

  HttpRequest req;
  req.method = std::string(method);
  req.target = std::string(target);
  req.version_minor = minor;
  HC_ASSIGN_OR_RETURN(std::optional<size_t> end,
                      ParseHeaderLines(lines, buf, &req.headers, limits));
  if (end) *out = std::move(req);
  return end;
}

Result<std::optional<size_t>> ParseResponseHead(std::string_view buf, HttpResponse* out,
                                                const HttpLimits& limits) {
  LineReader lines(buf);
  HC_ASSIGN_OR_RETURN(std::optional<std::string_view> line, lines.Next());
  if (!line) {
    if (buf.size() >= limits.max_head_bytes) {
      return TooLarge("status line longer than " + std::to_string(limits.max_head_bytes) +
                      " bytes");
    }
    return std::optional<size_t>();
  }
  size_t sp1 = line->find(' ');
  if (sp1 == std::string_view::npos)
    return InvalidArgument("malformed status line " + Quote(*line));
  HC_ASSIGN_OR_RETURN(int minor, ParseVersion(line->substr(0, sp1)));
  (void)minor;
  std::string_view rest = line->substr(sp1 + 1);
  // The reason phrase (and the space before it) may be missing.
  if (rest.size() < 3 || !IsDigit(rest[0]) || !IsDigit(rest[1]) || !IsDigit(rest[2]) ||
      rest[0] == '0' || (rest.size() > 3 && rest[3] != ' ')) {
    return InvalidArgument("malformed status line " + Quote(*line));
  }
  std::string_view reason = rest.size() > 3 ? rest.substr(4) : std::string_view();
  for (char c : reason) {
    if (!IsFieldValueChar(c)) return InvalidArgument("control character in the reason phrase");
  }
  HttpResponse resp;
  resp.status = (rest[0] - '0') * 100 + (rest[1] - '0') * 10 + (rest[2] - '0');
  resp.reason = std::string(reason);
  HC_ASSIGN_OR_RETURN(std::optional<size_t> end,
                      ParseHeaderLines(lines, buf, &resp.headers, limits));
  if (end) *out = std::move(resp);
  return end;
}

Result<BodyFraming> RequestFraming(const HttpRequest& req) {
  BodyFraming f;
  if (HasTransferEncoding(req.headers)) {
    if (req.version_minor == 0) {
      return InvalidArgument("Transfer-Encoding in an HTTP/1.0 request");
    }
    auto codings = TransferCodings(req.headers);
    if (!EqualsIgnoreCase(codings.back(), "chunked")) {
      return InvalidArgument("Transfer-Encoding " + Quote(*req.headers.Get("Transfer-Encoding")) +
                             " does not end in chunked");
    }
    codings.pop_back();
    for (std::string_view coding : codings) {
      if (EqualsIgnoreCase(coding, "chunked")) {
        return InvalidArgument("Transfer-Encoding applies chunked more than once");
      }
      if (!IsToken(coding)) return InvalidArgument("malformed Transfer-Encoding");
    }
    if (!codings.empty()) {
      return InvalidArgument("501: unsupported transfer coding " + Quote(codings.front()));
    }
    // Content-Length, if any, is overridden (RFC 9112 6.3); the server closes
    // the connection after such a request.
    f.kind = BodyFraming::kChunked;
    return f;
  }
  HC_ASSIGN_OR_RETURN(std::optional<uint64_t> length, ContentLength(req.headers));
  if (length) {
    f.kind = BodyFraming::kLength;
    f.length = *length;
  }
  return f;
}

Result<BodyFraming> ResponseFraming(const HttpResponse& resp, std::string_view request_method) {
  BodyFraming f;
  if (request_method == "HEAD" || (resp.status >= 100 && resp.status < 200) || resp.status == 204 ||
      resp.status == 304 || (request_method == "CONNECT" && resp.status / 100 == 2)) {
    return f;
  }
  if (HasTransferEncoding(resp.headers)) {
    f.kind = IsChunked(resp.headers) ? BodyFraming::kChunked : BodyFraming::kUntilClose;
    return f;
  }
  HC_ASSIGN_OR_RETURN(std::optional<uint64_t> length, ContentLength(resp.headers));
  if (length) {
    f.kind = BodyFraming::kLength;
    f.length = *length;
  } else {
    f.kind = BodyFraming::kUntilClose;
  }
  return f;
}

// trailer_line_ counts the bytes of the current size or trailer line; at the
// CR of a trailer line, zero means the blank line that ends the body.
Result<size_t> ChunkedDecoder::Feed(std::string_view in, std::string* out) {
  size_t i = 0;
  while (i < in.size() && state_ != kDone) {
    char c = in[i];
    switch (state_) {
      case kSize: {
        int h = HexValue(c);
        if (h >= 0) {
          if (size_digits_ >= kMaxChunkSizeDigits) return InvalidArgument("chunk size too long");
          remaining_ = remaining_ * 16 + static_cast<uint64_t>(h);
          if (remaining_ >= kMaxChunkSize) return InvalidArgument("chunk size too large");
          ++size_digits_;
        } else if (size_digits_ == 0) {
          return InvalidArgument("chunk size expected, got " + Quote(in.substr(i, 1)));
        } else if (c == '\r') {
          state_ = kSizeLf;
        } else if (c == ';' || IsOws(c)) {
          state_ = kExt;
        } else {
          return InvalidArgument("invalid character " + Quote(in.substr(i, 1)) + " in chunk size");
        }
        ++trailer_line_;
        ++i;
        break;
      }
      case kExt:
        if (c == '\r') {
          state_ = kSizeLf;
        } else if (!IsFieldValueChar(c)) {
          return InvalidArgument("control character in chunk extension");
        }
        if (++trailer_line_ > kMaxChunkLineBytes)
          return InvalidArgument("chunk extension too long");
        ++i;
        break;
      case kSizeLf:
        if (c != '\n') return InvalidArgument("CR without LF after chunk size");
        state_ = remaining_ == 0 ? kTrailer : kData;
        size_digits_ = 0;
        trailer_line_ = 0;
        ++i;
        break;
      case kData: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, in.size() - i));
        out->append(in.data() + i, n);
        remaining_ -= n;
        i += n;
        if (remaining_ == 0) state_ = kDataCr;
        break;
      }
      case kDataCr:
        if (c != '\r') return InvalidArgument("chunk data not followed by CRLF");
        state_ = kDataLf;
        ++i;
        break;
      case kDataLf:
        if (c != '\n') return InvalidArgument("chunk data not followed by CRLF");
        state_ = kSize;
        ++i;
        break;
      case kTrailer:
        if (c == '\r') {
          state_ = kTrailerLf;
        } else if (c == '\n' || c == '\0') {
          return InvalidArgument("malformed trailer line");
        } else if (++trailer_line_ > kMaxChunkLineBytes) {
          return InvalidArgument("trailer line too long");
        }
        ++i;
        break;
      case kTrailerLf:
        if (c != '\n') return InvalidArgument("bare CR in trailer");
        state_ = trailer_line_ == 0 ? kDone : kTrailer;
        trailer_line_ = 0;
        ++i;
        break;
      case kDone: break;
    }
  }
  return i;
}

std::string SerializeRequest(const HttpRequest& req) {
  std::string out =
      req.method + " " + req.target + (req.version_minor == 0 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n");
  bool chunked = IsChunked(req.headers);
  // A request without content only gets "Content-Length: 0" when its method
  // normally has a body (RFC 9110 8.6).
  bool bodyless_method = req.method == "GET" || req.method == "HEAD" || req.method == "DELETE" ||
                         req.method == "OPTIONS" || req.method == "TRACE";
  bool add_length = !chunked && (!req.body.empty() || !bodyless_method);
  AppendHeaders(req.headers, add_length, req.body.size(), &out);
  out += req.body;
  return out;
}

std::string SerializeResponse(const HttpResponse& resp) {
  std::string out = "HTTP/1.1 " + std::to_string(resp.status) + " ";
  out += resp.reason.empty() ? StatusReason(resp.status) : resp.reason;
  out += "\r\n";
  bool no_body = (resp.status >= 100 && resp.status < 200) || resp.status == 204;
  bool add_length = !no_body && resp.status != 304 && !IsChunked(resp.headers);
  AppendHeaders(resp.headers, add_length, resp.body.size(), &out);
  if (!no_body) out += resp.body;
  return out;
}

std::string_view StatusReason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && HexValue(s[i + 1]) >= 0 && HexValue(s[i + 2]) >= 0) {
      out += static_cast<char>(HexValue(s[i + 1]) * 16 + HexValue(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string PercentEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace hc::net
