// TLS for the proxy: terminating clients' TLS in front of the plain engines
// (TlsTerminator), and the mutual-TLS client side of the node-to-node hop
// (TlsTunnels).
//
// Both are epoll engines in the style of http_proxy.h: edge-triggered,
// non-blocking OpenSSL over a small custom BIO (reads go straight from the
// socket into OpenSSL, after any bytes handed over with Adopt; records a
// pass writes are collected and sent with one send()), buffers from a
// per-thread pool that go back when empty, and a deadline on every wait
// (handshake/connect, idle).
//
//   auto certs = CertTable::Build({{"shop", {"shop.example.com"}, chain, key}},
//                                 std::nullopt, TlsServerPolicy{.alpn = {"http/1.1"}});
//   TlsTerminator tls({.listen = {{"0.0.0.0", 443}}},
//                     [&](UniqueFd plain, const TlsConnInfo& info) { http.Adopt(...); });
//   HC_RETURN_IF_ERROR(tls.Start(*certs));
//
// Thread-safety: every public method may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/fs.h"
#include "common/status.h"
#include "net/socket.h"

namespace hc::proxy {

struct TlsServerPolicy {
  // Non-empty: require a client certificate that chains to this CA (PEM,
  // one or more certificates): mutual TLS. Empty: no client certificate is
  // asked for.
  std::string client_ca_pem;
  // Protocols accepted, in preference order. A client offering ALPN with
  // none of these is refused (no_application_protocol); a client offering
  // none gets no ALPN. Empty: ALPN is ignored.
  std::vector<std::string> alpn;
};

// One certificate (chain PEM: leaf first, then intermediates; key PEM) and
// the names it serves: exact ("shop.example.com") or wildcard
// ("*.example.com": any name ending in ".example.com", at any depth, not
// the bare domain).
struct CertSpec {
  std::string id;  // for error messages and TlsConnInfo::cert_id
  std::vector<std::string> names;
  std::string cert_pem;
  std::string key_pem;
};

// An immutable SNI -> certificate table. Lookup: the exact name, then the
// longest matching wildcard (as nginx's server_name), else the default;
// SNI is compared lower-cased without a trailing dot. No SNI -> the
// default.
class CertTable {
 public:
  // Validates everything: each PEM parses, each key matches its
  // certificate, names are well-formed DNS names (a wildcard only as the
  // whole first label, with at least two labels after it) and no name is
  // served twice. Errors name the certificate id and what is wrong.
  // An empty table (no certificates, no default) refuses every handshake
  // (unrecognized_name): a node whose apps have no certificates yet.
  static Result<std::shared_ptr<const CertTable>> Build(std::vector<CertSpec> certs,
                                                        std::optional<CertSpec> default_cert,
                                                        const TlsServerPolicy& policy);
  ~CertTable();
  CertTable(const CertTable&) = delete;
  CertTable& operator=(const CertTable&) = delete;

  // The id of the certificate that serves `sni` (empty = none).
  std::string Lookup(std::string_view sni) const;

  struct Impl;  // tls.cc
  const Impl& impl() const { return *impl_; }

 private:
  explicit CertTable(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct TlsConnInfo {
  std::string sni;       // as the client sent it, lower-cased; empty if none
  std::string cert_id;   // the CertSpec that served it
  std::string alpn;      // negotiated protocol; empty if none
  std::string peer_cn;   // subject CN of the verified client certificate (mutual TLS)
  net::HostPort client;  // the TCP peer
};

struct TlsTerminatorOptions {
  std::vector<net::HostPort> listen;  // IP literals, port 0 = pick one; may be empty (Adopt only)
  int workers = 0;                    // 0 = one per CPU core
  int handshake_timeout_ms = 10000;   // accept (or Adopt) -> handshake done
  int idle_timeout_ms = 300000;       // no byte either way -> close
  int max_connections = 100000;       // TLS connections, all workers; beyond: closed at once
};

// Accepts TLS connections (from its own SO_REUSEPORT listeners, one per
// worker and address, or sockets handed over with Adopt), does the
// handshake with the certificate chosen by SNI, then hands one end of a
// fresh AF_UNIX SOCK_STREAM socketpair (non-blocking, CLOEXEC) to the sink
// and relays between the TLS connection and the other end until both
// directions are closed: the client's close_notify (or FIN) becomes
// shutdown(SHUT_WR) on the plain socket, and EOF from the sink becomes
// close_notify followed by a FIN. An error on either side closes both.
// Handshake failure, handshake timeout and an SNI with no certificate (and
// no default) end in an alert (where TLS allows one) and a close, counted
// in handshake_failures.
class TlsTerminator {
 public:
  // Called on a worker thread, once per completed handshake; must not
  // block. `plain` is the sink's to keep or close.
  using Sink = std::function<void(UniqueFd plain, const TlsConnInfo& info)>;

  TlsTerminator(TlsTerminatorOptions opts, Sink sink);
  ~TlsTerminator();  // Stop()
  TlsTerminator(const TlsTerminator&) = delete;
  TlsTerminator& operator=(const TlsTerminator&) = delete;

  // Binds every listener (an error names the address), then starts the
  // workers. `certs` must not be null.
  Status Start(std::shared_ptr<const CertTable> certs);
  // Closes listeners and every connection (plain ends included), joins the
  // workers. Idempotent.
  void Stop();
  // Handshakes that start after this use `certs`; connections in flight
  // keep the table they started with.
  void SetCerts(std::shared_ptr<const CertTable> certs);
  // Takes over an accepted TCP socket whose first bytes `already_read`
  // (e.g. a ClientHello read to sniff the SNI) are fed to TLS before
  // anything read from `fd`. Closed at once if not running or full.
  void Adopt(UniqueFd fd, std::string already_read, net::HostPort client);

  // The addresses actually bound (port 0 resolved), in the order of listen.
  std::vector<net::HostPort> bound() const;

  struct Stats {
    uint64_t handshakes = 0;          // completed, sink called
    uint64_t handshake_failures = 0;  // including timeouts and unknown SNI
    uint64_t refused = 0;             // over max_connections
    int64_t open = 0;                 // TLS connections now (handshaking or relaying)
  };
  Stats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The client identity of this node: its certificate chain and key, and the
// CA that peers' server certificates must chain to.
struct TlsClientIdentity {
  std::string ca_pem, cert_pem, key_pem;
};

struct TlsTunnelOptions {
  net::HostPort remote;  // the peer's TLS endpoint (a name is resolved by Open)
  // The peer's certificate must carry this as a DNS SAN, or as an IP SAN if
  // it is an IP literal. Also sent as SNI when it is a name.
  std::string expect_server_name;
  std::string alpn;               // offered, and required back from the server; empty = none
  int connect_timeout_ms = 2000;  // TCP connect + handshake
  int idle_timeout_ms = 300000;
};

// Plain-to-mutual-TLS tunnels: each open tunnel listens on
// <listen_host>:<ephemeral>, and every connection accepted there is carried
// over a new TLS connection to the tunnel's remote. If the TCP connect or
// the handshake fails (or times out), the local connection is closed at
// once, so its user sees a failed backend quickly. TLS sessions are
// resumed (one cached session per tunnel). One epoll thread serves all
// tunnels.
class TlsTunnels {
 public:
  explicit TlsTunnels(TlsClientIdentity id, std::string listen_host = "127.0.0.1");
  ~TlsTunnels();  // Stop()
  TlsTunnels(const TlsTunnels&) = delete;
  TlsTunnels& operator=(const TlsTunnels&) = delete;

  // Checks the identity (PEMs parse, key matches) and starts the thread.
  Status Start();
  // Closes every tunnel and connection; joins the thread. Idempotent.
  void Stop();

  // Opens the tunnel for (o.remote, o.alpn), or returns the one already
  // open (whose other options stay as they were). Returns the local
  // address to connect to.
  Result<net::HostPort> Open(const TlsTunnelOptions& o);
  // Stops listening for (remote, alpn); connections in flight finish.
  void Close(const net::HostPort& remote, const std::string& alpn);
  // Certificate renewal: connections made after this use `id`. The current
  // identity stays if `id` is invalid.
  Status SetIdentity(TlsClientIdentity id);

  struct Stats {
    uint64_t connections = 0;  // TLS handshakes completed
    uint64_t resumed = 0;      // of which resumed a session
    uint64_t failures = 0;     // connect or handshake failed or timed out
    int64_t open = 0;
  };
  Stats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hc::proxy
