#include "cluster/etcd_client.h"

#include <openssl/evp.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "net/http_client.h"
#include "net/socket.h"

namespace hc::cluster {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;

std::string B64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(n);
  return out;
}

Result<std::string> UnB64(std::string_view in) {
  if (in.size() % 4 != 0) return Corrupt("etcd: base64 field has a bad length");
  std::string out(in.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0) return Corrupt("etcd: bad base64 field");
  size_t pad = 0;
  if (!in.empty() && in.back() == '=') pad++;
  if (in.size() > 1 && in[in.size() - 2] == '=') pad++;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

// The gateway writes int64 fields as JSON strings.
int64_t Int(const json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end()) return 0;
  if (it->is_string()) {
    try {
      return std::stoll(it->get<std::string>());
    } catch (...) {
      return 0;
    }
  }
  if (it->is_number_integer()) return it->get<int64_t>();
  return 0;
}

std::string Str(const json& j, const char* field) {
  auto it = j.find(field);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

Result<KeyValue> ParseKv(const json& j) {
  if (!j.is_object()) return Corrupt("etcd: key-value is not an object");
  KeyValue kv;
  HC_ASSIGN_OR_RETURN(kv.key, UnB64(Str(j, "key")));
  HC_ASSIGN_OR_RETURN(kv.value, UnB64(Str(j, "value")));
  kv.create_revision = Int(j, "create_revision");
  kv.mod_revision = Int(j, "mod_revision");
  kv.version = Int(j, "version");
  kv.lease = Int(j, "lease");
  return kv;
}

Result<RangeResult> ParseRange(const json& j) {
  RangeResult r;
  if (auto h = j.find("header"); h != j.end()) r.revision = Int(*h, "revision");
  if (auto kvs = j.find("kvs"); kvs != j.end() && kvs->is_array()) {
    r.kvs.reserve(kvs->size());
    for (const auto& e : *kvs) {
      HC_ASSIGN_OR_RETURN(auto kv, ParseKv(e));
      r.kvs.push_back(std::move(kv));
    }
  }
  auto more = j.find("more");
  r.more = more != j.end() && more->is_boolean() && more->get<bool>();
  return r;
}

Result<json> ParseBody(const std::string& body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Corrupt("etcd: response is not a JSON object");
  return j;
}

json RangeRequest(const std::string& key, bool prefix, int64_t limit = 0, int64_t revision = 0,
                  bool keys_only = false) {
  json r = {{"key", B64(key)}};
  if (prefix) r["range_end"] = B64(PrefixEnd(key));
  if (limit > 0) r["limit"] = limit;
  if (revision > 0) r["revision"] = revision;
  if (keys_only) r["keys_only"] = true;
  return r;
}

json OpJson(const TxnOp& op) {
  switch (op.kind) {
    case TxnOp::kPut: {
      json p = {{"key", B64(op.key)}, {"value", B64(op.value)}};
      if (op.lease) p["lease"] = std::to_string(op.lease);
      return {{"request_put", p}};
    }
    case TxnOp::kDelete: return {{"request_delete_range", {{"key", B64(op.key)}}}};
    case TxnOp::kDeletePrefix:
      return {
          {"request_delete_range", {{"key", B64(op.key)}, {"range_end", B64(PrefixEnd(op.key))}}}};
    case TxnOp::kGet: return {{"request_range", RangeRequest(op.key, false)}};
    case TxnOp::kGetPrefix: return {{"request_range", RangeRequest(op.key, true)}};
  }
  return json::object();
}

json CompareJson(const Compare& c) {
  static const char* kTargets[] = {"VERSION", "CREATE", "MOD", "VALUE", "LEASE"};
  static const char* kOps[] = {"EQUAL", "NOT_EQUAL", "GREATER", "LESS"};
  json j = {{"key", B64(c.key)}, {"target", kTargets[c.target]}, {"result", kOps[c.op]}};
  switch (c.target) {
    case Compare::kVersion: j["version"] = std::to_string(c.number); break;
    case Compare::kCreateRevision: j["create_revision"] = std::to_string(c.number); break;
    case Compare::kModRevision: j["mod_revision"] = std::to_string(c.number); break;
    case Compare::kValue: j["value"] = B64(c.value); break;
    case Compare::kLease: j["lease"] = std::to_string(c.number); break;
  }
  return j;
}

// Maps a gateway error body {"error","code","message"} to a Status. gRPC
// codes: 5 NotFound, 9 FailedPrecondition, 14 Unavailable, 4 DeadlineExceeded.
Status GatewayError(int http_status, const std::string& body) {
  json j = json::parse(body, nullptr, false);
  std::string msg = body.substr(0, 300);
  int64_t code = 0;
  if (j.is_object()) {
    msg = Str(j, "message");
    if (msg.empty()) msg = Str(j, "error");
    code = Int(j, "code");
  }
  msg = "etcd: " + msg;
  if (code == 5) return NotFound(msg);
  if (code == 14 || code == 4 || http_status >= 502) return Unavailable(msg);
  if (code == 3 || code == 11) return InvalidArgument(msg);
  return Internal(msg + " (HTTP " + std::to_string(http_status) + ")");
}

}  // namespace

std::string PrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    auto& c = reinterpret_cast<unsigned char&>(end.back());
    if (c < 0xff) {
      c++;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // whole key space
}

struct EtcdClient::Endpoint {
  net::HostPort hp;
  std::mutex mu;
  std::vector<std::unique_ptr<net::HttpClient>> idle;
};

EtcdClient::EtcdClient(EtcdOptions opts) : opts_(std::move(opts)) {
  for (const auto& e : opts_.endpoints) {
    auto hp = net::ParseHttpUrl(e, 2379);
    if (!hp.ok()) continue;  // ValidateEndpoints reports these
    auto ep = std::make_unique<Endpoint>();
    ep->hp = *hp;
    endpoints_.push_back(std::move(ep));
  }
}

EtcdClient::~EtcdClient() = default;

Status EtcdClient::ValidateEndpoints(const std::vector<std::string>& endpoints) {
  if (endpoints.empty()) return InvalidArgument("no etcd endpoints configured");
  for (const auto& e : endpoints) {
    if (e.rfind("https://", 0) == 0)
      return InvalidArgument("etcd endpoint " + e +
                             ": https is not supported yet; use http:// on a private network");
    auto hp = net::ParseHttpUrl(e, 2379);
    if (!hp.ok()) return hp.status().Annotate("etcd endpoint '" + e + "'");
  }
  return Status::Ok();
}

std::unique_ptr<net::HttpClient> EtcdClient::Checkout(size_t i) {
  Endpoint& ep = *endpoints_[i];
  {
    std::lock_guard<std::mutex> l(ep.mu);
    if (!ep.idle.empty()) {
      auto c = std::move(ep.idle.back());
      ep.idle.pop_back();
      return c;
    }
  }
  net::HttpClientOptions o;
  o.connect_timeout = opts_.dial_timeout;
  o.request_timeout = opts_.request_timeout;
  o.limits.max_body_bytes = 512u << 20;  // big ranges (10,000s of keys)
  return std::make_unique<net::HttpClient>(ep.hp, o);
}

void EtcdClient::Checkin(size_t i, std::unique_ptr<net::HttpClient> c) {
  Endpoint& ep = *endpoints_[i];
  std::lock_guard<std::mutex> l(ep.mu);
  if (ep.idle.size() < 16) ep.idle.push_back(std::move(c));
}

Result<std::string> EtcdClient::Call(const std::string& path, const std::string& body,
                                     milliseconds timeout) {
  if (endpoints_.empty()) return InvalidArgument("no valid etcd endpoints configured");
  Status last = Unavailable("etcd: no endpoint answered");
  size_t start = current_.load();
  for (size_t k = 0; k < endpoints_.size(); k++) {
    size_t i = (start + k) % endpoints_.size();
    auto c = Checkout(i);
    auto resp = c->Do("POST", path, body, "application/json", timeout);
    if (!resp.ok()) {
      last = Unavailable("etcd: " + resp.status().message());
      continue;  // the connection is dropped with c
    }
    Checkin(i, std::move(c));
    if (resp->status == 200) {
      current_.store(i);
      return std::move(resp->body);
    }
    Status s = GatewayError(resp->status, resp->body);
    if (s.code() != Code::kUnavailable) {
      current_.store(i);
      return s;
    }
    last = s;
  }
  // Next call starts with the endpoint after the one that failed first.
  current_.store((start + 1) % endpoints_.size());
  return last;
}

Status EtcdClient::Stream(const std::string& path, const std::string& body,
                          const std::function<bool(std::string_view)>& on_data,
                          const std::atomic<bool>* cancel) {
  if (endpoints_.empty()) return InvalidArgument("no valid etcd endpoints configured");
  size_t i = current_.load() % endpoints_.size();
  net::HttpClientOptions o;
  o.connect_timeout = opts_.dial_timeout;
  net::HttpClient c(endpoints_[i]->hp, o);
  net::HttpRequest req;
  req.method = "POST";
  req.target = path;
  req.headers.Set("Content-Type", "application/json");
  req.body = body;
  Status s = c.Stream(req, on_data, cancel);
  if (!s.ok()) current_.store((i + 1) % endpoints_.size());  // try another member next time
  return s;
}

Result<RangeResult> EtcdClient::Get(const std::string& key) {
  HC_ASSIGN_OR_RETURN(auto body, Call("/v3/kv/range", RangeRequest(key, false).dump()));
  HC_ASSIGN_OR_RETURN(auto j, ParseBody(body));
  return ParseRange(j);
}

Result<RangeResult> EtcdClient::GetPrefix(const std::string& prefix, int64_t limit,
                                          int64_t revision, bool keys_only) {
  HC_ASSIGN_OR_RETURN(
      auto body,
      Call("/v3/kv/range", RangeRequest(prefix, true, limit, revision, keys_only).dump()));
  HC_ASSIGN_OR_RETURN(auto j, ParseBody(body));
  return ParseRange(j);
}

Result<int64_t> EtcdClient::Put(const std::string& key, const std::string& value, int64_t lease) {
  json r = {{"key", B64(key)}, {"value", B64(value)}};
  if (lease) r["lease"] = std::to_string(lease);
  HC_ASSIGN_OR_RETURN(auto body, Call("/v3/kv/put", r.dump()));
  HC_ASSIGN_OR_RETURN(auto j, ParseBody(body));
  return Int(j.value("header", json::object()), "revision");
}

Result<int64_t> EtcdClient::Delete(const std::string& key) {
  HC_ASSIGN_OR_RETURN(auto body, Call("/v3/kv/deleterange", json{{"key", B64(key)}}.dump()));
  HC_ASSIGN_OR_RETURN(auto j, ParseBody(body));
  return Int(j.value("header", json::object()), "revision");
}

Result<int64_t> EtcdClient::DeletePrefix(const std::string& prefix) {
  json r = {{"key", B64(prefix)}, {"range_end", B64(PrefixEnd(prefix))}};
  HC_ASSIGN_OR_RETURN(auto body, Call("/v3/kv/deleterange", r.dump()));
  HC_ASSIGN_OR_RETURN(auto j, ParseBody(body));
  return Int(j.value("header", json::object()), "revision");
}

Result<TxnResult> EtcdClient::Txn(const std::vector<Compare>& compares,
                                  const std::vector<TxnOp>& success,
                                  const std::vector<TxnOp>& failure) {
  json r = {{"compare", json::array()}, {"success", json::array()}, {"failure", json::array()}};
  for (const auto& c : compares) r["compare"].push_back(CompareJson(c));
  for (const auto& o : success) r["success"].push_back(OpJson(o));
  for (const auto& o : failure) r["failure"].push_back(OpJson(o));
  HC_ASSIGN_OR_RETURN(auto body, Call("/v3/kv/txn", r.dump()));
  HC_ASSIGN_OR_RETURN(auto j, ParseBody(body));
  TxnResult t;
  t.revision = Int(j.value("header", json::object()), "revision");
  auto ok = j.find("succeeded");
  t.succeeded = ok != j.end() && ok->is_boolean() && ok->get<bool>();
  if (auto rs = j.find("responses"); rs != j.end() && rs->is_array()) {
    for (const auto& e : *rs) {
      auto rr = e.find("response_range");
      if (rr == e.end()) continue;
      HC_ASSIGN_OR_RETURN(auto range, ParseRange(*rr));
      t.ranges.push_back(std::move(range));
    }
  }
  return t;
}

Result<int64_t> EtcdClient::GrantLease(int64_t ttl_seconds) {
  HC_ASSIGN_OR_RETURN(auto body, Call("/v3/lease/grant", json{{"TTL", ttl_seconds}}.dump()));
  HC_ASSIGN_OR_RETURN(auto j, ParseBody(body));
  int64_t id = Int(j, "ID");
  if (id == 0) return Internal("etcd: lease grant returned no ID: " + Str(j, "error"));
  return id;
}

Result<int64_t> EtcdClient::KeepAliveOnce(int64_t lease) {
  HC_ASSIGN_OR_RETURN(auto body,
                      Call("/v3/lease/keepalive", json{{"ID", std::to_string(lease)}}.dump()));
  // A one-message stream: {"result":{...,"TTL":"3"}} (TTL absent/0 = expired).
  auto nl = body.find('\n');
  HC_ASSIGN_OR_RETURN(auto j, ParseBody(nl == std::string::npos ? body : body.substr(0, nl)));
  if (auto e = j.find("error"); e != j.end()) return GatewayError(200, e->dump());
  int64_t ttl = Int(j.value("result", json::object()), "TTL");
  if (ttl <= 0) return NotFound("etcd: lease " + std::to_string(lease) + " has expired");
  return ttl;
}

Status EtcdClient::RevokeLease(int64_t lease) {
  auto r = Call("/v3/lease/revoke", json{{"ID", std::to_string(lease)}}.dump());
  if (!r.ok() && r.status().code() != Code::kNotFound) return r.status();
  return Status::Ok();
}

Result<int64_t> EtcdClient::Revision() {
  // A range over one unlikely key: cheap and returns the header revision.
  HC_ASSIGN_OR_RETURN(auto r, Get(std::string("\0", 1)));
  return r.revision;
}

// ---------------------------------------------------------------- Watch

Watch::Watch(EtcdClient* etcd, std::string prefix, int64_t start_revision, EventsFn on_events,
             ResyncFn on_resync)
    : etcd_(etcd),
      prefix_(std::move(prefix)),
      next_revision_(start_revision),
      on_events_(std::move(on_events)),
      on_resync_(std::move(on_resync)) {
  thread_ = std::thread([this] { Run(); });
}

Watch::~Watch() {
  Stop();
}

void Watch::Stop() {
  RequestStop();
  if (thread_.joinable()) thread_.join();
}

void Watch::RequestStop() {
  stop_.store(true);
  cv_.notify_all();
}

void Watch::Run() {
  milliseconds backoff{100};
  while (!stop_.load()) {
    json create = {{"key", B64(prefix_)}, {"range_end", B64(PrefixEnd(prefix_))}};
    if (next_revision_ > 0) create["start_revision"] = next_revision_;
    std::string body = json{{"create_request", create}}.dump();
    std::string pending;
    bool need_resync = false;
    bool got_any = false;
    auto on_data = [&](std::string_view data) {
      pending.append(data);
      size_t pos;
      while ((pos = pending.find('\n')) != std::string::npos) {
        std::string line = pending.substr(0, pos);
        pending.erase(0, pos + 1);
        if (line.empty()) continue;
        json j = json::parse(line, nullptr, false);
        if (!j.is_object()) continue;
        if (j.contains("error")) return false;
        const json& r = j.value("result", json::object());
        if (Int(r, "compact_revision") > 0) {
          need_resync = true;
          return false;
        }
        if (r.value("created", false)) {
          // A watch "from now" pins now, so that a reconnect resumes here and
          // not at the later "now" of the reconnect (as etcd's clientv3 does).
          if (next_revision_ <= 0)
            next_revision_ = Int(r.value("header", json::object()), "revision") + 1;
          connected_.store(true);
          got_any = true;
          continue;
        }
        if (r.value("canceled", false)) return false;
        std::vector<WatchEvent> events;
        int64_t last = 0;
        if (auto evs = r.find("events"); evs != r.end() && evs->is_array()) {
          for (const auto& e : *evs) {
            WatchEvent ev;
            ev.type = Str(e, "type") == "DELETE" ? WatchEvent::kDelete : WatchEvent::kPut;
            auto kv = ParseKv(e.value("kv", json::object()));
            if (!kv.ok()) continue;
            ev.kv = std::move(*kv);
            last = std::max(last, ev.kv.mod_revision);
            events.push_back(std::move(ev));
          }
        }
        int64_t rev = Int(r.value("header", json::object()), "revision");
        if (!events.empty()) {
          on_events_(events, std::max(rev, last));
          next_revision_ = last + 1;
        }
      }
      return !stop_.load();
    };
    Status s = etcd_->Stream("/v3/watch", body, on_data, &stop_);
    connected_.store(false);
    if (stop_.load()) break;
    if (need_resync) {
      int64_t rev = on_resync_ ? on_resync_() : 0;
      if (rev > 0) {
        next_revision_ = rev + 1;
        backoff = milliseconds{100};
        continue;
      }
    }
    if (got_any) backoff = milliseconds{100};
    reconnects_.fetch_add(1);
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, backoff, [&] { return stop_.load(); });
    backoff = std::min(backoff * 2, milliseconds{2000});
  }
}

// ---------------------------------------------------------------- LeaseSession

LeaseSession::LeaseSession(EtcdClient* etcd, int64_t ttl_seconds, Callbacks cb)
    : etcd_(etcd), ttl_(ttl_seconds), cb_(std::move(cb)) {}

LeaseSession::~LeaseSession() {
  stop_.store(true);
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (revoke_on_stop_ && lease_.load() != 0) (void)etcd_->RevokeLease(lease_.load());
}

void LeaseSession::Abandon() {
  revoke_on_stop_ = false;
  stop_.store(true);
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void LeaseSession::RenewAndAbandon() {
  Abandon();
  auto sent = std::chrono::steady_clock::now();
  if (lease_.load() != 0 && etcd_->KeepAliveOnce(lease_.load()).ok() && cb_.on_renewed)
    cb_.on_renewed(lease_.load(), sent);
}

Status LeaseSession::Start(milliseconds deadline) {
  auto until = std::chrono::steady_clock::now() + deadline;
  Status last = Status::Ok();
  std::chrono::steady_clock::time_point sent;
  while (true) {
    sent = std::chrono::steady_clock::now();
    auto id = etcd_->GrantLease(ttl_);
    if (id.ok()) {
      lease_.store(*id);
      break;
    }
    last = id.status();
    if (std::chrono::steady_clock::now() >= until)
      return last.Annotate("cannot get a lease from etcd");
    std::this_thread::sleep_for(milliseconds(200));
  }
  if (cb_.on_new) cb_.on_new(lease_.load());
  if (cb_.on_renewed) cb_.on_renewed(lease_.load(), sent);
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

void LeaseSession::Run() {
  using clock = std::chrono::steady_clock;
  const milliseconds period{std::max<int64_t>(ttl_ * 1000 / 3, 300)};
  auto last_ok = clock::now();
  bool retry_soon = false;
  while (!stop_.load()) {
    {
      // After a failed renewal, try again sooner: the fence deadline is near.
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_for(l, retry_soon ? std::min(period, milliseconds(250)) : period,
                   [&] { return stop_.load(); });
    }
    if (stop_.load()) break;
    auto sent = clock::now();
    auto r = etcd_->KeepAliveOnce(lease_.load());
    if (r.ok()) {
      last_ok = sent;
      retry_soon = false;
      if (cb_.on_renewed) cb_.on_renewed(lease_.load(), sent);
      continue;
    }
    retry_soon = true;
    bool expired = r.status().code() == Code::kNotFound;
    bool too_long = clock::now() - last_ok >= std::chrono::seconds(ttl_);
    if (!expired && !too_long) continue;  // retry soon; still inside the TTL
    if (cb_.on_lost) cb_.on_lost(lease_.load());
    // Get a new lease as soon as etcd answers again.
    while (!stop_.load()) {
      auto grant_sent = clock::now();
      auto id = etcd_->GrantLease(ttl_);
      if (id.ok()) {
        lease_.store(*id);
        last_ok = grant_sent;
        retry_soon = false;
        if (cb_.on_new) cb_.on_new(*id);
        if (cb_.on_renewed) cb_.on_renewed(*id, grant_sent);
        break;
      }
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_for(l, milliseconds(300), [&] { return stop_.load(); });
    }
  }
}

// ---------------------------------------------------------------- Election

Election::Election(EtcdClient* etcd, std::string key, std::string value)
    : etcd_(etcd), key_(std::move(key)), value_(std::move(value)) {}

Status Election::Campaign(int64_t lease, const std::atomic<bool>* cancel) {
  while (!cancel || !cancel->load()) {
    auto t =
        etcd_->Txn({Compare::Absent(key_)}, {TxnOp::Put(key_, value_, lease)}, {TxnOp::Get(key_)});
    if (!t.ok()) {
      std::this_thread::sleep_for(milliseconds(200));
      continue;
    }
    if (t->succeeded) {
      create_revision_ = t->revision;
      return Status::Ok();
    }
    // Someone leads. A stale key of our own (same value, e.g. after a restart
    // with the same lease) would block us until it expires; that is fine.
    int64_t rev = t->ranges.empty() ? t->revision : t->ranges[0].revision;
    if (!t->ranges.empty() && t->ranges[0].kvs.empty()) continue;  // just went away
    // Wait for the key to go.
    std::atomic<bool> gone{false};
    std::mutex mu;
    std::condition_variable cv;
    Watch w(
        etcd_, key_, rev + 1,
        [&](const std::vector<WatchEvent>& evs, int64_t) {
          for (const auto& e : evs)
            if (e.kv.key == key_ && e.type == WatchEvent::kDelete) {
              std::lock_guard<std::mutex> l(mu);
              gone.store(true);
              cv.notify_all();
            }
        },
        [&]() -> int64_t {
          std::lock_guard<std::mutex> l(mu);
          gone.store(true);  // recheck by campaigning again
          cv.notify_all();
          return 0;
        });
    std::unique_lock<std::mutex> l(mu);
    int ticks = 0;
    while (!gone.load() && (!cancel || !cancel->load())) {
      cv.wait_for(l, milliseconds(200));
      // The watch resumes by revision, so a delete is not missed; still look
      // again now and then (cheap insurance against the unforeseen).
      if (++ticks % 150 == 0) {
        l.unlock();
        auto g = etcd_->Get(key_);
        l.lock();
        if (g.ok() && g->kvs.empty()) gone.store(true);
      }
    }
  }
  return Unavailable("election cancelled");
}

void Election::WaitLost(const std::atomic<bool>* cancel) {
  while (!cancel || !cancel->load()) {
    std::atomic<bool> lost{false};
    std::mutex mu;
    std::condition_variable cv;
    Watch w(
        etcd_, key_, create_revision_ + 1,
        [&](const std::vector<WatchEvent>& evs, int64_t) {
          for (const auto& e : evs)
            if (e.kv.key == key_ &&
                (e.type == WatchEvent::kDelete || e.kv.create_revision != create_revision_)) {
              std::lock_guard<std::mutex> l(mu);
              lost.store(true);
              cv.notify_all();
            }
        },
        [&]() -> int64_t {
          std::lock_guard<std::mutex> l(mu);
          lost.store(true);  // unknown: check below
          cv.notify_all();
          return 0;
        });
    std::unique_lock<std::mutex> l(mu);
    int ticks = 0;
    while (!lost.load() && (!cancel || !cancel->load())) {
      cv.wait_for(l, milliseconds(200));
      if (++ticks % 10 == 0) {
        l.unlock();
        auto g = etcd_->Get(key_);
        l.lock();
        if (g.ok() && (g->kvs.empty() || g->kvs[0].create_revision != create_revision_))
          lost.store(true);
      }
    }
    if (lost.load()) {
      // Confirm: a resync also lands here.
      auto g = etcd_->Get(key_);
      if (g.ok() && !g->kvs.empty() && g->kvs[0].create_revision == create_revision_) continue;
      create_revision_ = 0;
      return;
    }
  }
}

Compare Election::Guard() const {
  return Compare::CreateRevision(key_, Compare::kEqual, create_revision_);
}

Status Election::Resign() {
  if (create_revision_ == 0) return Status::Ok();
  auto t = etcd_->Txn({Guard()}, {TxnOp::Delete(key_)});
  create_revision_ = 0;
  return t.status();
}

Result<std::string> Election::Leader() {
  HC_ASSIGN_OR_RETURN(auto r, etcd_->Get(key_));
  if (r.kvs.empty()) return std::string();
  return r.kvs[0].value;
}

}  // namespace hc::cluster
