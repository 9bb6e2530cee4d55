// The proxy's head parser and chunk scanner (src/proxy/http_head.h): what is
// accepted, and every framing ambiguity a smuggling attack relies on; plus a
// golden file of head -> parse (tests/proxy/golden/heads.txt). Set
// HC_UPDATE_GOLDEN=1 to rewrite it after a deliberate change.
#include "proxy/http_head.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "golden.h"

namespace hc::proxy {
namespace {

ParseResult Req(std::string_view s, HttpHead* h, HeadLimits limits = {}) {
  return ParseRequestHead(s, limits, h);
}

int ReqError(std::string_view s) {
  HttpHead h;
  ParseResult r = Req(s, &h);
  return r == ParseResult::kError ? h.error_status : (r == ParseResult::kComplete ? 0 : -1);
}

TEST(HttpHead, ParsesSimpleRequestIntoViewsOfTheBuffer) {
  std::string s = "GET /a?b=c HTTP/1.1\r\nHost: Shop.Example:8080\r\nX-Y:  z z \r\n\r\nBODY";
  HttpHead h;
  ASSERT_EQ(Req(s, &h), ParseResult::kComplete) << h.error;
  EXPECT_EQ(h.method, "GET");
  EXPECT_EQ(h.target, "/a?b=c");
  EXPECT_EQ(h.version_minor, 1);
  EXPECT_EQ(h.num_headers, 2u);
  EXPECT_EQ(h.host, "Shop.Example:8080");
  EXPECT_EQ(h.headers[1].name, "X-Y");
  EXPECT_EQ(h.headers[1].value, "z z");
  EXPECT_EQ(h.head_size, s.size() - 4);
  EXPECT_EQ(h.framing, Framing::kNone);
  EXPECT_TRUE(h.KeepAlive());
  EXPECT_GE(h.method.data(), s.data());
  EXPECT_LT(h.method.data(), s.data() + s.size());
}

TEST(HttpHead, EveryPrefixIsIncomplete) {
  std::string s = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n";
  for (size_t i = 0; i < s.size(); ++i) {
    HttpHead h;
    EXPECT_EQ(Req(s.substr(0, i), &h), ParseResult::kIncomplete) << i;
  }
  HttpHead h;
  ASSERT_EQ(Req(s, &h), ParseResult::kComplete);
  EXPECT_EQ(h.framing, Framing::kLength);
  EXPECT_EQ(h.content_length, 3u);
}

TEST(HttpHead, SkipsLeadingEmptyLines) {
  HttpHead h;
  ASSERT_EQ(Req("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", &h), ParseResult::kComplete);
  EXPECT_EQ(h.head_size, 4u + 27u);
}

TEST(HttpHead, AbsoluteFormTargetGivesTheHost) {
  HttpHead h;
  ASSERT_EQ(Req("GET HTTP://Blog.test:8080/x?y HTTP/1.1\r\nHost: shop.test\r\n\r\n", &h),
            ParseResult::kComplete);
  EXPECT_EQ(h.host, "Blog.test:8080");
  EXPECT_EQ(h.target, "HTTP://Blog.test:8080/x?y");
  EXPECT_EQ(ReqError("GET http://user@evil.test/ HTTP/1.1\r\nHost: shop.test\r\n\r\n"), 400);
  EXPECT_EQ(ReqError("GET http:///x HTTP/1.1\r\nHost: shop.test\r\n\r\n"), 400);
}

TEST(HttpHead, RejectsMalformedRequests) {
  EXPECT_EQ(ReqError("GET / HTTP/1.1\r\nHost: a\r\n Folded: x\r\n\r\n"), 400);
  EXPECT_EQ(ReqError("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), 400);
  EXPECT_EQ(ReqError(std::string_view("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 35)), 400);
  EXPECT_EQ(ReqError("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"), 400);
  EXPECT_EQ(ReqError("GET / HTTP/1.1\nHost: a\r\n\r\n"), 400);
  EXPECT_EQ(ReqError("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
  EXPECT_EQ(ReqError("G@T / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
  EXPECT_EQ(ReqError("GET / HTTP/1.1\r\n\r\n"), 400);  // no Host
  EXPECT_EQ(ReqError("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
  EXPECT_EQ(ReqError("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
  EXPECT_EQ(ReqError("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
  EXPECT_EQ(ReqError("GET / HTTX/1.1\r\nHost: a\r\n\r\n"), 400);
  EXPECT_EQ(ReqError("\x16\x03\x01\x02\x00"), 400);  // TLS hello: rejected at once
  EXPECT_EQ(ReqError("GET / HTTP/1.0\r\n\r\n"), 0);  // HTTP/1.0 needs no Host
}

TEST(HttpHead, FramingGuardsAgainstSmuggling) {
  EXPECT_EQ(ReqError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n"),
            400);
  EXPECT_EQ(
      ReqError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
      400);
  EXPECT_EQ(ReqError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n"), 400);
  EXPECT_EQ(ReqError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n"), 400);
  EXPECT_EQ(ReqError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n"), 400);
  EXPECT_EQ(ReqError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            400);
  EXPECT_EQ(ReqError("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"), 501);
  EXPECT_EQ(ReqError("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            501);
  EXPECT_EQ(ReqError("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n"),
            400);
  EXPECT_EQ(ReqError("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
  EXPECT_EQ(ReqError("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n"), 400);

  HttpHead h;
  ASSERT_EQ(
      Req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n", &h),
      ParseResult::kComplete);
  EXPECT_EQ(h.framing, Framing::kLength);
  EXPECT_EQ(h.content_length, 7u);
  ASSERT_EQ(Req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n", &h),
            ParseResult::kComplete);
  EXPECT_EQ(h.framing, Framing::kChunked);
}

TEST(HttpHead, LimitsGive431) {
  std::string big = "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(20000, 'x') + "\r\n\r\n";
  EXPECT_EQ(ReqError(big), 431);
  // Also before the end of the head has arrived.
  EXPECT_EQ(ReqError(big.substr(0, 16384)), 431);
  std::string many = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 101; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
  EXPECT_EQ(ReqError(many + "\r\n"), 431);
  HttpHead h;
  HeadLimits small;
  small.max_head = 40;
  EXPECT_EQ(Req("GET / HTTP/1.1\r\nHost: a\r\nX-Long: 0123456789\r\n\r\n", &h, small),
            ParseResult::kError);
  EXPECT_EQ(h.error_status, 431);
}

TEST(HttpHead, ConnectionTokensExpectAndUpgrade) {
  HttpHead h;
  ASSERT_EQ(Req("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
                "Upgrade: websocket\r\nExpect: 100-Continue\r\nX-Drop: 1\r\n"
                "Connection: X-Drop\r\n\r\n",
                &h),
            ParseResult::kComplete);
  EXPECT_TRUE(h.conn_upgrade);
  EXPECT_TRUE(h.conn_keep_alive);
  EXPECT_FALSE(h.conn_close);
  EXPECT_TRUE(h.expect_continue);
  EXPECT_EQ(h.upgrade, "websocket");
  EXPECT_TRUE(h.ConnectionListed("x-drop"));
  EXPECT_FALSE(h.ConnectionListed("host"));
  ASSERT_EQ(Req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &h),
            ParseResult::kComplete);
  EXPECT_FALSE(h.KeepAlive());
  ASSERT_EQ(Req("GET / HTTP/1.0\r\n\r\n", &h), ParseResult::kComplete);
  EXPECT_FALSE(h.KeepAlive());
  ASSERT_EQ(Req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &h), ParseResult::kComplete);
  EXPECT_TRUE(h.KeepAlive());
}

TEST(HttpHead, ResponseFraming) {
  HttpHead h;
  auto resp = [&](std::string_view s, std::string_view method = "GET") {
    return ParseResponseHead(s, method, HeadLimits{}, &h);
  };
  ASSERT_EQ(resp("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"), ParseResult::kComplete);
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.reason, "OK");
  EXPECT_EQ(h.framing, Framing::kLength);
  ASSERT_EQ(resp("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", "HEAD"), ParseResult::kComplete);
  EXPECT_EQ(h.framing, Framing::kNone);
  for (const char* s : {"HTTP/1.1 204 No Content\r\n\r\n", "HTTP/1.1 304 Not Modified\r\n\r\n",
                        "HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 101 Switching\r\n\r\n"}) {
    ASSERT_EQ(resp(s), ParseResult::kComplete) << s;
    EXPECT_EQ(h.framing, Framing::kNone) << s;
  }
  ASSERT_EQ(resp("HTTP/1.1 200 OK\r\n\r\n"), ParseResult::kComplete);
  EXPECT_EQ(h.framing, Framing::kUntilClose);
  ASSERT_EQ(resp("HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\n\r\n"), ParseResult::kComplete);
  EXPECT_EQ(h.framing, Framing::kChunked);
  ASSERT_EQ(resp("HTTP/1.0 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), ParseResult::kComplete);
  EXPECT_EQ(h.framing, Framing::kUntilClose);
  EXPECT_EQ(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            ParseResult::kError);
  EXPECT_EQ(resp("HTTP/1.1 20 OK\r\n\r\n"), ParseResult::kError);
  EXPECT_EQ(resp("SSH-2.0-OpenSSH"), ParseResult::kError);
}

// Feeds `body` to a scanner in pieces of `step` bytes.
struct ScanOutcome {
  size_t used = 0;
  bool done = false;
  bool failed = false;
};
ScanOutcome ScanAll(std::string_view body, size_t step) {
  ChunkScanner s;
  ScanOutcome o;
  while (o.used < body.size() && !s.done() && !s.failed()) {
    std::string_view piece = body.substr(o.used, step);
    size_t n = s.Scan(piece);
    EXPECT_LE(n, piece.size());
    o.used += n;
    if (n < piece.size() && !s.done()) break;
  }
  o.done = s.done();
  o.failed = s.failed();
  return o;
}

TEST(ChunkScanner, FindsTheEndOfTheBodyHoweverSplit) {
  std::string body =
      "5;ext=1\r\nhello\r\n1A\r\n" + std::string(26, 'z') + "\r\n0\r\nTrailer: x\r\n\r\n";
  for (size_t step : {1, 2, 3, 7, 64, 4096}) {
    ScanOutcome o = ScanAll(body + "GET / HTTP/1.1\r\n", step);
    EXPECT_TRUE(o.done) << step;
    EXPECT_EQ(o.used, body.size()) << step;
  }
}

TEST(ChunkScanner, RejectsBrokenFraming) {
  for (const char* bad :
       {"x\r\n", "5\r\nhelloXX", "5\nhello\r\n", "\r\n", "0\r\n\n", "00000000000000001\r\n",
        "5\r\nhello\r\n0\r\nBad\x01\r\n\r\n", "4000000000000000\r\n"}) {
    ScanOutcome o = ScanAll(bad, 1);
    EXPECT_TRUE(o.failed) << bad;
    EXPECT_FALSE(o.done) << bad;
  }
}

TEST(ChunkScanner, LargeChunkIsSkippedWithoutLookingAtIt) {
  ChunkScanner s;
  std::string head = "100000\r\n";
  EXPECT_EQ(s.Scan(head), head.size());
  std::string data(1 << 20, '\n');
  EXPECT_EQ(s.Scan(data), data.size());
  EXPECT_EQ(s.Scan("\r\n0\r\n\r\nextra"), 7u);
  EXPECT_TRUE(s.done());
}

const char* FramingName(Framing f) {
  switch (f) {
    case Framing::kNone: return "none";
    case Framing::kLength: return "length";
    case Framing::kChunked: return "chunked";
    case Framing::kUntilClose: return "until-close";
  }
  return "?";
}

std::string Escape(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c >= 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string Render(bool response, std::string_view in) {
  HttpHead h;
  ParseResult r = response ? ParseResponseHead(in, "GET", HeadLimits{}, &h)
                           : ParseRequestHead(in, HeadLimits{}, &h);
  std::ostringstream o;
  if (r == ParseResult::kIncomplete) return "incomplete\n";
  if (r == ParseResult::kError) {
    o << "error " << h.error_status << ": " << h.error << "\n";
    return o.str();
  }
  if (response) {
    o << "status " << h.status << " '" << h.reason << "'";
  } else {
    o << "method " << h.method << " target " << h.target << " host '" << h.host << "'";
  }
  o << " HTTP/1." << h.version_minor << " head " << h.head_size << "\n";
  o << "framing " << FramingName(h.framing);
  if (h.framing == Framing::kLength) o << " " << h.content_length;
  o << " keep-alive " << h.KeepAlive() << " upgrade " << h.conn_upgrade << " '" << h.upgrade
    << "' expect-100 " << h.expect_continue << "\n";
  for (size_t i = 0; i < h.num_headers; ++i) {
    o << "  " << h.headers[i].name << ": " << Escape(h.headers[i].value) << "\n";
  }
  return o.str();
}

TEST(HttpHead, Golden) {
  struct Case {
    const char* title;
    bool response;
    std::string bytes;
  };
  const Case cases[] = {
      {"simple GET", false, "GET /index.html HTTP/1.1\r\nHost: shop.test\r\nAccept: */*\r\n\r\n"},
      {"HTTP/1.0 keep-alive", false, "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"},
      {"POST with length", false,
       "POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\nExpect: 100-continue\r\n\r\n"},
      {"chunked upload", false,
       "PUT /f HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"},
      {"websocket", false,
       "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
      {"obs-text and tabs in a value", false,
       "GET / HTTP/1.1\r\nHost: a\r\nX-Name: \tcaf\xc3\xa9 \t\r\n\r\n"},
      {"absolute form", false, "GET http://b.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n"},
      {"CL and TE", false,
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"},
      {"TE with a space before the colon", false,
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n"},
      {"obs-fold", false, "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n  2\r\n\r\n"},
      {"bare LF", false, "GET / HTTP/1.1\nHost: a\n\n"},
      {"partial", false, "GET / HTTP/1.1\r\nHost: a\r\n"},
      {"response with length", true, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"},
      {"response chunked", true,
       "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"},
      {"response until close", true, "HTTP/1.0 200 OK\r\nServer: x\r\n\r\n"},
      {"100 Continue", true, "HTTP/1.1 100 Continue\r\n\r\n"},
      {"101 Switching", true,
       "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
      {"response without reason", true, "HTTP/1.1 204\r\n\r\n"},
      {"response CL and TE", true,
       "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"},
  };
  std::string got;
  for (const Case& c : cases) {
    got += std::string("### ") + c.title + "\n" + Render(c.response, c.bytes) + "\n";
  }
  ::hc::testing::ExpectGolden("tests/proxy/golden/heads.txt", got);
}

}  // namespace
}  // namespace hc::proxy
