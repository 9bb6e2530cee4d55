#include "dns/wire.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

namespace hc::dns {
namespace {

constexpr size_t kMaxNameWire = 255;
constexpr size_t kMaxLabel = 63;
constexpr size_t kMaxPointerTarget = 0x3FFF;

uint16_t Get16(std::span<const uint8_t> p, size_t at) {
  return static_cast<uint16_t>((p[at] << 8) | p[at + 1]);
}
uint32_t Get32(std::span<const uint8_t> p, size_t at) {
  return (static_cast<uint32_t>(Get16(p, at)) << 16) | Get16(p, at + 2);
}
void Put16(std::vector<uint8_t>* b, uint16_t v) {
  b->push_back(static_cast<uint8_t>(v >> 8));
  b->push_back(static_cast<uint8_t>(v));
}
void Put32(std::vector<uint8_t>* b, uint32_t v) {
  Put16(b, static_cast<uint16_t>(v >> 16));
  Put16(b, static_cast<uint16_t>(v));
}
void Set16(std::vector<uint8_t>* b, size_t at, uint16_t v) {
  (*b)[at] = static_cast<uint8_t>(v >> 8);
  (*b)[at + 1] = static_cast<uint8_t>(v);
}

uint8_t Lower(uint8_t c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<uint8_t>(c + 32) : c;
}

// Reads the uncompressed name starting at *pos (the question). Returns false
// on truncation, pointers, extended label types, bad lengths.
bool ReadPlainName(std::span<const uint8_t> p, size_t* pos, std::string* wire) {
  size_t at = *pos;
  wire->clear();
  while (true) {
    if (at >= p.size()) return false;
    uint8_t len = p[at];
    if (len == 0) {
      wire->push_back('\0');
      ++at;
      break;
    }
    if (len > kMaxLabel) return false;  // pointer (0xC0) or extended label type
    if (p.size() - at < size_t{len} + 1) return false;
    if (wire->size() + len + 1 + 1 > kMaxNameWire) return false;  // + the root byte
    wire->append(reinterpret_cast<const char*>(&p[at]), len + 1);
    at += len + 1;
  }
  *pos = at;
  return true;
}

// Skips a possibly compressed name in a record we only need to step over.
// Pointers must go strictly backwards, which bounds the walk and rules out
// loops. On success *pos is just past the name in the record; *is_root tells
// whether it was the root name.
bool SkipName(std::span<const uint8_t> p, size_t* pos, bool* is_root) {
  size_t at = *pos;
  size_t end = 0;  // position after the name in the record, once known
  bool jumped = false;
  size_t total = 0;
  *is_root = true;
  while (true) {
    if (at >= p.size()) return false;
    uint8_t len = p[at];
    if ((len & 0xC0) == 0xC0) {
      if (at + 1 >= p.size()) return false;
      size_t target = ((len & 0x3F) << 8) | p[at + 1];
      if (target >= at) return false;
      if (!jumped) end = at + 2;
      jumped = true;
      at = target;
      continue;
    }
    if (len > kMaxLabel) return false;
    if (len == 0) {
      if (!jumped) end = at + 1;
      break;
    }
    if (p.size() - at < size_t{len} + 1) return false;
    total += len + 1;
    if (total + 1 > kMaxNameWire) return false;
    *is_root = false;
    at += len + 1;
  }
  *pos = end;
  return true;
}

void AppendPresentationLabel(std::string* out, const uint8_t* label, size_t len) {
  for (size_t i = 0; i < len; ++i) {
    uint8_t c = Lower(label[i]);
    bool plain =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '*';
    if (plain) {
      out->push_back(static_cast<char>(c));
    } else {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\%03u", static_cast<unsigned>(c));
      out->append(buf);
    }
  }
}

// Splits a validated uncompressed wire name into label start offsets.
std::vector<size_t> LabelOffsets(std::string_view wire) {
  std::vector<size_t> offs;
  size_t at = 0;
  while (at < wire.size() && wire[at] != 0) {
    offs.push_back(at);
    at += static_cast<uint8_t>(wire[at]) + 1;
  }
  return offs;
}

bool ValidPlainWire(std::string_view wire) {
  if (wire.empty() || wire.size() > kMaxNameWire) return false;
  size_t at = 0;
  while (true) {
    if (at >= wire.size()) return false;
    uint8_t len = static_cast<uint8_t>(wire[at]);
    if (len == 0) return at + 1 == wire.size();
    if (len > kMaxLabel) return false;
    at += len + 1;
  }
}

std::string LowerWire(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(Lower(static_cast<uint8_t>(c)));
  return out;
}

}  // namespace

ParseOutcome ParseQuery(std::span<const uint8_t> p, Query* out) {
  *out = Query{};
  if (p.size() < kHeaderSize) return ParseOutcome::kDrop;
  uint16_t flags = Get16(p, 2);
  if (flags & 0x8000) return ParseOutcome::kDrop;
  out->id = Get16(p, 0);
  out->opcode = (flags >> 11) & 0xF;
  out->rd = flags & 0x0100;
  out->cd = flags & 0x0010;
  if (out->opcode != 0) return ParseOutcome::kNotImp;
  uint16_t qdcount = Get16(p, 4), ancount = Get16(p, 6), nscount = Get16(p, 8),
           arcount = Get16(p, 10);
  if (qdcount != 1 || ancount != 0 || nscount != 0) return ParseOutcome::kFormErr;

  size_t pos = kHeaderSize;
  std::string wire;
  if (!ReadPlainName(p, &pos, &wire)) return ParseOutcome::kFormErr;
  if (p.size() - pos < 4) return ParseOutcome::kFormErr;
  uint16_t qtype = Get16(p, pos), qclass = Get16(p, pos + 2);
  pos += 4;

  Edns edns;
  bool edns_malformed = false;
  for (uint16_t i = 0; i < arcount; ++i) {
    bool is_root = false;
    if (!SkipName(p, &pos, &is_root)) return ParseOutcome::kFormErr;
    if (p.size() - pos < 10) return ParseOutcome::kFormErr;
    uint16_t rtype = Get16(p, pos), rclass = Get16(p, pos + 2);
    uint32_t ttl = Get32(p, pos + 4);
    uint16_t rdlen = Get16(p, pos + 8);
    pos += 10;
    if (p.size() - pos < rdlen) return ParseOutcome::kFormErr;
    size_t rdata = pos;
    pos += rdlen;
    if (rtype != type::kOPT) continue;
    if (edns.present || !is_root) edns_malformed = true;
    if (edns.present) continue;
    edns.present = true;
    edns.udp_size = std::max<uint16_t>(rclass, 512);
    edns.version = static_cast<uint8_t>(ttl >> 16);
    edns.dnssec_ok = ttl & 0x8000;
    // Options must tile the rdata exactly.
    size_t at = rdata;
    while (at < pos) {
      if (pos - at < 4 || pos - at - 4 < Get16(p, at + 2)) {
        edns_malformed = true;
        break;
      }
      at += 4 + Get16(p, at + 2);
    }
  }
  if (pos != p.size()) return ParseOutcome::kFormErr;  // trailing garbage

  out->qname = WireToPresentation(wire);
  out->qname_wire = std::move(wire);
  out->qtype = qtype;
  out->qclass = qclass;
  out->edns = edns;
  out->edns_malformed = edns_malformed;
  return ParseOutcome::kOk;
}

Result<std::string> NameToWire(std::string_view s) {
  std::string wire;
  if (s == "." || s.empty()) return std::string(1, '\0');
  std::string label;
  bool trailing_dot = false;
  auto flush = [&]() -> Status {
    if (label.empty())
      return InvalidArgument("DNS name '" + std::string(s) + "' has an empty label");
    if (label.size() > kMaxLabel) {
      return InvalidArgument("DNS name '" + std::string(s) + "' has a label longer than 63 bytes");
    }
    wire.push_back(static_cast<char>(label.size()));
    wire += label;
    label.clear();
    return Status::Ok();
  };
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    trailing_dot = false;
    if (c == '.') {
      HC_RETURN_IF_ERROR(flush());
      trailing_dot = true;
      continue;
    }
    if (c != '\\') {
      label.push_back(c);
      continue;
    }
    if (i + 1 >= s.size()) {
      return InvalidArgument("DNS name '" + std::string(s) + "' ends in a lone backslash");
    }
    if (i + 3 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isdigit(static_cast<unsigned char>(s[i + 2])) &&
        std::isdigit(static_cast<unsigned char>(s[i + 3]))) {
      int v = (s[i + 1] - '0') * 100 + (s[i + 2] - '0') * 10 + (s[i + 3] - '0');
      if (v > 255) {
        return InvalidArgument("DNS name '" + std::string(s) + "' has an escape above \\255");
      }
      label.push_back(static_cast<char>(v));
      i += 3;
    } else if (std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
      return InvalidArgument("DNS name '" + std::string(s) + "' has a short \\DDD escape");
    } else {
      label.push_back(s[++i]);
    }
  }
  if (!trailing_dot) {
    HC_RETURN_IF_ERROR(flush());
  }
  wire.push_back('\0');
  if (wire.size() > kMaxNameWire) {
    return InvalidArgument("DNS name '" + std::string(s) +
                           "' is longer than 255 bytes on the wire");
  }
  return wire;
}

std::string WireToPresentation(std::string_view wire) {
  std::string out;
  size_t at = 0;
  while (at < wire.size()) {
    size_t len = static_cast<uint8_t>(wire[at]);
    if (len == 0 || len > kMaxLabel || wire.size() - at - 1 < len) break;
    if (!out.empty()) out.push_back('.');
    AppendPresentationLabel(&out, reinterpret_cast<const uint8_t*>(wire.data()) + at + 1, len);
    at += len + 1;
  }
  return out;
}

ResponseBuilder::ResponseBuilder(const Query& q, bool authoritative, uint16_t rcode)
    : dnssec_ok_(q.edns.dnssec_ok) {
  uint16_t flags = 0x8000 | static_cast<uint16_t>((q.opcode & 0xF) << 11) | (rcode & 0xF);
  if (authoritative) flags |= 0x0400;
  if (q.rd) flags |= 0x0100;
  if (q.cd) flags |= 0x0010;
  Put16(&header_, q.id);
  Put16(&header_, flags);
  for (int i = 0; i < 4; ++i) Put16(&header_, 0);
  if (!q.qname_wire.empty()) {
    HC_CHECK(ValidPlainWire(q.qname_wire), "ResponseBuilder: query has an invalid qname_wire");
    RegisterSuffixes(q.qname_wire, kHeaderSize, LabelOffsets(q.qname_wire).size());
    question_.assign(q.qname_wire.begin(), q.qname_wire.end());
    Put16(&question_, q.qtype);
    Put16(&question_, q.qclass);
  }
  size_ = kHeaderSize + question_.size();
}

void ResponseBuilder::RegisterSuffixes(std::string_view wire, size_t offset, size_t labels) {
  std::vector<size_t> offs = LabelOffsets(wire);
  for (size_t i = 0; i < labels && i < offs.size(); ++i) {
    if (offset + offs[i] > kMaxPointerTarget) break;
    suffixes_.try_emplace(LowerWire(wire.substr(offs[i])), static_cast<uint16_t>(offset + offs[i]));
  }
}

void ResponseBuilder::AppendName(std::vector<uint8_t>* buf, std::string_view presentation,
                                 bool compress) {
  Result<std::string> wire = NameToWire(presentation);
  HC_CHECK(wire.ok(), "ResponseBuilder: " + wire.status().ToString());
  std::vector<size_t> offs = LabelOffsets(*wire);
  size_t literal = offs.size();  // labels written out before a pointer
  uint16_t pointer = 0;
  if (compress) {
    for (size_t i = 0; i < offs.size(); ++i) {
      auto it = suffixes_.find(LowerWire(std::string_view(*wire).substr(offs[i])));
      if (it != suffixes_.end()) {
        literal = i;
        pointer = it->second;
        break;
      }
    }
  }
  size_t start = size_ + buf->size();
  size_t literal_bytes = literal < offs.size() ? offs[literal] : wire->size() - 1;
  buf->insert(buf->end(), wire->begin(), wire->begin() + literal_bytes);
  if (literal < offs.size()) {
    Put16(buf, static_cast<uint16_t>(0xC000 | pointer));
  } else {
    buf->push_back(0);
  }
  RegisterSuffixes(*wire, start, literal);
}

void ResponseBuilder::BeginRecord(Section s, std::vector<uint8_t>* buf, std::string_view owner,
                                  uint16_t rtype, uint32_t ttl) {
  HC_CHECK(s >= last_section_,
           "ResponseBuilder: records must be added in section order (answer, authority, "
           "additional)");
  HC_CHECK(records_.size() < 0xFFFE, "ResponseBuilder: too many records");
  last_section_ = s;
  AppendName(buf, owner, true);
  Put16(buf, rtype);
  Put16(buf, kClassIN);
  Put32(buf, ttl);
  Put16(buf, 0);  // rdlength, fixed by EndRecord
}

void ResponseBuilder::EndRecord(Section s, std::vector<uint8_t> buf, size_t rdata_start) {
  size_t rdlen = buf.size() - rdata_start;
  HC_CHECK(rdlen <= 0xFFFF, "ResponseBuilder: rdata longer than 65535 bytes");
  Set16(&buf, rdata_start - 2, static_cast<uint16_t>(rdlen));
  size_ += buf.size();
  records_.push_back(Record{s, std::move(buf)});
}

void ResponseBuilder::AddA(Section s, std::string_view owner, uint32_t ttl, const uint8_t addr[4]) {
  std::vector<uint8_t> buf;
  BeginRecord(s, &buf, owner, type::kA, ttl);
  size_t rdata = buf.size();
  buf.insert(buf.end(), addr, addr + 4);
  EndRecord(s, std::move(buf), rdata);
}

void ResponseBuilder::AddAaaa(Section s, std::string_view owner, uint32_t ttl,
                              const uint8_t addr[16]) {
  std::vector<uint8_t> buf;
  BeginRecord(s, &buf, owner, type::kAAAA, ttl);
  size_t rdata = buf.size();
  buf.insert(buf.end(), addr, addr + 16);
  EndRecord(s, std::move(buf), rdata);
}

void ResponseBuilder::AddName(Section s, std::string_view owner, uint16_t rtype, uint32_t ttl,
                              std::string_view target) {
  std::vector<uint8_t> buf;
  BeginRecord(s, &buf, owner, rtype, ttl);
  size_t rdata = buf.size();
  bool compress = rtype == type::kNS || rtype == type::kCNAME || rtype == type::kPTR;
  AppendName(&buf, target, compress);
  EndRecord(s, std::move(buf), rdata);
}

void ResponseBuilder::AddSoa(Section s, std::string_view owner, uint32_t ttl,
                             std::string_view mname, std::string_view rname, uint32_t serial,
                             uint32_t refresh, uint32_t retry, uint32_t expire, uint32_t minimum) {
  std::vector<uint8_t> buf;
  BeginRecord(s, &buf, owner, type::kSOA, ttl);
  size_t rdata = buf.size();
  AppendName(&buf, mname, true);
  AppendName(&buf, rname, true);
  for (uint32_t v : {serial, refresh, retry, expire, minimum}) Put32(&buf, v);
  EndRecord(s, std::move(buf), rdata);
}

void ResponseBuilder::AddTxt(Section s, std::string_view owner, uint32_t ttl,
                             std::string_view text) {
  std::vector<uint8_t> buf;
  BeginRecord(s, &buf, owner, type::kTXT, ttl);
  size_t rdata = buf.size();
  do {
    size_t n = std::min<size_t>(text.size(), 255);
    buf.push_back(static_cast<uint8_t>(n));
    buf.insert(buf.end(), text.begin(), text.begin() + n);
    text.remove_prefix(n);
  } while (!text.empty());
  EndRecord(s, std::move(buf), rdata);
}

void ResponseBuilder::AddOpt(uint16_t udp_size, uint16_t extended_rcode, int ede) {
  HC_CHECK(opt_.empty(), "ResponseBuilder: AddOpt called twice");
  last_section_ = kAdditional;
  opt_.push_back(0);  // root owner
  Put16(&opt_, type::kOPT);
  Put16(&opt_, std::max<uint16_t>(udp_size, 512));
  opt_.push_back(static_cast<uint8_t>((extended_rcode >> 4) & 0xFF));
  opt_.push_back(0);  // version
  Put16(&opt_, dnssec_ok_ ? 0x8000 : 0);
  if (ede < 0) {
    Put16(&opt_, 0);  // no options
    return;
  }
  Put16(&opt_, 6);   // rdlength: one option of 2 + 2 + 2 bytes
  Put16(&opt_, 15);  // OPTION-CODE: Extended DNS Error
  Put16(&opt_, 2);   // OPTION-LENGTH: the info-code, no text
  Put16(&opt_, static_cast<uint16_t>(ede));
}

std::vector<uint8_t> ResponseBuilder::Finish(size_t max_size) {
  size_t fixed = header_.size() + question_.size() + opt_.size();
  size_t keep = records_.size();
  size_t total = fixed;
  for (const Record& r : records_) total += r.bytes.size();
  bool tc = false;
  while (keep > 0 && total > max_size) {
    --keep;
    total -= records_[keep].bytes.size();
    if (records_[keep].section != kAdditional) tc = true;
  }
  std::vector<uint8_t> out;
  out.reserve(total);
  out.insert(out.end(), header_.begin(), header_.end());
  out.insert(out.end(), question_.begin(), question_.end());
  uint16_t counts[3] = {0, 0, 0};
  for (size_t i = 0; i < keep; ++i) {
    out.insert(out.end(), records_[i].bytes.begin(), records_[i].bytes.end());
    ++counts[records_[i].section];
  }
  if (!opt_.empty()) {
    out.insert(out.end(), opt_.begin(), opt_.end());
    ++counts[kAdditional];
  }
  if (tc) out[2] |= 0x02;
  Set16(&out, 4, question_.empty() ? 0 : 1);
  Set16(&out, 6, counts[kAnswer]);
  Set16(&out, 8, counts[kAuthority]);
  Set16(&out, 10, counts[kAdditional]);
  return out;
}

}  // namespace hc::dns
