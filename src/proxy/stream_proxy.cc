#include "proxy/stream_proxy.h"

#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <set>
#include <thread>

#include "common/log.h"
#include "common/shared_slot.h"
#include "proxy/engine.h"
#include "proxy/mail_login.h"
#include "proxy/pg_startup.h"
#include "proxy/tls_hello.h"

namespace hc::proxy {

const char* StreamProtocolName(StreamProtocol p) {
  switch (p) {
    case StreamProtocol::kTcp: return "tcp";
    case StreamProtocol::kPostgres: return "postgres";
    case StreamProtocol::kImap: return "imap";
    case StreamProtocol::kPop3: return "pop3";
    case StreamProtocol::kTls: return "tls";
    case StreamProtocol::kHop: return "hop";
  }
  return "?";
}

std::string HopLine(std::string_view app) {
  return std::string(kHopPrefix) + std::string(app) + "\r\n";
}

// ---- StreamRoutes

Result<std::shared_ptr<const StreamRoutes>> StreamRoutes::Build(
    const std::vector<StreamRouteSpec>& specs) {
  auto t = std::make_shared<StreamRoutes>();
  std::vector<RouteSpec> pg, imap, pop3, tls, local;
  for (const StreamRouteSpec& s : specs) {
    auto one = [&s](const std::vector<std::string>& names) {
      return RouteSpec{s.app, names, s.backend, s.hop};
    };
    if (!s.databases.empty()) pg.push_back(one(s.databases));
    if (!s.imap_domains.empty()) imap.push_back(one(s.imap_domains));
    if (!s.pop3_domains.empty()) pop3.push_back(one(s.pop3_domains));
    if (!s.tls_passthrough.empty()) tls.push_back(one(s.tls_passthrough));
    local.push_back(one({}));
  }
  HC_ASSIGN_OR_RETURN(t->postgres_, RouteTable::Build(pg));
  HC_ASSIGN_OR_RETURN(t->imap_, RouteTable::Build(imap));
  HC_ASSIGN_OR_RETURN(t->pop3_, RouteTable::Build(pop3));
  HC_ASSIGN_OR_RETURN(t->passthrough_, RouteTable::Build(tls));
  HC_ASSIGN_OR_RETURN(auto apps, RouteTable::Build(local));
  for (const StreamRouteSpec& s : specs) {
    const Route* r = apps->FindApp(s.app);
    if (!s.hop) t->local_.emplace(s.app, *r);
    for (uint16_t port : s.tcp_ports) {
      if (port == 0) return InvalidArgument("proxy: app '" + s.app + "': tcp port 0");
      auto [it, inserted] = t->ports_.emplace(port, *r);
      if (!inserted) {
        return AlreadyExists("proxy: tcp port " + std::to_string(port) + " is claimed by apps '" +
                             it->second.app + "' and '" + s.app + "'");
      }
    }
  }
  return std::shared_ptr<const StreamRoutes>(std::move(t));
}

const Route* StreamRoutes::ByPort(uint16_t port) const {
  auto it = ports_.find(port);
  return it == ports_.end() ? nullptr : &it->second;
}

const Route* StreamRoutes::ByMailDomain(StreamProtocol p, std::string_view domain) const {
  return (p == StreamProtocol::kImap ? imap_ : pop3_)->Find(domain);
}

const Route* StreamRoutes::Local(std::string_view app) const {
  auto it = local_.find(app);
  return it == local_.end() ? nullptr : &it->second;
}

std::vector<uint16_t> StreamRoutes::tcp_ports() const {
  std::vector<uint16_t> out;
  for (const auto& [port, r] : ports_) out.push_back(port);
  return out;
}

namespace {

constexpr size_t kBufferSize = size_t{16} << 10;
constexpr int kAcceptsPerWakeup = 64;
constexpr int kDriveRounds = 64;
constexpr size_t kMaxHopLine = 512;
constexpr auto kSweepEvery = std::chrono::milliseconds(100);

using RoutesSlot = SharedSlot<const StreamRoutes>;

struct Counters {
  std::atomic<uint64_t> connections{0};
  std::atomic<int64_t> open{0};
  std::atomic<uint64_t> bytes_in{0};
  std::atomic<uint64_t> bytes_out{0};
  std::atomic<uint64_t> failed{0};
};

struct alignas(64) WorkerCounters {
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> refused{0};
  std::atomic<uint64_t> unrouted{0};
  std::atomic<uint64_t> malformed{0};
};

enum class Phase : uint8_t {
  kSniff,       // reading what routes the connection (or the proxy's own dialogue)
  kHeld,        // routed to a held app
  kConnecting,  // connecting to the backend
  kScript,      // replaying a mail login to the backend
  kRelay,       // bytes both ways
  kClosing,     // sending the proxy's last words, then close
};

// One client connection and its backend. Owned by one worker.
struct Conn {
  uint64_t cid = 0;
  uint64_t bid = 0;
  UniqueFd client;
  UniqueFd backend;
  StreamProtocol proto = StreamProtocol::kTcp;
  Phase phase = Phase::kSniff;
  uint16_t port = 0;      // the listener's port (kTcp)
  Buffer cin;             // client -> backend; sniffed bytes stay and are replayed
  Buffer bin;             // backend -> client
  std::string to_client;  // the proxy's own words, before anything from bin
  size_t to_client_sent = 0;
  std::string to_backend;  // hop line, login replay; before anything from cin
  size_t to_backend_sent = 0;
  bool c_rd = false, c_wr = false, b_rd = false, b_wr = false;
  bool c_eof = false, b_eof = false;
  bool c_shut = false, b_shut = false;  // our write side shut down
  bool reparse = false;                 // kSniff: cin holds bytes not parsed yet
  std::string key;                      // what routes it: database, domain, SNI, app
  Route route;
  std::unique_ptr<mail::LoginSession> mail;
  std::vector<mail::BackendStep> script;
  size_t script_pos = 0;
  Counters* app = nullptr;
  std::string held_app;
  Clock::time_point deadline = Clock::time_point::max();
  char peer[INET6_ADDRSTRLEN] = {};
};

enum class Side : uint8_t { kClient, kBackend };
struct Endpoint {
  Conn* c;
  Side side;
};

struct Listener {
  UniqueFd fd;
  StreamProtocol proto;
  uint16_t port;
};

struct Shared {
  const StreamProxyOptions& opts;
  const StreamProxy::TerminateTls& terminate;
  RoutesSlot& routes;
  Holds& holds;
  std::atomic<int64_t>& open;
  const std::atomic<bool>& stopping;
};

// Messages to a worker from other threads.
struct Msg {
  enum class Kind { kAdopt, kAddListener, kRemovePort } kind;
  UniqueFd fd;
  std::string peer;
  StreamProtocol proto = StreamProtocol::kTcp;
  uint16_t port = 0;
};

class Worker {
 public:
  Worker(Shared sh, std::vector<Listener> listeners) : sh_(sh), opts_(sh.opts), pool_(kBufferSize) {
    for (Listener& l : listeners) listeners_.emplace(next_listener_++, std::move(l));
  }

  ~Worker() {
    for (auto& [id, c] : conns_) {
      if (c->app != nullptr) c->app->open.fetch_sub(1, std::memory_order_relaxed);
      if (c->phase == Phase::kHeld) sh_.holds.Dequeue(c->held_app);
      sh_.open.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  Status Init() {
    epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_.valid()) return ErrnoStatus("stream proxy: epoll_create1", errno);
    wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_.valid()) return ErrnoStatus("stream proxy: eventfd", errno);
    HC_RETURN_IF_ERROR(Watch(wake_.get(), kWakeId, EPOLLIN));
    for (auto& [id, l] : listeners_) HC_RETURN_IF_ERROR(Watch(l.fd.get(), id, EPOLLIN));
    spare_ = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    return Status::Ok();
  }

  void Post(Msg m) {
    {
      std::lock_guard<std::mutex> lock(inbox_mu_);
      inbox_.push_back(std::move(m));
    }
    Wake();
  }

  void Wake() {
    uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
  }

  void Run() {
    std::array<struct epoll_event, 256> events;
    Clock::time_point next_sweep = Clock::now() + kSweepEvery;
    while (!sh_.stopping.load(std::memory_order_relaxed)) {
      // Connections that still had work when Drive's rounds ran out: epoll
      // is edge-triggered and will not report them again, so they go on
      // after this wait (which then does not block).
      int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()),
                           ready_.empty() ? static_cast<int>(kSweepEvery.count()) : 0);
      if (sh_.stopping.load(std::memory_order_relaxed)) break;
      now_ = Clock::now();
      sh_.routes.Refresh(&routes_, &routes_seen_);
      for (int i = 0; i < n; ++i) OnEvent(events[i].data.u64, events[i].events);
      std::vector<uint64_t> again;
      again.swap(ready_);
      for (uint64_t id : again) {
        auto it = conns_.find(id);
        if (it != conns_.end()) Drive(it->second.get());
      }
      if (now_ >= next_sweep) {
        Sweep();
        next_sweep = now_ + kSweepEvery;
      }
    }
  }

  void AddTo(StreamStats* out) const {
    std::lock_guard<std::mutex> lock(apps_mu_);
    for (const auto& [name, c] : apps_) {
      StreamAppStats& a = out->apps[name];
      a.connections += c->connections.load(std::memory_order_relaxed);
      a.open += c->open.load(std::memory_order_relaxed);
      a.bytes_in += c->bytes_in.load(std::memory_order_relaxed);
      a.bytes_out += c->bytes_out.load(std::memory_order_relaxed);
      a.failed += c->failed.load(std::memory_order_relaxed);
    }
    out->accepted += counters_.accepted.load(std::memory_order_relaxed);
    out->refused += counters_.refused.load(std::memory_order_relaxed);
    out->unrouted += counters_.unrouted.load(std::memory_order_relaxed);
    out->malformed += counters_.malformed.load(std::memory_order_relaxed);
  }

 private:
  static constexpr uint64_t kWakeId = 0;
  static constexpr uint64_t kFirstListenerId = 1;
  static constexpr uint64_t kFirstConnId = uint64_t{1} << 32;
  static constexpr uint32_t kConnEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;

  Status Watch(int fd, uint64_t id, uint32_t events) {
    struct epoll_event ev = {};
    ev.events = events;
    ev.data.u64 = id;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      return ErrnoStatus("stream proxy: epoll_ctl", errno);
    }
    return Status::Ok();
  }

  void OnEvent(uint64_t id, uint32_t ev) {
    if (id == kWakeId) return OnWake();
    if (id < kFirstConnId) {
      auto it = listeners_.find(id);
      if (it != listeners_.end()) Accept(it->second);
      return;
    }
    auto it = endpoints_.find(id);
    if (it == endpoints_.end()) return;
    Conn* c = it->second.c;
    const bool rd = (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    const bool wr = (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0;
    if (it->second.side == Side::kClient) {
      c->c_rd |= rd;
      c->c_wr |= wr;
    } else {
      c->b_rd |= rd;
      c->b_wr |= wr;
    }
    Drive(c);
  }

  void OnWake() {
    uint64_t v;
    while (::read(wake_.get(), &v, sizeof v) > 0) {
    }
    std::vector<Msg> msgs;
    {
      std::lock_guard<std::mutex> lock(inbox_mu_);
      msgs.swap(inbox_);
    }
    for (Msg& m : msgs) {
      switch (m.kind) {
        case Msg::Kind::kAdopt: AddConn(std::move(m.fd), m.peer, m.proto, 0); break;
        case Msg::Kind::kAddListener: {
          uint64_t id = next_listener_++;
          if (Watch(m.fd.get(), id, EPOLLIN).ok()) {
            listeners_.emplace(id, Listener{std::move(m.fd), m.proto, m.port});
          }
          break;
        }
        case Msg::Kind::kRemovePort:
          for (auto it = listeners_.begin(); it != listeners_.end();) {
            if (it->second.proto == StreamProtocol::kTcp && it->second.port == m.port) {
              it = listeners_.erase(it);  // closing the fd removes it from epoll
            } else {
              ++it;
            }
          }
          break;
      }
    }
    // Connections of apps released since: route them again. (Most wake-ups
    // are adopted connections; without held ones there is nothing to scan.)
    if (held_conns_ == 0) return;
    std::vector<uint64_t> released;
    for (const auto& [id, c] : conns_) {
      if (c->phase == Phase::kHeld && !sh_.holds.Held(c->held_app)) released.push_back(id);
    }
    for (uint64_t id : released) {
      auto it = conns_.find(id);
      if (it == conns_.end()) continue;
      Conn* c = it->second.get();
      sh_.holds.Dequeue(c->held_app);
      --held_conns_;
      c->held_app.clear();
      c->phase = Phase::kSniff;
      RouteAndConnect(c);
      Drive(c);
    }
  }

  void Accept(const Listener& l) {
    AcceptPending(l.fd.get(), kAcceptsPerWakeup, &spare_, &warn_accept_, "stream proxy",
                  [this, &l](UniqueFd fd, const struct sockaddr_storage& peer) {
                    char ip[INET6_ADDRSTRLEN];
                    PeerAddress(peer, ip, sizeof ip);
                    AddConn(std::move(fd), ip, l.proto, l.port);
                  });
  }

  void AddConn(UniqueFd fd, std::string_view peer, StreamProtocol proto, uint16_t port) {
    if (sh_.open.load(std::memory_order_relaxed) >= opts_.max_connections) {
      Inc(counters_.refused);
      if (warn_full_.Allow()) {
        LogWarn("stream proxy: refusing connections: %d open (max_connections)",
                opts_.max_connections);
      }
      return;
    }
    int one = 1;
    (void)::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto owned = std::make_unique<Conn>();
    Conn* c = owned.get();
    c->cid = next_id_++;
    if (!Watch(fd.get(), c->cid, kConnEvents).ok()) return;
    c->client = std::move(fd);
    c->proto = proto;
    c->port = port;
    peer = peer.substr(0, sizeof c->peer - 1);
    std::memcpy(c->peer, peer.data(), peer.size());
    c->peer[peer.size()] = 0;
    endpoints_[c->cid] = Endpoint{c, Side::kClient};
    conns_.emplace(c->cid, std::move(owned));
    sh_.open.fetch_add(1, std::memory_order_relaxed);
    Inc(counters_.accepted);
    c->deadline = now_ + std::chrono::milliseconds(opts_.handshake_timeout_ms);
    c->c_rd = c->c_wr = true;
    if (proto == StreamProtocol::kImap || proto == StreamProtocol::kPop3) {
      c->mail = std::make_unique<mail::LoginSession>(
          proto == StreamProtocol::kImap ? mail::Protocol::kImap : mail::Protocol::kPop3,
          opts_.server_name);
      c->to_client = c->mail->Greeting();
    } else if (proto == StreamProtocol::kTcp) {
      c->key = std::to_string(port);
      RouteAndConnect(c);
    }
    Drive(c);
  }

  // Closes connections past their deadline.
  void Sweep() {
    std::vector<uint64_t> expired;
    for (const auto& [id, c] : conns_) {
      if (c->deadline <= now_) expired.push_back(id);
    }
    for (uint64_t id : expired) {
      auto it = conns_.find(id);
      if (it == conns_.end()) continue;
      Conn* c = it->second.get();
      switch (c->phase) {
        case Phase::kSniff:
          Inc(counters_.malformed);
          Fail(c, "08P01", "the connection did not say in time what it is for");
          break;
        case Phase::kHeld:
          sh_.holds.Dequeue(c->held_app);
          --held_conns_;
          c->held_app.clear();
          if (c->app != nullptr) Inc(c->app->failed);
          Fail(c, "57P03", "the app is moving to another server; try again in a moment");
          break;
        case Phase::kConnecting:
        case Phase::kScript:
          if (c->app != nullptr) Inc(c->app->failed);
          Fail(c, "08006", "the app did not answer in time");
          break;
        case Phase::kRelay:
        case Phase::kClosing: Close(c); continue;
      }
      Drive(c);
    }
  }

  // ---- the connection's life

  void Drive(Conn* c) {
    const uint64_t id = c->cid;
    for (int round = 0; round < kDriveRounds; ++round) {
      if (!Step(c)) return;
      if (conns_.find(id) == conns_.end()) return;
    }
    // Still busy: continue after the next wait (fairness to the others).
    if (std::find(ready_.begin(), ready_.end(), id) == ready_.end()) ready_.push_back(id);
  }

  // One step; false when nothing more can be done now (or c is gone).
  bool Step(Conn* c) {
    if (!FlushToClient(c)) return false;
    switch (c->phase) {
      case Phase::kSniff: return StepSniff(c);
      case Phase::kHeld: return false;
      case Phase::kConnecting: return StepConnecting(c);
      case Phase::kScript: return StepScript(c);
      case Phase::kRelay: return StepRelay(c);
      case Phase::kClosing:
        if (c->to_client_sent == c->to_client.size()) Close(c);
        return false;
    }
    return false;
  }

  // Sends the proxy's own words; false if c is gone.
  bool FlushToClient(Conn* c) {
    while (c->to_client_sent < c->to_client.size() && c->c_wr) {
      ssize_t n = WriteFrom(c->client.get(), &c->c_wr, c->to_client.data() + c->to_client_sent,
                            c->to_client.size() - c->to_client_sent);
      if (n == kError) return Close(c), false;
      c->to_client_sent += static_cast<size_t>(n);
    }
    if (c->to_client_sent == c->to_client.size() && !c->to_client.empty()) {
      c->to_client.clear();
      c->to_client_sent = 0;
    }
    return true;
  }

  bool StepSniff(Conn* c) {
    if (c->to_client_sent < c->to_client.size()) return false;  // answer first
    pool_.Get(&c->cin);
    ssize_t n = ReadInto(c->client.get(), &c->c_rd, c->cin);
    if (n == kEof || n == kError) {
      Close(c);
      return false;
    }
    // Bytes left over after a message already handled (an SSLRequest and
    // the startup message in one read) are parsed without a new read.
    if (n == 0 && !c->reparse) return false;
    c->reparse = false;
    switch (c->proto) {
      case StreamProtocol::kTcp: return false;
      case StreamProtocol::kPostgres: return SniffPostgres(c);
      case StreamProtocol::kImap:
      case StreamProtocol::kPop3: return SniffMail(c);
      case StreamProtocol::kTls: return SniffTls(c);
      case StreamProtocol::kHop: return SniffHop(c);
    }
    return false;
  }

  bool SniffPostgres(Conn* c) {
    pg::Startup s = pg::ParseStartup(c->cin.view());
    switch (s.kind) {
      case pg::Kind::kNeedMore:
        if (c->cin.Space() == 0) return Malformed(c, "the startup message is too long");
        return true;
      case pg::Kind::kSslRequest:
      case pg::Kind::kGssEncRequest:
        // Encryption is not offered here: the client goes on in plain text
        // (sslmode=prefer) or gives up (require).
        c->cin.Consume(s.length);
        c->to_client += 'N';
        c->reparse = !c->cin.empty();
        return true;
      case pg::Kind::kCancel:
        // A cancel names a backend process, not a database: nothing to route
        // by. PostgreSQL closes without an answer too.
        Close(c);
        return false;
      case pg::Kind::kError: return Malformed(c, s.error);
      case pg::Kind::kStartup:
        c->key = s.database;
        RouteAndConnect(c);
        return true;
    }
    return false;
  }

  bool SniffMail(Conn* c) {
    mail::Step st = c->mail->Feed(c->cin.view());
    c->cin.Clear();
    c->to_client += st.to_client;
    if (st.close) {
      c->phase = Phase::kClosing;
      return true;
    }
    if (st.route) {
      c->key = st.domain;
      c->script = std::move(st.script);
      // Commands pipelined after the login follow the replay.
      if (!st.rest.empty()) (void)c->cin.Append(st.rest);
      RouteAndConnect(c);
    }
    return true;
  }

  bool SniffTls(Conn* c) {
    tls::ClientHello h = tls::ParseClientHello(c->cin.view());
    if (h.status == tls::HelloStatus::kNeedMore) {
      if (c->cin.Space() == 0) return Malformed(c, "the TLS ClientHello is too long");
      return true;
    }
    if (h.status != tls::HelloStatus::kOk) return Malformed(c, h.error);
    if (routes_->BySni(h.sni) != nullptr || !sh_.terminate) {
      c->key = h.sni;
      RouteAndConnect(c);
      return true;
    }
    // Not ours to pass through: the TLS terminator takes the socket over.
    net::HostPort peer{c->peer, 0};
    (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c->client.get(), nullptr);
    UniqueFd fd = std::move(c->client);
    std::string bytes(c->cin.view());
    Close(c);
    sh_.terminate(std::move(fd), std::move(bytes), peer);
    return false;
  }

  bool SniffHop(Conn* c) {
    std::string_view v = c->cin.view();
    size_t eol = v.find("\r\n");
    if (eol == std::string_view::npos) {
      if (v.size() > kMaxHopLine) return Malformed(c, "hop line too long");
      return true;
    }
    std::string_view line = v.substr(0, eol);
    if (line.substr(0, kHopPrefix.size()) != kHopPrefix) return Malformed(c, "not a hop line");
    c->key = std::string(line.substr(kHopPrefix.size()));
    c->cin.Consume(eol + 2);
    RouteAndConnect(c);
    return true;
  }

  bool Malformed(Conn* c, std::string_view why) {
    Inc(counters_.malformed);
    LogDebug("stream proxy: %s from %s: %.*s", StreamProtocolName(c->proto), c->peer,
             static_cast<int>(why.size()), why.data());
    Fail(c, "08P01", why);
    return true;
  }

  const Route* Lookup(const Conn* c) const {
    switch (c->proto) {
      case StreamProtocol::kTcp: return routes_->ByPort(c->port);
      case StreamProtocol::kPostgres: return routes_->ByDatabase(c->key);
      case StreamProtocol::kImap:
      case StreamProtocol::kPop3: return routes_->ByMailDomain(c->proto, c->key);
      case StreamProtocol::kTls: return routes_->BySni(c->key);
      case StreamProtocol::kHop: return routes_->Local(c->key);
    }
    return nullptr;
  }

  // Routes by c->key; queues in a hold, or starts connecting, or fails.
  void RouteAndConnect(Conn* c) {
    const Route* r = Lookup(c);
    if (r == nullptr) {
      Inc(counters_.unrouted);
      LogDebug("stream proxy: %s connection from %s for '%s': no app", StreamProtocolName(c->proto),
               c->peer, c->key.c_str());
      switch (c->proto) {
        case StreamProtocol::kPostgres:
          return Fail(c, "3D000", "database \"" + c->key + "\" is not hosted here");
        case StreamProtocol::kImap:
        case StreamProtocol::kPop3: return Fail(c, "", "no mailbox server for " + c->key + " here");
        default: return Fail(c, "", "");
      }
    }
    if (c->app == nullptr) {
      c->app = CountersFor(r->app);
      c->app->open.fetch_add(1, std::memory_order_relaxed);
    }
    if (sh_.holds.any()) {
      switch (sh_.holds.Admit(r->app, opts_.hold_max)) {
        case Holds::Verdict::kPass: break;
        case Holds::Verdict::kQueued:
          ++held_conns_;
          c->phase = Phase::kHeld;
          c->held_app = r->app;
          c->deadline = now_ + std::chrono::milliseconds(opts_.hold_timeout_ms);
          return;
        case Holds::Verdict::kFull:
          Inc(c->app->failed);
          return Fail(c, "57P03", "the app is moving and too many connections wait for it");
      }
    }
    c->route = *r;
    UniqueFd fd(::socket(r->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return Fail(c, "08006", "the proxy could not open a connection");
    int one = 1;
    (void)::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = ::connect(fd.get(), reinterpret_cast<const struct sockaddr*>(&r->addr), r->addr_len);
    if (rc != 0 && errno != EINPROGRESS) {
      Inc(c->app->failed);
      return Fail(c, "08006", "the app refused the connection");
    }
    c->bid = next_id_++;
    if (!Watch(fd.get(), c->bid, kConnEvents).ok()) {
      return Fail(c, "08006", "the proxy could not watch the connection");
    }
    c->backend = std::move(fd);
    endpoints_[c->bid] = Endpoint{c, Side::kBackend};
    c->phase = Phase::kConnecting;
    c->deadline = now_ + std::chrono::milliseconds(opts_.connect_timeout_ms);
    if (r->hop) c->to_backend = HopLine(r->app);
  }

  bool StepConnecting(Conn* c) {
    if (!c->b_wr && !c->b_rd) return false;
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(c->backend.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err == EINPROGRESS) return false;
    if (err != 0) {
      Inc(c->app->failed);
      Fail(c, "08006", "the app refused the connection");
      return true;
    }
    Inc(c->app->connections);
    if (!c->script.empty()) {
      c->phase = Phase::kScript;
    } else {
      c->phase = Phase::kRelay;
      c->deadline = now_ + std::chrono::milliseconds(opts_.idle_timeout_ms);
    }
    return true;
  }

  // Sends to_backend; false if c is gone. Sets *done when all is sent.
  bool FlushToBackend(Conn* c, bool* done) {
    while (c->to_backend_sent < c->to_backend.size() && c->b_wr) {
      ssize_t n = WriteFrom(c->backend.get(), &c->b_wr, c->to_backend.data() + c->to_backend_sent,
                            c->to_backend.size() - c->to_backend_sent);
      if (n == kError) return Close(c), false;
      c->to_backend_sent += static_cast<size_t>(n);
    }
    *done = c->to_backend_sent == c->to_backend.size();
    if (*done) {
      c->to_backend.clear();
      c->to_backend_sent = 0;
    }
    return true;
  }

  bool StepScript(Conn* c) {
    bool sent = false;
    if (!FlushToBackend(c, &sent)) return false;
    if (!sent) return false;
    if (c->script_pos == c->script.size()) {
      c->phase = Phase::kRelay;
      c->deadline = now_ + std::chrono::milliseconds(opts_.idle_timeout_ms);
      return true;
    }
    const mail::BackendStep& step = c->script[c->script_pos];
    if (step.expect != mail::BackendStep::Expect::kNothing) {
      pool_.Get(&c->bin);
      ssize_t n = ReadInto(c->backend.get(), &c->b_rd, c->bin);
      if (n == kEof || n == kError) {
        Fail(c, "", "the mailbox server closed the connection");
        return true;
      }
      std::string_view v = c->bin.view();
      size_t eol = v.find('\n');
      if (eol == std::string_view::npos) {
        if (c->bin.Space() == 0) Fail(c, "", "the mailbox server sent a line too long");
        return n > 0;
      }
      mail::Protocol p =
          c->proto == StreamProtocol::kImap ? mail::Protocol::kImap : mail::Protocol::kPop3;
      std::string_view line = v.substr(0, eol + 1);
      if (!mail::LoginSession::LineMatches(p, step.expect, line)) {
        LogDebug("stream proxy: %s backend of %s answered %.*s", StreamProtocolName(c->proto),
                 c->route.app.c_str(), static_cast<int>(std::min<size_t>(eol, 200)), v.data());
        Fail(c, "", "the mailbox server did not accept the login");
        return true;
      }
      c->bin.Consume(eol + 1);
    }
    c->to_backend += step.send;
    ++c->script_pos;
    return true;
  }

  bool StepRelay(Conn* c) {
    bool sent = false;
    if (!FlushToBackend(c, &sent)) return false;
    bool progress = false;
    // client -> backend
    if (sent) {
      if (!Pump(c, c->client.get(), &c->c_rd, &c->c_eof, c->cin, c->backend.get(), &c->b_wr,
                &c->b_shut, &c->app->bytes_in, &progress)) {
        return false;
      }
    }
    // backend -> client
    if (!Pump(c, c->backend.get(), &c->b_rd, &c->b_eof, c->bin, c->client.get(), &c->c_wr,
              &c->c_shut, &c->app->bytes_out, &progress)) {
      return false;
    }
    if (c->c_shut && c->b_shut) {
      Close(c);
      return false;
    }
    if (progress) c->deadline = now_ + std::chrono::milliseconds(opts_.idle_timeout_ms);
    if (c->cin.empty()) pool_.Put(&c->cin);
    if (c->bin.empty()) pool_.Put(&c->bin);
    return progress;
  }

  // Moves what src has into dst, through buf; on EOF of src (and buf empty)
  // shuts dst's write side. False if c is gone.
  bool Pump(Conn* c, int src, bool* src_rd, bool* src_eof, Buffer& buf, int dst, bool* dst_wr,
            bool* dst_shut, std::atomic<uint64_t>* bytes, bool* progress) {
    if (!*src_eof && *src_rd) {
      pool_.Get(&buf);
      ssize_t n = ReadInto(src, src_rd, buf);
      if (n == kError) return Close(c), false;
      if (n == kEof) {
        *src_eof = true;
        *progress = true;
      } else if (n > 0) {
        *progress = true;
      }
    }
    if (!buf.empty() && *dst_wr) {
      ssize_t n = WriteFrom(dst, dst_wr, buf.data(), buf.size());
      if (n == kError) return Close(c), false;
      if (n > 0) {
        buf.Consume(static_cast<size_t>(n));
        Inc(*bytes, static_cast<uint64_t>(n));
        *progress = true;
      }
    }
    if (*src_eof && buf.empty() && !*dst_shut) {
      (void)::shutdown(dst, SHUT_WR);
      *dst_shut = true;
      *progress = true;
    }
    return true;
  }

  // Tells the client why (in its protocol), then closes.
  void Fail(Conn* c, std::string_view sqlstate, std::string_view why) {
    if (c->proto == StreamProtocol::kPostgres && !why.empty()) {
      c->to_client += pg::ErrorResponse(sqlstate.empty() ? "08006" : sqlstate, why);
    } else if (c->mail != nullptr && !why.empty()) {
      c->to_client += c->mail->Failure(why);
    }
    if (c->bid != 0) endpoints_.erase(c->bid);
    c->bid = 0;
    c->backend.Reset();
    c->phase = Phase::kClosing;
    c->deadline = now_ + std::chrono::seconds(2);
  }

  void Close(Conn* c) {
    if (c->phase == Phase::kHeld) {
      sh_.holds.Dequeue(c->held_app);
      --held_conns_;
    }
    if (c->app != nullptr) c->app->open.fetch_sub(1, std::memory_order_relaxed);
    pool_.Put(&c->cin);
    pool_.Put(&c->bin);
    endpoints_.erase(c->cid);
    if (c->bid != 0) endpoints_.erase(c->bid);
    sh_.open.fetch_sub(1, std::memory_order_relaxed);
    conns_.erase(c->cid);
  }

  Counters* CountersFor(const std::string& app) {
    auto it = app_cache_.find(app);
    if (it != app_cache_.end()) return it->second;
    std::lock_guard<std::mutex> lock(apps_mu_);
    auto& slot = apps_[app];
    if (slot == nullptr) slot = std::make_unique<Counters>();
    app_cache_.emplace(app, slot.get());
    return slot.get();
  }

  Shared sh_;
  const StreamProxyOptions& opts_;
  BufferPool pool_;
  UniqueFd epoll_;
  UniqueFd wake_;
  UniqueFd spare_;  // given up to accept and drop a connection when out of fds
  std::unordered_map<uint64_t, Listener> listeners_;
  uint64_t next_listener_ = kFirstListenerId;
  uint64_t next_id_ = kFirstConnId;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;  // by cid
  std::vector<uint64_t> ready_;  // cids Drive left with work (see Run)
  size_t held_conns_ = 0;        // of conns_, in kHeld
  std::unordered_map<uint64_t, Endpoint> endpoints_;
  std::shared_ptr<const StreamRoutes> routes_;
  uint64_t routes_seen_ = 0;
  Clock::time_point now_ = Clock::now();
  std::mutex inbox_mu_;
  std::vector<Msg> inbox_;  // GUARDED_BY(inbox_mu_)
  mutable std::mutex apps_mu_;
  std::unordered_map<std::string, std::unique_ptr<Counters>> apps_;  // GUARDED_BY(apps_mu_)
  std::unordered_map<std::string, Counters*> app_cache_;             // worker thread only
  WorkerCounters counters_;
  LogThrottle warn_accept_, warn_full_;
};

}  // namespace

struct StreamProxy::Impl {
  Impl(StreamProxyOptions o, TerminateTls t) : opts(std::move(o)), terminate(std::move(t)) {}

  const StreamProxyOptions opts;
  const TerminateTls terminate;
  RoutesSlot routes;
  std::atomic<int64_t> open{0};
  EngineCore<Worker, StreamStats> core;
  std::set<uint16_t> tcp_open;                 // GUARDED_BY(core.mu)
  std::map<uint16_t, std::string> tcp_errors;  // GUARDED_BY(core.mu)

  // Opens and closes apps' tcp port listeners to match the routes.
  // REQUIRES: core.mu held, running.
  void SyncTcpPorts(const StreamRoutes& r) {
    const auto& workers = core.workers();
    std::set<uint16_t> want;
    for (uint16_t p : r.tcp_ports()) want.insert(p);
    for (auto it = tcp_open.begin(); it != tcp_open.end();) {
      if (want.count(*it) != 0) {
        ++it;
        continue;
      }
      for (auto& w : workers) w->Post(Msg{Msg::Kind::kRemovePort, {}, {}, {}, *it});
      LogInfo("stream proxy: closed tcp port %u", *it);
      it = tcp_open.erase(it);
    }
    for (auto it = tcp_errors.begin(); it != tcp_errors.end();) {
      it = want.count(it->first) == 0 ? tcp_errors.erase(it) : std::next(it);
    }
    for (uint16_t port : want) {
      if (tcp_open.count(port) != 0 || opts.tcp_hosts.empty()) continue;
      std::vector<net::HostPort> at;
      for (const std::string& h : opts.tcp_hosts) at.push_back({h, port});
      std::vector<std::vector<UniqueFd>> per_worker;
      std::vector<net::HostPort> got;
      Status s =
          BindListeners("stream proxy", at, static_cast<int>(workers.size()), &per_worker, &got);
      if (!s.ok()) {
        auto [it, fresh] = tcp_errors.insert_or_assign(port, s.message());
        if (fresh) LogWarn("%s", s.ToString().c_str());
        continue;
      }
      tcp_errors.erase(port);
      for (size_t w = 0; w < workers.size(); ++w) {
        for (UniqueFd& fd : per_worker[w]) {
          workers[w]->Post(
              Msg{Msg::Kind::kAddListener, std::move(fd), {}, StreamProtocol::kTcp, port});
        }
      }
      tcp_open.insert(port);
      LogInfo("stream proxy: tcp port %u open", port);
    }
  }
};

StreamProxy::StreamProxy(StreamProxyOptions opts, TerminateTls terminate)
    : impl_(std::make_unique<Impl>(std::move(opts), std::move(terminate))) {}

StreamProxy::~StreamProxy() {
  Stop();
}

Status StreamProxy::Start(std::shared_ptr<const StreamRoutes> routes) {
  if (routes == nullptr) return InvalidArgument("stream proxy: Start needs routes");
  const StreamProxyOptions& opts = impl_->opts;
  std::lock_guard<std::mutex> lock(impl_->core.mu);
  if (impl_->core.running()) return Conflict("stream proxy: already started");
  const int workers = WorkerCount(opts.workers);
  std::vector<std::vector<Listener>> per_worker(static_cast<size_t>(workers));
  std::vector<net::HostPort> bound;
  for (const auto& [at, proto] : opts.listen) {
    std::vector<std::vector<UniqueFd>> fds;
    std::vector<net::HostPort> got;
    HC_RETURN_IF_ERROR(BindListeners("stream proxy", {at}, workers, &fds, &got));
    for (int w = 0; w < workers; ++w) {
      per_worker[static_cast<size_t>(w)].push_back(
          Listener{std::move(fds[static_cast<size_t>(w)][0]), proto, got[0].port});
    }
    LogInfo("stream proxy: serving %s on %s", StreamProtocolName(proto), got[0].ToString().c_str());
    bound.push_back(got[0]);
  }
  impl_->routes.Set(routes);
  std::vector<std::unique_ptr<Worker>> ws;
  for (auto& ls : per_worker) {
    ws.push_back(
        std::make_unique<Worker>(Shared{opts, impl_->terminate, impl_->routes, impl_->core.holds,
                                        impl_->open, impl_->core.stopping},
                                 std::move(ls)));
  }
  HC_RETURN_IF_ERROR(impl_->core.Launch(std::move(ws), std::move(bound), "hc-stream"));
  impl_->SyncTcpPorts(*routes);
  return Status::Ok();
}

void StreamProxy::Stop() {
  std::lock_guard<std::mutex> lock(impl_->core.mu);
  impl_->core.Stop();
  impl_->tcp_open.clear();
}

void StreamProxy::SetRoutes(std::shared_ptr<const StreamRoutes> routes) {
  HC_CHECK(routes != nullptr, "stream proxy: SetRoutes(nullptr)");
  impl_->routes.Set(routes);
  std::lock_guard<std::mutex> lock(impl_->core.mu);
  if (impl_->core.running()) impl_->SyncTcpPorts(*routes);
}

void StreamProxy::Adopt(UniqueFd fd, std::string_view peer, StreamProtocol protocol) {
  std::lock_guard<std::mutex> lock(impl_->core.mu);
  Worker* w = impl_->core.Next();
  if (w == nullptr) return;
  (void)::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
  w->Post(Msg{Msg::Kind::kAdopt, std::move(fd), std::string(peer), protocol, 0});
}

void StreamProxy::Hold(const std::string& app) {
  impl_->core.holds.Hold(app);
}

void StreamProxy::Release(const std::string& app) {
  impl_->core.Release(app);
}

std::vector<net::HostPort> StreamProxy::bound() const {
  return impl_->core.bound();
}

std::map<uint16_t, std::string> StreamProxy::tcp_port_errors() const {
  std::lock_guard<std::mutex> lock(impl_->core.mu);
  return impl_->tcp_errors;
}

StreamStats StreamProxy::stats() const {
  StreamStats s = impl_->core.Collect();
  s.open = impl_->open.load(std::memory_order_relaxed);
  return s;
}

}  // namespace hc::proxy
