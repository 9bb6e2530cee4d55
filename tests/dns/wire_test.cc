#include "dns/wire.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace hc::dns {
namespace {

using Bytes = std::vector<uint8_t>;

// ---- Hand-built queries -------------------------------------------------

void Put16(Bytes* b, uint16_t v) {
  b->push_back(static_cast<uint8_t>(v >> 8));
  b->push_back(static_cast<uint8_t>(v));
}
void Put32(Bytes* b, uint32_t v) {
  Put16(b, static_cast<uint16_t>(v >> 16));
  Put16(b, static_cast<uint16_t>(v));
}

Bytes Header(uint16_t id, uint16_t flags, uint16_t qd, uint16_t an, uint16_t ns, uint16_t ar) {
  Bytes b;
  for (uint16_t v : {id, flags, qd, an, ns, ar}) Put16(&b, v);
  return b;
}

void Append(Bytes* b, std::string_view s) {
  b->insert(b->end(), s.begin(), s.end());
}

// An OPT pseudo-record with root owner.
void AppendOpt(Bytes* b, uint16_t udp, uint8_t ext_rcode, uint8_t version, bool do_bit,
               const Bytes& options = {}) {
  b->push_back(0);
  Put16(b, type::kOPT);
  Put16(b, udp);
  b->push_back(ext_rcode);
  b->push_back(version);
  Put16(b, do_bit ? 0x8000 : 0);
  Put16(b, static_cast<uint16_t>(options.size()));
  b->insert(b->end(), options.begin(), options.end());
}

const std::string kWww("\3www\7example\3com\0", 17);

// A standard query as `dig www.example.com A` sends it (RD set), optionally
// with EDNS (udp 4096, DO as given), like `dig +dnssec`.
Bytes StandardQuery(uint16_t id, std::string_view qname_wire, uint16_t qtype, bool edns,
                    bool do_bit = false) {
  Bytes b = Header(id, 0x0100, 1, 0, 0, edns ? 1 : 0);
  Append(&b, qname_wire);
  Put16(&b, qtype);
  Put16(&b, kClassIN);
  if (edns) AppendOpt(&b, 4096, 0, 0, do_bit);
  return b;
}

ParseOutcome Parse(const Bytes& b, Query* q) {
  return ParseQuery(std::span(b.data(), b.size()), q);
}

// ---- An independent decoder for responses -------------------------------

struct Rr {
  std::string name;  // lower-case dotted, "" = root
  uint16_t type = 0, cls = 0;
  uint32_t ttl = 0;
  Bytes rdata;
  std::vector<std::string> rdata_names;  // NS/CNAME/PTR target, SOA mname+rname
  size_t wire_size = 0;
};

struct Packet {
  uint16_t id = 0, flags = 0;
  uint16_t counts[4] = {0, 0, 0, 0};
  std::string qname;
  uint16_t qtype = 0, qclass = 0;
  std::vector<Rr> sections[3];
};

// Decodes a possibly compressed name; every pointer must point to an earlier
// offset than the pointer itself.
std::string DecodeName(const Bytes& p, size_t* pos) {
  std::string out;
  size_t at = *pos;
  bool jumped = false;
  for (int guard = 0; guard < 300; ++guard) {
    EXPECT_LT(at, p.size());
    if (at >= p.size()) return out;
    uint8_t len = p[at];
    if ((len & 0xC0) == 0xC0) {
      EXPECT_LT(at + 1, p.size());
      size_t target = ((len & 0x3F) << 8) | p[at + 1];
      EXPECT_LT(target, at) << "pointer must point backwards";
      EXPECT_GE(target, kHeaderSize);
      if (target >= at) return out;
      if (!jumped) *pos = at + 2;
      jumped = true;
      at = target;
      continue;
    }
    EXPECT_LE(len, 63);
    if (len == 0) {
      if (!jumped) *pos = at + 1;
      return out;
    }
    EXPECT_LE(at + 1 + len, p.size());
    if (!out.empty()) out += '.';
    for (size_t i = 0; i < len; ++i) out += static_cast<char>(std::tolower(p[at + 1 + i]));
    at += len + 1;
  }
  ADD_FAILURE() << "name loop";
  return out;
}

uint16_t Get16(const Bytes& p, size_t at) {
  return static_cast<uint16_t>(p[at] << 8 | p[at + 1]);
}
uint32_t Get32(const Bytes& p, size_t at) {
  return static_cast<uint32_t>(Get16(p, at)) << 16 | Get16(p, at + 2);
}

Packet Decode(const Bytes& p) {
  Packet d;
  EXPECT_GE(p.size(), kHeaderSize);
  d.id = Get16(p, 0);
  d.flags = Get16(p, 2);
  for (int i = 0; i < 4; ++i) d.counts[i] = Get16(p, 4 + 2 * i);
  size_t pos = kHeaderSize;
  if (d.counts[0] == 1) {
    d.qname = DecodeName(p, &pos);
    d.qtype = Get16(p, pos);
    d.qclass = Get16(p, pos + 2);
    pos += 4;
  }
  for (int s = 0; s < 3; ++s) {
    for (int i = 0; i < d.counts[s + 1]; ++i) {
      Rr rr;
      size_t start = pos;
      rr.name = DecodeName(p, &pos);
      EXPECT_LE(pos + 10, p.size());
      rr.type = Get16(p, pos);
      rr.cls = Get16(p, pos + 2);
      rr.ttl = Get32(p, pos + 4);
      uint16_t rdlen = Get16(p, pos + 8);
      pos += 10;
      EXPECT_LE(pos + rdlen, p.size());
      rr.rdata.assign(p.begin() + pos, p.begin() + pos + rdlen);
      size_t rd = pos;
      if (rr.type == type::kNS || rr.type == type::kCNAME || rr.type == type::kPTR) {
        rr.rdata_names.push_back(DecodeName(p, &rd));
        EXPECT_EQ(rd, pos + rdlen);
      } else if (rr.type == type::kSOA) {
        rr.rdata_names.push_back(DecodeName(p, &rd));
        rr.rdata_names.push_back(DecodeName(p, &rd));
        EXPECT_EQ(rd + 20, pos + rdlen);
      }
      pos += rdlen;
      rr.wire_size = pos - start;
      d.sections[s].push_back(rr);
    }
  }
  EXPECT_EQ(pos, p.size()) << "trailing bytes in response";
  return d;
}

Query ParsedWww(bool edns = false, bool do_bit = false) {
  Query q;
  EXPECT_EQ(Parse(StandardQuery(0x1234, kWww, type::kA, edns, do_bit), &q), ParseOutcome::kOk);
  return q;
}

// ---- ParseQuery ------------------------------------------------------------

TEST(DnsParse, AcceptsStandardQuery) {
  Query q;
  ASSERT_EQ(Parse(StandardQuery(0xBEEF, kWww, type::kAAAA, false), &q), ParseOutcome::kOk);
  EXPECT_EQ(q.id, 0xBEEF);
  EXPECT_EQ(q.opcode, 0);
  EXPECT_TRUE(q.rd);
  EXPECT_FALSE(q.cd);
  EXPECT_EQ(q.qname, "www.example.com");
  EXPECT_EQ(q.qname_wire, kWww);
  EXPECT_EQ(q.qtype, type::kAAAA);
  EXPECT_EQ(q.qclass, kClassIN);
  EXPECT_FALSE(q.edns.present);
  EXPECT_FALSE(q.edns_malformed);
}

TEST(DnsParse, PreservesCaseOnWireAndLowersPresentation) {
  std::string mixed("\3WwW\7ExAmPlE\3COM\0", 17);
  Query q;
  ASSERT_EQ(Parse(StandardQuery(1, mixed, type::kA, false), &q), ParseOutcome::kOk);
  EXPECT_EQ(q.qname_wire, mixed);
  EXPECT_EQ(q.qname, "www.example.com");
}

TEST(DnsParse, ReadsEdnsWithDoBitAndUdpSize) {
  Query q;
  ASSERT_EQ(Parse(StandardQuery(7, kWww, type::kA, true, true), &q), ParseOutcome::kOk);
  EXPECT_TRUE(q.edns.present);
  EXPECT_EQ(q.edns.udp_size, 4096);
  EXPECT_EQ(q.edns.version, 0);
  EXPECT_TRUE(q.edns.dnssec_ok);
  EXPECT_FALSE(q.edns_malformed);
}

TEST(DnsParse, ClampsSmallEdnsUdpSizeAndReadsVersionAndOptions) {
  Bytes b = Header(7, 0, 1, 0, 0, 1);
  Append(&b, kWww);
  Put16(&b, type::kA);
  Put16(&b, kClassIN);
  Bytes cookie = {0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8};  // COOKIE option, client part
  AppendOpt(&b, 100, 0, 1, false, cookie);
  Query q;
  ASSERT_EQ(Parse(b, &q), ParseOutcome::kOk);
  EXPECT_EQ(q.edns.udp_size, 512);
  EXPECT_EQ(q.edns.version, 1);
  EXPECT_FALSE(q.edns.dnssec_ok);
  EXPECT_FALSE(q.edns_malformed);
}

TEST(DnsParse, FlagsTwoOptsAsMalformedEdns) {
  Bytes b = Header(7, 0, 1, 0, 0, 2);
  Append(&b, kWww);
  Put16(&b, type::kA);
  Put16(&b, kClassIN);
  AppendOpt(&b, 4096, 0, 0, false);
  AppendOpt(&b, 4096, 0, 0, false);
  Query q;
  ASSERT_EQ(Parse(b, &q), ParseOutcome::kOk);
  EXPECT_TRUE(q.edns.present);
  EXPECT_TRUE(q.edns_malformed);
}

TEST(DnsParse, FlagsNonRootOptAsMalformedEdns) {
  Bytes b = Header(7, 0, 1, 0, 0, 1);
  Append(&b, kWww);
  Put16(&b, type::kA);
  Put16(&b, kClassIN);
  Bytes opt;
  AppendOpt(&opt, 4096, 0, 0, false);
  b.push_back(0xC0);  // owner = pointer to the qname
  b.push_back(12);
  b.insert(b.end(), opt.begin() + 1, opt.end());
  Query q;
  ASSERT_EQ(Parse(b, &q), ParseOutcome::kOk);
  EXPECT_TRUE(q.edns_malformed);
}

TEST(DnsParse, FlagsOptWithRaggedOptionsAsMalformedEdns) {
  Bytes b = Header(7, 0, 1, 0, 0, 1);
  Append(&b, kWww);
  Put16(&b, type::kA);
  Put16(&b, kClassIN);
  AppendOpt(&b, 4096, 0, 0, false, Bytes{0, 10, 0, 9, 1, 2});
  Query q;
  ASSERT_EQ(Parse(b, &q), ParseOutcome::kOk);
  EXPECT_TRUE(q.edns_malformed);
}

TEST(DnsParse, IgnoresOtherAdditionalRecords) {
  Bytes b = Header(9, 0, 1, 0, 0, 2);
  Append(&b, kWww);
  Put16(&b, type::kA);
  Put16(&b, kClassIN);
  b.push_back(0xC0);  // compressed owner pointing at the question: fine here
  b.push_back(12);
  Put16(&b, type::kA);
  Put16(&b, kClassIN);
  Put32(&b, 60);
  Put16(&b, 4);
  Append(&b, "\1\2\3\4");
  AppendOpt(&b, 1232, 0, 0, false);
  Query q;
  ASSERT_EQ(Parse(b, &q), ParseOutcome::kOk);
  EXPECT_TRUE(q.edns.present);
  EXPECT_EQ(q.edns.udp_size, 1232);
  EXPECT_FALSE(q.edns_malformed);
}

TEST(DnsParse, RootAndEscapedNames) {
  Query q;
  ASSERT_EQ(Parse(StandardQuery(1, std::string(1, '\0'), type::kNS, false), &q), ParseOutcome::kOk);
  EXPECT_EQ(q.qname, "");
  EXPECT_EQ(q.qname_wire, std::string(1, '\0'));
  std::string odd("\3a.b\2 *\0", 8);
  ASSERT_EQ(Parse(StandardQuery(1, odd, type::kA, false), &q), ParseOutcome::kOk);
  EXPECT_EQ(q.qname, "a\\046b.\\032*");
  Result<std::string> back = NameToWire(q.qname);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, odd);
}

TEST(DnsParse, DropsShortPacketsAndResponses) {
  Query q;
  for (size_t n = 0; n < kHeaderSize; ++n) {
    Bytes b(n, 0);
    EXPECT_EQ(Parse(b, &q), ParseOutcome::kDrop) << n;
  }
  Bytes resp = StandardQuery(1, kWww, type::kA, false);
  resp[2] |= 0x80;
  EXPECT_EQ(Parse(resp, &q), ParseOutcome::kDrop);
}

TEST(DnsParse, AnswersNotImpForOtherOpcodes) {
  for (uint8_t opcode : {1, 2, 4, 5, 15}) {
    Bytes b = StandardQuery(0x4242, kWww, type::kSOA, false);
    b[2] = static_cast<uint8_t>((b[2] & 0x87) | (opcode << 3));
    Query q;
    EXPECT_EQ(Parse(b, &q), ParseOutcome::kNotImp) << int(opcode);
    EXPECT_EQ(q.id, 0x4242);
    EXPECT_EQ(q.opcode, opcode);
    EXPECT_TRUE(q.rd);
  }
}

Bytes WithQuestion(Bytes header, std::string_view name) {
  Append(&header, name);
  Put16(&header, type::kA);
  Put16(&header, kClassIN);
  return header;
}

TEST(DnsParse, FormErrClasses) {
  struct Case {
    const char* what;
    Bytes packet;
  };
  std::string label64 = std::string(1, 64) + std::string(64, 'a') + std::string(1, '\0');
  std::string long_name;  // 4 * 64 + 1 = 257 bytes on the wire
  for (int i = 0; i < 4; ++i) long_name += std::string(1, 63) + std::string(63, 'a');
  long_name.push_back('\0');
  std::string max_name;  // exactly 255: 3 * 64 + 62 + 1
  for (int i = 0; i < 3; ++i) max_name += std::string(1, 63) + std::string(63, 'a');
  max_name += std::string(1, 61) + std::string(61, 'b');
  max_name.push_back('\0');
  ASSERT_EQ(max_name.size(), 255u);
  {
    Query ok;
    EXPECT_EQ(Parse(WithQuestion(Header(1, 0, 1, 0, 0, 0), max_name), &ok), ParseOutcome::kOk);
  }
  Bytes pointer_q = Header(1, 0, 1, 0, 0, 0);
  Append(&pointer_q, std::string("\3www\xC0\x0C", 6));
  Put16(&pointer_q, 1);
  Put16(&pointer_q, 1);
  Bytes trailing = StandardQuery(1, kWww, type::kA, false);
  trailing.push_back(0);
  Bytes fwd_ptr = Header(1, 0, 1, 0, 0, 1);
  Append(&fwd_ptr, kWww);
  Put16(&fwd_ptr, 1);
  Put16(&fwd_ptr, 1);
  fwd_ptr.push_back(0xC0);
  fwd_ptr.push_back(static_cast<uint8_t>(fwd_ptr.size() - 1));  // points at itself
  Put16(&fwd_ptr, 1);
  Put16(&fwd_ptr, 1);
  Put32(&fwd_ptr, 0);
  Put16(&fwd_ptr, 0);
  Bytes short_rdata = StandardQuery(1, kWww, type::kA, true);
  short_rdata[short_rdata.size() - 1] = 5;  // OPT rdlength 5, nothing follows

  std::vector<Case> cases = {
      {"qdcount 0", Header(1, 0x0100, 0, 0, 0, 0)},
      {"qdcount 2", WithQuestion(WithQuestion(Header(1, 0, 2, 0, 0, 0), kWww), kWww)},
      {"ancount 1", WithQuestion(Header(1, 0, 1, 1, 0, 0), kWww)},
      {"nscount 1", WithQuestion(Header(1, 0, 1, 0, 1, 0), kWww)},
      {"pointer in question", pointer_q},
      {"label of 64", WithQuestion(Header(1, 0, 1, 0, 0, 0), label64)},
      {"extended label type", WithQuestion(Header(1, 0, 1, 0, 0, 0), std::string("\x41\0", 2))},
      {"name over 255", WithQuestion(Header(1, 0, 1, 0, 0, 0), long_name)},
      {"trailing garbage", trailing},
      {"arcount without records", WithQuestion(Header(1, 0, 1, 0, 0, 1), kWww)},
      {"self pointer in additional", fwd_ptr},
      {"rdata past the end", short_rdata},
  };
  for (const Case& c : cases) {
    Query q;
    EXPECT_EQ(Parse(c.packet, &q), ParseOutcome::kFormErr) << c.what;
    EXPECT_EQ(q.id, 1) << c.what;
  }
}

TEST(DnsParse, EveryTruncationIsDropOrFormErr) {
  std::vector<Bytes> packets = {
      StandardQuery(1, kWww, type::kA, false),
      StandardQuery(2, kWww, type::kAAAA, true, true),
      StandardQuery(3, std::string(1, '\0'), type::kNS, true),
  };
  Bytes extra = Header(9, 0, 1, 0, 0, 2);
  Append(&extra, kWww);
  Put16(&extra, 1);
  Put16(&extra, 1);
  extra.push_back(0xC0);
  extra.push_back(12);
  Put16(&extra, 1);
  Put16(&extra, 1);
  Put32(&extra, 60);
  Put16(&extra, 4);
  Append(&extra, "\1\2\3\4");
  AppendOpt(&extra, 1232, 0, 0, false, Bytes{0, 10, 0, 2, 9, 9});
  packets.push_back(extra);
  for (const Bytes& full : packets) {
    Query q;
    ASSERT_EQ(Parse(full, &q), ParseOutcome::kOk);
    for (size_t n = 0; n < full.size(); ++n) {
      Bytes cut(full.begin(), full.begin() + n);  // exact-size copy: ASan sees overruns
      ParseOutcome o = Parse(cut, &q);
      if (n < kHeaderSize) {
        EXPECT_EQ(o, ParseOutcome::kDrop) << n;
      } else {
        EXPECT_EQ(o, ParseOutcome::kFormErr) << n;
      }
    }
  }
}

// ---- Names -------------------------------------------------------------------

TEST(DnsNames, ConvertsBetweenPresentationAndWire) {
  EXPECT_EQ(*NameToWire("www.example.com"), kWww);
  EXPECT_EQ(*NameToWire("www.example.com."), kWww);
  EXPECT_EQ(*NameToWire(""), std::string(1, '\0'));
  EXPECT_EQ(*NameToWire("."), std::string(1, '\0'));
  EXPECT_EQ(*NameToWire("a\\.b.c"), std::string("\3a.b\1c\0", 7));
  EXPECT_EQ(*NameToWire("\\065"), std::string("\1A\0", 3));
  EXPECT_EQ(WireToPresentation(kWww), "www.example.com");
  EXPECT_EQ(WireToPresentation(std::string(1, '\0')), "");
  EXPECT_EQ(WireToPresentation(std::string("\3A\x01Z\0", 5)), "a\\001z");
}

TEST(DnsNames, RejectsInvalidNames) {
  for (std::string bad : std::vector<std::string>{"a..b", ".a", "a\\", "a\\25", "a\\256",
                                                  std::string(64, 'x') + ".com", "..", "a.."}) {
    Result<std::string> r = NameToWire(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_NE(r.status().message().find("DNS name"), std::string::npos);
    }
  }
  std::string n;
  for (int i = 0; i < 4; ++i) n += std::string(63, 'a') + ".";
  EXPECT_FALSE(NameToWire(n).ok());  // 257 bytes on the wire
  n = std::string(63, 'a') + "." + std::string(63, 'a') + "." + std::string(63, 'a') + "." +
      std::string(61, 'a');
  EXPECT_TRUE(NameToWire(n).ok());  // exactly 255
  EXPECT_TRUE(NameToWire(std::string(63, 'x')).ok());
}

// ---- ResponseBuilder -------------------------------------------------------

const uint8_t kAddr4[4] = {192, 0, 2, 1};
const uint8_t kAddr6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

TEST(DnsBuilder, HeaderCopiesQueryFields) {
  Bytes b = StandardQuery(0xABCD, kWww, type::kA, false);
  b[3] |= 0x10;  // CD
  Query q;
  ASSERT_EQ(Parse(b, &q), ParseOutcome::kOk);
  ResponseBuilder rb(q, true, rcode::kNxDomain);
  Bytes out = rb.Finish(512);
  Packet d = Decode(out);
  EXPECT_EQ(d.id, 0xABCD);
  EXPECT_EQ(d.flags, 0x8000 | 0x0400 | 0x0100 | 0x0010 | rcode::kNxDomain);
  EXPECT_EQ(d.counts[0], 1);
  EXPECT_EQ(d.qname, "www.example.com");
  EXPECT_EQ(d.qtype, type::kA);
  // The question is echoed byte for byte.
  EXPECT_EQ(std::string(out.begin() + 12, out.begin() + 29), kWww);
}

TEST(DnsBuilder, BuildsCommonRecordTypes) {
  Query q = ParsedWww(true, true);
  ResponseBuilder rb(q, true, rcode::kNoError);
  rb.AddName(ResponseBuilder::kAnswer, "www.example.com", type::kCNAME, 300, "web.example.com");
  rb.AddA(ResponseBuilder::kAnswer, "web.example.com", 60, kAddr4);
  rb.AddAaaa(ResponseBuilder::kAnswer, "web.example.com", 60, kAddr6);
  rb.AddTxt(ResponseBuilder::kAnswer, "web.example.com", 60, "hello world");
  rb.AddSoa(ResponseBuilder::kAuthority, "example.com", 3600, "ns1.example.com",
            "hostmaster.example.com", 2024010101, 7200, 900, 1209600, 300);
  rb.AddName(ResponseBuilder::kAuthority, "example.com", type::kNS, 3600, "ns1.example.com");
  rb.AddA(ResponseBuilder::kAdditional, "ns1.example.com", 3600, kAddr4);
  rb.AddOpt(1232, 0);
  Bytes out = rb.Finish(kMaxUdpPayloadDefault);
  Packet d = Decode(out);
  EXPECT_EQ(d.flags & 0x0200, 0) << "TC";
  ASSERT_EQ(d.counts[1], 4);
  ASSERT_EQ(d.counts[2], 2);
  ASSERT_EQ(d.counts[3], 2);
  const auto& an = d.sections[0];
  EXPECT_EQ(an[0].name, "www.example.com");
  EXPECT_EQ(an[0].type, type::kCNAME);
  EXPECT_EQ(an[0].cls, kClassIN);
  EXPECT_EQ(an[0].ttl, 300u);
  EXPECT_EQ(an[0].rdata_names[0], "web.example.com");
  EXPECT_EQ(an[1].type, type::kA);
  EXPECT_EQ(an[1].rdata, Bytes(kAddr4, kAddr4 + 4));
  EXPECT_EQ(an[2].type, type::kAAAA);
  EXPECT_EQ(an[2].rdata, Bytes(kAddr6, kAddr6 + 16));
  EXPECT_EQ(an[3].type, type::kTXT);
  Bytes txt = {11};
  Append(&txt, "hello world");
  EXPECT_EQ(an[3].rdata, txt);
  const auto& ns = d.sections[1];
  EXPECT_EQ(ns[0].type, type::kSOA);
  EXPECT_EQ(ns[0].name, "example.com");
  EXPECT_EQ(ns[0].rdata_names,
            (std::vector<std::string>{"ns1.example.com", "hostmaster.example.com"}));
  const Bytes& soa = ns[0].rdata;
  size_t t = soa.size() - 20;
  EXPECT_EQ(Get32(soa, t), 2024010101u);
  EXPECT_EQ(Get32(soa, t + 4), 7200u);
  EXPECT_EQ(Get32(soa, t + 8), 900u);
  EXPECT_EQ(Get32(soa, t + 12), 1209600u);
  EXPECT_EQ(Get32(soa, t + 16), 300u);
  EXPECT_EQ(ns[1].type, type::kNS);
  EXPECT_EQ(ns[1].rdata_names[0], "ns1.example.com");
  const auto& ar = d.sections[2];
  EXPECT_EQ(ar[0].name, "ns1.example.com");
  EXPECT_EQ(ar[1].type, type::kOPT);
  EXPECT_EQ(ar[1].name, "");
  EXPECT_EQ(ar[1].cls, 1232);
  EXPECT_EQ(ar[1].ttl, 0x8000u) << "DO echoed, ext rcode 0, version 0";
  // NS rdata "ns1.example.com" is a bare pointer to the SOA's mname; the
  // SOA's mname is "\3ns1" + a pointer to "example.com".
  EXPECT_EQ(ns[1].rdata.size(), 2u);
  EXPECT_EQ(ns[0].rdata[0], 3);
  EXPECT_EQ(ns[0].rdata[4], 0xC0);
}

TEST(DnsBuilder, CompressionShortensRepeatedOwners) {
  Query q = ParsedWww();
  ResponseBuilder rb(q, true, rcode::kNoError);
  for (int i = 0; i < 10; ++i) rb.AddA(ResponseBuilder::kAnswer, "www.example.com", 60, kAddr4);
  Bytes out = rb.Finish(4096);
  EXPECT_EQ(out.size(), 12 + 17 + 4 + 10 * 16u);
  Packet d = Decode(out);
  ASSERT_EQ(d.sections[0].size(), 10u);
  for (const Rr& rr : d.sections[0]) {
    EXPECT_EQ(rr.name, "www.example.com");
    EXPECT_EQ(rr.wire_size, 16u);
  }

  // Without the name in the question, the first owner is written out and
  // the rest point at it.
  Query other;
  ASSERT_EQ(Parse(StandardQuery(1, std::string("\7example\3org\0", 13), type::kA, false), &other),
            ParseOutcome::kOk);
  ResponseBuilder rb2(other, true, rcode::kNoError);
  for (int i = 0; i < 10; ++i) rb2.AddA(ResponseBuilder::kAnswer, "www.example.com", 60, kAddr4);
  Packet d2 = Decode(rb2.Finish(4096));
  ASSERT_EQ(d2.sections[0].size(), 10u);
  EXPECT_EQ(d2.sections[0][0].wire_size, 17u + 10 + 4);
  for (size_t i = 1; i < 10; ++i) EXPECT_EQ(d2.sections[0][i].wire_size, 16u);
}

TEST(DnsBuilder, CompressesLongestSuffixCaseInsensitively) {
  std::string mixed("\3WWW\7Example\3COM\0", 17);
  Query q;
  ASSERT_EQ(Parse(StandardQuery(1, mixed, type::kA, false), &q), ParseOutcome::kOk);
  ResponseBuilder rb(q, true, rcode::kNoError);
  rb.AddA(ResponseBuilder::kAnswer, "www.example.com", 60, kAddr4);
  rb.AddA(ResponseBuilder::kAnswer, "mail.example.com", 60, kAddr4);
  rb.AddA(ResponseBuilder::kAnswer, "x.mail.EXAMPLE.com", 60, kAddr4);
  Bytes out = rb.Finish(4096);
  size_t at = 12 + 17 + 4;
  EXPECT_EQ(out[at], 0xC0);  // www.example.com -> the question
  EXPECT_EQ(out[at + 1], 12);
  at += 16;
  EXPECT_EQ(std::string(out.begin() + at, out.begin() + at + 5), "\4mail");
  EXPECT_EQ(out[at + 5], 0xC0);  // -> "Example.COM" inside the question
  EXPECT_EQ(out[at + 6], 16);
  size_t mail = at;
  at += 7 + 14;
  EXPECT_EQ(std::string(out.begin() + at, out.begin() + at + 2), "\1x");
  EXPECT_EQ(Get16(out, at + 2), 0xC000 | mail);
  Packet d = Decode(out);
  EXPECT_EQ(d.sections[0][2].name, "x.mail.example.com");
}

TEST(DnsBuilder, SplitsLongTxtIntoStrings) {
  Query q = ParsedWww();
  ResponseBuilder rb(q, true, rcode::kNoError);
  rb.AddTxt(ResponseBuilder::kAnswer, "www.example.com", 60, std::string(300, 'z'));
  rb.AddTxt(ResponseBuilder::kAnswer, "www.example.com", 60, "");
  Packet d = Decode(rb.Finish(4096));
  ASSERT_EQ(d.sections[0].size(), 2u);
  const Bytes& r = d.sections[0][0].rdata;
  ASSERT_EQ(r.size(), 302u);
  EXPECT_EQ(r[0], 255);
  EXPECT_EQ(r[256], 45);
  EXPECT_EQ(d.sections[0][1].rdata, Bytes{0});
}

TEST(DnsBuilder, TruncationDropsFromTheEndSetsTcAndKeepsOpt) {
  Query q = ParsedWww(true);
  ResponseBuilder rb(q, true, rcode::kNoError);
  for (int i = 0; i < 20; ++i) {
    rb.AddTxt(ResponseBuilder::kAnswer, "www.example.com", 60, std::string(40, 'a' + i));
  }
  rb.AddSoa(ResponseBuilder::kAuthority, "example.com", 3600, "ns1.example.com",
            "hostmaster.example.com", 1, 2, 3, 4, 5);
  rb.AddOpt(1232, 0);
  Bytes full = rb.Finish(4096);
  Packet df = Decode(full);
  EXPECT_EQ(df.flags & 0x0200, 0);
  EXPECT_EQ(df.counts[1], 20);
  EXPECT_EQ(df.counts[2], 1);
  EXPECT_EQ(df.counts[3], 1);

  Bytes cut = rb.Finish(512);
  EXPECT_LE(cut.size(), 512u);
  Packet d = Decode(cut);
  EXPECT_NE(d.flags & 0x0200, 0) << "TC";
  EXPECT_EQ(d.counts[2], 0);
  EXPECT_GT(d.counts[1], 0);
  EXPECT_LT(d.counts[1], 20);
  ASSERT_EQ(d.counts[3], 1);
  EXPECT_EQ(d.sections[2][0].type, type::kOPT);
  for (int i = 0; i < d.counts[1]; ++i) {
    EXPECT_EQ(d.sections[0][i].rdata[1], 'a' + i) << "kept a prefix of the answers";
  }
  // Finish does not consume the builder.
  EXPECT_EQ(rb.Finish(4096), full);
}

TEST(DnsBuilder, DroppingOnlyAdditionalRecordsDoesNotSetTc) {
  Query q = ParsedWww(true);
  ResponseBuilder rb(q, true, rcode::kNoError);
  rb.AddA(ResponseBuilder::kAnswer, "www.example.com", 60, kAddr4);
  for (int i = 0; i < 40; ++i) {
    rb.AddAaaa(ResponseBuilder::kAdditional, "ns" + std::to_string(i) + ".example.net", 60, kAddr6);
  }
  rb.AddOpt(1232, 0);
  Bytes out = rb.Finish(512);
  EXPECT_LE(out.size(), 512u);
  Packet d = Decode(out);
  EXPECT_EQ(d.flags & 0x0200, 0);
  EXPECT_EQ(d.counts[1], 1);
  EXPECT_LT(d.counts[3], 41);
  EXPECT_EQ(d.sections[2].back().type, type::kOPT);
}

TEST(DnsBuilder, ExtendedRcodeGoesIntoOpt) {
  Query q = ParsedWww(true);
  ResponseBuilder rb(q, false, rcode::kBadVers);
  rb.AddOpt(1232, rcode::kBadVers);
  Packet d = Decode(rb.Finish(512));
  EXPECT_EQ(d.flags & 0x000F, rcode::kBadVers & 0xF);
  EXPECT_EQ(d.flags & 0x0400, 0);
  ASSERT_EQ(d.sections[2].size(), 1u);
  EXPECT_EQ(d.sections[2][0].ttl >> 24, 1u);
}

TEST(DnsBuilder, FormErrResponseWithoutQuestion) {
  Query q;
  ASSERT_EQ(Parse(Header(77, 0x0100, 0, 0, 0, 0), &q), ParseOutcome::kFormErr);
  ResponseBuilder rb(q, false, rcode::kFormErr);
  Bytes out = rb.Finish(512);
  ASSERT_EQ(out.size(), kHeaderSize);
  Packet d = Decode(out);
  EXPECT_EQ(d.id, 77);
  EXPECT_EQ(d.counts[0], 0);
  EXPECT_EQ(d.flags, 0x8000 | 0x0100 | rcode::kFormErr);
}

TEST(DnsBuilderDeathTest, RecordsOutOfSectionOrderAbort) {
  Query q = ParsedWww();
  EXPECT_DEATH(
      {
        ResponseBuilder rb(q, true, rcode::kNoError);
        rb.AddA(ResponseBuilder::kAuthority, "example.com", 60, kAddr4);
        rb.AddA(ResponseBuilder::kAnswer, "www.example.com", 60, kAddr4);
      },
      "section order");
  EXPECT_DEATH(
      {
        ResponseBuilder rb(q, true, rcode::kNoError);
        rb.AddA(ResponseBuilder::kAnswer, "bad..name", 60, kAddr4);
      },
      "empty label");
}

}  // namespace
}  // namespace hc::dns
