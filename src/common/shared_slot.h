// A shared_ptr that one thread replaces now and then and many hot loops
// read: readers compare a version (a rarely written cache line every core
// keeps shared) once per batch and take the mutex only after a change, so
// the hot path costs one load and no reference-count traffic. Used for the
// DNS server's answers and the proxy's routing table.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

namespace hc {

template <typename T>
class SharedSlot {
 public:
  void Set(std::shared_ptr<T> value) {
    std::lock_guard<std::mutex> lock(mu_);
    current_ = std::move(value);
    version_.fetch_add(1, std::memory_order_release);
  }

  // Replaces *cached with the current value if it changed since *seen.
  void Refresh(std::shared_ptr<T>* cached, uint64_t* seen) const {
    if (version_.load(std::memory_order_acquire) == *seen) return;
    std::lock_guard<std::mutex> lock(mu_);
    *cached = current_;
    *seen = version_.load(std::memory_order_relaxed);
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<T> current_;        // GUARDED_BY(mu_)
  std::atomic<uint64_t> version_{0};  // written under mu_
};

}  // namespace hc
