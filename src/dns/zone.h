// The DNS zones the cluster serves, computed from the cluster state: a pure
// function of the settings, the live nodes and the apps, so every node
// computes the same records (docs/design.md, "DNS").
//
// For each configured zone: SOA and NS at the apex; the name servers
// ns1..nsN.<first zone> spread over data centres; for every app domain in a
// zone, A/AAAA records with the public addresses of all live, non-drained
// nodes (any node's proxy serves any app); CNAME records for app aliases.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace hc::dns {

struct DnsSettings {
  // Zone apexes, lower case, no trailing dot. The first one also holds the
  // name servers' own names (ns1.<zones[0]> ...).
  std::vector<std::string> zones;
  uint32_t ttl = 10;  // every record's TTL, and the negative-caching TTL (SOA minimum)
  std::string
      hostmaster;  // SOA RNAME as a name ("hostmaster.example.net"); "" = hostmaster.<zones[0]>
  int name_servers = 2;  // at least this many nsK names (more when there are more DCs)
  uint32_t refresh = 3600, retry = 600, expire = 604800;
};

// Zones must be valid names, not nested in each other, not duplicated.
Status ValidateDnsSettings(const DnsSettings& s);

// What the zones are built from (converted from cluster::NodeInfo/AppDef by
// the caller, so this stays free of the cluster library).
struct NodeEntry {
  std::string id;
  std::string datacenter;
  std::vector<std::string> addresses;  // public IPv4/IPv6 literals
  bool drained = false;
};
struct AppEntry {
  std::string name;
  std::vector<std::string> domains;  // "shop.example.com", "*.example.com"
  std::vector<std::string> aliases;  // answered with CNAME -> domains[0]
};

struct Soa {
  std::string mname, rname;
  uint32_t serial = 0, refresh = 0, retry = 0, expire = 0, minimum = 0;
};

struct Record {
  std::string owner;  // lower-case presentation form, no trailing dot
  uint16_t type = 0;  // type::kA, kAAAA, kNS, kCNAME, kSOA
  uint32_t ttl = 0;
  std::array<uint8_t, 16> addr{};  // A: first 4 bytes; AAAA: all 16
  std::string target;              // NS, CNAME
  Soa soa;                         // SOA
  bool operator==(const Record& o) const;
};

struct NameServer {
  std::string name;  // "ns1.hosting.example.net"
  std::string node_id;
  std::string datacenter;
};

struct Zone {
  std::string apex;
  std::vector<Record> records;  // SOA first, then NS, then by owner (canonical order) and type
};

struct ZoneSet {
  uint32_t serial = 0;
  std::vector<Zone> zones;
  std::vector<NameServer> name_servers;
  // Things a hoster should know ("domain x of app y is in no zone served").
  std::vector<std::string> warnings;
  // Same records, ignoring the serial.
  bool SameContent(const ZoneSet& o) const;
};

// Builds the zones. `serial` goes into every SOA. Deterministic: the same
// input gives the same output on every node (name servers are chosen per
// data centre by rendezvous hashing of name and node id, so a name moves
// only when its node goes or a better-hashing node joins that DC).
ZoneSet BuildZones(const DnsSettings& s, const std::vector<NodeEntry>& nodes,
                   const std::vector<AppEntry>& apps, uint32_t serial);

// The zone in master-file syntax (RFC 1035 5), absolute names, one record
// per line, preceded by comments naming the name servers' nodes and the
// warnings. NSD and Knot load it as is.
std::string ZoneFileText(const ZoneSet& set, const Zone& zone);

// Owner names sort in DNS canonical order (RFC 4034 6.1: by labels from the
// right).
bool CanonicalLess(const std::string& a, const std::string& b);

// "192.0.2.1" / "2001:db8::1" -> Record address bytes; false if neither.
bool ParseAddress(const std::string& text, std::array<uint8_t, 16>* out, bool* v6);

}  // namespace hc::dns
