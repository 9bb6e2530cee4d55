// The volume stream envelope shared by both backends (docs/stream-format.md).
//
// A stream is the magic "HCSTRM01" followed by records:
//   u8 type | u32 length (LE) | payload | u64 check (LE)
// where check = XXH3_64(type, length, payload) seeded with the record's
// sequence number, so a flipped byte, a dropped, duplicated or reordered
// record, or a cut anywhere is detected. The first record is the header
// ('H'), the last the end record ('E') carrying the record count and payload
// byte total. Payload types in between belong to the backend: 'C' chunk and
// 'S' snapshot record for `dir`, 'D' raw `zfs send` bytes for `zfs`.
//
// Writer and reader are single-threaded and borrow their sink/source.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/io.h"
#include "common/status.h"

namespace hc::storage {

inline constexpr char kStreamMagic[8] = {'H', 'C', 'S', 'T', 'R', 'M', '0', '1'};
inline constexpr uint32_t kMaxRecordPayload = 16u << 20;

enum RecordType : uint8_t {
  kRecordHeader = 'H',
  kRecordChunk = 'C',
  kRecordSnapshot = 'S',
  kRecordZfsData = 'D',
  kRecordEnd = 'E',
};

// What the header record says about a stream.
struct StreamHeader {
  std::string backend;  // "dir" or "zfs"
  std::string volume;   // volume name on the sender
  std::string from_id;  // base snapshot identity, "" for a full stream
  std::string from_name;
  std::string to_id;  // the snapshot this stream recreates
  std::string to_name;
  int64_t to_created_unix_ns = 0;
  uint64_t epoch = 0;  // placement epoch of the sender (0 = none)
};

std::string EncodeStreamHeader(const StreamHeader& h);
Result<StreamHeader> DecodeStreamHeader(std::span<const uint8_t> payload);

class StreamWriter {
 public:
  explicit StreamWriter(ByteSink& out) : out_(out) {}

  // Writes the magic and the header record. Call once, first.
  Status Begin(const StreamHeader& header);
  // Writes one record; the payload is the concatenation of `parts`.
  Status Write(RecordType type, std::span<const std::span<const uint8_t>> parts);
  Status Write(RecordType type, std::span<const uint8_t> payload) {
    std::span<const uint8_t> one[1] = {payload};
    return Write(type, one);
  }
  // Writes the end record. Nothing may be written after it.
  Status Finish();

  uint64_t bytes_written() const { return bytes_; }

 private:
  ByteSink& out_;
  uint64_t seq_ = 0;
  uint64_t payload_total_ = 0;
  uint64_t bytes_ = 0;
  std::vector<uint8_t> scratch_;
};

struct StreamRecord {
  RecordType type;
  std::span<const uint8_t> payload;  // valid until the next Next() call
};

class StreamReader {
 public:
  explicit StreamReader(ByteSource& in) : in_(in) {}

  // Reads and checks the magic and the header record.
  Result<StreamHeader> Begin();
  // Returns the next verified record. The end record is verified here
  // (count and totals) and returned with type kRecordEnd; the reader does
  // not read past it, so streams can follow each other on one connection.
  // Errors are kCorrupt with the byte offset.
  Result<StreamRecord> Next();

  uint64_t bytes_read() const { return bytes_; }

  // Exchanges the buffer holding the last record with `other`: the record's
  // payload span stays valid (now inside *other) after further Next() calls.
  // Lets a caller hold a record back without copying it.
  void SwapBuffer(std::vector<uint8_t>* other) { buf_.swap(*other); }

 private:
  Status Fail(const std::string& what) const;
  ByteSource& in_;
  uint64_t seq_ = 0;
  uint64_t payload_total_ = 0;
  uint64_t bytes_ = 0;
  bool ended_ = false;
  std::vector<uint8_t> buf_;
};

// Little-endian helpers for the binary formats of the storage engine.
class Encoder {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U16(uint16_t v);
  void U32(uint32_t v);
  void U64(uint64_t v);
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void Bytes(std::span<const uint8_t> b);
  void Raw(std::string_view b) { out_.append(b); }
  // u32 length + bytes.
  void Str(std::string_view s);
  std::string& out() { return out_; }

 private:
  std::string out_;
};

// Reads what Encoder wrote. Every getter fails (returns false) instead of
// reading past the end; check ok() once at the end of a parse.
class Decoder {
 public:
  explicit Decoder(std::span<const uint8_t> in) : in_(in) {}
  uint8_t U8();
  uint16_t U16();
  uint32_t U32();
  uint64_t U64();
  int64_t I64() { return static_cast<int64_t>(U64()); }
  std::span<const uint8_t> Bytes(size_t n);
  std::string Str(uint32_t max_len = 1u << 20);
  bool ok() const { return ok_; }
  bool done() const { return ok_ && pos_ == in_.size(); }
  size_t remaining() const { return in_.size() - pos_; }

 private:
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

inline std::span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace hc::storage
