#include "proxy/http_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include "common/fs.h"
#include "common/log.h"
#include "common/shared_slot.h"
#include "proxy/engine.h"
#include "proxy/http_head.h"

namespace hc::proxy {
namespace {

// Every buffer has this size at least (and max_head at least, since a whole
// head must fit in the client's buffer).
constexpr size_t kMinBufferSize = size_t{16} << 10;
constexpr int kAcceptsPerWakeup = 64;
// Idle keep-alive connections a worker keeps per backend, and how long.
constexpr size_t kMaxPooledPerBackend = 64;
constexpr auto kPoolIdle = std::chrono::seconds(20);
// After a final answer with "Connection: close" the client's remaining input
// is read and dropped for this long, so that closing with unread data does
// not reset the connection before the client has read the answer.
constexpr auto kLingerTime = std::chrono::seconds(2);
// Steps one connection may take per wakeup before others get their turn.
constexpr int kDriveRounds = 64;
constexpr int kRetryAfterS = 2;
// A request to another node that did not answer is sent again this often
// (Worker::BackendDown).
constexpr auto kRetryEvery = std::chrono::milliseconds(250);
// Content-Length bodies with at least this much left go through a pipe
// with splice(2): the bytes never enter user space.
constexpr uint64_t kSpliceMin = uint64_t{64} << 10;

struct AppCounters {
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> bytes_in{0};
  std::atomic<uint64_t> bytes_out{0};
  std::atomic<int64_t> open{0};
  std::atomic<int64_t> busy{0};  // connections with a request at the backend now
  std::array<std::atomic<uint64_t>, kLatencyBuckets> latency{};
  std::atomic<uint64_t> latency_us{0};  // sum, for the histogram's _sum
};

// Per-worker counters on their own cache line.
struct alignas(64) WorkerCounters {
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> refused{0};
  std::atomic<uint64_t> errors{0};
};

using RoutesSlot = SharedSlot<const RouteTable>;

// Appends to a Buffer; remembers an overflow instead of failing each call.
class Writer {
 public:
  explicit Writer(Buffer& b) : b_(b) {}
  Writer& operator<<(std::string_view s) {
    ok_ = ok_ && b_.Append(s);
    return *this;
  }
  Writer& operator<<(uint64_t v) {
    char tmp[24];
    int n = std::snprintf(tmp, sizeof tmp, "%llu", static_cast<unsigned long long>(v));
    return *this << std::string_view(tmp, static_cast<size_t>(n));
  }
  bool ok() const { return ok_; }

 private:
  Buffer& b_;
  bool ok_ = true;
};

struct BackendAddr {
  struct sockaddr_storage addr = {};
  socklen_t len = 0;
  bool operator==(const BackendAddr& o) const {
    return len == o.len && std::memcmp(&addr, &o.addr, len) == 0;
  }
};
struct BackendAddrHash {
  size_t operator()(const BackendAddr& a) const {
    return std::hash<std::string_view>()(
        std::string_view(reinterpret_cast<const char*>(&a.addr), a.len));
  }
};

enum class Phase : uint8_t {
  kReadHead,    // waiting for / reading a request head
  kHeld,        // routed to a held app; waits for Release or the hold deadline
  kQueued,      // its backend has max_conns requests already; waits for one to end
  kRetry,       // another node's app did not answer: sent again shortly (a failover)
  kConnecting,  // connecting to the backend
  kProxying,    // request and response flow
  kTunnel,      // after 101 Switching Protocols: bytes both ways
  kReply,       // sending an answer of the proxy's own (error page)
  kLinger,      // answer sent with "Connection: close": dropping input until EOF
};

enum TimerList : int8_t {
  kNoTimer = -1,
  kHeader,
  kIdle,
  kBody,
  kConnect,
  kHold,
  kQueue,
  kRetry,
  kLinger,
  kLists
};

// Requests at one capped backend (RouteSpec::max_conns), per worker.
struct BackendSlots {
  int active = 0;
  std::deque<uint64_t> waiting;  // cids of kQueued sessions (stale ones skipped)
};

// One client connection and, while a request is in flight, its backend
// connection. Owned by one worker.
struct Session {
  uint64_t cid = 0;  // epoll id of the client side
  uint64_t uid = 0;  // epoll id of the backend side (0: none)
  UniqueFd client;
  UniqueFd upstream;
  Phase phase = Phase::kReadHead;
  Buffer cin;    // from the client: head, body, pipelined requests; tunnel data
  Buffer uin;    // from the backend
  Buffer tx_up;  // rewritten request head, kept until the response head (retry)
  Buffer tx_cl;  // response heads and the proxy's own answers
  size_t tx_up_sent = 0;
  size_t parsed_size = 0;  // cin size at the last incomplete parse
  // Readiness as epoll last reported it (edge-triggered); cleared on EAGAIN.
  bool c_rd = false, c_wr = false, u_rd = false, u_wr = false;
  bool c_eof = false, u_eof = false;
  bool first_request = true;

  // The request in flight.
  Framing req_framing = Framing::kNone;
  uint64_t req_left = 0;
  ChunkScanner req_chunks;
  size_t req_ready = 0;  // bytes at the front of cin known to be body, not yet sent
  bool req_scanned = true;
  bool keep_alive = false;
  bool is_head = false;
  bool upgrade = false;
  bool client_v10 = false;
  bool reused = false;
  bool retried = false;
  bool hop = false;  // the route goes to another node (RouteSpec::hop)
  bool sent_1xx = false;
  bool reply_keep = false;
  BackendAddr backend;

  // Its response.
  bool resp_head_done = false;
  Framing resp_framing = Framing::kNone;
  uint64_t resp_left = 0;
  ChunkScanner resp_chunks;
  size_t resp_ready = 0;
  bool resp_scanned = false;
  bool up_keep_alive = false;
  bool close_after = false;

  AppCounters* app = nullptr;
  std::string held_app;  // while kHeld; while kRetry, the app to route to again
  // A place at a capped backend: taken by Forward, given back when the
  // exchange leaves the backend; `granted` is one handed over while queued.
  BackendSlots* slot = nullptr;
  BackendSlots* granted = nullptr;
  Clock::time_point started;
  char peer[INET6_ADDRSTRLEN] = {};
  bool tls = false;      // came through the TLS terminator (X-Forwarded-Proto: https)
  bool pending = false;  // in the worker's ready list
  // Pipes of bodies being spliced (large Content-Length ones).
  std::unique_ptr<SplicePipe> req_pipe;
  std::unique_ptr<SplicePipe> resp_pipe;

  Session* tprev = nullptr;
  Session* tnext = nullptr;
  TimerList tlist = kNoTimer;
  Clock::time_point deadline;
};

// Idle keep-alive connections hold a session and no buffer (bench target:
// at most 10 KiB per idle connection, kernel socket memory included).
static_assert(sizeof(Session) <= 1024, "keep idle connections small");

// Sessions with the same timeout, in deadline order (a session re-armed
// moves to the back), so expiry only looks at the front.
struct Timers {
  Session* head = nullptr;
  Session* tail = nullptr;
  Clock::duration timeout{};
};

enum class Side : uint8_t { kClient, kUpstream, kPooled };
struct Endpoint {
  Session* s = nullptr;
  Side side = Side::kClient;
  BackendAddr pooled_at;  // kPooled only
};

struct PooledConn {
  UniqueFd fd;
  uint64_t id = 0;
  Clock::time_point since;
};

std::string_view Reason(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
  }
}

// Only characters that need no escaping in HTML; anything else is left out.
std::string_view SafeForHtml(std::string_view s) {
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':' || c == '_';
    if (!ok) return {};
  }
  return s.substr(0, 200);
}

enum class Step { kProgress, kStalled, kGone };

// Finds how much of `in` belongs to a body; false on broken chunk framing.
bool ScanBody(Framing framing, std::string_view in, uint64_t* left, ChunkScanner* chunks,
              size_t* ready, bool* done) {
  switch (framing) {
    case Framing::kNone: *done = true; return true;
    case Framing::kLength: {
      uint64_t take = std::min<uint64_t>(in.size(), *left);
      *left -= take;
      *ready = static_cast<size_t>(take);
      *done = *left == 0;
      return true;
    }
    case Framing::kChunked:
      *ready = chunks->Scan(in);
      if (chunks->failed()) return false;
      *done = chunks->done();
      return true;
    case Framing::kUntilClose: *ready = in.size(); return true;
  }
  return false;
}

bool IsHopByHop(std::string_view name) {
  switch (name.size()) {
    case 2: return EqualsIgnoreCase(name, "te");
    case 10: return EqualsIgnoreCase(name, "connection") || EqualsIgnoreCase(name, "keep-alive");
    case 16: return EqualsIgnoreCase(name, "proxy-connection");
    default: return false;
  }
}

// Headers a Connection header may not remove: dropping them would change
// how the backend frames or routes the message (hop-by-hop abuse).
bool Protected(std::string_view name) {
  return EqualsIgnoreCase(name, "host") || EqualsIgnoreCase(name, "content-length") ||
         EqualsIgnoreCase(name, "transfer-encoding");
}

// True if a Connection header lists something other than the tokens the
// proxy handles itself, so each header must be checked against it.
bool HasCustomConnectionTokens(const HttpHead& h) {
  for (size_t i = 0; i < h.num_headers; ++i) {
    if (!EqualsIgnoreCase(h.headers[i].name, "connection")) continue;
    std::string_view v = h.headers[i].value;
    size_t start = 0;
    while (start <= v.size()) {
      size_t comma = v.find(',', start);
      if (comma == std::string_view::npos) comma = v.size();
      std::string_view t = v.substr(start, comma - start);
      while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
      while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
      if (!t.empty() && !EqualsIgnoreCase(t, "close") && !EqualsIgnoreCase(t, "keep-alive") &&
          !EqualsIgnoreCase(t, "upgrade")) {
        return true;
      }
      start = comma + 1;
    }
  }
  return false;
}

bool DropHeader(const HttpHead& h, std::string_view name, bool custom_tokens, bool keep_upgrade) {
  if (IsHopByHop(name)) return true;
  if (!keep_upgrade && EqualsIgnoreCase(name, "upgrade")) return true;
  return custom_tokens && !Protected(name) && h.ConnectionListed(name);
}

struct Shared {
  const ProxyOptions& opts;
  int workers;  // how many share the listeners (capped backends split their places)
  RoutesSlot& routes;
  Holds& holds;
  std::atomic<int64_t>& open_connections;
  const std::atomic<bool>& stopping;
};

// One worker thread: its listeners, its connections, its backend pool. Only
// the worker's thread touches its members, except the app counter map
// (inserts and stats() under apps_mu_) and Wake().
class Worker {
 public:
  Worker(Shared shared, std::vector<UniqueFd> listeners)
      : sh_(shared),
        opts_(shared.opts),
        listeners_(std::move(listeners)),
        pool_(std::max(kMinBufferSize, opts_.max_head)),
        limits_{opts_.max_head, kMaxHeaders},
        linger_buf_(std::make_unique<char[]>(kMinBufferSize)) {
    auto ms = [](int v) { return std::chrono::milliseconds(std::max(1, v)); };
    timers_[kHeader].timeout = ms(opts_.header_timeout_ms);
    timers_[kIdle].timeout = ms(opts_.idle_timeout_ms);
    timers_[kBody].timeout = ms(opts_.body_timeout_ms);
    timers_[kConnect].timeout = ms(opts_.connect_timeout_ms);
    timers_[kHold].timeout = ms(opts_.hold_timeout_ms);
    timers_[kQueue].timeout = ms(opts_.hold_timeout_ms);
    timers_[kRetry].timeout = kRetryEvery;
    timers_[kLinger].timeout = kLingerTime;
  }

  ~Worker() {
    // Sessions own fds and buffers; counters of open connections go down.
    for (auto& [id, s] : sessions_) {
      if (s->app != nullptr) s->app->open.fetch_sub(1, std::memory_order_relaxed);
      if (s->app != nullptr && AtBackend(s->phase))
        s->app->busy.fetch_sub(1, std::memory_order_relaxed);
      if (s->phase == Phase::kHeld) sh_.holds.Dequeue(s->held_app);
      sh_.open_connections.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  Status Init() {
    epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_.valid()) return ErrnoStatus("proxy: epoll_create1", errno);
    wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_.valid()) return ErrnoStatus("proxy: eventfd", errno);
    HC_RETURN_IF_ERROR(Watch(wake_.get(), kWakeId, EPOLLIN));
    for (size_t i = 0; i < listeners_.size(); ++i) {
      HC_RETURN_IF_ERROR(Watch(listeners_[i].get(), kFirstListenerId + i, EPOLLIN));
    }
    spare_ = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    return Status::Ok();
  }

  void Wake() {
    uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
  }

  void Run() {
    std::array<struct epoll_event, 256> events;
    Clock::time_point next_pool_sweep = Clock::now();
    while (!sh_.stopping.load(std::memory_order_relaxed)) {
      int timeout = ready_.empty() && unqueued_.empty() ? TimeoutMs() : 0;
      int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), timeout);
      if (sh_.stopping.load(std::memory_order_relaxed)) break;
      if (n < 0) {
        if (errno != EINTR && warn_epoll_.Allow()) {
          LogWarn("proxy: epoll_wait: %s", std::strerror(errno));
        }
        continue;
      }
      now_ = Clock::now();
      sh_.routes.Refresh(&routes_, &routes_seen_);
      for (int i = 0; i < n; ++i) OnEvent(events[i].data.u64, events[i].events);
      RunReady();
      RunUnqueued();
      Expire();
      if (now_ >= next_pool_sweep) {
        SweepPool();
        next_pool_sweep = now_ + std::chrono::seconds(1);
      }
    }
  }

  // Adds this worker's per-app counters to `out`.
  void AddTo(ProxyStats* out) const {
    std::lock_guard<std::mutex> lock(apps_mu_);
    for (const auto& [name, c] : apps_) {
      AppStats& a = out->apps[name];
      a.requests += c->requests.load(std::memory_order_relaxed);
      a.bytes_in += c->bytes_in.load(std::memory_order_relaxed);
      a.bytes_out += c->bytes_out.load(std::memory_order_relaxed);
      a.open_connections += c->open.load(std::memory_order_relaxed);
      a.at_backend += c->busy.load(std::memory_order_relaxed);
      for (size_t i = 0; i < kLatencyBuckets; ++i) {
        a.latency[i] += c->latency[i].load(std::memory_order_relaxed);
      }
      a.latency_us += c->latency_us.load(std::memory_order_relaxed);
    }
    out->connections_accepted += counters_.accepted.load(std::memory_order_relaxed);
    out->connections_refused += counters_.refused.load(std::memory_order_relaxed);
    out->errors += counters_.errors.load(std::memory_order_relaxed);
  }

 private:
  static constexpr uint64_t kWakeId = 0;
  static constexpr uint64_t kFirstListenerId = 1;
  // Ids are never reused, so an event queued for a closed connection cannot
  // reach one that took its fd.
  static constexpr uint64_t kFirstConnId = uint64_t{1} << 32;
  static constexpr uint32_t kConnEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;

  struct StrHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };

  Status Watch(int fd, uint64_t id, uint32_t events) {
    struct epoll_event ev = {};
    ev.events = events;
    ev.data.u64 = id;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      return ErrnoStatus("proxy: epoll_ctl", errno);
    }
    return Status::Ok();
  }

  // ---- timers

  void Disarm(Session* s) {
    if (s->tlist == kNoTimer) return;
    Timers& t = timers_[s->tlist];
    (s->tprev != nullptr ? s->tprev->tnext : t.head) = s->tnext;
    (s->tnext != nullptr ? s->tnext->tprev : t.tail) = s->tprev;
    s->tprev = s->tnext = nullptr;
    s->tlist = kNoTimer;
  }

  void Arm(Session* s, TimerList list) {
    Disarm(s);
    Timers& t = timers_[list];
    s->deadline = now_ + t.timeout;
    s->tlist = list;
    s->tprev = t.tail;
    s->tnext = nullptr;
    (t.tail != nullptr ? t.tail->tnext : t.head) = s;
    t.tail = s;
  }

  int TimeoutMs() const {
    Clock::time_point first = Clock::time_point::max();
    for (const Timers& t : timers_) {
      if (t.head != nullptr) first = std::min(first, t.head->deadline);
    }
    if (!pools_.empty()) first = std::min(first, Clock::now() + std::chrono::seconds(1));
    if (first == Clock::time_point::max()) return -1;
    auto left = first - Clock::now();
    if (left <= Clock::duration::zero()) return 0;
    return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
  }

  void Expire() {
    for (int l = 0; l < kLists; ++l) {
      Timers& t = timers_[l];
      while (t.head != nullptr && t.head->deadline <= now_) {
        Session* s = t.head;
        Disarm(s);
        OnTimeout(s);
      }
    }
  }

  void OnTimeout(Session* s) {
    switch (s->phase) {
      case Phase::kReadHead:
        // Waiting between requests ends quietly; a head that does not
        // arrive in time gets a 408.
        if (s->cin.empty() && !s->first_request) return CloseSession(s);
        return Reply(s, 408, "The request head did not arrive in time.", false), Drive(s);
      case Phase::kHeld:
        sh_.holds.Dequeue(s->held_app);
        SetPhase(s, Phase::kReadHead);
        return Reply(s, 503, "The app is moving to another server; try again in a moment.", false),
               Drive(s);
      case Phase::kQueued:
        SetPhase(s, Phase::kReadHead);
        return Reply(s, 503, "The app is busy with other requests; try again in a moment.", false),
               Drive(s);
      case Phase::kRetry: return (void)Retry(s), Drive(s);
      case Phase::kConnecting:
        return (void)BackendDown(s, "The app's backend did not accept the connection in time."),
               Drive(s);
      case Phase::kProxying:
        if (s->resp_head_done || s->sent_1xx) return CloseSession(s);
        // Whoever stalled: the client in the middle of its body, or the
        // backend that has the whole request.
        if (!s->req_scanned) {
          return Reply(s, 408, "The request body did not arrive in time.", false), Drive(s);
        }
        return Reply(s, 504, "The app's backend did not answer in time.", false), Drive(s);
      case Phase::kTunnel:
      case Phase::kReply:
      case Phase::kLinger: return CloseSession(s);
    }
  }

  // ---- events

  void OnEvent(uint64_t id, uint32_t ev) {
    if (id == kWakeId) return OnWake();
    if (id < kFirstConnId) return Accept(listeners_[id - kFirstListenerId].get());
    auto it = endpoints_.find(id);
    if (it == endpoints_.end()) return;
    Endpoint& e = it->second;
    const bool rd = (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    const bool wr = (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0;
    if (e.side == Side::kPooled) {
      // An idle backend connection only becomes readable when the backend
      // closes it (or misbehaves): either way it is done.
      if (rd) ClosePooled(id, e.pooled_at);
      return;
    }
    Session* s = e.s;
    if (e.side == Side::kClient) {
      if ((ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0 && WaitingForAnswer(*s)) {
        // The client gave up while its request waits (nginx's 499): free
        // its place in a hold queue, or its backend connection.
        LogDebug("proxy: client %s closed while its request was waiting", s->peer);
        return CloseSession(s);
      }
      s->c_rd |= rd;
      s->c_wr |= wr;
    } else {
      s->u_rd |= rd;
      s->u_wr |= wr;
    }
    Drive(s);
  }

  // True while the whole request is with the proxy or the backend and no
  // byte of an answer has gone to the client.
  static bool WaitingForAnswer(const Session& s) {
    if (s.phase == Phase::kHeld || s.phase == Phase::kQueued || s.phase == Phase::kRetry)
      return true;
    if (s.phase != Phase::kConnecting && s.phase != Phase::kProxying) return false;
    return s.req_scanned && s.req_ready == 0 && !s.resp_head_done && !s.sent_1xx;
  }

  void OnWake() {
    uint64_t v;
    while (::read(wake_.get(), &v, sizeof v) > 0) {
    }
    sh_.routes.Refresh(&routes_, &routes_seen_);
    std::vector<Adopted> adopted;
    {
      std::lock_guard<std::mutex> lock(inbox_mu_);
      adopted.swap(inbox_);
    }
    for (Adopted& a : adopted) AddClient(std::move(a.fd), a.peer, a.tls);
    // Requests of apps released since: route them again.
    std::vector<uint64_t> released;
    for (Session* s = timers_[kHold].head; s != nullptr; s = s->tnext) {
      if (!sh_.holds.Held(s->held_app)) released.push_back(s->cid);
    }
    for (uint64_t cid : released) {
      auto it = sessions_.find(cid);
      if (it == sessions_.end()) continue;
      Session* s = it->second.get();
      sh_.holds.Dequeue(s->held_app);
      s->held_app.clear();
      SetPhase(s, Phase::kReadHead);
      Disarm(s);
      if (ParseRequestHead(s->cin.view(), limits_, &head_) != ParseResult::kComplete) {
        CloseSession(s);  // the head parsed before; impossible
        continue;
      }
      if (Dispatch(s) != Step::kGone) Drive(s);
    }
  }

  void RunReady() {
    if (ready_.empty()) return;
    std::vector<uint64_t> ready;
    ready.swap(ready_);
    for (uint64_t cid : ready) {
      auto it = sessions_.find(cid);
      if (it == sessions_.end()) continue;
      it->second->pending = false;
      Drive(it->second.get());
    }
  }

  void Accept(int lfd) {
    AcceptPending(lfd, kAcceptsPerWakeup, &spare_, &warn_accept_, "proxy",
                  [this](UniqueFd fd, const struct sockaddr_storage& peer) {
                    char ip[INET6_ADDRSTRLEN];
                    PeerAddress(peer, ip, sizeof ip);
                    AddClient(std::move(fd), ip, false);
                  });
  }

 public:
  // Takes over a connected client socket (Adopt): queued here, picked up by
  // the worker's thread in OnWake. Any thread.
  void Give(UniqueFd fd, std::string_view peer_ip, bool tls) {
    {
      std::lock_guard<std::mutex> lock(inbox_mu_);
      inbox_.push_back(Adopted{std::move(fd), std::string(peer_ip), tls});
    }
    Wake();
  }

 private:
  struct Adopted {
    UniqueFd fd;
    std::string peer;
    bool tls;
  };

  void AddClient(UniqueFd conn, std::string_view peer, bool tls) {
    if (sh_.open_connections.load(std::memory_order_relaxed) >= opts_.max_connections) {
      Inc(counters_.refused);
      if (warn_full_.Allow()) {
        LogWarn("proxy: refusing connections: %d open (max_connections)", opts_.max_connections);
      }
      return;
    }
    int one = 1;
    (void)::setsockopt(conn.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto owned = std::make_unique<Session>();
    Session* s = owned.get();
    s->cid = next_id_++;
    if (!Watch(conn.get(), s->cid, kConnEvents).ok()) return;
    s->client = std::move(conn);
    s->tls = tls;
    peer = peer.substr(0, sizeof s->peer - 1);
    std::memcpy(s->peer, peer.data(), peer.size());
    s->peer[peer.size()] = 0;
    endpoints_[s->cid] = Endpoint{s, Side::kClient, {}};
    sessions_.emplace(s->cid, std::move(owned));
    sh_.open_connections.fetch_add(1, std::memory_order_relaxed);
    Inc(counters_.accepted);
    Arm(s, kHeader);
    // The request often came with the handshake: try to read it now.
    s->c_rd = s->c_wr = true;
    Drive(s);
  }

  // ---- session life

  void Drive(Session* s) {
    for (int round = 0; round < kDriveRounds; ++round) {
      Step r = StepOnce(s);
      if (r != Step::kProgress) return;
    }
    if (!s->pending) {
      s->pending = true;
      ready_.push_back(s->cid);
    }
  }

  Step StepOnce(Session* s) {
    switch (s->phase) {
      case Phase::kReadHead: return StepReadHead(s);
      case Phase::kHeld:
      case Phase::kQueued:
      case Phase::kRetry: return Step::kStalled;
      case Phase::kConnecting: return StepConnecting(s);
      case Phase::kProxying: return StepProxy(s);
      case Phase::kTunnel: return StepTunnel(s);
      case Phase::kReply: return StepReply(s);
      case Phase::kLinger: return StepLinger(s);
    }
    return Step::kStalled;
  }

  void ReleaseBuffers(Session* s) {
    pipes_.Put(&s->req_pipe);
    pipes_.Put(&s->resp_pipe);
    pool_.Put(&s->cin);
    pool_.Put(&s->uin);
    pool_.Put(&s->tx_up);
    pool_.Put(&s->tx_cl);
  }

  void Detach(Session* s) {
    if (s->app != nullptr) {
      s->app->open.fetch_sub(1, std::memory_order_relaxed);
      if (Bound(s->phase)) s->app->busy.fetch_sub(1, std::memory_order_relaxed);
    }
    s->app = nullptr;
  }

  static bool AtBackend(Phase p) {
    return p == Phase::kConnecting || p == Phase::kProxying || p == Phase::kTunnel;
  }
  // A request at the app's backend or queued for it: a move waits for
  // these (InFlight) before it stops the app; idle keep-alive connections
  // and held requests do not count.
  static bool Bound(Phase p) { return AtBackend(p) || p == Phase::kQueued; }

  void SetPhase(Session* s, Phase p) {
    if (s->app != nullptr && Bound(s->phase) != Bound(p))
      s->app->busy.fetch_add(Bound(p) ? 1 : -1, std::memory_order_relaxed);
    s->phase = p;
    if (s->slot != nullptr && !AtBackend(p)) GiveBack(&s->slot);
    // A place handed to a queued request that then went elsewhere (a hold,
    // an error page) goes on to the next in line.
    if (s->granted != nullptr && p != Phase::kReadHead && p != Phase::kQueued)
      GiveBack(&s->granted);
  }

  // ---- capped backends (RouteSpec::max_conns)

  // Hands the place to the first queued session still waiting, else frees it.
  void GiveBack(BackendSlots** slot) {
    BackendSlots* b = *slot;
    *slot = nullptr;
    while (!b->waiting.empty()) {
      uint64_t cid = b->waiting.front();
      b->waiting.pop_front();
      auto it = sessions_.find(cid);
      if (it == sessions_.end()) continue;
      Session* w = it->second.get();
      if (w->phase != Phase::kQueued || w->granted != nullptr) continue;
      w->granted = b;  // still counted in b->active
      unqueued_.push_back(cid);
      return;
    }
    b->active--;
  }

  // Queued sessions that were given a place: dispatched again (the routes
  // may have changed meanwhile).
  void RunUnqueued() {
    while (!unqueued_.empty()) {
      std::vector<uint64_t> batch;
      batch.swap(unqueued_);
      for (uint64_t cid : batch) {
        auto it = sessions_.find(cid);
        if (it == sessions_.end()) continue;  // closed: CloseSession gave the place on
        Session* s = it->second.get();
        // Timed out meanwhile (503): SetPhase gave the place on.
        if (s->phase != Phase::kQueued || s->granted == nullptr) continue;
        Disarm(s);
        SetPhase(s, Phase::kReadHead);
        if (ParseRequestHead(s->cin.view(), limits_, &head_) != ParseResult::kComplete) {
          CloseSession(s);  // the head parsed before; impossible
          continue;
        }
        if (Dispatch(s) != Step::kGone) Drive(s);
      }
    }
  }

  // True when `s` may go on to its backend now; else it is queued.
  bool TakePlace(Session* s, const Route& route) {
    BackendSlots* granted = s->granted;
    s->granted = nullptr;
    if (route.max_conns == 0) {
      if (granted != nullptr) GiveBack(&granted);
      return true;
    }
    BackendAddr at;
    std::memcpy(&at.addr, &route.addr, route.addr_len);
    at.len = route.addr_len;
    BackendSlots& b = slots_[at];
    if (granted != nullptr && granted != &b) GiveBack(&granted);
    if (granted == &b) {
      s->slot = &b;
      return true;
    }
    const int limit =
        std::max<int>(1, (static_cast<int>(route.max_conns) + sh_.workers - 1) / sh_.workers);
    if (b.active < limit) {
      b.active++;
      s->slot = &b;
      return true;
    }
    b.waiting.push_back(s->cid);
    SetPhase(s, Phase::kQueued);
    Arm(s, kQueue);
    return false;
  }

  void CloseUpstream(Session* s) {
    if (s->uid != 0) endpoints_.erase(s->uid);
    s->uid = 0;
    s->upstream.Reset();
    s->u_rd = s->u_wr = s->u_eof = false;
    pool_.Put(&s->uin);
  }

  void CloseSession(Session* s) {
    Disarm(s);
    CloseUpstream(s);
    Detach(s);
    if (s->slot != nullptr) GiveBack(&s->slot);
    if (s->granted != nullptr) GiveBack(&s->granted);
    if (s->phase == Phase::kHeld) sh_.holds.Dequeue(s->held_app);
    endpoints_.erase(s->cid);
    ReleaseBuffers(s);
    sh_.open_connections.fetch_sub(1, std::memory_order_relaxed);
    sessions_.erase(s->cid);  // closes the client fd; s is gone
  }

  // Queues the proxy's own answer; the connection is kept for the next
  // request only if `keep` (the request head must then be consumed).
  void Reply(Session* s, int status, std::string_view detail, bool keep) {
    CloseUpstream(s);
    Detach(s);
    pool_.Put(&s->tx_up);
    pool_.Get(&s->tx_cl);
    s->tx_cl.Clear();
    Inc(counters_.errors);
    char body[768];
    std::string_view reason = Reason(status);
    int blen = std::snprintf(
        body, sizeof body,
        "<!DOCTYPE html>\n<html><head><title>%d %.*s</title></head>\n<body><h1>%d %.*s</h1>\n"
        "<p>%.*s</p>\n<hr><p>HybridCluster proxy</p></body></html>\n",
        status, static_cast<int>(reason.size()), reason.data(), status,
        static_cast<int>(reason.size()), reason.data(), static_cast<int>(detail.size()),
        detail.data());
    blen = std::clamp(blen, 0, static_cast<int>(sizeof body) - 1);
    Writer w(s->tx_cl);
    w << "HTTP/1.1 " << static_cast<uint64_t>(status) << " " << reason
      << "\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\n"
         "Content-Length: "
      << static_cast<uint64_t>(blen) << "\r\n";
    if (status == 503) w << "Retry-After: " << static_cast<uint64_t>(kRetryAfterS) << "\r\n";
    if (!keep) w << "Connection: close\r\n";
    w << "\r\n" << std::string_view(body, static_cast<size_t>(blen));
    s->reply_keep = keep;
    SetPhase(s, Phase::kReply);
    Arm(s, kBody);
  }

  Step StepReply(Session* s) {
    if (!s->tx_cl.empty()) {
      ssize_t n = WriteFrom(s->client.get(), &s->c_wr, s->tx_cl.data(), s->tx_cl.size());
      if (n == kError) return CloseSession(s), Step::kGone;
      if (n == kAgain) return Step::kStalled;
      s->tx_cl.Consume(static_cast<size_t>(n));
      if (!s->tx_cl.empty()) return Step::kProgress;
    }
    pool_.Put(&s->tx_cl);
    if (s->reply_keep) return NextRequest(s);
    return StartLinger(s);
  }

  Step StartLinger(Session* s) {
    CloseUpstream(s);
    ReleaseBuffers(s);
    (void)::shutdown(s->client.get(), SHUT_WR);
    SetPhase(s, Phase::kLinger);
    Arm(s, kLinger);
    return Step::kProgress;
  }

  Step StepLinger(Session* s) {
    for (int i = 0; i < 16 && s->c_rd; ++i) {
      ssize_t r = ::recv(s->client.get(), linger_buf_.get(), kMinBufferSize, 0);
      if (r > 0) continue;
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        s->c_rd = false;
        return Step::kStalled;
      }
      return CloseSession(s), Step::kGone;  // EOF or error
    }
    return s->c_rd ? Step::kProgress : Step::kStalled;
  }

  // Back to reading a head after a complete exchange; pipelined bytes may
  // already be in cin.
  Step NextRequest(Session* s) {
    SetPhase(s, Phase::kReadHead);
    s->first_request = false;
    s->parsed_size = SIZE_MAX;
    s->resp_head_done = false;
    s->sent_1xx = false;
    s->retried = false;
    s->close_after = false;
    if (s->cin.empty()) {
      pool_.Put(&s->cin);
      Arm(s, kIdle);
    } else {
      Arm(s, kHeader);
    }
    return Step::kProgress;
  }

  Step StepReadHead(Session* s) {
    bool fresh = false;
    if (s->c_rd) {
      pool_.Get(&s->cin);
      const bool was_empty = s->cin.empty();
      ssize_t r = ReadInto(s->client.get(), &s->c_rd, s->cin);
      if (r == kEof || r == kError) return CloseSession(s), Step::kGone;
      if (r > 0) {
        fresh = true;
        if (was_empty && s->tlist == kIdle) Arm(s, kHeader);
      }
    }
    if (s->cin.empty()) {
      pool_.Put(&s->cin);
      return Step::kStalled;
    }
    if (!fresh && s->parsed_size == s->cin.size()) return Step::kStalled;
    ParseResult pr = ParseRequestHead(s->cin.view(), limits_, &head_);
    if (pr == ParseResult::kIncomplete) {
      s->parsed_size = s->cin.size();
      return fresh ? Step::kProgress : Step::kStalled;
    }
    if (pr == ParseResult::kError) {
      const char* what = head_.error;
      char detail[160];
      std::snprintf(detail, sizeof detail, "The request could not be processed: %s.", what);
      Reply(s, head_.error_status, detail, false);
      return Step::kProgress;
    }
    s->started = now_;
    return Dispatch(s);
  }

  AppCounters* CountersFor(const std::string& app) {
    auto it = apps_.find(app);
    if (it != apps_.end()) return it->second.get();
    std::lock_guard<std::mutex> lock(apps_mu_);
    return apps_.emplace(app, std::make_unique<AppCounters>()).first->second.get();
  }

  void Attach(Session* s, AppCounters* c) {
    if (s->app == c) return;
    Detach(s);
    s->app = c;
    c->open.fetch_add(1, std::memory_order_relaxed);
  }

  // head_ holds the parsed head at the front of s->cin.
  Step Dispatch(Session* s) {
    const Route* route = routes_ == nullptr ? nullptr : routes_->Find(head_.host);
    if (route == nullptr) {
      char detail[320];
      std::string_view host = SafeForHtml(head_.host);
      std::snprintf(detail, sizeof detail, "No app is served at %s%.*s%s.",
                    host.empty() ? "this address" : "<b>", static_cast<int>(host.size()),
                    host.data(), host.empty() ? "" : "</b>");
      bool keep = head_.KeepAlive() && head_.framing == Framing::kNone;
      if (keep) s->cin.Consume(head_.head_size);
      Reply(s, 404, detail, keep);
      return Step::kProgress;
    }
    if (EqualsIgnoreCase(head_.method, "CONNECT")) {
      Reply(s, 405, "CONNECT is not supported by this proxy.", false);
      return Step::kProgress;
    }
    Attach(s, CountersFor(route->app));
    if (sh_.holds.any()) {
      switch (sh_.holds.Admit(route->app, opts_.hold_max)) {
        case Holds::Verdict::kPass: break;
        case Holds::Verdict::kFull:
          Reply(s, 503, "The app is moving to another server; try again in a moment.", false);
          return Step::kProgress;
        case Holds::Verdict::kQueued:
          SetPhase(s, Phase::kHeld);
          s->held_app = route->app;
          Arm(s, kHold);
          return Step::kStalled;
      }
    }
    if (!TakePlace(s, *route)) return Step::kStalled;
    return Forward(s, *route);
  }

  Step Forward(Session* s, const Route& route) {
    pool_.Get(&s->tx_up);
    s->tx_up.Clear();
    s->tx_up_sent = 0;
    s->client_v10 = head_.version_minor == 0;
    s->keep_alive = head_.KeepAlive();
    s->is_head = EqualsIgnoreCase(head_.method, "HEAD");
    s->upgrade = head_.conn_upgrade && !head_.upgrade.empty();
    if (!RewriteRequest(s)) {
      Reply(s, 431, "The request head is too large to forward.", false);
      return Step::kProgress;
    }
    s->req_framing = head_.framing;
    s->req_left = head_.content_length;
    s->req_chunks.Reset();
    s->req_ready = 0;
    s->req_scanned = head_.framing == Framing::kNone;
    Inc(s->app->bytes_in, head_.head_size);
    s->cin.Consume(head_.head_size);
    s->resp_head_done = false;
    s->sent_1xx = false;
    s->retried = false;
    std::memcpy(&s->backend.addr, &route.addr, route.addr_len);
    s->backend.len = route.addr_len;
    s->hop = route.hop;
    if (s->hop) s->held_app = route.app;
    return Connect(s, true);
  }

  // The backend could not be reached, or failed before answering. A request
  // to another node that it can send again (no body, nothing answered yet)
  // waits and goes again with the routes current then, for up to the hold
  // timeout: while a node dies and its apps fail over (its lease runs out
  // first, seconds), clients wait instead of failing.
  Step BackendDown(Session* s, const char* why) {
    if (s->hop && s->req_framing == Framing::kNone && !s->sent_1xx && s->tx_up.has() &&
        !s->held_app.empty() && now_ - s->started < timers_[kHold].timeout) {
      CloseUpstream(s);
      SetPhase(s, Phase::kRetry);
      Arm(s, kRetry);
      return Step::kStalled;
    }
    if (opts_.close_when_backend_down) return CloseSession(s), Step::kGone;
    Reply(s, 502, why, false);
    return Step::kProgress;
  }

  // kRetry's timer: the same request, to wherever the app is routed now.
  Step Retry(Session* s) {
    const Route* route = routes_ == nullptr ? nullptr : routes_->FindApp(s->held_app);
    const bool in_time = now_ - s->started < timers_[kHold].timeout;
    // No route: its node's lease expired and no replica is promoted yet.
    // Held: it starts elsewhere. Either way, look again.
    if (in_time && (route == nullptr || sh_.holds.Held(route->app))) {
      Arm(s, kRetry);
      return Step::kStalled;
    }
    if (route == nullptr) {
      SetPhase(s, Phase::kReadHead);
      Reply(s, 502, "The app's server did not answer, and no other server took it over in time.",
            false);
      return Step::kProgress;
    }
    std::memcpy(&s->backend.addr, &route->addr, route->addr_len);
    s->backend.len = route->addr_len;
    s->hop = route->hop;
    s->tx_up_sent = 0;
    s->retried = false;
    SetPhase(s, Phase::kReadHead);
    return Connect(s, false);
  }

  bool RewriteRequest(Session* s) {
    const HttpHead& h = head_;
    const bool custom = HasCustomConnectionTokens(h);
    Writer w(s->tx_up);
    w << h.method << " " << h.target << (s->client_v10 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n");
    bool had_xff = false;
    for (size_t i = 0; i < h.num_headers; ++i) {
      std::string_view name = h.headers[i].name;
      if (DropHeader(h, name, custom, s->upgrade)) continue;
      if (name.size() >= 15 && (name[0] == 'x' || name[0] == 'X')) {
        if (EqualsIgnoreCase(name, "x-forwarded-for")) {
          had_xff = true;
          continue;
        }
        if (EqualsIgnoreCase(name, "x-forwarded-proto") ||
            EqualsIgnoreCase(name, "x-forwarded-host")) {
          continue;
        }
      }
      w << name << ": " << h.headers[i].value << "\r\n";
    }
    w << "X-Forwarded-For: ";
    if (had_xff) {
      for (size_t i = 0; i < h.num_headers; ++i) {
        if (EqualsIgnoreCase(h.headers[i].name, "x-forwarded-for")) {
          w << h.headers[i].value << ", ";
        }
      }
    }
    w << std::string_view(s->peer)
      << (s->tls ? "\r\nX-Forwarded-Proto: https\r\n" : "\r\nX-Forwarded-Proto: http\r\n");
    if (!h.host.empty()) w << "X-Forwarded-Host: " << h.host << "\r\n";
    if (s->upgrade) {
      w << "Connection: upgrade\r\n";
    } else if (s->client_v10) {
      w << "Connection: keep-alive\r\n";
    }
    w << "\r\n";
    return w.ok();
  }

  Step Connect(Session* s, bool allow_pool) {
    s->reused = false;
    if (allow_pool && !s->upgrade) {
      auto it = pools_.find(s->backend);
      while (it != pools_.end() && !it->second.empty()) {
        PooledConn c = std::move(it->second.back());
        it->second.pop_back();
        if (now_ - c.since > kPoolIdle) {
          endpoints_.erase(c.id);
          continue;
        }
        s->upstream = std::move(c.fd);
        s->uid = c.id;
        endpoints_[c.id] = Endpoint{s, Side::kUpstream, {}};
        s->reused = true;
        s->u_rd = false;
        s->u_wr = true;
        s->u_eof = false;
        SetPhase(s, Phase::kProxying);
        Arm(s, kBody);
        return Step::kProgress;
      }
    }
    UniqueFd fd(::socket(s->backend.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
      Reply(s, 502, "The proxy could not open a connection to the app's backend.", false);
      return Step::kProgress;
    }
    int one = 1;
    (void)::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = ::connect(fd.get(), reinterpret_cast<const struct sockaddr*>(&s->backend.addr),
                       s->backend.len);
    if (rc != 0 && errno != EINPROGRESS)
      return BackendDown(s, "The app's backend refused the connection.");
    uint64_t id = next_id_++;
    if (!Watch(fd.get(), id, kConnEvents).ok()) {
      Reply(s, 502, "The proxy could not watch the backend connection.", false);
      return Step::kProgress;
    }
    s->upstream = std::move(fd);
    s->uid = id;
    endpoints_[id] = Endpoint{s, Side::kUpstream, {}};
    s->u_rd = s->u_wr = s->u_eof = false;
    SetPhase(s, rc == 0 ? Phase::kProxying : Phase::kConnecting);
    Arm(s, rc == 0 ? kBody : kConnect);
    return Step::kProgress;
  }

  Step StepConnecting(Session* s) {
    if (!s->u_wr) return Step::kStalled;
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(s->upstream.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) {
      return BackendDown(s, err == ECONNREFUSED ? "The app's backend refused the connection."
                                                : "The app's backend could not be reached.");
    }
    SetPhase(s, Phase::kProxying);
    Arm(s, kBody);
    return Step::kProgress;
  }

  // The backend failed before its response head was complete.
  Step UpstreamFailed(Session* s) {
    // A pooled connection the backend closed just as it was reused: a
    // request without a body is safe to send again on a new connection.
    if (s->reused && !s->retried && s->req_framing == Framing::kNone && !s->sent_1xx &&
        s->tx_up.has()) {
      CloseUpstream(s);
      s->retried = true;
      s->tx_up_sent = 0;
      return Connect(s, false);
    }
    if (s->sent_1xx) return CloseSession(s), Step::kGone;
    return BackendDown(s, "The app's backend closed the connection without an answer.");
  }

  Step StepProxy(Session* s) {
    bool progress = false;
    // Request head and body to the backend, together where both are ready
    // (one sendmsg for a small POST).
    const size_t head_left = s->tx_up.has() ? s->tx_up.size() - s->tx_up_sent : 0;
    if (!s->req_scanned && s->req_ready == 0 && !s->cin.empty()) {
      bool done = false;
      if (!ScanBody(s->req_framing, s->cin.view(), &s->req_left, &s->req_chunks, &s->req_ready,
                    &done)) {
        LogDebug("proxy: broken chunked request body from %s", s->peer);
        return CloseSession(s), Step::kGone;
      }
      s->req_scanned = done;
    }
    if (head_left > 0 || s->req_ready > 0) {
      ssize_t n = WriteTwo(s->upstream.get(), &s->u_wr, s->tx_up.data() + s->tx_up_sent, head_left,
                           s->cin.data(), s->req_ready);
      if (n == kError) {
        if (head_left > 0) return UpstreamFailed(s);
        return CloseSession(s), Step::kGone;
      }
      if (n > 0) {
        size_t from_head = std::min(static_cast<size_t>(n), head_left);
        size_t from_body = static_cast<size_t>(n) - from_head;
        s->tx_up_sent += from_head;
        s->cin.Consume(from_body);
        s->req_ready -= from_body;
        Inc(s->app->bytes_in, from_body);
        progress = true;
      }
    }
    const bool head_sent = !s->tx_up.has() || s->tx_up_sent == s->tx_up.size();
    if (head_sent && s->req_ready == 0 && !s->req_scanned && s->cin.empty() &&
        s->req_framing == Framing::kLength && (s->req_pipe || s->req_left >= kSpliceMin) &&
        (s->req_pipe || (s->req_pipe = pipes_.Get()))) {
      uint64_t moved = 0;
      SpliceResult r = SpliceStep(s->client.get(), &s->c_rd, s->upstream.get(), &s->u_wr,
                                  &s->req_left, *s->req_pipe, &moved, &progress);
      if (r != SpliceResult::kOk) return CloseSession(s), Step::kGone;
      Inc(s->app->bytes_in, moved);
      if (s->req_left == 0 && s->req_pipe->in_pipe == 0) {
        s->req_scanned = true;
        pipes_.Put(&s->req_pipe);
      }
    } else if (head_sent && s->req_ready == 0 && !s->req_scanned) {
      pool_.Get(&s->cin);
      ssize_t r = ReadInto(s->client.get(), &s->c_rd, s->cin);
      if (r == kEof || r == kError) return CloseSession(s), Step::kGone;
      progress |= r > 0;
    }

    // Response from the backend.
    if (!s->resp_head_done) {
      pool_.Get(&s->uin);
      ssize_t r = ReadInto(s->upstream.get(), &s->u_rd, s->uin);
      if (r == kError) return UpstreamFailed(s);
      if (r == kEof) s->u_eof = true;
      if (r > 0) progress = true;
      while (!s->uin.empty() && !s->resp_head_done) {
        Step st = Step::kProgress;
        if (!OnResponseBytes(s, &st)) return st;
        if (st != Step::kProgress) break;
        progress = true;
      }
      if (!s->resp_head_done && s->u_eof) return UpstreamFailed(s);
    }

    // Response heads (1xx and final) and body to the client, together
    // where both are ready.
    if (s->resp_head_done && s->resp_ready == 0 && !s->resp_scanned && !s->uin.empty()) {
      bool done = false;
      if (!ScanBody(s->resp_framing, s->uin.view(), &s->resp_left, &s->resp_chunks, &s->resp_ready,
                    &done)) {
        LogDebug("proxy: broken chunked response body from the backend of %s", s->peer);
        return CloseSession(s), Step::kGone;
      }
      s->resp_scanned = done;
    }
    const size_t body_ready = s->resp_head_done ? s->resp_ready : 0;
    if (!s->tx_cl.empty() || body_ready > 0) {
      const size_t head_left = s->tx_cl.size();
      ssize_t n = WriteTwo(s->client.get(), &s->c_wr, s->tx_cl.data(), head_left, s->uin.data(),
                           body_ready);
      if (n == kError) return CloseSession(s), Step::kGone;
      if (n > 0) {
        size_t from_head = std::min(static_cast<size_t>(n), head_left);
        size_t from_body = static_cast<size_t>(n) - from_head;
        s->tx_cl.Consume(from_head);
        s->uin.Consume(from_body);
        s->resp_ready -= from_body;
        if (s->app != nullptr) Inc(s->app->bytes_out, static_cast<uint64_t>(n));
        progress = true;
      }
    }
    if (s->resp_head_done && s->tx_cl.empty()) {
      if (s->resp_ready == 0 && !s->resp_scanned && s->uin.empty() &&
          s->resp_framing == Framing::kLength && (s->resp_pipe || s->resp_left >= kSpliceMin) &&
          (s->resp_pipe || (s->resp_pipe = pipes_.Get()))) {
        uint64_t moved = 0;
        SpliceResult r = SpliceStep(s->upstream.get(), &s->u_rd, s->client.get(), &s->c_wr,
                                    &s->resp_left, *s->resp_pipe, &moved, &progress);
        if (r != SpliceResult::kOk) return CloseSession(s), Step::kGone;
        if (s->app != nullptr) Inc(s->app->bytes_out, moved);
        if (s->resp_left == 0 && s->resp_pipe->in_pipe == 0) {
          s->resp_scanned = true;
          pipes_.Put(&s->resp_pipe);
        }
      } else if (s->resp_ready == 0 && !s->resp_scanned && s->uin.empty()) {
        ssize_t r = ReadInto(s->upstream.get(), &s->u_rd, s->uin);
        if (r == kError) return CloseSession(s), Step::kGone;
        if (r == kEof) {
          s->u_eof = true;
          // Only a body delimited by the close ends well here.
          if (s->resp_framing != Framing::kUntilClose) return CloseSession(s), Step::kGone;
          s->resp_scanned = true;
        }
        progress |= r != 0;
      }
      if (s->resp_scanned && s->resp_ready == 0) return FinishRequest(s);
    }
    if (progress) Arm(s, kBody);
    return progress ? Step::kProgress : Step::kStalled;
  }

  // Parses a response head at the front of uin. False when the session
  // changed phase or ended (*st says how); else *st is kProgress after a
  // head, kStalled when more bytes (or room in tx_cl) are needed.
  bool OnResponseBytes(Session* s, Step* st) {
    ParseResult pr = ParseResponseHead(s->uin.view(), s->is_head ? "HEAD" : "GET",
                                       HeadLimits{pool_.size(), kMaxHeaders}, &rhead_);
    if (pr == ParseResult::kIncomplete) {
      *st = Step::kStalled;
      return true;
    }
    if (pr == ParseResult::kError) {
      LogDebug("proxy: bad response head from a backend: %s", rhead_.error);
      if (s->sent_1xx) {
        *st = (CloseSession(s), Step::kGone);
        return false;
      }
      Reply(s, 502, "The app's backend sent an invalid response.", false);
      *st = Step::kProgress;
      return false;
    }
    pool_.Get(&s->tx_cl);
    const HttpHead& h = rhead_;
    if (h.status == 101) {
      if (!s->upgrade) {
        Reply(s, 502, "The app's backend switched protocols unasked.", false);
        *st = Step::kProgress;
        return false;
      }
      if (!s->tx_cl.Append(s->uin.view().substr(0, h.head_size))) {
        *st = Step::kStalled;
        return true;
      }
      s->uin.Consume(h.head_size);
      pool_.Put(&s->tx_up);
      SetPhase(s, Phase::kTunnel);
      s->resp_head_done = true;
      Arm(s, kIdle);
      *st = Step::kProgress;
      return false;
    }
    if (h.status < 200) {
      // 100 Continue and friends go to HTTP/1.1 clients as they are.
      if (!s->client_v10) {
        if (!s->tx_cl.Append(s->uin.view().substr(0, h.head_size))) {
          *st = Step::kStalled;
          return true;
        }
        s->sent_1xx = true;
      }
      s->uin.Consume(h.head_size);
      *st = Step::kProgress;
      return true;
    }
    const bool req_done = s->req_scanned && s->req_ready == 0;
    s->close_after = !s->keep_alive || h.framing == Framing::kUntilClose || !req_done;
    size_t before = s->tx_cl.size();
    if (!RewriteResponse(s, h)) {
      if (before > 0) {
        // Room is taken by a 1xx still being sent: try again later.
        *st = Step::kStalled;
        return true;
      }
      Reply(s, 502, "The app's backend sent a response head too large to forward.", false);
      *st = Step::kProgress;
      return false;
    }
    s->uin.Consume(h.head_size);
    s->resp_head_done = true;
    s->resp_framing = h.framing;
    s->resp_left = h.content_length;
    s->resp_chunks.Reset();
    s->resp_ready = 0;
    s->resp_scanned = h.framing == Framing::kNone;
    s->up_keep_alive = h.KeepAlive() && h.framing != Framing::kUntilClose;
    pool_.Put(&s->tx_up);
    *st = Step::kProgress;
    return true;
  }

  // Appends the rewritten response head to tx_cl; false (tx_cl unchanged)
  // if it does not fit.
  bool RewriteResponse(Session* s, const HttpHead& h) {
    Buffer& b = s->tx_cl;
    const size_t mark = b.size();
    const bool custom = HasCustomConnectionTokens(h);
    Writer w(b);
    w << "HTTP/1.1 " << static_cast<uint64_t>(h.status) << " " << h.reason << "\r\n";
    for (size_t i = 0; i < h.num_headers; ++i) {
      std::string_view name = h.headers[i].name;
      if (DropHeader(h, name, custom, false)) continue;
      w << name << ": " << h.headers[i].value << "\r\n";
    }
    if (s->close_after) {
      w << "Connection: close\r\n";
    } else if (s->client_v10) {
      w << "Connection: keep-alive\r\n";
    }
    w << "\r\n";
    if (w.ok()) return true;
    b.Truncate(mark);  // drop the partial head
    return false;
  }

  Step FinishRequest(Session* s) {
    if (s->app != nullptr) {
      Inc(s->app->requests);
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(now_ - s->started).count();
      auto ms = us / 1000;
      Inc(s->app->latency_us, static_cast<uint64_t>(us));
      size_t bucket = 0;
      while (bucket < kLatencyBoundsMs.size() && ms > kLatencyBoundsMs[bucket]) ++bucket;
      Inc(s->app->latency[bucket]);
    }
    const bool req_done = s->req_scanned && s->req_ready == 0;
    if (s->up_keep_alive && req_done && s->uin.empty() && !s->u_eof && s->uid != 0) {
      ToPool(s);
    } else {
      CloseUpstream(s);
    }
    pool_.Put(&s->tx_up);
    pool_.Put(&s->tx_cl);
    Detach(s);
    if (s->close_after || !req_done || s->c_eof) return StartLinger(s);
    return NextRequest(s);
  }

  void ToPool(Session* s) {
    std::vector<PooledConn>& v = pools_[s->backend];
    if (v.size() >= kMaxPooledPerBackend) return CloseUpstream(s);
    endpoints_[s->uid] = Endpoint{nullptr, Side::kPooled, s->backend};
    v.push_back(PooledConn{std::move(s->upstream), s->uid, now_});
    s->uid = 0;
    s->u_rd = s->u_wr = s->u_eof = false;
    pool_.Put(&s->uin);
  }

  void ClosePooled(uint64_t id, BackendAddr at) {
    endpoints_.erase(id);
    auto it = pools_.find(at);
    if (it == pools_.end()) return;
    auto& v = it->second;
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i].id == id) {
        v.erase(v.begin() + static_cast<ptrdiff_t>(i));
        break;
      }
    }
    if (v.empty()) pools_.erase(it);
  }

  void SweepPool() {
    for (auto it = pools_.begin(); it != pools_.end();) {
      auto& v = it->second;
      size_t kept = 0;
      for (size_t i = 0; i < v.size(); ++i) {
        if (now_ - v[i].since > kPoolIdle) {
          endpoints_.erase(v[i].id);
        } else {
          v[kept++] = std::move(v[i]);
        }
      }
      v.resize(kept);
      it = v.empty() ? pools_.erase(it) : std::next(it);
    }
  }

  Step StepTunnel(Session* s) {
    bool progress = false;
    // Client to backend (what followed the request head first).
    if (!s->cin.empty()) {
      ssize_t n = WriteFrom(s->upstream.get(), &s->u_wr, s->cin.data(), s->cin.size());
      if (n == kError) return CloseSession(s), Step::kGone;
      if (n > 0) {
        s->cin.Consume(static_cast<size_t>(n));
        if (s->app != nullptr) Inc(s->app->bytes_in, static_cast<uint64_t>(n));
        progress = true;
      }
    }
    if (s->cin.empty() && !s->c_eof && s->c_rd) {
      pool_.Get(&s->cin);
      ssize_t r = ReadInto(s->client.get(), &s->c_rd, s->cin);
      if (r == kError) return CloseSession(s), Step::kGone;
      if (r == kEof) {
        s->c_eof = true;
        (void)::shutdown(s->upstream.get(), SHUT_WR);
      }
      progress |= r != 0;
    }
    // Backend to client: the 101 head, then tunnel data.
    Buffer& out = !s->tx_cl.empty() ? s->tx_cl : s->uin;
    if (!out.empty()) {
      ssize_t n = WriteFrom(s->client.get(), &s->c_wr, out.data(), out.size());
      if (n == kError) return CloseSession(s), Step::kGone;
      if (n > 0) {
        out.Consume(static_cast<size_t>(n));
        if (s->app != nullptr) Inc(s->app->bytes_out, static_cast<uint64_t>(n));
        progress = true;
      }
    }
    if (s->uin.empty() && s->tx_cl.empty() && !s->u_eof && s->u_rd) {
      pool_.Get(&s->uin);
      ssize_t r = ReadInto(s->upstream.get(), &s->u_rd, s->uin);
      if (r == kError) return CloseSession(s), Step::kGone;
      if (r == kEof) {
        s->u_eof = true;
        (void)::shutdown(s->client.get(), SHUT_WR);
      }
      progress |= r != 0;
    }
    if (s->c_eof && s->u_eof && s->cin.empty() && s->uin.empty() && s->tx_cl.empty()) {
      return CloseSession(s), Step::kGone;
    }
    if (progress) Arm(s, kIdle);
    return progress ? Step::kProgress : Step::kStalled;
  }

  Shared sh_;
  const ProxyOptions& opts_;
  std::vector<UniqueFd> listeners_;
  BufferPool pool_;
  PipePool pipes_;
  const HeadLimits limits_;
  std::unique_ptr<char[]> linger_buf_;
  UniqueFd epoll_;
  UniqueFd wake_;
  UniqueFd spare_;
  Clock::time_point now_ = Clock::now();
  std::shared_ptr<const RouteTable> routes_;
  uint64_t routes_seen_ = 0;
  uint64_t next_id_ = kFirstConnId;
  std::mutex inbox_mu_;
  std::vector<Adopted> inbox_;                                       // GUARDED_BY(inbox_mu_)
  std::unordered_map<uint64_t, std::unique_ptr<Session>> sessions_;  // by cid
  std::unordered_map<uint64_t, Endpoint> endpoints_;                 // by epoll id
  std::unordered_map<BackendAddr, std::vector<PooledConn>, BackendAddrHash> pools_;
  std::array<Timers, kLists> timers_;
  std::vector<uint64_t> ready_;
  std::unordered_map<BackendAddr, BackendSlots, BackendAddrHash> slots_;
  std::vector<uint64_t> unqueued_;  // queued sessions given a place
  HttpHead head_;                   // scratch: the request head being dispatched
  HttpHead rhead_;                  // scratch: a response head
  mutable std::mutex apps_mu_;
  // Inserted under apps_mu_ by this worker only, so the worker reads it
  // without the lock.
  std::unordered_map<std::string, std::unique_ptr<AppCounters>, StrHash, std::equal_to<>> apps_;
  WorkerCounters counters_;
  LogThrottle warn_accept_, warn_full_, warn_epoll_;
};

}  // namespace

struct HttpProxy::Impl {
  explicit Impl(ProxyOptions o) : opts(std::move(o)) {}

  const ProxyOptions opts;
  RoutesSlot routes;
  std::atomic<int64_t> open_connections{0};
  EngineCore<Worker, ProxyStats> core;

  Shared shared(int workers) {
    return Shared{opts, workers, routes, core.holds, open_connections, core.stopping};
  }
};

HttpProxy::HttpProxy(ProxyOptions opts) : impl_(std::make_unique<Impl>(std::move(opts))) {}

HttpProxy::~HttpProxy() {
  Stop();
}

Status HttpProxy::Start(std::shared_ptr<const RouteTable> routes) {
  if (routes == nullptr) return InvalidArgument("proxy: HttpProxy::Start needs a route table");
  const ProxyOptions& opts = impl_->opts;
  std::lock_guard<std::mutex> lock(impl_->core.mu);
  if (impl_->core.running()) return Conflict("proxy: already started; Stop() it first");
  const int workers = WorkerCount(opts.workers);
  // Every socket is bound before any thread starts.
  std::vector<std::vector<UniqueFd>> per_worker;
  std::vector<net::HostPort> bound;
  HC_RETURN_IF_ERROR(BindListeners("proxy", opts.listen, workers, &per_worker, &bound));
  impl_->routes.Set(std::move(routes));
  std::vector<std::unique_ptr<Worker>> ws;
  for (auto& fds : per_worker)
    ws.push_back(std::make_unique<Worker>(impl_->shared(workers), std::move(fds)));
  for (const net::HostPort& at : bound) {
    LogInfo("proxy: serving HTTP on %s (%d workers)", at.ToString().c_str(), workers);
  }
  return impl_->core.Launch(std::move(ws), std::move(bound), "hc-proxy");
}

void HttpProxy::Stop() {
  std::lock_guard<std::mutex> lock(impl_->core.mu);
  impl_->core.Stop();
}

void HttpProxy::SetRoutes(std::shared_ptr<const RouteTable> routes) {
  HC_CHECK(routes != nullptr, "proxy: SetRoutes(nullptr)");
  impl_->routes.Set(std::move(routes));
}

void HttpProxy::Adopt(UniqueFd fd, std::string_view peer, bool tls) {
  std::lock_guard<std::mutex> lock(impl_->core.mu);
  Worker* w = impl_->core.Next();
  if (w == nullptr) return;
  (void)::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
  w->Give(std::move(fd), peer, tls);
}

void HttpProxy::Hold(const std::string& app) {
  impl_->core.holds.Hold(app);
}

void HttpProxy::Release(const std::string& app) {
  impl_->core.Release(app);
}

int64_t HttpProxy::InFlight(const std::string& app) const {
  ProxyStats s = impl_->core.Collect();
  auto it = s.apps.find(app);
  if (it == s.apps.end()) return 0;
  return it->second.at_backend;
}

std::vector<net::HostPort> HttpProxy::bound() const {
  return impl_->core.bound();
}

ProxyStats HttpProxy::stats() const {
  ProxyStats s = impl_->core.Collect();
  s.connections_open = impl_->open_connections.load(std::memory_order_relaxed);
  return s;
}

}  // namespace hc::proxy
