#include "cluster/view_follower.h"

#include "common/log.h"

namespace hc::cluster {

using std::chrono::milliseconds;

ViewFollower::ViewFollower(ClusterStore* cs, Options opts) : cs_(cs), opts_(std::move(opts)) {}

ViewFollower::~ViewFollower() {
  Stop();
}

void ViewFollower::Start() {
  thread_ = std::thread([this] { Run(); });
}

void ViewFollower::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool ViewFollower::Load() {
  while (true) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stop_) return false;
    }
    Status s = Status::Ok();
    auto v = cs_->LoadView();
    Extra extra;
    if (!v.ok()) s = v.status();
    for (size_t i = 0; s.ok() && i < opts_.extra_prefixes.size(); ++i) {
      const std::string& prefix = opts_.extra_prefixes[i];
      auto r = cs_->etcd()->GetPrefix(prefix, 0, v->revision);
      if (!r.ok()) {
        s = r.status();
        break;
      }
      auto& kvs = extra[prefix];
      for (const auto& kv : r->kvs) kvs[kv.key.substr(prefix.size())] = kv.value;
    }
    if (s.ok()) {
      std::lock_guard<std::mutex> l(mu_);
      view_ = std::move(*v);
      extra_ = std::move(extra);
      dirty_ = true;
      return true;
    }
    LogWarn("%s: cannot read the cluster state: %s", opts_.name.c_str(), s.ToString().c_str());
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, milliseconds(500), [&] { return stop_; });
  }
}

void ViewFollower::Run() {
  if (!Load()) return;
  int64_t rev;
  {
    std::lock_guard<std::mutex> l(mu_);
    rev = view_.revision;
  }
  auto on_events = [&](const std::vector<WatchEvent>& evs, int64_t) {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& e : evs) {
      for (const std::string& prefix : opts_.extra_prefixes) {
        if (!e.kv.key.starts_with(prefix)) continue;
        std::string key = e.kv.key.substr(prefix.size());
        if (e.type == WatchEvent::kDelete) {
          extra_[prefix].erase(key);
        } else {
          extra_[prefix][key] = e.kv.value;
        }
      }
    }
    cs_->ApplyEvents(evs, &view_);
    dirty_ = true;
    cv_.notify_all();
  };
  auto resync = [&]() -> int64_t {
    Load();
    std::lock_guard<std::mutex> l(mu_);
    return view_.revision;
  };
  std::vector<std::string> prefixes = opts_.prefixes;
  for (const auto& p : opts_.extra_prefixes) prefixes.push_back(p);
  std::vector<std::unique_ptr<Watch>> watches;
  for (const auto& p : prefixes)
    watches.push_back(std::make_unique<Watch>(cs_->etcd(), p, rev + 1, on_events, resync));
  while (true) {
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return stop_ || dirty_; });
      if (stop_) break;
    }
    std::this_thread::sleep_for(opts_.delay ? opts_.delay() : milliseconds(20));
    {
      std::lock_guard<std::mutex> l(mu_);
      dirty_ = false;
    }
    opts_.rebuild();
  }
  for (auto& w : watches) w->Stop();
}

}  // namespace hc::cluster
