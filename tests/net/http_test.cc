// The HTTP/1.1 message layer: head parsing (good input, each rejection
// class, incremental feeding), body framing, the chunked decoder,
// serialisation, percent coding, and address parsing.
#include "net/http.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "net/socket.h"

namespace hc::net {
namespace {

using Parsed = Result<std::optional<size_t>>;

Parsed ParseReq(std::string_view in, HttpRequest* out = nullptr, const HttpLimits& limits = {}) {
  HttpRequest scratch;
  return ParseRequestHead(in, out ? out : &scratch, limits);
}

// The error message of a parse that must fail ("" if it did not fail).
std::string RequestError(std::string_view in, const HttpLimits& limits = {}) {
  Parsed r = ParseReq(in, nullptr, limits);
  return r.ok() ? std::string() : r.status().message();
}

HttpRequest RequestWith(std::vector<std::pair<std::string, std::string>> headers, int minor = 1) {
  HttpRequest req;
  req.method = "POST";
  req.target = "/";
  req.version_minor = minor;
  for (auto& [n, v] : headers) req.headers.Add(n, v);
  return req;
}

HttpResponse ResponseWith(int status, std::vector<std::pair<std::string, std::string>> headers) {
  HttpResponse resp;
  resp.status = status;
  for (auto& [n, v] : headers) resp.headers.Add(n, v);
  return resp;
}

// Decodes `in` fed in pieces of `step` bytes; returns the data, or the error.
Result<std::string> Dechunk(std::string_view in, size_t step, size_t* consumed = nullptr) {
  ChunkedDecoder d;
  std::string out;
  size_t pos = 0;
  while (pos < in.size() && !d.done()) {
    std::string_view piece = in.substr(pos, step);
    HC_ASSIGN_OR_RETURN(size_t used, d.Feed(piece, &out));
    pos += used;
    if (used < piece.size() && !d.done()) return Internal("decoder stopped early");
  }
  if (consumed) *consumed = pos;
  if (!d.done()) return Unavailable("incomplete");
  return out;
}

// ---------------------------------------------------------------- requests

TEST(ParseRequestHead, ParsesRequestLineHeadersAndQuery) {
  std::string in =
      "GET /v1/apps?name=shop%20a&flag&x=1+2 HTTP/1.1\r\n"
      "Host: api.local:7480\r\n"
      "X-Spaces: \t padded value \t\r\n"
      "Connection: keep-alive, Upgrade\r\n"
      "x-empty:\r\n"
      "\r\n";
  HttpRequest req;
  Parsed r = ParseReq(in, &req);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ(**r, in.size());
  EXPECT_EQ(req.method, "GET");
  EXPECT_EQ(req.target, "/v1/apps?name=shop%20a&flag&x=1+2");
  EXPECT_EQ(req.version_minor, 1);
  EXPECT_EQ(req.Path(), "/v1/apps");
  EXPECT_EQ(req.Query(), "name=shop%20a&flag&x=1+2");
  EXPECT_EQ(req.QueryParam("name"), "shop a");
  EXPECT_EQ(req.QueryParam("flag"), "");
  EXPECT_EQ(req.QueryParam("x"), "1+2");
  EXPECT_EQ(req.QueryParam("missing"), std::nullopt);
  EXPECT_EQ(req.headers.Get("HOST"), "api.local:7480");
  EXPECT_EQ(req.headers.Get("x-spaces"), "padded value");
  EXPECT_EQ(req.headers.Get("X-Empty"), "");
  EXPECT_TRUE(req.headers.HasToken("connection", "upgrade"));
  EXPECT_TRUE(req.KeepAlive());
}

TEST(ParseRequestHead, StopsAtTheEndOfTheHeadLeavingPipelinedBytes) {
  std::string head = "POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\n";
  std::string in = head + "abcGET /b HTTP/1.1\r\n\r\n";
  Parsed r = ParseReq(in);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ(**r, head.size());
}

TEST(ParseRequestHead, NeedsMoreBytesUntilTheBlankLineWhenFedByteByByte) {
  std::string in =
      "PUT /v1/volumes/shop HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n";
  for (size_t n = 0; n < in.size(); ++n) {
    HttpRequest req;
    Parsed r = ParseReq(in.substr(0, n), &req);
    ASSERT_TRUE(r.ok()) << "prefix " << n << ": " << r.status().ToString();
    EXPECT_FALSE(r->has_value()) << "prefix " << n;
    EXPECT_TRUE(req.method.empty()) << "output written before the head was complete";
  }
  HttpRequest req;
  Parsed r = ParseReq(in, &req);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ(**r, in.size());
  EXPECT_EQ(req.method, "PUT");
  EXPECT_EQ(req.headers.Get("content-type"), "application/json");
}

TEST(ParseRequestHead, ReportsErrorsAsSoonAsTheBadLineIsComplete) {
  EXPECT_NE(RequestError("GET / HTTP/1.1\r\nBad Name: x\r\n"), "");
  EXPECT_NE(RequestError("GARBAGE\r\n"), "");
}

TEST(ParseRequestHead, AcceptsHttp10AndOptionsStarAndLeadingBlankLine) {
  HttpRequest req;
  Parsed r = ParseReq("GET / HTTP/1.0\r\n\r\n", &req);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ(req.version_minor, 0);
  EXPECT_FALSE(req.KeepAlive());
  r = ParseReq("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &req);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_TRUE(req.KeepAlive());
  r = ParseReq("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", &req);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_FALSE(req.KeepAlive());

  r = ParseReq("OPTIONS * HTTP/1.1\r\n\r\n", &req);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ(req.target, "*");

  std::string in = "\r\nGET /x HTTP/1.1\r\n\r\n";
  r = ParseReq(in, &req);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ(**r, in.size());
  EXPECT_EQ(req.target, "/x");
}

struct Rejection {
  const char* name;
  std::string input;
};

TEST(ParseRequestHead, RejectsEachClassOfMalformedHead) {
  const std::string nul_value = std::string("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 25);
  const std::vector<Rejection> cases = {
      {"obs-fold", "GET / HTTP/1.1\r\nX: a\r\n  continued\r\n\r\n"},
      {"obs-fold tab", "GET / HTTP/1.1\r\nX: a\r\n\tcontinued\r\n\r\n"},
      {"bare CR in value", "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"},
      {"bare CR in request line", "GET /\r HTTP/1.1\r\n\r\n"},
      {"bare LF", "GET / HTTP/1.1\nX: a\n\n"},
      {"bare LF in headers", "GET / HTTP/1.1\r\nX: a\n\r\n"},
      {"NUL in value", nul_value},
      {"control char in value",
       "GET / HTTP/1.1\r\nX: a\x01"
       "b\r\n\r\n"},
      {"DEL in value", "GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n"},
      {"space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n"},
      {"tab before colon", "GET / HTTP/1.1\r\nHost\t: x\r\n\r\n"},
      {"empty header name", "GET / HTTP/1.1\r\n: x\r\n\r\n"},
      {"no colon", "GET / HTTP/1.1\r\nHost\r\n\r\n"},
      {"invalid char in name", "GET / HTTP/1.1\r\nX(y): 1\r\n\r\n"},
      {"invalid char in method", "G(T / HTTP/1.1\r\n\r\n"},
      {"empty method", " / HTTP/1.1\r\n\r\n"},
      {"two spaces", "GET  / HTTP/1.1\r\n\r\n"},
      {"trailing space", "GET / HTTP/1.1 \r\n\r\n"},
      {"missing version", "GET /\r\n\r\n"},
      {"HTTP/2.0", "GET / HTTP/2.0\r\n\r\n"},
      {"HTTP/1.2", "GET / HTTP/1.2\r\n\r\n"},
      {"lowercase version", "GET / http/1.1\r\n\r\n"},
      {"HTTP/0.9 style", "GET /\r\n"},
      {"absolute form", "GET http://example.com/ HTTP/1.1\r\n\r\n"},
      {"authority form", "CONNECT example.com:443 HTTP/1.1\r\n\r\n"},
      {"star for GET", "GET * HTTP/1.1\r\n\r\n"},
      {"fragment", "GET /a#b HTTP/1.1\r\n\r\n"},
      {"control char in target", "GET /a\x01 HTTP/1.1\r\n\r\n"},
      {"high byte in target", "GET /\xc3\xa4 HTTP/1.1\r\n\r\n"},
      {"many blank lines", "\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n"},
  };
  for (const auto& c : cases) {
    Parsed r = ParseReq(c.input);
    EXPECT_FALSE(r.ok()) << c.name;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << c.name;
      EXPECT_FALSE(r.status().message().starts_with("431:")) << c.name;
    }
  }
}

TEST(ParseRequestHead, OversizedHeadsAreReportedWith431) {
  HttpLimits limits;
  limits.max_head_bytes = 256;
  limits.max_headers = 3;
  // A request line that never ends.
  std::string err = RequestError("GET /" + std::string(300, 'a'), limits);
  EXPECT_TRUE(err.starts_with("431:")) << err;
  // Headers that never end.
  err = RequestError("GET / HTTP/1.1\r\nX: " + std::string(300, 'a'), limits);
  EXPECT_TRUE(err.starts_with("431:")) << err;
  // A complete head that is too large.
  err = RequestError("GET / HTTP/1.1\r\nX: " + std::string(300, 'a') + "\r\n\r\n", limits);
  EXPECT_TRUE(err.starts_with("431:")) << err;
  // Too many fields.
  err = RequestError("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", limits);
  EXPECT_TRUE(err.starts_with("431:")) << err;
  EXPECT_EQ(RequestError("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", limits), "");
  // Exactly at the limit is fine.
  std::string head = "GET / HTTP/1.1\r\nX: ";
  head += std::string(256 - head.size() - 4, 'a') + "\r\n\r\n";
  ASSERT_EQ(head.size(), 256u);
  EXPECT_EQ(RequestError(head, limits), "");
  EXPECT_TRUE(RequestError(head.substr(0, 16) + "Y" + head.substr(16), limits).starts_with("431:"));
}

// --------------------------------------------------------------- responses

TEST(ParseResponseHead, ParsesStatusLineWithAndWithoutReason) {
  HttpResponse resp;
  std::string in = "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc";
  auto r = ParseResponseHead(in, &resp);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ(**r, in.size() - 3);
  EXPECT_EQ(resp.status, 404);
  EXPECT_EQ(resp.reason, "Not Found");
  EXPECT_EQ(resp.headers.Get("content-length"), "3");

  r = ParseResponseHead("HTTP/1.0 200\r\n\r\n", &resp);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ(resp.status, 200);
  EXPECT_EQ(resp.reason, "");

  r = ParseResponseHead("HTTP/1.1 200 OK\r\nX: 1\r\n", &resp);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value());
}

TEST(ParseResponseHead, RejectsMalformedStatusLines) {
  for (std::string in :
       {"HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 099 X\r\n\r\n",
        "HTTP/2 200 OK\r\n\r\n", "ICY 200 OK\r\n\r\n", "HTTP/1.1 200 O\x01K\r\n\r\n",
        "HTTP/1.1 abc OK\r\n\r\n", "HTTP/1.1 200 OK\r\nX : y\r\n\r\n"}) {
    HttpResponse resp;
    EXPECT_FALSE(ParseResponseHead(in, &resp).ok()) << in;
  }
}

// ----------------------------------------------------------------- framing

TEST(RequestFraming, UsesContentLengthChunkedOrNothing) {
  auto f = RequestFraming(RequestWith({}));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->kind, BodyFraming::kNone);

  f = RequestFraming(RequestWith({{"Content-Length", "42"}}));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->kind, BodyFraming::kLength);
  EXPECT_EQ(f->length, 42u);

  f = RequestFraming(RequestWith({{"Content-Length", "7"}, {"content-length", "7"}}));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->length, 7u);
  f = RequestFraming(RequestWith({{"Content-Length", "7, 7"}}));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->length, 7u);

  f = RequestFraming(RequestWith({{"Transfer-Encoding", "Chunked"}}));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->kind, BodyFraming::kChunked);
  // Chunked wins over Content-Length (the server then closes the connection).
  f = RequestFraming(RequestWith({{"Content-Length", "5"}, {"Transfer-Encoding", "chunked"}}));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->kind, BodyFraming::kChunked);
}

TEST(RequestFraming, RejectsInvalidOrConflictingLengths) {
  for (std::string v : {"", "-1", "+5", "5 5", "0x10", "1e3", " ", "5,", "99999999999999999999",
                        "18446744073709551616", "4611686018427387905"}) {
    EXPECT_FALSE(RequestFraming(RequestWith({{"Content-Length", v}})).ok()) << "'" << v << "'";
  }
  EXPECT_FALSE(
      RequestFraming(RequestWith({{"Content-Length", "5"}, {"Content-Length", "6"}})).ok());
  EXPECT_FALSE(RequestFraming(RequestWith({{"Content-Length", "5, 6"}})).ok());
  EXPECT_TRUE(RequestFraming(RequestWith({{"Content-Length", "4611686018427387904"}})).ok());
}

TEST(RequestFraming, TransferCodingsOtherThanFinalChunkedAreErrors) {
  auto f = RequestFraming(RequestWith({{"Transfer-Encoding", "gzip, chunked"}}));
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(f.status().message().starts_with("501:")) << f.status().message();
  f = RequestFraming(
      RequestWith({{"Transfer-Encoding", "gzip"}, {"Transfer-Encoding", "chunked"}}));
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(f.status().message().starts_with("501:"));

  for (auto headers : std::vector<std::vector<std::pair<std::string, std::string>>>{
           {{"Transfer-Encoding", "gzip"}},
           {{"Transfer-Encoding", "chunked, gzip"}},
           {{"Transfer-Encoding", "chunked, chunked"}},
           {{"Transfer-Encoding", "chunked"}, {"Transfer-Encoding", "chunked"}},
           {{"Transfer-Encoding", ""}},
           {{"Transfer-Encoding", "chunked,"}},
           {{"Transfer-Encoding", "xchunked"}},
       }) {
    f = RequestFraming(RequestWith(headers));
    ASSERT_FALSE(f.ok()) << headers[0].second;
    EXPECT_FALSE(f.status().message().starts_with("501:")) << f.status().message();
  }
  // HTTP/1.0 has no transfer codings.
  EXPECT_FALSE(RequestFraming(RequestWith({{"Transfer-Encoding", "chunked"}}, 0)).ok());
}

TEST(ResponseFraming, FollowsStatusMethodAndHeaders) {
  struct Case {
    int status;
    std::string method;
    std::vector<std::pair<std::string, std::string>> headers;
    BodyFraming::Kind kind;
    uint64_t length = 0;
  };
  std::vector<Case> cases = {
      {200, "GET", {{"Content-Length", "10"}}, BodyFraming::kLength, 10},
      {200, "HEAD", {{"Content-Length", "10"}}, BodyFraming::kNone},
      {204, "GET", {}, BodyFraming::kNone},
      {304, "GET", {{"Content-Length", "10"}}, BodyFraming::kNone},
      {100, "POST", {}, BodyFraming::kNone},
      {200, "GET", {{"Transfer-Encoding", "chunked"}}, BodyFraming::kChunked},
      {200, "GET", {{"Transfer-Encoding", "gzip"}}, BodyFraming::kUntilClose},
      {200,
       "GET",
       {{"Transfer-Encoding", "chunked"}, {"Content-Length", "3"}},
       BodyFraming::kChunked},
      {200, "GET", {}, BodyFraming::kUntilClose},
      {500, "POST", {{"Content-Length", "0"}}, BodyFraming::kLength, 0},
  };
  for (const auto& c : cases) {
    auto f = ResponseFraming(ResponseWith(c.status, c.headers), c.method);
    ASSERT_TRUE(f.ok()) << c.status << " " << c.method;
    EXPECT_EQ(f->kind, c.kind) << c.status << " " << c.method;
    EXPECT_EQ(f->length, c.length) << c.status << " " << c.method;
  }
  EXPECT_FALSE(ResponseFraming(ResponseWith(200, {{"Content-Length", "x"}}), "GET").ok());
  EXPECT_FALSE(
      ResponseFraming(ResponseWith(200, {{"Content-Length", "1"}, {"Content-Length", "2"}}), "GET")
          .ok());
}

// ----------------------------------------------------------------- chunked

TEST(ChunkedDecoder, DecodesChunksExtensionsAndTrailers) {
  std::string in =
      "5\r\nhello\r\n"
      "1;name=value;x\r\n \r\n"
      "A \t; ext\r\n0123456789\r\n"
      "0\r\n"
      "Expires: never\r\n"
      "X-Sum: 1\r\n"
      "\r\n";
  auto out = Dechunk(in, in.size());
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, "hello 0123456789");
}

TEST(ChunkedDecoder, GivesTheSameResultForEverySplitOfTheInput) {
  std::string in = "3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n";
  for (size_t cut = 0; cut <= in.size(); ++cut) {
    ChunkedDecoder d;
    std::string out;
    auto a = d.Feed(std::string_view(in).substr(0, cut), &out);
    ASSERT_TRUE(a.ok()) << cut;
    ASSERT_EQ(*a, cut);
    auto b = d.Feed(std::string_view(in).substr(cut), &out);
    ASSERT_TRUE(b.ok()) << cut;
    EXPECT_TRUE(d.done()) << cut;
    EXPECT_EQ(out, "abc0123456789abcdef") << cut;
  }
  auto bytewise = Dechunk(in, 1);
  ASSERT_TRUE(bytewise.ok());
  EXPECT_EQ(*bytewise, "abc0123456789abcdef");
}

TEST(ChunkedDecoder, StopsAfterTheLastChunkLeavingFollowingBytes) {
  std::string body = "2\r\nok\r\n0\r\n\r\n";
  std::string in = body + "GET / HTTP/1.1\r\n\r\n";
  ChunkedDecoder d;
  std::string out;
  auto used = d.Feed(in, &out);
  ASSERT_TRUE(used.ok());
  EXPECT_EQ(*used, body.size());
  EXPECT_TRUE(d.done());
  EXPECT_EQ(out, "ok");
  auto again = d.Feed("more", &out);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 0u);
}

TEST(ChunkedDecoder, RejectsMalformedAndOversizedChunks) {
  const std::vector<Rejection> cases = {
      {"no size", "\r\nabc\r\n0\r\n\r\n"},
      {"not hex", "g\r\n"},
      {"leading space", " 5\r\nhello\r\n"},
      {"sign", "+5\r\nhello\r\n"},
      {"17 digits", "00000000000000001\r\nx\r\n"},
      {"2^62", "4000000000000000\r\n"},
      {"2^64-1", "ffffffffffffffff\r\n"},
      {"LF only after size", "5\nhello\r\n0\r\n\r\n"},
      {"CR without LF after size", "5\rhello\r\n"},
      {"data longer than size", "3\r\nhello\r\n"},
      {"data without CRLF", "3\r\nabcX\r\n"},
      {"LF only after data", "3\r\nabc\n0\r\n\r\n"},
      {"bare CR in trailer", "0\r\nX: a\rb\r\n\r\n"},
      {"bare LF in trailer", "0\r\nX: a\n\r\n"},
      {"control char in extension", "1;a\x01\r\nx\r\n"},
      {"junk after size", "5x\r\nhello\r\n"},
      {"long extension", "1;" + std::string(5000, 'a') + "\r\nx\r\n0\r\n\r\n"},
      {"long trailer", "0\r\nX: " + std::string(5000, 'a') + "\r\n\r\n"},
  };
  for (const auto& c : cases) {
    for (size_t step : {c.input.size(), size_t{1}}) {
      auto out = Dechunk(c.input, step);
      ASSERT_FALSE(out.ok()) << c.name;
      EXPECT_EQ(out.status().code(), Code::kInvalidArgument)
          << c.name << " " << out.status().ToString();
    }
  }
  // The largest accepted size parses (the data then simply has to follow).
  ChunkedDecoder d;
  std::string out;
  EXPECT_TRUE(d.Feed("3fffffffffffffff\r\nabc", &out).ok());
  EXPECT_EQ(out, "abc");
}

// ------------------------------------------------------------ serialising

TEST(Serialize, RequestGetsContentLengthOnlyWhereItBelongs) {
  HttpRequest get;
  get.method = "GET";
  get.target = "/v1/apps";
  get.headers.Add("Host", "h");
  EXPECT_EQ(SerializeRequest(get), "GET /v1/apps HTTP/1.1\r\nHost: h\r\n\r\n");

  HttpRequest post;
  post.method = "POST";
  post.target = "/x";
  post.headers.Add("Content-Length", "999");  // replaced by the real length
  post.body = "{}";
  EXPECT_EQ(SerializeRequest(post), "POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
  post.body.clear();
  EXPECT_EQ(SerializeRequest(post), "POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n");

  HttpRequest chunked;
  chunked.method = "PUT";
  chunked.target = "/c";
  chunked.headers.Add("Transfer-Encoding", "chunked");
  chunked.body = "2\r\nok\r\n0\r\n\r\n";
  EXPECT_EQ(SerializeRequest(chunked),
            "PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
}

TEST(Serialize, ResponseFillsReasonAndLengthAndRoundTrips) {
  HttpResponse resp;
  resp.status = 404;
  resp.headers.Add("Content-Type", "text/plain");
  resp.body = "no such app\n";
  std::string wire = SerializeResponse(resp);
  EXPECT_EQ(wire,
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n"
            "no such app\n");
  HttpResponse back;
  auto r = ParseResponseHead(wire, &back);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ(back.status, 404);
  EXPECT_EQ(wire.substr(**r), resp.body);

  HttpResponse empty;
  empty.status = 204;
  empty.body = "ignored";
  EXPECT_EQ(SerializeResponse(empty), "HTTP/1.1 204 No Content\r\n\r\n");
  EXPECT_EQ(StatusReason(431), "Request Header Fields Too Large");
}

TEST(Serialize, HeaderValuesCannotInjectLines) {
  HttpResponse resp;
  resp.headers.Add("Location", "/a\r\nSet-Cookie: evil=1");
  std::string wire = SerializeResponse(resp);
  HttpResponse back;
  auto r = ParseResponseHead(wire, &back);
  ASSERT_TRUE(r.ok() && r->has_value()) << wire;
  EXPECT_FALSE(back.headers.Has("Set-Cookie"));
}

TEST(Headers, LookupIsCaseInsensitiveAndSetReplacesAll) {
  HttpHeaders h;
  h.Add("Connection", "keep-alive");
  h.Add("connection", "Upgrade , close");
  EXPECT_EQ(h.Get("CONNECTION"), "keep-alive");
  EXPECT_TRUE(h.HasToken("Connection", "CLOSE"));
  EXPECT_TRUE(h.HasToken("Connection", "upgrade"));
  EXPECT_FALSE(h.HasToken("Connection", "clos"));
  h.Set("CONNECTION", "close");
  ASSERT_EQ(h.all().size(), 1u);
  EXPECT_EQ(h.all()[0].first, "CONNECTION");
  EXPECT_FALSE(h.Has("Host"));
}

TEST(PercentCoding, DecodesValidEscapesAndKeepsTheRest) {
  EXPECT_EQ(PercentDecode("a%20b%2Fc%2f"), "a b/c/");
  EXPECT_EQ(PercentDecode("1+2"), "1+2");
  EXPECT_EQ(PercentDecode("%zz%4%"), "%zz%4%");
  EXPECT_EQ(PercentDecode("%00"), std::string(1, '\0'));
  EXPECT_EQ(PercentEncode("a b/\xc3\xbc~-._"), "a%20b%2F%C3%BC~-._");
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  EXPECT_EQ(PercentDecode(PercentEncode(all)), all);
}

// ---------------------------------------------------------------- address

TEST(ParseHostPort, AcceptsHostPortBracketedV6AndDefaults) {
  auto hp = ParseHostPort("127.0.0.1:7480");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "127.0.0.1");
  EXPECT_EQ(hp->port, 7480);
  EXPECT_EQ(hp->ToString(), "127.0.0.1:7480");

  hp = ParseHostPort("[::1]:7480");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "::1");
  EXPECT_EQ(hp->ToString(), "[::1]:7480");

  hp = ParseHostPort("[fe80::1]", 2379);
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->port, 2379);
  hp = ParseHostPort("::1", 80);
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "::1");
  hp = ParseHostPort("etcd-1.cluster.local", 2379);
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "etcd-1.cluster.local");
  EXPECT_EQ(hp->port, 2379);
  hp = ParseHostPort("localhost:0");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->port, 0);
  hp = ParseHostPort("h:65535");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->port, 65535);
}

TEST(ParseHostPort, RejectsMalformedAddressesWithAReason) {
  auto hp = ParseHostPort("h:99999");
  ASSERT_FALSE(hp.ok());
  EXPECT_NE(hp.status().message().find("port 99999 out of range"), std::string::npos)
      << hp.status().message();
  for (std::string s : {"", "host", "h:", ":80", "h:abc", "h:-1", "h:65536", "[::1", "[::1]x",
                        "[foo]:1", "1:2:3:80", "a b:80", "h:1:2", "[::1]:", "h/x:80"}) {
    EXPECT_FALSE(ParseHostPort(s).ok()) << "'" << s << "'";
  }
  // inet_pton would stop at the NUL and accept "1::".
  EXPECT_FALSE(ParseHostPort(std::string("1::\0x", 5), 80).ok());
  EXPECT_FALSE(ParseHostPort(std::string("[1::\0x]:80", 10)).ok());
  EXPECT_FALSE(ParseHostPort(std::string("h\0:80", 5)).ok());
}

TEST(ParseHttpUrl, TakesHostAndPortAndIgnoresThePath) {
  auto hp = ParseHttpUrl("http://10.0.0.1:2379/v3/kv/range");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->ToString(), "10.0.0.1:2379");
  hp = ParseHttpUrl("HTTP://example.com");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->ToString(), "example.com:80");
  hp = ParseHttpUrl("http://[::1]:8080?x");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->ToString(), "[::1]:8080");
  hp = ParseHttpUrl("127.0.0.1:7480");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->port, 7480);
  EXPECT_FALSE(ParseHttpUrl("https://example.com").ok());
  EXPECT_FALSE(ParseHttpUrl("http://user@example.com").ok());
  EXPECT_FALSE(ParseHttpUrl("http://").ok());
}

}  // namespace
}  // namespace hc::net
