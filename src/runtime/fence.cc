#include "runtime/fence.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <atomic>

#include "common/fs.h"

namespace hc::runtime {

int64_t BoottimeNowNs() {
  timespec ts;
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string FormatFenceDeadline(int64_t deadline_boottime_ns) {
  return std::to_string(deadline_boottime_ns) + "\n";
}

Result<int64_t> ParseFenceDeadline(std::string_view text) {
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  if (text.empty()) return Corrupt("empty fence file");
  // At most 19 digits: every such number fits an int64_t except those above
  // INT64_MAX, checked digit by digit.
  if (text.size() > 19) return Corrupt("fence deadline is too long");
  int64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return Corrupt("fence file holds something other than a number");
    int d = c - '0';
    if (v > (INT64_MAX - d) / 10) return Corrupt("fence deadline is out of range");
    v = v * 10 + d;
  }
  return v;
}

Status WriteFenceDeadline(const std::string& path, int64_t deadline_boottime_ns) {
  if (deadline_boottime_ns < 0) return InvalidArgument("negative fence deadline");
  // A temporary name per thread: two writers sharing one would mix their bytes.
  static std::atomic<uint64_t> seq{0};
  std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(::gettid()) +
                    "." + std::to_string(seq++);
  std::string data = FormatFenceDeadline(deadline_boottime_ns);
  {
    HC_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644));
    // Tiny: one write() does it, or it is an error (disk full).
    ssize_t n = ::write(fd.get(), data.data(), data.size());
    if (n != static_cast<ssize_t>(data.size())) {
      int err = n < 0 ? errno : ENOSPC;
      ::unlink(tmp.c_str());
      return ErrnoStatus("write " + tmp, err);
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoStatus("rename " + tmp + " -> " + path, err);
  }
  return Status::Ok();
}

Result<int64_t> ReadFenceDeadline(const std::string& path) {
  HC_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  auto d = ParseFenceDeadline(text);
  if (!d.ok()) return Corrupt(path + ": " + d.status().message());
  return d;
}

}  // namespace hc::runtime
