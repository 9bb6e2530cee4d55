#include "dns/answer.h"

#include <algorithm>
#include <cstring>
#include <set>

namespace hc::dns {
namespace {

constexpr size_t kOptSize = 11;  // root owner, type, class, ttl, rdlength 0
constexpr int kMaxChain = 8;
constexpr uint16_t kNoDataKey = 0;        // image key: NODATA for any type the name lacks
constexpr uint16_t kPlanNoData = 0xFF00;  // a private-use type nothing has
constexpr uint16_t kIXFR = 251;

std::string_view Parent(std::string_view name) {
  size_t dot = name.find('.');
  return dot == std::string_view::npos ? std::string_view() : name.substr(dot + 1);
}

}  // namespace

struct Answerer::Plan {
  struct Item {
    std::string owner;
    const RRset* set;
    bool negative = false;  // SOA in a negative answer: TTL min(ttl, minimum)
  };
  uint16_t rcode = rcode::kNoError;
  bool aa = true;
  std::vector<Item> sections[3];  // answer, authority, additional
};

const Answerer::RRset* Answerer::Name::Find(uint16_t t) const {
  for (const auto& s : rrsets)
    if (s.type == t) return &s;
  return nullptr;
}

const Answerer::Name* Answerer::Lookup(std::string_view name) const {
  auto it = names_.find(std::string(name));
  return it == names_.end() ? nullptr : &it->second;
}

const Answerer::ZoneData* Answerer::ZoneFor(std::string_view name) const {
  for (std::string_view n = name;; n = Parent(n)) {
    for (const auto& z : zone_data_)
      if (z->apex == n) return z.get();
    if (n.empty()) return nullptr;
  }
}

void Answerer::PlanAnswer(const std::string& qname, uint16_t qtype, Plan* plan) const {
  const ZoneData* zone = ZoneFor(qname);
  if (!zone) {
    plan->rcode = rcode::kRefused;
    plan->aa = false;
    return;
  }
  auto negative = [&](const ZoneData* z, uint16_t rc) {
    plan->rcode = rc;
    const Name* apex = Lookup(z->apex);
    plan->sections[ResponseBuilder::kAuthority].push_back({z->apex, apex->Find(type::kSOA), true});
  };
  std::string name = qname;
  std::set<std::string> seen;
  for (int step = 0;; ++step) {
    seen.insert(name);
    const Name* n = Lookup(name);
    if (!n) {
      // Wildcard (RFC 4592): the closest encloser is the longest existing
      // ancestor; its "*" child, if any, is the source of synthesis.
      std::string_view ce = Parent(name);
      while (!Lookup(ce) && ce != zone->apex) ce = Parent(ce);
      n = Lookup("*." + std::string(ce));
      if (!n) return negative(zone, rcode::kNxDomain);
    }
    auto& answer = plan->sections[ResponseBuilder::kAnswer];
    const RRset* cname = n->Find(type::kCNAME);
    if (cname && qtype != type::kCNAME) {
      answer.push_back({name, cname});
      if (qtype == type::kANY) return;
      std::string target = cname->records[0]->target;
      const ZoneData* tz = ZoneFor(target);
      // Out of our zones, a loop, or too long: the resolver takes it from here.
      if (!tz || seen.count(target) || step + 1 >= kMaxChain) return;
      name = std::move(target);
      zone = tz;
      continue;
    }
    const RRset* set = nullptr;
    if (qtype == type::kANY) {
      for (uint16_t t : {type::kA, type::kAAAA, type::kSOA, type::kNS})
        if ((set = n->Find(t))) break;
    } else {
      set = n->Find(qtype);
    }
    if (!set) return negative(zone, rcode::kNoError);  // NODATA (incl. empty non-terminals)
    answer.push_back({name, set});
    if (set->type == type::kNS) {
      // Glue from the same zone only (as NSD and Knot do: resolvers ignore
      // addresses from outside the zone's bailiwick anyway).
      for (const Record* r : set->records) {
        const Name* ns = Lookup(r->target);
        if (!ns || ns->zone != zone) continue;
        for (uint16_t t : {type::kA, type::kAAAA})
          if (const RRset* a = ns->Find(t))
            plan->sections[ResponseBuilder::kAdditional].push_back({r->target, a});
      }
    }
    return;
  }
}

std::vector<uint8_t> Answerer::Build(const Query& q, const Plan& plan, size_t max_size) const {
  // Whole RRsets only: when the packet does not fit, the last RRset goes and
  // the packet is built again (rare: only big answers over small UDP).
  size_t keep[3] = {plan.sections[0].size(), plan.sections[1].size(), plan.sections[2].size()};
  bool dropped_data = false;
  while (true) {
    ResponseBuilder b(q, plan.aa, plan.rcode & 0xF);
    for (int s = 0; s < 3; ++s) {
      auto sec = static_cast<ResponseBuilder::Section>(s);
      for (size_t i = 0; i < keep[s]; ++i) {
        const Plan::Item& item = plan.sections[s][i];
        for (const Record* r : item.set->records) {
          uint32_t ttl = item.negative ? std::min(r->ttl, r->soa.minimum) : r->ttl;
          switch (r->type) {
            case type::kA: b.AddA(sec, item.owner, ttl, r->addr.data()); break;
            case type::kAAAA: b.AddAaaa(sec, item.owner, ttl, r->addr.data()); break;
            case type::kNS:
            case type::kCNAME: b.AddName(sec, item.owner, r->type, ttl, r->target); break;
            case type::kSOA:
              b.AddSoa(sec, item.owner, ttl, r->soa.mname, r->soa.rname, r->soa.serial,
                       r->soa.refresh, r->soa.retry, r->soa.expire, r->soa.minimum);
              break;
          }
        }
      }
    }
    if (q.edns.present)
      b.AddOpt(kOurUdpSize, plan.rcode,
               plan.rcode == rcode::kRefused ? ede::kNotAuthoritative : -1);
    std::vector<uint8_t> out = b.Finish(max_size);
    bool cut = out.size() >= 3 && (out[2] & 0x02);
    int last = keep[2] ? 2 : keep[1] ? 1 : keep[0] ? 0 : -1;
    if (!cut || last < 0) {
      if (dropped_data && out.size() >= 3) out[2] |= 0x02;
      return out;
    }
    // Finish dropped records: drop the last whole RRset instead and retry.
    --keep[last];
    if (last < 2) dropped_data = true;
  }
}

std::shared_ptr<const Answerer> Answerer::Compile(const ZoneSet& zones) {
  std::shared_ptr<Answerer> a(new Answerer());
  a->zones_ = zones;
  a->serial_ = zones.serial;
  for (const Zone& z : a->zones_.zones) {
    auto zd = std::make_unique<ZoneData>();
    zd->apex = z.apex;
    for (const Record& r : z.records) {
      Name& n = a->names_[r.owner];
      n.zone = zd.get();
      RRset* set = nullptr;
      for (auto& s : n.rrsets)
        if (s.type == r.type) set = &s;
      if (!set) set = &n.rrsets.emplace_back(RRset{r.type, {}});
      set->records.push_back(&r);
      if (r.type == type::kSOA) zd->soa = &r;
      // Empty non-terminals between the owner and the apex (RFC 8020).
      for (std::string_view p = r.owner; p != z.apex && !p.empty();) {
        p = Parent(p);
        Name& parent = a->names_[std::string(p)];
        if (!parent.zone) parent.zone = zd.get();
      }
    }
    a->zone_data_.push_back(std::move(zd));
  }
  // Precompiled images: for every name its own types, A, AAAA, ANY and a
  // NODATA image; names holding a CNAME get CNAME, A, AAAA and ANY.
  for (auto& [owner, name] : a->names_) {
    Query q;
    auto wire = NameToWire(owner);
    if (!wire.ok()) continue;
    q.qname_wire = *wire;
    q.qname = owner;
    q.qclass = kClassIN;
    q.edns.present = true;
    q.edns.udp_size = kOurUdpSize;
    std::vector<uint16_t> qtypes = {type::kA, type::kAAAA, type::kANY};
    bool has_cname = name.Find(type::kCNAME) != nullptr;
    if (has_cname) {
      qtypes.push_back(type::kCNAME);
    } else {
      for (const auto& s : name.rrsets)
        if (s.type != type::kA && s.type != type::kAAAA) qtypes.push_back(s.type);
      qtypes.push_back(kNoDataKey);
    }
    for (uint16_t qt : qtypes) {
      q.qtype = qt == kNoDataKey ? kPlanNoData : qt;
      Plan plan;
      a->PlanAnswer(owner, q.qtype, &plan);
      std::vector<uint8_t> img = a->Build(q, plan, 65535);
      name.images.push_back(Name::Image{qt, static_cast<uint32_t>(a->arena_.size()),
                                        static_cast<uint32_t>(img.size())});
      a->arena_.insert(a->arena_.end(), img.begin(), img.end());
    }
  }
  return a;
}

size_t Answerer::Respond(std::span<const uint8_t> packet, bool tcp, std::span<uint8_t> out) const {
  Query q;
  auto copy_out = [&](const std::vector<uint8_t>& bytes) -> size_t {
    if (bytes.size() > out.size()) return 0;
    std::memcpy(out.data(), bytes.data(), bytes.size());
    return bytes.size();
  };
  auto error = [&](uint16_t rc, int ede = -1) {
    ResponseBuilder b(q, false, rc & 0xF);
    if (q.edns.present) b.AddOpt(kOurUdpSize, rc, ede);
    return copy_out(b.Finish(512));
  };
  switch (ParseQuery(packet, &q)) {
    case ParseOutcome::kDrop: return 0;
    case ParseOutcome::kFormErr: return error(rcode::kFormErr);
    case ParseOutcome::kNotImp: return error(rcode::kNotImp);
    case ParseOutcome::kOk: break;
  }
  if (q.edns_malformed) return error(rcode::kFormErr);
  if (q.edns.present && q.edns.version != 0) return error(rcode::kBadVers);
  if (q.qtype == type::kOPT) return error(rcode::kFormErr);
  if (q.qclass != kClassIN) return error(rcode::kRefused, ede::kNotSupported);
  if (q.qtype == type::kAXFR || q.qtype == kIXFR) return error(rcode::kRefused, ede::kProhibited);

  size_t limit = 512;
  if (tcp) {
    limit = 65535;
  } else if (q.edns.present) {
    limit = std::clamp<size_t>(q.edns.udp_size, 512, kOurUdpSize);
  }
  limit = std::min(limit, out.size());

  if (const Name* n = Lookup(q.qname)) {
    const Name::Image* img = nullptr;
    for (const auto& i : n->images)
      if (i.qtype == q.qtype) img = &i;
    if (!img && !n->Find(type::kCNAME))
      for (const auto& i : n->images)
        if (i.qtype == kNoDataKey && !n->Find(q.qtype)) img = &i;
    size_t len = img ? img->length - (q.edns.present ? 0 : kOptSize) : 0;
    if (img && len <= limit) {
      uint8_t* p = out.data();
      std::memcpy(p, arena_.data() + img->offset, len);
      p[0] = static_cast<uint8_t>(q.id >> 8);
      p[1] = static_cast<uint8_t>(q.id);
      p[2] = static_cast<uint8_t>((p[2] & ~0x01) | (q.rd ? 0x01 : 0));
      p[3] = static_cast<uint8_t>((p[3] & ~0x10) | (q.cd ? 0x10 : 0));
      size_t qlen = q.qname_wire.size();
      std::memcpy(p + kHeaderSize, q.qname_wire.data(), qlen);  // the asker's letter case
      p[kHeaderSize + qlen] = static_cast<uint8_t>(q.qtype >> 8);
      p[kHeaderSize + qlen + 1] = static_cast<uint8_t>(q.qtype);
      if (q.edns.present) {
        if (q.edns.dnssec_ok) p[len - 4] |= 0x80;
      } else {
        uint16_t ar = static_cast<uint16_t>(((p[10] << 8) | p[11]) - 1);
        p[10] = static_cast<uint8_t>(ar >> 8);
        p[11] = static_cast<uint8_t>(ar);
      }
      return len;
    }
  }
  Plan plan;
  PlanAnswer(q.qname, q.qtype, &plan);
  return copy_out(Build(q, plan, limit));
}

}  // namespace hc::dns
