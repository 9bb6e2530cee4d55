// The DNS server's I/O: UDP and TCP listeners that hand each query to a
// Responder and send back what it returns. Per listen address, one UDP
// socket per worker thread (SO_REUSEPORT, so the kernel spreads queries over
// the workers), each worker receiving and sending in batches
// (recvmmsg/sendmmsg); one TCP thread per server (RFC 7766: length-prefixed
// messages, several queries per connection, answers in order, idle timeout,
// bounded connection count).
//
// The Responder is swapped atomically when the cluster state changes; a
// worker picks up the new one at its next batch, in-flight answers finish
// with the old one.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "net/socket.h"

namespace hc::dns {

enum class Transport { kUdp, kTcp };

// Turns one query packet into one response packet. Must be thread-safe
// (called concurrently from every worker) and must not block.
class Responder {
 public:
  virtual ~Responder() = default;
  // Writes the response into out (capacity out.size(), at least 65535 for
  // TCP and 4096 for UDP) and returns its length; 0 = send nothing.
  // `transport` decides the size limit: UDP answers are cut to the
  // requester's EDNS size (512 without EDNS), TCP answers are not.
  virtual size_t Respond(std::span<const uint8_t> query, Transport transport,
                         std::span<uint8_t> out) const = 0;
};

struct ServerOptions {
  std::vector<net::HostPort> listen;    // UDP and TCP on each; port 0 = pick one (tests)
  int udp_workers = 0;                  // per address; 0 = one per CPU core
  int batch = 32;                       // datagrams per recvmmsg/sendmmsg
  int tcp_idle_timeout_ms = 10000;      // RFC 7766 6.2.3 suggests seconds, not minutes
  int tcp_max_connections = 1000;       // beyond: new ones are closed at once
  size_t udp_receive_buffer = 4 << 20;  // SO_RCVBUF asked for each UDP socket
};

struct ServerStats {
  uint64_t udp_queries = 0;
  uint64_t udp_responses = 0;
  uint64_t tcp_queries = 0;
  uint64_t tcp_connections = 0;  // accepted and served since start (not those refused)
  uint64_t dropped = 0;          // packets the responder answered with nothing
};

class Server {
 public:
  explicit Server(ServerOptions opts);
  ~Server();  // Stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds every listener (errors name the address and say what to do, e.g.
  // "port 53 needs root or CAP_NET_BIND_SERVICE"), then starts the threads.
  Status Start(std::shared_ptr<const Responder> responder);
  void Stop();  // closes sockets, joins threads; idempotent
  void SetResponder(std::shared_ptr<const Responder> responder);

  // The addresses actually bound (port 0 resolved), in the order of
  // opts.listen.
  std::vector<net::HostPort> bound() const;
  ServerStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hc::dns
