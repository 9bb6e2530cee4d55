// DNS wire format (src/dns/wire.h): ParseQuery sees every untrusted UDP/TCP
// query. Input: one byte choosing the response size limit (512..4096), then
// the packet. Must never crash, and:
//  - a parsed qname converts presentation -> wire back to its lower-cased
//    wire bytes;
//  - a response built for it (question echo, A, SOA in authority, OPT when
//    the query had EDNS) fits the limit, carries the query id, and decodes
//    with every compression pointer pointing backwards;
//  - FORMERR/NOTIMP outcomes still give a buildable header-only response.
#include <stddef.h>
#include <stdint.h>

#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "dns/wire.h"

namespace {

using hc::dns::ParseOutcome;
using hc::dns::Query;
using hc::dns::ResponseBuilder;

void Require(bool cond) {
  if (!cond) std::abort();
}

uint16_t Get16(const std::vector<uint8_t>& p, size_t at) {
  Require(at + 2 <= p.size());
  return static_cast<uint16_t>(p[at] << 8 | p[at + 1]);
}

void SkipName(const std::vector<uint8_t>& p, size_t* pos) {
  size_t at = *pos;
  bool jumped = false;
  for (int hops = 0;; ++hops) {
    Require(hops < 256 && at < p.size());
    uint8_t len = p[at];
    if ((len & 0xC0) == 0xC0) {
      size_t target = static_cast<size_t>(Get16(p, at) & 0x3FFF);
      Require(target < at && target >= hc::dns::kHeaderSize);
      if (!jumped) *pos = at + 2;
      jumped = true;
      at = target;
      continue;
    }
    Require(len <= 63);
    if (len == 0) {
      if (!jumped) *pos = at + 1;
      return;
    }
    at += len + 1;
  }
}

void CheckResponse(const std::vector<uint8_t>& r, uint16_t id) {
  Require(r.size() >= hc::dns::kHeaderSize);
  Require(Get16(r, 0) == id);
  Require(r[2] & 0x80);
  size_t pos = hc::dns::kHeaderSize;
  for (int i = 0; i < Get16(r, 4); ++i) {
    SkipName(r, &pos);
    pos += 4;
  }
  int records = Get16(r, 6) + Get16(r, 8) + Get16(r, 10);
  for (int i = 0; i < records; ++i) {
    SkipName(r, &pos);
    size_t rdlen = Get16(r, pos + 8);
    pos += 10 + rdlen;
  }
  Require(pos == r.size());
}

std::string LowerAscii(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  size_t limit = 512 + static_cast<size_t>(data[0]) * (4096 - 512) / 255;
  std::vector<uint8_t> packet(data + 1, data + size);  // exact size for ASan
  Query q;
  ParseOutcome outcome = hc::dns::ParseQuery(std::span(packet.data(), packet.size()), &q);
  if (outcome == ParseOutcome::kDrop) return 0;
  if (outcome != ParseOutcome::kOk) {
    ResponseBuilder rb(
        q, false,
        outcome == ParseOutcome::kNotImp ? hc::dns::rcode::kNotImp : hc::dns::rcode::kFormErr);
    std::vector<uint8_t> r = rb.Finish(limit);
    Require(r.size() == hc::dns::kHeaderSize);
    CheckResponse(r, q.id);
    return 0;
  }

  hc::Result<std::string> wire = hc::dns::NameToWire(q.qname);
  Require(wire.ok());
  Require(*wire == LowerAscii(q.qname_wire));
  Require(hc::dns::WireToPresentation(*wire) == q.qname);

  ResponseBuilder rb(q, true, q.edns_malformed ? hc::dns::rcode::kFormErr : 0);
  const uint8_t addr[4] = {192, 0, 2, 1};
  rb.AddA(ResponseBuilder::kAnswer, q.qname, 300, addr);
  size_t dot = q.qname.find('.');
  std::string zone = dot == std::string::npos ? "" : q.qname.substr(dot + 1);
  rb.AddSoa(ResponseBuilder::kAuthority, zone, 3600, "ns1.example.com", "hostmaster.example.com", 1,
            7200, 900, 1209600, 300);
  if (q.edns.present) rb.AddOpt(1232, 0);
  std::vector<uint8_t> r = rb.Finish(limit);
  Require(r.size() <= limit);
  CheckResponse(r, q.id);
  Require((r[2] & 0x02) == 0);  // a question + two small records always fit 512
  return 0;
}
