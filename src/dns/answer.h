// Authoritative answers from a ZoneSet. Built once per change of the
// cluster state (Compile), then shared read-only by every server thread.
//
// Every name in the zones (owners, empty non-terminals) gets precompiled
// response images for the common query types (its own types, A, AAAA and
// one NODATA image for the rest); answering an exact name is a hash look-up,
// a copy and four patches (ID, RD/CD flags, the question's letter case and
// type, the DO bit). Wildcard synthesis, NXDOMAIN, REFUSED, errors, and
// images that do not fit the requester's UDP size are built per query.
//
// Behaviour (RFC 1034/1035, 2308, 4592, 6891, 7766, 8020, 8482):
// - AA on every answer from a served zone; REFUSED (no AA) outside them and
//   for classes other than IN; zone transfers REFUSED.
// - NXDOMAIN and NODATA carry the zone's SOA in the authority section, with
//   TTL min(SOA TTL, SOA minimum); an empty non-terminal is NODATA.
// - CNAME: answered with the CNAME and, when the target is in a served zone,
//   the target's records (chains followed up to 8 steps); rcode is the last
//   name's (RFC 6604).
// - NS at an apex: the NS records, plus the name servers' addresses in the
//   additional section.
// - ANY: one RRset (RFC 8482): the CNAME, else A, AAAA, SOA or NS, in that
//   order of preference.
// - Minimal responses: no authority NS on positive answers.
// - EDNS: OPT echoed with our UDP size 1232 and the DO bit; version > 0 ->
//   BADVERS; a malformed OPT -> FORMERR. UDP answers are cut to
//   min(requester's size, 1232) (512 without EDNS) by dropping whole
//   RRsets, with TC when answer or authority data was dropped.
// - Malformed queries: FORMERR when the header is readable, else dropped;
//   other opcodes NOTIMP.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dns/wire.h"
#include "dns/zone.h"

namespace hc::dns {

inline constexpr uint16_t kOurUdpSize = 1232;

class Answerer {
 public:
  static std::shared_ptr<const Answerer> Compile(const ZoneSet& zones);

  // Writes the response to `query` into out and returns its length (0 =
  // send nothing). `max_size` is the transport's limit: 65535 for TCP, the
  // out buffer's size otherwise (UDP sizes are derived from the query).
  size_t Respond(std::span<const uint8_t> query, bool tcp, std::span<uint8_t> out) const;

  uint32_t serial() const { return serial_; }
  size_t names() const { return names_.size(); }
  size_t image_bytes() const { return arena_.size(); }

  struct RRset {
    uint16_t type = 0;
    std::vector<const Record*> records;
  };
  struct ZoneData;
  struct Name {
    const ZoneData* zone = nullptr;
    std::vector<RRset> rrsets;  // empty: an empty non-terminal
    // Precompiled images (with an OPT record at the end), by query type;
    // qtype 0 = the NODATA image for any type this name has nothing for.
    struct Image {
      uint16_t qtype;
      uint32_t offset, length;
    };
    std::vector<Image> images;
    const RRset* Find(uint16_t t) const;
  };
  struct ZoneData {
    std::string apex;
    const Record* soa = nullptr;
  };

 private:
  Answerer() = default;
  struct Plan;
  // Decides the sections for (qname, qtype) in the zone data.
  void PlanAnswer(const std::string& qname, uint16_t qtype, Plan* plan) const;
  std::vector<uint8_t> Build(const Query& q, const Plan& plan, size_t max_size) const;
  const Name* Lookup(std::string_view name) const;
  const ZoneData* ZoneFor(std::string_view name) const;

  ZoneSet zones_;  // owns the records the names point to
  uint32_t serial_ = 0;
  std::vector<std::unique_ptr<ZoneData>> zone_data_;
  std::unordered_map<std::string, Name> names_;  // lower-case presentation -> name
  std::vector<uint8_t> arena_;                   // all images back to back
};

}  // namespace hc::dns
