#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include <atomic>

namespace hc {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
const char* kNames[] = {"DEBUG", "INFO", "WARN", "ERROR"};
}  // namespace

void SetLogLevel(LogLevel level) {
  g_level.store(static_cast<int>(level));
}

bool ParseLogLevel(std::string_view s, LogLevel* out) {
  for (int i = 0; i < 4; i++) {
    std::string_view n = kNames[i];
    if (s.size() == n.size()) {
      bool eq = true;
      for (size_t k = 0; k < s.size(); k++)
        if ((s[k] & ~0x20) != n[k]) eq = false;
      if (eq) {
        *out = static_cast<LogLevel>(i);
        return true;
      }
    }
  }
  return false;
}

bool LogEnabled(LogLevel level) {
  return static_cast<int>(level) >= g_level.load();
}

void LogLine(LogLevel level, const char* fmt, ...) {
  if (!LogEnabled(level)) return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char when[40];
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  // One fprintf call per record keeps lines whole across threads.
  fprintf(stderr, "%s.%03ldZ %s %s\n", when, ts.tv_nsec / 1000000, kNames[static_cast<int>(level)],
          msg);
}

}  // namespace hc
