// The HTTP proxy engine (src/proxy/http_proxy.h) against real backends on
// loopback (127.0.0.91-94, port 0) with the real curl and raw sockets for
// what curl cannot do (pipelining, upgrade tunnels, slowloris, malformed
// heads). The proxy listens on 127.0.0.90.
#include "proxy/http_proxy.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "common/subprocess.h"
#include "net/http.h"
#include "net/socket.h"

namespace hc::proxy {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kProxyHost = "127.0.0.90";

uint64_t Fnv(uint64_t h, std::string_view data) {
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}
constexpr uint64_t kFnvInit = 14695981039346656037ull;

// A small threaded HTTP/1.1 backend: a thread per connection, keep-alive,
// bodies (length or chunked) hashed as they arrive, never stored.
//   /ws with Upgrade  -> 101, then echoes bytes until EOF
//   /reject           -> 413 before the body is read, then close
//   /big?n=N[&chunked] -> N bytes of 'x'
//   anything else      -> a text report of what it saw
// "Expect: 100-continue" gets an interim 100 before the body is read.
class Backend {
 public:
  // one_per_connection: a second request on a connection is met with a
  // close, as when a backend's keep-alive timeout fires just as a reused
  // connection is sent a request.
  explicit Backend(std::string name, std::string host, bool one_per_connection = false)
      : name_(std::move(name)), one_per_connection_(one_per_connection) {
    auto fd = net::ListenTcp(net::HostPort{host, 0});
    EXPECT_TRUE(fd.ok()) << fd.status().ToString();
    listen_ = std::move(*fd);
    at_ = net::HostPort{host, *net::LocalPort(listen_.get())};
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }
  ~Backend() {
    stopping_ = true;
    (void)::shutdown(listen_.get(), SHUT_RDWR);
    accept_thread_.join();
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int fd : open_) (void)::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : threads_) t.join();
  }
  const net::HostPort& at() const { return at_; }
  int connections() const { return connections_.load(); }
  int requests() const { return requests_.load(); }

 private:
  void AcceptLoop() {
    while (!stopping_) {
      int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (stopping_) return;
        continue;
      }
      ++connections_;
      std::lock_guard<std::mutex> lock(mu_);
      open_.push_back(fd);
      threads_.emplace_back([this, fd] { Serve(fd); });
    }
  }

  bool Send(int fd, std::string_view data) {
    return net::WriteAll(fd, data, net::DeadlineIn(30s)).ok();
  }

  void Serve(int fd) {
    UniqueFd owned(fd);
    std::string buf;
    char tmp[65536];
    auto fill = [&]() -> bool {
      auto n = net::ReadSome(fd, tmp, sizeof tmp, net::DeadlineIn(60s));
      if (!n.ok() || *n == 0) return false;
      buf.append(tmp, *n);
      return true;
    };
    int served = 0;
    for (;;) {
      net::HttpRequest req;
      std::optional<size_t> head_len;
      for (;;) {
        auto r = net::ParseRequestHead(buf, &req);
        if (!r.ok()) return;
        head_len = *r;
        if (head_len) break;
        if (!fill()) return;
      }
      buf.erase(0, *head_len);
      if (one_per_connection_ && served++ > 0) return;
      ++requests_;
      if (req.Path() == "/ws" && req.headers.Has("Upgrade")) {
        if (!Send(fd,
                  "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                  "Upgrade: websocket\r\n\r\n")) {
          return;
        }
        if (!buf.empty() && !Send(fd, buf)) return;
        for (;;) {
          auto n = net::ReadSome(fd, tmp, sizeof tmp, net::DeadlineIn(60s));
          if (!n.ok() || *n == 0) return;
          if (!Send(fd, std::string_view(tmp, *n))) return;
        }
      }
      if (req.Path() == "/reject") {
        // Answers before reading the body, then closes (as for a 413).
        Send(fd,
             "HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\n"
             "too big\n");
        ::shutdown(fd, SHUT_WR);
        while (fill()) buf.clear();
        return;
      }
      if (req.headers.Get("Expect").value_or("") == "100-continue") {
        if (!Send(fd, "HTTP/1.1 100 Continue\r\n\r\n")) return;
      }
      auto framing = net::RequestFraming(req);
      if (!framing.ok()) return;
      uint64_t body_bytes = 0;
      uint64_t hash = kFnvInit;
      if (framing->kind == net::BodyFraming::kLength) {
        uint64_t left = framing->length;
        while (left > 0) {
          if (buf.empty() && !fill()) return;
          size_t take = static_cast<size_t>(std::min<uint64_t>(left, buf.size()));
          hash = Fnv(hash, std::string_view(buf).substr(0, take));
          buf.erase(0, take);
          left -= take;
          body_bytes += take;
        }
      } else if (framing->kind == net::BodyFraming::kChunked) {
        net::ChunkedDecoder dec;
        std::string out;
        while (!dec.done()) {
          if (buf.empty() && !fill()) return;
          auto used = dec.Feed(buf, &out);
          if (!used.ok()) return;
          buf.erase(0, *used);
          hash = Fnv(hash, out);
          body_bytes += out.size();
          out.clear();
        }
      }
      std::string head;
      std::string body;
      bool chunked = false;
      if (req.Path() == "/big") {
        uint64_t n = std::stoull(req.QueryParam("n").value_or("0"));
        chunked = req.QueryParam("chunked").has_value();
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n";
        head += chunked ? "Transfer-Encoding: chunked\r\n\r\n"
                        : "Content-Length: " + std::to_string(n) + "\r\n\r\n";
        if (!Send(fd, head)) return;
        std::string block(65536, 'x');
        while (n > 0) {
          size_t take = static_cast<size_t>(std::min<uint64_t>(n, block.size()));
          std::string piece = block.substr(0, take);
          if (chunked) {
            char size[32];
            std::snprintf(size, sizeof size, "%zx\r\n", take);
            piece = size + piece + "\r\n";
          }
          if (!Send(fd, piece)) return;
          n -= take;
        }
        if (chunked && !Send(fd, "0\r\n\r\n")) return;
      } else {
        body = "backend=" + name_ + "\nmethod=" + req.method + "\ntarget=" + req.target +
               "\nbody_bytes=" + std::to_string(body_bytes) +
               "\nbody_hash=" + std::to_string(hash) +
               "\nxff=" + std::string(req.headers.Get("X-Forwarded-For").value_or("")) +
               "\nxfp=" + std::string(req.headers.Get("X-Forwarded-Proto").value_or("")) +
               "\nxfh=" + std::string(req.headers.Get("X-Forwarded-Host").value_or("")) +
               "\nconnection=" + std::string(req.headers.Get("Connection").value_or("")) +
               "\nx-drop=" + std::string(req.headers.Get("X-Drop").value_or("")) + "\n";
        head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Backend: " + name_ +
               "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n";
        if (!Send(fd, head + (req.method == "HEAD" ? "" : body))) return;
      }
      if (!req.KeepAlive()) return;
    }
  }

  const std::string name_;
  const bool one_per_connection_;
  UniqueFd listen_;
  net::HostPort at_;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  std::mutex mu_;
  std::vector<int> open_;             // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;  // GUARDED_BY(mu_)
  std::atomic<int> connections_{0};
  std::atomic<int> requests_{0};
};

std::shared_ptr<const RouteTable> Routes(const std::vector<RouteSpec>& specs) {
  auto t = RouteTable::Build(specs);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return *t;
}

class ProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = std::make_unique<Backend>("A", "127.0.0.91");
    b_ = std::make_unique<Backend>("B", "127.0.0.92");
  }

  void StartProxy(ProxyOptions opts = {}) {
    opts.listen = {net::HostPort{kProxyHost, 0}};
    if (opts.workers == 0) opts.workers = 2;
    proxy_ = std::make_unique<HttpProxy>(opts);
    Status s = proxy_->Start(Routes(
        {{"shop", {"shop.test", "*.shop.test"}, a_->at()}, {"blog", {"blog.test"}, b_->at()}}));
    ASSERT_TRUE(s.ok()) << s.ToString();
    port_ = proxy_->bound()[0].port;
  }

  std::string Url(const std::string& path = "/") const {
    return "http://" + std::string(kProxyHost) + ":" + std::to_string(port_) + path;
  }

  // Runs curl with `args` (after -sS); returns stdout.
  CommandResult Curl(std::vector<std::string> args) {
    std::vector<std::string> argv = {"curl", "-sS", "--max-time", "60"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = RunCommand(argv);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : CommandResult{};
  }

  UniqueFd Connect() {
    auto fd = net::ConnectTcp(net::HostPort{kProxyHost, port_}, net::DeadlineIn(2s));
    EXPECT_TRUE(fd.ok()) << fd.status().ToString();
    return fd.ok() ? std::move(*fd) : UniqueFd();
  }

  // Reads until EOF or the deadline.
  static std::string ReadAll(int fd, std::chrono::milliseconds within = 5s) {
    std::string out;
    char tmp[65536];
    auto deadline = net::DeadlineIn(within);
    for (;;) {
      auto n = net::ReadSome(fd, tmp, sizeof tmp, deadline);
      if (!n.ok() || *n == 0) return out;
      out.append(tmp, *n);
    }
  }

  // Reads until `out` holds `count` complete responses (Content-Length
  // framed) or EOF.
  static std::vector<net::HttpResponse> ReadResponses(int fd, size_t count,
                                                      std::string* rest = nullptr) {
    std::vector<net::HttpResponse> got;
    std::string buf;
    char tmp[65536];
    auto deadline = net::DeadlineIn(10s);
    while (got.size() < count) {
      net::HttpResponse resp;
      auto r = net::ParseResponseHead(buf, &resp);
      if (r.ok() && r->has_value()) {
        size_t head = **r;
        auto len = resp.headers.Get("Content-Length");
        size_t body = len ? std::stoul(std::string(*len)) : 0;
        if (buf.size() >= head + body) {
          resp.body = buf.substr(head, body);
          buf.erase(0, head + body);
          got.push_back(std::move(resp));
          continue;
        }
      } else if (!r.ok()) {
        break;
      }
      auto n = net::ReadSome(fd, tmp, sizeof tmp, deadline);
      if (!n.ok() || *n == 0) break;
      buf.append(tmp, *n);
    }
    if (rest != nullptr) *rest = buf;
    return got;
  }

  std::string TempFile(size_t bytes) {
    std::string path =
        "/tmp/hc_proxy_test_" + std::to_string(::getpid()) + "_" + std::to_string(files_.size());
    std::ofstream f(path, std::ios::binary);
    std::string block(1 << 20, '\0');
    for (size_t i = 0; i < block.size(); ++i) block[i] = static_cast<char>((i * 131) >> 3);
    for (size_t done = 0; done < bytes;) {
      size_t take = std::min(block.size(), bytes - done);
      f.write(block.data(), static_cast<std::streamsize>(take));
      done += take;
    }
    files_.push_back(path);
    return path;
  }

  static uint64_t FileHash(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::vector<char> b(1 << 20);
    uint64_t h = kFnvInit;
    while (f) {
      f.read(b.data(), static_cast<std::streamsize>(b.size()));
      h = Fnv(h, std::string_view(b.data(), static_cast<size_t>(f.gcount())));
    }
    return h;
  }

  void TearDown() override {
    if (proxy_) proxy_->Stop();
    for (const auto& f : files_) ::unlink(f.c_str());
  }

  std::unique_ptr<Backend> a_, b_;
  std::unique_ptr<HttpProxy> proxy_;
  uint16_t port_ = 0;
  std::vector<std::string> files_;
};

bool Contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

TEST_F(ProxyTest, GetHeadAndPostReachTheBackendWithForwardedHeaders) {
  StartProxy();
  auto r = Curl({"-H", "Host: shop.test", "-H", "X-Forwarded-For: 203.0.113.7", "-H",
                 "Connection: X-Drop", "-H", "X-Drop: secret", Url("/hello?x=1")});
  EXPECT_TRUE(Contains(r.out, "backend=A\n")) << r.out << r.err;
  EXPECT_TRUE(Contains(r.out, "target=/hello?x=1\n")) << r.out;
  EXPECT_TRUE(Contains(r.out, "xff=203.0.113.7, 127.0.0.1\n")) << r.out;
  EXPECT_TRUE(Contains(r.out, "xfp=http\n")) << r.out;
  EXPECT_TRUE(Contains(r.out, "xfh=shop.test\n")) << r.out;
  EXPECT_TRUE(Contains(r.out, "x-drop=\n")) << "hop-by-hop header forwarded: " << r.out;

  r = Curl({"-H", "Host: www.shop.test", "-I", Url("/")});
  EXPECT_TRUE(Contains(r.out, "HTTP/1.1 200")) << r.out;
  EXPECT_TRUE(Contains(r.out, "X-Backend: A")) << r.out;

  r = Curl({"-H", "Host: blog.test", "--data-binary", "hello", Url("/post")});
  EXPECT_TRUE(Contains(r.out, "backend=B\nmethod=POST")) << r.out;
  EXPECT_TRUE(Contains(r.out, "body_bytes=5\n")) << r.out;
}

TEST_F(ProxyTest, AdoptedConnectionsAreServedWithTheirClientAddressAndScheme) {
  StartProxy();
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  proxy_->Adopt(UniqueFd(sv[1]), "198.51.100.9", /*tls=*/true);
  UniqueFd c(sv[0]);
  ASSERT_TRUE(
      net::WriteAll(c.get(), "GET /a HTTP/1.1\r\nHost: shop.test\r\n\r\n", net::DeadlineIn(2s))
          .ok());
  auto got = ReadResponses(c.get(), 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(Contains(got[0].body, "backend=A\n")) << got[0].body;
  EXPECT_TRUE(Contains(got[0].body, "xff=198.51.100.9\n")) << got[0].body;
  EXPECT_TRUE(Contains(got[0].body, "xfp=https\n")) << got[0].body;
}

TEST_F(ProxyTest, LargeBodiesAreStreamedBothWays) {
  StartProxy();
  const size_t kSize = 50u << 20;
  std::string file = TempFile(kSize);
  std::string want = "body_bytes=" + std::to_string(kSize) +
                     "\nbody_hash=" + std::to_string(FileHash(file)) + "\n";
  auto r = Curl({"-H", "Host: shop.test", "--data-binary", "@" + file, Url("/upload")});
  EXPECT_TRUE(Contains(r.out, want)) << r.out << r.err;
  r = Curl({"-H", "Host: shop.test", "-H", "Transfer-Encoding: chunked", "--data-binary",
            "@" + file, Url("/upload")});
  EXPECT_TRUE(Contains(r.out, want)) << r.out << r.err;
  for (const char* q : {"/big?n=52428800", "/big?n=52428800&chunked=1"}) {
    r = Curl({"-H", "Host: shop.test", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
              Url(q)});
    EXPECT_EQ(r.out, "200 52428800") << q << " " << r.err;
  }
}

TEST_F(ProxyTest, KeepAliveReusesClientAndBackendConnections) {
  StartProxy(ProxyOptions{.listen = {}, .workers = 1});
  auto r =
      Curl({"-H", "Host: shop.test", "-w", "%{num_connects} ", "-o", "/dev/null", Url("/1"), "-o",
            "/dev/null", Url("/2"), "-o", "/dev/null", Url("/3"), "-o", "/dev/null", Url("/4")});
  EXPECT_EQ(r.out, "1 0 0 0 ") << r.err;
  EXPECT_EQ(a_->requests(), 4);
  EXPECT_EQ(a_->connections(), 1);
  // A new client connection reuses the pooled backend connection.
  r = Curl({"-H", "Host: shop.test", "-o", "/dev/null", "-w", "%{http_code}", Url("/5")});
  EXPECT_EQ(r.out, "200");
  EXPECT_EQ(a_->connections(), 1);
}

TEST_F(ProxyTest, StalePooledConnectionIsRetriedOnlyForBodilessRequests) {
  Backend flaky("F", "127.0.0.93", /*one_per_connection=*/true);
  StartProxy(ProxyOptions{.listen = {}, .workers = 1});
  proxy_->SetRoutes(Routes({{"flaky", {"flaky.test"}, flaky.at()}}));
  for (int i = 0; i < 3; ++i) {
    auto r = Curl({"-H", "Host: flaky.test", "-o", "/dev/null", "-w", "%{http_code}", Url("/")});
    EXPECT_EQ(r.out, "200") << i << " " << r.err;
  }
  EXPECT_EQ(flaky.requests(), 3);
  // A request with a body is not sent twice: the backend may have acted on it.
  auto r = Curl({"-H", "Host: flaky.test", "--data-binary", "once", "-o", "/dev/null", "-w",
                 "%{http_code}", Url("/")});
  EXPECT_EQ(r.out, "502") << r.err;
}

TEST_F(ProxyTest, PipelinedRequestsAreAnsweredInOrder) {
  StartProxy();
  UniqueFd fd = Connect();
  std::string reqs;
  for (int i = 0; i < 5; ++i) {
    reqs += "GET /p" + std::to_string(i) +
            " HTTP/1.1\r\nHost: " + (i % 2 == 0 ? "shop.test" : "blog.test") + "\r\n\r\n";
  }
  reqs += "POST /p5 HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 3\r\n\r\nabc";
  reqs += "GET /p6 HTTP/1.1\r\nHost: nope.test\r\n\r\n";
  reqs += "GET /p7 HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n";
  ASSERT_TRUE(net::WriteAll(fd.get(), reqs, net::DeadlineIn(2s)).ok());
  auto got = ReadResponses(fd.get(), 8);
  ASSERT_EQ(got.size(), 8u);
  for (int i = 0; i < 8; ++i) {
    if (i == 6) {
      EXPECT_EQ(got[i].status, 404);
      continue;
    }
    EXPECT_TRUE(Contains(got[i].body, "target=/p" + std::to_string(i) + "\n")) << got[i].body;
    EXPECT_TRUE(Contains(got[i].body, i % 2 == 0 || i >= 5 ? "backend=A" : "backend=B"));
  }
  EXPECT_TRUE(Contains(got[5].body, "body_bytes=3\n"));
  EXPECT_EQ(ReadAll(fd.get(), 2s), "");  // closed after the last
}

TEST_F(ProxyTest, EarlyAnswerBeforeTheBodyEndsReachesTheClient) {
  StartProxy();
  std::string file = TempFile(8u << 20);
  auto r = Curl({"-H", "Host: shop.test", "--data-binary", "@" + file, "-w", "\n%{http_code}",
                 Url("/reject")});
  EXPECT_TRUE(r.out.ends_with("too big\n\n413")) << r.out << r.err;
  r = Curl({"-H", "Host: shop.test", "-o", "/dev/null", "-w", "%{http_code}", Url("/")});
  EXPECT_EQ(r.out, "200");
}

TEST_F(ProxyTest, ExpectContinueIsRelayed) {
  StartProxy();
  std::string file = TempFile(8u << 20);
  auto start = Clock::now();
  // Without the relayed 100, curl would wait its whole expect timeout.
  auto r = Curl({"-H", "Host: shop.test", "-H", "Expect: 100-continue", "--expect100-timeout", "10",
                 "--data-binary", "@" + file, Url("/continue")});
  EXPECT_LT(Clock::now() - start, 5s);
  EXPECT_TRUE(Contains(r.out, "body_bytes=" + std::to_string(8u << 20) + "\n")) << r.out << r.err;
}

TEST_F(ProxyTest, UpgradeBecomesATunnel) {
  StartProxy();
  UniqueFd fd = Connect();
  ASSERT_TRUE(net::WriteAll(fd.get(),
                            "GET /ws HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\n"
                            "Upgrade: websocket\r\n\r\nearly",
                            net::DeadlineIn(2s))
                  .ok());
  std::string got;
  char tmp[4096];
  while (!Contains(got, "early")) {
    auto n = net::ReadSome(fd.get(), tmp, sizeof tmp, net::DeadlineIn(5s));
    ASSERT_TRUE(n.ok() && *n > 0) << got;
    got.append(tmp, *n);
  }
  EXPECT_TRUE(got.starts_with("HTTP/1.1 101 ")) << got;
  EXPECT_TRUE(Contains(got, "Upgrade: websocket")) << got;
  for (int i = 0; i < 3; ++i) {
    std::string msg = "frame-" + std::to_string(i) + std::string(100000, 'w');
    ASSERT_TRUE(net::WriteAll(fd.get(), msg, net::DeadlineIn(5s)).ok());
    std::string echo;
    while (echo.size() < msg.size()) {
      auto n = net::ReadSome(fd.get(), tmp, sizeof tmp, net::DeadlineIn(5s));
      ASSERT_TRUE(n.ok() && *n > 0);
      echo.append(tmp, *n);
    }
    EXPECT_EQ(echo, msg);
  }
  ::shutdown(fd.get(), SHUT_WR);
  EXPECT_EQ(ReadAll(fd.get(), 5s), "");
}

TEST_F(ProxyTest, RouteChangesKeepEstablishedConnections) {
  StartProxy(ProxyOptions{.listen = {}, .workers = 1});
  // A tunnel and a keep-alive connection, both on A.
  UniqueFd ws = Connect();
  ASSERT_TRUE(net::WriteAll(ws.get(),
                            "GET /ws HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\n"
                            "Upgrade: websocket\r\n\r\n",
                            net::DeadlineIn(2s))
                  .ok());
  char tmp[4096];
  auto n = net::ReadSome(ws.get(), tmp, sizeof tmp, net::DeadlineIn(5s));
  ASSERT_TRUE(n.ok() && *n > 0);
  UniqueFd ka = Connect();
  ASSERT_TRUE(
      net::WriteAll(ka.get(), "GET /1 HTTP/1.1\r\nHost: shop.test\r\n\r\n", net::DeadlineIn(2s))
          .ok());
  auto got = ReadResponses(ka.get(), 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(Contains(got[0].body, "backend=A"));

  proxy_->SetRoutes(Routes({{"shop", {"shop.test"}, b_->at()}}));
  ASSERT_TRUE(net::WriteAll(ws.get(), "still here", net::DeadlineIn(2s)).ok());
  n = net::ReadSome(ws.get(), tmp, sizeof tmp, net::DeadlineIn(5s));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(tmp, *n), "still here");
  // The next request on the kept connection follows the new routes.
  ASSERT_TRUE(
      net::WriteAll(ka.get(), "GET /2 HTTP/1.1\r\nHost: shop.test\r\n\r\n", net::DeadlineIn(2s))
          .ok());
  got = ReadResponses(ka.get(), 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(Contains(got[0].body, "backend=B")) << got[0].body;
}

TEST_F(ProxyTest, Http10ClientsAndStatsCount) {
  StartProxy();
  auto r = Curl({"--http1.0", "-i", "-H", "Host: shop.test", Url("/old")});
  EXPECT_TRUE(r.out.starts_with("HTTP/1.1 200")) << r.out;
  EXPECT_TRUE(Contains(r.out, "target=/old\n")) << r.out;
  // HTTP/1.0 keep-alive (as ab -k sends it).
  UniqueFd fd = Connect();
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(
        net::WriteAll(fd.get(),
                      "GET /k HTTP/1.0\r\nHost: shop.test\r\nConnection: keep-alive\r\n\r\n",
                      net::DeadlineIn(2s))
            .ok());
    auto got = ReadResponses(fd.get(), 1);
    ASSERT_EQ(got.size(), 1u) << i;
    EXPECT_EQ(got[0].headers.Get("Connection").value_or(""), "keep-alive");
  }
  // Counted just after the last byte is sent, which the client may see first.
  ProxyStats st;
  for (auto deadline = Clock::now() + 2s; Clock::now() < deadline;) {
    st = proxy_->stats();
    if (st.apps["shop"].requests == 3 && st.apps["shop"].open_connections == 0) break;
    std::this_thread::sleep_for(5ms);
  }
  const AppStats& shop = st.apps["shop"];
  EXPECT_EQ(shop.requests, 3u);
  EXPECT_GT(shop.bytes_in, 3u * 30);
  EXPECT_GT(shop.bytes_out, 3u * 100);
  EXPECT_EQ(shop.open_connections, 0);
  EXPECT_GE(st.connections_accepted, 2u);
}

// A move waits for InFlight to reach 0 before it stops the app: idle
// keep-alive connections must not count, a request at the backend must.
TEST_F(ProxyTest, InFlightCountsRequestsAtTheBackendNotIdleConnections) {
  StartProxy();
  UniqueFd idle = Connect();
  ASSERT_TRUE(
      net::WriteAll(idle.get(), "GET /a HTTP/1.1\r\nHost: shop.test\r\n\r\n", net::DeadlineIn(2s))
          .ok());
  ASSERT_EQ(ReadResponses(idle.get(), 1).size(), 1u);
  // A backend that accepts (the kernel's backlog) and never answers.
  auto silent = net::ListenTcp(net::HostPort{"127.0.0.1", 0});
  ASSERT_TRUE(silent.ok());
  net::HostPort silent_at{"127.0.0.1", *net::LocalPort(silent->get())};
  proxy_->SetRoutes(
      Routes({{"shop", {"shop.test"}, a_->at()}, {"mute", {"mute.test"}, silent_at}}));
  UniqueFd waiting = Connect();
  ASSERT_TRUE(net::WriteAll(waiting.get(), "GET /w HTTP/1.1\r\nHost: mute.test\r\n\r\n",
                            net::DeadlineIn(2s))
                  .ok());
  for (auto deadline = Clock::now() + 2s; proxy_->InFlight("mute") == 0 && Clock::now() < deadline;)
    std::this_thread::sleep_for(5ms);
  EXPECT_EQ(proxy_->InFlight("mute"), 1);
  EXPECT_EQ(proxy_->InFlight("shop"), 0);
  waiting.Reset();  // the client gives up: nothing is at the backend any more
  for (auto deadline = Clock::now() + 2s; proxy_->InFlight("mute") != 0 && Clock::now() < deadline;)
    std::this_thread::sleep_for(5ms);
  EXPECT_EQ(proxy_->InFlight("mute"), 0);
}

// A capped backend (RouteSpec::max_conns) sees at most that many requests at
// once; the next waits in the proxy and goes on when one ends.
TEST_F(ProxyTest, CappedBackendQueuesRequestsBeyondItsPlaces) {
  ProxyOptions o;
  o.workers = 1;
  StartProxy(o);
  auto silent = net::ListenTcp(net::HostPort{"127.0.0.1", 0});
  ASSERT_TRUE(silent.ok());
  net::HostPort silent_at{"127.0.0.1", *net::LocalPort(silent->get())};
  proxy_->SetRoutes(Routes({{"mute", {"mute.test"}, silent_at, false, 1}}));
  auto accept_one = [&](int ms) -> UniqueFd {
    struct pollfd p = {silent->get(), POLLIN, 0};
    if (::poll(&p, 1, ms) != 1) return UniqueFd();
    return UniqueFd(::accept4(silent->get(), nullptr, nullptr, SOCK_CLOEXEC));
  };
  UniqueFd first = Connect(), second = Connect();
  ASSERT_TRUE(
      net::WriteAll(first.get(), "GET /1 HTTP/1.1\r\nHost: mute.test\r\n\r\n", net::DeadlineIn(2s))
          .ok());
  UniqueFd up1 = accept_one(2000);
  ASSERT_TRUE(up1.valid());
  ASSERT_TRUE(
      net::WriteAll(second.get(), "GET /2 HTTP/1.1\r\nHost: mute.test\r\n\r\n", net::DeadlineIn(2s))
          .ok());
  EXPECT_FALSE(accept_one(300).valid()) << "the second request passed the cap";
  for (auto deadline = Clock::now() + 2s; proxy_->InFlight("mute") < 2 && Clock::now() < deadline;)
    std::this_thread::sleep_for(5ms);
  EXPECT_EQ(proxy_->InFlight("mute"), 2);  // a queued request counts: it will reach the app
  // The first exchange ends: the backend answers it.
  const char kAnswer[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
  ASSERT_TRUE(net::WriteAll(up1.get(), kAnswer, net::DeadlineIn(2s)).ok());
  auto got = ReadResponses(first.get(), 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].body, "ok");
  UniqueFd up2 = accept_one(2000);
  ASSERT_TRUE(up2.valid()) << "the queued request did not go on";
  ASSERT_TRUE(net::WriteAll(up2.get(), kAnswer, net::DeadlineIn(2s)).ok());
  got = ReadResponses(second.get(), 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].body, "ok");
}

TEST_F(ProxyTest, CappedBackendServesABurstWithoutErrors) {
  StartProxy();
  proxy_->SetRoutes(Routes({{"shop", {"shop.test"}, a_->at(), false, 2}}));
  constexpr int kClients = 24;
  std::vector<std::thread> clients;
  std::vector<std::string> codes(kClients);
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      auto r = RunCommand({"curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w",
                           "%{http_code}", "-H", "Host: shop.test", Url("/b")});
      if (r.ok()) codes[i] = r->out;
    });
  }
  for (auto& t : clients) t.join();
  for (int i = 0; i < kClients; ++i) EXPECT_EQ(codes[i], "200") << i;
  EXPECT_EQ(proxy_->InFlight("shop"), 0);
}

// A port nothing listens on (bound, then closed).
uint16_t ClosedPort() {
  auto fd = net::ListenTcp(net::HostPort{"127.0.0.1", 0});
  EXPECT_TRUE(fd.ok());
  return fd.ok() ? *net::LocalPort(fd->get()) : 9;
}

// A request to another node (a hop route) that does not answer waits and is
// sent again with the routes of the moment: a dead node's app fails over and
// the client gets its answer late instead of a 502.
TEST_F(ProxyTest, RequestToADeadNodeWaitsForTheFailover) {
  StartProxy();
  net::HostPort dead{"127.0.0.1", ClosedPort()};
  proxy_->SetRoutes(Routes({{"shop", {"shop.test"}, dead, true}}));
  std::string out;
  std::thread client([&] {
    auto r = RunCommand({"curl", "-sS", "--max-time", "20", "-H", "Host: shop.test", Url("/x")});
    if (r.ok()) out = r->out;
  });
  std::this_thread::sleep_for(700ms);  // a few attempts at the dead node
  EXPECT_EQ(a_->requests(), 0);
  // The node's lease expired: no route for a moment, until a replica is promoted.
  proxy_->SetRoutes(Routes({{"blog", {"blog.test"}, b_->at()}}));
  std::this_thread::sleep_for(600ms);
  proxy_->SetRoutes(Routes({{"shop", {"shop.test"}, a_->at(), true}}));  // failed over
  client.join();
  EXPECT_TRUE(Contains(out, "backend=A\nmethod=GET\ntarget=/x")) << out;
  // A request with a body is not sent twice: it fails at once.
  proxy_->SetRoutes(Routes({{"shop", {"shop.test"}, dead, true}}));
  auto t0 = Clock::now();
  auto r = Curl({"-H", "Host: shop.test", "--data-binary", "body", "-o", "/dev/null", "-w",
                 "%{http_code}", Url("/post")});
  EXPECT_EQ(r.out, "502");
  EXPECT_LT(Clock::now() - t0, 2s);
  // Nor is a request to an app on this node (its backend is down for real).
  proxy_->SetRoutes(Routes({{"shop", {"shop.test"}, dead, false}}));
  r = Curl({"-H", "Host: shop.test", "-o", "/dev/null", "-w", "%{http_code}", Url("/local")});
  EXPECT_EQ(r.out, "502");
}

// The internal engine (close_when_backend_down): a local backend that is
// down closes the connection, which the sending node's proxy retries.
TEST_F(ProxyTest, InternalEngineClosesWhenItsBackendIsDown) {
  ProxyOptions o;
  o.close_when_backend_down = true;
  StartProxy(o);
  proxy_->SetRoutes(Routes({{"shop", {"shop.test"}, {"127.0.0.1", ClosedPort()}, false}}));
  auto r = RunCommand({"curl", "-sS", "--max-time", "10", "-H", "Host: shop.test", Url("/x")});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 52) << r->out << r->err;  // curl: empty reply from server
}

TEST_F(ProxyTest, RequestToADeadNodeGivesUpAfterTheHoldTimeout) {
  ProxyOptions o;
  o.hold_timeout_ms = 800;
  StartProxy(o);
  net::HostPort dead{"127.0.0.1", ClosedPort()};
  proxy_->SetRoutes(Routes({{"shop", {"shop.test"}, dead, true}}));
  auto t0 = Clock::now();
  auto r = Curl({"-H", "Host: shop.test", "-w", "\n%{http_code}", Url("/x")});
  auto took = Clock::now() - t0;
  EXPECT_TRUE(r.out.ends_with("\n502")) << r.out;
  EXPECT_GE(took, 700ms);
  EXPECT_LT(took, 5s);
}

TEST_F(ProxyTest, UnknownHostGetsA404Page) {
  StartProxy();
  auto r = Curl({"-H", "Host: nope.test", "-w", "\n%{http_code}", Url("/")});
  EXPECT_TRUE(Contains(r.out, "No app is served at <b>nope.test</b>")) << r.out;
  EXPECT_TRUE(r.out.ends_with("\n404")) << r.out;
  r = Curl({"-H", "Host: shop.test.", "-o", "/dev/null", "-w", "%{http_code}", Url("/")});
  EXPECT_EQ(r.out, "200");
}

TEST_F(ProxyTest, BackendDownGives502Quickly) {
  // A port that was just free: nothing listens there.
  auto l = net::ListenTcp(net::HostPort{"127.0.0.93", 0});
  ASSERT_TRUE(l.ok());
  uint16_t dead_port = *net::LocalPort(l->get());
  l->Reset();
  StartProxy();
  proxy_->SetRoutes(Routes({{"dead", {"dead.test"}, {"127.0.0.93", dead_port}}}));
  auto start = Clock::now();
  auto r = Curl({"-H", "Host: dead.test", "-w", "\n%{http_code}", Url("/")});
  EXPECT_LT(Clock::now() - start, 1s);
  EXPECT_TRUE(r.out.ends_with("\n502")) << r.out;
  EXPECT_TRUE(Contains(r.out, "refused")) << r.out;
}

TEST_F(ProxyTest, BackendThatDoesNotAcceptGives502AtTheConnectTimeout) {
  // A listener whose backlog is full: the kernel drops further SYNs, so a
  // connect neither succeeds nor fails.
  UniqueFd full(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  struct sockaddr_in a = {};
  a.sin_family = AF_INET;
  ::inet_pton(AF_INET, "127.0.0.94", &a.sin_addr);
  ASSERT_EQ(::bind(full.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(full.get(), 0), 0);
  uint16_t port = *net::LocalPort(full.get());
  std::vector<UniqueFd> fillers;
  for (int i = 0; i < 3; ++i) {
    UniqueFd f(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    a.sin_port = htons(port);
    (void)::connect(f.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    fillers.push_back(std::move(f));
  }
  std::this_thread::sleep_for(50ms);  // let the handshakes land in the backlog
  StartProxy(ProxyOptions{.listen = {}, .connect_timeout_ms = 400});
  proxy_->SetRoutes(Routes({{"stuck", {"stuck.test"}, {"127.0.0.94", port}}}));
  auto start = Clock::now();
  auto r = Curl({"-H", "Host: stuck.test", "-o", "/dev/null", "-w", "%{http_code}", Url("/")});
  EXPECT_EQ(r.out, "502") << r.err;
  EXPECT_GE(Clock::now() - start, 350ms);
  EXPECT_LT(Clock::now() - start, 2s);
}

TEST_F(ProxyTest, SilentBackendGives504AndSlowBodyGives408) {
  // Accepts, reads, never answers.
  auto l = net::ListenTcp(net::HostPort{"127.0.0.94", 0});
  ASSERT_TRUE(l.ok());
  uint16_t port = *net::LocalPort(l->get());
  std::atomic<bool> done{false};
  std::thread silent([&] {
    std::vector<UniqueFd> held;
    while (!done) {
      struct pollfd p = {l->get(), POLLIN, 0};
      if (::poll(&p, 1, 50) > 0) held.emplace_back(::accept4(l->get(), nullptr, nullptr, 0));
    }
  });
  StartProxy(ProxyOptions{.listen = {}, .body_timeout_ms = 500});
  proxy_->SetRoutes(Routes({{"silent", {"silent.test"}, {"127.0.0.94", port}}}));
  auto r = Curl({"-H", "Host: silent.test", "-o", "/dev/null", "-w", "%{http_code}", Url("/")});
  EXPECT_EQ(r.out, "504") << r.err;
  UniqueFd fd = Connect();
  ASSERT_TRUE(net::WriteAll(fd.get(),
                            "POST / HTTP/1.1\r\nHost: silent.test\r\nContent-Length: 10\r\n\r\n"
                            "12345",
                            net::DeadlineIn(2s))
                  .ok());
  std::string got = ReadAll(fd.get(), 5s);
  EXPECT_TRUE(got.starts_with("HTTP/1.1 408 ")) << got;
  done = true;
  silent.join();
}

TEST_F(ProxyTest, SlowlorisIsCutAtTheHeaderTimeout) {
  StartProxy(ProxyOptions{.listen = {}, .header_timeout_ms = 600});
  UniqueFd fd = Connect();
  auto start = Clock::now();
  std::string partial = "GET / HTTP/1.1\r\nHost: shop.test\r\nX-Slow: ";
  ASSERT_TRUE(net::WriteAll(fd.get(), partial, net::DeadlineIn(1s)).ok());
  // Keeps trickling bytes; the proxy must not wait longer for it.
  std::string got;
  char tmp[4096];
  for (int i = 0; i < 40; ++i) {
    (void)::send(fd.get(), "a", 1, MSG_NOSIGNAL);
    struct pollfd p = {fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      ssize_t n = ::recv(fd.get(), tmp, sizeof tmp, 0);
      if (n <= 0) break;
      got.append(tmp, static_cast<size_t>(n));
    }
  }
  auto elapsed = Clock::now() - start;
  EXPECT_TRUE(got.starts_with("HTTP/1.1 408 ")) << got;
  EXPECT_TRUE(Contains(got, "Connection: close")) << got;
  EXPECT_LT(elapsed, 3s);
  // An idle new connection is cut too.
  UniqueFd idle = Connect();
  start = Clock::now();
  std::string answer = ReadAll(idle.get(), 5s);
  EXPECT_LT(Clock::now() - start, 2s);
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 408 ")) << answer;
}

TEST_F(ProxyTest, HeaderTooLargeGives431) {
  StartProxy();
  auto r = Curl({"-H", "Host: shop.test", "-H", "X-Big: " + std::string(20000, 'b'), "-o",
                 "/dev/null", "-w", "%{http_code}", Url("/")});
  EXPECT_EQ(r.out, "431") << r.err;
  r = Curl({"-H", "Host: shop.test", "-o", "/dev/null", "-w", "%{http_code}", Url("/")});
  EXPECT_EQ(r.out, "200");
}

TEST_F(ProxyTest, MalformedRequestsGet4xxAndTheProxyKeepsServing) {
  StartProxy();
  const std::vector<std::pair<std::string, int>> corpus = {
      {"GET / HTTP/1.1\r\nHost: shop.test\r\n Folded: x\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost : shop.test\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\n\r\n", 400},
      {"GET / HTTP/1.1\nHost: shop.test\n\n", 400},
      {"POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 3\r\nTransfer-Encoding: "
       "chunked\r\n\r\n0\r\n\r\n",
       400},
      {"POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
      {"GET / HTTP/3.0\r\nHost: shop.test\r\n\r\n", 505},
      {std::string("GET / HTTP/1.1\r\nHost: shop.test\r\nX: a\0b\r\n\r\n", 42), 400},
      {"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400},
      {"GET http://x HTTP/1.1\r\nHost: shop.test\r\nHost: blog.test\r\n\r\n", 400},
      {"CONNECT shop.test:443 HTTP/1.1\r\nHost: shop.test\r\n\r\n", 405},
  };
  for (const auto& [bytes, status] : corpus) {
    UniqueFd fd = Connect();
    ASSERT_TRUE(net::WriteAll(fd.get(), bytes, net::DeadlineIn(2s)).ok());
    std::string got = ReadAll(fd.get(), 5s);
    EXPECT_TRUE(got.starts_with("HTTP/1.1 " + std::to_string(status) + " "))
        << "sent " << testing::PrintToString(bytes) << " got " << got;
  }
  // A broken chunked body after a good head ends that connection only.
  UniqueFd fd = Connect();
  ASSERT_TRUE(net::WriteAll(fd.get(),
                            "POST / HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: "
                            "chunked\r\n\r\nzz\r\n",
                            net::DeadlineIn(2s))
                  .ok());
  ReadAll(fd.get(), 5s);
  auto r = Curl({"-H", "Host: shop.test", "-o", "/dev/null", "-w", "%{http_code}", Url("/")});
  EXPECT_EQ(r.out, "200");
  EXPECT_GE(proxy_->stats().errors, corpus.size());
}

TEST_F(ProxyTest, HoldThenReleaseSendsQueuedRequestsToTheNewBackend) {
  StartProxy();
  proxy_->Hold("shop");
  constexpr int kClients = 8;
  std::vector<std::thread> clients;
  std::vector<std::string> outs(kClients);
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      auto r = RunCommand({"curl", "-sS", "--max-time", "20", "-H", "Host: shop.test",
                           "--data-binary", "req" + std::to_string(i), Url("/held")});
      if (r.ok()) outs[i] = r->out;
    });
  }
  auto deadline = Clock::now() + 10s;
  while (proxy_->stats().apps["shop"].held < kClients && Clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(proxy_->stats().apps["shop"].held, static_cast<uint64_t>(kClients));
  EXPECT_EQ(a_->requests(), 0);
  // The app moved to B while held.
  proxy_->SetRoutes(Routes({{"shop", {"shop.test"}, b_->at()}}));
  proxy_->Release("shop");
  for (auto& t : clients) t.join();
  for (int i = 0; i < kClients; ++i) {
    EXPECT_TRUE(Contains(outs[i], "backend=B\nmethod=POST")) << i << ": " << outs[i];
    EXPECT_TRUE(Contains(outs[i], "body_bytes=" + std::to_string(3 + std::to_string(i).size())))
        << outs[i];
  }
  EXPECT_EQ(a_->requests(), 0);
  // Counted just after the last byte is sent, which the client may see first.
  ProxyStats st;
  for (auto deadline = Clock::now() + 2s; Clock::now() < deadline;) {
    st = proxy_->stats();
    if (st.apps["shop"].requests == kClients) break;
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(st.apps["shop"].held, 0u);
  EXPECT_EQ(st.apps["shop"].held_total, static_cast<uint64_t>(kClients));
  EXPECT_EQ(st.apps["shop"].requests, static_cast<uint64_t>(kClients));
  uint64_t in_buckets = 0;
  for (uint64_t b : st.apps["shop"].latency) in_buckets += b;
  EXPECT_EQ(in_buckets, static_cast<uint64_t>(kClients));
}

TEST_F(ProxyTest, HoldTimeoutAndOverflowGive503WithRetryAfter) {
  StartProxy(ProxyOptions{.listen = {}, .hold_max = 1, .hold_timeout_ms = 500});
  proxy_->Hold("shop");
  auto start = Clock::now();
  std::thread first([&] {
    auto r = Curl({"-i", "-H", "Host: shop.test", Url("/")});
    EXPECT_TRUE(r.out.starts_with("HTTP/1.1 503 ")) << r.out;
    EXPECT_TRUE(Contains(r.out, "Retry-After: 2")) << r.out;
  });
  auto deadline = Clock::now() + 5s;
  while (proxy_->stats().apps["shop"].held < 1 && Clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  // The queue is full: the next one is refused at once.
  auto r = Curl({"-i", "-H", "Host: shop.test", Url("/")});
  EXPECT_TRUE(r.out.starts_with("HTTP/1.1 503 ")) << r.out;
  first.join();
  EXPECT_GE(Clock::now() - start, 450ms);
  EXPECT_LT(Clock::now() - start, 3s);
  // Other apps are not held.
  r = Curl({"-H", "Host: blog.test", "-o", "/dev/null", "-w", "%{http_code}", Url("/")});
  EXPECT_EQ(r.out, "200");
  proxy_->Release("shop");
  r = Curl({"-H", "Host: shop.test", "-o", "/dev/null", "-w", "%{http_code}", Url("/")});
  EXPECT_EQ(r.out, "200");
}

TEST_F(ProxyTest, ClientThatGivesUpLeavesTheHoldQueue) {
  StartProxy();
  proxy_->Hold("shop");
  UniqueFd fd = Connect();
  ASSERT_TRUE(
      net::WriteAll(fd.get(), "GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n", net::DeadlineIn(2s))
          .ok());
  auto deadline = Clock::now() + 5s;
  while (proxy_->stats().apps["shop"].held < 1 && Clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(proxy_->stats().apps["shop"].held, 1u);
  fd.Reset();
  deadline = Clock::now() + 2s;  // the hold timeout is 10 s
  while (proxy_->stats().apps["shop"].held > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(proxy_->stats().apps["shop"].held, 0u);
  EXPECT_EQ(proxy_->stats().apps["shop"].open_connections, 0);
  proxy_->Release("shop");
  EXPECT_EQ(a_->requests(), 0);
}

TEST_F(ProxyTest, MaxConnectionsClosesTheExtraOnes) {
  StartProxy(ProxyOptions{.listen = {}, .workers = 1, .max_connections = 2});
  UniqueFd c1 = Connect();
  UniqueFd c2 = Connect();
  // Wait until both are counted, then a third is accepted and closed.
  auto deadline = Clock::now() + 5s;
  while (proxy_->stats().connections_open < 2 && Clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  UniqueFd c3 = Connect();
  EXPECT_EQ(ReadAll(c3.get(), 3s), "");
  EXPECT_EQ(proxy_->stats().connections_refused, 1u);
  ASSERT_TRUE(
      net::WriteAll(c1.get(), "GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n", net::DeadlineIn(2s))
          .ok());
  auto got = ReadResponses(c1.get(), 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].status, 200);
}

}  // namespace
}  // namespace hc::proxy
