// Building blocks shared by the proxy's epoll engines (HttpProxy,
// StreamProxy): pooled buffers, splice pipes, non-blocking reads and writes,
// listener binding and the hold registry. Internal to src/proxy; every
// object here is owned by one worker thread unless it says otherwise.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/fs.h"
#include "common/log.h"
#include "common/status.h"
#include "net/socket.h"

namespace hc::proxy {

using Clock = std::chrono::steady_clock;

// Free buffers a worker keeps for reuse; more are returned to the heap.
inline constexpr size_t kMaxFreeBuffers = 512;
inline constexpr size_t kMaxFreePipes = 64;

inline void Inc(std::atomic<uint64_t>& c, uint64_t n = 1) {
  if (n != 0) c.fetch_add(n, std::memory_order_relaxed);
}

// Which apps are held and how many requests wait for each, over all
// workers. Holds are rare (migrations), so a mutex is fine; the data path
// only reads `active_` while nothing is held.
class Holds {
 public:
  enum class Verdict { kPass, kQueued, kFull };

  bool any() const { return active_.load(std::memory_order_acquire) > 0; }

  Verdict Admit(const std::string& app, size_t max) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = apps_.find(app);
    if (it == apps_.end() || !it->second.held) return Verdict::kPass;
    if (it->second.queued >= max) return Verdict::kFull;
    ++it->second.queued;
    ++it->second.total;
    return Verdict::kQueued;
  }
  bool Held(const std::string& app) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = apps_.find(app);
    return it != apps_.end() && it->second.held;
  }
  void Dequeue(const std::string& app) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = apps_.find(app);
    if (it != apps_.end() && it->second.queued > 0) --it->second.queued;
  }
  void Hold(const std::string& app) {
    std::lock_guard<std::mutex> lock(mu_);
    State& s = apps_[app];
    if (!s.held) active_.fetch_add(1, std::memory_order_release);
    s.held = true;
  }
  // False if the app was not held.
  bool Release(const std::string& app) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = apps_.find(app);
    if (it == apps_.end() || !it->second.held) return false;
    it->second.held = false;
    active_.fetch_sub(1, std::memory_order_release);
    return true;
  }
  // fn(app, queued now, queued ever) for every app ever held.
  template <typename Fn>
  void ForEach(Fn fn) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [app, s] : apps_) fn(app, s.queued, s.total);
  }

 private:
  struct State {
    bool held = false;
    uint64_t queued = 0;
    uint64_t total = 0;
  };
  mutable std::mutex mu_;
  std::unordered_map<std::string, State> apps_;  // GUARDED_BY(mu_)
  std::atomic<int> active_{0};                   // held apps; written under mu_
};

// A fixed-size byte buffer: data in [start, end). Memory comes from the
// worker's BufferPool and goes back when the connection has nothing
// buffered, so idle keep-alive connections hold no buffer.
class Buffer {
 public:
  bool has() const { return mem_ != nullptr; }
  const char* data() const { return mem_.get() + start_; }
  size_t size() const { return end_ - start_; }
  bool empty() const { return start_ == end_; }
  std::string_view view() const { return {data(), size()}; }
  // Free space after moving the data to the front if that makes room.
  size_t Space() {
    if (end_ == cap_ && start_ > 0) {
      std::memmove(mem_.get(), mem_.get() + start_, size());
      end_ -= start_;
      start_ = 0;
    }
    return cap_ - end_;
  }
  char* tail() { return mem_.get() + end_; }
  void Produced(size_t n) { end_ += n; }
  void Consume(size_t n) {
    start_ += n;
    if (start_ == end_) start_ = end_ = 0;
  }
  void Clear() { start_ = end_ = 0; }
  // Keeps the first n bytes of the data.
  void Truncate(size_t n) {
    if (n < size()) end_ = start_ + n;
  }
  bool Append(std::string_view s) {
    if (Space() < s.size()) {
      if (start_ == 0 || cap_ - size() < s.size()) return false;
      std::memmove(mem_.get(), mem_.get() + start_, size());
      end_ -= start_;
      start_ = 0;
    }
    std::memcpy(tail(), s.data(), s.size());
    end_ += s.size();
    return true;
  }

 private:
  friend class BufferPool;
  std::unique_ptr<char[]> mem_;
  size_t start_ = 0;
  size_t end_ = 0;
  size_t cap_ = 0;
};

// Owned by one worker.
class BufferPool {
 public:
  explicit BufferPool(size_t size) : size_(size) {}
  void Get(Buffer* b) {
    if (b->has()) return;
    if (free_.empty()) {
      b->mem_ = std::make_unique_for_overwrite<char[]>(size_);
    } else {
      b->mem_ = std::move(free_.back());
      free_.pop_back();
    }
    b->cap_ = size_;
    b->start_ = b->end_ = 0;
  }
  void Put(Buffer* b) {
    if (!b->has()) return;
    if (free_.size() < kMaxFreeBuffers) free_.push_back(std::move(b->mem_));
    b->mem_.reset();
    b->cap_ = b->start_ = b->end_ = 0;
  }
  size_t size() const { return size_; }

 private:
  const size_t size_;
  std::vector<std::unique_ptr<char[]>> free_;
};

// A pipe for splice(2), and how many bytes sit in it.
struct SplicePipe {
  UniqueFd r;
  UniqueFd w;
  size_t in_pipe = 0;
  size_t capacity = 0;
};

// Owned by one worker. Only empty pipes are reused.
class PipePool {
 public:
  std::unique_ptr<SplicePipe> Get() {
    if (!free_.empty()) {
      auto p = std::move(free_.back());
      free_.pop_back();
      return p;
    }
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return nullptr;
    auto p = std::make_unique<SplicePipe>();
    p->r = UniqueFd(fds[0]);
    p->w = UniqueFd(fds[1]);
    int size = ::fcntl(fds[1], F_GETPIPE_SZ);
    p->capacity = size > 0 ? static_cast<size_t>(size) : 4096;
    return p;
  }
  void Put(std::unique_ptr<SplicePipe>* p) {
    if (*p == nullptr) return;
    if ((*p)->in_pipe == 0 && free_.size() < kMaxFreePipes) free_.push_back(std::move(*p));
    p->reset();
  }

 private:
  std::vector<std::unique_ptr<SplicePipe>> free_;
};

enum class SpliceResult { kOk, kEof, kError };

// Moves body bytes src -> pipe -> dst, at most *left more from src. The pipe
// is filled only when empty, so EAGAIN from the filling splice can only
// mean that src has nothing to read.
SpliceResult SpliceStep(int src, bool* src_rd, int dst, bool* dst_wr, uint64_t* left, SplicePipe& p,
                        uint64_t* moved, bool* progress);

// Read/write outcomes.
inline constexpr ssize_t kAgain = 0;
inline constexpr ssize_t kEof = -1;
inline constexpr ssize_t kError = -2;

// Reads what fits into b; clears *readable on EAGAIN. Bytes read, kAgain, kEof or kError.
ssize_t ReadInto(int fd, bool* readable, Buffer& b);
// Sends from p; clears *writable on EAGAIN. Bytes sent, kAgain or kError.
ssize_t WriteFrom(int fd, bool* writable, const char* p, size_t n);
// Sends a then b (either may be empty) in one call.
ssize_t WriteTwo(int fd, bool* writable, const char* a, size_t alen, const char* b, size_t blen);

// Binds every address of `listen` once per worker with SO_REUSEPORT (port 0:
// one free port shared by the workers), before any thread starts. Errors name
// the address and what to do ("needs root", "another server listens there").
// `what` names the server in messages ("proxy", "stream proxy").
Status BindListeners(const char* what, const std::vector<net::HostPort>& listen, int workers,
                     std::vector<std::vector<UniqueFd>>* per_worker,
                     std::vector<net::HostPort>* bound);
// Accepts what is pending on a non-blocking listener, at most `max`, and
// calls take(fd, peer) for each (non-blocking, CLOEXEC). Out of descriptors,
// one pending connection is accepted and closed with the help of `*spare`
// (a descriptor kept open for this), so the backlog keeps moving.
template <typename Take>
void AcceptPending(int lfd, int max, UniqueFd* spare, LogThrottle* warn, const char* what,
                   Take take) {
  for (int i = 0; i < max; ++i) {
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    int fd = ::accept4(lfd, reinterpret_cast<struct sockaddr*>(&peer), &plen,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      take(UniqueFd(fd), peer);
      continue;
    }
    int err = errno;
    if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) return;
    if (warn->Allow()) LogWarn("%s: accept: %s", what, std::strerror(err));
    if ((err == EMFILE || err == ENFILE) && spare->valid()) {
      spare->Reset();
      UniqueFd dropped(::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC));
      dropped.Reset();
      *spare = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    }
    return;
  }
}

// The numeric address of a socket address ("" if neither IPv4 nor IPv6).
void PeerAddress(const struct sockaddr_storage& ss, char* out, size_t len);
// Workers to run for a configured count (0 = one per core).
int WorkerCount(int configured);

// The threads of an engine and what its public methods share with them:
// start, stop, wake, round robin for Adopt, holds, stats. `Worker` has
// Init() -> Status, Run(), Wake() and AddTo(Stats*); `Stats` has
// apps[name].held and .held_total.
template <typename Worker, typename Stats>
class EngineCore {
 public:
  mutable std::mutex mu;  // guards what follows and the owner's own state
  Holds holds;            // any thread
  std::atomic<bool> stopping{false};

  bool running() const { return running_; }  // REQUIRES: mu held

  // Inits every worker and starts a thread each. REQUIRES: mu held, not running.
  Status Launch(std::vector<std::unique_ptr<Worker>> workers, std::vector<net::HostPort> bound,
                const char* thread_name) {
    for (auto& w : workers) HC_RETURN_IF_ERROR(w->Init());
    stopping.store(false);
    workers_ = std::move(workers);
    bound_ = std::move(bound);
    final_stats_ = Stats();
    running_ = true;
    for (auto& w : workers_) {
      threads_.emplace_back([w = w.get()] { w->Run(); });
      (void)::pthread_setname_np(threads_.back().native_handle(), thread_name);
    }
    return Status::Ok();
  }

  // Joins the workers and keeps their final counts. REQUIRES: mu held.
  void Stop() {
    if (!running_) return;
    stopping.store(true);
    for (auto& w : workers_) w->Wake();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
    Stats s;
    for (const auto& w : workers_) w->AddTo(&s);
    workers_.clear();
    final_stats_ = std::move(s);
    bound_.clear();
    running_ = false;
  }

  // The next worker for an adopted connection; null when not running.
  // REQUIRES: mu held.
  Worker* Next() {
    if (!running_ || workers_.empty()) return nullptr;
    return workers_[next_++ % workers_.size()].get();
  }
  const std::vector<std::unique_ptr<Worker>>& workers() const { return workers_; }  // REQUIRES: mu

  // Ends a hold and wakes every worker to route its queued connections.
  void Release(const std::string& app) {
    if (!holds.Release(app)) return;
    std::lock_guard<std::mutex> lock(mu);
    for (auto& w : workers_) w->Wake();
  }

  std::vector<net::HostPort> bound() const {
    std::lock_guard<std::mutex> lock(mu);
    return bound_;
  }

  // The workers' counts now (or at Stop), with the holds'.
  Stats Collect() const {
    std::lock_guard<std::mutex> lock(mu);
    Stats s = running_ ? Stats() : final_stats_;
    if (running_) {
      for (const auto& w : workers_) w->AddTo(&s);
    }
    holds.ForEach([&s](const std::string& app, uint64_t queued, uint64_t total) {
      s.apps[app].held = queued;
      s.apps[app].held_total = total;
    });
    return s;
  }

 private:
  bool running_ = false;                          // GUARDED_BY(mu)
  std::vector<net::HostPort> bound_;              // GUARDED_BY(mu)
  std::vector<std::unique_ptr<Worker>> workers_;  // GUARDED_BY(mu)
  std::vector<std::thread> threads_;              // GUARDED_BY(mu)
  Stats final_stats_;                             // GUARDED_BY(mu)
  size_t next_ = 0;                               // GUARDED_BY(mu)
};

}  // namespace hc::proxy
