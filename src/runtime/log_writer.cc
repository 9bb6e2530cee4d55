#include "runtime/log_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>

namespace hc::runtime {
namespace {

constexpr size_t kMaxLineBytes = 16 * 1024;
// Formatted lines are written in one write() per call, or per this many bytes
// when a call brings more.
constexpr size_t kMaxBufferedBytes = 1 << 20;

// One stamp per call: all lines that arrived together share it.
std::string NowStamp() {
  auto now = std::chrono::system_clock::now();
  int64_t ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(ms / 1000);
  int frac = static_cast<int>(ms % 1000);
  if (frac < 0) {
    frac += 1000;
    --secs;
  }
  struct tm tm;
  ::gmtime_r(&secs, &tm);
  char buf[64];
  int n = std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
  return std::string(buf, static_cast<size_t>(std::max(n, 0)));
}

// Length of the first piece of `line` when long lines are split: at most
// kMaxLineBytes, moved back to the start of a UTF-8 sequence when that costs
// at most 3 bytes, so valid text stays valid in both pieces.
size_t PieceLength(std::string_view line) {
  if (line.size() <= kMaxLineBytes) return line.size();
  size_t cut = kMaxLineBytes;
  while (cut > kMaxLineBytes - 3 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
  if ((static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) return kMaxLineBytes;
  return cut;
}

}  // namespace

LogWriter::LogWriter(std::string path, uint64_t max_bytes, int keep_files)
    : path_(std::move(path)), max_bytes_(max_bytes), keep_files_(std::max(keep_files, 0)) {}

Status LogWriter::Open() {
  fd_.Reset();
  HC_ASSIGN_OR_RETURN(fd_, OpenFile(path_, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) {
    int err = errno;
    fd_.Reset();
    return ErrnoStatus("stat " + path_, err);
  }
  size_ = static_cast<uint64_t>(st.st_size);
  return Status::Ok();
}

std::string& LogWriter::PendingFor(std::string_view stream) {
  for (Pending& p : pending_) {
    if (p.stream == stream) return p.bytes;
  }
  pending_.push_back(Pending{std::string(stream), std::string()});
  return pending_.back().bytes;
}

Status LogWriter::Append(std::string_view stream, std::string_view bytes) {
  HC_CHECK(!stream.empty() && stream.find_first_of(" \n") == std::string_view::npos,
           "log stream name '" + std::string(stream) + "'");
  const std::string stamp = NowStamp();
  std::string& pending = PendingFor(stream);
  out_.clear();
  Status st;
  size_t pos = 0;
  while (st.ok()) {
    size_t nl = bytes.find('\n', pos);
    if (nl == std::string_view::npos) break;
    std::string_view line = bytes.substr(pos, nl - pos);
    if (pending.empty()) {
      st = AddLine(stamp, stream, line);
    } else {
      pending.append(line);
      st = AddLine(stamp, stream, pending);
      pending.clear();
    }
    pos = nl + 1;
  }
  if (st.ok() && pos < bytes.size()) {
    pending.append(bytes.substr(pos));
    // Keeps only what can still become part of a line of at most 16 KiB.
    size_t done = 0;
    while (st.ok() && pending.size() - done > kMaxLineBytes) {
      std::string_view rest = std::string_view(pending).substr(done);
      size_t n = PieceLength(rest);
      st = AddPiece(stamp, stream, rest.substr(0, n));
      done += n;
    }
    pending.erase(0, done);
  }
  if (st.ok()) st = WriteOut();
  out_.clear();
  return st;
}

Status LogWriter::Note(std::string_view line) {
  const std::string stamp = NowStamp();
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  out_.clear();
  Status st;
  for (;;) {
    size_t nl = line.find('\n');
    st = AddLine(stamp, "hc", line.substr(0, nl));
    if (!st.ok() || nl == std::string_view::npos) break;
    line.remove_prefix(nl + 1);
  }
  if (st.ok()) st = WriteOut();
  out_.clear();
  return st;
}

Status LogWriter::Flush() {
  const std::string stamp = NowStamp();
  out_.clear();
  Status st;
  for (Pending& p : pending_) {
    if (!p.bytes.empty() && st.ok()) st = AddLine(stamp, p.stream, p.bytes);
    p.bytes.clear();
  }
  if (st.ok()) st = WriteOut();
  out_.clear();
  return st;
}

Status LogWriter::AddLine(std::string_view stamp, std::string_view stream, std::string_view line) {
  do {
    size_t n = PieceLength(line);
    HC_RETURN_IF_ERROR(AddPiece(stamp, stream, line.substr(0, n)));
    line.remove_prefix(n);
  } while (!line.empty());
  return Status::Ok();
}

Status LogWriter::AddPiece(std::string_view stamp, std::string_view stream,
                           std::string_view piece) {
  const size_t len = stamp.size() + 1 + stream.size() + 3 + piece.size() + 1;
  const uint64_t used = size_ + out_.size();
  if (max_bytes_ > 0 && used > 0 && used + len > max_bytes_) {
    HC_RETURN_IF_ERROR(WriteOut());
    HC_RETURN_IF_ERROR(Rotate());
  } else if (out_.size() >= kMaxBufferedBytes) {
    HC_RETURN_IF_ERROR(WriteOut());
  }
  out_.reserve(out_.size() + len);
  out_.append(stamp);
  out_ += ' ';
  out_.append(stream);
  out_.append(" | ");
  out_.append(piece);
  out_ += '\n';
  return Status::Ok();
}

Status LogWriter::WriteOut() {
  if (out_.empty()) return Status::Ok();
  if (!fd_.valid()) {
    Status st = Open();
    if (!st.ok()) {
      out_.clear();
      return st;
    }
  }
  std::string_view left = out_;
  while (!left.empty()) {
    ssize_t n = ::write(fd_.get(), left.data(), left.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      out_.clear();
      return ErrnoStatus("write " + path_, err);
    }
    left.remove_prefix(static_cast<size_t>(n));
    size_ += static_cast<uint64_t>(n);
  }
  out_.clear();
  return Status::Ok();
}

Status LogWriter::Rotate() {
  if (keep_files_ == 0) {
    if (!fd_.valid()) HC_RETURN_IF_ERROR(Open());
    if (::ftruncate(fd_.get(), 0) != 0) return ErrnoStatus("truncate " + path_, errno);
    size_ = 0;
    return Status::Ok();
  }
  fd_.Reset();
  for (int i = keep_files_; i >= 1; --i) {
    std::string from = i == 1 ? path_ : path_ + "." + std::to_string(i - 1);
    std::string to = path_ + "." + std::to_string(i);
    if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus("rename " + from + " -> " + to, errno);
    }
  }
  return Open();
}

}  // namespace hc::runtime
