// The DNS server's I/O on loopback (127.0.0.70, port 0): answers to the real
// `dig` over UDP and TCP, truncation and the TCP retry, and raw sockets for
// what dig cannot show (pipelining, idle and connection limits, garbage,
// bursts, responder switches, shutdown, bind errors).
#include "dns/server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "dns/wire.h"
#include "net/socket.h"

namespace hc::dns {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kHost = "127.0.0.70";
constexpr const char* kDig = "/usr/bin/dig";

// Answers every A query with `count` A records base, base+1, ... for the
// queried name; honours the EDNS size over UDP (512 without EDNS, at most
// 1232). Anything that does not parse as a query is dropped.
class TestResponder : public Responder {
 public:
  explicit TestResponder(uint8_t last_octet, int count = 1)
      : last_octet_(last_octet), count_(count) {}

  size_t Respond(std::span<const uint8_t> query, Transport transport,
                 std::span<uint8_t> out) const override {
    Query q;
    if (ParseQuery(query, &q) != ParseOutcome::kOk) return 0;
    ResponseBuilder b(q, true, rcode::kNoError);
    for (int i = 0; i < count_; ++i) {
      const uint8_t addr[4] = {192, 0, 2, static_cast<uint8_t>(last_octet_ + i)};
      b.AddA(ResponseBuilder::kAnswer, q.qname, 60, addr);
    }
    if (q.edns.present) b.AddOpt(kMaxUdpPayloadDefault, 0);
    size_t limit = 65535;
    if (transport == Transport::kUdp) {
      limit = q.edns.present ? std::min<size_t>(q.edns.udp_size, kMaxUdpPayloadDefault) : 512;
    }
    std::vector<uint8_t> packet = b.Finish(limit);
    if (packet.size() > out.size()) return 0;
    std::copy(packet.begin(), packet.end(), out.begin());
    return packet.size();
  }

 private:
  const uint8_t last_octet_;
  const int count_;
};

ServerOptions Options(const std::string& host = kHost) {
  ServerOptions o;
  o.listen = {net::HostPort{host, 0}};
  o.udp_workers = 2;
  o.tcp_idle_timeout_ms = 5000;
  return o;
}

std::unique_ptr<Server> StartServer(ServerOptions opts,
                                    std::shared_ptr<const Responder> responder = nullptr) {
  if (responder == nullptr) responder = std::make_shared<TestResponder>(1);
  auto server = std::make_unique<Server>(std::move(opts));
  Status s = server->Start(std::move(responder));
  EXPECT_TRUE(s.ok()) << s.ToString();
  return server;
}

uint16_t PortOf(const Server& s) {
  auto b = s.bound();
  return b.empty() ? 0 : b[0].port;
}

// A query for `name` type A with ID `id` (RD set), optionally with EDNS.
std::vector<uint8_t> MakeQuery(uint16_t id, const std::string& name, bool edns = false) {
  std::vector<uint8_t> q = {
      static_cast<uint8_t>(id >> 8),     static_cast<uint8_t>(id), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0,
      static_cast<uint8_t>(edns ? 1 : 0)};
  auto wire = NameToWire(name);
  EXPECT_TRUE(wire.ok()) << wire.status().ToString();
  q.insert(q.end(), wire->begin(), wire->end());
  q.insert(q.end(), {0, type::kA, 0, kClassIN});
  if (edns) q.insert(q.end(), {0, 0, type::kOPT, 0x04, 0xd0, 0, 0, 0, 0, 0, 0});
  return q;
}

uint16_t IdOf(const std::vector<uint8_t>& r) {
  return r.size() < 2 ? 0 : static_cast<uint16_t>(r[0] << 8 | r[1]);
}
bool Truncated(const std::vector<uint8_t>& r) {
  return r.size() >= 4 && (r[2] & 0x02) != 0;
}
uint16_t AnswerCount(const std::vector<uint8_t>& r) {
  return r.size() < 8 ? 0 : static_cast<uint16_t>(r[6] << 8 | r[7]);
}
// The last octet of the address in a response with one A record and no OPT.
int LastOctet(const std::vector<uint8_t>& r) {
  return r.size() < kHeaderSize + 4 ? -1 : r.back();
}

struct sockaddr_in Loopback(uint16_t port) {
  struct sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  EXPECT_EQ(::inet_pton(AF_INET, kHost, &a.sin_addr), 1);
  return a;
}

UniqueFd UdpSocket() {
  UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  EXPECT_TRUE(fd.valid()) << std::strerror(errno);
  return fd;
}

bool WaitReadable(int fd, std::chrono::milliseconds timeout) {
  struct pollfd p = {fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
}

void SendTo(int fd, const std::vector<uint8_t>& packet, uint16_t port) {
  struct sockaddr_in to = Loopback(port);
  ASSERT_EQ(
      ::sendto(fd, packet.data(), packet.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to),
      static_cast<ssize_t>(packet.size()))
      << std::strerror(errno);
}

// One datagram, or nothing within the timeout.
std::optional<std::vector<uint8_t>> Receive(int fd, std::chrono::milliseconds timeout = 2s) {
  if (!WaitReadable(fd, timeout)) return std::nullopt;
  std::vector<uint8_t> buf(65536);
  ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
  if (n < 0) return std::nullopt;
  buf.resize(static_cast<size_t>(n));
  return buf;
}

std::optional<std::vector<uint8_t>> UdpExchange(uint16_t port, const std::vector<uint8_t>& q) {
  UniqueFd fd = UdpSocket();
  SendTo(fd.get(), q, port);
  return Receive(fd.get());
}

UniqueFd TcpConnect(uint16_t port, const std::string& host = kHost) {
  auto fd = net::ConnectTcp(net::HostPort{host, port}, net::DeadlineIn(2s));
  EXPECT_TRUE(fd.ok()) << fd.status().ToString();
  return fd.ok() ? std::move(*fd) : UniqueFd();
}

std::string Framed(const std::vector<uint8_t>& msg) {
  std::string s = {static_cast<char>(msg.size() >> 8), static_cast<char>(msg.size() & 0xff)};
  s.append(msg.begin(), msg.end());
  return s;
}

void TcpSend(int fd, std::string_view bytes) {
  Status s = net::WriteAll(fd, bytes, net::DeadlineIn(2s));
  ASSERT_TRUE(s.ok()) << s.ToString();
}

// Reads exactly n bytes; false on EOF, error or timeout.
bool ReadExactly(int fd, uint8_t* buf, size_t n, net::Deadline deadline) {
  size_t got = 0;
  while (got < n) {
    auto r = net::ReadSome(fd, reinterpret_cast<char*>(buf + got), n - got, deadline);
    if (!r.ok() || *r == 0) return false;
    got += *r;
  }
  return true;
}

// One length-prefixed message, or nothing on EOF / timeout.
std::optional<std::vector<uint8_t>> TcpReceive(int fd, std::chrono::milliseconds timeout = 2s) {
  net::Deadline deadline = net::DeadlineIn(timeout);
  uint8_t len[2];
  if (!ReadExactly(fd, len, 2, deadline)) return std::nullopt;
  std::vector<uint8_t> msg(static_cast<size_t>(len[0] << 8 | len[1]));
  if (!ReadExactly(fd, msg.data(), msg.size(), deadline)) return std::nullopt;
  return msg;
}

// Whether the server closed the connection (EOF or reset) within timeout.
bool ClosedByPeer(int fd, std::chrono::milliseconds timeout) {
  char c;
  auto r = net::ReadSome(fd, &c, 1, net::DeadlineIn(timeout));
  if (r.ok()) return *r == 0;
  return r.status().message().find("timed out") == std::string::npos;
}

bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout = 2s) {
  auto deadline = Clock::now() + timeout;
  while (!cond()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// A worker adds to the counters after sending its batch, so a client may
// see its answer first: wait until the counters satisfy `pred`.
::testing::AssertionResult StatsSoon(const Server& server,
                                     const std::function<bool(const ServerStats&)>& pred) {
  if (WaitFor([&] { return pred(server.stats()); })) return ::testing::AssertionSuccess();
  ServerStats s = server.stats();
  return ::testing::AssertionFailure()
         << "stats: udp_queries=" << s.udp_queries << " udp_responses=" << s.udp_responses
         << " tcp_queries=" << s.tcp_queries << " tcp_connections=" << s.tcp_connections
         << " dropped=" << s.dropped;
}

bool HaveDig() {
  return ::access(kDig, X_OK) == 0;
}

// Runs dig against the server (popen waits for it; +time bounds it).
std::string Dig(uint16_t port, const std::string& args) {
  std::string cmd = std::string(kDig) + " @" + kHost + " -p " + std::to_string(port) +
                    " +time=3 +tries=1 " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return "popen failed";
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = ::pclose(p);
  if (rc != 0) out += "\n(exit status " + std::to_string(rc) + ")";
  return out;
}

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> lines;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

size_t CountAddresses(const std::string& dig_output) {
  size_t n = 0;
  for (const std::string& line : Lines(dig_output)) {
    if (line.rfind("192.0.2.", 0) == 0) ++n;
  }
  return n;
}

#define REQUIRE_DIG() \
  if (!HaveDig())     \
  GTEST_SKIP() << "skipped: dig not installed (scripts/install.sh installs bind9-dnsutils)"

TEST(DnsServerTest, DigGetsAnswerOverUdp) {
  REQUIRE_DIG();
  auto server = StartServer(Options());
  uint16_t port = PortOf(*server);
  ASSERT_NE(port, 0);
  EXPECT_EQ(Dig(port, "+short www.example.com A"), "192.0.2.1\n");
  EXPECT_TRUE(StatsSoon(*server, [](const ServerStats& s) {
    return s.udp_queries == 1 && s.udp_responses == 1 && s.tcp_queries == 0;
  }));
}

TEST(DnsServerTest, DigGetsAnswerOverTcp) {
  REQUIRE_DIG();
  auto server = StartServer(Options());
  EXPECT_EQ(Dig(PortOf(*server), "+tcp +short www.example.com A"), "192.0.2.1\n");
  ServerStats s = server->stats();
  EXPECT_EQ(s.tcp_queries, 1u);
  EXPECT_EQ(s.tcp_connections, 1u);
  EXPECT_EQ(s.udp_queries, 0u);
}

TEST(DnsServerTest, DigRetriesTruncatedAnswerOverTcp) {
  REQUIRE_DIG();
  auto server = StartServer(Options(), std::make_shared<TestResponder>(1, 100));
  std::string out = Dig(PortOf(*server), "+short big.example.com A");
  EXPECT_EQ(CountAddresses(out), 100u) << out;
  EXPECT_TRUE(StatsSoon(
      *server, [](const ServerStats& s) { return s.udp_responses == 1 && s.tcp_queries == 1; }));
}

TEST(DnsServerTest, DigIgnoreShowsTruncationFlag) {
  REQUIRE_DIG();
  auto server = StartServer(Options(), std::make_shared<TestResponder>(1, 100));
  std::string out = Dig(PortOf(*server), "+ignore big.example.com A");
  bool tc = false;
  for (const std::string& line : Lines(out)) {
    if (line.rfind(";; flags:", 0) == 0) {
      std::string flags = line.substr(0, line.find(';', 3));
      tc = flags.find(" tc") != std::string::npos;
    }
  }
  EXPECT_TRUE(tc) << out;
  std::string short_out = Dig(PortOf(*server), "+ignore +short big.example.com A");
  EXPECT_GT(CountAddresses(short_out), 0u) << short_out;
  EXPECT_LT(CountAddresses(short_out), 100u) << short_out;
  EXPECT_EQ(server->stats().tcp_queries, 0u);
}

TEST(DnsServerTest, UdpAnswersEachSourceAndCountsThem) {
  auto server = StartServer(Options());
  uint16_t port = PortOf(*server);
  for (uint16_t id = 1; id <= 20; ++id) {
    auto r = UdpExchange(port, MakeQuery(id, "a" + std::to_string(id) + ".example"));
    ASSERT_TRUE(r.has_value()) << "query " << id;
    EXPECT_EQ(IdOf(*r), id);
    EXPECT_EQ(LastOctet(*r), 1);
  }
  EXPECT_TRUE(StatsSoon(*server, [](const ServerStats& s) {
    return s.udp_queries == 20 && s.udp_responses == 20 && s.dropped == 0;
  }));
}

TEST(DnsServerTest, UdpTruncatesToRequesterSize) {
  auto server = StartServer(Options(), std::make_shared<TestResponder>(1, 100));
  auto plain = UdpExchange(PortOf(*server), MakeQuery(7, "big.example"));
  ASSERT_TRUE(plain.has_value());
  EXPECT_TRUE(Truncated(*plain));
  EXPECT_LE(plain->size(), 512u);
  auto edns = UdpExchange(PortOf(*server), MakeQuery(8, "big.example", true));
  ASSERT_TRUE(edns.has_value());
  EXPECT_TRUE(Truncated(*edns));
  EXPECT_GT(edns->size(), 512u);
  EXPECT_LE(edns->size(), 1232u);
}

TEST(DnsServerTest, GarbageDatagramIsDroppedAndServerKeepsAnswering) {
  auto server = StartServer(Options());
  uint16_t port = PortOf(*server);
  UniqueFd fd = UdpSocket();
  SendTo(fd.get(), {0xde, 0xad, 0xbe}, port);
  SendTo(fd.get(), {}, port);  // an empty datagram, too
  EXPECT_TRUE(StatsSoon(*server, [](const ServerStats& s) { return s.dropped == 2; }));
  EXPECT_FALSE(Receive(fd.get(), 50ms).has_value());
  SendTo(fd.get(), MakeQuery(42, "after.garbage"), port);
  auto r = Receive(fd.get());
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(IdOf(*r), 42);
  EXPECT_TRUE(StatsSoon(*server, [](const ServerStats& s) { return s.udp_responses == 1; }));
}

TEST(DnsServerTest, SetResponderIsVisibleOnTheNextQuery) {
  auto server = StartServer(Options());
  uint16_t port = PortOf(*server);
  UniqueFd tcp = TcpConnect(port);
  TcpSend(tcp.get(), Framed(MakeQuery(1, "x.example")));
  auto before_tcp = TcpReceive(tcp.get());
  ASSERT_TRUE(before_tcp.has_value());
  EXPECT_EQ(LastOctet(*before_tcp), 1);
  auto before_udp = UdpExchange(port, MakeQuery(2, "x.example"));
  ASSERT_TRUE(before_udp.has_value());
  EXPECT_EQ(LastOctet(*before_udp), 1);

  server->SetResponder(std::make_shared<TestResponder>(2));
  // Every worker switches, whichever socket the kernel picks for a source.
  for (uint16_t id = 10; id < 30; ++id) {
    auto r = UdpExchange(port, MakeQuery(id, "x.example"));
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(LastOctet(*r), 2) << "query " << id;
  }
  TcpSend(tcp.get(), Framed(MakeQuery(3, "x.example")));
  auto after_tcp = TcpReceive(tcp.get());
  ASSERT_TRUE(after_tcp.has_value());
  EXPECT_EQ(LastOctet(*after_tcp), 2);
}

TEST(DnsServerTest, UdpBurstFromOneSocketIsMostlyAnswered) {
  auto server = StartServer(Options());
  uint16_t port = PortOf(*server);
  UniqueFd fd = UdpSocket();
  int rcvbuf = 4 << 20;
  (void)::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  constexpr int kQueries = 2000;
  std::vector<std::vector<uint8_t>> queries;
  for (int i = 0; i < kQueries; ++i)
    queries.push_back(MakeQuery(static_cast<uint16_t>(i), "burst"));
  std::set<uint16_t> answered;
  std::vector<uint8_t> buf(4096);
  auto drain = [&] {
    ssize_t n;
    while ((n = ::recv(fd.get(), buf.data(), buf.size(), MSG_DONTWAIT)) > 0) {
      answered.insert(static_cast<uint16_t>(buf[0] << 8 | buf[1]));
    }
  };
  for (int i = 0; i < kQueries; ++i) {
    SendTo(fd.get(), queries[i], port);
    if (i % 100 == 99) drain();
  }
  while (answered.size() < kQueries && WaitReadable(fd.get(), 500ms)) drain();
  EXPECT_GE(answered.size(), kQueries * 9 / 10);
  EXPECT_TRUE(
      StatsSoon(*server, [&](const ServerStats& s) { return s.udp_responses >= answered.size(); }));
  std::printf("burst: %zu of %d answered\n", answered.size(), kQueries);
}

TEST(DnsServerTest, TcpPipelinedQueriesAreAnsweredInOrder) {
  auto server = StartServer(Options());
  UniqueFd fd = TcpConnect(PortOf(*server));
  std::string batch;
  for (uint16_t id = 100; id < 110; ++id) {
    batch += Framed(MakeQuery(id, "q" + std::to_string(id) + ".example"));
  }
  TcpSend(fd.get(), batch);
  for (uint16_t id = 100; id < 110; ++id) {
    auto r = TcpReceive(fd.get());
    ASSERT_TRUE(r.has_value()) << "answer " << id;
    EXPECT_EQ(IdOf(*r), id);
  }
  EXPECT_EQ(server->stats().tcp_queries, 10u);
  EXPECT_EQ(server->stats().tcp_connections, 1u);
}

TEST(DnsServerTest, TcpMessageSplitIntoSingleBytesIsAnswered) {
  auto server = StartServer(Options());
  UniqueFd fd = TcpConnect(PortOf(*server));
  std::string msg = Framed(MakeQuery(77, "split.example"));
  for (char c : msg) TcpSend(fd.get(), std::string_view(&c, 1));
  auto r = TcpReceive(fd.get());
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(IdOf(*r), 77);
}

TEST(DnsServerTest, TcpDeliversLargeAnswerWhole) {
  auto server = StartServer(Options(), std::make_shared<TestResponder>(1, 100));
  UniqueFd fd = TcpConnect(PortOf(*server));
  TcpSend(fd.get(), Framed(MakeQuery(5, "big.example", true)));
  auto r = TcpReceive(fd.get());
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(Truncated(*r));
  EXPECT_EQ(AnswerCount(*r), 100);
}

// Answers every packet with `size` bytes that start with the query's ID,
// without parsing it.
class BlobResponder : public Responder {
 public:
  explicit BlobResponder(size_t size) : size_(size) {}
  size_t Respond(std::span<const uint8_t> query, Transport transport,
                 std::span<uint8_t> out) const override {
    if (query.size() < 2 || out.size() < size_) return 0;
    std::fill(out.begin(), out.begin() + size_, 0);
    out[0] = query[0];
    out[1] = query[1];
    return size_;
  }

 private:
  const size_t size_;
};

TEST(DnsServerTest, TcpPeerThatReadsLateGetsEveryAnswerInOrder) {
  // ~18 MB of answers to a client that reads only after sending all its
  // queries: more than the socket buffers hold, so the server has to keep
  // output back, stop reading, and resume when the client drains.
  constexpr size_t kAnswerSize = 60000;
  auto server = StartServer(Options(), std::make_shared<BlobResponder>(kAnswerSize));
  UniqueFd fd = TcpConnect(PortOf(*server));
  constexpr uint16_t kQueries = 300;
  std::string all;
  for (uint16_t id = 0; id < kQueries; ++id) all += Framed(MakeQuery(id, "late.example"));
  TcpSend(fd.get(), all);
  // A slow reader: the time to fill the buffers between us, not a condition.
  std::this_thread::sleep_for(200ms);
  EXPECT_LT(server->stats().tcp_queries, kQueries);
  for (uint16_t id = 0; id < kQueries; ++id) {
    auto r = TcpReceive(fd.get(), 5s);
    ASSERT_TRUE(r.has_value()) << "answer " << id;
    ASSERT_EQ(IdOf(*r), id);
    ASSERT_EQ(r->size(), kAnswerSize);
  }
  EXPECT_EQ(server->stats().tcp_queries, kQueries);
}

TEST(DnsServerTest, TcpAnswersQueriesSentBeforeHalfClose) {
  auto server = StartServer(Options());
  UniqueFd fd = TcpConnect(PortOf(*server));
  TcpSend(fd.get(), Framed(MakeQuery(1, "a.example")) + Framed(MakeQuery(2, "b.example")));
  ASSERT_EQ(::shutdown(fd.get(), SHUT_WR), 0);
  for (uint16_t id = 1; id <= 2; ++id) {
    auto r = TcpReceive(fd.get());
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(IdOf(*r), id);
  }
  EXPECT_TRUE(ClosedByPeer(fd.get(), 2s));
}

TEST(DnsServerTest, TcpZeroLengthMessageClosesAfterEarlierAnswers) {
  auto server = StartServer(Options());
  UniqueFd fd = TcpConnect(PortOf(*server));
  TcpSend(fd.get(), Framed(MakeQuery(9, "a.example")) + std::string(2, '\0') +
                        Framed(MakeQuery(10, "never.example")));
  auto r = TcpReceive(fd.get());
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(IdOf(*r), 9);
  EXPECT_TRUE(ClosedByPeer(fd.get(), 2s));
  EXPECT_EQ(server->stats().tcp_queries, 1u);
}

TEST(DnsServerTest, TcpStalledPartialMessageIsClosedAtIdleTimeout) {
  ServerOptions opts = Options();
  opts.tcp_idle_timeout_ms = 300;
  auto server = StartServer(opts);
  // The timeout runs from the accept, which is after this.
  auto start = Clock::now();
  UniqueFd fd = TcpConnect(PortOf(*server));
  std::string msg = Framed(MakeQuery(1, "slow.example"));
  TcpSend(fd.get(), msg.substr(0, msg.size() / 2));
  // More bytes of the same message do not count as activity.
  std::this_thread::sleep_for(150ms);
  TcpSend(fd.get(), msg.substr(msg.size() / 2, 1));
  EXPECT_TRUE(ClosedByPeer(fd.get(), 3s));
  auto elapsed = Clock::now() - start;
  EXPECT_GE(elapsed, 300ms);
  EXPECT_LT(elapsed, 2000ms);
  EXPECT_EQ(server->stats().tcp_queries, 0u);
}

TEST(DnsServerTest, TcpIdleTimeoutRestartsWithEachCompleteMessage) {
  ServerOptions opts = Options();
  opts.tcp_idle_timeout_ms = 400;
  auto server = StartServer(opts);
  UniqueFd fd = TcpConnect(PortOf(*server));
  // 8 x 100 ms: longer than the timeout in total, never between messages.
  for (uint16_t id = 1; id <= 8; ++id) {
    TcpSend(fd.get(), Framed(MakeQuery(id, "keep.example")));
    auto r = TcpReceive(fd.get());
    ASSERT_TRUE(r.has_value()) << "answer " << id;
    EXPECT_EQ(IdOf(*r), id);
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(ClosedByPeer(fd.get(), 3s));
}

TEST(DnsServerTest, TcpConnectionsBeyondTheLimitAreClosed) {
  ServerOptions opts = Options();
  opts.tcp_max_connections = 2;
  auto server = StartServer(opts);
  uint16_t port = PortOf(*server);
  std::vector<UniqueFd> served;
  for (uint16_t id = 1; id <= 2; ++id) {
    served.push_back(TcpConnect(port));
    TcpSend(served.back().get(), Framed(MakeQuery(id, "a.example")));
    ASSERT_TRUE(TcpReceive(served.back().get()).has_value());
  }
  UniqueFd refused = TcpConnect(port);
  EXPECT_TRUE(ClosedByPeer(refused.get(), 2s));
  EXPECT_EQ(server->stats().tcp_connections, 2u);

  // A slot frees up when a served client leaves.
  served[0].Reset();
  bool answered = WaitFor([&] {
    UniqueFd fd = TcpConnect(port);
    TcpSend(fd.get(), Framed(MakeQuery(3, "a.example")));
    return TcpReceive(fd.get(), 500ms).has_value();
  });
  EXPECT_TRUE(answered);
  TcpSend(served[1].get(), Framed(MakeQuery(4, "a.example")));
  EXPECT_TRUE(TcpReceive(served[1].get()).has_value());
}

TEST(DnsServerTest, WildcardAddressRepliesFromTheQueriedAddress) {
  auto server = StartServer(Options("0.0.0.0"));
  uint16_t port = PortOf(*server);
  UniqueFd fd = UdpSocket();
  SendTo(fd.get(), MakeQuery(31, "any.example"), port);
  ASSERT_TRUE(WaitReadable(fd.get(), 2s));
  std::vector<uint8_t> buf(4096);
  struct sockaddr_in from = {};
  socklen_t len = sizeof from;
  ssize_t n =
      ::recvfrom(fd.get(), buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &len);
  ASSERT_GT(n, 0);
  char text[INET_ADDRSTRLEN];
  ASSERT_NE(::inet_ntop(AF_INET, &from.sin_addr, text, sizeof text), nullptr);
  EXPECT_STREQ(text, kHost);
  EXPECT_EQ(ntohs(from.sin_port), port);
  // TCP works through the wildcard listener too.
  UniqueFd tcp = TcpConnect(port);
  TcpSend(tcp.get(), Framed(MakeQuery(32, "any.example")));
  auto r = TcpReceive(tcp.get());
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(IdOf(*r), 32);
}

TEST(DnsServerTest, ServesIpv6Loopback) {
  auto server = std::make_unique<Server>(Options("::1"));
  Status s = server->Start(std::make_shared<TestResponder>(1));
  if (!s.ok() && (s.message().find("Cannot assign") != std::string::npos ||
                  s.message().find("not supported") != std::string::npos)) {
    GTEST_SKIP() << "skipped: no IPv6 loopback: " << s.ToString();
  }
  ASSERT_TRUE(s.ok()) << s.ToString();
  uint16_t port = PortOf(*server);
  EXPECT_EQ(server->bound()[0].ToString(), "[::1]:" + std::to_string(port));
  UniqueFd fd(::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  struct sockaddr_in6 to = {};
  to.sin6_family = AF_INET6;
  to.sin6_port = htons(port);
  to.sin6_addr = in6addr_loopback;
  std::vector<uint8_t> q = MakeQuery(61, "six.example");
  ASSERT_EQ(::sendto(fd.get(), q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to),
            static_cast<ssize_t>(q.size()));
  auto r = Receive(fd.get());
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(IdOf(*r), 61);
  UniqueFd tcp = TcpConnect(port, "::1");
  TcpSend(tcp.get(), Framed(MakeQuery(62, "six.example")));
  auto t = TcpReceive(tcp.get());
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(IdOf(*t), 62);
}

TEST(DnsServerTest, StopIsQuickAndIdempotent) {
  ServerOptions opts = Options();
  opts.udp_workers = 4;
  auto server = StartServer(opts);
  uint16_t port = PortOf(*server);
  UniqueFd tcp = TcpConnect(port);
  TcpSend(tcp.get(), std::string_view("\x00\x30partial", 9));
  ASSERT_TRUE(UdpExchange(port, MakeQuery(1, "a.example")).has_value());

  auto start = Clock::now();
  server->Stop();
  EXPECT_LT(Clock::now() - start, 200ms);
  server->Stop();
  EXPECT_TRUE(server->bound().empty());
  EXPECT_EQ(server->stats().udp_queries, 1u);  // counts survive Stop
  EXPECT_TRUE(ClosedByPeer(tcp.get(), 1s));

  // Every socket is closed: the address can be bound without SO_REUSEPORT.
  UniqueFd udp = UdpSocket();
  struct sockaddr_in at = Loopback(port);
  EXPECT_EQ(::bind(udp.get(), reinterpret_cast<sockaddr*>(&at), sizeof at), 0)
      << std::strerror(errno);
  auto listener = net::ListenTcp(net::HostPort{kHost, port});
  EXPECT_TRUE(listener.ok()) << listener.status().ToString();
}

TEST(DnsServerTest, StopOfAServerThatNeverStartedIsHarmless) {
  Server server(Options());
  server.Stop();
  EXPECT_TRUE(server.bound().empty());
}

TEST(DnsServerTest, CanRestartAfterStop) {
  auto server = StartServer(Options());
  server->Stop();
  Status s = server->Start(std::make_shared<TestResponder>(3));
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto r = UdpExchange(PortOf(*server), MakeQuery(1, "again.example"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(LastOctet(*r), 3);
}

// A plain UDP socket (no SO_REUSEPORT) at 127.0.0.70 on a picked port.
std::pair<UniqueFd, uint16_t> OccupyUdpPort() {
  UniqueFd fd = UdpSocket();
  struct sockaddr_in at = Loopback(0);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&at), sizeof at), 0);
  auto port = net::LocalPort(fd.get());
  EXPECT_TRUE(port.ok());
  return {std::move(fd), port.ok() ? *port : uint16_t{0}};
}

TEST(DnsServerTest, StartFailsOnUdpAddressInUseAndNamesIt) {
  auto [holder, port] = OccupyUdpPort();
  ServerOptions opts = Options();
  opts.listen = {net::HostPort{kHost, port}};
  Server server(opts);
  Status s = server.Start(std::make_shared<TestResponder>(1));
  ASSERT_FALSE(s.ok());
  std::string where = std::string(kHost) + ":" + std::to_string(port);
  EXPECT_NE(s.message().find("UDP " + where), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("in use"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("another DNS server"), std::string::npos) << s.message();
  EXPECT_TRUE(server.bound().empty());
  // Nothing of it keeps running: the TCP port is free.
  auto listener = net::ListenTcp(net::HostPort{kHost, port});
  EXPECT_TRUE(listener.ok()) << listener.status().ToString();
}

TEST(DnsServerTest, StartFailsOnTcpAddressInUseAndNamesIt) {
  auto listener = net::ListenTcp(net::HostPort{kHost, 0});
  ASSERT_TRUE(listener.ok()) << listener.status().ToString();
  auto port = net::LocalPort(listener->get());
  ASSERT_TRUE(port.ok());
  ServerOptions opts = Options();
  opts.listen = {net::HostPort{kHost, *port}};
  Server server(opts);
  Status s = server.Start(std::make_shared<TestResponder>(1));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("TCP " + std::string(kHost) + ":" + std::to_string(*port)),
            std::string::npos)
      << s.message();
  // The UDP sockets bound before the failure are closed again.
  UniqueFd udp = UdpSocket();
  struct sockaddr_in at = Loopback(*port);
  EXPECT_EQ(::bind(udp.get(), reinterpret_cast<sockaddr*>(&at), sizeof at), 0)
      << std::strerror(errno);
}

TEST(DnsServerTest, StartFailureOnALaterAddressLeavesNothingBound) {
  auto [holder, busy] = OccupyUdpPort();
  ServerOptions opts = Options();
  opts.listen = {net::HostPort{kHost, 0}, net::HostPort{kHost, busy}};
  Server server(opts);
  Status s = server.Start(std::make_shared<TestResponder>(1));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(std::to_string(busy)), std::string::npos) << s.message();
  EXPECT_TRUE(server.bound().empty());
  EXPECT_EQ(server.stats().udp_queries, 0u);
}

TEST(DnsServerTest, StartRejectsBadArguments) {
  ServerOptions by_name = Options("localhost");
  Server a(by_name);
  Status s = a.Start(std::make_shared<TestResponder>(1));
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("'localhost'"), std::string::npos) << s.message();

  ServerOptions none;
  Server b(none);
  EXPECT_EQ(b.Start(std::make_shared<TestResponder>(1)).code(), Code::kInvalidArgument);

  Server c(Options());
  EXPECT_EQ(c.Start(nullptr).code(), Code::kInvalidArgument);
  ASSERT_TRUE(c.Start(std::make_shared<TestResponder>(1)).ok());
  Status again = c.Start(std::make_shared<TestResponder>(1));
  EXPECT_FALSE(again.ok());
  EXPECT_NE(again.message().find("already started"), std::string::npos);
}

}  // namespace
}  // namespace hc::dns
