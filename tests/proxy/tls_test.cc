// The TLS engines (src/proxy/tls.h) against real TLS clients on loopback:
// the openssl CLI (s_client) and curl, plus a small blocking OpenSSL client
// for what they cannot do precisely (half-close, exact byte counts, client
// certificates). A throwaway CA and certificates are made with the openssl
// CLI in a temp dir. Addresses: terminator 127.0.0.90, tunnel listeners
// 127.0.0.91, Adopt's listener 127.0.0.92, a dead remote 127.0.0.93, the
// tunnel's server (a terminator with mutual TLS) 127.0.0.95.
#include "proxy/tls.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "common/subprocess.h"
#include "net/socket.h"

namespace hc::proxy {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kTlsHost = "127.0.0.90";
constexpr const char* kTunnelHost = "127.0.0.91";
constexpr const char* kAdoptHost = "127.0.0.92";
constexpr const char* kDeadHost = "127.0.0.93";
constexpr const char* kNodeHost = "127.0.0.95";

std::string RunOk(const std::vector<std::string>& argv, std::string_view input = {}) {
  auto r = RunCommand(argv, input);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return "";
  EXPECT_TRUE(r->ok()) << DescribeFailure(argv, *r);
  return r->out + r->err;
}

std::string ReadFile(const std::string& path) {
  auto s = ReadFileToString(path);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? *s : "";
}

// The throwaway PKI: a CA, a foreign CA, server and client certificates.
struct Pki {
  std::string dir;
  std::string Path(const std::string& name) const { return dir + "/" + name; }
  std::string Pem(const std::string& name) const { return ReadFile(Path(name + ".pem")); }
  std::string Key(const std::string& name) const { return ReadFile(Path(name + ".key")); }
  CertSpec Spec(const std::string& id, const std::string& file,
                std::vector<std::string> names) const {
    return CertSpec{id, std::move(names), Pem(file), Key(file)};
  }

  void MakeCa(const std::string& name, const std::string& cn) {
    RunOk({"openssl",
           "req",
           "-x509",
           "-newkey",
           "ec",
           "-pkeyopt",
           "ec_paramgen_curve:prime256v1",
           "-nodes",
           "-keyout",
           Path(name + ".key"),
           "-out",
           Path(name + ".pem"),
           "-subj",
           "/CN=" + cn,
           "-days",
           "2",
           "-addext",
           "basicConstraints=critical,CA:TRUE",
           "-addext",
           "keyUsage=critical,keyCertSign,cRLSign"});
  }
  // subject e.g. "/CN=shop.example.com"; ext e.g. "subjectAltName=DNS:x".
  void MakeLeaf(const std::string& name, const std::string& ca, const std::string& subject,
                const std::string& ext) {
    RunOk({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-keyout", Path(name + ".key"), "-out", Path(name + ".csr"), "-subj",
           subject});
    ASSERT_TRUE(WriteFileAtomic(Path(name + ".ext"), ext + "\n", false).ok());
    RunOk({"openssl", "x509", "-req", "-in", Path(name + ".csr"), "-CA", Path(ca + ".pem"),
           "-CAkey", Path(ca + ".key"), "-CAcreateserial", "-days", "2", "-out",
           Path(name + ".pem"), "-extfile", Path(name + ".ext")});
  }
};

const Pki& TestPki() {
  static Pki* pki = [] {
    auto* p = new Pki;
    char tmpl[] = "/tmp/hc_tls_test.XXXXXX";
    p->dir = ::mkdtemp(tmpl);
    p->MakeCa("ca", "HC Test CA");
    p->MakeCa("foreign-ca", "Foreign CA");
    const std::string server = "\nextendedKeyUsage=serverAuth";
    const std::string client = "extendedKeyUsage=clientAuth";
    p->MakeLeaf("shop", "ca", "/CN=shop.example.com",
                "subjectAltName=DNS:shop.example.com" + server);
    p->MakeLeaf("shop2", "ca", "/O=v2/CN=shop.example.com",
                "subjectAltName=DNS:shop.example.com" + server);
    p->MakeLeaf("wild", "ca", "/CN=*.example.com", "subjectAltName=DNS:*.example.com" + server);
    p->MakeLeaf("default", "ca", "/CN=default.test", "subjectAltName=DNS:default.test" + server);
    p->MakeLeaf("node-b", "ca", "/CN=node-b",
                "subjectAltName=DNS:node-b,IP:127.0.0.95\nextendedKeyUsage=serverAuth,clientAuth");
    p->MakeLeaf("node-a", "ca", "/CN=node-a", client);
    p->MakeLeaf("node-a2", "ca", "/CN=node-a2", client);
    p->MakeLeaf("intruder", "foreign-ca", "/CN=intruder", client);
    return p;
  }();
  return *pki;
}

// Removes the PKI's temp dir at exit.
class PkiCleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    const Pki& p = TestPki();
    (void)RemoveTree(p.dir);
  }
};
[[maybe_unused]] auto* const kPkiCleanup = ::testing::AddGlobalTestEnvironment(new PkiCleanup);

// ---- sinks: what the terminator hands plain connections to

// Echo (bytes back until EOF, then a half-close) or a one-shot HTTP answer
// describing the connection. A thread per connection; the terminator must be
// stopped before this is destroyed (its plain ends close, the threads end).
class Sinks {
 public:
  enum class Mode { kEcho, kHttp };
  explicit Sinks(Mode mode) : mode_(mode) {}
  ~Sinks() {
    std::vector<std::thread> threads;
    {
      std::lock_guard<std::mutex> lock(mu_);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }

  TlsTerminator::Sink sink() {
    return [this](UniqueFd fd, const TlsConnInfo& info) {
      std::lock_guard<std::mutex> lock(mu_);
      infos_.push_back(info);
      int raw = fd.release();
      threads_.emplace_back([this, raw] { Serve(UniqueFd(raw)); });
    };
  }
  size_t count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return infos_.size();
  }
  TlsConnInfo last() const {
    std::lock_guard<std::mutex> lock(mu_);
    return infos_.empty() ? TlsConnInfo{} : infos_.back();
  }

 private:
  void Serve(UniqueFd fd) {
    int flags = ::fcntl(fd.get(), F_GETFL);
    (void)::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
    std::vector<char> buf(1 << 16);
    auto deadline = net::DeadlineIn(60s);
    if (mode_ == Mode::kEcho) {
      for (;;) {
        auto n = net::ReadSome(fd.get(), buf.data(), buf.size(), deadline);
        if (!n.ok()) return;
        if (*n == 0) break;
        if (!net::WriteAll(fd.get(), std::string_view(buf.data(), *n), deadline).ok()) return;
      }
      (void)::shutdown(fd.get(), SHUT_WR);
      return;
    }
    std::string head;
    while (head.find("\r\n\r\n") == std::string::npos) {
      auto n = net::ReadSome(fd.get(), buf.data(), buf.size(), deadline);
      if (!n.ok() || *n == 0) return;
      head.append(buf.data(), *n);
    }
    TlsConnInfo info = last();
    std::string body = "sni=" + info.sni + " cert=" + info.cert_id + " alpn=" + info.alpn + "\n";
    std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
                       "\r\nConnection: close\r\n\r\n" + body;
    (void)net::WriteAll(fd.get(), resp, deadline);
    (void)::shutdown(fd.get(), SHUT_WR);
    while (true) {
      auto n = net::ReadSome(fd.get(), buf.data(), buf.size(), deadline);
      if (!n.ok() || *n == 0) return;
    }
  }

  const Mode mode_;
  mutable std::mutex mu_;
  std::vector<TlsConnInfo> infos_;    // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;  // GUARDED_BY(mu_)
};

// ---- a blocking OpenSSL client (10 s socket timeouts, so nothing hangs)

struct ClientOpts {
  std::string sni;
  std::string cert;  // file base name in the PKI ("node-a"); empty = none
  std::string alpn;
  std::string ca = "ca";
};

class TlsClient {
 public:
  TlsClient(const net::HostPort& at, const ClientOpts& o) {
    auto fd = net::ConnectTcp(at, net::DeadlineIn(5s));
    if (!fd.ok()) return;
    Init(std::move(*fd), o);
  }
  TlsClient(UniqueFd fd, const ClientOpts& o) { Init(std::move(fd), o); }
  ~TlsClient() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
  }

  bool handshake_ok() const { return handshake_ok_; }
  const std::string& subject() const { return subject_; }
  const std::string& alpn() const { return alpn_; }
  int fd() const { return fd_.get(); }

  bool Write(std::string_view data) {
    while (!data.empty()) {
      size_t n = 0;
      if (SSL_write_ex(ssl_, data.data(), data.size(), &n) != 1) return false;
      data.remove_prefix(n);
    }
    return true;
  }
  // Exactly n bytes, or fewer on EOF/error.
  std::string Read(size_t n) {
    std::string out;
    char buf[16384];
    while (out.size() < n) {
      size_t got = 0;
      if (SSL_read_ex(ssl_, buf, std::min(sizeof buf, n - out.size()), &got) != 1) break;
      out.append(buf, got);
    }
    return out;
  }
  // Until close_notify (true) or an error / bare EOF (false).
  bool ReadToEnd(std::string* out) {
    char buf[16384];
    for (;;) {
      size_t got = 0;
      if (SSL_read_ex(ssl_, buf, sizeof buf, &got) == 1) {
        out->append(buf, got);
        continue;
      }
      return SSL_get_error(ssl_, 0) == SSL_ERROR_ZERO_RETURN;
    }
  }
  bool Echoes(const std::string& msg) { return Write(msg) && Read(msg.size()) == msg; }
  // Sends close_notify; reading stays possible.
  void CloseWrite() { (void)SSL_shutdown(ssl_); }

 private:
  void Init(UniqueFd fd, const ClientOpts& o) {
    const Pki& pki = TestPki();
    fd_ = std::move(fd);
    struct timeval tv = {10, 0};
    (void)::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    (void)::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx_, pki.Path(o.ca + ".pem").c_str(), nullptr);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    if (!o.cert.empty()) {
      SSL_CTX_use_certificate_chain_file(ctx_, pki.Path(o.cert + ".pem").c_str());
      SSL_CTX_use_PrivateKey_file(ctx_, pki.Path(o.cert + ".key").c_str(), SSL_FILETYPE_PEM);
    }
    ssl_ = SSL_new(ctx_);
    if (!o.sni.empty()) SSL_set_tlsext_host_name(ssl_, o.sni.c_str());
    if (!o.alpn.empty()) {
      std::string wire(1, static_cast<char>(o.alpn.size()));
      wire += o.alpn;
      SSL_set_alpn_protos(ssl_, reinterpret_cast<const unsigned char*>(wire.data()),
                          static_cast<unsigned>(wire.size()));
    }
    SSL_set_fd(ssl_, fd_.get());
    handshake_ok_ = SSL_connect(ssl_) == 1;
    ERR_clear_error();
    if (!handshake_ok_) return;
    if (X509* peer = SSL_get0_peer_certificate(ssl_)) {
      char line[512];
      X509_NAME_oneline(X509_get_subject_name(peer), line, sizeof line);
      subject_ = line;
    }
    const unsigned char* p = nullptr;
    unsigned n = 0;
    SSL_get0_alpn_selected(ssl_, &p, &n);
    if (p != nullptr) alpn_.assign(reinterpret_cast<const char*>(p), n);
  }

  UniqueFd fd_;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  bool handshake_ok_ = false;
  std::string subject_;
  std::string alpn_;
};

// Waits for a condition (up to 10 s).
template <typename F>
bool Eventually(F f) {
  auto until = Clock::now() + 10s;
  while (Clock::now() < until) {
    if (f()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return f();
}

// True if `fd` sees EOF (or a reset) before `within`.
bool ClosedWithin(int fd, std::chrono::milliseconds within) {
  char buf[4096];
  auto deadline = net::DeadlineIn(within);
  for (;;) {
    auto n = net::ReadSome(fd, buf, sizeof buf, deadline);
    if (!n.ok()) return n.status().message().find("timed out") == std::string::npos;
    if (*n == 0) return true;
  }
}

std::shared_ptr<const CertTable> MustBuild(std::vector<CertSpec> certs, std::optional<CertSpec> def,
                                           const TlsServerPolicy& policy = {}) {
  auto t = CertTable::Build(std::move(certs), std::move(def), policy);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? *t : nullptr;
}

// ---- CertTable

TEST(CertTableTest, LooksUpExactThenLongestWildcardThenDefault) {
  const Pki& p = TestPki();
  auto t = MustBuild(
      {p.Spec("shop", "shop", {"Shop.Example.com."}), p.Spec("wild", "wild", {"*.example.com"}),
       p.Spec("deep", "wild", {"*.eu.example.com"})},
      p.Spec("default", "default", {}));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Lookup("shop.example.com"), "shop");
  EXPECT_EQ(t->Lookup("SHOP.example.com."), "shop");
  EXPECT_EQ(t->Lookup("blog.example.com"), "wild");
  EXPECT_EQ(t->Lookup("a.b.example.com"), "wild");
  EXPECT_EQ(t->Lookup("x.eu.example.com"), "deep");
  EXPECT_EQ(t->Lookup("example.com"), "default");
  EXPECT_EQ(t->Lookup(""), "default");
  auto no_default = MustBuild({p.Spec("shop", "shop", {"shop.example.com"})}, std::nullopt);
  EXPECT_EQ(no_default->Lookup("other.test"), "");
}

TEST(CertTableTest, BuildNamesTheCertificateAndTheProblem) {
  const Pki& p = TestPki();
  auto expect_error = [](Result<std::shared_ptr<const CertTable>> r, const std::string& part) {
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find(part), std::string::npos) << r.status().ToString();
  };
  CertSpec mismatch{"shop", {"shop.example.com"}, p.Pem("shop"), p.Key("wild")};
  expect_error(CertTable::Build({mismatch}, std::nullopt, {}),
               "certificate 'shop': the private key does not match");
  CertSpec garbage{"junk", {"a.test"}, "-----BEGIN CERTIFICATE-----\nxx\n", p.Key("shop")};
  expect_error(CertTable::Build({garbage}, std::nullopt, {}), "certificate 'junk'");
  CertSpec nokey{"nokey", {"a.test"}, p.Pem("shop"), "not a key"};
  expect_error(CertTable::Build({nokey}, std::nullopt, {}), "'nokey': cannot parse the private");
  expect_error(CertTable::Build({p.Spec("s", "shop", {"bad name"})}, std::nullopt, {}),
               "'s': name 'bad name' is not a valid DNS name");
  expect_error(CertTable::Build({p.Spec("s", "shop", {"*.com"})}, std::nullopt, {}), "too broad");
  expect_error(CertTable::Build({p.Spec("s", "shop", {"a.*.com"})}, std::nullopt, {}),
               "not a valid DNS name");
  expect_error(CertTable::Build({p.Spec("one", "shop", {"shop.example.com"}),
                                 p.Spec("two", "shop2", {"shop.example.com"})},
                                std::nullopt, {}),
               "already served by certificate 'one'");
  EXPECT_TRUE(CertTable::Build({}, std::nullopt, {}).ok()) << "an empty table refuses everyone";
  expect_error(CertTable::Build({p.Spec("s", "shop", {"a.test"})}, std::nullopt,
                                TlsServerPolicy{.client_ca_pem = "nope"}),
               "client CA");
}

// ---- the terminator

class TerminatorTest : public ::testing::Test {
 protected:
  void Start(Sinks::Mode mode, std::shared_ptr<const CertTable> certs,
             TlsTerminatorOptions opts = {}) {
    sinks_ = std::make_unique<Sinks>(mode);
    opts.listen = {net::HostPort{kTlsHost, 0}};
    if (opts.workers == 0) opts.workers = 2;
    tls_ = std::make_unique<TlsTerminator>(opts, sinks_->sink());
    Status s = tls_->Start(std::move(certs));
    ASSERT_TRUE(s.ok()) << s.ToString();
    at_ = tls_->bound()[0];
  }
  void TearDown() override {
    if (tls_) tls_->Stop();
    tls_.reset();
    sinks_.reset();
  }
  std::shared_ptr<const CertTable> ShopTable(bool with_default, TlsServerPolicy policy = {}) {
    const Pki& p = TestPki();
    std::optional<CertSpec> def;
    if (with_default) def = p.Spec("default", "default", {});
    return MustBuild(
        {p.Spec("shop", "shop", {"shop.example.com"}), p.Spec("wild", "wild", {"*.example.com"})},
        def, policy);
  }
  // openssl s_client's output for a handshake with `sni` (stdin is empty,
  // so it closes right after).
  std::string SClient(const std::string& sni, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {
        "timeout",  "20",           "openssl", "s_client",
        "-connect", at_.ToString(), "-CAfile", TestPki().Path("ca.pem")};
    if (!sni.empty()) argv.insert(argv.end(), {"-servername", sni});
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto r = RunCommand(argv, "");
    EXPECT_TRUE(r.ok());
    return r.ok() ? r->out + r->err : "";
  }

  std::unique_ptr<Sinks> sinks_;
  std::unique_ptr<TlsTerminator> tls_;
  net::HostPort at_;
};

TEST_F(TerminatorTest, SniPicksTheCertificateWildcardAndDefault) {
  Start(Sinks::Mode::kEcho, ShopTable(true));
  EXPECT_NE(SClient("shop.example.com").find("subject=CN = shop.example.com"), std::string::npos);
  EXPECT_NE(SClient("blog.example.com").find("subject=CN = *.example.com"), std::string::npos);
  EXPECT_NE(SClient("other.test").find("subject=CN = default.test"), std::string::npos);
  EXPECT_NE(SClient("").find("subject=CN = default.test"), std::string::npos);
  EXPECT_TRUE(Eventually([&] { return sinks_->count() == 4; }));
  EXPECT_EQ(tls_->stats().handshakes, 4u);
  EXPECT_EQ(tls_->stats().handshake_failures, 0u);
}

TEST_F(TerminatorTest, UnknownSniWithoutDefaultFailsTheHandshake) {
  Start(Sinks::Mode::kEcho, ShopTable(false));
  std::string out = SClient("other.test");
  EXPECT_NE(out.find("unrecognized name"), std::string::npos) << out;
  TlsClient c(at_, {.sni = "other.test"});
  EXPECT_FALSE(c.handshake_ok());
  TlsClient good(at_, {.sni = "shop.example.com"});
  EXPECT_TRUE(good.handshake_ok());
  EXPECT_TRUE(Eventually([&] { return tls_->stats().handshake_failures == 2; }));
  EXPECT_TRUE(Eventually([&] { return sinks_->count() == 1; }));
}

TEST_F(TerminatorTest, CurlGetsAnHttpAnswerWithSniAndAlpn) {
  Start(Sinks::Mode::kHttp, ShopTable(false, TlsServerPolicy{.alpn = {"http/1.1"}}));
  std::string port = std::to_string(at_.port);
  std::string out = RunOk({"curl", "-sS", "--max-time", "20", "--cacert", TestPki().Path("ca.pem"),
                           "--resolve", "shop.example.com:" + port + ":" + kTlsHost,
                           "https://shop.example.com:" + port + "/"});
  EXPECT_EQ(out, "sni=shop.example.com cert=shop alpn=http/1.1\n");
  EXPECT_EQ(sinks_->last().client.host, "127.0.0.1");
}

TEST_F(TerminatorTest, AlpnIsNegotiatedInServerPreference) {
  Start(Sinks::Mode::kEcho, ShopTable(false, TlsServerPolicy{.alpn = {"h2", "http/1.1"}}));
  std::string out = SClient("shop.example.com", {"-alpn", "http/1.1,h2"});
  EXPECT_NE(out.find("ALPN protocol: h2"), std::string::npos) << out;
  TlsClient c(at_, {.sni = "shop.example.com", .alpn = "http/1.1"});
  ASSERT_TRUE(c.handshake_ok());
  EXPECT_EQ(c.alpn(), "http/1.1");
  EXPECT_TRUE(c.Echoes("x"));
  EXPECT_EQ(sinks_->last().alpn, "http/1.1");
  // No protocol in common: refused.
  TlsClient other(at_, {.sni = "shop.example.com", .alpn = "imap"});
  EXPECT_FALSE(other.handshake_ok());
  // No ALPN offered: none negotiated.
  TlsClient none(at_, {.sni = "shop.example.com"});
  ASSERT_TRUE(none.handshake_ok());
  EXPECT_TRUE(none.Echoes("y"));
  EXPECT_EQ(sinks_->last().alpn, "");
}

TEST_F(TerminatorTest, MutualTlsRefusesMissingAndForeignCertificates) {
  Start(Sinks::Mode::kEcho,
        ShopTable(false, TlsServerPolicy{.client_ca_pem = TestPki().Pem("ca")}));
  {
    // TLS 1.3: the client finishes first; the server's alert ends it.
    TlsClient none(at_, {.sni = "shop.example.com"});
    EXPECT_FALSE(none.handshake_ok() && none.Echoes("hello"));
  }
  {
    TlsClient foreign(at_, {.sni = "shop.example.com", .cert = "intruder"});
    EXPECT_FALSE(foreign.handshake_ok() && foreign.Echoes("hello"));
  }
  EXPECT_TRUE(Eventually([&] { return tls_->stats().handshake_failures == 2; }));
  EXPECT_EQ(sinks_->count(), 0u);
  TlsClient good(at_, {.sni = "shop.example.com", .cert = "node-a"});
  ASSERT_TRUE(good.handshake_ok());
  EXPECT_TRUE(good.Echoes("hello"));
  EXPECT_EQ(sinks_->last().peer_cn, "node-a");
  EXPECT_EQ(sinks_->last().sni, "shop.example.com");
}

TEST_F(TerminatorTest, AdoptFeedsThePrefixFirst) {
  Start(Sinks::Mode::kEcho, ShopTable(false));
  auto l = net::ListenTcp(net::HostPort{kAdoptHost, 0});
  ASSERT_TRUE(l.ok());
  net::HostPort lat{kAdoptHost, *net::LocalPort(l->get())};
  std::atomic<bool> ok{false};
  std::string subject;
  std::thread client([&] {
    TlsClient c(lat, {.sni = "shop.example.com"});
    subject = c.subject();
    ok = c.handshake_ok() && c.Echoes("adopted");
  });
  UniqueFd conn(::accept4(l->get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(conn.valid());
  // Sniff a part of the ClientHello, as an SNI router would.
  std::string prefix(100, '\0');
  auto n = net::ReadSome(conn.get(), prefix.data(), prefix.size(), net::DeadlineIn(5s));
  ASSERT_TRUE(n.ok());
  prefix.resize(*n);
  ASSERT_EQ(prefix[0], 0x16);  // a handshake record
  tls_->Adopt(std::move(conn), prefix, net::HostPort{"127.0.0.1", 1234});
  client.join();
  EXPECT_TRUE(ok);
  EXPECT_EQ(subject, "/CN=shop.example.com");
  EXPECT_EQ(sinks_->last().client.port, 1234);
}

TEST_F(TerminatorTest, HalfCloseTravelsBothWays) {
  Start(Sinks::Mode::kEcho, ShopTable(false));
  TlsClient c(at_, {.sni = "shop.example.com"});
  ASSERT_TRUE(c.handshake_ok());
  ASSERT_TRUE(c.Write("first "));
  ASSERT_TRUE(c.Write("second"));
  // close_notify -> the sink reads EOF, echoes what it had, half-closes ->
  // we get the bytes and then close_notify.
  c.CloseWrite();
  std::string got;
  EXPECT_TRUE(c.ReadToEnd(&got));
  EXPECT_EQ(got, "first second");
  EXPECT_TRUE(Eventually([&] { return tls_->stats().open == 0; }));
}

TEST_F(TerminatorTest, LargeTransferIsByteIdentical) {
  Start(Sinks::Mode::kEcho, ShopTable(false));
  TlsClient c(at_, {.sni = "shop.example.com"});
  ASSERT_TRUE(c.handshake_ok());
  constexpr size_t kTotal = size_t{8} << 20;
  std::string data(kTotal, '\0');
  uint64_t x = 88172645463325252ull;
  for (char& ch : data) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    ch = static_cast<char>(x);
  }
  std::thread writer([&] {
    EXPECT_TRUE(c.Write(data));
    c.CloseWrite();
  });
  std::string got;
  EXPECT_TRUE(c.ReadToEnd(&got));
  writer.join();
  EXPECT_EQ(got.size(), kTotal);
  EXPECT_TRUE(got == data);
}

TEST_F(TerminatorTest, SilentClientTimesOut) {
  Start(Sinks::Mode::kEcho, ShopTable(false), {.handshake_timeout_ms = 300});
  auto fd = net::ConnectTcp(at_, net::DeadlineIn(2s));
  ASSERT_TRUE(fd.ok());
  auto t0 = Clock::now();
  EXPECT_TRUE(ClosedWithin(fd->get(), 5s));
  EXPECT_LT(Clock::now() - t0, 3s);
  EXPECT_GE(Clock::now() - t0, 250ms);
  EXPECT_TRUE(Eventually([&] { return tls_->stats().handshake_failures == 1; }));
  EXPECT_EQ(tls_->stats().open, 0);
}

TEST_F(TerminatorTest, IdleConnectionIsClosed) {
  Start(Sinks::Mode::kEcho, ShopTable(false), {.idle_timeout_ms = 300});
  TlsClient c(at_, {.sni = "shop.example.com"});
  ASSERT_TRUE(c.handshake_ok());
  EXPECT_TRUE(c.Echoes("a"));
  std::string rest;
  auto t0 = Clock::now();
  (void)c.ReadToEnd(&rest);
  EXPECT_LT(Clock::now() - t0, 5s);
  EXPECT_TRUE(Eventually([&] { return tls_->stats().open == 0; }));
}

TEST_F(TerminatorTest, SetCertsKeepsEstablishedConnections) {
  const Pki& p = TestPki();
  Start(Sinks::Mode::kEcho, ShopTable(false));
  TlsClient before(at_, {.sni = "shop.example.com"});
  ASSERT_TRUE(before.handshake_ok());
  EXPECT_EQ(before.subject(), "/CN=shop.example.com");
  EXPECT_TRUE(before.Echoes("one"));
  tls_->SetCerts(MustBuild({p.Spec("shop2", "shop2", {"shop.example.com"})}, std::nullopt));
  TlsClient after(at_, {.sni = "shop.example.com"});
  ASSERT_TRUE(after.handshake_ok());
  EXPECT_EQ(after.subject(), "/O=v2/CN=shop.example.com");
  EXPECT_TRUE(Eventually([&] { return sinks_->last().cert_id == "shop2"; }));
  EXPECT_TRUE(before.Echoes("still here"));
  EXPECT_TRUE(after.Echoes("two"));
  // The new table has no wildcard.
  TlsClient wild(at_, {.sni = "blog.example.com"});
  EXPECT_FALSE(wild.handshake_ok());
}

TEST_F(TerminatorTest, StopIsPromptWithOpenConnections) {
  Start(Sinks::Mode::kEcho, ShopTable(false));
  std::vector<std::unique_ptr<TlsClient>> clients;
  for (int i = 0; i < 5; ++i) {
    clients.push_back(std::make_unique<TlsClient>(at_, ClientOpts{.sni = "shop.example.com"}));
    ASSERT_TRUE(clients.back()->handshake_ok());
    ASSERT_TRUE(clients.back()->Echoes("hi"));
  }
  auto silent = net::ConnectTcp(at_, net::DeadlineIn(2s));  // mid-handshake
  ASSERT_TRUE(silent.ok());
  EXPECT_TRUE(Eventually([&] { return tls_->stats().open == 6; }));
  auto t0 = Clock::now();
  tls_->Stop();
  EXPECT_LT(Clock::now() - t0, 1s);
  EXPECT_EQ(tls_->stats().open, 0);
  EXPECT_TRUE(ClosedWithin(silent->get(), 2s));
  for (auto& c : clients) EXPECT_TRUE(ClosedWithin(c->fd(), 2s));
}

TEST_F(TerminatorTest, OverMaxConnectionsIsRefused) {
  Start(Sinks::Mode::kEcho, ShopTable(false), {.workers = 1, .max_connections = 1});
  TlsClient first(at_, {.sni = "shop.example.com"});
  ASSERT_TRUE(first.handshake_ok());
  TlsClient second(at_, {.sni = "shop.example.com"});
  EXPECT_FALSE(second.handshake_ok());
  EXPECT_EQ(tls_->stats().refused, 1u);
  EXPECT_TRUE(first.Echoes("ok"));
}

// ---- tunnels: plain client -> TlsTunnels -> TlsTerminator (mutual TLS) -> echo

class TunnelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const Pki& p = TestPki();
    sinks_ = std::make_unique<Sinks>(Sinks::Mode::kEcho);
    server_ = std::make_unique<TlsTerminator>(
        TlsTerminatorOptions{.listen = {net::HostPort{kNodeHost, 0}}, .workers = 2},
        sinks_->sink());
    // The only certificate, also the default: clients that send no SNI
    // (an IP literal) get it too.
    auto certs = MustBuild({}, p.Spec("node-b", "node-b", {"node-b"}),
                           TlsServerPolicy{.client_ca_pem = p.Pem("ca"), .alpn = {"hc-node"}});
    ASSERT_TRUE(server_->Start(certs).ok());
    remote_ = server_->bound()[0];
    tunnels_ = std::make_unique<TlsTunnels>(Identity("node-a"), kTunnelHost);
    Status s = tunnels_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  void TearDown() override {
    tunnels_->Stop();
    server_->Stop();
    sinks_.reset();
  }
  static TlsClientIdentity Identity(const std::string& name) {
    const Pki& p = TestPki();
    return TlsClientIdentity{p.Pem("ca"), p.Pem(name), p.Key(name)};
  }
  net::HostPort Open(const std::string& name, const std::string& alpn = "hc-node") {
    auto local = tunnels_->Open({.remote = remote_, .expect_server_name = name, .alpn = alpn});
    EXPECT_TRUE(local.ok()) << local.status().ToString();
    return local.ok() ? *local : net::HostPort{};
  }
  static bool PlainEchoes(const net::HostPort& at, const std::string& msg) {
    auto fd = net::ConnectTcp(at, net::DeadlineIn(2s));
    if (!fd.ok()) return false;
    if (!net::WriteAll(fd->get(), msg, net::DeadlineIn(5s)).ok()) return false;
    std::string got(msg.size(), '\0');
    size_t have = 0;
    while (have < msg.size()) {
      auto n = net::ReadSome(fd->get(), got.data() + have, msg.size() - have, net::DeadlineIn(5s));
      if (!n.ok() || *n == 0) return false;
      have += *n;
    }
    return got == msg;
  }

  std::unique_ptr<Sinks> sinks_;
  std::unique_ptr<TlsTerminator> server_;
  std::unique_ptr<TlsTunnels> tunnels_;
  net::HostPort remote_;
};

TEST_F(TunnelTest, CarriesFiftyMegabytesBothWaysByteIdentical) {
  net::HostPort local = Open("node-b");
  EXPECT_EQ(local.host, kTunnelHost);
  auto fd = net::ConnectTcp(local, net::DeadlineIn(2s));
  ASSERT_TRUE(fd.ok());
  constexpr size_t kTotal = size_t{50} << 20;
  constexpr size_t kChunk = size_t{1} << 16;
  auto fill = [](uint64_t* x, char* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
      p[i] = static_cast<char>(*x);
    }
  };
  std::thread writer([&] {
    uint64_t x = 88172645463325252ull;
    std::vector<char> buf(kChunk);
    for (size_t sent = 0; sent < kTotal; sent += kChunk) {
      fill(&x, buf.data(), kChunk);
      if (!net::WriteAll(fd->get(), std::string_view(buf.data(), kChunk), net::DeadlineIn(30s))
               .ok()) {
        ADD_FAILURE() << "write failed at " << sent;
        return;
      }
    }
    (void)::shutdown(fd->get(), SHUT_WR);
  });
  uint64_t x = 88172645463325252ull;
  std::vector<char> want(kChunk), got(kChunk);
  size_t total = 0, in_chunk = 0;
  bool same = true;
  fill(&x, want.data(), kChunk);
  for (;;) {
    auto n = net::ReadSome(fd->get(), got.data(), kChunk - in_chunk, net::DeadlineIn(30s));
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    if (*n == 0) break;
    same = same && std::memcmp(got.data(), want.data() + in_chunk, *n) == 0;
    total += *n;
    in_chunk += *n;
    if (in_chunk == kChunk) {
      in_chunk = 0;
      fill(&x, want.data(), kChunk);
    }
  }
  writer.join();
  EXPECT_EQ(total, kTotal);
  EXPECT_TRUE(same);
  EXPECT_EQ(sinks_->last().peer_cn, "node-a");
  EXPECT_EQ(sinks_->last().alpn, "hc-node");
  EXPECT_EQ(sinks_->last().sni, "node-b");
}

TEST_F(TunnelTest, ReusesTheTunnelAndResumesSessions) {
  net::HostPort local = Open("node-b");
  EXPECT_EQ(Open("node-b").port, local.port);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(PlainEchoes(local, "ping " + std::to_string(i)));
  EXPECT_EQ(tunnels_->stats().connections, 3u);
  EXPECT_GE(tunnels_->stats().resumed, 1u);
  // The server still sees the client certificate of a resumed session.
  EXPECT_EQ(sinks_->last().peer_cn, "node-a");
}

TEST_F(TunnelTest, VerifiesAnIpSan) {
  EXPECT_TRUE(PlainEchoes(Open(kNodeHost), "by address"));
}

TEST_F(TunnelTest, RefusesAServerWithACertificateForAnotherName) {
  net::HostPort local = Open("node-c");
  auto fd = net::ConnectTcp(local, net::DeadlineIn(2s));
  ASSERT_TRUE(fd.ok());
  (void)net::WriteAll(fd->get(), "hello", net::DeadlineIn(2s));
  auto t0 = Clock::now();
  EXPECT_TRUE(ClosedWithin(fd->get(), 5s));
  EXPECT_LT(Clock::now() - t0, 3s);
  EXPECT_TRUE(Eventually([&] { return tunnels_->stats().failures == 1; }));
  EXPECT_EQ(sinks_->count(), 0u);
}

TEST_F(TunnelTest, RefusesAServerWithoutTheAlpn) {
  net::HostPort local = Open("node-b", "hc-other");
  auto fd = net::ConnectTcp(local, net::DeadlineIn(2s));
  ASSERT_TRUE(fd.ok());
  EXPECT_TRUE(ClosedWithin(fd->get(), 5s));
  EXPECT_EQ(sinks_->count(), 0u);
}

TEST_F(TunnelTest, DeadRemoteClosesTheLocalConnectionQuickly) {
  auto l = net::ListenTcp(net::HostPort{kDeadHost, 0});
  ASSERT_TRUE(l.ok());
  net::HostPort dead{kDeadHost, *net::LocalPort(l->get())};
  l->Reset();  // nothing listens there now
  auto local = tunnels_->Open({.remote = dead, .expect_server_name = "node-b"});
  ASSERT_TRUE(local.ok());
  auto fd = net::ConnectTcp(*local, net::DeadlineIn(2s));
  ASSERT_TRUE(fd.ok());
  auto t0 = Clock::now();
  EXPECT_TRUE(ClosedWithin(fd->get(), 5s));
  EXPECT_LT(Clock::now() - t0, 1s);
}

TEST_F(TunnelTest, SetIdentityAppliesToNewConnections) {
  net::HostPort local = Open("node-b");
  EXPECT_TRUE(PlainEchoes(local, "old"));
  EXPECT_EQ(sinks_->last().peer_cn, "node-a");
  TlsClientIdentity bad = Identity("node-a2");
  bad.key_pem = Identity("node-a").key_pem;
  EXPECT_FALSE(tunnels_->SetIdentity(bad).ok());
  ASSERT_TRUE(tunnels_->SetIdentity(Identity("node-a2")).ok());
  EXPECT_TRUE(PlainEchoes(local, "new"));
  EXPECT_EQ(sinks_->last().peer_cn, "node-a2");
}

TEST_F(TunnelTest, CloseStopsListeningButKeepsConnections) {
  net::HostPort local = Open("node-b");
  auto fd = net::ConnectTcp(local, net::DeadlineIn(2s));
  ASSERT_TRUE(fd.ok());
  ASSERT_TRUE(net::WriteAll(fd->get(), "a", net::DeadlineIn(2s)).ok());
  char c = 0;
  ASSERT_TRUE(net::ReadSome(fd->get(), &c, 1, net::DeadlineIn(5s)).ok());
  tunnels_->Close(remote_, "hc-node");
  EXPECT_TRUE(Eventually([&] { return !net::ConnectTcp(local, net::DeadlineIn(1s)).ok(); }));
  ASSERT_TRUE(net::WriteAll(fd->get(), "b", net::DeadlineIn(2s)).ok());
  auto n = net::ReadSome(fd->get(), &c, 1, net::DeadlineIn(5s));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(c, 'b');
}

}  // namespace
}  // namespace hc::proxy
