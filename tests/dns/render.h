// Test helper: renders a DNS response packet as text (like dig's, one line
// per record), for golden files and readable failures. Decodes compressed
// names; "MALFORMED ..." when the packet does not parse.
#pragma once

#include <arpa/inet.h>

#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

namespace hc::dns::testing {

inline std::string RenderResponse(std::span<const uint8_t> p) {
  auto u16 = [&](size_t at) { return static_cast<uint16_t>((p[at] << 8) | p[at + 1]); };
  auto u32 = [&](size_t at) { return (static_cast<uint32_t>(u16(at)) << 16) | u16(at + 2); };
  if (p.size() < 12) return "MALFORMED short header\n";
  size_t pos = 12;
  bool bad = false;
  auto name = [&](size_t* at) {
    std::string out;
    size_t cur = *at;
    bool jumped = false;
    for (int guard = 0; guard < 128; ++guard) {
      if (cur >= p.size()) break;
      uint8_t len = p[cur];
      if ((len & 0xC0) == 0xC0) {
        if (cur + 1 >= p.size()) break;
        if (!jumped) *at = cur + 2;
        jumped = true;
        cur = ((len & 0x3F) << 8) | p[cur + 1];
        continue;
      }
      if (len == 0) {
        if (!jumped) *at = cur + 1;
        return out.empty() ? std::string(".") : out;
      }
      if (cur + 1 + len > p.size()) break;
      out.append(reinterpret_cast<const char*>(&p[cur + 1]), len);
      out += '.';
      cur += len + 1;
    }
    bad = true;
    return std::string("?");
  };
  static const char* kRcodes[] = {"NOERROR",  "FORMERR", "SERVFAIL",
                                  "NXDOMAIN", "NOTIMP",  "REFUSED"};
  uint16_t flags = u16(2);
  std::string out = "rcode=";
  unsigned rc = flags & 0xF;
  out += rc < 6 ? kRcodes[rc] : std::to_string(rc);
  out += " flags=";
  const std::pair<uint16_t, const char*> bits[] = {{0x8000, "qr"}, {0x0400, "aa"}, {0x0200, "tc"},
                                                   {0x0100, "rd"}, {0x0080, "ra"}, {0x0010, "cd"}};
  for (auto [bit, n] : bits)
    if (flags & bit) out += std::string(n) + ",";
  out += " counts=" + std::to_string(u16(4)) + "/" + std::to_string(u16(6)) + "/" +
         std::to_string(u16(8)) + "/" + std::to_string(u16(10)) + "\n";
  for (int i = 0; i < u16(4) && !bad; ++i) {
    std::string n = name(&pos);
    if (pos + 4 > p.size()) return out + "MALFORMED question\n";
    out += "Q " + n + " type" + std::to_string(u16(pos)) + " class" + std::to_string(u16(pos + 2)) +
           "\n";
    pos += 4;
  }
  const char* sections[] = {"AN", "NS", "AR"};
  for (int s = 0; s < 3; ++s) {
    for (int i = 0; i < u16(6 + 2 * s); ++i) {
      std::string owner = name(&pos);
      if (bad || pos + 10 > p.size()) return out + "MALFORMED record\n";
      uint16_t t = u16(pos), cls = u16(pos + 2), rdlen = u16(pos + 8);
      uint32_t ttl = u32(pos + 4);
      pos += 10;
      if (pos + rdlen > p.size()) return out + "MALFORMED rdata\n";
      size_t rd = pos;
      std::string line = std::string(sections[s]) + " " + owner + " ";
      char buf[64];
      switch (t) {
        case 1:
          inet_ntop(AF_INET, &p[rd], buf, sizeof buf);
          line += std::to_string(ttl) + " A " + buf;
          break;
        case 28:
          inet_ntop(AF_INET6, &p[rd], buf, sizeof buf);
          line += std::to_string(ttl) + " AAAA " + buf;
          break;
        case 2:
        case 5: {
          size_t at = rd;
          line += std::to_string(ttl) + (t == 2 ? " NS " : " CNAME ") + name(&at);
          break;
        }
        case 6: {
          size_t at = rd;
          std::string m = name(&at), r = name(&at);
          line += std::to_string(ttl) + " SOA " + m + " " + r;
          for (int k = 0; k < 5 && at + 4 <= p.size(); ++k, at += 4)
            line += " " + std::to_string(u32(at));
          break;
        }
        case 41:
          line = "OPT udp=" + std::to_string(cls) + " ext_rcode=" + std::to_string(ttl >> 24) +
                 " version=" + std::to_string((ttl >> 16) & 0xFF) + ((ttl & 0x8000) ? " do" : "") +
                 " rdlen=" + std::to_string(rdlen) +
                 (rdlen == 6 && u16(rd) == 15 ? " ede=" + std::to_string(u16(rd + 4)) : "");
          break;
        default: line += std::to_string(ttl) + " type" + std::to_string(t);
      }
      out += line + "\n";
      pos += rdlen;
    }
  }
  if (bad) out += "MALFORMED name\n";
  if (pos != p.size()) out += "TRAILING " + std::to_string(p.size() - pos) + " bytes\n";
  return out;
}

// A query packet: id, name, type, optional EDNS (udp size, version, DO).
struct QuerySpec {
  std::string name;
  uint16_t qtype = 1;
  uint16_t qclass = 1;
  bool edns = false;
  uint16_t udp_size = 1232;
  uint8_t version = 0;
  bool dnssec_ok = false;
  bool rd = false;
  uint16_t id = 0x1234;
};

inline std::vector<uint8_t> MakeQuery(const QuerySpec& s) {
  std::vector<uint8_t> q = {static_cast<uint8_t>(s.id >> 8),
                            static_cast<uint8_t>(s.id),
                            static_cast<uint8_t>(s.rd ? 0x01 : 0),
                            0,
                            0,
                            1,
                            0,
                            0,
                            0,
                            0,
                            0,
                            static_cast<uint8_t>(s.edns ? 1 : 0)};
  std::string n = s.name;
  size_t start = 0;
  while (start < n.size()) {
    size_t dot = n.find('.', start);
    if (dot == std::string::npos) dot = n.size();
    q.push_back(static_cast<uint8_t>(dot - start));
    q.insert(q.end(), n.begin() + start, n.begin() + dot);
    start = dot + 1;
  }
  q.push_back(0);
  for (uint16_t v : {s.qtype, s.qclass}) {
    q.push_back(static_cast<uint8_t>(v >> 8));
    q.push_back(static_cast<uint8_t>(v));
  }
  if (s.edns) {
    const uint8_t opt[] = {0,
                           0,
                           41,
                           static_cast<uint8_t>(s.udp_size >> 8),
                           static_cast<uint8_t>(s.udp_size),
                           0,
                           s.version,
                           static_cast<uint8_t>(s.dnssec_ok ? 0x80 : 0),
                           0,
                           0,
                           0};
    q.insert(q.end(), opt, opt + sizeof opt);
  }
  return q;
}

}  // namespace hc::dns::testing
