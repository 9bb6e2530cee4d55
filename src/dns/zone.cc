#include "dns/zone.h"

#include <arpa/inet.h>

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "dns/wire.h"

namespace hc::dns {
namespace {

std::vector<std::string_view> Labels(std::string_view name) {
  std::vector<std::string_view> out;
  while (!name.empty()) {
    size_t dot = name.find('.');
    out.push_back(name.substr(0, dot));
    if (dot == std::string_view::npos) break;
    name.remove_prefix(dot + 1);
  }
  return out;
}

// True if `name` is `apex` or below it.
bool InZone(std::string_view name, std::string_view apex) {
  if (apex.empty()) return true;
  if (name == apex) return true;
  return name.size() > apex.size() && name.ends_with(apex) &&
         name[name.size() - apex.size() - 1] == '.';
}

// The zone `name` belongs to (longest apex), or nullptr.
const std::string* ZoneOf(const std::vector<std::string>& zones, std::string_view name) {
  const std::string* best = nullptr;
  for (const auto& z : zones)
    if (InZone(name, z) && (!best || z.size() > best->size())) best = &z;
  return best;
}

uint64_t Fnv1a(std::string_view a, std::string_view b) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  };
  mix(a);
  mix("|");
  mix(b);
  return h;
}

std::string Lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

const char* TypeName(uint16_t t) {
  switch (t) {
    case type::kA: return "A";
    case type::kAAAA: return "AAAA";
    case type::kNS: return "NS";
    case type::kCNAME: return "CNAME";
    case type::kSOA: return "SOA";
  }
  return "TYPE?";
}

int TypeOrder(uint16_t t) {
  switch (t) {
    case type::kSOA: return 0;
    case type::kNS: return 1;
    default: return 2 + t;
  }
}

std::vector<NameServer> ChooseNameServers(const DnsSettings& s,
                                          const std::vector<const NodeEntry*>& eligible) {
  std::vector<NameServer> out;
  if (eligible.empty() || s.zones.empty()) return out;
  std::vector<std::string> dcs;
  for (const NodeEntry* n : eligible) dcs.push_back(n->datacenter);
  std::sort(dcs.begin(), dcs.end());
  dcs.erase(std::unique(dcs.begin(), dcs.end()), dcs.end());
  size_t count = std::max<size_t>(static_cast<size_t>(std::max(s.name_servers, 1)), dcs.size());
  count = std::min(count, eligible.size());
  std::set<std::string> used;
  for (size_t k = 0; k < count; ++k) {
    std::string name = "ns" + std::to_string(k + 1) + "." + s.zones[0];
    const std::string& dc = dcs[k % dcs.size()];
    const NodeEntry* best = nullptr;
    uint64_t best_h = 0;
    // The name's own DC first; when that DC has no unused node, any DC.
    for (int pass = 0; pass < 2 && !best; ++pass) {
      for (const NodeEntry* n : eligible) {
        if (used.count(n->id) || (pass == 0 && n->datacenter != dc)) continue;
        uint64_t h = Fnv1a(name, n->id);
        if (!best || h > best_h) best = n, best_h = h;
      }
    }
    if (!best) break;
    used.insert(best->id);
    out.push_back(NameServer{name, best->id, best->datacenter});
  }
  return out;
}

Record AddressRecord(const std::string& owner, uint32_t ttl, const std::string& text) {
  Record r;
  r.owner = owner;
  r.ttl = ttl;
  bool v6 = false;
  ParseAddress(text, &r.addr, &v6);
  r.type = v6 ? type::kAAAA : type::kA;
  return r;
}

std::string AddressText(const Record& r) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(r.type == type::kA ? AF_INET : AF_INET6, r.addr.data(), buf, sizeof buf);
  return buf;
}

}  // namespace

bool Record::operator==(const Record& o) const {
  return owner == o.owner && type == o.type && ttl == o.ttl && addr == o.addr &&
         target == o.target && soa.mname == o.soa.mname && soa.rname == o.soa.rname &&
         std::tie(soa.refresh, soa.retry, soa.expire, soa.minimum) ==
             std::tie(o.soa.refresh, o.soa.retry, o.soa.expire, o.soa.minimum);
  // soa.serial is left out on purpose: SameContent ignores it.
}

bool ZoneSet::SameContent(const ZoneSet& o) const {
  if (zones.size() != o.zones.size() || warnings != o.warnings) return false;
  for (size_t i = 0; i < zones.size(); ++i)
    if (zones[i].apex != o.zones[i].apex || zones[i].records != o.zones[i].records) return false;
  return true;
}

bool CanonicalLess(const std::string& a, const std::string& b) {
  auto la = Labels(a), lb = Labels(b);
  size_t n = std::min(la.size(), lb.size());
  for (size_t i = 1; i <= n; ++i) {
    std::string_view x = la[la.size() - i], y = lb[lb.size() - i];
    if (x != y) return x < y;
  }
  return la.size() < lb.size();
}

bool ParseAddress(const std::string& text, std::array<uint8_t, 16>* out, bool* v6) {
  out->fill(0);
  if (inet_pton(AF_INET, text.c_str(), out->data()) == 1) {
    *v6 = false;
    return true;
  }
  if (inet_pton(AF_INET6, text.c_str(), out->data()) == 1) {
    *v6 = true;
    return true;
  }
  return false;
}

Status ValidateDnsSettings(const DnsSettings& s) {
  for (size_t i = 0; i < s.zones.size(); ++i) {
    const std::string& z = s.zones[i];
    if (z.empty() || z != Lower(z) || z.find('*') != std::string::npos)
      return InvalidArgument("dns zone '" + z +
                             "' must be a lower-case domain name like hosting.example.net");
    HC_RETURN_IF_ERROR(NameToWire(z).status().Annotate("dns zone"));
    for (size_t j = 0; j < i; ++j) {
      if (s.zones[j] == z) return InvalidArgument("dns zone '" + z + "' is listed twice");
      if (InZone(z, s.zones[j]) || InZone(s.zones[j], z))
        return InvalidArgument("dns zones '" + s.zones[j] + "' and '" + z +
                               "' are nested; list only the outer one");
    }
  }
  if (s.ttl < 1 || s.ttl > 86400) return InvalidArgument("dns ttl must be from 1 to 86400 seconds");
  if (s.name_servers < 1 || s.name_servers > 9)
    return InvalidArgument("dns name server count must be from 1 to 9");
  if (!s.hostmaster.empty())
    HC_RETURN_IF_ERROR(NameToWire(s.hostmaster).status().Annotate("dns hostmaster"));
  return Status::Ok();
}

ZoneSet BuildZones(const DnsSettings& s, const std::vector<NodeEntry>& nodes,
                   const std::vector<AppEntry>& apps, uint32_t serial) {
  ZoneSet set;
  set.serial = serial;
  if (s.zones.empty()) return set;

  // Nodes that serve: live (the caller passes live ones) and not drained;
  // if every node is drained, all of them (an answer beats none).
  std::vector<const NodeEntry*> eligible;
  for (const auto& n : nodes)
    if (!n.drained && !n.addresses.empty()) eligible.push_back(&n);
  if (eligible.empty())
    for (const auto& n : nodes)
      if (!n.addresses.empty()) eligible.push_back(&n);
  std::sort(eligible.begin(), eligible.end(),
            [](const NodeEntry* a, const NodeEntry* b) { return a->id < b->id; });
  set.name_servers = ChooseNameServers(s, eligible);

  std::map<std::string, std::vector<Record>> by_zone;  // apex -> records
  std::map<std::string, std::string> claimed;          // owner -> who claimed it (for warnings)
  std::set<std::string> cnames;                        // owners holding a CNAME
  auto add_addresses = [&](const std::string& owner, const std::vector<std::string>& addrs) {
    auto& recs = by_zone[*ZoneOf(s.zones, owner)];
    for (const auto& a : addrs) recs.push_back(AddressRecord(owner, s.ttl, a));
  };

  std::string hostmaster = s.hostmaster.empty() ? "hostmaster." + s.zones[0] : Lower(s.hostmaster);
  std::string mname = set.name_servers.empty() ? "ns1." + s.zones[0] : set.name_servers[0].name;
  for (const auto& apex : s.zones) {
    auto& recs = by_zone[apex];
    Record soa;
    soa.owner = apex;
    soa.type = type::kSOA;
    soa.ttl = s.ttl;
    soa.soa = Soa{mname, hostmaster, serial, s.refresh, s.retry, s.expire, s.ttl};
    recs.push_back(soa);
    if (set.name_servers.empty()) {
      set.warnings.push_back("no live node has a public address: zones have no name servers");
    }
    for (const auto& ns : set.name_servers) {
      Record r;
      r.owner = apex;
      r.type = type::kNS;
      r.ttl = s.ttl;
      r.target = ns.name;
      recs.push_back(r);
    }
  }
  for (const auto& ns : set.name_servers) {
    for (const NodeEntry* n : eligible)
      if (n->id == ns.node_id) add_addresses(ns.name, n->addresses);
    claimed[ns.name] = "name server " + ns.name;
  }

  std::vector<std::string> all_addresses;
  for (const NodeEntry* n : eligible)
    all_addresses.insert(all_addresses.end(), n->addresses.begin(), n->addresses.end());

  for (const auto& app : apps) {
    for (const auto& d0 : app.domains) {
      std::string d = Lower(d0);
      if (!ZoneOf(s.zones, d)) {
        set.warnings.push_back("domain " + d + " of app " + app.name +
                               " is in no zone served here (dns_zones)");
        continue;
      }
      auto [it, fresh] = claimed.emplace(d, "app " + app.name);
      if (!fresh) {
        if (it->second != "app " + app.name)
          set.warnings.push_back("domain " + d + " of app " + app.name + " is also " + it->second +
                                 "; served once");
        continue;
      }
      add_addresses(d, all_addresses);
    }
  }
  // Aliases after all address owners, so a CNAME never shares a name with
  // other data (RFC 1034 3.6.2).
  for (const auto& app : apps) {
    for (const auto& a0 : app.aliases) {
      std::string a = Lower(a0);
      if (app.domains.empty()) {
        set.warnings.push_back("alias " + a + " of app " + app.name + " has no domain to point to");
        continue;
      }
      if (!ZoneOf(s.zones, a)) {
        set.warnings.push_back("alias " + a + " of app " + app.name +
                               " is in no zone served here (dns_zones)");
        continue;
      }
      bool apex = std::find(s.zones.begin(), s.zones.end(), a) != s.zones.end();
      auto [it, fresh] = claimed.emplace(a, "alias of app " + app.name);
      if (!fresh || apex) {
        set.warnings.push_back("alias " + a + " of app " + app.name + " clashes with " +
                               (apex ? std::string("a zone apex") : it->second) + "; not served");
        continue;
      }
      Record r;
      r.owner = a;
      r.type = type::kCNAME;
      r.ttl = s.ttl;
      r.target = Lower(app.domains[0]);
      by_zone[*ZoneOf(s.zones, a)].push_back(r);
      cnames.insert(a);
    }
  }

  for (const auto& apex : s.zones) {
    Zone z;
    z.apex = apex;
    z.records = std::move(by_zone[apex]);
    std::stable_sort(z.records.begin(), z.records.end(), [&](const Record& a, const Record& b) {
      bool aa = a.owner == apex, ba = b.owner == apex;
      if (aa != ba) return aa;
      if (a.owner != b.owner) return CanonicalLess(a.owner, b.owner);
      if (a.type != b.type) return TypeOrder(a.type) < TypeOrder(b.type);
      return a.addr < b.addr;
    });
    z.records.erase(std::unique(z.records.begin(), z.records.end()), z.records.end());
    set.zones.push_back(std::move(z));
  }
  return set;
}

std::string ZoneFileText(const ZoneSet& set, const Zone& zone) {
  std::string out = "; zone " + zone.apex + " as served by HybridCluster, serial " +
                    std::to_string(set.serial) + "\n";
  for (const auto& ns : set.name_servers)
    out += "; " + ns.name + " is node " + ns.node_id + " (" + ns.datacenter + ")\n";
  for (const auto& w : set.warnings) out += "; warning: " + w + "\n";
  uint32_t ttl = zone.records.empty() ? 10 : zone.records[0].ttl;
  out += "$ORIGIN " + zone.apex + ".\n$TTL " + std::to_string(ttl) + "\n";
  for (const auto& r : zone.records) {
    out += r.owner + ". " + std::to_string(r.ttl) + " IN " + TypeName(r.type) + " ";
    switch (r.type) {
      case type::kA:
      case type::kAAAA: out += AddressText(r); break;
      case type::kNS:
      case type::kCNAME: out += r.target + "."; break;
      case type::kSOA:
        out += r.soa.mname + ". " + r.soa.rname + ". " + std::to_string(r.soa.serial) + " " +
               std::to_string(r.soa.refresh) + " " + std::to_string(r.soa.retry) + " " +
               std::to_string(r.soa.expire) + " " + std::to_string(r.soa.minimum);
        break;
    }
    out += "\n";
  }
  return out;
}

}  // namespace hc::dns
