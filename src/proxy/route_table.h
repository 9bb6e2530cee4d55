// An immutable routing snapshot for the HTTP proxy: Host header -> app and
// backend address. Built off the hot path (names are resolved then), shared
// between worker threads through shared_ptr<const RouteTable>, and replaced
// as a whole when the cluster state changes.
//
// Matching follows nginx's server_name:
//  - exact names first ("shop.example.com");
//  - then wildcards "*.example.com", which match any name that ends in
//    ".example.com" with one or more labels in front ("a.example.com" and
//    "a.b.example.com"), but not "example.com" itself; among wildcards the
//    longest suffix wins ("*.b.example.com" before "*.example.com").
// Hosts are compared lower-cased, without a port and without a trailing dot.
//
//   HC_ASSIGN_OR_RETURN(auto table, RouteTable::Build({{"shop", {"shop.example.com"},
//                                                       {"10.0.0.5", 8080}}}));
//   const Route* r = table->Find("Shop.Example.com:80");  // app "shop"
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "net/socket.h"

namespace hc::proxy {

struct Route {
  std::string app;
  net::HostPort backend;
  bool hop = false;        // the backend is the node channel to another node
  uint32_t max_conns = 0;  // RouteSpec::max_conns
  // The backend's address, resolved when the table was built.
  struct sockaddr_storage addr = {};
  socklen_t addr_len = 0;
};

struct RouteSpec {
  std::string app;
  std::vector<std::string> domains;  // "example.com", "*.example.com", "*" (any other)
  net::HostPort backend;
  bool hop = false;
  // At most this many requests at the backend at once (0: no limit); more
  // wait in the proxy, in order, for one to end (HAProxy's per-server
  // maxconn). For backends with a short accept queue: busybox httpd listens
  // with a backlog of 9, and connections beyond it lose their SYN and wait
  // a whole second for TCP's retransmission.
  uint32_t max_conns = 0;
};

class RouteTable {
 public:
  // Validates and indexes the specs. Errors name the app and the domain: a
  // domain claimed by two apps, a malformed domain ("*" only as the first
  // label), a backend that does not resolve. Blocks while resolving names.
  static Result<std::shared_ptr<const RouteTable>> Build(const std::vector<RouteSpec>& specs);

  // The route for a Host header value (any case, optional ":port"), or
  // nullptr. Allocation-free.
  const Route* Find(std::string_view host) const;
  // The route of an app by name, or nullptr.
  const Route* FindApp(std::string_view app) const;
  size_t size() const { return routes_.size(); }

  // Lower-cases `host`, strips ":port" and a trailing dot into `buf`
  // (kMaxHost bytes); "" if it does not fit or is empty.
  static constexpr size_t kMaxHost = 256;
  static std::string_view Normalize(std::string_view host, char* buf);

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };
  using Index = std::unordered_map<std::string, size_t, Hash, std::equal_to<>>;

  std::vector<Route> routes_;
  Index exact_;
  Index wildcard_;  // key: the suffix after "*."
  Index apps_;
  size_t default_ = SIZE_MAX;  // the "*" route
};

}  // namespace hc::proxy
