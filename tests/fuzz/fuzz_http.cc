// HTTP/1.1 message parsing (src/net/http.h), the first thing untrusted
// clients and servers reach. Input: one control byte (limits, split points),
// then the bytes of a message. Must never crash, and:
//  - a complete head is never reported complete for a shorter prefix, and
//    re-parsing exactly the head gives the same result;
//  - a parsed request serialises to a head that parses back the same;
//  - the chunked decoder gives the same data and verdict however its input
//    is split.
#include <stddef.h>
#include <stdint.h>

#include <cctype>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "net/http.h"
#include "net/socket.h"

namespace {

using hc::net::BodyFraming;
using hc::net::ChunkedDecoder;
using hc::net::HttpLimits;

struct Decoded {
  bool ok = true;
  bool done = false;
  size_t consumed = 0;
  std::string data;
};

// Feeds `in` in pieces of at most `step` bytes, as a reader would.
Decoded Dechunk(std::string_view in, size_t step) {
  ChunkedDecoder d;
  Decoded r;
  while (r.consumed < in.size() && !d.done()) {
    std::string_view piece = in.substr(r.consumed, step);
    auto used = d.Feed(piece, &r.data);
    if (!used.ok()) {
      r.ok = false;
      return r;
    }
    HC_CHECK(*used <= piece.size(), "Feed consumed more than it was given");
    HC_CHECK(*used == piece.size() || d.done(), "Feed stopped early before the end");
    r.consumed += *used;
  }
  r.done = d.done();
  return r;
}

void CheckChunked(std::string_view body, uint8_t ctl) {
  Decoded whole = Dechunk(body, body.size() + 1);
  size_t split = 1 + ctl % 7;
  for (size_t step : {split, size_t{1}}) {
    if (step == 1 && body.size() > 4096) continue;
    Decoded pieces = Dechunk(body, step);
    HC_CHECK(pieces.ok == whole.ok, "split feeding changed the verdict");
    HC_CHECK(pieces.data == whole.data, "split feeding changed the data");
    if (whole.ok) {
      HC_CHECK(pieces.done == whole.done, "split feeding changed completion");
      HC_CHECK(pieces.consumed == whole.consumed, "split feeding changed the consumed count");
    }
  }
}

bool SameHeadersExceptLength(const hc::net::HttpHeaders& a, const hc::net::HttpHeaders& b) {
  auto strip = [](const hc::net::HttpHeaders& h) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& kv : h.all()) {
      std::string lower;
      for (char c : kv.first)
        lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (lower != "content-length") out.push_back(kv);
    }
    return out;
  };
  return strip(a) == strip(b);
}

void CheckRequest(std::string_view in, uint8_t ctl, const HttpLimits& limits) {
  hc::net::HttpRequest req;
  auto r = hc::net::ParseRequestHead(in, &req, limits);
  if (!r.ok() || !*r) return;
  size_t n = **r;
  HC_CHECK(n <= in.size() && n <= limits.max_head_bytes, "head length out of range");

  hc::net::HttpRequest again;
  auto exact = hc::net::ParseRequestHead(in.substr(0, n), &again, limits);
  HC_CHECK(exact.ok() && *exact && **exact == n, "the head alone parses the same");
  for (size_t prefix : {n - 1, n / 2, static_cast<size_t>(ctl) % n}) {
    hc::net::HttpRequest partial;
    auto p = hc::net::ParseRequestHead(in.substr(0, prefix), &partial, limits);
    HC_CHECK(p.ok() && !*p, "a prefix of a valid head is incomplete, not complete or bad");
  }

  (void)req.Path();
  (void)req.QueryParam("a");
  (void)req.KeepAlive();
  HttpLimits roomy;
  roomy.max_head_bytes = limits.max_head_bytes + 4096;
  roomy.max_headers = limits.max_headers + 1;  // Content-Length may be added
  std::string wire = hc::net::SerializeRequest(req);
  hc::net::HttpRequest back;
  auto b = hc::net::ParseRequestHead(wire, &back, roomy);
  HC_CHECK(b.ok() && *b, "a serialised request parses: " + b.status().ToString());
  HC_CHECK(back.method == req.method && back.target == req.target &&
               back.version_minor == req.version_minor,
           "request line round-trips");
  HC_CHECK(SameHeadersExceptLength(back.headers, req.headers), "headers round-trip");

  auto framing = hc::net::RequestFraming(req);
  if (!framing.ok()) return;
  HC_CHECK(framing->length <= (uint64_t{1} << 62), "Content-Length bound");
  if (framing->kind == BodyFraming::kChunked) CheckChunked(in.substr(n), ctl);
}

void CheckResponse(std::string_view in, uint8_t ctl, const HttpLimits& limits) {
  hc::net::HttpResponse resp;
  auto r = hc::net::ParseResponseHead(in, &resp, limits);
  if (!r.ok() || !*r) return;
  size_t n = **r;
  HC_CHECK(n <= in.size() && n <= limits.max_head_bytes, "head length out of range");
  HC_CHECK(resp.status >= 100 && resp.status <= 999, "status range");
  hc::net::HttpResponse partial;
  auto p = hc::net::ParseResponseHead(in.substr(0, n - 1), &partial, limits);
  HC_CHECK(p.ok() && !*p, "a prefix of a valid head is incomplete");
  for (std::string_view method : {"GET", "HEAD"}) {
    auto framing = hc::net::ResponseFraming(resp, method);
    if (framing.ok() && framing->kind == BodyFraming::kChunked) CheckChunked(in.substr(n), ctl);
  }
  (void)hc::net::SerializeResponse(resp);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  uint8_t ctl = data[0];
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  HttpLimits limits;
  if (ctl & 0x80) {  // small limits reach the 431 paths with short inputs
    limits.max_head_bytes = 64 + (ctl & 0x3f) * 8;
    limits.max_headers = ctl & 0x07;
  }
  CheckRequest(in, ctl, limits);
  CheckResponse(in, ctl, limits);
  CheckChunked(in, ctl);

  std::string decoded = hc::net::PercentDecode(in);
  HC_CHECK(decoded.size() <= in.size(), "decoding never grows");
  HC_CHECK(hc::net::PercentDecode(hc::net::PercentEncode(in)) == in, "percent round-trip");

  auto hp = hc::net::ParseHostPort(in.substr(0, 300), 80);
  if (hp.ok()) {
    auto again = hc::net::ParseHostPort(hp->ToString());
    HC_CHECK(again.ok() && again->host == hp->host && again->port == hp->port,
             "host:port round-trips");
  }
  (void)hc::net::ParseHttpUrl(in.substr(0, 300));
  return 0;
}
