// The authoritative answer path (src/dns/answer.h) on untrusted queries:
// parse, look-up, image patching, wildcard/CNAME/negative planning and
// truncation. Input: one byte (bit 0: TCP), then the query packet. Must
// never crash, and every response must decode, carry the query's id, have
// QR set and fit the transport's limit (512 without EDNS over UDP, the
// requester's EDNS size clamped to 512..1232 with it).
#include <stddef.h>
#include <stdint.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <vector>

#include "dns/answer.h"
#include "dns/zone.h"

namespace {

void Require(bool cond) {
  if (!cond) std::abort();
}

const hc::dns::Answerer& Fixture() {
  static std::shared_ptr<const hc::dns::Answerer> a = [] {
    hc::dns::DnsSettings s;
    s.zones = {"hosting.example.net", "customer.org"};
    std::vector<hc::dns::NodeEntry> nodes;
    for (int i = 1; i <= 40; ++i)  // enough addresses to truncate over 512
      nodes.push_back({"n" + std::to_string(i),
                       i % 2 ? "dc1" : "dc2",
                       {"10.0.0." + std::to_string(i), "2001:db8::" + std::to_string(i)},
                       false});
    std::vector<hc::dns::AppEntry> apps = {
        {"blog",
         {"blog.customer.org", "*.shop.customer.org", "a.b.c.customer.org"},
         {"www.customer.org", "loop.customer.org"}},
        {"home", {"customer.org"}, {}},
        {"panel", {"panel.hosting.example.net"}, {"chain.customer.org"}},
    };
    return hc::dns::Answerer::Compile(hc::dns::BuildZones(s, nodes, apps, 7));
  }();
  return *a;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  bool tcp = data[0] & 1;
  std::vector<uint8_t> packet(data + 1, data + size);  // exact size for ASan
  std::vector<uint8_t> out(65535);
  size_t n = Fixture().Respond(packet, tcp, out);
  if (n == 0) return 0;
  Require(n >= 12 && n <= out.size());
  Require(out[0] == packet[0] && out[1] == packet[1]);
  Require(out[2] & 0x80);
  if (!tcp) {
    hc::dns::Query q;
    size_t limit = 512;
    if (hc::dns::ParseQuery(packet, &q) == hc::dns::ParseOutcome::kOk && q.edns.present)
      limit = std::clamp<size_t>(q.edns.udp_size, 512, hc::dns::kOurUdpSize);
    Require(n <= limit);
  }
  return 0;
}
