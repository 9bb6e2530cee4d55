// DNS wire format (RFC 1035, 3596, 6891): parsing queries from untrusted
// packets and building responses with name compression. Pure functions over
// bytes, fuzzed (tests/fuzz/dns_wire_fuzz.cc). The server (issue 8) compiles
// each name's answers into packet images with ResponseBuilder and patches the
// ID, flags and the question's letter case per query.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace hc::dns {

namespace type {
inline constexpr uint16_t kA = 1, kNS = 2, kCNAME = 5, kSOA = 6, kPTR = 12, kMX = 15, kTXT = 16,
                          kAAAA = 28, kSRV = 33, kOPT = 41, kAXFR = 252, kANY = 255;
}
inline constexpr uint16_t kClassIN = 1;

// Extended DNS Error info-codes (RFC 8914) we send.
namespace ede {
inline constexpr int kProhibited = 18, kNotAuthoritative = 20, kNotSupported = 21;
}

namespace rcode {
inline constexpr uint16_t kNoError = 0, kFormErr = 1, kServFail = 2, kNxDomain = 3, kNotImp = 4,
                          kRefused = 5, kBadVers = 16;  // BADVERS needs EDNS (upper 8 bits in OPT)
}

inline constexpr size_t kMaxUdpPayloadDefault = 1232;  // RFC 9715 / DNS flag day 2020
inline constexpr size_t kHeaderSize = 12;

struct Edns {
  bool present = false;
  uint16_t udp_size = 512;  // the requester's, clamped to >= 512
  uint8_t version = 0;
  bool dnssec_ok = false;
};

struct Query {
  uint16_t id = 0;
  uint8_t opcode = 0;
  bool rd = false;  // copied into the response
  bool cd = false;
  // The question: the name as sent (original case, for echoing), its
  // lower-case presentation form without trailing dot ("" = root), type, class.
  std::string qname_wire;  // the uncompressed wire bytes of the name as received
  std::string qname;       // "www.example.com"
  uint16_t qtype = 0;
  uint16_t qclass = 0;
  Edns edns;
  bool edns_malformed = false;  // OPT present but bad (e.g. two OPTs, OPT not at root): FORMERR
};

// What to do with a packet that is not a query we can answer.
enum class ParseOutcome {
  kOk,       // *out filled
  kDrop,     // too short for a header, or a response (QR=1): send nothing
  kFormErr,  // header readable (*out has id/opcode/rd): answer FORMERR
  kNotImp,   // opcode other than QUERY: answer NOTIMP
};

// Parses a query packet. Accepts exactly one question; compression pointers
// in the question are refused (FORMERR) as no sane client sends them there;
// labels 1..63, names <= 255 bytes on the wire; an OPT record in the
// additional section is read (RFC 6891); answer/authority sections must be
// empty. Never reads out of bounds.
ParseOutcome ParseQuery(std::span<const uint8_t> packet, Query* out);

// Name helpers. Presentation form: lower-case, '.'-separated, no trailing
// dot, "" for the root. Labels with bytes outside [a-z0-9-_*] are escaped as
// \DDD in presentation form.
Result<std::string> NameToWire(std::string_view presentation);  // "a.b" -> "\1a\1b\0"
std::string WireToPresentation(std::string_view wire);          // of a validated wire name

// Builds a response: header, the question echoed from the query, then
// records in the answer, authority and additional sections, compressing
// names against names already written (RFC 1035 4.1.4). Finish() drops
// whole records that do not fit a size limit and sets TC.
//
// Records must be added in section order (answer, then authority, then
// additional; AddOpt counts as additional): compression offsets are fixed at
// add time, and only dropping from the end keeps them valid. Adding out of
// order, or passing a name NameToWire rejects, is a programming error and
// aborts (HC_CHECK): validate zone data with NameToWire first. Not
// thread-safe; one builder per packet image.
class ResponseBuilder {
 public:
  enum Section { kAnswer, kAuthority, kAdditional };

  // Header from the query: same id, opcode, rd, cd; QR=1; AA as given.
  ResponseBuilder(const Query& q, bool authoritative, uint16_t rcode);

  // rdata helpers for the common types (names inside rdata are compressed
  // where RFC 3597 allows: NS, CNAME, PTR, SOA, MX). Owner and target names
  // are in presentation form (a trailing dot is accepted); class is IN. TXT
  // text longer than 255 bytes is split into several character-strings.
  void AddA(Section s, std::string_view owner, uint32_t ttl, const uint8_t addr[4]);
  void AddAaaa(Section s, std::string_view owner, uint32_t ttl, const uint8_t addr[16]);
  void AddName(Section s, std::string_view owner, uint16_t rtype, uint32_t ttl,
               std::string_view target);  // NS, CNAME, PTR
  void AddSoa(Section s, std::string_view owner, uint32_t ttl, std::string_view mname,
              std::string_view rname, uint32_t serial, uint32_t refresh, uint32_t retry,
              uint32_t expire, uint32_t minimum);
  void AddTxt(Section s, std::string_view owner, uint32_t ttl, std::string_view text);
  // An OPT record (EDNS) in the additional section, with the extended rcode
  // bits and our UDP size (clamped to >= 512). `extended_rcode` is the full
  // 12-bit rcode (e.g. rcode::kBadVers); its upper 8 bits go into the OPT,
  // the lower 4 bits come from the constructor's rcode. The query's DO bit is
  // echoed (RFC 3225); version 0. `ede` >= 0 adds an Extended DNS Error
  // option (RFC 8914) with that info-code and no text. At most once per
  // builder.
  void AddOpt(uint16_t udp_size, uint16_t extended_rcode, int ede = -1);

  // The finished packet. If it exceeds max_size, records are removed from
  // the end (additional first, then authority, then answer), TC is set when
  // an answer or authority record had to go, and the OPT record is kept
  // (always written last). The kept records are a prefix of those added.
  // The result exceeds max_size only if header + question + OPT alone do
  // (never for max_size >= 512). Does not change the builder: it may be
  // called again with another limit.
  std::vector<uint8_t> Finish(size_t max_size);

 private:
  // Records are kept until Finish so truncation can drop whole records from
  // the end. Compression offsets are computed at add time against everything
  // before the record, so any prefix of records_ stays valid. The OPT record
  // holds no compressible name and is kept apart, always written last.
  struct Record {
    Section section;
    std::vector<uint8_t> bytes;  // owner..rdata, compressed against earlier records
  };
  void BeginRecord(Section s, std::vector<uint8_t>* buf, std::string_view owner, uint16_t rtype,
                   uint32_t ttl);
  void EndRecord(Section s, std::vector<uint8_t> buf, size_t rdata_start);
  // Appends `presentation` (aborts if invalid) at packet offset size_ +
  // buf->size(), as a pointer to the longest known suffix when `compress`.
  void AppendName(std::vector<uint8_t>* buf, std::string_view presentation, bool compress);
  // Remembers the first `labels` suffixes of `wire`, written at `offset`.
  void RegisterSuffixes(std::string_view wire, size_t offset, size_t labels);

  std::vector<uint8_t> header_;
  std::vector<uint8_t> question_;
  std::vector<Record> records_;
  std::vector<uint8_t> opt_;
  std::unordered_map<std::string, uint16_t> suffixes_;  // lower-case wire suffix -> offset
  size_t size_ = 0;  // header + question + records_ (without opt_)
  Section last_section_ = kAnswer;
  bool dnssec_ok_ = false;
};

}  // namespace hc::dns
