// Byte sinks and sources: how streams leave and enter the storage engine.
//
// A sink or source is borrowed (passed as a reference) for the duration of a
// call and is used from the calling thread only.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "common/status.h"

namespace hc {

class ByteSink {
 public:
  virtual ~ByteSink() = default;
  // Writes all of `data` or returns an error.
  virtual Status Write(std::span<const uint8_t> data) = 0;
};

class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Reads up to data.size() bytes; returns 0 only at end of stream.
  virtual Result<size_t> Read(std::span<uint8_t> data) = 0;
};

// Pipe buffer size for bulk streams (Linux's default pipe-max-size): a
// 1 MiB record then moves in one write() and one read() instead of sixteen
// 64 KiB round trips between the two processes.
inline constexpr size_t kStreamPipeBytes = 1 << 20;

// Grows the buffer of `fd` to at least `bytes` if it is a pipe. Best effort:
// returns false (and changes nothing) for other files or when the kernel
// refuses (an unprivileged user above pipe-max-size or its pipe quota).
bool GrowPipe(int fd, size_t bytes = kStreamPipeBytes);

// Writes to a file descriptor it does not own (a pipe, a socket, a file).
// A pipe's buffer is grown with GrowPipe.
class FdSink : public ByteSink {
 public:
  explicit FdSink(int fd) : fd_(fd) { GrowPipe(fd); }
  Status Write(std::span<const uint8_t> data) override;

 private:
  int fd_;
};

// Reads from a file descriptor it does not own. A pipe's buffer is grown
// with GrowPipe.
class FdSource : public ByteSource {
 public:
  explicit FdSource(int fd) : fd_(fd) { GrowPipe(fd); }
  Result<size_t> Read(std::span<uint8_t> data) override;

 private:
  int fd_;
};

// Collects everything in memory (tests, small reads).
class StringSink : public ByteSink {
 public:
  Status Write(std::span<const uint8_t> data) override {
    out.append(reinterpret_cast<const char*>(data.data()), data.size());
    return Status::Ok();
  }
  std::string out;
};

// Serves a string it does not own.
class StringSource : public ByteSource {
 public:
  explicit StringSource(std::string_view in) : in_(in) {}
  Result<size_t> Read(std::span<uint8_t> data) override;

 private:
  std::string_view in_;
  size_t pos_ = 0;
};

// Reads exactly data.size() bytes. Returns the number read, which is less
// than data.size() only at end of stream.
Result<size_t> ReadFull(ByteSource& src, std::span<uint8_t> data);

// Milliseconds left until `deadline` (0 when passed), for poll().
int RemainingMs(std::chrono::steady_clock::time_point deadline);
// Waits until `fd` reports `events` or the deadline passes (EINTR retried).
// Returns the revents, 0 on timeout, -1 (errno set) on error.
int PollUntil(int fd, short events, std::chrono::steady_clock::time_point deadline);

}  // namespace hc
