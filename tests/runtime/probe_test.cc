// Readiness probes against real loopback listeners that answer well, badly or
// not at all.
#include "runtime/probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.h"

namespace hc::runtime {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

// A TCP socket bound to 127.0.0.1 on a free port and not listening: connects
// are refused, and the port stays ours.
UniqueFd BindLoopback(uint16_t* port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_TRUE(fd.valid());
  struct sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  EXPECT_EQ(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  *port = ntohs(addr.sin_port);
  return fd;
}

// Serves one connection at a time on a thread. For each connection it reads
// the request (up to its blank line or the client's EOF), then sends the
// pieces `respond` returns, a few ms apart, and closes. nullopt means stay
// silent until the client hangs up.
class TestServer {
 public:
  using Respond = std::function<std::optional<std::vector<std::string>>(int n)>;

  explicit TestServer(Respond respond, int listen_after_ms = 0)
      : respond_(std::move(respond)), listen_after_ms_(listen_after_ms) {
    listen_fd_ = BindLoopback(&port_);
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    stop_read_ = UniqueFd(p[0]);
    stop_write_ = UniqueFd(p[1]);
    if (listen_after_ms_ == 0) {
      EXPECT_EQ(::listen(listen_fd_.get(), 16), 0);
    }
    thread_ = std::thread([this] { Run(); });
  }

  ~TestServer() {
    EXPECT_EQ(::write(stop_write_.get(), "x", 1), 1);
    thread_.join();
  }

  uint16_t port() const { return port_; }
  int connections() const { return connections_.load(); }
  std::string last_request() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_request_;
  }

 private:
  // Waits for `fd` to be readable; false when asked to stop.
  bool WaitReadable(int fd, int timeout_ms = -1) {
    struct pollfd p[2] = {{fd, POLLIN, 0}, {stop_read_.get(), POLLIN, 0}};
    int r = ::poll(p, 2, timeout_ms);
    return r > 0 && p[1].revents == 0;
  }

  void Run() {
    if (listen_after_ms_ > 0) {
      // Stop requests during the delay end the thread early.
      struct pollfd p = {stop_read_.get(), POLLIN, 0};
      if (::poll(&p, 1, listen_after_ms_) != 0) return;
      ASSERT_EQ(::listen(listen_fd_.get(), 16), 0);
    }
    while (WaitReadable(listen_fd_.get())) {
      UniqueFd conn(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn.valid()) continue;
      int one = 1;
      ::setsockopt(conn.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      int n = connections_.fetch_add(1);
      std::string request;
      char buf[512];
      while (request.find("\r\n\r\n") == std::string::npos && WaitReadable(conn.get())) {
        ssize_t got = ::read(conn.get(), buf, sizeof buf);
        if (got <= 0) break;
        request.append(buf, static_cast<size_t>(got));
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        last_request_ = request;
      }
      std::optional<std::vector<std::string>> pieces = respond_(n);
      if (!pieces) {
        while (WaitReadable(conn.get()) && ::read(conn.get(), buf, sizeof buf) > 0) {
        }
        continue;
      }
      for (size_t i = 0; i < pieces->size(); ++i) {
        if (i > 0) WaitReadable(stop_read_.get(), 10);  // let the client see each piece
        const std::string& piece = (*pieces)[i];
        (void)::send(conn.get(), piece.data(), piece.size(), MSG_NOSIGNAL);
      }
    }
  }

  Respond respond_;
  int listen_after_ms_;
  uint16_t port_ = 0;
  UniqueFd listen_fd_, stop_read_, stop_write_;
  std::atomic<int> connections_{0};
  std::mutex mu_;
  std::string last_request_;
  std::thread thread_;
};

TestServer::Respond Always(std::string response) {
  return [response](int) { return std::vector<std::string>{response}; };
}

ReadinessProbe Tcp() {
  ReadinessProbe p;
  p.kind = ProbeKind::kTcp;
  return p;
}

ReadinessProbe Http(std::string path = "/") {
  ReadinessProbe p;
  p.kind = ProbeKind::kHttp;
  p.http_path = std::move(path);
  return p;
}

std::string Where(uint16_t port) {
  return "127.0.0.1:" + std::to_string(port);
}

int64_t MsSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

TEST(ProbeTest, NoneAlwaysSucceeds) {
  ReadinessProbe p;
  p.kind = ProbeKind::kNone;
  EXPECT_TRUE(ProbeOnce(p, 0, 0).ok());
  EXPECT_TRUE(WaitForProbe(p, 1, 0).ok());
}

TEST(ProbeTest, TcpSucceedsWhenListening) {
  TestServer server(Always(""));
  Status s = ProbeOnce(Tcp(), server.port(), 1000);
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST(ProbeTest, TcpReportsConnectionRefused) {
  uint16_t port;
  UniqueFd reserved = BindLoopback(&port);
  Status s = ProbeOnce(Tcp(), port, 1000);
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_EQ(s.message(), "connection refused on " + Where(port));
}

TEST(ProbeTest, HttpSendsGetForPathAndAccepts200) {
  TestServer server(Always("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
  Status s = ProbeOnce(Http("/healthz?x=1"), server.port(), 1000);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(server.last_request(),
            "GET /healthz?x=1 HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: hc-probe\r\n\r\n");
}

TEST(ProbeTest, HttpCodesBelow500AreReady) {
  for (const char* line :
       {"HTTP/1.0 204 No Content", "HTTP/1.1 302 Found", "HTTP/1.1 404", "HTTP/1.1 499 Whatever"}) {
    TestServer server(Always(std::string(line) + "\r\n\r\n"));
    Status s = ProbeOnce(Http(), server.port(), 1000);
    EXPECT_TRUE(s.ok()) << line << ": " << s.ToString();
  }
}

TEST(ProbeTest, Http503IsNotReady) {
  TestServer server(Always("HTTP/1.1 503 Service Unavailable\r\n\r\n"));
  Status s = ProbeOnce(Http(), server.port(), 1000);
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_EQ(s.message(), "HTTP 503 from " + Where(server.port()));
}

TEST(ProbeTest, HttpStatusLineMayArriveInPieces) {
  TestServer server([](int) {
    return std::vector<std::string>{"HT", "TP/1.1 2", "00 OK\r", "\n\r\n"};
  });
  Status s = ProbeOnce(Http(), server.port(), 2000);
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST(ProbeTest, HttpRejectsGarbageAsNotHttp) {
  const std::vector<std::string> garbage = {
      "SSH-2.0-OpenSSH_9.6\r\n",  std::string("\0\1\2\xff\xfe binary", 12),
      "HTTP/1.1 abc OK\r\n\r\n",  "HTTP/1.1 20\r\n\r\n",
      "HTTP/1.1 2000 OK\r\n\r\n", "HTTP/x.1 200 OK\r\n\r\n",
      "http/1.1 200 OK\r\n\r\n",  "HTTP/1.1 099 Low\r\n\r\n",
  };
  for (const std::string& g : garbage) {
    TestServer server(Always(g));
    Status s = ProbeOnce(Http(), server.port(), 1000);
    EXPECT_EQ(s.code(), Code::kUnavailable) << g;
    EXPECT_THAT(s.message(), HasSubstr("not HTTP from " + Where(server.port()))) << g;
  }
}

TEST(ProbeTest, HttpReadsAtMost1KiBLookingForTheStatusLine) {
  // Looks like the start of a status line but never ends it.
  TestServer server(Always("HTTP/1.1 200 " + std::string(64 * 1024, 'a')));
  Status s = ProbeOnce(Http(), server.port(), 2000);
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("no status line in the first 1024 bytes"));
}

TEST(ProbeTest, HttpReportsCloseBeforeStatusLine) {
  TestServer server(Always("HTTP/1.1 2"));
  Status s = ProbeOnce(Http(), server.port(), 1000);
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("closed the connection before sending an HTTP status line"));
}

TEST(ProbeTest, HttpTimesOutOnSilence) {
  TestServer server([](int) { return std::nullopt; });
  auto start = Clock::now();
  Status s = ProbeOnce(Http(), server.port(), 200);
  EXPECT_GE(MsSince(start), 200);
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("timed out after 200 ms"));
  EXPECT_THAT(s.message(), HasSubstr(Where(server.port())));
}

TEST(ProbeTest, HttpPathThatCouldInjectHeadersIsInvalid) {
  for (const char* path : {"/a\r\nX-Evil: 1", "/a b", "healthz", ""}) {
    Status s = ProbeOnce(Http(path), 8080, 100);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << path;
  }
}

TEST(ProbeTest, WaitSucceedsWhenListenerAppearsLater) {
  TestServer server(Always("HTTP/1.1 200 OK\r\n\r\n"), /*listen_after_ms=*/100);
  auto start = Clock::now();
  Status s = WaitForProbe(Http(), server.port(), 10000);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_GE(MsSince(start), 100);
}

TEST(ProbeTest, WaitRetriesUntilHttpBecomesReady) {
  TestServer server([](int n) {
    return std::vector<std::string>{n < 3 ? "HTTP/1.1 503 Busy\r\n\r\n"
                                          : "HTTP/1.1 200 OK\r\n\r\n"};
  });
  Status s = WaitForProbe(Http(), server.port(), 10000);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(server.connections(), 4);
}

TEST(ProbeTest, WaitTimesOutWithLastError) {
  uint16_t port;
  UniqueFd reserved = BindLoopback(&port);
  auto start = Clock::now();
  Status s = WaitForProbe(Tcp(), port, 150);
  EXPECT_GE(MsSince(start), 150);
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_EQ(s.message(), "not ready after 150 ms: connection refused on " + Where(port));
}

TEST(ProbeTest, WaitLimitsTheLastAttemptToTheTimeLeft) {
  TestServer server([](int) { return std::nullopt; });
  auto start = Clock::now();
  Status s = WaitForProbe(Http(), server.port(), 300);
  int64_t took = MsSince(start);
  EXPECT_GE(took, 300);
  EXPECT_LT(took, 1300);  // not a whole 1000 ms attempt past the deadline
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("not ready after 300 ms: timed out after"));
}

TEST(ProbeTest, WaitReturnsKeepGoingError) {
  uint16_t port;
  UniqueFd reserved = BindLoopback(&port);
  int calls = 0;
  Status s = WaitForProbe(Tcp(), port, 10000, [&calls] {
    return ++calls < 3 ? Status::Ok() : Unavailable("the app exited with code 1");
  });
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_EQ(s.message(), "the app exited with code 1");
}

TEST(ProbeTest, WaitBacksOffBetweenAttempts) {
  uint16_t port;
  UniqueFd reserved = BindLoopback(&port);
  int calls = 0;
  Status s = WaitForProbe(Tcp(), port, 400, [&calls] {
    ++calls;
    return Status::Ok();
  });
  EXPECT_FALSE(s.ok());
  // Sleeps of 5, 10, 20, 40, 80, 100, 100, ... ms: about 8 attempts in 400 ms.
  EXPECT_GE(calls, 3);
  EXPECT_LE(calls, 12);
}

}  // namespace
}  // namespace hc::runtime
