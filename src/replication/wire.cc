#include "replication/wire.h"

#include <cstring>

#include "common/hash.h"

namespace hc::replication {
namespace {

// Ids are 64 hex digits (dir) or decimal GUIDs (zfs); names are at most 64
// characters. The bound only keeps a hostile peer from sizing our buffers.
constexpr uint32_t kMaxString = 1024;

void PutU16(std::string& o, uint16_t v) {
  for (int i = 0; i < 2; ++i) o.push_back(static_cast<char>(v >> (8 * i)));
}
void PutU32(std::string& o, uint32_t v) {
  for (int i = 0; i < 4; ++i) o.push_back(static_cast<char>(v >> (8 * i)));
}
void PutU64(std::string& o, uint64_t v) {
  for (int i = 0; i < 8; ++i) o.push_back(static_cast<char>(v >> (8 * i)));
}
void PutStr(std::string& o, std::string_view s) {
  PutU32(o, static_cast<uint32_t>(s.size()));
  o.append(s);
}

uint64_t GetLe(std::string_view in, size_t pos, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= uint64_t{static_cast<uint8_t>(in[pos + i])} << (8 * i);
  return v;
}

// Reads what the Put* helpers wrote; every getter fails instead of reading
// past the end.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  uint64_t Int(int n) {
    if (!ok_ || in_.size() - pos_ < static_cast<size_t>(n)) {
      ok_ = false;
      return 0;
    }
    uint64_t v = GetLe(in_, pos_, n);
    pos_ += n;
    return v;
  }
  std::string Str() {
    uint32_t n = static_cast<uint32_t>(Int(4));
    if (!ok_ || n > kMaxString || in_.size() - pos_ < n) {
      ok_ = false;
      return {};
    }
    std::string s(in_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  bool done() const { return ok_ && pos_ == in_.size(); }

 private:
  std::string_view in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

Digest FrameCheck(uint64_t seq, uint8_t type, std::string_view payload) {
  std::string head;
  PutU64(head, seq);
  head.push_back(static_cast<char>(type));
  PutU32(head, static_cast<uint32_t>(payload.size()));
  Sha256 h;
  h.Update(head);
  h.Update(payload);
  return h.Final();
}

bool KnownFrameType(uint8_t t) {
  return t == kFrameRequest || t == kFrameAnswer || t == kFrameData || t == kFrameFinish ||
         t == kFrameResult || t == kFrameRepairRequest;
}

Status Malformed(const char* what) {
  return Corrupt(std::string("replication peer sent a malformed ") + what + " message");
}

}  // namespace

const char* RefuseReasonName(RefuseReason r) {
  switch (r) {
    case RefuseReason::kNone: return "none";
    case RefuseReason::kNotPrimary: return "not the primary at that epoch";
    case RefuseReason::kBaseMissing: return "base snapshot missing";
    case RefuseReason::kDiverged: return "replica diverged";
    case RefuseReason::kOther: return "other";
    case RefuseReason::kNoSuchApp: return "no such app";
  }
  return "unknown";
}

std::string EncodeFrame(uint64_t seq, FrameType type, std::string_view payload) {
  std::string o;
  o.reserve(kFrameHeaderBytes + payload.size() + kFrameCheckBytes);
  o.push_back(static_cast<char>(type));
  PutU32(o, static_cast<uint32_t>(payload.size()));
  o.append(payload);
  Digest d = FrameCheck(seq, type, payload);
  o.append(reinterpret_cast<const char*>(d.data()), d.size());
  return o;
}

Result<std::optional<Frame>> FrameParser::Next() {
  if (failed_) return Corrupt("replication stream already failed");
  std::string_view in(buf_);
  in.remove_prefix(pos_);
  if (in.size() < kFrameHeaderBytes) return std::optional<Frame>();
  uint8_t type = static_cast<uint8_t>(in[0]);
  uint32_t len = static_cast<uint32_t>(GetLe(in, 1, 4));
  if (!KnownFrameType(type)) {
    failed_ = true;
    return Corrupt("replication frame " + std::to_string(seq_) + " has unknown type " +
                   std::to_string(type));
  }
  if (len > kMaxFramePayload) {
    failed_ = true;
    return Corrupt("replication frame " + std::to_string(seq_) + " is " + std::to_string(len) +
                   " bytes, more than the limit " + std::to_string(kMaxFramePayload));
  }
  if (in.size() < kFrameHeaderBytes + len + kFrameCheckBytes) return std::optional<Frame>();
  std::string_view payload = in.substr(kFrameHeaderBytes, len);
  Digest want = FrameCheck(seq_, type, payload);
  if (std::memcmp(want.data(), in.data() + kFrameHeaderBytes + len, kFrameCheckBytes) != 0) {
    failed_ = true;
    return Corrupt("replication frame " + std::to_string(seq_) +
                   " failed its checksum (damaged, dropped or reordered in transit)");
  }
  Frame f{static_cast<FrameType>(type), std::string(payload)};
  pos_ += kFrameHeaderBytes + len + kFrameCheckBytes;
  ++seq_;
  // Compact once the consumed prefix dominates, so the buffer stays bounded.
  if (pos_ > (1u << 20) && pos_ * 2 > buf_.size()) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  return std::optional<Frame>(std::move(f));
}

std::string EncodeRequest(const TransferRequest& r) {
  std::string o;
  PutU16(o, kWireVersion);
  PutStr(o, r.app);
  PutStr(o, r.sender_node);
  PutU64(o, r.epoch);
  PutStr(o, r.base_id);
  PutStr(o, r.target_id);
  PutU64(o, r.resume_offset);
  return o;
}

Result<TransferRequest> DecodeRequest(std::string_view payload) {
  Reader d(payload);
  uint16_t version = static_cast<uint16_t>(d.Int(2));
  TransferRequest r;
  r.app = d.Str();
  r.sender_node = d.Str();
  r.epoch = d.Int(8);
  r.base_id = d.Str();
  r.target_id = d.Str();
  r.resume_offset = d.Int(8);
  if (!d.done()) return Malformed("request");
  if (version != kWireVersion) {
    return InvalidArgument("replication request has protocol version " + std::to_string(version) +
                           "; this node speaks version " + std::to_string(kWireVersion));
  }
  if (r.app.empty() || r.sender_node.empty() || r.target_id.empty()) {
    return Malformed("request (empty app, sender or target)");
  }
  return r;
}

std::string EncodeAnswer(const TransferAnswer& a) {
  std::string o;
  o.push_back(static_cast<char>(a.verdict));
  o.push_back(static_cast<char>(a.reason));
  PutStr(o, a.message);
  PutStr(o, a.receiver_newest_id);
  PutU64(o, a.resume_offset);
  return o;
}

Result<TransferAnswer> DecodeAnswer(std::string_view payload) {
  Reader d(payload);
  uint8_t verdict = static_cast<uint8_t>(d.Int(1));
  uint8_t reason = static_cast<uint8_t>(d.Int(1));
  TransferAnswer a;
  a.message = d.Str();
  a.receiver_newest_id = d.Str();
  a.resume_offset = d.Int(8);
  if (!d.done() || verdict > 2 || reason > 5) return Malformed("answer");
  a.verdict = static_cast<Verdict>(verdict);
  a.reason = static_cast<RefuseReason>(reason);
  return a;
}

std::string EncodeFinish(const TransferFinish& f) {
  std::string o;
  PutU64(o, f.total_bytes);
  return o;
}

Result<TransferFinish> DecodeFinish(std::string_view payload) {
  Reader d(payload);
  TransferFinish f;
  f.total_bytes = d.Int(8);
  if (!d.done()) return Malformed("finish");
  return f;
}

std::string EncodeResult(const TransferResult& r) {
  std::string o;
  o.push_back(static_cast<char>(r.code));
  PutStr(o, r.message);
  PutStr(o, r.snapshot_id);
  o.push_back(r.already_present ? 1 : 0);
  return o;
}

Result<TransferResult> DecodeResult(std::string_view payload) {
  Reader d(payload);
  uint8_t code = static_cast<uint8_t>(d.Int(1));
  TransferResult r;
  r.message = d.Str();
  r.snapshot_id = d.Str();
  uint8_t present = static_cast<uint8_t>(d.Int(1));
  if (!d.done() || code > static_cast<uint8_t>(Code::kInternal) || present > 1) {
    return Malformed("result");
  }
  r.code = static_cast<Code>(code);
  r.already_present = present == 1;
  return r;
}

std::string EncodeRepairRequest(const RepairRequest& r) {
  std::string o;
  PutU16(o, kWireVersion);
  PutStr(o, r.app);
  PutStr(o, r.requester_node);
  PutU32(o, static_cast<uint32_t>(r.object_ids.size()));
  for (const auto& id : r.object_ids) PutStr(o, id);
  return o;
}

Result<RepairRequest> DecodeRepairRequest(std::string_view payload) {
  Reader d(payload);
  uint16_t version = static_cast<uint16_t>(d.Int(2));
  RepairRequest r;
  r.app = d.Str();
  r.requester_node = d.Str();
  uint32_t n = static_cast<uint32_t>(d.Int(4));
  if (n > kMaxRepairObjectIds) return Malformed("repair request (too many object ids)");
  for (uint32_t i = 0; i < n; ++i) {
    r.object_ids.push_back(d.Str());
    if (r.object_ids.back().size() > 128) return Malformed("repair request (object id too long)");
  }
  if (!d.done()) return Malformed("repair request");
  if (version != kWireVersion) {
    return InvalidArgument("replication repair request has protocol version " +
                           std::to_string(version) + "; this node speaks version " +
                           std::to_string(kWireVersion));
  }
  if (r.app.empty() || r.requester_node.empty() || r.object_ids.empty()) {
    return Malformed("repair request (empty app, requester or id list)");
  }
  return r;
}

}  // namespace hc::replication
