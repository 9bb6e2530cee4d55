// The stream proxy engine (src/proxy/stream_proxy.h) against scripted
// backends on loopback (127.0.0.95-97, port 0), with real clients where
// there are ones: Python's imaplib and poplib (IMAP and POP3 clients),
// openssl s_client (TLS passthrough); raw sockets for PostgreSQL's
// handshake and malformed input. The proxy listens on 127.0.0.95.
#include "proxy/stream_proxy.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "common/subprocess.h"
#include "net/socket.h"
#include "test_util.h"

namespace hc::proxy {
namespace {

using namespace std::chrono_literals;

constexpr const char* kProxyHost = "127.0.0.95";
constexpr const char* kBackendHost = "127.0.0.96";

// A backend that runs `serve(fd)` on a thread per connection.
class ScriptedBackend {
 public:
  explicit ScriptedBackend(std::function<void(int)> serve, std::string host = kBackendHost)
      : serve_(std::move(serve)) {
    auto fd = net::ListenTcp(net::HostPort{host, 0});
    EXPECT_TRUE(fd.ok()) << fd.status().ToString();
    listen_ = std::move(*fd);
    at_ = net::HostPort{host, *net::LocalPort(listen_.get())};
    thread_ = std::thread([this] {
      while (!stopping_) {
        int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) {
          if (stopping_) return;
          continue;
        }
        ++connections_;
        std::lock_guard<std::mutex> lock(mu_);
        open_.push_back(fd);
        threads_.emplace_back([this, fd] {
          serve_(fd);
          ::shutdown(fd, SHUT_RDWR);
        });
      }
    });
  }
  ~ScriptedBackend() {
    stopping_ = true;
    (void)::shutdown(listen_.get(), SHUT_RDWR);
    thread_.join();
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int fd : open_) (void)::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : threads_) t.join();
    for (int fd : open_) ::close(fd);
  }
  const net::HostPort& at() const { return at_; }
  int connections() const { return connections_.load(); }

 private:
  std::function<void(int)> serve_;
  UniqueFd listen_;
  net::HostPort at_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connections_{0};
  std::thread thread_;
  std::mutex mu_;
  std::vector<int> open_;
  std::vector<std::thread> threads_;
};

bool SendAll(int fd, std::string_view data) {
  return net::WriteAll(fd, data, net::DeadlineIn(5s)).ok();
}

// Reads until `until` appears (or EOF / 5 s); returns what was read.
std::string ReadUntil(int fd, std::string_view until) {
  std::string got;
  char buf[4096];
  while (got.find(until) == std::string::npos) {
    auto n = net::ReadSome(fd, buf, sizeof buf, net::DeadlineIn(5s));
    if (!n.ok() || *n == 0) break;
    got.append(buf, *n);
  }
  return got;
}

std::string ReadAll(int fd) {
  return ReadUntil(fd, std::string_view("\xff\xfe never", 9));
}

void Echo(int fd) {
  char buf[65536];
  for (;;) {
    auto n = net::ReadSome(fd, buf, sizeof buf, net::DeadlineIn(10s));
    if (!n.ok() || *n == 0) return;
    if (!SendAll(fd, std::string_view(buf, *n))) return;
  }
}

UniqueFd Connect(const net::HostPort& at) {
  auto fd = net::ConnectTcp(at, net::DeadlineIn(2s));
  EXPECT_TRUE(fd.ok()) << at.ToString() << ": " << fd.status().ToString();
  return fd.ok() ? std::move(*fd) : UniqueFd();
}

uint16_t FreePort(const char* host) {
  auto fd = net::ListenTcp(net::HostPort{host, 0});
  return fd.ok() ? *net::LocalPort(fd->get()) : 0;
}

// A PostgreSQL StartupMessage (protocol 3.0) for user/database.
std::string PgStartup(const std::string& user, const std::string& db) {
  std::string body;
  auto put32 = [](std::string* s, uint32_t v) {
    for (int i = 3; i >= 0; --i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  put32(&body, 196608);
  for (const auto& s : {std::string("user"), user, std::string("database"), db}) {
    body += s;
    body.push_back('\0');
  }
  body.push_back('\0');
  std::string msg;
  put32(&msg, static_cast<uint32_t>(body.size() + 4));
  return msg + body;
}

using testing::HaveProgram;
using testing::TempDir;

const std::string kSslRequest("\x00\x00\x00\x08\x04\xd2\x16\x2f", 8);

class StreamProxyTest : public ::testing::Test {
 protected:
  void Start(const std::vector<StreamRouteSpec>& specs, StreamProxyOptions o = {}) {
    o.listen = {{{kProxyHost, 0}, StreamProtocol::kPostgres},
                {{kProxyHost, 0}, StreamProtocol::kImap},
                {{kProxyHost, 0}, StreamProtocol::kPop3},
                {{kProxyHost, 0}, StreamProtocol::kTls}};
    o.tcp_hosts = {kProxyHost};
    o.workers = 2;
    o.server_name = "test";
    proxy_ = std::make_unique<StreamProxy>(o);
    auto routes = StreamRoutes::Build(specs);
    ASSERT_TRUE(routes.ok()) << routes.status().ToString();
    ASSERT_TRUE(proxy_->Start(*routes).ok());
    auto b = proxy_->bound();
    ASSERT_EQ(b.size(), 4u);
    pg_ = b[0];
    imap_ = b[1];
    pop3_ = b[2];
    tls_ = b[3];
  }
  void SetRoutes(const std::vector<StreamRouteSpec>& specs) {
    auto routes = StreamRoutes::Build(specs);
    ASSERT_TRUE(routes.ok()) << routes.status().ToString();
    proxy_->SetRoutes(*routes);
  }
  void TearDown() override {
    if (proxy_) proxy_->Stop();
  }

  std::unique_ptr<StreamProxy> proxy_;
  net::HostPort pg_, imap_, pop3_, tls_;
};

TEST_F(StreamProxyTest, TcpPortRelaysBothWaysAndOpensAndClosesWithTheRoutes) {
  ScriptedBackend echo(Echo);
  uint16_t port = FreePort(kProxyHost);
  Start({});
  SetRoutes({{.app = "db", .backend = echo.at(), .tcp_ports = {port}}});
  UniqueFd c;
  for (int i = 0; i < 100 && !c.valid(); ++i) {
    auto fd = net::ConnectTcp({kProxyHost, port}, net::DeadlineIn(1s));
    if (fd.ok())
      c = std::move(*fd);
    else
      std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(c.valid()) << "tcp port never opened";
  std::string big(3 << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 4099) big[i] = static_cast<char>('a' + i % 26);
  std::thread writer([&] { EXPECT_TRUE(SendAll(c.get(), big)); });
  std::string got;
  char buf[65536];
  while (got.size() < big.size()) {
    auto n = net::ReadSome(c.get(), buf, sizeof buf, net::DeadlineIn(5s));
    if (!n.ok() || *n == 0) break;
    got.append(buf, *n);
  }
  writer.join();
  EXPECT_TRUE(got == big) << got.size();
  c.Reset();
  auto st = proxy_->stats();
  EXPECT_EQ(st.apps["db"].connections, 1u);
  EXPECT_GE(st.apps["db"].bytes_in, big.size());
  // The port closes when the app no longer has it.
  SetRoutes({});
  bool closed = false;
  for (int i = 0; i < 100 && !closed; ++i) {
    closed = !net::ConnectTcp({kProxyHost, port}, net::DeadlineIn(1s)).ok();
    if (!closed) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(closed);
}

TEST_F(StreamProxyTest, PostgresAnswersSslRequestWithNAndRoutesByDatabase) {
  std::string seen;
  std::mutex mu;
  ScriptedBackend shop([&](int fd) {
    std::string startup = PgStartup("alice", "shop");
    std::string got;
    char buf[4096];
    while (got.size() < startup.size()) {
      auto n = net::ReadSome(fd, buf, sizeof buf, net::DeadlineIn(5s));
      if (!n.ok() || *n == 0) break;
      got.append(buf, *n);
    }
    {
      std::lock_guard<std::mutex> l(mu);
      seen = got;
    }
    SendAll(fd, "R-from-shop");
  });
  Start({{.app = "shop", .backend = shop.at(), .databases = {"shop"}}});
  UniqueFd c = Connect(pg_);
  ASSERT_TRUE(SendAll(c.get(), kSslRequest));
  EXPECT_EQ(ReadUntil(c.get(), "N"), "N");
  ASSERT_TRUE(SendAll(c.get(), PgStartup("alice", "shop")));
  EXPECT_EQ(ReadUntil(c.get(), "R-from-shop"), "R-from-shop");
  std::lock_guard<std::mutex> l(mu);
  EXPECT_EQ(seen, PgStartup("alice", "shop")) << "the startup message reaches the backend as sent";
}

TEST_F(StreamProxyTest, PostgresUnknownDatabaseGetsAnErrorResponse) {
  Start({});
  UniqueFd c = Connect(pg_);
  ASSERT_TRUE(SendAll(c.get(), kSslRequest + PgStartup("alice", "nope")));
  std::string got = ReadAll(c.get());
  ASSERT_GE(got.size(), 2u);
  EXPECT_EQ(got[0], 'N');
  EXPECT_EQ(got[1], 'E') << "an ErrorResponse";
  EXPECT_NE(got.find("3D000"), std::string::npos);
  EXPECT_NE(got.find("nope"), std::string::npos) << got;
}

TEST_F(StreamProxyTest, MalformedInputIsAnsweredAndClosedAndTheProxyStaysHealthy) {
  ScriptedBackend echo(Echo);
  Start({{.app = "shop", .backend = echo.at(), .databases = {"shop"}}});
  const std::vector<std::pair<net::HostPort, std::string>> corpus = {
      {pg_, std::string("\x00\x00\x00\x04", 4)},                              // too short
      {pg_, std::string("\x7f\xff\xff\xff\x00\x03\x00\x00", 8)},              // too long
      {pg_, std::string("\x00\x00\x00\x10\x00\x02\x00\x00user\0x\0\0", 16)},  // protocol 2
      {pg_, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
      {imap_, std::string(9000, 'a') + "\r\n"},
      {pop3_, "USER\r\nPASS\r\nAUTH NOPE\r\nXYZZY\r\n"},
      {tls_, "GET / HTTP/1.1\r\n\r\n"},
      {tls_, std::string("\x16\x03\x01\xff\xff", 5) + std::string(100, '\0')},
  };
  for (const auto& [at, bytes] : corpus) {
    UniqueFd c = Connect(at);
    SendAll(c.get(), bytes);
    ::shutdown(c.get(), SHUT_WR);
    ReadAll(c.get());  // answered (or not) and closed, within the deadline
  }
  EXPECT_EQ(echo.connections(), 0) << "nothing malformed reached a backend";
  // Still serving.
  UniqueFd c = Connect(pg_);
  ASSERT_TRUE(SendAll(c.get(), PgStartup("a", "shop") + "ping"));
  std::string want = PgStartup("a", "shop") + "ping";
  EXPECT_EQ(ReadUntil(c.get(), "ping"), want);
  EXPECT_GE(proxy_->stats().malformed, 5u);
}

// A fake IMAP server: greets, accepts the replayed login, answers
// CAPABILITY, SELECT and LOGOUT.
void FakeImap(int fd, std::atomic<int>* logins) {
  SendAll(fd, "* OK fake IMAP ready\r\n");
  std::string buf;
  char tmp[4096];
  for (;;) {
    size_t eol;
    while ((eol = buf.find("\r\n")) == std::string::npos) {
      auto n = net::ReadSome(fd, tmp, sizeof tmp, net::DeadlineIn(5s));
      if (!n.ok() || *n == 0) return;
      buf.append(tmp, *n);
    }
    std::string line = buf.substr(0, eol);
    buf.erase(0, eol + 2);
    std::string tag = line.substr(0, line.find(' '));
    std::string cmd = line.substr(tag.size() + 1);
    for (auto& ch : cmd) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    if (cmd.starts_with("LOGIN")) {
      bool ok = line.find("alice@example.com") != std::string::npos &&
                line.find("s3cret") != std::string::npos;
      if (ok) ++*logins;
      SendAll(fd, tag + (ok ? " OK [CAPABILITY IMAP4rev1] logged in\r\n" : " NO bad\r\n"));
    } else if (cmd.starts_with("CAPABILITY")) {
      SendAll(fd, "* CAPABILITY IMAP4rev1\r\n" + tag + " OK\r\n");
    } else if (cmd.starts_with("SELECT")) {
      SendAll(fd, "* 3 EXISTS\r\n* 0 RECENT\r\n" + tag + " OK [READ-WRITE] SELECT done\r\n");
    } else if (cmd.starts_with("LOGOUT")) {
      SendAll(fd, "* BYE\r\n" + tag + " OK\r\n");
      return;
    } else {
      SendAll(fd, tag + " BAD what\r\n");
    }
  }
}

TEST_F(StreamProxyTest, ImapClientLogsInThroughTheProxyToTheDomainsBackend) {
  if (!HaveProgram("python3")) GTEST_SKIP() << "skipped: python3 not installed";
  std::atomic<int> logins{0};
  ScriptedBackend mail([&](int fd) { FakeImap(fd, &logins); });
  Start({{.app = "mail", .backend = mail.at(), .imap_domains = {"example.com"}}});
  std::string script =
      "import imaplib,sys\n"
      "m=imaplib.IMAP4(sys.argv[1],int(sys.argv[2]))\n"
      "m.login('alice@example.com','s3cret')\n"
      "typ,data=m.select('INBOX')\n"
      "print(typ,data[0].decode())\n"
      "m.logout()\n";
  auto r = RunCommand({"python3", "-c", script, imap_.host, std::to_string(imap_.port)});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->out, "OK 3\n") << r->err;
  EXPECT_EQ(logins.load(), 1);
  // A login for a domain no app serves is refused by the proxy itself.
  std::string other =
      "import imaplib,sys\n"
      "m=imaplib.IMAP4(sys.argv[1],int(sys.argv[2]))\n"
      "try:\n m.login('bob@elsewhere.org','x')\nexcept imaplib.IMAP4.error as e:\n print('NO',e)\n";
  r = RunCommand({"python3", "-c", other, imap_.host, std::to_string(imap_.port)});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->out.starts_with("NO")) << r->out << r->err;
  EXPECT_EQ(mail.connections(), 1);
}

void FakePop3(int fd, std::atomic<int>* logins) {
  SendAll(fd, "+OK fake POP3 ready\r\n");
  std::string buf;
  char tmp[4096];
  bool user_ok = false;
  for (;;) {
    size_t eol;
    while ((eol = buf.find("\r\n")) == std::string::npos) {
      auto n = net::ReadSome(fd, tmp, sizeof tmp, net::DeadlineIn(5s));
      if (!n.ok() || *n == 0) return;
      buf.append(tmp, *n);
    }
    std::string line = buf.substr(0, eol);
    buf.erase(0, eol + 2);
    if (line.starts_with("USER ")) {
      user_ok = line == "USER bob@example.org";
      SendAll(fd, "+OK\r\n");
    } else if (line.starts_with("PASS ")) {
      bool ok = user_ok && line == "PASS pw0rd";
      if (ok) ++*logins;
      SendAll(fd, ok ? "+OK logged in\r\n" : "-ERR no\r\n");
    } else if (line == "STAT") {
      SendAll(fd, "+OK 2 320\r\n");
    } else if (line == "QUIT") {
      SendAll(fd, "+OK bye\r\n");
      return;
    } else {
      SendAll(fd, "-ERR what\r\n");
    }
  }
}

TEST_F(StreamProxyTest, Pop3ClientLogsInThroughTheProxy) {
  if (!HaveProgram("python3")) GTEST_SKIP() << "skipped: python3 not installed";
  std::atomic<int> logins{0};
  ScriptedBackend mail([&](int fd) { FakePop3(fd, &logins); });
  Start({{.app = "mail", .backend = mail.at(), .pop3_domains = {"example.org"}}});
  std::string script =
      "import poplib,sys\n"
      "p=poplib.POP3(sys.argv[1],int(sys.argv[2]))\n"
      "p.user('bob@example.org')\n"
      "p.pass_('pw0rd')\n"
      "print(p.stat())\n"
      "p.quit()\n";
  auto r = RunCommand({"python3", "-c", script, pop3_.host, std::to_string(pop3_.port)});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->out, "(2, 320)\n") << r->err;
  EXPECT_EQ(logins.load(), 1);
}

TEST_F(StreamProxyTest, HopLineRoutesToALocalAppOnly) {
  ScriptedBackend echo(Echo);
  ScriptedBackend elsewhere(Echo, "127.0.0.97");
  Start({{.app = "here", .backend = echo.at(), .databases = {"here"}},
         {.app = "there", .backend = elsewhere.at(), .hop = true, .databases = {"there"}}});
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  proxy_->Adopt(UniqueFd(sv[1]), "10.0.0.1", StreamProtocol::kHop);
  UniqueFd c(sv[0]);
  ASSERT_TRUE(SendAll(c.get(), HopLine("here") + "hello"));
  EXPECT_EQ(ReadUntil(c.get(), "hello"), "hello");
  c.Reset();
  // An app this node reaches only over a hop is not served to a hop (no loops).
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  proxy_->Adopt(UniqueFd(sv[1]), "10.0.0.1", StreamProtocol::kHop);
  UniqueFd d(sv[0]);
  ASSERT_TRUE(SendAll(d.get(), HopLine("there") + "hello"));
  EXPECT_EQ(ReadAll(d.get()), "");
  EXPECT_EQ(elsewhere.connections(), 0);
}

TEST_F(StreamProxyTest, RoutesToARemoteAppStartWithTheHopLine) {
  std::string seen;
  std::mutex mu;
  ScriptedBackend channel([&](int fd) {
    std::string got = ReadUntil(fd, "ping");
    std::lock_guard<std::mutex> l(mu);
    seen = got;
  });
  Start({{.app = "shop", .backend = channel.at(), .hop = true, .databases = {"shop"}}});
  UniqueFd c = Connect(pg_);
  ASSERT_TRUE(SendAll(c.get(), PgStartup("a", "shop") + "ping"));
  ReadAll(c.get());
  std::lock_guard<std::mutex> l(mu);
  EXPECT_EQ(seen, HopLine("shop") + PgStartup("a", "shop") + "ping");
}

TEST_F(StreamProxyTest, HeldConnectionsWaitAndGoToTheBackendOfTheRoutesAtRelease) {
  ScriptedBackend old_site([](int fd) { SendAll(fd, "old"); });
  ScriptedBackend new_site([](int fd) { SendAll(fd, "new"); }, "127.0.0.97");
  uint16_t port = FreePort(kProxyHost);
  Start({{.app = "db", .backend = old_site.at(), .tcp_ports = {port}}});
  proxy_->Hold("db");
  std::vector<std::thread> clients;
  std::atomic<int> got_new{0};
  UniqueFd probe;
  for (int i = 0; i < 100 && !probe.valid(); ++i) {
    auto fd = net::ConnectTcp({kProxyHost, port}, net::DeadlineIn(1s));
    if (fd.ok())
      probe = std::move(*fd);
    else
      std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(probe.valid());
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&] {
      UniqueFd c = Connect({kProxyHost, port});
      if (ReadAll(c.get()) == "new") ++got_new;
    });
  }
  for (int i = 0; i < 100 && proxy_->stats().apps["db"].held < 9; ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(proxy_->stats().apps["db"].held, 9u);
  EXPECT_EQ(old_site.connections(), 0);
  SetRoutes({{.app = "db", .backend = new_site.at(), .tcp_ports = {port}}});
  proxy_->Release("db");
  for (auto& t : clients) t.join();
  EXPECT_EQ(ReadAll(probe.get()), "new");
  EXPECT_EQ(got_new.load(), 8);
  EXPECT_EQ(old_site.connections(), 0);
}

TEST_F(StreamProxyTest, HoldDeadlineAnswersPostgresClientsInTheirProtocol) {
  ScriptedBackend shop(Echo);
  StreamProxyOptions o;
  o.hold_timeout_ms = 300;
  Start({{.app = "shop", .backend = shop.at(), .databases = {"shop"}}}, o);
  proxy_->Hold("shop");
  UniqueFd c = Connect(pg_);
  ASSERT_TRUE(SendAll(c.get(), PgStartup("a", "shop")));
  std::string got = ReadAll(c.get());
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got[0], 'E');
  EXPECT_NE(got.find("57P03"), std::string::npos) << got;
  EXPECT_EQ(shop.connections(), 0);
}

TEST_F(StreamProxyTest, TlsPassthroughRelaysTheHandshakeToTheApp) {
  if (!HaveProgram("openssl")) GTEST_SKIP() << "skipped: openssl not installed";
  TempDir dir;
  std::string key = dir.path() + "/k.pem", crt = dir.path() + "/c.pem";
  auto gen = RunCommand({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                         "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt, "-days",
                         "1", "-subj", "/CN=secure.example.com"});
  ASSERT_TRUE(gen.ok() && gen->exit_code == 0);
  // The "app": openssl s_server on the backend address.
  uint16_t app_port = FreePort(kBackendHost);
  auto server = Subprocess::Spawn(
      {"openssl", "s_server", "-accept", std::string(kBackendHost) + ":" + std::to_string(app_port),
       "-cert", crt, "-key", key, "-www", "-quiet"},
      false, false);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  for (int i = 0; i < 100; ++i) {
    if (net::ConnectTcp({kBackendHost, app_port}, net::DeadlineIn(1s)).ok()) break;
    std::this_thread::sleep_for(20ms);
  }
  Start({{.app = "secure",
          .backend = {kBackendHost, app_port},
          .tls_passthrough = {"secure.example.com"}}});
  auto r = RunCommand({"curl", "-s", "--max-time", "5", "--cacert", crt, "--resolve",
                       "secure.example.com:" + std::to_string(tls_.port) + ":" + tls_.host,
                       "https://secure.example.com:" + std::to_string(tls_.port) + "/"});
  server->Kill();
  (void)server->Wait();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 0) << r->err;
  EXPECT_NE(r->out.find("s_server"), std::string::npos) << "the app's own TLS answered";
  // A name no app passes through, with no terminator: closed.
  r = RunCommand({"curl", "-s", "--max-time", "5", "-k", "--resolve",
                  "other.example.com:" + std::to_string(tls_.port) + ":" + tls_.host,
                  "https://other.example.com:" + std::to_string(tls_.port) + "/"});
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->exit_code, 0);
}

}  // namespace
}  // namespace hc::proxy
