// The proxy's zero-copy HTTP head parser and chunk scanner
// (src/proxy/http_head.h): the first code untrusted clients and backends
// reach. Input: one control byte (request/response, limits, split step),
// then the message bytes. Must never read out of bounds (ASan: the input is
// copied into a buffer of exactly its size), and:
//  - a complete head re-parses identically from a copy of exactly its bytes,
//    and every view points into the buffer it was parsed from;
//  - a shorter prefix of a complete head is never complete;
//  - the chunk scanner never claims more bytes than it was given, and gives
//    the same verdict however its input is split.
#include <stddef.h>
#include <stdint.h>

#include <cstring>
#include <memory>
#include <string_view>

#include "common/status.h"
#include "proxy/http_head.h"

namespace {

using hc::proxy::ChunkScanner;
using hc::proxy::HeadLimits;
using hc::proxy::HttpHead;
using hc::proxy::ParseResult;

bool Inside(std::string_view v, std::string_view buf) {
  return v.empty() || (v.data() >= buf.data() && v.data() + v.size() <= buf.data() + buf.size());
}

ParseResult Parse(bool response, std::string_view buf, const HeadLimits& limits, HttpHead* h) {
  return response ? hc::proxy::ParseResponseHead(buf, "GET", limits, h)
                  : hc::proxy::ParseRequestHead(buf, limits, h);
}

size_t ScanSplit(std::string_view in, size_t step, bool* done, bool* failed) {
  ChunkScanner s;
  size_t used = 0;
  while (used < in.size() && !s.done() && !s.failed()) {
    std::string_view piece = in.substr(used, step);
    size_t n = s.Scan(piece);
    HC_CHECK(n <= piece.size(), "ChunkScanner claimed more bytes than it was given");
    used += n;
    if (n < piece.size() && !s.done() && !s.failed()) {
      HC_CHECK(false, "ChunkScanner stopped early without a verdict");
    }
  }
  *done = s.done();
  *failed = s.failed();
  return used;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t ctl = data[0];
  const size_t n = size - 1;
  auto buf = std::make_unique<char[]>(n == 0 ? 1 : n);
  std::memcpy(buf.get(), data + 1, n);
  std::string_view in(buf.get(), n);

  const bool response = (ctl & 1) != 0;
  HeadLimits limits;
  if ((ctl & 2) != 0) limits.max_head = 64 + (ctl >> 2);
  if ((ctl & 4) != 0) limits.max_headers = ctl >> 4;

  auto head = std::make_unique<HttpHead>();
  ParseResult r = Parse(response, in, limits, head.get());
  if (r == ParseResult::kComplete) {
    HC_CHECK(head->head_size <= n && head->head_size <= limits.max_head, "head_size out of range");
    HC_CHECK(Inside(head->method, in) && Inside(head->target, in) && Inside(head->host, in),
             "view outside the buffer");
    for (size_t i = 0; i < head->num_headers; ++i) {
      HC_CHECK(Inside(head->headers[i].name, in) && Inside(head->headers[i].value, in),
               "header view outside the buffer");
    }
    auto copy = std::make_unique<char[]>(head->head_size);
    std::memcpy(copy.get(), buf.get(), head->head_size);
    std::string_view cin(copy.get(), head->head_size);
    auto again = std::make_unique<HttpHead>();
    HC_CHECK(Parse(response, cin, limits, again.get()) == ParseResult::kComplete,
             "head does not re-parse from a copy");
    HC_CHECK(again->head_size == head->head_size && again->num_headers == head->num_headers &&
                 again->framing == head->framing && again->content_length == head->content_length &&
                 again->status == head->status && again->method == head->method &&
                 again->target == head->target && again->host == head->host &&
                 again->KeepAlive() == head->KeepAlive(),
             "re-parse differs");
    for (size_t i = 0; i < head->num_headers; ++i) {
      HC_CHECK(again->headers[i].name == head->headers[i].name &&
                   again->headers[i].value == head->headers[i].value,
               "re-parsed header differs");
    }
    if (head->head_size > 0) {
      auto shorter = std::make_unique<HttpHead>();
      HC_CHECK(Parse(response, cin.substr(0, head->head_size - 1), limits, shorter.get()) !=
                   ParseResult::kComplete,
               "a prefix of a head is complete");
    }
  } else if (r == ParseResult::kError) {
    HC_CHECK(head->error_status >= 400 && head->error_status < 600, "error without a status");
  }

  bool done1 = false, failed1 = false, done2 = false, failed2 = false;
  size_t used1 = ScanSplit(in, n == 0 ? 1 : n, &done1, &failed1);
  size_t used2 = ScanSplit(in, 1 + (ctl >> 3), &done2, &failed2);
  HC_CHECK(used1 <= n && used1 == used2 && done1 == done2 && failed1 == failed2,
           "chunk scanner verdict depends on how its input is split");
  return 0;
}
