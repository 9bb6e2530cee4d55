// Daemon logging: one line per record to stderr ("2026-11-25T16:00:00.123Z
// INFO message"), filtered by level. journald or the demo's log file keeps it.
#pragma once

#include <chrono>
#include <string_view>

namespace hc {

enum class LogLevel { kDebug, kInfo, kWarn, kError };
void SetLogLevel(LogLevel level);
bool ParseLogLevel(std::string_view s, LogLevel* out);
bool LogEnabled(LogLevel level);
void LogLine(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// One warning per interval for conditions a flood of packets or connections
// can repeat (accept errors, full queues). Owned by one thread.
class LogThrottle {
 public:
  explicit LogThrottle(std::chrono::steady_clock::duration interval = std::chrono::seconds(10))
      : interval_(interval) {}
  bool Allow() {
    auto now = std::chrono::steady_clock::now();
    if (now < next_) return false;
    next_ = now + interval_;
    return true;
  }

 private:
  std::chrono::steady_clock::duration interval_;
  std::chrono::steady_clock::time_point next_{};
};

#define LogDebug(...) ::hc::LogLine(::hc::LogLevel::kDebug, __VA_ARGS__)
#define LogInfo(...) ::hc::LogLine(::hc::LogLevel::kInfo, __VA_ARGS__)
#define LogWarn(...) ::hc::LogLine(::hc::LogLevel::kWarn, __VA_ARGS__)
#define LogError(...) ::hc::LogLine(::hc::LogLevel::kError, __VA_ARGS__)

}  // namespace hc
