// The HTTP/1.1 reverse proxy engine: the hot path of the `proxy` component.
//
// One epoll event loop per worker thread; each worker has its own
// SO_REUSEPORT listening socket per address, so the kernel spreads new
// connections over the workers and a connection stays on one thread for
// its whole life (no locks on the data path). Per connection: read a request
// head, route it by Host, forward it (rewritten: X-Forwarded-*, hop-by-hop
// headers removed) to the app's backend over a pooled keep-alive connection
// of this worker, stream the request body and the response back as they
// arrive (never buffered whole), then read the next request (pipelined
// requests are answered in order, one at a time). `Upgrade` requests that
// the backend answers with 101 become a byte tunnel.
//
// Every wait has a deadline: header (whole head, against slowloris), idle
// (between keep-alive requests, and in tunnels), body (no progress while a
// request is in flight: 504 if no response started), connect (502), hold
// (503 with Retry-After). Error pages are small HTML documents.
//
// Hold(app) makes every worker queue the app's new requests (up to hold_max
// in all); Release(app) sends them to the app's backend as the routes say at
// that moment. That is what makes a migration invisible to clients.
//
//   HttpProxy proxy(ProxyOptions{.listen = {{"0.0.0.0", 80}}});
//   HC_RETURN_IF_ERROR(proxy.Start(table));
//   proxy.Hold("shop"); ...; proxy.SetRoutes(moved); proxy.Release("shop");
//
// Thread-safety: every public method may be called from any thread.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/fs.h"
#include "common/status.h"
#include "net/socket.h"
#include "proxy/route_table.h"

namespace hc::proxy {

struct ProxyOptions {
  std::vector<net::HostPort> listen;  // IP literals; port 0 = pick one (tests); may be
                                      // empty when connections only come by Adopt
  int workers = 0;                    // 0 = one per CPU core
  size_t max_head = 16384;            // request and response heads; more -> 431 / 502
  int header_timeout_ms = 10000;      // the whole request head must arrive in this -> 408
  int idle_timeout_ms = 60000;        // keep-alive wait between requests; tunnels
  int body_timeout_ms = 60000;        // no progress on a request in flight -> 504 or close
  int connect_timeout_ms = 2000;      // backend connect -> 502
  int max_connections = 100000;       // client connections, all workers; beyond: closed
  size_t hold_max = 1000;             // queued requests per held app; beyond -> 503
  int hold_timeout_ms = 10000;        // a queued request waits at most this -> 503
  // A backend that refuses, cannot be reached or closes before answering:
  // close the client connection instead of answering 502. For the internal
  // engine, whose clients are other nodes' proxies: they send the request
  // again with their routes of the moment (the app is moving or failing
  // over) instead of passing a 502 on.
  bool close_when_backend_down = false;
};

// Upper bounds (ms) of the latency buckets; the last bucket is "more".
inline constexpr std::array<int, 13> kLatencyBoundsMs = {1,   2,   5,    10,   25,   50,   100,
                                                         250, 500, 1000, 2500, 5000, 10000};
inline constexpr size_t kLatencyBuckets = kLatencyBoundsMs.size() + 1;

struct AppStats {
  uint64_t requests = 0;   // answered by the backend (any status)
  uint64_t bytes_in = 0;   // from clients: request heads and bodies
  uint64_t bytes_out = 0;  // to clients: response heads and bodies
  // Client connections whose last request was for the app (idle
  // keep-alive ones, tunnels and held requests included).
  int64_t open_connections = 0;
  // Of those, the ones with a request at the app's backend right now
  // (connecting, forwarding, or a tunnel).
  int64_t at_backend = 0;
  uint64_t held = 0;        // requests queued by a hold right now
  uint64_t held_total = 0;  // requests ever queued by a hold
  // Request head complete -> response fully sent, by kLatencyBoundsMs.
  std::array<uint64_t, kLatencyBuckets> latency{};
  uint64_t latency_us = 0;  // sum of the latencies above, in microseconds
};

struct ProxyStats {
  std::map<std::string, AppStats> apps;
  uint64_t connections_accepted = 0;
  uint64_t connections_refused = 0;  // over max_connections
  int64_t connections_open = 0;
  uint64_t errors = 0;  // answers the proxy made itself (4xx, 5xx pages)
};

class HttpProxy {
 public:
  explicit HttpProxy(ProxyOptions opts);
  ~HttpProxy();  // Stop()
  HttpProxy(const HttpProxy&) = delete;
  HttpProxy& operator=(const HttpProxy&) = delete;

  // Binds every listener (an error names the address), then starts the
  // workers. `routes` must not be null.
  Status Start(std::shared_ptr<const RouteTable> routes);
  // Closes listeners and every connection, joins the workers. Idempotent.
  void Stop();
  // Swaps the routing snapshot: requests routed after this use it; requests
  // in flight and tunnels keep their backend.
  void SetRoutes(std::shared_ptr<const RouteTable> routes);

  // Serves a client connection accepted elsewhere (the TLS terminator's
  // plaintext end, an internal hop): takes ownership of `fd` (connected,
  // non-blocking or not), `peer_ip` is the client's address for
  // X-Forwarded-For, `tls` sets X-Forwarded-Proto: https. Closes fd if the
  // proxy is not running. Any thread.
  void Adopt(UniqueFd fd, std::string_view peer_ip, bool tls);

  // Queue new requests for `app` until Release(app). Idempotent.
  void Hold(const std::string& app);
  // Ends a hold: queued requests are routed again with the current routes.
  void Release(const std::string& app);
  // Requests of `app` at its backend right now (held ones and idle
  // keep-alive connections excluded): a move waits for 0 before it stops
  // the app.
  int64_t InFlight(const std::string& app) const;

  // The addresses actually bound (port 0 resolved), in the order of listen.
  std::vector<net::HostPort> bound() const;
  ProxyStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hc::proxy
