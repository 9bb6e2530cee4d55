#include "proxy/route_table.h"

#include <netdb.h>

#include <cstring>

namespace hc::proxy {
namespace {

bool ValidLabelChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

// "example.com" or "*.example.com", already lower-cased.
bool ValidDomain(std::string_view d) {
  if (d.substr(0, 2) == "*.") d.remove_prefix(2);
  if (d.empty() || d.size() >= RouteTable::kMaxHost) return false;
  bool label_start = true;
  for (char c : d) {
    if (c == '.') {
      if (label_start) return false;
      label_start = true;
    } else if (ValidLabelChar(c)) {
      label_start = false;
    } else {
      return false;
    }
  }
  return !label_start;
}

Status Resolve(Route* r) {
  struct addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  struct addrinfo* res = nullptr;
  std::string port = std::to_string(r->backend.port);
  int rc = ::getaddrinfo(r->backend.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) {
    return Unavailable("proxy: app '" + r->app + "': cannot resolve backend '" +
                       r->backend.ToString() + "': " + ::gai_strerror(rc));
  }
  std::memcpy(&r->addr, res->ai_addr, res->ai_addrlen);
  r->addr_len = res->ai_addrlen;
  ::freeaddrinfo(res);
  return Status::Ok();
}

}  // namespace

std::string_view RouteTable::Normalize(std::string_view host, char* buf) {
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    if (close == std::string_view::npos) return {};
    host = host.substr(0, close + 1);
  } else if (size_t colon = host.find(':'); colon != std::string_view::npos) {
    host = host.substr(0, colon);
  }
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  if (host.empty() || host.size() >= kMaxHost) return {};
  for (size_t i = 0; i < host.size(); ++i) {
    char c = host[i];
    buf[i] = c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
  }
  return std::string_view(buf, host.size());
}

Result<std::shared_ptr<const RouteTable>> RouteTable::Build(const std::vector<RouteSpec>& specs) {
  auto t = std::make_shared<RouteTable>();
  t->routes_.reserve(specs.size());
  for (const RouteSpec& s : specs) {
    if (s.app.empty()) return InvalidArgument("proxy: a route has no app name");
    if (t->apps_.count(s.app) != 0) {
      return AlreadyExists("proxy: app '" + s.app + "' appears twice in the routes");
    }
    Route r;
    r.app = s.app;
    r.backend = s.backend;
    r.hop = s.hop;
    r.max_conns = s.max_conns;
    HC_RETURN_IF_ERROR(Resolve(&r));
    size_t idx = t->routes_.size();
    for (const std::string& domain : s.domains) {
      if (domain == "*") {
        if (t->default_ != SIZE_MAX) {
          return AlreadyExists("proxy: the catch-all domain '*' is claimed by apps '" +
                               t->routes_[t->default_].app + "' and '" + s.app + "'");
        }
        t->default_ = idx;
        continue;
      }
      char buf[kMaxHost];
      std::string_view d = domain;
      bool wild = d.substr(0, 2) == "*.";
      std::string_view norm = Normalize(wild ? d.substr(2) : d, buf);
      std::string key(norm);
      if (norm.empty() || !ValidDomain(key)) {
        return InvalidArgument("proxy: app '" + s.app + "': invalid domain '" + domain +
                               "' (want 'name.example' or '*.example')");
      }
      Index& index = wild ? t->wildcard_ : t->exact_;
      auto [it, inserted] = index.emplace(key, idx);
      if (!inserted) {
        const std::string& other =
            it->second < t->routes_.size() ? t->routes_[it->second].app : s.app;
        return AlreadyExists("proxy: domain '" + domain + "' is claimed by apps '" + other +
                             "' and '" + s.app + "'");
      }
    }
    t->apps_.emplace(s.app, idx);
    t->routes_.push_back(std::move(r));
  }
  return std::shared_ptr<const RouteTable>(std::move(t));
}

const Route* RouteTable::Find(std::string_view host) const {
  const Route* fallback = default_ == SIZE_MAX ? nullptr : &routes_[default_];
  char buf[kMaxHost];
  std::string_view h = Normalize(host, buf);
  if (h.empty()) return fallback;
  if (auto it = exact_.find(h); it != exact_.end()) return &routes_[it->second];
  if (wildcard_.empty()) return fallback;
  // From the left, the first suffix that has a wildcard is the longest.
  for (size_t dot = h.find('.'); dot != std::string_view::npos; dot = h.find('.', dot + 1)) {
    if (auto it = wildcard_.find(h.substr(dot + 1)); it != wildcard_.end()) {
      return &routes_[it->second];
    }
  }
  return fallback;
}

const Route* RouteTable::FindApp(std::string_view app) const {
  auto it = apps_.find(app);
  return it == apps_.end() ? nullptr : &routes_[it->second];
}

}  // namespace hc::proxy
