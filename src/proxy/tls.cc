#include "proxy/tls.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include "common/log.h"
#include "common/shared_slot.h"
#include "proxy/engine.h"

namespace hc::proxy {
namespace {

using Clock = std::chrono::steady_clock;

// Relay buffers (plaintext each way, ciphertext out). 64 KiB: a plain read
// fills four TLS records, and one send() carries them.
constexpr size_t kBufferSize = size_t{64} << 10;
constexpr size_t kMaxFreeBuffers = 256;
constexpr int kAcceptsPerWakeup = 64;
constexpr int kPumpRounds = 32;
constexpr unsigned char kAlertUnrecognizedName = 112;

struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct SessionFree {
  void operator()(SSL_SESSION* s) const { SSL_SESSION_free(s); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;
using SslPtr = std::unique_ptr<SSL, SslFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;
using SessionPtr = std::unique_ptr<SSL_SESSION, SessionFree>;

// The oldest queued OpenSSL error, as text; the queue is cleared.
std::string SslErrorText() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown error";
  const char* reason = ERR_reason_error_string(e);
  return reason != nullptr ? reason : "error " + std::to_string(e);
}

BioPtr MemBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// All certificates of a PEM bundle, in order.
Result<std::vector<X509Ptr>> ParseCerts(const std::string& pem, const std::string& what) {
  BioPtr bio = MemBio(pem);
  std::vector<X509Ptr> out;
  for (;;) {
    X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    if (x == nullptr) break;
    out.emplace_back(x);
  }
  unsigned long err = ERR_peek_last_error();
  // Running off the end of the input is how the loop ends.
  if (ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE) {
    ERR_clear_error();
  } else if (err != 0) {
    return InvalidArgument(what + ": cannot parse the PEM: " + SslErrorText());
  }
  if (out.empty()) return InvalidArgument(what + ": no certificate in the PEM");
  return out;
}

Result<PkeyPtr> ParseKey(const std::string& pem, const std::string& what) {
  BioPtr bio = MemBio(pem);
  EVP_PKEY* k = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
  if (k == nullptr) {
    return InvalidArgument(what + ": cannot parse the private key PEM: " + SslErrorText());
  }
  return PkeyPtr(k);
}

// Loads chain + key into ctx; checks that they match.
Status UseCertAndKey(SSL_CTX* ctx, const std::string& cert_pem, const std::string& key_pem,
                     const std::string& what) {
  HC_ASSIGN_OR_RETURN(std::vector<X509Ptr> chain, ParseCerts(cert_pem, what + " certificate"));
  HC_ASSIGN_OR_RETURN(PkeyPtr key, ParseKey(key_pem, what));
  if (SSL_CTX_use_certificate(ctx, chain[0].get()) != 1) {
    return InvalidArgument(what + ": certificate rejected: " + SslErrorText());
  }
  for (size_t i = 1; i < chain.size(); ++i) {
    if (SSL_CTX_add1_chain_cert(ctx, chain[i].get()) != 1) {
      return InvalidArgument(what + ": chain certificate " + std::to_string(i) +
                             " rejected: " + SslErrorText());
    }
  }
  if (SSL_CTX_use_PrivateKey(ctx, key.get()) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    return InvalidArgument(what + ": the private key does not match the certificate");
  }
  return Status::Ok();
}

// Trust anchors for peer verification; `client_ca_list` also sets the CA
// names a server sends in its CertificateRequest.
Status UseCa(SSL_CTX* ctx, const std::string& ca_pem, const std::string& what,
             bool client_ca_list) {
  HC_ASSIGN_OR_RETURN(std::vector<X509Ptr> cas, ParseCerts(ca_pem, what));
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  for (const X509Ptr& ca : cas) {
    if (X509_STORE_add_cert(store, ca.get()) != 1) {
      return InvalidArgument(what + ": " + SslErrorText());
    }
    if (client_ca_list && SSL_CTX_add_client_CA(ctx, ca.get()) != 1) {
      return InvalidArgument(what + ": " + SslErrorText());
    }
  }
  return Status::Ok();
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string NormalizeName(std::string_view s) {
  if (!s.empty() && s.back() == '.') s.remove_suffix(1);
  return Lower(s);
}

// A DNS name of letters, digits, '-' and '_' labels (1-63 each, up to 253).
bool ValidDnsName(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  size_t label = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == '.') {
      if (label == 0 || label > 63) return false;
      label = 0;
      continue;
    }
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return false;
    ++label;
  }
  return true;
}

std::string PeerCn(SSL* ssl) {
  X509* peer = SSL_get0_peer_certificate(ssl);
  if (peer == nullptr) return "";
  X509_NAME* subject = X509_get_subject_name(peer);
  int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (i < 0) return "";
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
  unsigned char* utf8 = nullptr;
  int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0) return "";
  std::string cn(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return cn;
}

std::string SelectedAlpn(SSL* ssl) {
  const unsigned char* p = nullptr;
  unsigned int n = 0;
  SSL_get0_alpn_selected(ssl, &p, &n);
  return p != nullptr ? std::string(reinterpret_cast<const char*>(p), n) : std::string();
}

net::HostPort ToHostPort(const struct sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = {};
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
  }
  return net::HostPort{host, port};
}

bool IsIpLiteral(const std::string& s) {
  unsigned char buf[sizeof(struct in6_addr)];
  return ::inet_pton(AF_INET, s.c_str(), buf) == 1 || ::inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

// Settings every context of ours shares.
void BaseSettings(SSL_CTX* ctx) {
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                               SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Partial writes and a moving buffer: the relay's buffers compact and
  // grow between retries. Idle connections give their record buffers back.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, 32 << 10);
}

// ---- buffers

// A fixed-size byte buffer: data in [start, end), memory from the thread's
// BufferPool, returned when empty so idle connections hold none.
class Buffer {
 public:
  bool has() const { return mem_ != nullptr; }
  const char* data() const { return mem_.get() + start_; }
  size_t size() const { return end_ - start_; }
  bool empty() const { return start_ == end_; }
  size_t Space() {
    if (end_ == kBufferSize && start_ > 0) {
      std::memmove(mem_.get(), mem_.get() + start_, size());
      end_ -= start_;
      start_ = 0;
    }
    return has() ? kBufferSize - end_ : 0;
  }
  char* tail() { return mem_.get() + end_; }
  void Produced(size_t n) { end_ += n; }
  void Consume(size_t n) {
    start_ += n;
    if (start_ == end_) start_ = end_ = 0;
  }

 private:
  friend class BufferPool;
  std::unique_ptr<char[]> mem_;
  size_t start_ = 0;
  size_t end_ = 0;
};

// Owned by one thread.
class BufferPool {
 public:
  void Get(Buffer* b) {
    if (b->has()) return;
    if (free_.empty()) {
      b->mem_ = std::make_unique_for_overwrite<char[]>(kBufferSize);
    } else {
      b->mem_ = std::move(free_.back());
      free_.pop_back();
    }
    b->start_ = b->end_ = 0;
  }
  // Returns the memory if the buffer is empty.
  void PutIfEmpty(Buffer* b) {
    if (!b->has() || !b->empty()) return;
    if (free_.size() < kMaxFreeBuffers) free_.push_back(std::move(b->mem_));
    b->mem_.reset();
  }
  void Put(Buffer* b) {
    b->start_ = b->end_ = 0;
    PutIfEmpty(b);
  }

 private:
  std::vector<std::unique_ptr<char[]>> free_;
};

}  // namespace

// ---- the certificate table

struct CertTable::Impl {
  struct Entry {
    std::string id;
    SslCtxPtr ctx;
  };
  // Every SSL starts on `base` (no certificate; the session context: its
  // ticket keys and session id context) and moves to its entry's context
  // in the servername callback.
  SslCtxPtr base;
  std::vector<std::unique_ptr<Entry>> entries;
  std::unordered_map<std::string, const Entry*> exact;
  std::unordered_map<std::string, const Entry*> wildcard;  // ".example.com"
  const Entry* fallback = nullptr;
  std::string alpn_wire;  // server preference, wire format
  bool mtls = false;

  const Entry* Find(std::string_view sni) const {
    if (sni.empty()) return fallback;
    std::string name = NormalizeName(sni);
    auto it = exact.find(name);
    if (it != exact.end()) return it->second;
    // Longest suffix first: drop one label at a time from the left.
    for (size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', dot + 1)) {
      auto w = wildcard.find(name.substr(dot));
      if (w != wildcard.end()) return w->second;
    }
    return fallback;
  }
};

namespace {

// SSL ex_data slot for the relay connection (see Conn).
int ConnIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

struct Conn;
const CertTable::Impl* TableOf(SSL* ssl);

int OnServerName(SSL* ssl, int* alert, void* /*arg*/) {
  const CertTable::Impl* t = TableOf(ssl);
  if (t == nullptr) return SSL_TLSEXT_ERR_ALERT_FATAL;
  const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  const CertTable::Impl::Entry* e = t->Find(sni != nullptr ? sni : "");
  if (e == nullptr) {
    *alert = kAlertUnrecognizedName;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  if (SSL_set_SSL_CTX(ssl, e->ctx.get()) == nullptr) return SSL_TLSEXT_ERR_ALERT_FATAL;
  return SSL_TLSEXT_ERR_OK;
}

int OnAlpn(SSL* ssl, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
           unsigned int inlen, void* arg) {
  auto* t = static_cast<const CertTable::Impl*>(arg);
  unsigned char* sel = nullptr;
  int r = SSL_select_next_proto(&sel, outlen,
                                reinterpret_cast<const unsigned char*>(t->alpn_wire.data()),
                                static_cast<unsigned int>(t->alpn_wire.size()), in, inlen);
  if (r != OPENSSL_NPN_NEGOTIATED) return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

Result<SslCtxPtr> ServerCtx(const CertTable::Impl& t, const TlsServerPolicy& policy,
                            const std::string& what) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (ctx == nullptr) return Internal("tls: SSL_CTX_new: " + SslErrorText());
  BaseSettings(ctx.get());
  static constexpr unsigned char kSidCtx[] = "hc-tls";
  SSL_CTX_set_session_id_context(ctx.get(), kSidCtx, sizeof kSidCtx - 1);
  SSL_CTX_set_tlsext_servername_callback(ctx.get(), OnServerName);
  if (!t.alpn_wire.empty()) {
    SSL_CTX_set_alpn_select_cb(ctx.get(), OnAlpn, const_cast<CertTable::Impl*>(&t));
  }
  if (!policy.client_ca_pem.empty()) {
    HC_RETURN_IF_ERROR(UseCa(ctx.get(), policy.client_ca_pem, what + ": client CA", true));
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  return ctx;
}

}  // namespace

CertTable::CertTable(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CertTable::~CertTable() = default;

std::string CertTable::Lookup(std::string_view sni) const {
  const Impl::Entry* e = impl_->Find(sni);
  return e != nullptr ? e->id : "";
}

Result<std::shared_ptr<const CertTable>> CertTable::Build(std::vector<CertSpec> certs,
                                                          std::optional<CertSpec> default_cert,
                                                          const TlsServerPolicy& policy) {
  auto t = std::make_unique<Impl>();
  for (const std::string& p : policy.alpn) {
    if (p.empty() || p.size() > 255) {
      return InvalidArgument("tls: ALPN protocol '" + p + "' must be 1-255 bytes");
    }
    t->alpn_wire.push_back(static_cast<char>(p.size()));
    t->alpn_wire += p;
  }
  t->mtls = !policy.client_ca_pem.empty();
  HC_ASSIGN_OR_RETURN(t->base, ServerCtx(*t, policy, "tls: base context"));

  std::unordered_map<std::string, std::string> owner;  // name -> cert id
  auto add = [&](CertSpec& spec, bool is_default) -> Status {
    std::string what = "tls: certificate '" + spec.id + "'";
    if (spec.id.empty()) return InvalidArgument("tls: a certificate has an empty id");
    auto e = std::make_unique<Impl::Entry>();
    e->id = spec.id;
    HC_ASSIGN_OR_RETURN(e->ctx, ServerCtx(*t, policy, what));
    HC_RETURN_IF_ERROR(UseCertAndKey(e->ctx.get(), spec.cert_pem, spec.key_pem, what));
    if (spec.names.empty() && !is_default) return InvalidArgument(what + " serves no names");
    for (const std::string& raw : spec.names) {
      std::string name = NormalizeName(raw);
      bool wild = name.starts_with("*.");
      std::string_view rest = wild ? std::string_view(name).substr(2) : std::string_view(name);
      if (!ValidDnsName(rest)) {
        return InvalidArgument(what + ": name '" + raw + "' is not a valid DNS name" +
                               " (wildcards only as '*.domain')");
      }
      if (wild && rest.find('.') == std::string_view::npos) {
        return InvalidArgument(what + ": wildcard '" + raw +
                               "' is too broad (needs at least two labels after '*.')");
      }
      auto [it, fresh] = owner.emplace(name, spec.id);
      if (!fresh) {
        return InvalidArgument(what + ": name '" + name + "' is already served by certificate '" +
                               it->second + "'");
      }
      if (wild) {
        t->wildcard.emplace(std::string(name.substr(1)), e.get());
      } else {
        t->exact.emplace(name, e.get());
      }
    }
    if (is_default) t->fallback = e.get();
    t->entries.push_back(std::move(e));
    return Status::Ok();
  };
  for (CertSpec& spec : certs) HC_RETURN_IF_ERROR(add(spec, false));
  if (default_cert) HC_RETURN_IF_ERROR(add(*default_cert, true));
  return std::shared_ptr<const CertTable>(new CertTable(std::move(t)));
}

namespace {

// ---- the relay connection and its BIO

enum class ConnState : uint8_t {
  kConnecting,  // client: TCP connect in progress
  kHandshake,
  kRelay,
};

struct Tunnel;

// A TLS connection and its plain counterpart. Owned by one Loop.
struct Conn {
  uint64_t cid = 0;
  class Loop* loop = nullptr;
  UniqueFd net;    // the TCP socket carrying TLS
  UniqueFd plain;  // the socketpair end (terminator) or the local client (tunnel)
  SslPtr ssl;
  ConnState state = ConnState::kHandshake;
  // Readiness as epoll last reported it (edge-triggered); cleared on EAGAIN.
  bool n_rd = false, n_wr = false, p_rd = false, p_wr = false;
  bool p_eof = false;        // the plain side will send no more
  bool t_eof = false;        // the TLS peer will send no more
  bool notify_sent = false;  // our close_notify is queued
  bool net_shut = false;     // FIN sent on net
  bool plain_shut = false;   // FIN sent on plain
  int net_errno = 0;         // a send/recv error on net (the BIO's)
  bool pending = false;      // in the loop's ready list
  std::string prefix;        // bytes to feed to TLS before reading net
  size_t prefix_off = 0;
  Buffer out;       // ciphertext for net
  Buffer to_plain;  // plaintext from TLS
  Buffer to_tls;    // plaintext from plain
  Clock::time_point last_active;
  Clock::duration idle{};
  Clock::time_point deadline = Clock::time_point::max();
  std::multimap<Clock::time_point, uint64_t>::iterator timer;
  bool timed = false;
  TlsConnInfo info;
  std::shared_ptr<const CertTable> table;  // terminator: what the handshake uses
  std::shared_ptr<Tunnel> tunnel;          // tunnels
  uint64_t identity_gen = 0;               // tunnels: the client context's generation
};

const CertTable::Impl* TableOf(SSL* ssl) {
  auto* c = static_cast<Conn*>(SSL_get_ex_data(ssl, ConnIndex()));
  return c != nullptr && c->table != nullptr ? &c->table->impl() : nullptr;
}

BufferPool& PoolOf(Conn* c);

// Sends what `out` holds; false on a fatal error (net_errno set).
bool FlushOut(Conn* c) {
  while (!c->out.empty() && c->n_wr) {
    ssize_t n = ::send(c->net.get(), c->out.data(), c->out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c->out.Consume(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      c->n_wr = false;
      break;
    }
    c->net_errno = n < 0 ? errno : EPIPE;
    return false;
  }
  return true;
}

int BioWrite(BIO* bio, const char* data, size_t len, size_t* written) {
  auto* c = static_cast<Conn*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  if (c->net_errno != 0) return 0;
  PoolOf(c).Get(&c->out);
  if (c->out.Space() < len) FlushOut(c);
  size_t n = std::min(len, c->out.Space());
  if (n == 0) {
    if (c->net_errno == 0) BIO_set_retry_write(bio);
    return 0;
  }
  std::memcpy(c->out.tail(), data, n);
  c->out.Produced(n);
  *written = n;
  return 1;
}

int BioRead(BIO* bio, char* buf, size_t len, size_t* got) {
  auto* c = static_cast<Conn*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  if (c->prefix_off < c->prefix.size()) {
    size_t n = std::min(len, c->prefix.size() - c->prefix_off);
    std::memcpy(buf, c->prefix.data() + c->prefix_off, n);
    c->prefix_off += n;
    if (c->prefix_off == c->prefix.size()) std::string().swap(c->prefix);
    *got = n;
    return 1;
  }
  if (!c->n_rd) {
    BIO_set_retry_read(bio);
    return 0;
  }
  for (;;) {
    ssize_t n = ::recv(c->net.get(), buf, len, 0);
    if (n > 0) {
      *got = static_cast<size_t>(n);
      return 1;
    }
    if (n == 0) return 0;  // EOF: no retry flag
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      c->n_rd = false;
      BIO_set_retry_read(bio);
      return 0;
    }
    c->net_errno = errno;
    return 0;
  }
}

long BioCtrl(BIO* bio, int cmd, long /*num*/, void* /*ptr*/) {
  auto* c = static_cast<Conn*>(BIO_get_data(bio));
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      // Handshake flights end with a flush: send them now rather than
      // after the pass.
      FlushOut(c);
      return 1;
    case BIO_CTRL_WPENDING: return static_cast<long>(c->out.size());
    case BIO_CTRL_PENDING: return static_cast<long>(c->prefix.size() - c->prefix_off);
    default: return 0;
  }
}

int BioCreate(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

BIO_METHOD* ConnBioMethod() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "hc-relay");
    BIO_meth_set_write_ex(m, BioWrite);
    BIO_meth_set_read_ex(m, BioRead);
    BIO_meth_set_ctrl(m, BioCtrl);
    BIO_meth_set_create(m, BioCreate);
    return m;
  }();
  return method;
}

// Binds ssl to the connection (its BIO and ex_data).
bool Attach(Conn* c) {
  BIO* bio = BIO_new(ConnBioMethod());
  if (bio == nullptr) return false;
  BIO_set_data(bio, c);
  SSL_set_bio(c->ssl.get(), bio, bio);
  SSL_set_ex_data(c->ssl.get(), ConnIndex(), c);
  return true;
}

// An IP literal and port as a sockaddr; false if host is not a literal.
bool ToSockaddr(const net::HostPort& at, struct sockaddr_storage* ss, socklen_t* len) {
  *ss = {};
  auto* v4 = reinterpret_cast<sockaddr_in*>(ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(ss);
  if (::inet_pton(AF_INET, at.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(at.port);
    *len = sizeof(sockaddr_in);
    return true;
  }
  if (::inet_pton(AF_INET6, at.host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(at.port);
    *len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

// One epoll thread: listeners, relay connections, timers, and a queue of
// work posted from other threads. Only the loop's thread touches its
// members, except Post() and Wake().
class Loop {
 public:
  explicit Loop(std::atomic<int64_t>& open) : open_(open) {}
  virtual ~Loop() {
    for (auto& [cid, c] : conns_) Release(c.get());
    open_.fetch_sub(static_cast<int64_t>(conns_.size()), std::memory_order_relaxed);
  }

  Status Init() {
    epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_.valid()) return ErrnoStatus("tls: epoll_create1", errno);
    wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_.valid()) return ErrnoStatus("tls: eventfd", errno);
    HC_RETURN_IF_ERROR(Watch(wake_.get(), kWakeId, EPOLLIN));
    spare_ = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    return Status::Ok();
  }

  void Wake() {
    uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
  }

  // Runs fn on the loop's thread, soon. Dropped unrun if the loop stops.
  void Post(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(post_mu_);
      posted_.push_back(std::move(fn));
    }
    Wake();
  }

  void Run(const std::atomic<bool>& stopping) {
    std::array<struct epoll_event, 256> events;
    while (!stopping.load(std::memory_order_relaxed)) {
      int timeout = ready_.empty() ? TimeoutMs() : 0;
      int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), timeout);
      if (stopping.load(std::memory_order_relaxed)) break;
      if (n < 0) {
        if (errno != EINTR && warn_epoll_.Allow()) {
          LogWarn("tls: epoll_wait: %s", std::strerror(errno));
        }
        continue;
      }
      now_ = Clock::now();
      BeforeEvents();
      for (int i = 0; i < n; ++i) OnEvent(events[i].data.u64, events[i].events);
      RunReady();
      Expire();
    }
  }

  BufferPool& pool() { return pool_; }

 protected:
  static constexpr uint64_t kWakeId = 0;
  // Connection ids start here; an epoll id is cid*2 + side, so ids are never
  // reused and an event queued for a closed connection finds nothing.
  static constexpr uint64_t kFirstConnId = uint64_t{1} << 32;

  // Hooks for the engine.
  virtual void BeforeEvents() {}
  // The handshake is done: returns why the connection must not go on
  // (then counted as a failed handshake), or "".
  virtual std::string OnEstablished(Conn* c) = 0;
  virtual void OnHandshakeFailed(Conn* c, const std::string& why) = 0;

  Status Watch(int fd, uint64_t id, uint32_t events) {
    struct epoll_event ev = {};
    ev.events = events;
    ev.data.u64 = id;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      return ErrnoStatus("tls: epoll_ctl", errno);
    }
    return Status::Ok();
  }

  // Listeners: `on_ready` runs when the socket is readable.
  uint64_t AddListener(int fd, std::function<void()> on_ready) {
    uint64_t id = next_listener_id_++;
    if (!Watch(fd, id, EPOLLIN).ok()) return 0;
    listeners_[id] = std::move(on_ready);
    return id;
  }
  void RemoveListener(int fd, uint64_t id) {
    (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
    listeners_.erase(id);
  }

  // Accepts up to a batch; calls take(fd, peer) for each.
  template <typename Take>
  void AcceptFrom(int lfd, Take take) {
    AcceptPending(lfd, kAcceptsPerWakeup, &spare_, &warn_accept_, "tls",
                  [&take](UniqueFd fd, const struct sockaddr_storage& peer) {
                    int one = 1;
                    (void)::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    take(std::move(fd), ToHostPort(peer));
                  });
  }

  // Registers a new connection; on failure everything is closed and null
  // returned. `deadline` bounds the connect and handshake.
  Conn* AddConn(UniqueFd net, SslPtr ssl, ConnState state, Clock::time_point deadline) {
    auto owned = std::make_unique<Conn>();
    Conn* c = owned.get();
    c->cid = next_cid_++;
    c->loop = this;
    c->net = std::move(net);
    c->ssl = std::move(ssl);
    c->state = state;
    c->last_active = now_;
    if (!Attach(c)) return nullptr;
    if (!Watch(c->net.get(), c->cid * 2, kConnEvents).ok()) return nullptr;
    conns_.emplace(c->cid, std::move(owned));
    open_.fetch_add(1, std::memory_order_relaxed);
    Arm(c, deadline);
    return c;
  }

  // Starts relaying to `plain` (non-blocking).
  bool AttachPlain(Conn* c, UniqueFd plain) {
    c->plain = std::move(plain);
    return Watch(c->plain.get(), c->cid * 2 + 1, kConnEvents).ok();
  }

  void Close(Conn* c) {
    Disarm(c);
    Release(c);
    open_.fetch_sub(1, std::memory_order_relaxed);
    conns_.erase(c->cid);
  }

  void CloseAll() {
    while (!conns_.empty()) Close(conns_.begin()->second.get());
  }

  void Fail(Conn* c, const std::string& why) {
    // What OpenSSL queued (an alert) goes out first, best effort.
    c->n_wr = true;
    FlushOut(c);
    OnHandshakeFailed(c, why);
    Close(c);
  }

  void Drive(Conn* c) {
    if (c->state == ConnState::kConnecting) {
      if (!c->n_wr) return;
      int err = 0;
      socklen_t len = sizeof err;
      if (::getsockopt(c->net.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err != 0) return Fail(c, std::string("connect: ") + std::strerror(err));
      c->state = ConnState::kHandshake;
    }
    if (c->state == ConnState::kHandshake) {
      if (!FlushOut(c)) return Fail(c, NetError(c));
      ERR_clear_error();
      int r = SSL_do_handshake(c->ssl.get());
      if (r != 1) {
        int e = SSL_get_error(c->ssl.get(), r);
        if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && c->net_errno == 0) {
          if (!FlushOut(c)) return Fail(c, NetError(c));
          return ReleaseIdle(c);
        }
        std::string why = e == SSL_ERROR_SSL  ? SslErrorText()
                          : c->net_errno != 0 ? NetError(c)
                                              : "connection closed during the handshake";
        return Fail(c, why);
      }
      if (!FlushOut(c)) return Fail(c, NetError(c));
      c->state = ConnState::kRelay;
      c->last_active = now_;
      std::string refused = OnEstablished(c);
      if (!refused.empty()) return Fail(c, refused);
      Arm(c, now_ + c->idle);
    }
    Relay(c);
  }

  void Schedule(Conn* c) {
    if (c->pending) return;
    c->pending = true;
    ready_.push_back(c->cid);
  }

  Clock::time_point now_ = Clock::now();

 private:
  static constexpr uint32_t kConnEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;

  static std::string NetError(Conn* c) {
    return c->net_errno != 0 ? std::strerror(c->net_errno) : "connection closed";
  }

  // Frees what a connection holds (not its map entry).
  void Release(Conn* c) {
    pool_.Put(&c->out);
    pool_.Put(&c->to_plain);
    pool_.Put(&c->to_tls);
  }

  void ReleaseIdle(Conn* c) {
    pool_.PutIfEmpty(&c->out);
    pool_.PutIfEmpty(&c->to_plain);
    pool_.PutIfEmpty(&c->to_tls);
  }

  // Moves bytes both ways until nothing moves (or the round limit: then
  // the connection goes to the back of the ready list).
  void Relay(Conn* c) {
    for (int round = 0; round < kPumpRounds; ++round) {
      bool progress = false;
      // TLS -> plain.
      if (!c->t_eof) {
        pool_.Get(&c->to_plain);
        while (c->to_plain.Space() > 0) {
          size_t n = 0;
          ERR_clear_error();
          if (SSL_read_ex(c->ssl.get(), c->to_plain.tail(), c->to_plain.Space(), &n) == 1) {
            c->to_plain.Produced(n);
            progress = true;
            continue;
          }
          int e = SSL_get_error(c->ssl.get(), 0);
          if (e == SSL_ERROR_ZERO_RETURN) {
            c->t_eof = true;
            progress = true;
          } else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            LogDebug("tls: %s: read: %s", c->info.client.ToString().c_str(),
                     e == SSL_ERROR_SSL ? SslErrorText().c_str() : NetError(c).c_str());
            return Close(c);
          }
          break;
        }
      }
      while (!c->to_plain.empty() && c->p_wr) {
        ssize_t n = ::send(c->plain.get(), c->to_plain.data(), c->to_plain.size(),
                           MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
          c->to_plain.Consume(static_cast<size_t>(n));
          progress = true;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          c->p_wr = false;
        } else if (n < 0 && errno == EINTR) {
          continue;
        } else {
          return Close(c);  // the plain side is gone
        }
      }
      if (c->t_eof && c->to_plain.empty() && !c->plain_shut) {
        (void)::shutdown(c->plain.get(), SHUT_WR);
        c->plain_shut = true;
      }
      // plain -> TLS.
      if (!c->p_eof && c->p_rd) {
        pool_.Get(&c->to_tls);
        size_t space = c->to_tls.Space();
        if (space > 0) {
          ssize_t n = ::recv(c->plain.get(), c->to_tls.tail(), space, 0);
          if (n > 0) {
            c->to_tls.Produced(static_cast<size_t>(n));
            progress = true;
          } else if (n == 0) {
            c->p_eof = true;
            progress = true;
          } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->p_rd = false;
          } else if (errno != EINTR) {
            return Close(c);
          }
        }
      }
      while (!c->to_tls.empty()) {
        size_t n = 0;
        ERR_clear_error();
        if (SSL_write_ex(c->ssl.get(), c->to_tls.data(), c->to_tls.size(), &n) == 1) {
          c->to_tls.Consume(n);
          progress = true;
          continue;
        }
        int e = SSL_get_error(c->ssl.get(), 0);
        if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) return Close(c);
        break;
      }
      if (c->p_eof && c->to_tls.empty() && !c->notify_sent) {
        ERR_clear_error();
        int r = SSL_shutdown(c->ssl.get());
        if (r >= 0 || SSL_get_error(c->ssl.get(), r) == SSL_ERROR_WANT_WRITE) {
          c->notify_sent = true;  // queued in `out` (or retried by flushing)
        } else {
          return Close(c);
        }
      }
      size_t before = c->out.size();
      if (!FlushOut(c) || c->net_errno != 0) return Close(c);
      if (c->out.size() != before) progress = true;
      if (c->notify_sent && c->out.empty() && !c->net_shut) {
        (void)::shutdown(c->net.get(), SHUT_WR);
        c->net_shut = true;
      }
      if (c->net_shut && c->plain_shut) return Close(c);
      if (progress) c->last_active = now_;
      if (!progress) return ReleaseIdle(c);
    }
    Schedule(c);
  }

  void OnEvent(uint64_t id, uint32_t ev) {
    if (id == kWakeId) return OnWake();
    if (id < kFirstConnId * 2) {
      auto it = listeners_.find(id);
      if (it != listeners_.end()) it->second();
      return;
    }
    auto it = conns_.find(id / 2);
    if (it == conns_.end()) return;
    Conn* c = it->second.get();
    const bool rd = (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    const bool wr = (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0;
    if (id % 2 == 0) {
      c->n_rd |= rd;
      c->n_wr |= wr;
    } else {
      c->p_rd |= rd;
      c->p_wr |= wr;
    }
    Drive(c);
  }

  void OnWake() {
    uint64_t v;
    while (::read(wake_.get(), &v, sizeof v) > 0) {
    }
    std::vector<std::function<void()>> work;
    {
      std::lock_guard<std::mutex> lock(post_mu_);
      work.swap(posted_);
    }
    for (auto& fn : work) fn();
  }

  void RunReady() {
    if (ready_.empty()) return;
    std::vector<uint64_t> ready;
    ready.swap(ready_);
    for (uint64_t cid : ready) {
      auto it = conns_.find(cid);
      if (it == conns_.end()) continue;
      it->second->pending = false;
      Drive(it->second.get());
    }
  }

  // ---- timers: one deadline per connection (connect/handshake, then
  // idle). Idle deadlines are re-checked at expiry against last_active
  // instead of being moved on every byte.

  void Arm(Conn* c, Clock::time_point at) {
    Disarm(c);
    c->deadline = at;
    c->timer = timers_.emplace(at, c->cid);
    c->timed = true;
  }
  void Disarm(Conn* c) {
    if (!c->timed) return;
    timers_.erase(c->timer);
    c->timed = false;
  }

  int TimeoutMs() const {
    if (timers_.empty()) return -1;
    auto left = timers_.begin()->first - Clock::now();
    if (left <= Clock::duration::zero()) return 0;
    return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
  }

  void Expire() {
    while (!timers_.empty() && timers_.begin()->first <= now_) {
      uint64_t cid = timers_.begin()->second;
      timers_.erase(timers_.begin());
      auto it = conns_.find(cid);
      if (it == conns_.end()) continue;
      Conn* c = it->second.get();
      c->timed = false;
      if (c->state != ConnState::kRelay) {
        Fail(c, c->state == ConnState::kConnecting ? "connect timed out" : "handshake timed out");
      } else if (now_ < c->last_active + c->idle) {
        Arm(c, c->last_active + c->idle);
      } else {
        LogDebug("tls: %s: idle timeout", c->info.client.ToString().c_str());
        Close(c);
      }
    }
  }

  std::atomic<int64_t>& open_;
  BufferPool pool_;
  UniqueFd epoll_;
  UniqueFd wake_;
  UniqueFd spare_;
  uint64_t next_listener_id_ = 1;
  uint64_t next_cid_ = kFirstConnId;
  std::unordered_map<uint64_t, std::function<void()>> listeners_;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  std::multimap<Clock::time_point, uint64_t> timers_;
  std::vector<uint64_t> ready_;
  std::mutex post_mu_;
  std::vector<std::function<void()>> posted_;  // GUARDED_BY(post_mu_)
  LogThrottle warn_accept_, warn_epoll_;
};

BufferPool& PoolOf(Conn* c) {
  return c->loop->pool();
}

// ---- the terminator's worker

using CertSlot = SharedSlot<const CertTable>;

struct TerminatorShared {
  const TlsTerminatorOptions& opts;
  const TlsTerminator::Sink& sink;
  CertSlot& certs;
  std::atomic<int64_t>& open;
  std::atomic<uint64_t>& handshakes;
  std::atomic<uint64_t>& failures;
  std::atomic<uint64_t>& refused;
};

class TerminatorWorker : public Loop {
 public:
  TerminatorWorker(TerminatorShared sh, std::vector<UniqueFd> listeners)
      : Loop(sh.open), sh_(sh), listeners_(std::move(listeners)) {}

  Status Start() {
    HC_RETURN_IF_ERROR(Init());
    for (UniqueFd& l : listeners_) {
      int fd = l.get();
      if (AddListener(fd, [this, fd] { OnAccept(fd); }) == 0) {
        return ErrnoStatus("tls: epoll_ctl", errno);
      }
    }
    return Status::Ok();
  }

  // Any thread.
  void Adopt(UniqueFd fd, std::string prefix, net::HostPort client) {
    // std::function needs a copyable callable; if the loop stops before
    // running it, the fd closes with the dropped closure.
    auto raw = std::make_shared<UniqueFd>(std::move(fd));
    Post([this, raw, prefix = std::move(prefix), client = std::move(client)]() mutable {
      Take(std::move(*raw), std::move(prefix), std::move(client));
    });
  }

 protected:
  void BeforeEvents() override { sh_.certs.Refresh(&certs_, &certs_seen_); }

  std::string OnEstablished(Conn* c) override {
    SSL* ssl = c->ssl.get();
    const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    c->info.sni = sni != nullptr ? NormalizeName(sni) : "";
    const CertTable::Impl::Entry* e = c->table->impl().Find(c->info.sni);
    c->info.cert_id = e != nullptr ? e->id : "";
    c->info.alpn = SelectedAlpn(ssl);
    c->info.peer_cn = PeerCn(ssl);
    int sp[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) != 0) {
      int err = errno;
      if (warn_socketpair_.Allow()) LogWarn("tls: socketpair: %s", std::strerror(err));
      return std::string("socketpair: ") + std::strerror(err);
    }
    UniqueFd theirs(sp[1]);
    if (!AttachPlain(c, UniqueFd(sp[0]))) return "epoll_ctl failed";
    c->p_wr = true;  // a fresh socketpair has room
    sh_.handshakes.fetch_add(1, std::memory_order_relaxed);
    sh_.sink(std::move(theirs), c->info);
    return "";
  }

  void OnHandshakeFailed(Conn* c, const std::string& why) override {
    sh_.failures.fetch_add(1, std::memory_order_relaxed);
    LogDebug("tls: handshake with %s failed: %s", c->info.client.ToString().c_str(), why.c_str());
  }

 private:
  void OnAccept(int lfd) {
    AcceptFrom(lfd, [this](UniqueFd fd, net::HostPort peer) {
      Take(std::move(fd), std::string(), std::move(peer));
    });
  }

  void Take(UniqueFd fd, std::string prefix, net::HostPort client) {
    now_ = Clock::now();
    sh_.certs.Refresh(&certs_, &certs_seen_);
    if (sh_.open.load(std::memory_order_relaxed) >= sh_.opts.max_connections) {
      sh_.refused.fetch_add(1, std::memory_order_relaxed);
      if (warn_full_.Allow()) {
        LogWarn("tls: refusing connections: %d open (max_connections)", sh_.opts.max_connections);
      }
      return;
    }
    SslPtr ssl(SSL_new(certs_->impl().base.get()));
    if (ssl == nullptr) return;
    SSL_set_accept_state(ssl.get());
    auto hs = std::chrono::milliseconds(std::max(1, sh_.opts.handshake_timeout_ms));
    Conn* c = AddConn(std::move(fd), std::move(ssl), ConnState::kHandshake, now_ + hs);
    if (c == nullptr) return;
    c->idle = std::chrono::milliseconds(std::max(1, sh_.opts.idle_timeout_ms));
    c->table = certs_;
    c->info.client = std::move(client);
    c->prefix = std::move(prefix);
    c->n_rd = c->n_wr = true;  // try at once: the ClientHello may be here
    Drive(c);
  }

  TerminatorShared sh_;
  std::vector<UniqueFd> listeners_;
  std::shared_ptr<const CertTable> certs_;
  uint64_t certs_seen_ = 0;
  LogThrottle warn_full_, warn_socketpair_;
};

}  // namespace

// ---- TlsTerminator

struct TlsTerminator::Impl {
  Impl(TlsTerminatorOptions o, Sink s) : opts(std::move(o)), sink(std::move(s)) {}

  const TlsTerminatorOptions opts;
  const Sink sink;
  CertSlot certs;
  std::atomic<int64_t> open{0};
  std::atomic<uint64_t> handshakes{0}, failures{0}, refused{0};
  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> next_worker{0};

  mutable std::mutex mu;
  bool running = false;                                    // GUARDED_BY(mu)
  std::vector<net::HostPort> bound;                        // GUARDED_BY(mu)
  std::vector<std::unique_ptr<TerminatorWorker>> workers;  // GUARDED_BY(mu)
  std::vector<std::thread> threads;                        // GUARDED_BY(mu)

  TerminatorShared shared() {
    return TerminatorShared{opts, sink, certs, open, handshakes, failures, refused};
  }
};

TlsTerminator::TlsTerminator(TlsTerminatorOptions opts, Sink sink)
    : impl_(std::make_unique<Impl>(std::move(opts), std::move(sink))) {}

TlsTerminator::~TlsTerminator() {
  Stop();
}

Status TlsTerminator::Start(std::shared_ptr<const CertTable> certs) {
  if (certs == nullptr) return InvalidArgument("tls: TlsTerminator::Start needs a CertTable");
  const TlsTerminatorOptions& opts = impl_->opts;
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->running) return Conflict("tls: already started; Stop() it first");
  const int workers = WorkerCount(opts.workers);
  // Every socket is bound before any thread starts.
  std::vector<std::vector<UniqueFd>> per_worker;
  std::vector<net::HostPort> bound;
  HC_RETURN_IF_ERROR(BindListeners("tls", opts.listen, workers, &per_worker, &bound));

  impl_->certs.Set(std::move(certs));
  impl_->stopping.store(false);
  std::vector<std::unique_ptr<TerminatorWorker>> ws;
  for (auto& fds : per_worker) {
    auto w = std::make_unique<TerminatorWorker>(impl_->shared(), std::move(fds));
    HC_RETURN_IF_ERROR(w->Start());
    ws.push_back(std::move(w));
  }
  impl_->workers = std::move(ws);
  impl_->bound = std::move(bound);
  impl_->running = true;
  for (auto& w : impl_->workers) {
    impl_->threads.emplace_back([w = w.get(), this] { w->Run(impl_->stopping); });
    (void)::pthread_setname_np(impl_->threads.back().native_handle(), "hc-tls");
  }
  for (const net::HostPort& at : impl_->bound) {
    LogInfo("tls: serving TLS on %s (%d workers)", at.ToString().c_str(), workers);
  }
  return Status::Ok();
}

void TlsTerminator::Stop() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!impl_->running) return;
  impl_->stopping.store(true);
  for (auto& w : impl_->workers) w->Wake();
  for (std::thread& t : impl_->threads) t.join();
  impl_->threads.clear();
  impl_->workers.clear();  // closes every connection
  impl_->bound.clear();
  impl_->running = false;
}

void TlsTerminator::SetCerts(std::shared_ptr<const CertTable> certs) {
  HC_CHECK(certs != nullptr, "tls: SetCerts(nullptr)");
  impl_->certs.Set(std::move(certs));
}

void TlsTerminator::Adopt(UniqueFd fd, std::string already_read, net::HostPort client) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!impl_->running || impl_->workers.empty()) return;  // fd closes here
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK) == 0) (void)::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK);
  int one = 1;
  (void)::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  uint64_t n = impl_->next_worker.fetch_add(1, std::memory_order_relaxed);
  impl_->workers[n % impl_->workers.size()]->Adopt(std::move(fd), std::move(already_read),
                                                   std::move(client));
}

std::vector<net::HostPort> TlsTerminator::bound() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->bound;
}

TlsTerminator::Stats TlsTerminator::stats() const {
  Stats s;
  s.handshakes = impl_->handshakes.load(std::memory_order_relaxed);
  s.handshake_failures = impl_->failures.load(std::memory_order_relaxed);
  s.refused = impl_->refused.load(std::memory_order_relaxed);
  s.open = impl_->open.load(std::memory_order_relaxed);
  return s;
}

// ---- TlsTunnels

namespace {

// The client context of one identity. Generations tell cached sessions of
// an older identity apart.
struct ClientCtx {
  SslCtxPtr ctx;
  uint64_t gen = 0;
};

// One tunnel: its listener and its cached session. The loop thread owns
// the mutable parts; connections keep the tunnel alive after Close.
struct Tunnel {
  TlsTunnelOptions opts;
  struct sockaddr_storage addr = {};
  socklen_t addr_len = 0;
  UniqueFd listen;
  uint64_t listener_id = 0;
  SessionPtr session;  // newest resumable session
  uint64_t session_gen = 0;
};

int OnNewSession(SSL* ssl, SSL_SESSION* sess) {
  auto* c = static_cast<Conn*>(SSL_get_ex_data(ssl, ConnIndex()));
  if (c == nullptr || c->tunnel == nullptr) return 0;
  c->tunnel->session.reset(sess);  // we take the reference
  c->tunnel->session_gen = c->identity_gen;
  return 1;
}

Result<std::shared_ptr<const ClientCtx>> BuildClientCtx(const TlsClientIdentity& id, uint64_t gen) {
  auto out = std::make_shared<ClientCtx>();
  out->gen = gen;
  out->ctx.reset(SSL_CTX_new(TLS_client_method()));
  if (out->ctx == nullptr) return Internal("tls: SSL_CTX_new: " + SslErrorText());
  SSL_CTX* ctx = out->ctx.get();
  BaseSettings(ctx);
  HC_RETURN_IF_ERROR(UseCertAndKey(ctx, id.cert_pem, id.key_pem, "tls: client identity"));
  HC_RETURN_IF_ERROR(UseCa(ctx, id.ca_pem, "tls: client identity CA", false));
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, OnNewSession);
  return std::shared_ptr<const ClientCtx>(std::move(out));
}

using ClientSlot = SharedSlot<const ClientCtx>;

struct TunnelShared {
  ClientSlot& identity;
  std::atomic<int64_t>& open;
  std::atomic<uint64_t>& connections;
  std::atomic<uint64_t>& resumed;
  std::atomic<uint64_t>& failures;
};

class TunnelLoop : public Loop {
 public:
  explicit TunnelLoop(TunnelShared sh) : Loop(sh.open), sh_(sh) {}

  // Loop thread (through Post).
  void AddTunnel(std::shared_ptr<Tunnel> t) {
    int fd = t->listen.get();
    std::weak_ptr<Tunnel> weak = t;
    t->listener_id = AddListener(fd, [this, weak] {
      if (auto t = weak.lock()) OnAccept(t);
    });
    tunnels_.push_back(std::move(t));
  }
  void RemoveTunnel(const std::shared_ptr<Tunnel>& t) {
    if (t->listener_id != 0) RemoveListener(t->listen.get(), t->listener_id);
    t->listen.Reset();
    std::erase(tunnels_, t);
  }
  void Shutdown() {
    CloseAll();
    tunnels_.clear();
  }

 protected:
  std::string OnEstablished(Conn* c) override {
    const std::string& want = c->tunnel->opts.alpn;
    std::string got = SelectedAlpn(c->ssl.get());
    if (!want.empty() && got != want) return "the server did not agree to ALPN '" + want + "'";
    sh_.connections.fetch_add(1, std::memory_order_relaxed);
    if (SSL_session_reused(c->ssl.get())) sh_.resumed.fetch_add(1, std::memory_order_relaxed);
    c->p_rd = c->p_wr = true;  // bytes may have waited for the handshake
    return "";
  }

  void OnHandshakeFailed(Conn* c, const std::string& why) override {
    sh_.failures.fetch_add(1, std::memory_order_relaxed);
    if (warn_fail_.Allow()) {
      LogWarn("tls: tunnel to %s (%s) failed: %s", c->tunnel->opts.remote.ToString().c_str(),
              c->tunnel->opts.expect_server_name.c_str(), why.c_str());
    }
  }

 private:
  void OnAccept(const std::shared_ptr<Tunnel>& t) {
    AcceptFrom(t->listen.get(), [this, &t](UniqueFd local, net::HostPort peer) {
      Connect(t, std::move(local), std::move(peer));
    });
  }

  void Connect(const std::shared_ptr<Tunnel>& t, UniqueFd local, net::HostPort peer) {
    now_ = Clock::now();
    sh_.identity.Refresh(&identity_, &identity_seen_);
    const TlsTunnelOptions& o = t->opts;
    UniqueFd fd(::socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
      sh_.failures.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    int one = 1;
    (void)::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    (void)::setsockopt(fd.get(), SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    ConnState state = ConnState::kHandshake;
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&t->addr), t->addr_len) != 0) {
      if (errno != EINPROGRESS) {
        sh_.failures.fetch_add(1, std::memory_order_relaxed);
        if (warn_fail_.Allow()) {
          LogWarn("tls: tunnel to %s: connect: %s", o.remote.ToString().c_str(),
                  std::strerror(errno));
        }
        return;  // `local` closes: the user sees a failed backend at once
      }
      state = ConnState::kConnecting;
    }
    SslPtr ssl(SSL_new(identity_->ctx.get()));
    if (ssl == nullptr) return;
    SSL_set_connect_state(ssl.get());
    if (IsIpLiteral(o.expect_server_name)) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), o.expect_server_name.c_str());
    } else {
      SSL_set_tlsext_host_name(ssl.get(), o.expect_server_name.c_str());
      SSL_set1_host(ssl.get(), o.expect_server_name.c_str());
      SSL_set_hostflags(ssl.get(), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    }
    if (!o.alpn.empty()) {
      std::string wire(1, static_cast<char>(o.alpn.size()));
      wire += o.alpn;
      SSL_set_alpn_protos(ssl.get(), reinterpret_cast<const unsigned char*>(wire.data()),
                          static_cast<unsigned int>(wire.size()));
    }
    if (t->session != nullptr && t->session_gen == identity_->gen &&
        SSL_SESSION_is_resumable(t->session.get())) {
      SSL_set_session(ssl.get(), t->session.get());
    }
    auto timeout = std::chrono::milliseconds(std::max(1, o.connect_timeout_ms));
    Conn* c = AddConn(std::move(fd), std::move(ssl), state, now_ + timeout);
    if (c == nullptr) return;
    c->tunnel = t;
    c->identity_gen = identity_->gen;
    c->idle = std::chrono::milliseconds(std::max(1, o.idle_timeout_ms));
    c->info.client = std::move(peer);
    c->n_wr = state == ConnState::kHandshake;
    if (!AttachPlain(c, std::move(local))) return Close(c);
    Drive(c);
  }

  TunnelShared sh_;
  std::shared_ptr<const ClientCtx> identity_;
  uint64_t identity_seen_ = 0;
  std::vector<std::shared_ptr<Tunnel>> tunnels_;
  LogThrottle warn_fail_;
};

std::string TunnelKey(const net::HostPort& remote, const std::string& alpn) {
  return remote.ToString() + "|" + alpn;
}

}  // namespace

struct TlsTunnels::Impl {
  Impl(TlsClientIdentity i, std::string host) : first(std::move(i)), listen_host(std::move(host)) {}

  TlsClientIdentity first;
  const std::string listen_host;
  ClientSlot identity;
  std::atomic<int64_t> open{0};
  std::atomic<uint64_t> connections{0}, resumed{0}, failures{0};
  std::atomic<bool> stopping{false};

  mutable std::mutex mu;
  bool running = false;              // GUARDED_BY(mu)
  uint64_t gen = 0;                  // GUARDED_BY(mu)
  std::unique_ptr<TunnelLoop> loop;  // GUARDED_BY(mu)
  std::thread thread;                // GUARDED_BY(mu)
  struct Open {
    std::shared_ptr<Tunnel> tunnel;
    net::HostPort local;
  };
  std::unordered_map<std::string, Open> tunnels;  // GUARDED_BY(mu)
};

TlsTunnels::TlsTunnels(TlsClientIdentity id, std::string listen_host)
    : impl_(std::make_unique<Impl>(std::move(id), std::move(listen_host))) {}

TlsTunnels::~TlsTunnels() {
  Stop();
}

Status TlsTunnels::Start() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->running) return Conflict("tls: tunnels already started");
  HC_ASSIGN_OR_RETURN(auto ctx, BuildClientCtx(impl_->first, ++impl_->gen));
  impl_->identity.Set(std::move(ctx));
  auto loop = std::make_unique<TunnelLoop>(TunnelShared{
      impl_->identity, impl_->open, impl_->connections, impl_->resumed, impl_->failures});
  HC_RETURN_IF_ERROR(loop->Init());
  impl_->loop = std::move(loop);
  impl_->stopping.store(false);
  impl_->running = true;
  impl_->thread = std::thread([l = impl_->loop.get(), this] { l->Run(impl_->stopping); });
  (void)::pthread_setname_np(impl_->thread.native_handle(), "hc-tls-tunnels");
  return Status::Ok();
}

void TlsTunnels::Stop() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!impl_->running) return;
  impl_->stopping.store(true);
  impl_->loop->Wake();
  impl_->thread.join();
  impl_->loop->Shutdown();
  impl_->loop.reset();
  impl_->tunnels.clear();
  impl_->running = false;
}

Result<net::HostPort> TlsTunnels::Open(const TlsTunnelOptions& o) {
  if (o.expect_server_name.empty()) {
    return InvalidArgument("tls: tunnel to " + o.remote.ToString() +
                           " needs the server name to expect");
  }
  if (o.alpn.size() > 255) return InvalidArgument("tls: ALPN '" + o.alpn + "' is too long");
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!impl_->running) return Unavailable("tls: tunnels are not started");
  std::string key = TunnelKey(o.remote, o.alpn);
  auto it = impl_->tunnels.find(key);
  if (it != impl_->tunnels.end()) return it->second.local;

  auto t = std::make_shared<Tunnel>();
  t->opts = o;
  if (!ToSockaddr(o.remote, &t->addr, &t->addr_len)) {
    struct addrinfo hints = {};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    struct addrinfo* res = nullptr;
    std::string port = std::to_string(o.remote.port);
    int rc = ::getaddrinfo(o.remote.host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0 || res == nullptr) {
      return Unavailable("tls: cannot resolve '" + o.remote.host + "': " + ::gai_strerror(rc));
    }
    std::memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    t->addr_len = res->ai_addrlen;
    ::freeaddrinfo(res);
  }
  std::vector<std::vector<UniqueFd>> fds;
  std::vector<net::HostPort> got;
  HC_RETURN_IF_ERROR(
      BindListeners("tls tunnel", {net::HostPort{impl_->listen_host, 0}}, 1, &fds, &got));
  t->listen = std::move(fds[0][0]);
  net::HostPort local = got[0];
  impl_->tunnels[key] = Impl::Open{t, local};
  TunnelLoop* loop = impl_->loop.get();
  loop->Post([loop, t] { loop->AddTunnel(t); });
  LogInfo("tls: tunnel %s -> %s (%s, ALPN '%s')", local.ToString().c_str(),
          o.remote.ToString().c_str(), o.expect_server_name.c_str(), o.alpn.c_str());
  return local;
}

void TlsTunnels::Close(const net::HostPort& remote, const std::string& alpn) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->tunnels.find(TunnelKey(remote, alpn));
  if (it == impl_->tunnels.end()) return;
  std::shared_ptr<Tunnel> t = std::move(it->second.tunnel);
  impl_->tunnels.erase(it);
  TunnelLoop* loop = impl_->loop.get();
  loop->Post([loop, t] { loop->RemoveTunnel(t); });
}

Status TlsTunnels::SetIdentity(TlsClientIdentity id) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  HC_ASSIGN_OR_RETURN(auto ctx, BuildClientCtx(id, impl_->gen + 1));
  ++impl_->gen;
  impl_->first = std::move(id);
  impl_->identity.Set(std::move(ctx));
  return Status::Ok();
}

TlsTunnels::Stats TlsTunnels::stats() const {
  Stats s;
  s.connections = impl_->connections.load(std::memory_order_relaxed);
  s.resumed = impl_->resumed.load(std::memory_order_relaxed);
  s.failures = impl_->failures.load(std::memory_order_relaxed);
  s.open = impl_->open.load(std::memory_order_relaxed);
  return s;
}

}  // namespace hc::proxy
