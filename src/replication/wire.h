// The framing and messages of the replication transfer protocol
// (docs/design.md, "Replication: transfer protocol"). Pure: bytes in, values
// out; no I/O. Every parser here reads untrusted bytes from a peer, so each
// failure is a kCorrupt Status naming what was wrong, never a crash
// (fuzzed by tests/fuzz/replication_wire_fuzz.cc).
//
//   std::string out = EncodeFrame(0, kFrameRequest, EncodeRequest(req));
//   FrameParser p;                    // one per direction of a connection
//   p.Append(bytes);
//   while (auto f = p.Next()) { ... } // Result<std::optional<Frame>>
//
// Thread-safety: none needed for the free functions; a FrameParser is owned
// by one thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace hc::replication {

inline constexpr uint16_t kWireVersion = 1;
inline constexpr uint32_t kMaxFramePayload = (1u << 20) + 64;
inline constexpr size_t kFrameHeaderBytes = 5;  // type + length
inline constexpr size_t kFrameCheckBytes = 32;  // SHA-256
// The ALPN protocol of the replication channel.
inline constexpr std::string_view kReplicationAlpn = "hc-repl";

enum FrameType : uint8_t {
  kFrameRequest = 'Q',
  kFrameAnswer = 'A',
  kFrameData = 'D',
  kFrameFinish = 'F',
  kFrameResult = 'R',
  kFrameRepairRequest = 'G',  // fetch healthy copies of damaged objects
};

struct Frame {
  FrameType type;
  std::string payload;
};

// Frame `seq` of a direction (0, 1, 2, ...).
std::string EncodeFrame(uint64_t seq, FrameType type, std::string_view payload);

// Splits a byte stream into verified frames. Bytes may arrive in any pieces.
class FrameParser {
 public:
  void Append(std::string_view bytes) { buf_.append(bytes); }
  // The next complete frame, nullopt if more bytes are needed, or kCorrupt
  // (unknown type, oversized length, failed check). After an error the
  // parser stays failed.
  Result<std::optional<Frame>> Next();
  // Bytes appended but not yet returned as frames.
  size_t buffered() const { return buf_.size() - pos_; }

 private:
  std::string buf_;
  size_t pos_ = 0;
  uint64_t seq_ = 0;
  bool failed_ = false;
};

struct TransferRequest {
  std::string app;
  std::string sender_node;
  uint64_t epoch = 0;
  std::string base_id;  // "" = full stream
  std::string target_id;
  uint64_t resume_offset = 0;  // reserved (the receiver decides resumes); must be 0
  bool operator==(const TransferRequest&) const = default;
};

enum class Verdict : uint8_t { kAccept = 0, kAlreadyPresent = 1, kRefused = 2 };
enum class RefuseReason : uint8_t {
  kNone = 0,
  kNotPrimary = 1,
  kBaseMissing = 2,
  kDiverged = 3,
  kOther = 4,
  kNoSuchApp = 5,  // repair fetch: the app does not exist on the answering node
};
const char* RefuseReasonName(RefuseReason r);

struct TransferAnswer {
  Verdict verdict = Verdict::kAccept;
  RefuseReason reason = RefuseReason::kNone;
  std::string message;
  std::string receiver_newest_id;  // "" = the receiver has no snapshot
  // kAccept: stream bytes the receiver already holds from an interrupted
  // transfer of the same (base, target); the sender skips them.
  uint64_t resume_offset = 0;
  bool operator==(const TransferAnswer&) const = default;
};

struct TransferFinish {
  uint64_t total_bytes = 0;
  bool operator==(const TransferFinish&) const = default;
};

struct TransferResult {
  Code code = Code::kOk;
  std::string message;
  std::string snapshot_id;
  bool already_present = false;
  bool operator==(const TransferResult&) const = default;
};

std::string EncodeRequest(const TransferRequest& r);
std::string EncodeAnswer(const TransferAnswer& a);
std::string EncodeFinish(const TransferFinish& f);
std::string EncodeResult(const TransferResult& r);

// Each decoder requires the whole payload to be consumed and every field in
// range (known verdict/reason/code, version 1, id and name lengths bounded).
Result<TransferRequest> DecodeRequest(std::string_view payload);
Result<TransferAnswer> DecodeAnswer(std::string_view payload);
Result<TransferFinish> DecodeFinish(std::string_view payload);
Result<TransferResult> DecodeResult(std::string_view payload);

// Repair fetch (docs/design.md, "Repair fetch"): a node with damaged objects
// of `app` asks another node for verified copies. The answer is an `A`
// frame, then the exporter's repair stream (storage ExportRepair) in `D`
// frames and an `F` frame with the byte total.
inline constexpr size_t kMaxRepairObjectIds = 4096;  // = storage::kMaxRepairObjects

struct RepairRequest {
  std::string app;
  std::string requester_node;           // must match the TLS client certificate
  std::vector<std::string> object_ids;  // 1..kMaxRepairObjectIds
  bool operator==(const RepairRequest&) const = default;
};

std::string EncodeRepairRequest(const RepairRequest& r);
// Same rules as the other decoders; also refuses an empty id list, more than
// kMaxRepairObjectIds ids and ids longer than 128 bytes.
Result<RepairRequest> DecodeRepairRequest(std::string_view payload);

}  // namespace hc::replication
