// One transfer between two real dir stores over a real mutual-TLS channel:
// TlsTunnels (node-a) -> TlsTerminator (node-b, ALPN hc-repl) -> Receiver,
// on 127.0.0.110-111, with throwaway certificates from src/pki.
#include "replication/channel.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/fs.h"
#include "net/socket.h"
#include "pki/cert.h"
#include "proxy/tls.h"
#include "storage/stream_format.h"
#include "storage/test_stores.h"
#include "test_util.h"

namespace hc::replication {
namespace {

using namespace std::chrono_literals;
using proxy::CertSpec;
using proxy::TlsClientIdentity;
using proxy::TlsTerminator;
using proxy::TlsTunnels;

constexpr char kServerHost[] = "127.0.0.110";
constexpr char kTunnelHost[] = "127.0.0.111";

struct NodeCert {
  std::string cert, key;
};

NodeCert MakeNode(const pki::CaMaterial& ca, const std::string& id) {
  auto k = pki::CreateKeyAndCsr(id);
  EXPECT_TRUE(k.ok());
  auto cert = pki::SignNodeCert(ca, k->csr_pem, {.node_id = id, .addresses = {kServerHost}});
  EXPECT_TRUE(cert.ok()) << cert.status().ToString();
  return {*cert, k->key_pem};
}

struct Pki {
  pki::CaMaterial ca, foreign_ca;
  NodeCert a, b, foreign_a;
};

const Pki& TestPki() {
  static const Pki* p = [] {
    auto* p = new Pki;
    p->ca = *pki::CreateCa("HybridCluster CA test");
    p->foreign_ca = *pki::CreateCa("HybridCluster CA other");
    p->a = MakeNode(p->ca, "node-a");
    p->b = MakeNode(p->ca, "node-b");
    p->foreign_a = MakeNode(p->foreign_ca, "node-a");
    return p;
  }();
  return *p;
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

using ::hc::testing::RandomBytes;

std::vector<std::string> Ids(storage::Store& s, const std::string& volume) {
  std::vector<std::string> ids;
  auto snaps = s.ListSnapshots(volume);
  if (!snaps.ok()) return ids;
  for (auto& x : *snaps) ids.push_back(x.id);
  return ids;
}

class ChannelTest : public ::testing::Test {
 protected:
  // Each node's store; a test class may use another backend.
  virtual storage::testing::TestStore NewStore() { return storage::testing::MakeTestStore("dir"); }

  void SetUp() override {
    a_ = NewStore();
    if (!a_.skip_reason.empty()) GTEST_SKIP() << "skipped: " << a_.skip_reason;
    b_ = NewStore();
    if (!b_.skip_reason.empty()) GTEST_SKIP() << "skipped: " << b_.skip_reason;
    ASSERT_TRUE(a_.store && b_.store);
    const Pki& p = TestPki();
    rx_ = std::make_unique<Receiver>(
        *b_.store,
        ReceiverOptions{.node_id = "node-b",
                        .is_primary = [this](const std::string& app, const std::string& node,
                                             uint64_t epoch) -> Status {
                          if (app == "shop" && node == primary_ && epoch == epoch_) {
                            return Status::Ok();
                          }
                          return PermissionDenied("placement names '" + primary_ + "' at epoch " +
                                                  std::to_string(epoch_));
                        },
                        .io_timeout_ms = 10000,
                        .max_connections = max_connections_,
                        .spool_dir = b_.scratch_dir + "/spool"});
    server_ = std::make_unique<TlsTerminator>(
        proxy::TlsTerminatorOptions{.listen = {net::HostPort{kServerHost, 0}}, .workers = 1},
        [this](UniqueFd fd, const proxy::TlsConnInfo& info) { rx_->Adopt(std::move(fd), info); });
    auto certs =
        proxy::CertTable::Build({}, CertSpec{"node-b", {"node-b"}, p.b.cert, p.b.key},
                                proxy::TlsServerPolicy{.client_ca_pem = p.ca.cert_pem,
                                                       .alpn = {std::string(kReplicationAlpn)}});
    ASSERT_TRUE(certs.ok()) << certs.status().ToString();
    ASSERT_TRUE(server_->Start(*certs).ok());
    ASSERT_TRUE(a_.store->CreateVolume("shop").ok());
    live_ = *a_.store->LivePath("shop");
  }
  void TearDown() override {
    if (tunnels_) tunnels_->Stop();
    if (server_) server_->Stop();
    if (rx_) rx_->Stop();
  }

  // A connection to the receiver through a tunnel with `id` (node-a's by default).
  UniqueFd Connect(std::optional<TlsClientIdentity> id = std::nullopt) {
    const Pki& p = TestPki();
    if (!id) id = TlsClientIdentity{p.ca.cert_pem, p.a.cert, p.a.key};
    tunnels_ = std::make_unique<TlsTunnels>(*id, kTunnelHost);
    EXPECT_TRUE(tunnels_->Start().ok());
    auto local = tunnels_->Open({.remote = server_->bound()[0],
                                 .expect_server_name = "node-b",
                                 .alpn = std::string(kReplicationAlpn)});
    EXPECT_TRUE(local.ok()) << local.status().ToString();
    auto fd = net::ConnectTcp(*local, net::DeadlineIn(2s));
    EXPECT_TRUE(fd.ok());
    return fd.ok() ? std::move(*fd) : UniqueFd();
  }

  storage::SnapshotInfo Snap(const std::string& name) {
    auto s = a_.store->Snapshot("shop", name, {});
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return *s;
  }

  Result<PushResult> PushOnce(const std::string& base, const std::string& target,
                              PushOptions extra = {}) {
    UniqueFd fd = Connect();
    extra.app = "shop";
    if (extra.sender_node.empty()) extra.sender_node = "node-a";
    if (extra.epoch == 0) extra.epoch = epoch_;
    extra.base_id = base;
    extra.target_id = target;
    extra.io_timeout_ms = 10000;
    auto r = Push(*a_.store, fd.get(), extra);
    fd.Reset();
    tunnels_->Stop();
    return r;
  }

  storage::testing::TestStore a_, b_;
  std::unique_ptr<Receiver> rx_;
  std::unique_ptr<TlsTerminator> server_;
  std::unique_ptr<TlsTunnels> tunnels_;
  std::string live_;
  std::string primary_ = "node-a";
  uint64_t epoch_ = 7;
  int max_connections_ = 64;
};

template <typename F>
bool Eventually(F f) {
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!f()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// `stream` with its header's epoch set to `epoch` (what Push does on the way out).
std::string StampEpoch(const std::string& stream, uint64_t epoch) {
  StringSource in(stream);
  storage::StreamReader reader(in);
  auto h = reader.Begin();
  EXPECT_TRUE(h.ok());
  h->epoch = epoch;
  StringSink out;
  storage::StreamWriter writer(out);
  EXPECT_TRUE(writer.Begin(*h).ok());
  return out.out + stream.substr(reader.bytes_read());
}

// Reads the next frame the receiver sends.
Result<Frame> ReadFrame(int fd, FrameParser& p) {
  for (;;) {
    HC_ASSIGN_OR_RETURN(auto f, p.Next());
    if (f) return std::move(*f);
    char buf[4096];
    HC_ASSIGN_OR_RETURN(size_t n, net::ReadSome(fd, buf, sizeof buf, net::DeadlineIn(5s)));
    if (n == 0) return Unavailable("closed");
    p.Append({buf, n});
  }
}

TEST_F(ChannelTest, FullThenIncrementalArriveWithTheSameSnapshotIds) {
  WriteFile(live_ + "/index.html", "hello v1");
  auto s1 = Snap("s1");
  auto r1 = PushOnce("", s1.id);
  ASSERT_TRUE(r1.ok()) << r1.status().ToString();
  EXPECT_EQ(r1->snapshot_id, s1.id);
  EXPECT_FALSE(r1->already_present);
  EXPECT_GT(r1->stream_bytes, 0u);
  EXPECT_EQ(Ids(*b_.store, "shop"), std::vector<std::string>{s1.id});
  EXPECT_TRUE(b_.store->GetVolume("shop")->read_only);

  WriteFile(live_ + "/index.html", "hello v2");
  WriteFile(live_ + "/big.bin", RandomBytes(3 << 20, 1));  // several data frames
  auto s2 = Snap("s2");
  auto r2 = PushOnce(s1.id, s2.id);
  ASSERT_TRUE(r2.ok()) << r2.status().ToString();
  EXPECT_EQ(Ids(*b_.store, "shop"), (std::vector<std::string>{s1.id, s2.id}));
  StringSink file;
  ASSERT_TRUE(b_.store->ReadFile("shop", "s2", "index.html", file).ok());
  EXPECT_EQ(file.out, "hello v2");

  auto again = PushOnce(s1.id, s2.id);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(again->already_present);
  EXPECT_EQ(rx_->stats().received, 2u);
  EXPECT_EQ(rx_->stats().already_present, 1u);
}

TEST_F(ChannelTest, FlippedByteInTransitIsRejectedReplicaUnchangedThenRetrySucceeds) {
  WriteFile(live_ + "/a.txt", "one");
  auto s1 = Snap("s1");
  ASSERT_TRUE(PushOnce("", s1.id).ok());
  WriteFile(live_ + "/a.txt", "two");
  WriteFile(live_ + "/b.bin", RandomBytes(2 << 20, 2));
  auto s2 = Snap("s2");

  PushOptions damaged;
  damaged.corrupt_for_test = [](uint64_t frame, std::string& bytes) {
    if (frame == 1) bytes[bytes.size() / 2] ^= 0x40;
  };
  auto bad = PushOnce(s1.id, s2.id, damaged);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kCorrupt) << bad.status().ToString();
  EXPECT_NE(bad.status().message().find("checksum"), std::string::npos) << bad.status().ToString();
  EXPECT_EQ(Ids(*b_.store, "shop"), std::vector<std::string>{s1.id});
  auto verify = b_.store->Verify("shop");
  ASSERT_TRUE(verify.ok());
  EXPECT_TRUE(verify->ok());
  EXPECT_EQ(rx_->stats().failed, 1u);

  auto retry = PushOnce(s1.id, s2.id);
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  EXPECT_EQ(Ids(*b_.store, "shop"), (std::vector<std::string>{s1.id, s2.id}));
}

TEST_F(ChannelTest, SenderThatIsNotThePrimaryAtTheEpochIsRefused) {
  WriteFile(live_ + "/a.txt", "one");
  auto s1 = Snap("s1");
  PushOptions stale;
  stale.epoch = 6;
  auto r = PushOnce("", s1.id, stale);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kPermissionDenied) << r.status().ToString();
  EXPECT_NE(r.status().message().find("not the primary of 'shop' at epoch 6"), std::string::npos)
      << r.status().ToString();
  EXPECT_FALSE(b_.store->GetVolume("shop").ok());

  primary_ = "node-c";  // a new primary at epoch 7
  auto r7 = PushOnce("", s1.id);
  EXPECT_EQ(r7.status().code(), Code::kPermissionDenied);
  EXPECT_EQ(rx_->stats().refused, 2u);
}

TEST_F(ChannelTest, RequestNamingAnotherNodeThanTheCertificateIsRefused) {
  WriteFile(live_ + "/a.txt", "one");
  auto s1 = Snap("s1");
  primary_ = "node-c";
  PushOptions spoof;
  spoof.sender_node = "node-c";
  auto r = PushOnce("", s1.id, spoof);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("the certificate is node 'node-a'"), std::string::npos)
      << r.status().ToString();
  EXPECT_FALSE(b_.store->GetVolume("shop").ok());
}

TEST_F(ChannelTest, IncrementalWhoseBaseTheReplicaLacksIsRefusedByIdentity) {
  WriteFile(live_ + "/a.txt", "one");
  auto s1 = Snap("s1");
  WriteFile(live_ + "/a.txt", "two");
  auto s2 = Snap("s2");
  auto r = PushOnce(s1.id, s2.id);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kConflict) << r.status().ToString();
  EXPECT_NE(r.status().message().find("base snapshot missing"), std::string::npos);
  ASSERT_TRUE(PushOnce("", s1.id).ok());
  auto full_again = PushOnce("", s2.id);
  EXPECT_EQ(full_again.status().code(), Code::kConflict) << "a full stream over snapshots";
  EXPECT_EQ(Ids(*b_.store, "shop"), std::vector<std::string>{s1.id});
}

TEST_F(ChannelTest, ClientWithAForeignCertificateIsRefusedAtTheHandshake) {
  WriteFile(live_ + "/a.txt", "one");
  auto s1 = Snap("s1");
  const Pki& p = TestPki();
  // Trusts the real CA (so it accepts node-b) but presents a certificate
  // for "node-a" issued by another CA.
  UniqueFd fd = Connect(TlsClientIdentity{p.ca.cert_pem, p.foreign_a.cert, p.foreign_a.key});
  auto r = Push(*a_.store, fd.get(),
                {.app = "shop",
                 .sender_node = "node-a",
                 .epoch = 7,
                 .target_id = s1.id,
                 .io_timeout_ms = 10000});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnavailable) << r.status().ToString();
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (server_->stats().handshake_failures == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_GE(server_->stats().handshake_failures, 1u);
  EXPECT_EQ(server_->stats().handshakes, 0u);
  auto st = rx_->stats();
  EXPECT_EQ(st.received + st.refused + st.failed + st.already_present, 0u);
  EXPECT_FALSE(b_.store->GetVolume("shop").ok());
}

TEST_F(ChannelTest, TransferCutInTheMiddleLeavesReplicaUnchangedAndRetrySucceeds) {
  WriteFile(live_ + "/a.txt", "one");
  auto s1 = Snap("s1");
  ASSERT_TRUE(PushOnce("", s1.id).ok());
  WriteFile(live_ + "/b.bin", RandomBytes(1 << 20, 3));
  auto s2 = Snap("s2");
  StringSink stream;
  ASSERT_TRUE(a_.store->Send("shop", std::string("s1"), "s2", stream).ok());

  // A sender that dies half way: request, half of the stream, then gone.
  UniqueFd fd = Connect();
  TransferRequest req{"shop", "node-a", 7, s1.id, s2.id, 0};
  ASSERT_TRUE(net::WriteAll(fd.get(), EncodeFrame(0, kFrameRequest, EncodeRequest(req)),
                            net::DeadlineIn(5s))
                  .ok());
  FrameParser p;
  auto answer = ReadFrame(fd.get(), p);
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  ASSERT_EQ(DecodeAnswer(answer->payload)->verdict, Verdict::kAccept);
  std::string stamped = StampEpoch(stream.out, 7);
  std::string half = stamped.substr(0, stamped.size() / 2);
  ASSERT_TRUE(net::WriteAll(fd.get(), EncodeFrame(1, kFrameData, half), net::DeadlineIn(5s)).ok());
  fd.Reset();
  EXPECT_TRUE(Eventually([&] { return rx_->stats().failed == 1; }));
  tunnels_->Stop();
  EXPECT_EQ(Ids(*b_.store, "shop"), std::vector<std::string>{s1.id});
  auto verify = b_.store->Verify("shop");
  ASSERT_TRUE(verify.ok());
  EXPECT_TRUE(verify->ok());

  // The retry resumes: the half already received is not sent again.
  auto retry = PushOnce(s1.id, s2.id);
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  EXPECT_EQ(retry->resumed_from, half.size());
  EXPECT_EQ(retry->stream_bytes, stamped.size() - half.size());
  EXPECT_EQ(Ids(*b_.store, "shop"), (std::vector<std::string>{s1.id, s2.id}));
  StringSink file;
  ASSERT_TRUE(b_.store->ReadFile("shop", "s2", "b.bin", file).ok());
  EXPECT_EQ(file.out, RandomBytes(1 << 20, 3));
  EXPECT_FALSE(PathExists(b_.scratch_dir + "/spool/shop.part")) << "spool removed after success";
}

TEST_F(ChannelTest, DamagedTransferIsNotResumedButStartsOver) {
  WriteFile(live_ + "/a.txt", "one");
  auto s1 = Snap("s1");
  ASSERT_TRUE(PushOnce("", s1.id).ok());
  WriteFile(live_ + "/b.bin", RandomBytes(3 << 20, 4));
  auto s2 = Snap("s2");
  PushOptions damaged;
  damaged.corrupt_for_test = [](uint64_t frame, std::string& bytes) {
    if (frame == 2) bytes[bytes.size() / 3] ^= 0x01;
  };
  EXPECT_EQ(PushOnce(s1.id, s2.id, damaged).status().code(), Code::kCorrupt);
  auto retry = PushOnce(s1.id, s2.id);
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  EXPECT_EQ(retry->resumed_from, 0u);
  EXPECT_EQ(Ids(*b_.store, "shop"), (std::vector<std::string>{s1.id, s2.id}));
}

TEST_F(ChannelTest, StreamWhoseHeaderCarriesAnotherEpochIsRejected) {
  WriteFile(live_ + "/a.txt", "one");
  auto s1 = Snap("s1");
  StringSink stream;
  ASSERT_TRUE(a_.store->Send("shop", std::nullopt, "s1", stream).ok());
  std::string stale = StampEpoch(stream.out, 6);

  UniqueFd fd = Connect();
  TransferRequest req{"shop", "node-a", 7, "", s1.id, 0};
  std::string wire = EncodeFrame(0, kFrameRequest, EncodeRequest(req)) +
                     EncodeFrame(1, kFrameData, stale) +
                     EncodeFrame(2, kFrameFinish, EncodeFinish({stale.size()}));
  ASSERT_TRUE(net::WriteAll(fd.get(), wire, net::DeadlineIn(5s)).ok());
  FrameParser p;
  auto answer = ReadFrame(fd.get(), p);
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  EXPECT_EQ(DecodeAnswer(answer->payload)->verdict, Verdict::kAccept);
  auto result = ReadFrame(fd.get(), p);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  auto r = DecodeResult(result->payload);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->code, Code::kCorrupt);
  EXPECT_NE(r->message.find("carries epoch 6"), std::string::npos) << r->message;
  fd.Reset();
  EXPECT_FALSE(b_.store->GetVolume("shop").ok());
}

TEST_F(ChannelTest, StopEndsTransfersInFlightWithoutWaitingForTimeouts) {
  UniqueFd idle = Connect();  // a sender that never speaks
  ASSERT_TRUE(Eventually([&] { return rx_->stats().active == 1; }));
  auto start = std::chrono::steady_clock::now();
  rx_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s) << "io_timeout_ms is 10 s";
  EXPECT_EQ(rx_->stats().failed, 1u);
}

class ChannelLimitTest : public ChannelTest {
 protected:
  ChannelLimitTest() { max_connections_ = 1; }
};

TEST_F(ChannelLimitTest, ConnectionsBeyondTheLimitAreClosedAtOnce) {
  WriteFile(live_ + "/a.txt", "one");
  auto s1 = Snap("s1");
  // One connection that says nothing holds the only slot.
  UniqueFd idle = Connect();
  ASSERT_TRUE(Eventually([&] { return rx_->stats().active == 1; }));
  auto local = tunnels_->Open({.remote = server_->bound()[0],
                               .expect_server_name = "node-b",
                               .alpn = std::string(kReplicationAlpn)});
  ASSERT_TRUE(local.ok());
  auto fd = net::ConnectTcp(*local, net::DeadlineIn(2s));
  ASSERT_TRUE(fd.ok());
  auto r = Push(*a_.store, fd->get(),
                {.app = "shop",
                 .sender_node = "node-a",
                 .epoch = 7,
                 .target_id = s1.id,
                 .io_timeout_ms = 10000});
  EXPECT_EQ(r.status().code(), Code::kUnavailable) << r.status().ToString();
  EXPECT_EQ(rx_->stats().refused, 1u);
  fd->Reset();
  idle.Reset();
  tunnels_->Stop();
  EXPECT_TRUE(Eventually([&] { return rx_->stats().failed == 1; })) << "the idle one ends";
  EXPECT_TRUE(PushOnce("", s1.id).ok());
}

// --- Repair fetch: healthy copies of damaged chunks over the channel. ---

// The data chunk files (header kind 1) of the dir store of `t`, sorted.
std::vector<std::string> DataChunkFiles(const storage::testing::TestStore& t) {
  std::vector<std::string> out;
  for (const auto& e :
       std::filesystem::recursive_directory_iterator(t.cleanup_dir + "/store/chunks")) {
    if (!e.is_regular_file()) continue;
    auto data = ReadFileToString(e.path().string());
    if (data.ok() && data->size() > 20 && (*data)[4] == 1) out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Flips a byte of the chunk file at `path`; returns its id.
std::string DamageChunkFile(const std::string& path) {
  std::string data = *ReadFileToString(path);
  data[data.size() / 2] ^= 0x10;
  ::chmod(path.c_str(), 0644);
  WriteFile(path, data);
  return path.substr(path.rfind('/') + 1);
}

std::string ReadS1(storage::Store& s, const std::string& path) {
  StringSink out;
  Status st = s.ReadFile("shop", "s1", path, out);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return out.out;
}

class ChannelRepairTest : public ChannelTest {
 protected:
  void SetUp() override {
    ChannelTest::SetUp();
    WriteFile(live_ + "/big.bin", big_);
    WriteFile(live_ + "/index.html", "hello");
    s1_ = Snap("s1");
    ASSERT_TRUE(PushOnce("", s1_.id).ok());
    // node-a serves repair fetches too: its own Receiver and terminator.
    const Pki& p = TestPki();
    rx_a_ = std::make_unique<Receiver>(
        *a_.store, ReceiverOptions{.node_id = "node-a",
                                   .is_primary = [](const std::string&, const std::string&,
                                                    uint64_t) { return PermissionDenied("no"); },
                                   .io_timeout_ms = 10000});
    server_a_ = std::make_unique<TlsTerminator>(
        proxy::TlsTerminatorOptions{.listen = {net::HostPort{kServerHost, 0}}, .workers = 1},
        [this](UniqueFd fd, const proxy::TlsConnInfo& info) { rx_a_->Adopt(std::move(fd), info); });
    auto certs =
        proxy::CertTable::Build({}, CertSpec{"node-a", {"node-a"}, p.a.cert, p.a.key},
                                proxy::TlsServerPolicy{.client_ca_pem = p.ca.cert_pem,
                                                       .alpn = {std::string(kReplicationAlpn)}});
    ASSERT_TRUE(certs.ok()) << certs.status().ToString();
    ASSERT_TRUE(server_a_->Start(*certs).ok());
  }
  void TearDown() override {
    if (tunnels_b_) tunnels_b_->Stop();
    if (server_a_) server_a_->Stop();
    if (rx_a_) rx_a_->Stop();
    ChannelTest::TearDown();
  }

  // node-b's connection to node-a.
  UniqueFd ConnectBToA() {
    const Pki& p = TestPki();
    tunnels_b_ = std::make_unique<TlsTunnels>(TlsClientIdentity{p.ca.cert_pem, p.b.cert, p.b.key},
                                              kTunnelHost);
    EXPECT_TRUE(tunnels_b_->Start().ok());
    auto local = tunnels_b_->Open({.remote = server_a_->bound()[0],
                                   .expect_server_name = "node-a",
                                   .alpn = std::string(kReplicationAlpn)});
    EXPECT_TRUE(local.ok()) << local.status().ToString();
    auto fd = net::ConnectTcp(*local, net::DeadlineIn(2s));
    EXPECT_TRUE(fd.ok());
    return fd.ok() ? std::move(*fd) : UniqueFd();
  }

  // `damaged` (node `who`) scrubs and fetches what it lacks over `fd`.
  Result<FetchRepairResult> ScrubAndFetch(storage::Store& damaged, const std::string& who,
                                          UniqueFd fd) {
    auto scrub = damaged.Scrub("shop", {});
    if (!scrub.ok()) return scrub.status();
    EXPECT_FALSE(scrub->ok());
    auto r = FetchRepair(damaged, fd.get(),
                         {.app = "shop",
                          .requester_node = who,
                          .object_ids = scrub->DamagedIds(),
                          .io_timeout_ms = 10000});
    fd.Reset();
    return r;
  }

  void ExpectIntact(storage::Store& s) {
    auto scrub = s.Scrub("shop", {});
    ASSERT_TRUE(scrub.ok());
    EXPECT_TRUE(scrub->ok()) << scrub->problems[0].text;
    EXPECT_EQ(ReadS1(s, "big.bin"), big_);
    EXPECT_EQ(ReadS1(s, "index.html"), "hello");
  }

  std::string big_ = RandomBytes(600 * 1024, 11);
  storage::SnapshotInfo s1_;
  std::unique_ptr<Receiver> rx_a_;
  std::unique_ptr<TlsTerminator> server_a_;
  std::unique_ptr<TlsTunnels> tunnels_b_;
};

TEST_F(ChannelRepairTest, ReplicaChunkDamagedIsRepairedFromThePrimary) {
  auto files = DataChunkFiles(b_);
  ASSERT_GE(files.size(), 3u);
  std::string id = DamageChunkFile(files[1]);
  auto r = ScrubAndFetch(*b_.store, "node-b", ConnectBToA());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->repair.repaired, 1u);
  EXPECT_EQ(r->repair.intact_ids, std::vector<std::string>{id});
  EXPECT_TRUE(r->still_damaged.empty());
  EXPECT_GT(r->stream_bytes, 0u);
  ExpectIntact(*b_.store);
  // Byte-identical to the primary's chunk file.
  EXPECT_EQ(*ReadFileToString(files[1]),
            *ReadFileToString(a_.cleanup_dir + files[1].substr(b_.cleanup_dir.size())));
  EXPECT_TRUE(Eventually([&] { return rx_a_->stats().repairs_served == 1; }));
}

TEST_F(ChannelRepairTest, PrimaryChunkDamagedIsRepairedFromTheReplica) {
  auto files = DataChunkFiles(a_);
  ASSERT_GE(files.size(), 3u);
  std::string id = DamageChunkFile(files[0]);
  auto r = ScrubAndFetch(*a_.store, "node-a", Connect());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->repair.repaired, 1u);
  EXPECT_EQ(r->repair.intact_ids, std::vector<std::string>{id});
  EXPECT_TRUE(r->still_damaged.empty());
  ExpectIntact(*a_.store);
  EXPECT_TRUE(Eventually([&] { return rx_->stats().repairs_served == 1; }));
}

TEST_F(ChannelRepairTest, ChunkDamagedOnBothNodesIsNotSentAndStaysReported) {
  std::string id = DamageChunkFile(DataChunkFiles(a_)[0]);
  ASSERT_EQ(DamageChunkFile(DataChunkFiles(b_)[0]), id);
  std::string before = *ReadFileToString(DataChunkFiles(a_)[0]);
  auto r = ScrubAndFetch(*a_.store, "node-a", Connect());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->repair.repaired, 0u);
  EXPECT_EQ(r->still_damaged, std::vector<std::string>{id});
  ASSERT_EQ(r->repair.peer_missing, std::vector<std::string>{id});
  EXPECT_NE(r->repair.peer_missing_reasons[0].find("damaged here too"), std::string::npos);
  EXPECT_EQ(*ReadFileToString(DataChunkFiles(a_)[0]), before);
  auto scrub = a_.store->Scrub("shop", {});
  ASSERT_TRUE(scrub.ok());
  EXPECT_EQ(scrub->DamagedIds(), std::vector<std::string>{id});
}

TEST_F(ChannelRepairTest, FetchForAnAppThePeerLacksOrNamingAnotherNodeIsRefused) {
  std::string id = DamageChunkFile(DataChunkFiles(a_)[0]);
  UniqueFd fd = Connect();
  auto r = FetchRepair(*a_.store, fd.get(),
                       {.app = "other", .requester_node = "node-a", .object_ids = {id}});
  EXPECT_EQ(r.status().code(), Code::kNotFound) << r.status().ToString();
  fd = Connect();
  r = FetchRepair(*a_.store, fd.get(),
                  {.app = "shop", .requester_node = "node-c", .object_ids = {id}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("the certificate is node 'node-a'"), std::string::npos)
      << r.status().ToString();
  EXPECT_FALSE(a_.store->Scrub("shop", {})->ok());
}

TEST_F(ChannelRepairTest, ScrubAndRepairTriesPeersInTurnAndRepairsWhatADamagedTreeHid) {
  std::vector<std::string> trees;
  for (const auto& e :
       std::filesystem::recursive_directory_iterator(a_.cleanup_dir + "/store/chunks")) {
    auto data = ReadFileToString(e.path().string());
    if (e.is_regular_file() && data.ok() && data->size() > 20 && (*data)[4] == 2) {
      trees.push_back(e.path().string());
    }
  }
  ASSERT_EQ(trees.size(), 1u);
  DamageChunkFile(trees[0]);
  DamageChunkFile(DataChunkFiles(a_)[1]);
  ScrubAndRepairOptions opts{.app = "shop", .node_id = "node-a", .io_timeout_ms = 10000};
  opts.peers.emplace_back("node-x", []() -> Result<UniqueFd> { return Unavailable("no route"); });
  opts.peers.emplace_back("node-b", [&]() -> Result<UniqueFd> { return Connect(); });
  auto r = ScrubAndRepair(*a_.store, opts);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->last.ok());
  EXPECT_EQ(r->repaired, 2u);
  EXPECT_EQ(r->rounds, 3);  // the tree, then the chunk it hid, then clean
  ASSERT_EQ(r->peer_errors.size(), 2u);
  EXPECT_NE(r->peer_errors[0].find("node-x"), std::string::npos);
  ExpectIntact(*a_.store);
}

TEST_F(ChannelRepairTest, ScrubAndRepairStopsWhenNoPeerHasAHealthyCopy) {
  std::string id = DamageChunkFile(DataChunkFiles(a_)[0]);
  DamageChunkFile(DataChunkFiles(b_)[0]);
  ScrubAndRepairOptions opts{.app = "shop", .node_id = "node-a", .io_timeout_ms = 10000};
  opts.peers.emplace_back("node-b", [&]() -> Result<UniqueFd> { return Connect(); });
  auto r = ScrubAndRepair(*a_.store, opts);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->repaired, 0u);
  EXPECT_EQ(r->rounds, 1);
  EXPECT_EQ(r->last.DamagedIds(), std::vector<std::string>{id});
}

// zfs: a damaged block in the primary's pool; the volume is re-received
// from the replica over the channel, with the app "stopped" around it.
class ChannelZfsRepairTest : public ChannelTest {
 protected:
  storage::testing::TestStore NewStore() override {
    return storage::testing::MakeZfsTestStoreOnOwnPool();
  }
};

TEST_F(ChannelZfsRepairTest, DamagedPrimaryIsReReceivedFromTheReplica) {
  const std::string data = RandomBytes(256 * 1024, 21);
  WriteFile(live_ + "/index.html", "hello");
  auto s1 = Snap("s1");
  ASSERT_TRUE(PushOnce("", s1.id).ok());
  WriteFile(live_ + "/data.bin", data);
  auto s2 = Snap("s2");
  ASSERT_TRUE(PushOnce(s1.id, s2.id).ok());
  ASSERT_EQ(storage::testing::DamageInZfsPool(a_, data).value(), 1);

  int stopped = 0;
  ScrubAndRepairOptions opts{.app = "shop", .node_id = "node-a", .io_timeout_ms = 10000};
  opts.peers.emplace_back("node-b", [&]() -> Result<UniqueFd> { return Connect(); });
  opts.around_repair = [&](const std::function<Status()>& work) {
    ++stopped;
    return work();
  };
  auto r = ScrubAndRepair(*a_.store, opts);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->last.ok()) << r->last.problems[0].text;
  EXPECT_EQ(r->rounds, 2);
  EXPECT_EQ(r->repaired, 1u);  // s2, from s1
  EXPECT_EQ(stopped, 1);
  EXPECT_TRUE(r->kept_branches.empty()) << r->kept_branches[0];
  EXPECT_EQ(*ReadFileToString(*a_.store->LivePath("shop") + "/data.bin"), data);
  EXPECT_EQ(a_.store->ListSnapshots("shop")->back().id, s2.id);
  EXPECT_TRUE(Eventually([&] { return rx_->stats().repairs_served == 1; }));
}

}  // namespace
}  // namespace hc::replication
