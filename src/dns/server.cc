#include "dns/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <list>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "common/fs.h"
#include "common/log.h"
#include "common/shared_slot.h"

namespace hc::dns {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kUdpBufferSize = 4096;
constexpr size_t kTcpMaxMessage = 65535;
constexpr size_t kTcpReadChunk = size_t{16} << 10;
// A peer that sends queries but does not read the answers is no longer read
// from once this much output waits for it, which bounds its buffers.
constexpr size_t kTcpOutHighWater = size_t{64} << 10;
// Buffers grown past this by one large message are released once empty, so
// a thousand idle connections do not each keep 64 KiB.
constexpr size_t kTcpKeepCapacity = size_t{16} << 10;
constexpr int kTcpAcceptsPerWakeup = 64;
constexpr int kListenBacklog = 1024;
constexpr int kMaxBatch = 1024;  // UIO_MAXIOV: the kernel's cap for recvmmsg/sendmmsg
// With port 0 the port picked for TCP may be taken for UDP (or the reverse);
// then the whole address is bound again on another port.
constexpr int kPortZeroAttempts = 8;
constexpr size_t kPktInfoSpace =
    CMSG_SPACE(std::max(sizeof(struct in_pktinfo), sizeof(struct in6_pktinfo)));

// Per-thread counters on their own cache line: workers never write a line
// another worker writes.
struct alignas(64) Counters {
  std::atomic<uint64_t> udp_queries{0};
  std::atomic<uint64_t> udp_responses{0};
  std::atomic<uint64_t> tcp_queries{0};
  std::atomic<uint64_t> tcp_connections{0};
  std::atomic<uint64_t> dropped{0};
};

void Add(std::atomic<uint64_t>& counter, uint64_t n) {
  if (n != 0) counter.fetch_add(n, std::memory_order_relaxed);
}

using ResponderSlot = SharedSlot<const Responder>;

struct SockAddr {
  struct sockaddr_storage ss = {};
  socklen_t len = 0;
  bool wildcard = false;  // 0.0.0.0 or ::, where replies need IP_PKTINFO

  int family() const { return ss.ss_family; }
  const struct sockaddr* get() const { return reinterpret_cast<const struct sockaddr*>(&ss); }
  uint16_t port() const {
    if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
  }
  void set_port(uint16_t p) {
    if (family() == AF_INET) {
      reinterpret_cast<sockaddr_in*>(&ss)->sin_port = htons(p);
    } else {
      reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port = htons(p);
    }
  }
};

Result<SockAddr> ParseListenAddress(const net::HostPort& at) {
  SockAddr a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
  if (::inet_pton(AF_INET, at.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    a.len = sizeof(sockaddr_in);
    a.wildcard = v4->sin_addr.s_addr == htonl(INADDR_ANY);
  } else if (::inet_pton(AF_INET6, at.host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    a.len = sizeof(sockaddr_in6);
    a.wildcard = IN6_IS_ADDR_UNSPECIFIED(&v6->sin6_addr);
  } else {
    return InvalidArgument("dns: listen address '" + at.host +
                           "' is not an IP address (write an IPv4 or IPv6 literal, e.g. "
                           "0.0.0.0 or ::)");
  }
  a.set_port(at.port);
  return a;
}

Status BindError(const char* proto, const net::HostPort& at, const char* what, int err) {
  std::string msg = std::string("dns: cannot ") + what + " " + proto + " " + at.ToString() + ": " +
                    std::strerror(err);
  Code code = Code::kIo;
  if (err == EACCES || err == EPERM) {
    code = Code::kPermissionDenied;
    msg += " (port " + std::to_string(at.port) +
           " needs root or CAP_NET_BIND_SERVICE; set dns_listen to another port)";
  } else if (err == EADDRINUSE) {
    code = Code::kUnavailable;
    msg +=
        " (another DNS server runs there? `ss -lunpt` shows it; stop it or set dns_listen "
        "to another address)";
  } else if (err == EADDRNOTAVAIL) {
    code = Code::kUnavailable;
    msg += " (no interface of this host has that address; check dns_listen)";
  }
  return Status(code, std::move(msg));
}

// Returns the errno of the step that failed, 0 on success.
int OpenUdp(const SockAddr& at, size_t receive_buffer, UniqueFd* out) {
  UniqueFd fd(::socket(at.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return errno;
  // SO_REUSEPORT alone: the kernel only lets sockets of the same user join
  // the group. SO_REUSEADDR is left off on purpose: for UDP on Linux it lets
  // any other socket that also sets it bind the same address, whoever owns
  // it, and take over the unicast queries.
  int one = 1;
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) return errno;
  if (at.family() == AF_INET6 &&
      ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) {
    return errno;
  }
  int rcvbuf = static_cast<int>(std::min<size_t>(receive_buffer, 1u << 30));
  (void)::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  if (at.wildcard) {
    // Replies must leave from the address the query was sent to, which on a
    // wildcard socket only the packet info tells.
    int rc = at.family() == AF_INET
                 ? ::setsockopt(fd.get(), IPPROTO_IP, IP_PKTINFO, &one, sizeof one)
                 : ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
    if (rc != 0) return errno;
  }
  if (::bind(fd.get(), at.get(), at.len) != 0) return errno;
  *out = std::move(fd);
  return 0;
}

int OpenTcp(const SockAddr& at, UniqueFd* out, const char** step) {
  *step = "bind";
  UniqueFd fd(::socket(at.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return errno;
  int one = 1;
  (void)::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (at.family() == AF_INET6 &&
      ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) {
    return errno;
  }
  if (::bind(fd.get(), at.get(), at.len) != 0) return errno;
  *step = "listen on";
  if (::listen(fd.get(), kListenBacklog) != 0) return errno;
  *out = std::move(fd);
  return 0;
}

Result<uint16_t> BoundPort(int fd) {
  SockAddr a;
  a.len = sizeof a.ss;
  if (::getsockname(fd, reinterpret_cast<struct sockaddr*>(&a.ss), &a.len) != 0) {
    return ErrnoStatus("dns: getsockname", errno);
  }
  return a.port();
}

// The sockets of one listen address.
struct Listener {
  net::HostPort at;  // port resolved
  std::vector<UniqueFd> udp;
  UniqueFd tcp;
  bool wildcard = false;
};

Result<Listener> BindListener(const net::HostPort& want, int udp_sockets, size_t receive_buffer) {
  HC_ASSIGN_OR_RETURN(SockAddr addr, ParseListenAddress(want));
  for (int attempt = 1;; ++attempt) {
    const bool retry_allowed = want.port == 0 && attempt < kPortZeroAttempts;
    Listener l;
    l.wildcard = addr.wildcard;
    SockAddr a = addr;
    const char* step = "bind";
    // With port 0, TCP picks the port: the kernel's choice of a free UDP port
    // for a SO_REUSEPORT socket may be one that another group of the same
    // user already holds (it would then share our queries), while a TCP
    // listener never shares.
    if (want.port == 0) {
      int err = OpenTcp(a, &l.tcp, &step);
      if (err != 0) return BindError("TCP", want, step, err);
      HC_ASSIGN_OR_RETURN(uint16_t port, BoundPort(l.tcp.get()));
      a.set_port(port);
    }
    int udp_err = 0;
    for (int i = 0; i < udp_sockets && udp_err == 0; ++i) {
      UniqueFd fd;
      udp_err = OpenUdp(a, receive_buffer, &fd);
      if (udp_err == 0) l.udp.push_back(std::move(fd));
    }
    if (udp_err == EADDRINUSE && retry_allowed) continue;
    if (udp_err != 0) return BindError("UDP", want, "bind", udp_err);
    if (want.port != 0) {
      int err = OpenTcp(a, &l.tcp, &step);
      if (err != 0) return BindError("TCP", want, step, err);
    }
    l.at = net::HostPort{want.host, a.port()};
    return l;
  }
}

// Writes one control message holding `value` into `ctrl`; returns its length.
template <typename T>
size_t PutControl(unsigned char* ctrl, int level, int type, const T& value) {
  struct msghdr m = {};
  m.msg_control = ctrl;
  m.msg_controllen = CMSG_SPACE(sizeof value);
  struct cmsghdr* out = CMSG_FIRSTHDR(&m);
  out->cmsg_level = level;
  out->cmsg_type = type;
  out->cmsg_len = CMSG_LEN(sizeof value);
  std::memcpy(CMSG_DATA(out), &value, sizeof value);
  return m.msg_controllen;
}

// Fills `ctrl` with the packet info that makes a reply leave from the
// address the query in `received` was sent to; returns its length (0 if the
// query carried none).
size_t ReplyPktInfo(const struct msghdr& received, unsigned char* ctrl) {
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&received); c != nullptr;
       c = CMSG_NXTHDR(const_cast<struct msghdr*>(&received), c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
      struct in_pktinfo in;
      std::memcpy(&in, CMSG_DATA(c), sizeof in);
      // ipi_spec_dst is the local address the query reached (for a
      // broadcast query a unicast one, unlike ipi_addr); the route picks the
      // interface.
      struct in_pktinfo reply = {};
      reply.ipi_spec_dst = in.ipi_spec_dst;
      return PutControl(ctrl, IPPROTO_IP, IP_PKTINFO, reply);
    }
    if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
      struct in6_pktinfo in;
      std::memcpy(&in, CMSG_DATA(c), sizeof in);
      struct in6_pktinfo reply = {};
      reply.ipi6_addr = in.ipi6_addr;
      // A link-local source is only meaningful on the interface it came in.
      if (IN6_IS_ADDR_LINKLOCAL(&in.ipi6_addr)) reply.ipi6_ifindex = in.ipi6_ifindex;
      return PutControl(ctrl, IPPROTO_IPV6, IPV6_PKTINFO, reply);
    }
  }
  return 0;
}

// One UDP socket and the thread serving it. All buffers are allocated here,
// once; the loop allocates nothing.
class UdpWorker {
 public:
  UdpWorker(UniqueFd fd, std::string name, bool pktinfo, int batch, const ResponderSlot& responder,
            Counters& counters)
      : fd_(std::move(fd)),
        name_(std::move(name)),
        pktinfo_(pktinfo),
        batch_(batch),
        slots_(std::make_unique<Slot[]>(static_cast<size_t>(batch))),
        recv_(static_cast<size_t>(batch)),
        send_(static_cast<size_t>(batch)),
        send_iov_(static_cast<size_t>(batch)),
        recv_iov_(static_cast<size_t>(batch)),
        responder_(responder),
        counters_(counters) {
    for (int i = 0; i < batch; ++i) {
      recv_iov_[i] = {slots_[i].query, kUdpBufferSize};
      recv_[i].msg_hdr.msg_name = &slots_[i].peer;
      recv_[i].msg_hdr.msg_iov = &recv_iov_[i];
      recv_[i].msg_hdr.msg_iovlen = 1;
    }
  }

  int fd() const { return fd_.get(); }

  void Run(const std::atomic<bool>& stopping) {
    std::shared_ptr<const Responder> responder;
    uint64_t seen = 0;
    while (!stopping.load(std::memory_order_relaxed)) {
      for (int i = 0; i < batch_; ++i) {
        struct msghdr& h = recv_[i].msg_hdr;
        h.msg_namelen = sizeof slots_[i].peer;
        h.msg_control = pktinfo_ ? slots_[i].recv_ctrl : nullptr;
        h.msg_controllen = pktinfo_ ? sizeof slots_[i].recv_ctrl : 0;
        h.msg_flags = 0;
      }
      // Blocks for the first datagram only. Stop() ends the wait by shutting
      // the socket down, which wakes a blocked receive.
      int n = ::recvmmsg(fd_.get(), recv_.data(), static_cast<unsigned>(batch_), MSG_WAITFORONE,
                         nullptr);
      if (stopping.load(std::memory_order_relaxed)) break;
      if (n <= 0) {
        if (n < 0 && errno != EINTR && errno != EAGAIN) {
          int err = errno;
          if (throttle_.Allow())
            LogWarn("dns: receive on UDP %s: %s", name_.c_str(), std::strerror(err));
          // Do not spin on an error that persists (ENOMEM).
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        continue;
      }
      responder_.Refresh(&responder, &seen);
      int answers = 0;
      uint64_t dropped = 0;
      for (int i = 0; i < n; ++i) {
        Slot& s = slots_[i];
        size_t len = responder->Respond(std::span<const uint8_t>(s.query, recv_[i].msg_len),
                                        Transport::kUdp, std::span<uint8_t>(s.answer));
        if (len == 0) {
          ++dropped;
          continue;
        }
        HC_CHECK(len <= kUdpBufferSize, "dns: Responder::Respond returned more than its buffer");
        send_iov_[answers] = {s.answer, len};
        struct msghdr& h = send_[answers].msg_hdr;
        h = {};
        h.msg_name = &s.peer;
        h.msg_namelen = recv_[i].msg_hdr.msg_namelen;
        h.msg_iov = &send_iov_[answers];
        h.msg_iovlen = 1;
        if (pktinfo_) {
          size_t ctrl = ReplyPktInfo(recv_[i].msg_hdr, s.send_ctrl);
          if (ctrl != 0) {
            h.msg_control = s.send_ctrl;
            h.msg_controllen = ctrl;
          }
        }
        ++answers;
      }
      int sent = SendAll(answers);
      Add(counters_.udp_queries, static_cast<uint64_t>(n));
      Add(counters_.udp_responses, static_cast<uint64_t>(sent));
      Add(counters_.dropped, dropped);
    }
  }

 private:
  struct Slot {
    struct sockaddr_storage peer;
    alignas(struct cmsghdr) unsigned char recv_ctrl[kPktInfoSpace];
    alignas(struct cmsghdr) unsigned char send_ctrl[kPktInfoSpace];
    uint8_t query[kUdpBufferSize];
    uint8_t answer[kUdpBufferSize];
  };

  // Returns how many of the first `count` replies went out.
  int SendAll(int count) {
    int done = 0;
    int sent = 0;
    while (done < count) {
      int r = ::sendmmsg(fd_.get(), &send_[done], static_cast<unsigned>(count - done), 0);
      if (r > 0) {
        done += r;
        sent += r;
        continue;
      }
      if (r < 0 && errno == EINTR) continue;
      // This reply cannot go (source port 0, no route, ...): skip it, not
      // the rest. Sources are unauthenticated, so this is not worth a warning.
      LogDebug("dns: reply on UDP %s: %s", name_.c_str(),
               r < 0 ? std::strerror(errno) : "not sent");
      ++done;
    }
    return sent;
  }

  const UniqueFd fd_;
  const std::string name_;
  const bool pktinfo_;
  const int batch_;
  std::unique_ptr<Slot[]> slots_;
  std::vector<struct mmsghdr> recv_;
  std::vector<struct mmsghdr> send_;
  std::vector<struct iovec> send_iov_;
  std::vector<struct iovec> recv_iov_;
  const ResponderSlot& responder_;
  Counters& counters_;
  LogThrottle throttle_;
};

// The TCP side of a server: every listener and connection in one epoll loop
// on one thread (RFC 7766). DNS over TCP is the fallback for truncated
// answers, so one thread is plenty; the loop never blocks on a connection.
class TcpLoop {
 public:
  TcpLoop(std::vector<std::pair<UniqueFd, std::string>> listeners, const ServerOptions& opts,
          const ResponderSlot& responder, Counters& counters)
      : listeners_(std::move(listeners)),
        idle_timeout_(std::chrono::milliseconds(std::max(1, opts.tcp_idle_timeout_ms))),
        max_connections_(static_cast<size_t>(std::max(0, opts.tcp_max_connections))),
        responder_(responder),
        counters_(counters),
        read_buf_(kTcpReadChunk),
        answer_buf_(kTcpMaxMessage) {}

  Status Init() {
    epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_.valid()) return ErrnoStatus("dns: epoll_create1", errno);
    wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_.valid()) return ErrnoStatus("dns: eventfd", errno);
    HC_RETURN_IF_ERROR(Watch(wake_.get(), kWakeId));
    for (size_t i = 0; i < listeners_.size(); ++i) {
      HC_RETURN_IF_ERROR(Watch(listeners_[i].first.get(), kFirstListenerId + i));
    }
    spare_ = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    return Status::Ok();
  }

  // Makes Run() return soon after `stopping` was set.
  void Wake() {
    uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
  }

  void Run(const std::atomic<bool>& stopping) {
    std::array<struct epoll_event, 64> events;
    while (!stopping.load(std::memory_order_relaxed)) {
      int n =
          ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), TimeoutMs());
      if (stopping.load(std::memory_order_relaxed)) break;
      if (n < 0) {
        if (errno != EINTR && warn_epoll_.Allow())
          LogWarn("dns: epoll_wait: %s", std::strerror(errno));
        continue;
      }
      now_ = Clock::now();
      responder_.Refresh(&responder_cache_, &responder_seen_);
      for (int i = 0; i < n; ++i) {
        uint64_t id = events[i].data.u64;
        if (id == kWakeId) continue;
        if (id < kFirstConnId) {
          Accept(listeners_[id - kFirstListenerId]);
          continue;
        }
        auto it = conns_by_id_.find(id);
        if (it != conns_by_id_.end()) Service(it->second, events[i].events);
      }
      while (!conns_.empty() && conns_.front().deadline <= now_) Close(conns_.begin());
    }
    conns_by_id_.clear();
    conns_.clear();
  }

 private:
  struct Conn {
    uint64_t id = 0;
    UniqueFd fd;
    std::vector<uint8_t> in;   // received, not yet answered
    std::vector<uint8_t> out;  // length-prefixed answers, from out_sent on not yet sent
    size_t out_sent = 0;
    Clock::time_point deadline;  // closed then unless a complete message arrives
    uint32_t events = 0;         // what epoll watches for
    bool closing = false;        // EOF or a zero-length message: send what is answered, then close
    size_t pending() const { return out.size() - out_sent; }
  };
  // Ordered by deadline, earliest first: every connection gets the same
  // timeout, and one that receives a message moves to the back.
  using ConnList = std::list<Conn>;

  static constexpr uint64_t kWakeId = 0;
  static constexpr uint64_t kFirstListenerId = 1;
  // Connection ids are never reused, so an event queued for a connection
  // closed earlier in the same wakeup cannot reach one that took its fd.
  static constexpr uint64_t kFirstConnId = uint64_t{1} << 32;

  Status Watch(int fd, uint64_t id) {
    struct epoll_event ev = {};
    ev.events = EPOLLIN;
    ev.data.u64 = id;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      return ErrnoStatus("dns: epoll_ctl", errno);
    }
    return Status::Ok();
  }

  int TimeoutMs() const {
    if (conns_.empty()) return -1;
    auto left = conns_.front().deadline - Clock::now();
    if (left <= Clock::duration::zero()) return 0;
    return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
  }

  void Accept(const std::pair<UniqueFd, std::string>& listener) {
    for (int i = 0; i < kTcpAcceptsPerWakeup; ++i) {
      int fd = ::accept4(listener.first.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        int err = errno;
        if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
        if (err == EAGAIN || err == EWOULDBLOCK) return;
        if (warn_accept_.Allow()) {
          LogWarn("dns: accept on TCP %s: %s", listener.second.c_str(), std::strerror(err));
        }
        if ((err == EMFILE || err == ENFILE) && spare_.valid()) {
          // The pending connection keeps the listener readable: free the
          // spare descriptor to accept and drop it, instead of spinning.
          spare_.Reset();
          UniqueFd dropped(::accept4(listener.first.get(), nullptr, nullptr, SOCK_CLOEXEC));
          dropped.Reset();
          spare_ = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        }
        return;
      }
      UniqueFd conn_fd(fd);
      if (conns_.size() >= max_connections_) {
        if (warn_full_.Allow()) {
          LogWarn("dns: refusing TCP connections on %s: %zu open (tcp_max_connections)",
                  listener.second.c_str(), conns_.size());
        }
        continue;
      }
      int one = 1;
      (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      uint64_t id = next_conn_id_++;
      if (!Watch(fd, id).ok()) continue;
      Conn& c = conns_.emplace_back();
      c.id = id;
      c.fd = std::move(conn_fd);
      c.deadline = now_ + idle_timeout_;
      c.events = EPOLLIN;
      conns_by_id_.emplace(id, std::prev(conns_.end()));
      Add(counters_.tcp_connections, 1);
    }
  }

  void Close(ConnList::iterator it) {
    conns_by_id_.erase(it->id);
    conns_.erase(it);  // closing the fd removes it from the epoll set
  }

  void Service(ConnList::iterator it, uint32_t events) {
    Conn& c = *it;
    // HUP: both directions are gone, nothing can be sent any more.
    if ((events & (EPOLLERR | EPOLLHUP)) != 0) return Close(it);
    if ((events & EPOLLIN) != 0 && !c.closing && !Read(c)) return Close(it);
    do {
      Answer(it);
      if (!Flush(c)) return Close(it);
    } while (c.pending() < kTcpOutHighWater && HasCompleteMessage(c));
    if (c.closing && c.pending() == 0 && !HasCompleteMessage(c)) return Close(it);
    uint32_t want = (c.closing || c.pending() >= kTcpOutHighWater ? 0u : uint32_t{EPOLLIN}) |
                    (c.pending() > 0 ? uint32_t{EPOLLOUT} : 0u);
    if (want != c.events) {
      struct epoll_event ev = {};
      ev.events = want;
      ev.data.u64 = c.id;
      if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev) != 0) return Close(it);
      c.events = want;
    }
  }

  // One read per wakeup keeps connections fair; false on a read error.
  bool Read(Conn& c) {
    ssize_t r = ::recv(c.fd.get(), read_buf_.data(), read_buf_.size(), 0);
    if (r > 0) {
      c.in.insert(c.in.end(), read_buf_.data(), read_buf_.data() + r);
      return true;
    }
    if (r == 0) {
      c.closing = true;
      return true;
    }
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
  }

  static bool HasCompleteMessage(const Conn& c) {
    if (c.in.size() < 2) return false;
    size_t len = (size_t{c.in[0]} << 8) | c.in[1];
    return len == 0 || c.in.size() >= 2 + len;
  }

  // Answers the complete messages in c.in, in order, while the output is
  // below the high-water mark.
  void Answer(ConnList::iterator it) {
    Conn& c = *it;
    size_t pos = 0;
    uint64_t queries = 0;
    uint64_t dropped = 0;
    while (c.pending() < kTcpOutHighWater && c.in.size() - pos >= 2) {
      size_t len = (size_t{c.in[pos]} << 8) | c.in[pos + 1];
      if (len == 0) {
        // Not a DNS message: answer nothing more, finish what is answered.
        c.closing = true;
        pos = c.in.size();
        break;
      }
      if (c.in.size() - pos - 2 < len) break;
      size_t n = responder_cache_->Respond(std::span<const uint8_t>(&c.in[pos + 2], len),
                                           Transport::kTcp, std::span<uint8_t>(answer_buf_));
      ++queries;
      pos += 2 + len;
      if (n == 0) {
        ++dropped;
      } else {
        HC_CHECK(n <= kTcpMaxMessage, "dns: Responder::Respond returned more than its buffer");
        c.out.push_back(static_cast<uint8_t>(n >> 8));
        c.out.push_back(static_cast<uint8_t>(n));
        c.out.insert(c.out.end(), answer_buf_.begin(), answer_buf_.begin() + n);
      }
      c.deadline = now_ + idle_timeout_;
      conns_.splice(conns_.end(), conns_, it);
    }
    if (pos > 0) c.in.erase(c.in.begin(), c.in.begin() + static_cast<ptrdiff_t>(pos));
    if (c.in.empty() && c.in.capacity() > kTcpKeepCapacity) std::vector<uint8_t>().swap(c.in);
    Add(counters_.tcp_queries, queries);
    Add(counters_.dropped, dropped);
  }

  // Sends what the socket takes; false if the connection failed.
  static bool Flush(Conn& c) {
    while (c.pending() > 0) {
      ssize_t r =
          ::send(c.fd.get(), c.out.data() + c.out_sent, c.pending(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (r > 0) {
        c.out_sent += static_cast<size_t>(r);
        continue;
      }
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      return false;
    }
    c.out.clear();
    c.out_sent = 0;
    if (c.out.capacity() > kTcpKeepCapacity) std::vector<uint8_t>().swap(c.out);
    return true;
  }

  const std::vector<std::pair<UniqueFd, std::string>> listeners_;  // fd, address for logs
  const Clock::duration idle_timeout_;
  const size_t max_connections_;
  const ResponderSlot& responder_;
  Counters& counters_;
  std::vector<uint8_t> read_buf_;
  std::vector<uint8_t> answer_buf_;
  UniqueFd epoll_;
  UniqueFd wake_;
  UniqueFd spare_;  // given up to shed a connection when out of descriptors
  ConnList conns_;
  std::unordered_map<uint64_t, ConnList::iterator> conns_by_id_;
  uint64_t next_conn_id_ = kFirstConnId;
  Clock::time_point now_ = Clock::now();
  std::shared_ptr<const Responder> responder_cache_;
  uint64_t responder_seen_ = 0;
  LogThrottle warn_accept_, warn_full_, warn_epoll_;
};

void NameThread(std::thread& t, const char* name) {
  (void)::pthread_setname_np(t.native_handle(), name);
}

}  // namespace

// Start, Stop, bound() and stats() serialise on `mu`; the threads never take
// it, so Stop() can join them while holding it. SetResponder only touches
// `responder`.
struct Server::Impl {
  explicit Impl(ServerOptions o) : opts(std::move(o)) {}

  const ServerOptions opts;
  ResponderSlot responder;
  std::atomic<bool> stopping{false};

  mutable std::mutex mu;
  bool running = false;                             // GUARDED_BY(mu)
  std::vector<net::HostPort> bound;                 // GUARDED_BY(mu)
  std::vector<std::unique_ptr<Counters>> counters;  // GUARDED_BY(mu); kept after Stop
  std::vector<std::unique_ptr<UdpWorker>> udp;      // GUARDED_BY(mu)
  std::unique_ptr<TcpLoop> tcp;                     // GUARDED_BY(mu)
  std::vector<std::thread> threads;                 // GUARDED_BY(mu)
};

Server::Server(ServerOptions opts) : impl_(std::make_unique<Impl>(std::move(opts))) {}

Server::~Server() {
  Stop();
}

Status Server::Start(std::shared_ptr<const Responder> responder) {
  if (responder == nullptr) return InvalidArgument("dns: Server::Start needs a responder");
  const ServerOptions& opts = impl_->opts;
  if (opts.listen.empty()) return InvalidArgument("dns: no listen address (set dns_listen)");
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->running) return Conflict("dns: server already started; Stop() it first");

  int workers = opts.udp_workers;
  if (workers <= 0) workers = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int batch = std::clamp(opts.batch, 1, kMaxBatch);

  // Everything is bound before any thread starts: on an error the sockets
  // bound so far close on return and nothing runs.
  std::vector<Listener> listeners;
  for (const net::HostPort& at : opts.listen) {
    HC_ASSIGN_OR_RETURN(Listener l, BindListener(at, workers, opts.udp_receive_buffer));
    listeners.push_back(std::move(l));
  }

  std::vector<std::unique_ptr<Counters>> counters;
  std::vector<std::unique_ptr<UdpWorker>> udp;
  std::vector<std::pair<UniqueFd, std::string>> tcp_listeners;
  std::vector<net::HostPort> bound;
  for (Listener& l : listeners) {
    std::string name = l.at.ToString();
    for (UniqueFd& fd : l.udp) {
      counters.push_back(std::make_unique<Counters>());
      udp.push_back(std::make_unique<UdpWorker>(std::move(fd), name, l.wildcard, batch,
                                                impl_->responder, *counters.back()));
    }
    tcp_listeners.emplace_back(std::move(l.tcp), name);
    bound.push_back(l.at);
  }
  counters.push_back(std::make_unique<Counters>());
  auto tcp =
      std::make_unique<TcpLoop>(std::move(tcp_listeners), opts, impl_->responder, *counters.back());
  HC_RETURN_IF_ERROR(tcp->Init());

  impl_->responder.Set(std::move(responder));
  impl_->stopping.store(false);
  impl_->counters = std::move(counters);
  impl_->udp = std::move(udp);
  impl_->tcp = std::move(tcp);
  impl_->bound = std::move(bound);
  // Set first so that Stop() (from the destructor) joins what started if
  // creating a later thread throws.
  impl_->running = true;
  for (auto& w : impl_->udp) {
    impl_->threads.emplace_back([w = w.get(), this] { w->Run(impl_->stopping); });
    NameThread(impl_->threads.back(), "hc-dns-udp");
  }
  impl_->threads.emplace_back([t = impl_->tcp.get(), this] { t->Run(impl_->stopping); });
  NameThread(impl_->threads.back(), "hc-dns-tcp");
  for (const net::HostPort& at : impl_->bound) {
    LogInfo("dns: serving %s (UDP: %d sockets, TCP)", at.ToString().c_str(), workers);
  }
  return Status::Ok();
}

void Server::Stop() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!impl_->running) return;
  impl_->stopping.store(true);
  // shutdown() wakes a thread blocked in recvmmsg or sendmmsg on the socket
  // (also on an unconnected UDP socket, where it still reports ENOTCONN);
  // the fds stay open until the threads are gone.
  for (auto& w : impl_->udp) (void)::shutdown(w->fd(), SHUT_RDWR);
  impl_->tcp->Wake();
  for (std::thread& t : impl_->threads) t.join();
  impl_->threads.clear();
  impl_->udp.clear();
  impl_->tcp.reset();
  impl_->bound.clear();
  impl_->running = false;
}

void Server::SetResponder(std::shared_ptr<const Responder> responder) {
  HC_CHECK(responder != nullptr, "dns: SetResponder(nullptr)");
  impl_->responder.Set(std::move(responder));
}

std::vector<net::HostPort> Server::bound() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->bound;
}

ServerStats Server::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  ServerStats s;
  for (const auto& c : impl_->counters) {
    s.udp_queries += c->udp_queries.load(std::memory_order_relaxed);
    s.udp_responses += c->udp_responses.load(std::memory_order_relaxed);
    s.tcp_queries += c->tcp_queries.load(std::memory_order_relaxed);
    s.tcp_connections += c->tcp_connections.load(std::memory_order_relaxed);
    s.dropped += c->dropped.load(std::memory_order_relaxed);
  }
  return s;
}

}  // namespace hc::dns
