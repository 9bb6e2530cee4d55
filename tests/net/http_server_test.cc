// HttpServer and HttpClient over real sockets on 127.0.0.1 (port 0): the
// server against raw sockets, HttpClient and curl; the client against a
// scripted peer that misbehaves on purpose.
#include "net/http_server.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "net/http.h"
#include "net/http_client.h"
#include "net/socket.h"

namespace hc::net {
namespace {

using namespace std::chrono_literals;

HostPort Local(uint16_t port) {
  return HostPort{"127.0.0.1", port};
}

// Echoes method, target and body; /throw throws, /slow waits for a release.
HttpResponse Echo(const HttpRequest& req) {
  if (req.Path() == "/throw") throw std::runtime_error("handler bug");
  HttpResponse resp;
  resp.headers.Add("Content-Type", "text/plain");
  resp.headers.Add("X-Method", req.method);
  resp.headers.Add("X-Target", req.target);
  resp.body = req.body;
  if (req.Path() == "/missing") resp.status = 404;
  return resp;
}

std::unique_ptr<HttpServer> StartServer(HttpHandler handler, HttpServerOptions opts = {}) {
  auto server = std::make_unique<HttpServer>(std::move(handler), opts);
  Status s = server->Start(Local(0));
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_NE(server->port(), 0);
  return server;
}

UniqueFd Connect(uint16_t port) {
  auto fd = ConnectTcp(Local(port), DeadlineIn(2s));
  EXPECT_TRUE(fd.ok()) << fd.status().ToString();
  return fd.ok() ? std::move(*fd) : UniqueFd();
}

void Send(int fd, std::string_view data) {
  Status s = WriteAll(fd, data, DeadlineIn(5s));
  ASSERT_TRUE(s.ok()) << s.ToString();
}

// Everything until the peer closes (or resets, or 5 s pass).
std::string ReadUntilClose(int fd, std::chrono::milliseconds limit = 5000ms) {
  std::string out;
  Deadline deadline = DeadlineIn(limit);
  char buf[4096];
  for (;;) {
    auto n = ReadSome(fd, buf, sizeof buf, deadline);
    if (!n.ok() || *n == 0) return out;
    out.append(buf, *n);
  }
}

// One response (Content-Length or no body) from a raw socket.
Result<HttpResponse> ReadResponseFrom(int fd, std::string* buf, std::string_view method = "GET") {
  Deadline deadline = DeadlineIn(5s);
  HttpResponse resp;
  char tmp[4096];
  for (;;) {
    HC_ASSIGN_OR_RETURN(std::optional<size_t> end, ParseResponseHead(*buf, &resp));
    if (end) {
      buf->erase(0, *end);
      break;
    }
    HC_ASSIGN_OR_RETURN(size_t n, ReadSome(fd, tmp, sizeof tmp, deadline));
    if (n == 0) return Unavailable("EOF in head");
    buf->append(tmp, n);
  }
  HC_ASSIGN_OR_RETURN(BodyFraming f, ResponseFraming(resp, method));
  if (f.kind == BodyFraming::kNone) return resp;
  if (f.kind != BodyFraming::kLength) return Internal("unexpected framing");
  while (buf->size() < f.length) {
    HC_ASSIGN_OR_RETURN(size_t n, ReadSome(fd, tmp, sizeof tmp, deadline));
    if (n == 0) return Unavailable("EOF in body");
    buf->append(tmp, n);
  }
  resp.body = buf->substr(0, f.length);
  buf->erase(0, f.length);
  return resp;
}

int StatusOf(const std::string& raw) {
  HttpResponse resp;
  auto r = ParseResponseHead(raw, &resp);
  return r.ok() && *r ? resp.status : -1;
}

// ------------------------------------------------------------------ server

TEST(HttpServer, AnswersSequentialRequestsOnOneKeptAliveConnection) {
  auto server = StartServer(Echo);
  UniqueFd fd = Connect(server->port());
  std::string buf;
  for (int i = 0; i < 3; ++i) {
    std::string target = "/req/" + std::to_string(i);
    Send(fd.get(), "POST " + target + " HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    auto resp = ReadResponseFrom(fd.get(), &buf);
    ASSERT_TRUE(resp.ok()) << resp.status().ToString();
    EXPECT_EQ(resp->status, 200);
    EXPECT_EQ(resp->headers.Get("X-Target"), target);
    EXPECT_EQ(resp->body, "hello");
    EXPECT_FALSE(resp->headers.HasToken("Connection", "close"));
  }
}

TEST(HttpServer, ServesHttpClientRequestsIncludingLargeBodies) {
  auto server = StartServer(Echo);
  HttpClient client(Local(server->port()));
  auto resp = client.Do("GET", "/v1/apps?x=1");
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(resp->headers.Get("X-Target"), "/v1/apps?x=1");

  std::string big(3 * 1024 * 1024, 'x');
  for (size_t i = 0; i < big.size(); i += 4099) big[i] = static_cast<char>('a' + i % 26);
  resp = client.Do("PUT", "/big", big);
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->body, big);

  resp = client.Do("GET", "/missing");
  ASSERT_TRUE(resp.ok());
  EXPECT_EQ(resp->status, 404);
}

TEST(HttpServer, DecodesChunkedRequestBodies) {
  auto server = StartServer(Echo);
  UniqueFd fd = Connect(server->port());
  Send(fd.get(),
       "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
       "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n");
  std::string buf;
  auto resp = ReadResponseFrom(fd.get(), &buf);
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(resp->body, "hello world");
}

TEST(HttpServer, AnswersPipelinedRequestsInOrder) {
  auto server = StartServer(Echo);
  UniqueFd fd = Connect(server->port());
  Send(fd.get(),
       "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
       "POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
       "POST /3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n"
       "GET /4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  std::string all = ReadUntilClose(fd.get());
  std::vector<std::pair<std::string, std::string>> got;
  std::string_view rest = all;
  while (!rest.empty()) {
    HttpResponse resp;
    auto end = ParseResponseHead(rest, &resp);
    ASSERT_TRUE(end.ok() && *end) << all;
    rest.remove_prefix(**end);
    size_t len = std::stoul(std::string(*resp.headers.Get("Content-Length")));
    got.emplace_back(std::string(*resp.headers.Get("X-Target")), std::string(rest.substr(0, len)));
    rest.remove_prefix(len);
  }
  std::vector<std::pair<std::string, std::string>> want = {
      {"/1", ""}, {"/2", "abc"}, {"/3", "z"}, {"/4", ""}};
  EXPECT_EQ(got, want);
}

TEST(HttpServer, RejectsMalformedRequestsWith400AndCloses) {
  auto server = StartServer(Echo);
  for (std::string bad : std::vector<std::string>{
           "GARBAGE\r\n\r\n", "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
           "GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", "GET http://evil/ HTTP/1.1\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
           "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
           std::string("GET / HTTP/1.1\r\nX: \0\r\n\r\n", 24)}) {
    UniqueFd fd = Connect(server->port());
    Send(fd.get(), bad);
    std::string out = ReadUntilClose(fd.get());
    EXPECT_EQ(StatusOf(out), 400) << bad << " -> " << out;
    EXPECT_NE(out.find("Connection: close"), std::string::npos);
  }
  UniqueFd fd = Connect(server->port());
  Send(fd.get(), "GET / HTTP/2.0\r\n\r\n");
  EXPECT_EQ(StatusOf(ReadUntilClose(fd.get())), 505);
}

TEST(HttpServer, RejectsOversizedHeadsWith431) {
  auto server = StartServer(Echo);
  UniqueFd fd = Connect(server->port());
  // The client keeps sending: the answer must still arrive intact.
  std::string head = "GET / HTTP/1.1\r\nX-Big: " + std::string(64 * 1024, 'a') + "\r\n\r\n";
  (void)WriteAll(fd.get(), head, DeadlineIn(5s));
  std::string out = ReadUntilClose(fd.get());
  EXPECT_EQ(StatusOf(out), 431) << out.substr(0, 200);

  fd = Connect(server->port());
  std::string many = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 200; ++i) many += "X-" + std::to_string(i) + ": 1\r\n";
  Send(fd.get(), many + "\r\n");
  EXPECT_EQ(StatusOf(ReadUntilClose(fd.get())), 431);
}

TEST(HttpServer, RejectsOversizedBodiesWith413) {
  HttpServerOptions opts;
  opts.limits.max_body_bytes = 1024;
  auto server = StartServer(Echo, opts);
  UniqueFd fd = Connect(server->port());
  Send(fd.get(), "POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + std::string(4000, 'x'));
  EXPECT_EQ(StatusOf(ReadUntilClose(fd.get())), 413);

  fd = Connect(server->port());
  std::string chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 5; ++i) chunked += "100\r\n" + std::string(256, 'y') + "\r\n";
  Send(fd.get(), chunked);
  EXPECT_EQ(StatusOf(ReadUntilClose(fd.get())), 413);

  HttpClient client(Local(server->port()));
  auto resp = client.Do("POST", "/", std::string(1024, 'z'));
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->status, 200);
  resp = client.Do("POST", "/", std::string(1025, 'z'));
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->status, 413);
}

TEST(HttpServer, RejectsUnsupportedTransferCodingsWith501) {
  auto server = StartServer(Echo);
  UniqueFd fd = Connect(server->port());
  Send(fd.get(), "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
  EXPECT_EQ(StatusOf(ReadUntilClose(fd.get())), 501);
}

TEST(HttpServer, SendsContinueBeforeReadingAnExpectedBody) {
  auto server = StartServer(Echo);
  UniqueFd fd = Connect(server->port());
  Send(fd.get(), "PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
  std::string buf;
  auto interim = ReadResponseFrom(fd.get(), &buf);
  ASSERT_TRUE(interim.ok()) << interim.status().ToString();
  EXPECT_EQ(interim->status, 100);
  Send(fd.get(), "data");
  auto resp = ReadResponseFrom(fd.get(), &buf);
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(resp->body, "data");

  Send(fd.get(), "PUT /e HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\nContent-Length: 4\r\n\r\n");
  EXPECT_EQ(StatusOf(buf + ReadUntilClose(fd.get())), 417);
}

TEST(HttpServer, AnswersHandlerExceptionsWith500AndKeepsServing) {
  auto server = StartServer(Echo);
  HttpClient client(Local(server->port()));
  auto resp = client.Do("GET", "/throw");
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->status, 500);
  EXPECT_EQ(resp->body.find("handler bug"), std::string::npos);
  resp = client.Do("GET", "/fine");
  ASSERT_TRUE(resp.ok());
  EXPECT_EQ(resp->status, 200);
}

TEST(HttpServer, HeadResponsesCarryNoBody) {
  auto server = StartServer([](const HttpRequest&) {
    HttpResponse resp;
    resp.body = "twelve bytes";
    return resp;
  });
  UniqueFd fd = Connect(server->port());
  Send(fd.get(), "HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string buf;
  auto head = ReadResponseFrom(fd.get(), &buf, "HEAD");
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->headers.Get("Content-Length"), "12");
  auto get = ReadResponseFrom(fd.get(), &buf);
  ASSERT_TRUE(get.ok()) << get.status().ToString();
  EXPECT_EQ(get->body, "twelve bytes");
}

TEST(HttpServer, ClosesHttp10ConnectionsUnlessKeepAliveWasAsked) {
  auto server = StartServer(Echo);
  UniqueFd fd = Connect(server->port());
  Send(fd.get(), "GET /a HTTP/1.0\r\n\r\n");
  std::string out = ReadUntilClose(fd.get());
  EXPECT_EQ(StatusOf(out), 200);
  EXPECT_NE(out.find("Connection: close"), std::string::npos);

  fd = Connect(server->port());
  Send(fd.get(), "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  std::string buf;
  auto resp = ReadResponseFrom(fd.get(), &buf);
  ASSERT_TRUE(resp.ok());
  EXPECT_TRUE(resp->headers.HasToken("Connection", "keep-alive"));
  Send(fd.get(), "GET /b HTTP/1.0\r\n\r\n");
  resp = ReadResponseFrom(fd.get(), &buf);
  ASSERT_TRUE(resp.ok());
  EXPECT_EQ(resp->headers.Get("X-Target"), "/b");
}

TEST(HttpServer, ClosesIdleAndSilentConnections) {
  HttpServerOptions opts;
  opts.idle_timeout = 200ms;
  opts.header_timeout = 300ms;
  auto server = StartServer(Echo, opts);

  UniqueFd idle = Connect(server->port());
  Send(idle.get(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string buf;
  ASSERT_TRUE(ReadResponseFrom(idle.get(), &buf).ok());
  auto start = Clock::now();
  EXPECT_EQ(ReadUntilClose(idle.get()), "");
  EXPECT_LT(Clock::now() - start, 3s);

  // A client that never completes its head gets 408 and is dropped.
  UniqueFd slow = Connect(server->port());
  Send(slow.get(), "GET / HTTP/1.1\r\nHost:");
  EXPECT_EQ(StatusOf(ReadUntilClose(slow.get())), 408);

  UniqueFd silent = Connect(server->port());
  EXPECT_EQ(ReadUntilClose(silent.get()), "");
}

TEST(HttpServer, StopClosesConnectedClientsPromptly) {
  auto server = StartServer(Echo);
  UniqueFd fd = Connect(server->port());
  Send(fd.get(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string buf;
  ASSERT_TRUE(ReadResponseFrom(fd.get(), &buf).ok());
  UniqueFd half = Connect(server->port());
  Send(half.get(), "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");

  auto start = Clock::now();
  server->Stop();
  EXPECT_LT(Clock::now() - start, 3s);
  EXPECT_EQ(ReadUntilClose(fd.get()), "");
  ReadUntilClose(half.get());
  EXPECT_FALSE(ConnectTcp(Local(server->port()), DeadlineIn(1s)).ok());
  server->Stop();  // idempotent
}

TEST(HttpServer, StopLetsRunningHandlersFinishAndAnswer) {
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false;
  auto server = StartServer([&](const HttpRequest& req) {
    {
      std::lock_guard<std::mutex> lock(mu);
      entered = true;
    }
    cv.notify_all();
    std::this_thread::sleep_for(200ms);  // still running when Stop() begins
    return Echo(req);
  });
  UniqueFd fd = Connect(server->port());
  Send(fd.get(), "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 5s, [&] { return entered; }));
  }
  server->Stop();
  std::string out = ReadUntilClose(fd.get());
  EXPECT_EQ(StatusOf(out), 200) << out;
  EXPECT_NE(out.find("Connection: close"), std::string::npos);
}

TEST(HttpServer, RefusesConnectionsBeyondTheLimitWith503) {
  HttpServerOptions opts;
  opts.max_connections = 1;
  auto server = StartServer(Echo, opts);
  UniqueFd first = Connect(server->port());
  Send(first.get(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string buf;
  ASSERT_TRUE(ReadResponseFrom(first.get(), &buf).ok());  // now it is registered

  UniqueFd second = Connect(server->port());
  EXPECT_EQ(StatusOf(ReadUntilClose(second.get())), 503);

  first.Reset();
  // Once the first connection is gone its slot is free again.
  HttpClient client(Local(server->port()));
  Result<HttpResponse> resp = Unavailable("not tried");
  for (int i = 0; i < 100; ++i) {
    resp = client.Do("GET", "/again");
    if (resp.ok() && resp->status == 200) break;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->status, 200);
}

TEST(HttpServer, NeverCrashesOnRandomBytes) {
  auto server = StartServer(Echo);
  uint32_t seed = 12345;
  auto next = [&] {
    seed = seed * 1103515245 + 12345;
    return seed >> 16;
  };
  const std::string alphabet =
      "GET /HTP1.0\r\n:;, \t\x01\x7f\x80"
      "Content-Length: 5chunked0x\r\n";
  for (int i = 0; i < 50; ++i) {
    UniqueFd fd = Connect(server->port());
    std::string junk = i % 2 ? "POST / HTTP/1.1\r\n" : "";
    size_t n = next() % 400;
    for (size_t j = 0; j < n; ++j) junk += alphabet[next() % alphabet.size()];
    (void)WriteAll(fd.get(), junk, DeadlineIn(1s));
    ::shutdown(fd.get(), SHUT_WR);
    ReadUntilClose(fd.get(), 2000ms);
  }
  HttpClient client(Local(server->port()));
  auto resp = client.Do("GET", "/still-alive");
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->status, 200);
}

std::string RunCommand(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

TEST(HttpServer, TalksToCurl) {
  if (std::system("command -v curl >/dev/null 2>&1") != 0) GTEST_SKIP() << "no curl";
  auto server = StartServer(Echo);
  std::string base = "http://127.0.0.1:" + std::to_string(server->port());
  std::string out =
      RunCommand("curl -sS -i --max-time 10 '" + base + "/one?a=1' '" + base + "/two' 2>&1");
  EXPECT_NE(out.find("HTTP/1.1 200 OK"), std::string::npos) << out;
  EXPECT_NE(out.find("X-Target: /one?a=1"), std::string::npos) << out;
  EXPECT_NE(out.find("X-Target: /two"), std::string::npos) << out;

  // A body large enough for curl to send "Expect: 100-continue" (curl < 8)
  // or plain, either way echoed back.
  out = RunCommand(
      "head -c 300000 /dev/zero | tr '\\0' 'q' | curl -sS --max-time 10 "
      "--data-binary @- -H 'Expect: 100-continue' '" +
      base + "/post' | wc -c");
  EXPECT_EQ(std::strtoul(out.c_str(), nullptr, 10), 300000u) << out;

  out = RunCommand(
      "printf 'hello chunked' | curl -sS --max-time 10 -H 'Transfer-Encoding: chunked' "
      "--data-binary @- '" +
      base + "/chunk'");
  EXPECT_EQ(out, "hello chunked");
}

// ------------------------------------------------------------------ client

// A peer that runs `script` on each accepted connection (on its own thread)
// and counts connections.
class ScriptedPeer {
 public:
  explicit ScriptedPeer(std::function<void(int fd)> script) : script_(std::move(script)) {
    auto fd = ListenTcp(Local(0));
    EXPECT_TRUE(fd.ok());
    listen_ = std::move(*fd);
    port_ = *LocalPort(listen_.get());
    thread_ = std::thread([this] { Loop(); });
  }
  ~ScriptedPeer() {
    stop_ = true;
    ::shutdown(listen_.get(), SHUT_RDWR);
    thread_.join();
    for (auto& t : conns_) t.join();
  }
  HostPort addr() const { return Local(port_); }
  int accepts() const { return accepts_; }

 private:
  void Loop() {
    for (;;) {
      int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (stop_) return;
        continue;
      }
      ++accepts_;
      conns_.emplace_back([this, fd] {
        UniqueFd owned(fd);
        script_(fd);
      });
    }
  }

  std::function<void(int)> script_;
  UniqueFd listen_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepts_{0};
  std::thread thread_;
  std::vector<std::thread> conns_;
};

// Reads one request head (and Content-Length body) on the peer side.
bool ReadRequest(int fd, std::string* buf, HttpRequest* req) {
  Deadline deadline = DeadlineIn(5s);
  char tmp[4096];
  for (;;) {
    auto end = ParseRequestHead(*buf, req);
    if (!end.ok()) return false;
    if (*end) {
      buf->erase(0, **end);
      break;
    }
    auto n = ReadSome(fd, tmp, sizeof tmp, deadline);
    if (!n.ok() || *n == 0) return false;
    buf->append(tmp, *n);
  }
  auto f = RequestFraming(*req);
  size_t len = f.ok() && f->kind == BodyFraming::kLength ? f->length : 0;
  while (buf->size() < len) {
    auto n = ReadSome(fd, tmp, sizeof tmp, deadline);
    if (!n.ok() || *n == 0) return false;
    buf->append(tmp, *n);
  }
  req->body = buf->substr(0, len);
  buf->erase(0, len);
  return true;
}

// Answers every request on the connection with `reply`, `per_conn` times.
std::function<void(int)> Replier(std::string reply, int per_conn = 1000) {
  return [reply, per_conn](int fd) {
    std::string buf;
    HttpRequest req;
    for (int i = 0; i < per_conn && ReadRequest(fd, &buf, &req); ++i) {
      if (!WriteAll(fd, reply, DeadlineIn(5s)).ok()) return;
    }
  };
}

TEST(HttpClient, ReusesAKeptAliveConnection) {
  ScriptedPeer peer(Replier("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
  HttpClient client(peer.addr());
  for (int i = 0; i < 5; ++i) {
    auto resp = client.Do("GET", "/");
    ASSERT_TRUE(resp.ok()) << resp.status().ToString();
    EXPECT_EQ(resp->body, "ok");
  }
  EXPECT_EQ(peer.accepts(), 1);
}

TEST(HttpClient, ReconnectsAfterConnectionClose) {
  ScriptedPeer peer(
      Replier("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 1));
  HttpClient client(peer.addr());
  for (int i = 0; i < 3; ++i) {
    auto resp = client.Do("GET", "/");
    ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  }
  EXPECT_EQ(peer.accepts(), 3);
}

TEST(HttpClient, RetriesOnceWhenAKeptAliveConnectionWentStale) {
  // Keep-alive promised, but the peer closes after each response.
  ScriptedPeer peer(Replier("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1));
  HttpClient client(peer.addr());
  for (int i = 0; i < 3; ++i) {
    auto resp = client.Do("POST", "/", "x");
    ASSERT_TRUE(resp.ok()) << i << ": " << resp.status().ToString();
    EXPECT_EQ(resp->body, "ok");
  }
  EXPECT_EQ(peer.accepts(), 3);
}

TEST(HttpClient, DoesNotRetryOnAFreshConnection) {
  ScriptedPeer peer([](int fd) {
    std::string buf;
    HttpRequest req;
    (void)ReadRequest(fd, &buf, &req);  // then close without answering
  });
  HttpClient client(peer.addr());
  auto resp = client.Do("GET", "/");
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), Code::kUnavailable);
  EXPECT_EQ(peer.accepts(), 1);
}

TEST(HttpClient, ReadsChunkedAndUntilCloseBodiesAndSkipsInterimResponses) {
  ScriptedPeer chunked(Replier(
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"));
  HttpClient a(chunked.addr());
  for (int i = 0; i < 2; ++i) {
    auto resp = a.Do("GET", "/");
    ASSERT_TRUE(resp.ok()) << resp.status().ToString();
    EXPECT_EQ(resp->status, 200);
    EXPECT_EQ(resp->body, "abcde");
  }
  EXPECT_EQ(chunked.accepts(), 1);

  ScriptedPeer until_close(Replier("HTTP/1.0 200 OK\r\n\r\nall of it", 1));
  HttpClient b(until_close.addr());
  auto resp = b.Do("GET", "/");
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->body, "all of it");
}

TEST(HttpClient, FailsOnMalformedOrOversizedResponses) {
  ScriptedPeer bad(Replier("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"));
  HttpClient a(bad.addr());
  auto resp = a.Do("GET", "/");
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), Code::kUnavailable);

  ScriptedPeer big(
      Replier("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + std::string(100, 'x')));
  HttpClientOptions opts;
  opts.limits.max_body_bytes = 10;
  HttpClient b(big.addr(), opts);
  resp = b.Do("GET", "/");
  ASSERT_FALSE(resp.ok());
  EXPECT_NE(resp.status().message().find("larger than 10 bytes"), std::string::npos)
      << resp.status().message();
}

TEST(HttpClient, TimesOutWhenThePeerDoesNotAnswer) {
  ScriptedPeer peer([](int fd) { ReadUntilClose(fd, 3000ms); });
  HttpClient client(peer.addr());
  auto start = Clock::now();
  auto resp = client.Do("GET", "/", {}, {}, 200ms);
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), Code::kUnavailable);
  EXPECT_LT(Clock::now() - start, 2s);
  EXPECT_EQ(peer.accepts(), 1);  // no retry after a timeout
}

TEST(HttpClient, ReportsConnectFailuresAsUnavailable) {
  uint16_t port;
  {
    auto fd = ListenTcp(Local(0));
    ASSERT_TRUE(fd.ok());
    port = *LocalPort(fd->get());
  }
  HttpClient client(Local(port));
  auto resp = client.Do("GET", "/");
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), Code::kUnavailable);
}

// Sends a chunked body piece by piece: the next piece only after the client
// has seen the previous one, which proves the data is streamed.
class Pieces {
 public:
  void Got(std::string_view data) {
    std::lock_guard<std::mutex> lock(mu_);
    received_ += data;
    ++calls_;
    cv_.notify_all();
  }
  bool WaitFor(size_t bytes) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, 5s, [&] { return received_.size() >= bytes; });
  }
  std::string received() {
    std::lock_guard<std::mutex> lock(mu_);
    return received_;
  }
  int calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::string received_;
  int calls_ = 0;
};

TEST(HttpClient, StreamDeliversChunksAsTheyArrive) {
  Pieces pieces;
  const std::vector<std::string> parts = {"first ", "second ", "third"};
  ScriptedPeer peer([&](int fd) {
    std::string buf;
    HttpRequest req;
    if (!ReadRequest(fd, &buf, &req)) return;
    (void)WriteAll(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", DeadlineIn(5s));
    size_t sent = 0;
    for (const auto& p : parts) {
      std::this_thread::sleep_for(30ms);
      char size[16];
      std::snprintf(size, sizeof size, "%zx\r\n", p.size());
      // Split the chunk framing across writes too.
      (void)WriteAll(fd, size, DeadlineIn(5s));
      (void)WriteAll(fd, p + "\r\n", DeadlineIn(5s));
      sent += p.size();
      if (!pieces.WaitFor(sent)) return;
    }
    (void)WriteAll(fd, "0\r\n\r\n", DeadlineIn(5s));
    ReadUntilClose(fd, 2000ms);
  });
  HttpClient client(peer.addr());
  HttpRequest req;
  req.method = "GET";
  req.target = "/v3/watch";
  HttpResponse head;
  std::atomic<bool> cancel{false};
  Status s = client.Stream(
      req,
      [&](std::string_view data) {
        pieces.Got(data);
        return true;
      },
      &cancel, &head);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(pieces.received(), "first second third");
  EXPECT_GE(pieces.calls(), 3);
}

TEST(HttpClient, StreamStopsOnCancelAndWhenTheCallbackSaysSo) {
  // One piece, then silence on a connection held open.
  auto script = [](int fd) {
    std::string buf;
    HttpRequest req;
    if (!ReadRequest(fd, &buf, &req)) return;
    (void)WriteAll(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nhello", DeadlineIn(5s));
    ReadUntilClose(fd, 5000ms);
  };
  ScriptedPeer peer(script);
  HttpClient client(peer.addr());
  HttpRequest req;
  req.method = "GET";
  req.target = "/watch";

  std::atomic<bool> cancel{false};
  std::string got;
  std::thread canceller;
  auto start = Clock::now();
  Status s = client.Stream(
      req,
      [&](std::string_view data) {
        got += data;
        if (!canceller.joinable()) canceller = std::thread([&] { cancel = true; });
        return true;
      },
      &cancel);
  auto took = Clock::now() - start;
  canceller.join();
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(got, "hello");
  EXPECT_LT(took, 2s);

  int calls = 0;
  s = client.Stream(
      req,
      [&](std::string_view) {
        ++calls;
        return false;
      },
      nullptr);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(calls, 1);
}

TEST(HttpClient, StreamReturnsErrorStatusesWithTheBody) {
  ScriptedPeer peer(
      Replier("HTTP/1.1 404 Not Found\r\nContent-Length: 17\r\n\r\nno such watch 'x'"));
  HttpClient client(peer.addr());
  HttpRequest req;
  req.method = "GET";
  req.target = "/watch";
  bool called = false;
  Status s = client.Stream(
      req,
      [&](std::string_view) {
        called = true;
        return true;
      },
      nullptr);
  EXPECT_EQ(s.code(), Code::kNotFound);
  EXPECT_NE(s.message().find("no such watch 'x'"), std::string::npos) << s.message();
  EXPECT_FALSE(called);
}

TEST(HttpClient, StreamReportsATruncatedBody) {
  ScriptedPeer peer(
      Replier("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", 1));
  HttpClient client(peer.addr());
  HttpRequest req;
  req.method = "GET";
  req.target = "/watch";
  std::string got;
  Status s = client.Stream(
      req,
      [&](std::string_view d) {
        got += d;
        return true;
      },
      nullptr);
  EXPECT_EQ(s.code(), Code::kUnavailable) << s.ToString();
  EXPECT_EQ(got, "abc");
}

TEST(HttpClient, StreamsFromHttpServer) {
  auto server = StartServer(Echo);
  HttpClient client(Local(server->port()));
  HttpRequest req;
  req.method = "POST";
  req.target = "/s";
  req.body = "streamed body";
  std::string got;
  Status s = client.Stream(
      req,
      [&](std::string_view d) {
        got += d;
        return true;
      },
      nullptr);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(got, "streamed body");
}

}  // namespace
}  // namespace hc::net
