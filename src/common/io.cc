#include "common/io.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

namespace hc {

bool GrowPipe(int fd, size_t bytes) {
  int now = ::fcntl(fd, F_GETPIPE_SZ);
  if (now < 0) return false;  // not a pipe
  if (static_cast<size_t>(now) >= bytes) return true;
  return ::fcntl(fd, F_SETPIPE_SZ, static_cast<int>(bytes)) >= 0;
}

Status FdSink::Write(std::span<const uint8_t> data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd_, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write", errno);
    }
    data = data.subspan(static_cast<size_t>(n));
  }
  return Status::Ok();
}

Result<size_t> FdSource::Read(std::span<uint8_t> data) {
  for (;;) {
    ssize_t n = ::read(fd_, data.data(), data.size());
    if (n >= 0) return static_cast<size_t>(n);
    if (errno != EINTR) return ErrnoStatus("read", errno);
  }
}

Result<size_t> StringSource::Read(std::span<uint8_t> data) {
  size_t n = std::min(data.size(), in_.size() - pos_);
  std::memcpy(data.data(), in_.data() + pos_, n);
  pos_ += n;
  return n;
}

Result<size_t> ReadFull(ByteSource& src, std::span<uint8_t> data) {
  size_t got = 0;
  while (got < data.size()) {
    HC_ASSIGN_OR_RETURN(size_t n, src.Read(data.subspan(got)));
    if (n == 0) break;
    got += n;
  }
  return got;
}

// Rounded up, so poll() does not spin with a 0 timeout while a fraction of a
// millisecond remains.
int RemainingMs(std::chrono::steady_clock::time_point deadline) {
  auto left = deadline - std::chrono::steady_clock::now();
  if (left <= std::chrono::steady_clock::duration::zero()) return 0;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return static_cast<int>(std::min<int64_t>(ms, INT_MAX));
}

int PollUntil(int fd, short events, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    struct pollfd p = {fd, events, 0};
    int r = ::poll(&p, 1, RemainingMs(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return r;
    return p.revents;
  }
}

}  // namespace hc
