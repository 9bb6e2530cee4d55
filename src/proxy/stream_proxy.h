// The proxy for everything that is not plain HTTP: connections routed by
// what their first bytes say, then relayed byte for byte.
//
//   protocol    listener            routed by
//   kTcp        an app's tcp port   the port (no bytes needed)
//   kPostgres   5432                the database of the startup message (an
//                                   SSLRequest/GSSENCRequest is answered 'N')
//   kImap       143                 the domain of the login name (LOGIN or
//   kPop3       110                 AUTHENTICATE PLAIN / USER+PASS or AUTH
//                                   PLAIN): the proxy greets the client, takes
//                                   the login itself, then replays it to the
//                                   backend, as nginx's mail proxy does
//   kTls        443                 the SNI of the ClientHello: names of apps
//                                   that terminate TLS themselves are relayed
//                                   untouched (passthrough); any other goes to
//                                   the terminate hook (TLS termination, then
//                                   the HTTP proxy)
//   kHop        (Adopt only)        "HC-HOP 1 <app>\r\n" sent by another node's
//                                   proxy over the mutual-TLS node channel;
//                                   only apps running on this node
//
// A route whose backend is another node (`hop`) gets the hop line first, then
// the client's bytes. Engine: one epoll loop per worker thread, SO_REUSEPORT
// listeners, edge-triggered, buffers from a per-worker pool (an idle relayed
// connection holds none); every phase has a deadline. Hold(app) queues new
// connections of the app (bounded; the deadline answers in the protocol's
// own words: a PostgreSQL ErrorResponse, an IMAP NO, a POP3 -ERR, or a
// close) until Release(app).
//
// Thread-safety: every public method may be called from any thread.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/fs.h"
#include "common/status.h"
#include "net/socket.h"
#include "proxy/route_table.h"

namespace hc::proxy {

enum class StreamProtocol : uint8_t { kTcp, kPostgres, kImap, kPop3, kTls, kHop };
const char* StreamProtocolName(StreamProtocol p);

// The first line a node's proxy sends over the node channel for a stream.
inline constexpr std::string_view kHopPrefix = "HC-HOP 1 ";
std::string HopLine(std::string_view app);

struct StreamRouteSpec {
  std::string app;
  net::HostPort backend;
  bool hop = false;                    // backend is a tunnel to the app's node: send HopLine first
  std::vector<uint16_t> tcp_ports;     // public ports relayed as they are
  std::vector<std::string> databases;  // PostgreSQL database names
  std::vector<std::string> imap_domains;     // login domains ("example.com", "*.example.com")
  std::vector<std::string> pop3_domains;     //
  std::vector<std::string> tls_passthrough;  // SNI names relayed without decrypting
};

// An immutable routing snapshot (like RouteTable, shared by the workers).
class StreamRoutes {
 public:
  // Errors name the app and what clashes (a port, database or name claimed
  // twice, a malformed name, an unresolvable backend).
  static Result<std::shared_ptr<const StreamRoutes>> Build(
      const std::vector<StreamRouteSpec>& specs);

  const Route* ByPort(uint16_t port) const;
  const Route* ByDatabase(std::string_view db) const { return postgres_->Find(db); }
  const Route* ByMailDomain(StreamProtocol p, std::string_view domain) const;
  const Route* BySni(std::string_view sni) const { return passthrough_->Find(sni); }
  // Apps whose backend is on this node (hop == false): kHop's routes.
  const Route* Local(std::string_view app) const;
  std::vector<uint16_t> tcp_ports() const;

 private:
  std::map<uint16_t, Route> ports_;
  std::shared_ptr<const RouteTable> postgres_, imap_, pop3_, passthrough_;
  std::map<std::string, Route, std::less<>> local_;
};

struct StreamProxyOptions {
  // Fixed listeners (5432, 143, 110, 443); IP literals, port 0 = any (tests).
  std::vector<std::pair<net::HostPort, StreamProtocol>> listen;
  // Where apps' tcp ports are opened (one listener per address and port, as
  // the routes come and go); empty = none.
  std::vector<std::string> tcp_hosts;
  int workers = 0;                   // 0 = one per core
  std::string server_name = "hc";    // in IMAP/POP3 greetings
  int handshake_timeout_ms = 10000;  // first bytes / login must be complete in this
  int connect_timeout_ms = 2000;
  int idle_timeout_ms = 3600000;  // relayed connection without a byte either way
  int max_connections = 100000;
  size_t hold_max = 1000;
  int hold_timeout_ms = 10000;
};

struct StreamAppStats {
  uint64_t connections = 0;  // relayed to the backend
  int64_t open = 0;
  uint64_t bytes_in = 0;   // client -> backend
  uint64_t bytes_out = 0;  // backend -> client
  uint64_t failed = 0;     // backend unreachable, refused, held too long
  uint64_t held = 0;       // waiting in a hold now
  uint64_t held_total = 0;
};

struct StreamStats {
  std::map<std::string, StreamAppStats> apps;
  uint64_t accepted = 0;
  uint64_t refused = 0;    // over max_connections
  uint64_t unrouted = 0;   // no app for the port/database/domain/name
  uint64_t malformed = 0;  // protocol errors before routing
  int64_t open = 0;
};

class StreamProxy {
 public:
  // Takes a TLS connection that no passthrough route claims: the socket and
  // the bytes read from it so far. Called on a worker thread; must not block.
  using TerminateTls =
      std::function<void(UniqueFd fd, std::string already_read, const net::HostPort& client)>;

  StreamProxy(StreamProxyOptions opts, TerminateTls terminate = nullptr);
  ~StreamProxy();  // Stop()
  StreamProxy(const StreamProxy&) = delete;
  StreamProxy& operator=(const StreamProxy&) = delete;

  // Binds the fixed listeners (errors name the address), starts the workers.
  Status Start(std::shared_ptr<const StreamRoutes> routes);
  void Stop();
  // New connections use `routes`; relayed ones keep their backend. Opens
  // listeners for tcp ports that appeared (a port that cannot be bound is
  // logged and listed in tcp_port_errors()) and closes those that went.
  void SetRoutes(std::shared_ptr<const StreamRoutes> routes);
  // Serves a connection accepted elsewhere (kHop from the node channel).
  void Adopt(UniqueFd fd, std::string_view peer_ip, StreamProtocol protocol);

  void Hold(const std::string& app);
  void Release(const std::string& app);

  std::vector<net::HostPort> bound() const;  // fixed listeners, in order
  std::map<uint16_t, std::string> tcp_port_errors() const;
  StreamStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hc::proxy
