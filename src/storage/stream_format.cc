#include "storage/stream_format.h"

#include <xxhash.h>

#include <cstring>

namespace hc::storage {
namespace {

constexpr size_t kFrameHead = 5;  // type + length
constexpr size_t kFrameTail = 8;  // check
constexpr size_t kGatherThreshold = 64 * 1024;
constexpr uint32_t kHeaderVersion = 1;

void PutLe(uint8_t* p, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t GetLe(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

}  // namespace

void Encoder::U16(uint16_t v) {
  uint8_t b[2];
  PutLe(b, v, 2);
  out_.append(reinterpret_cast<char*>(b), 2);
}
void Encoder::U32(uint32_t v) {
  uint8_t b[4];
  PutLe(b, v, 4);
  out_.append(reinterpret_cast<char*>(b), 4);
}
void Encoder::U64(uint64_t v) {
  uint8_t b[8];
  PutLe(b, v, 8);
  out_.append(reinterpret_cast<char*>(b), 8);
}
void Encoder::Bytes(std::span<const uint8_t> b) {
  out_.append(reinterpret_cast<const char*>(b.data()), b.size());
}
void Encoder::Str(std::string_view s) {
  U32(static_cast<uint32_t>(s.size()));
  out_.append(s);
}

std::span<const uint8_t> Decoder::Bytes(size_t n) {
  if (!ok_ || n > in_.size() - pos_) {
    ok_ = false;
    return {};
  }
  auto r = in_.subspan(pos_, n);
  pos_ += n;
  return r;
}
uint8_t Decoder::U8() {
  auto b = Bytes(1);
  return ok_ ? b[0] : 0;
}
uint16_t Decoder::U16() {
  auto b = Bytes(2);
  return ok_ ? static_cast<uint16_t>(GetLe(b.data(), 2)) : 0;
}
uint32_t Decoder::U32() {
  auto b = Bytes(4);
  return ok_ ? static_cast<uint32_t>(GetLe(b.data(), 4)) : 0;
}
uint64_t Decoder::U64() {
  auto b = Bytes(8);
  return ok_ ? GetLe(b.data(), 8) : 0;
}
std::string Decoder::Str(uint32_t max_len) {
  uint32_t n = U32();
  if (!ok_ || n > max_len) {
    ok_ = false;
    return {};
  }
  auto b = Bytes(n);
  return ok_ ? std::string(reinterpret_cast<const char*>(b.data()), b.size()) : std::string();
}

std::string EncodeStreamHeader(const StreamHeader& h) {
  Encoder e;
  e.U32(kHeaderVersion);
  e.Str(h.backend);
  e.Str(h.volume);
  e.Str(h.from_id);
  e.Str(h.from_name);
  e.Str(h.to_id);
  e.Str(h.to_name);
  e.I64(h.to_created_unix_ns);
  e.U64(h.epoch);
  return std::move(e.out());
}

Result<StreamHeader> DecodeStreamHeader(std::span<const uint8_t> payload) {
  Decoder d(payload);
  uint32_t version = d.U32();
  if (d.ok() && version != kHeaderVersion) {
    return Corrupt("stream header version " + std::to_string(version) +
                   " is not supported (this build reads version " + std::to_string(kHeaderVersion) +
                   ")");
  }
  StreamHeader h;
  h.backend = d.Str(64);
  h.volume = d.Str(256);
  h.from_id = d.Str(256);
  h.from_name = d.Str(256);
  h.to_id = d.Str(256);
  h.to_name = d.Str(256);
  h.to_created_unix_ns = d.I64();
  h.epoch = d.U64();
  if (!d.done()) return Corrupt("stream header record is malformed");
  if (h.backend != "dir" && h.backend != "zfs") {
    return Corrupt("stream header names unknown backend '" + h.backend + "'");
  }
  if (h.to_id.empty()) return Corrupt("stream header has no target snapshot");
  return h;
}

Status StreamWriter::Begin(const StreamHeader& header) {
  HC_CHECK(seq_ == 0, "StreamWriter::Begin called twice");
  HC_RETURN_IF_ERROR(
      out_.Write({reinterpret_cast<const uint8_t*>(kStreamMagic), sizeof kStreamMagic}));
  bytes_ += sizeof kStreamMagic;
  std::string h = EncodeStreamHeader(header);
  return Write(kRecordHeader, AsBytes(h));
}

Status StreamWriter::Write(RecordType type, std::span<const std::span<const uint8_t>> parts) {
  size_t len = 0;
  for (auto p : parts) len += p.size();
  HC_CHECK(len <= kMaxRecordPayload, "stream record too large");
  uint8_t head[kFrameHead];
  head[0] = type;
  PutLe(head + 1, len, 4);
  ++seq_;
  payload_total_ += len;
  bytes_ += kFrameHead + len + kFrameTail;
  if (len >= kGatherThreshold) {
    // Large payloads (zfs data) are hashed and written in place: a copy of
    // every byte costs more than three write() calls.
    XXH3_state_t* st = XXH3_createState();
    HC_CHECK(st != nullptr, "XXH3_createState");
    XXH3_64bits_reset_withSeed(st, seq_ - 1);
    XXH3_64bits_update(st, head, kFrameHead);
    for (auto part : parts) XXH3_64bits_update(st, part.data(), part.size());
    uint8_t tail[kFrameTail];
    PutLe(tail, XXH3_64bits_digest(st), 8);
    XXH3_freeState(st);
    HC_RETURN_IF_ERROR(out_.Write(head));
    for (auto part : parts) HC_RETURN_IF_ERROR(out_.Write(part));
    return out_.Write(tail);
  }
  // Small records: one contiguous buffer, a single write() and hash pass.
  scratch_.resize(kFrameHead + len + kFrameTail);
  uint8_t* p = scratch_.data();
  std::memcpy(p, head, kFrameHead);
  size_t off = kFrameHead;
  for (auto part : parts) {
    if (!part.empty()) std::memcpy(p + off, part.data(), part.size());
    off += part.size();
  }
  PutLe(p + off, XXH3_64bits_withSeed(p, kFrameHead + len, seq_ - 1), 8);
  return out_.Write(scratch_);
}

Status StreamWriter::Finish() {
  Encoder e;
  e.U64(seq_ + 1);  // records including this one
  e.U64(payload_total_);
  return Write(kRecordEnd, AsBytes(e.out()));
}

Status StreamReader::Fail(const std::string& what) const {
  return Corrupt("stream is damaged or incomplete at byte " + std::to_string(bytes_) + ": " + what);
}

Result<StreamHeader> StreamReader::Begin() {
  uint8_t magic[sizeof kStreamMagic];
  HC_ASSIGN_OR_RETURN(size_t n, ReadFull(in_, magic));
  if (n == 0) return Corrupt("stream is empty");
  if (n < sizeof magic || std::memcmp(magic, kStreamMagic, sizeof magic)) {
    return Corrupt("not a HybridCluster volume stream (bad magic)");
  }
  bytes_ += n;
  HC_ASSIGN_OR_RETURN(StreamRecord r, Next());
  if (r.type != kRecordHeader) return Fail("first record is not a header");
  return DecodeStreamHeader(r.payload);
}

Result<StreamRecord> StreamReader::Next() {
  uint8_t head[kFrameHead];
  if (ended_) return Fail("read past the end record");
  HC_ASSIGN_OR_RETURN(size_t n, ReadFull(in_, head));
  if (n == 0) return Fail("stream ends before its end record (truncated)");
  if (n < kFrameHead) return Fail("truncated record header");
  uint32_t len = static_cast<uint32_t>(GetLe(head + 1, 4));
  if (len > kMaxRecordPayload) {
    return Fail("record length " + std::to_string(len) + " exceeds the limit");
  }
  buf_.resize(kFrameHead + len + kFrameTail);
  std::memcpy(buf_.data(), head, kFrameHead);
  HC_ASSIGN_OR_RETURN(size_t m, ReadFull(in_, std::span(buf_).subspan(kFrameHead)));
  if (m < len + kFrameTail) return Fail("truncated record");
  uint64_t want = GetLe(buf_.data() + kFrameHead + len, 8);
  if (XXH3_64bits_withSeed(buf_.data(), kFrameHead + len, seq_) != want) {
    return Fail("record " + std::to_string(seq_) + " fails its checksum");
  }
  auto type = static_cast<RecordType>(head[0]);
  if (seq_ == 0 && type != kRecordHeader) return Fail("missing header record");
  if (seq_ > 0 && type == kRecordHeader) return Fail("second header record");
  ++seq_;
  bytes_ += buf_.size();
  std::span<const uint8_t> payload(buf_.data() + kFrameHead, len);
  if (type == kRecordEnd) {
    Decoder d(payload);
    uint64_t count = d.U64();
    uint64_t total = d.U64();
    if (!d.done()) return Fail("malformed end record");
    if (count != seq_ || total != payload_total_) {
      return Fail("end record does not match the records received");
    }
    ended_ = true;
  } else {
    payload_total_ += len;
  }
  return StreamRecord{type, payload};
}

}  // namespace hc::storage
