// EtcdClient, Watch, LeaseSession, Election and ClusterStore against a real
// etcd (etcd_test_env.h): one private etcd per test process, every test under
// its own key prefix. Tests that restart etcd wait for conditions, never for
// fixed times, except where holding a lease for a while is the point.
#include "cluster/etcd_client.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster_store.h"
#include "cluster/etcd_test_env.h"

namespace hc::cluster {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using testing::EtcdTestEnv;

// Every byte value once, 0x00 first.
std::string AllBytes() {
  std::string s;
  for (int b = 0; b < 256; b++) s.push_back(static_cast<char>(b));
  return s;
}

bool WaitUntil(const std::function<bool()>& pred, milliseconds timeout) {
  auto until = Clock::now() + timeout;
  while (!pred()) {
    if (Clock::now() >= until) return false;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return true;
}

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Collects what a Watch delivers (callbacks run on the watch's thread).
class Events {
 public:
  Watch::EventsFn Fn() {
    return [this](const std::vector<WatchEvent>& evs, int64_t) {
      std::lock_guard<std::mutex> l(mu_);
      for (const auto& e : evs) events_.push_back(e);
    };
  }
  size_t size() {
    std::lock_guard<std::mutex> l(mu_);
    return events_.size();
  }
  std::vector<WatchEvent> Get() {
    std::lock_guard<std::mutex> l(mu_);
    return events_;
  }
  // "put k=v" / "del k" per event, keys without `prefix`.
  std::vector<std::string> Describe(const std::string& prefix) {
    std::vector<std::string> out;
    for (const auto& e : Get()) {
      std::string k =
          e.kv.key.substr(0, prefix.size()) == prefix ? e.kv.key.substr(prefix.size()) : e.kv.key;
      out.push_back(e.type == WatchEvent::kPut ? "put " + k + "=" + e.kv.value : "del " + k);
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::vector<WatchEvent> events_;
};

// The etcd of this process, started by the first test that needs it and
// stopped when all tests have run.
EtcdTestEnv* g_env = nullptr;
std::string g_env_error;

class EtcdEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    delete g_env;
    g_env = nullptr;
  }
};
::testing::Environment* const kEtcdEnvironment =
    ::testing::AddGlobalTestEnvironment(new EtcdEnvironment);

class EtcdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = EtcdTestEnv::WhyUnavailable();
    if (!why.empty()) GTEST_SKIP() << "skipped: " << why;
    if (!g_env && g_env_error.empty()) {
      auto e = EtcdTestEnv::Start();
      if (e.ok())
        g_env = e->release();
      else
        g_env_error = e.status().ToString();
    }
    ASSERT_NE(g_env, nullptr) << g_env_error;
    // A failed test may have left etcd stopped.
    Status s = g_env->Resume();
    ASSERT_TRUE(s.ok()) << s.ToString();
    etcd_ = std::make_unique<EtcdClient>(EtcdOptions{.endpoints = {g_env->url()}});
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    prefix_ = std::string("/t/") + info->test_suite_name() + "." + info->name() + "/";
  }

  EtcdTestEnv& env() { return *g_env; }
  std::string K(const std::string& s) const { return prefix_ + s; }

  // The value of `key`, or "<absent>".
  std::string Value(const std::string& key) {
    auto r = etcd_->Get(key);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok() || r->kvs.empty()) return "<absent>";
    return r->kvs[0].value;
  }
  bool Exists(const std::string& key) { return Value(key) != "<absent>"; }
  int64_t Rev() {
    auto r = etcd_->Revision();
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : 0;
  }
  void RestartEtcd(bool crash) {
    Status s = crash ? env().Kill9() : env().Stop();
    ASSERT_TRUE(s.ok()) << s.ToString();
    s = env().Resume();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  std::unique_ptr<EtcdClient> etcd_;
  std::string prefix_;
};

// ---------------------------------------------------------------- key-value

TEST(PrefixEndTest, IncrementsTheLastByteBelow0xff) {
  EXPECT_EQ(PrefixEnd("/a/"), "/a0");
  EXPECT_EQ(PrefixEnd(std::string("a\xff\xff", 3)), "b");
  EXPECT_EQ(PrefixEnd(std::string("\xff", 1)), std::string(1, '\0'));  // the whole key space
  EXPECT_EQ(PrefixEnd(std::string("a\x00", 2)), std::string("a\x01", 2));
}

using EtcdKvTest = EtcdTest;

TEST_F(EtcdKvTest, PutGetDeleteKeepEveryByteOfKeysAndValues) {
  const std::string key = K("bin/" + AllBytes());
  const std::string value = AllBytes() + AllBytes();
  auto rev = etcd_->Put(key, value);
  ASSERT_TRUE(rev.ok()) << rev.status().ToString();
  EXPECT_GT(*rev, 0);

  auto got = etcd_->Get(key);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->kvs.size(), 1u);
  EXPECT_EQ(got->kvs[0].key, key);
  EXPECT_EQ(got->kvs[0].value, value);
  EXPECT_EQ(got->kvs[0].create_revision, *rev);
  EXPECT_EQ(got->kvs[0].mod_revision, *rev);
  EXPECT_EQ(got->kvs[0].version, 1);
  EXPECT_EQ(got->kvs[0].lease, 0);
  EXPECT_GE(got->revision, *rev);

  // Values of every length modulo 3 survive base64; so does the empty value.
  for (size_t n : {0, 1, 2, 3, 4, 5, 255, 256}) {
    std::string v = AllBytes().substr(256 - n);
    ASSERT_TRUE(etcd_->Put(key, v).ok());
    EXPECT_EQ(Value(key), v) << "length " << n;
  }
  got = etcd_->Get(key);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->kvs[0].version, 9);
  EXPECT_EQ(got->kvs[0].create_revision, *rev);

  auto del = etcd_->Delete(key);
  ASSERT_TRUE(del.ok()) << del.status().ToString();
  EXPECT_GT(*del, *rev);
  EXPECT_FALSE(Exists(key));
  // Deleting nothing is fine.
  auto del2 = etcd_->Delete(key);
  ASSERT_TRUE(del2.ok()) << del2.status().ToString();
  EXPECT_GE(*del2, *del);
  // A missing key is an empty result, not an error.
  got = etcd_->Get(K("missing"));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->kvs.empty());
}

TEST_F(EtcdKvTest, GetPrefixReturnsExactlyThePrefixInByteOrder) {
  // A prefix ending in 0xff: its range end is computed by carrying.
  const std::string p = K(std::string("p\xff", 2));
  const std::vector<std::string> inside = {p + std::string(1, '\0'), p + "a",
                                           p + std::string("\x7f", 1), p + std::string("\xff", 1),
                                           p + std::string("\xff\xff\x00", 3)};
  const std::vector<std::string> outside = {K(std::string("p\xfe\xff", 3)), K("p"), K("q"),
                                            K(std::string("q\x00", 2))};
  for (const auto& k : outside) ASSERT_TRUE(etcd_->Put(k, "out").ok());
  int64_t before_last = 0;
  for (const auto& k : inside) {
    auto r = etcd_->Put(k, "in:" + k.substr(p.size()));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    if (k != inside.back()) before_last = *r;
  }

  auto all = etcd_->GetPrefix(p);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  std::vector<std::string> sorted = inside;
  std::sort(sorted.begin(), sorted.end());  // std::string compares as unsigned bytes
  ASSERT_EQ(all->kvs.size(), sorted.size());
  for (size_t i = 0; i < sorted.size(); i++) {
    EXPECT_EQ(all->kvs[i].key, sorted[i]) << i;
    EXPECT_EQ(all->kvs[i].value, "in:" + sorted[i].substr(p.size())) << i;
  }
  EXPECT_FALSE(all->more);

  auto limited = etcd_->GetPrefix(p, /*limit=*/2);
  ASSERT_TRUE(limited.ok());
  ASSERT_EQ(limited->kvs.size(), 2u);
  EXPECT_EQ(limited->kvs[0].key, sorted[0]);
  EXPECT_EQ(limited->kvs[1].key, sorted[1]);
  EXPECT_TRUE(limited->more);

  auto keys = etcd_->GetPrefix(p, 0, 0, /*keys_only=*/true);
  ASSERT_TRUE(keys.ok());
  ASSERT_EQ(keys->kvs.size(), sorted.size());
  for (const auto& kv : keys->kvs) EXPECT_EQ(kv.value, "");

  // A read at an older revision does not see the last put.
  auto old = etcd_->GetPrefix(p, 0, before_last);
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_EQ(old->kvs.size(), inside.size() - 1);
}

TEST_F(EtcdKvTest, DeletePrefixRemovesOnlyThePrefix) {
  for (const char* k : {"d/a", "d/b/c", "d/", "e", "d"}) ASSERT_TRUE(etcd_->Put(K(k), "x").ok());
  auto r = etcd_->DeletePrefix(K("d/"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto left = etcd_->GetPrefix(prefix_);
  ASSERT_TRUE(left.ok());
  std::vector<std::string> keys;
  for (const auto& kv : left->kvs) keys.push_back(kv.key.substr(prefix_.size()));
  EXPECT_EQ(keys, (std::vector<std::string>{"d", "e"}));
}

// ---------------------------------------------------------------- transactions

TEST_F(EtcdKvTest, TxnAbsentCreatesOnceAndTheFailureBranchReadsTheWinner) {
  const std::string k = K("owner");
  auto first = etcd_->Txn({Compare::Absent(k)}, {TxnOp::Put(k, "a")}, {TxnOp::Get(k)});
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(first->succeeded);
  EXPECT_TRUE(first->ranges.empty());

  auto second = etcd_->Txn({Compare::Absent(k)}, {TxnOp::Put(k, "b")}, {TxnOp::Get(k)});
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_FALSE(second->succeeded);
  ASSERT_EQ(second->ranges.size(), 1u);
  ASSERT_EQ(second->ranges[0].kvs.size(), 1u);
  EXPECT_EQ(second->ranges[0].kvs[0].value, "a");
  EXPECT_EQ(second->ranges[0].kvs[0].create_revision, first->revision);
  EXPECT_EQ(second->ranges[0].kvs[0].mod_revision, first->revision);  // nothing was written
  EXPECT_EQ(Value(k), "a");
}

TEST_F(EtcdKvTest, TxnModRevisionIsACompareAndSwap) {
  const std::string k = K("cas");
  auto rev = etcd_->Put(k, "v1");
  ASSERT_TRUE(rev.ok());

  auto swap = etcd_->Txn({Compare::ModRevision(k, Compare::kEqual, *rev)}, {TxnOp::Put(k, "v2")},
                         {TxnOp::Get(k)});
  ASSERT_TRUE(swap.ok()) << swap.status().ToString();
  EXPECT_TRUE(swap->succeeded);
  EXPECT_GT(swap->revision, *rev);

  // The same expected revision is stale now: nothing is written and the
  // failure branch reports what is there.
  auto stale = etcd_->Txn({Compare::ModRevision(k, Compare::kEqual, *rev)},
                          {TxnOp::Put(k, "v3"), TxnOp::Put(K("side"), "x")},
                          {TxnOp::Get(k), TxnOp::GetPrefix(prefix_)});
  ASSERT_TRUE(stale.ok()) << stale.status().ToString();
  EXPECT_FALSE(stale->succeeded);
  ASSERT_EQ(stale->ranges.size(), 2u);
  ASSERT_EQ(stale->ranges[0].kvs.size(), 1u);
  EXPECT_EQ(stale->ranges[0].kvs[0].value, "v2");
  EXPECT_EQ(stale->ranges[0].kvs[0].mod_revision, swap->revision);
  EXPECT_EQ(stale->ranges[1].kvs.size(), 1u);
  EXPECT_EQ(Value(k), "v2");
  EXPECT_FALSE(Exists(K("side")));

  // Greater/Less, and several ops in one branch.
  auto many = etcd_->Txn({Compare::ModRevision(k, Compare::kGreater, *rev),
                          Compare::ModRevision(k, Compare::kLess, swap->revision + 1)},
                         {TxnOp::Put(K("m/1"), "1"), TxnOp::Put(K("m/2"), "2"), TxnOp::Delete(k),
                          TxnOp::GetPrefix(K("m/"))});
  ASSERT_TRUE(many.ok()) << many.status().ToString();
  EXPECT_TRUE(many->succeeded);
  ASSERT_EQ(many->ranges.size(), 1u);
  EXPECT_EQ(many->ranges[0].kvs.size(), 2u);  // a range inside a txn sees its earlier puts
  EXPECT_FALSE(Exists(k));
}

TEST_F(EtcdKvTest, TxnValueCompareIsBinarySafe) {
  const std::string k = K("val");
  const std::string v = AllBytes();
  ASSERT_TRUE(etcd_->Put(k, v).ok());
  std::string almost = v;
  almost[0] = '\x01';

  auto wrong = etcd_->Txn({Compare::Value(k, Compare::kEqual, almost)}, {TxnOp::Put(k, "no")},
                          {TxnOp::Get(k)});
  ASSERT_TRUE(wrong.ok()) << wrong.status().ToString();
  EXPECT_FALSE(wrong->succeeded);
  ASSERT_EQ(wrong->ranges.size(), 1u);
  ASSERT_EQ(wrong->ranges[0].kvs.size(), 1u);
  EXPECT_EQ(wrong->ranges[0].kvs[0].value, v);

  auto ne = etcd_->Txn({Compare::Value(k, Compare::kNotEqual, almost)}, {});
  ASSERT_TRUE(ne.ok());
  EXPECT_TRUE(ne->succeeded);

  auto right = etcd_->Txn({Compare::Value(k, Compare::kEqual, v)}, {TxnOp::Put(k, "yes")});
  ASSERT_TRUE(right.ok()) << right.status().ToString();
  EXPECT_TRUE(right->succeeded);
  EXPECT_EQ(Value(k), "yes");
}

// ---------------------------------------------------------------- leases

using EtcdLeaseTest = EtcdTest;

TEST_F(EtcdLeaseTest, KeyLivesWhileKeptAliveAndGoesWithinTtlAfterwards) {
  auto lease = etcd_->GrantLease(2);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  const std::string k = K("leased");
  ASSERT_TRUE(etcd_->Put(k, "x", *lease).ok());
  auto got = etcd_->Get(k);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->kvs.size(), 1u);
  EXPECT_EQ(got->kvs[0].lease, *lease);

  // Kept alive for longer than the TTL, the key stays.
  auto start = Clock::now();
  while (SecondsSince(start) < 3.0) {
    auto ttl = etcd_->KeepAliveOnce(*lease);
    ASSERT_TRUE(ttl.ok()) << ttl.status().ToString();
    EXPECT_GE(*ttl, 1);
    EXPECT_LE(*ttl, 2);
    ASSERT_TRUE(Exists(k));
    std::this_thread::sleep_for(milliseconds(500));
  }

  // Left alone, it expires: TTL plus etcd's expiry check (500 ms).
  ASSERT_TRUE(etcd_->KeepAliveOnce(*lease).ok());
  auto last_renewal = Clock::now();
  ASSERT_TRUE(WaitUntil([&] { return !Exists(k); }, milliseconds(5000)));
  double gone_after = SecondsSince(last_renewal);
  EXPECT_LT(gone_after, 3.5);
  EXPECT_GT(gone_after, 1.0) << "the lease expired before its TTL";

  auto again = etcd_->KeepAliveOnce(*lease);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), Code::kNotFound) << again.status().ToString();
}

TEST_F(EtcdLeaseTest, RevokeDeletesTheLeasesKeysAtOnce) {
  auto lease = etcd_->GrantLease(30);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  ASSERT_TRUE(etcd_->Put(K("a"), "1", *lease).ok());
  ASSERT_TRUE(etcd_->Put(K("b"), "2", *lease).ok());
  ASSERT_TRUE(etcd_->Put(K("c"), "3").ok());

  Status s = etcd_->RevokeLease(*lease);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_FALSE(Exists(K("a")));
  EXPECT_FALSE(Exists(K("b")));
  EXPECT_TRUE(Exists(K("c")));

  auto ka = etcd_->KeepAliveOnce(*lease);
  ASSERT_FALSE(ka.ok());
  EXPECT_EQ(ka.status().code(), Code::kNotFound) << ka.status().ToString();
  // Revoking twice is fine; writing with a revoked lease is not.
  s = etcd_->RevokeLease(*lease);
  EXPECT_TRUE(s.ok()) << s.ToString();
  auto put = etcd_->Put(K("d"), "4", *lease);
  ASSERT_FALSE(put.ok());
  EXPECT_EQ(put.status().code(), Code::kNotFound) << put.status().ToString();
  EXPECT_FALSE(Exists(K("d")));
}

TEST_F(EtcdLeaseTest, KeepAliveOnANeverGrantedLeaseIsNotFound) {
  auto ka = etcd_->KeepAliveOnce(0x123456789);
  ASSERT_FALSE(ka.ok());
  EXPECT_EQ(ka.status().code(), Code::kNotFound) << ka.status().ToString();
}

// ---------------------------------------------------------------- watch

using EtcdWatchTest = EtcdTest;

TEST_F(EtcdWatchTest, DeliversPutsAndDeletesInRevisionOrder) {
  int64_t start = Rev() + 1;
  Events ev;
  Watch w(etcd_.get(), K("w/"), start, ev.Fn(), nullptr);
  const std::string bin = AllBytes();
  ASSERT_TRUE(etcd_->Put(K("w/a"), "1").ok());
  ASSERT_TRUE(etcd_->Put(K("outside"), "x").ok());
  ASSERT_TRUE(etcd_->Put(K("w/b"), bin).ok());
  ASSERT_TRUE(etcd_->Delete(K("w/a")).ok());
  ASSERT_TRUE(etcd_->Put(K("w/a"), "2").ok());
  ASSERT_TRUE(etcd_->Txn({}, {TxnOp::Put(K("w/c"), "3"), TxnOp::Put(K("w/d"), "4")}).ok());
  ASSERT_TRUE(etcd_->DeletePrefix(K("w/")).ok());

  const std::vector<std::string> want = {"put w/a=1", "put w/b=" + bin, "del w/a", "put w/a=2",
                                         "put w/c=3", "put w/d=4",      "del w/a", "del w/b",
                                         "del w/c",   "del w/d"};
  ASSERT_TRUE(WaitUntil([&] { return ev.size() >= want.size(); }, milliseconds(5000)))
      << "got " << ev.size() << " events";
  std::this_thread::sleep_for(milliseconds(200));  // nothing more may come
  EXPECT_EQ(ev.Describe(prefix_), want);
  auto events = ev.Get();
  for (size_t i = 1; i < events.size(); i++)
    EXPECT_GE(events[i].kv.mod_revision, events[i - 1].kv.mod_revision) << i;
  EXPECT_EQ(events[4].kv.mod_revision, events[5].kv.mod_revision);  // one transaction
  EXPECT_GE(events[0].kv.mod_revision, start);
  EXPECT_TRUE(w.connected());
}

TEST_F(EtcdWatchTest, StartRevisionZeroMeansFromNow) {
  ASSERT_TRUE(etcd_->Put(K("w/old"), "1").ok());
  Events ev;
  Watch w(etcd_.get(), K("w/"), 0, ev.Fn(), nullptr);
  ASSERT_TRUE(WaitUntil([&] { return w.connected(); }, milliseconds(5000)));
  ASSERT_TRUE(etcd_->Put(K("w/new"), "2").ok());
  ASSERT_TRUE(WaitUntil([&] { return ev.size() >= 1; }, milliseconds(5000)));
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(ev.Describe(prefix_), std::vector<std::string>{"put w/new=2"});
}

// Keys k01..kNN written around restarts (clean and crash) arrive exactly
// once and in order.
TEST_F(EtcdWatchTest, ResumesAfterEtcdRestartsWithoutLossOrDuplicates) {
  Events ev;
  Watch w(etcd_.get(), K("w/"), Rev() + 1, ev.Fn(), nullptr);
  int n = 0;
  std::vector<std::string> want;
  auto write = [&](int count) {
    for (int i = 0; i < count; i++) {
      char name[16];
      snprintf(name, sizeof name, "w/k%02d", ++n);
      auto r = etcd_->Put(K(name), std::to_string(n));
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      want.push_back(std::string("put ") + name + "=" + std::to_string(n));
    }
  };
  write(5);
  ASSERT_TRUE(WaitUntil([&] { return ev.size() >= 2; }, milliseconds(5000)));
  ASSERT_NO_FATAL_FAILURE(RestartEtcd(/*crash=*/false));
  write(5);
  write(3);
  ASSERT_NO_FATAL_FAILURE(RestartEtcd(/*crash=*/true));  // right after writes: some undelivered
  write(5);
  ASSERT_TRUE(WaitUntil([&] { return ev.size() >= want.size(); }, milliseconds(10000)))
      << "got " << ev.size() << " of " << want.size() << " events";
  std::this_thread::sleep_for(milliseconds(300));  // duplicates would show up now
  EXPECT_EQ(ev.Describe(prefix_), want);
  EXPECT_GE(w.reconnects(), 2);
}

// A watch that has seen no event yet must still not lose writes made between
// a restart and its reconnect.
TEST_F(EtcdWatchTest, WatchFromNowLosesNothingAcrossARestartBeforeItsFirstEvent) {
  Events ev;
  Watch w(etcd_.get(), K("w/"), 0, ev.Fn(), nullptr);
  ASSERT_TRUE(WaitUntil([&] { return w.connected(); }, milliseconds(5000)));
  Status s = env().Stop();
  ASSERT_TRUE(s.ok()) << s.ToString();
  // Down long enough for the watch to back off to its longest retry delay,
  // so the writes below land before it is back.
  ASSERT_TRUE(WaitUntil([&] { return w.reconnects() >= 5; }, milliseconds(10000)));
  s = env().Resume();
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE(etcd_->Put(K("w/a"), "1").ok());
  ASSERT_TRUE(etcd_->Put(K("w/b"), "2").ok());
  ASSERT_TRUE(WaitUntil([&] { return ev.size() >= 2; }, milliseconds(10000)))
      << "got " << ev.size() << " events";
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ(ev.Describe(prefix_), (std::vector<std::string>{"put w/a=1", "put w/b=2"}));
}

TEST_F(EtcdWatchTest, StartRevisionOlderThanCompactionCallsResyncThenContinues) {
  auto first = etcd_->Put(K("w/a"), "1");
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(etcd_->Put(K("w/a"), "2").ok());
  auto last = etcd_->Put(K("w/a"), "3");
  ASSERT_TRUE(last.ok());
  auto c = etcd_->Call("/v3/kv/compaction",
                       R"({"revision":")" + std::to_string(*last) + R"(","physical":true})");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  // The revisions before the compaction are gone.
  auto old = etcd_->GetPrefix(K("w/"), 0, *first);
  EXPECT_FALSE(old.ok());

  Events ev;
  std::atomic<int> resyncs{0};
  std::atomic<int64_t> resync_rev{0};
  Watch w(etcd_.get(), K("w/"), *first, ev.Fn(), [&]() -> int64_t {
    // The owner re-reads the prefix; the watch continues after that read.
    auto r = etcd_->GetPrefix(K("w/"));
    if (!r.ok()) return 0;
    resync_rev.store(r->revision);
    resyncs.fetch_add(1);
    return r->revision;
  });
  ASSERT_TRUE(WaitUntil([&] { return resyncs.load() >= 1; }, milliseconds(5000)));
  ASSERT_TRUE(WaitUntil([&] { return w.connected(); }, milliseconds(5000)));
  ASSERT_TRUE(etcd_->Put(K("w/b"), "4").ok());
  ASSERT_TRUE(WaitUntil([&] { return ev.size() >= 1; }, milliseconds(5000)));
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ(ev.Describe(prefix_), std::vector<std::string>{"put w/b=4"});
  EXPECT_EQ(resyncs.load(), 1);
  EXPECT_GE(resync_rev.load(), *last);
}

// ---------------------------------------------------------------- LeaseSession

using LeaseSessionTest = EtcdTest;

// One log of callbacks, in order: "new" / "lost" with the lease id.
class SessionLog {
 public:
  LeaseSession::Callbacks Callbacks() {
    return {.on_new = [this](int64_t l) { Add("new", l); },
            .on_lost = [this](int64_t l) { Add("lost", l); }};
  }
  std::vector<std::pair<std::string, int64_t>> Get() {
    std::lock_guard<std::mutex> l(mu_);
    return log_;
  }
  size_t size() { return Get().size(); }

 private:
  void Add(const char* what, int64_t lease) {
    std::lock_guard<std::mutex> l(mu_);
    log_.emplace_back(what, lease);
  }
  std::mutex mu_;
  std::vector<std::pair<std::string, int64_t>> log_;
};

TEST_F(LeaseSessionTest, KeepsTheLeaseAliveAndReplacesItAfterAnOutageLongerThanTheTtl) {
  constexpr int64_t kTtl = 2;
  SessionLog log;
  int64_t first = 0, second = 0;
  {
    LeaseSession s(etcd_.get(), kTtl, log.Callbacks());
    Status st = s.Start(milliseconds(5000));
    ASSERT_TRUE(st.ok()) << st.ToString();
    first = s.lease();
    ASSERT_NE(first, 0);
    ASSERT_EQ(log.Get(), (std::vector<std::pair<std::string, int64_t>>{{"new", first}}));
    ASSERT_TRUE(etcd_->Put(K("mine"), "x", first).ok());

    // Holding the lease for a while is the point here.
    std::this_thread::sleep_for(milliseconds(kTtl * 3 * 1000 + 500));
    EXPECT_TRUE(Exists(K("mine")));
    EXPECT_TRUE(etcd_->KeepAliveOnce(first).ok());
    EXPECT_EQ(log.size(), 1u);

    // etcd away for longer than the TTL: the session gives the lease up...
    Status stop = env().Stop();
    ASSERT_TRUE(stop.ok()) << stop.ToString();
    auto down = Clock::now();
    ASSERT_TRUE(WaitUntil([&] { return log.size() >= 2; }, milliseconds(kTtl * 1000 + 3000)));
    EXPECT_GE(SecondsSince(down), 1.0);
    // ...and takes a new one when etcd is back.
    Status up = env().Resume();
    ASSERT_TRUE(up.ok()) << up.ToString();
    ASSERT_TRUE(WaitUntil([&] { return log.size() >= 3; }, milliseconds(10000)));
    auto l = log.Get();
    ASSERT_EQ(l.size(), 3u);
    EXPECT_EQ(l[1], std::make_pair(std::string("lost"), first));
    EXPECT_EQ(l[2].first, "new");
    second = l[2].second;
    EXPECT_NE(second, first);
    EXPECT_EQ(s.lease(), second);
    EXPECT_TRUE(etcd_->KeepAliveOnce(second).ok());
  }
  // The destructor revokes.
  auto ka = etcd_->KeepAliveOnce(second);
  EXPECT_EQ(ka.status().code(), Code::kNotFound) << ka.status().ToString();
  // The first lease outlived the outage (etcd renews leases when it starts);
  // nobody keeps it alive any more.
  EXPECT_TRUE(etcd_->RevokeLease(first).ok());
}

TEST_F(LeaseSessionTest, RenewAndAbandonLeavesTheLeaseAFullTtlAndReportsTheRenewal) {
  constexpr int64_t kTtl = 3;
  std::atomic<int> renewals{0};
  std::atomic<int64_t> last_sent_ns{0};
  Clock::time_point abandoned;
  {
    LeaseSession s(etcd_.get(), kTtl, {.on_renewed = [&](int64_t, Clock::time_point sent) {
                     renewals++;
                     last_sent_ns.store(sent.time_since_epoch().count());
                   }});
    ASSERT_TRUE(s.Start(milliseconds(5000)).ok());
    ASSERT_TRUE(etcd_->Put(K("renewed"), "x", s.lease()).ok());
    // The thread renews every TTL/3 (at 1 s): abandoned at 1.9 s, the lease
    // would end at 4 s; renewed at 1.9 s, it ends at 4.9 s.
    std::this_thread::sleep_for(milliseconds(1900));
    int before = renewals.load();
    abandoned = Clock::now();
    s.RenewAndAbandon();
    EXPECT_EQ(renewals.load(), before + 1);
    EXPECT_GE(last_sent_ns.load(), abandoned.time_since_epoch().count());
  }
  // Not revoked by the destructor, and alive past the end it had before...
  std::this_thread::sleep_until(abandoned + milliseconds(2600));
  EXPECT_TRUE(Exists(K("renewed")));
  // ...but nobody renews it any more.
  EXPECT_TRUE(WaitUntil([&] { return !Exists(K("renewed")); }, milliseconds(kTtl * 1000 + 3000)));
}

// ---------------------------------------------------------------- Election

// A node campaigning on its own thread with its own session.
class Candidate {
 public:
  Candidate(EtcdClient* etcd, const std::string& key, const std::string& name)
      : etcd_(etcd), election_(etcd, key, name) {}
  ~Candidate() { Join(); }

  Status StartSession(int64_t ttl) {
    session_ = std::make_unique<LeaseSession>(etcd_, ttl, LeaseSession::Callbacks{});
    return session_->Start(milliseconds(5000));
  }
  void Campaign() {
    Join();
    cancel_.store(false);
    leading_.store(false);
    thread_ = std::thread([this] {
      Status s = election_.Campaign(session_->lease(), &cancel_);
      if (s.ok()) {
        elected_at_ = Clock::now();
        leading_.store(true);
      }
    });
  }
  void Join() {
    cancel_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  bool leading() const { return leading_.load(); }
  Clock::time_point elected_at() const { return elected_at_; }
  Election& election() { return election_; }
  LeaseSession& session() { return *session_; }

 private:
  EtcdClient* etcd_;
  Election election_;
  std::unique_ptr<LeaseSession> session_;
  std::atomic<bool> cancel_{false};
  std::atomic<bool> leading_{false};
  Clock::time_point elected_at_;
  std::thread thread_;
};

using ElectionTest = EtcdTest;

TEST_F(ElectionTest, OneLeadsTheOtherTakesOverAndTheDeposedLeadersWritesFail) {
  constexpr int64_t kTtl = 2;
  const std::string key = K("leader");
  Candidate a(etcd_.get(), key, "a"), b(etcd_.get(), key, "b");
  ASSERT_TRUE(a.StartSession(kTtl).ok());
  ASSERT_TRUE(b.StartSession(kTtl).ok());
  a.Campaign();
  b.Campaign();
  ASSERT_TRUE(WaitUntil([&] { return a.leading() || b.leading(); }, milliseconds(5000)));
  std::this_thread::sleep_for(milliseconds(500));
  ASSERT_NE(a.leading(), b.leading()) << "both lead";
  Candidate& first = a.leading() ? a : b;
  Candidate& second = a.leading() ? b : a;
  auto leader = first.election().Leader();
  ASSERT_TRUE(leader.ok());
  EXPECT_EQ(*leader, &first == &a ? "a" : "b");

  // The leader's writes carry its guard and land.
  auto w = etcd_->Txn({first.election().Guard()}, {TxnOp::Put(K("data"), "from first")});
  ASSERT_TRUE(w.ok());
  EXPECT_TRUE(w->succeeded);

  // The leader dies without resigning: its lease expires, the other takes over.
  first.session().Abandon();
  auto abandoned = Clock::now();
  ASSERT_TRUE(WaitUntil([&] { return second.leading(); }, milliseconds((kTtl + 3) * 1000)));
  EXPECT_LT(std::chrono::duration<double>(second.elected_at() - abandoned).count(), kTtl + 1.0);
  leader = second.election().Leader();
  ASSERT_TRUE(leader.ok());
  EXPECT_EQ(*leader, &second == &a ? "a" : "b");

  // The deposed leader's late write fails; the new leader's lands.
  w = etcd_->Txn({first.election().Guard()}, {TxnOp::Put(K("data"), "late, from first")});
  ASSERT_TRUE(w.ok());
  EXPECT_FALSE(w->succeeded);
  w = etcd_->Txn({second.election().Guard()}, {TxnOp::Put(K("data"), "from second")});
  ASSERT_TRUE(w.ok());
  EXPECT_TRUE(w->succeeded);
  EXPECT_EQ(Value(K("data")), "from second");

  // The old leader comes back and waits; revoking the new leader's lease
  // hands over at once, and the new leader learns it lost.
  ASSERT_TRUE(first.StartSession(kTtl).ok());
  first.Campaign();
  std::atomic<bool> cancel{false}, lost{false};
  std::thread waiter([&] {
    second.election().WaitLost(&cancel);
    lost.store(true);
  });
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_FALSE(first.leading());
  EXPECT_FALSE(lost.load());
  auto revoked = Clock::now();
  Status s = etcd_->RevokeLease(second.session().lease());
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(WaitUntil([&] { return first.leading(); }, milliseconds(3000)));
  EXPECT_LT(SecondsSince(revoked), 1.5);
  EXPECT_TRUE(WaitUntil([&] { return lost.load(); }, milliseconds(3000)));
  cancel.store(true);
  waiter.join();
  leader = first.election().Leader();
  ASSERT_TRUE(leader.ok());
  EXPECT_EQ(*leader, &first == &a ? "a" : "b");
}

TEST_F(ElectionTest, ResignLetsTheNextCandidateLead) {
  const std::string key = K("leader");
  Candidate a(etcd_.get(), key, "a"), b(etcd_.get(), key, "b");
  ASSERT_TRUE(a.StartSession(5).ok());
  ASSERT_TRUE(b.StartSession(5).ok());
  a.Campaign();
  ASSERT_TRUE(WaitUntil([&] { return a.leading(); }, milliseconds(5000)));
  b.Campaign();
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_FALSE(b.leading());
  Status s = a.election().Resign();
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(WaitUntil([&] { return b.leading(); }, milliseconds(2000)));
  auto leader = a.election().Leader();
  ASSERT_TRUE(leader.ok());
  EXPECT_EQ(*leader, "b");
}

// ---------------------------------------------------------------- failover

using EtcdFailoverTest = EtcdTest;

TEST_F(EtcdFailoverTest, ADeadFirstEndpointIsSkippedForCallsAndWatches) {
  const EtcdOptions opts{.endpoints = {"http://127.0.0.20:1", env().url()}};
  EtcdClient writer(opts);
  auto put = writer.Put(K("f/a"), "1");
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(Value(K("f/a")), "1");
  auto got = writer.Get(K("f/a"));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->kvs.size(), 1u);

  // A fresh client whose first stream goes to the dead endpoint.
  EtcdClient watcher(opts);
  Events ev;
  Watch w(&watcher, K("f/"), *put + 1, ev.Fn(), nullptr);
  ASSERT_TRUE(writer.Put(K("f/b"), "2").ok());
  ASSERT_TRUE(WaitUntil([&] { return ev.size() >= 1; }, milliseconds(5000)));
  EXPECT_EQ(ev.Describe(prefix_), std::vector<std::string>{"put f/b=2"});
}

TEST_F(EtcdFailoverTest, NoLiveEndpointIsUnavailable) {
  EtcdClient dead(
      {.endpoints = {"http://127.0.0.20:1", "127.0.0.20:2"}, .dial_timeout = milliseconds(300)});
  auto r = dead.Get(K("x"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnavailable) << r.status().ToString();
  EtcdClient none(EtcdOptions{});
  EXPECT_FALSE(none.Get(K("x")).ok());
}

// ---------------------------------------------------------------- ClusterStore

class ClusterStoreTest : public EtcdTest {
 protected:
  void SetUp() override {
    EtcdTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    store_ = std::make_unique<ClusterStore>(etcd_.get(), K("hc"));
    // A leader key to guard with.
    auto t =
        etcd_->Txn({Compare::Absent(store_->LeaderKey())}, {TxnOp::Put(store_->LeaderKey(), "n1")});
    ASSERT_TRUE(t.ok() && t->succeeded);
    guard_ = Compare::CreateRevision(store_->LeaderKey(), Compare::kEqual, t->revision);
  }

  static AppDef App(const std::string& name, uint32_t replicas = 1) {
    AppDef a;
    a.name = name;
    a.template_name = "static";
    a.domains = {name + ".example.com"};
    a.replicas = replicas;
    a.created_unix = 1700000000;
    return a;
  }
  static Placement Place(const std::string& app, const std::string& primary,
                         std::vector<std::string> replicas, uint64_t epoch = 1) {
    Placement p;
    p.app = app;
    p.primary = primary;
    p.replicas = std::move(replicas);
    p.epoch = epoch;
    return p;
  }
  static PlacementWrite Create(const Placement& p) {
    PlacementWrite w;
    w.kind = PlacementWrite::kCreate;
    w.placement = p;
    w.app = App(p.app, static_cast<uint32_t>(p.replicas.size()));
    return w;
  }

  // Every key of the store with its mod revision.
  std::vector<std::pair<std::string, int64_t>> Keys() {
    auto r = etcd_->GetPrefix(store_->prefix());
    EXPECT_TRUE(r.ok());
    std::vector<std::pair<std::string, int64_t>> out;
    if (r.ok())
      for (const auto& kv : r->kvs) out.emplace_back(kv.key, kv.mod_revision);
    return out;
  }

  // The apps that have an assign/<node>/ key.
  std::vector<std::string> AssignedApps(const std::string& node) {
    auto r = etcd_->GetPrefix(store_->AssignPrefix(node));
    EXPECT_TRUE(r.ok());
    std::vector<std::string> out;
    if (r.ok())
      for (const auto& kv : r->kvs) out.push_back(store_->AssignKeyApp(node, kv.key));
    return out;
  }
  std::optional<Placement> StoredPlacement(const std::string& app) {
    auto r = etcd_->Get(store_->PlacementKey(app));
    EXPECT_TRUE(r.ok());
    if (!r.ok() || r->kvs.empty()) return std::nullopt;
    auto p = PlacementFromJson(r->kvs[0].value);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    if (!p.ok()) return std::nullopt;
    return *p;
  }

  std::unique_ptr<ClusterStore> store_;
  Compare guard_;
};

TEST_F(ClusterStoreTest, CreateAppTwiceIsAlreadyExistsAndDeletingAMissingAppIsNotFound) {
  Status s = store_->CreateApp(App("shop"));
  ASSERT_TRUE(s.ok()) << s.ToString();
  s = store_->CreateApp(App("shop", 2));
  EXPECT_EQ(s.code(), Code::kAlreadyExists) << s.ToString();
  EXPECT_NE(s.message().find("'shop'"), std::string::npos) << s.message();

  auto got = store_->GetApp("shop");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->replicas, 1u);  // the second create changed nothing
  EXPECT_EQ((*got)->domains, std::vector<std::string>{"shop.example.com"});

  s = store_->DeleteApp("shop");
  ASSERT_TRUE(s.ok()) << s.ToString();
  s = store_->DeleteApp("shop");
  EXPECT_EQ(s.code(), Code::kNotFound) << s.ToString();
  EXPECT_NE(s.message().find("'shop'"), std::string::npos) << s.message();
  got = store_->GetApp("shop");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
}

TEST_F(ClusterStoreTest, TheCaCertificateIsCreatedOnceAndTheLoserSeesTheWinner) {
  auto none = store_->GetCaCert();
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_FALSE(none->has_value());
  auto first = store_->CreateCaCertIfAbsent("CA one");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(*first, "CA one");
  auto second = store_->CreateCaCertIfAbsent("CA two");
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(*second, "CA one");
  auto got = store_->GetCaCert();
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, "CA one");
}

TEST_F(ClusterStoreTest, JoinTokensLiveUnderTheirOwnLease) {
  JoinTokenRecord t{"0123456789ab", "cHVibGlj", 1700000000, 1700003600, "n1"};
  ASSERT_TRUE(store_->CreateJoinToken(t, 60).ok());
  EXPECT_EQ(store_->CreateJoinToken(t, 60).code(), Code::kAlreadyExists);
  auto got = store_->GetJoinToken(t.id);
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status().ToString();
  EXPECT_EQ((*got)->public_key, "cHVibGlj");
  EXPECT_EQ((*got)->expires_unix, 1700003600);
  EXPECT_EQ((*got)->created_by, "n1");
  auto kv = etcd_->Get(store_->JoinTokenKey(t.id));
  ASSERT_TRUE(kv.ok() && !kv->kvs.empty());
  EXPECT_NE(kv->kvs[0].lease, 0);
  ASSERT_TRUE(store_->DeleteJoinToken(t.id).ok());
  EXPECT_EQ(store_->DeleteJoinToken(t.id).code(), Code::kNotFound);
  got = store_->GetJoinToken(t.id);
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
}

TEST_F(ClusterStoreTest, LoadViewReadsNodesAppsPlacementsAndLeaderAtOneRevision) {
  auto lease = etcd_->GrantLease(30);
  ASSERT_TRUE(lease.ok());
  for (const char* id : {"n1", "n2"}) {
    NodeInfo n;
    n.id = id;
    n.address = "127.0.0.1";
    n.api_port = 7480;
    n.datacenter = "dc1";
    n.memory_bytes = 1ull << 30;
    n.cpu_millis = 2000;
    ASSERT_TRUE(store_->RegisterNode(n, *lease).ok());
  }
  ASSERT_TRUE(store_->CreateApp(App("a")).ok());
  ASSERT_TRUE(store_->CreateApp(App("b")).ok());
  ClusterView scratch;
  auto applied = store_->ApplyPlacements({Create(Place("a", "n1", {"n2"}))}, guard_, &scratch);
  ASSERT_TRUE(applied.ok()) << applied.status().ToString();

  auto v = store_->LoadView();
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->nodes.size(), 2u);
  EXPECT_EQ(v->nodes["n2"].cpu_millis, 2000u);
  EXPECT_EQ(v->apps.size(), 2u);
  ASSERT_EQ(v->placements.size(), 1u);
  EXPECT_EQ(v->placements["a"].primary, "n1");
  EXPECT_EQ(v->leader, "n1");
  auto p = etcd_->Get(store_->PlacementKey("a"));
  ASSERT_TRUE(p.ok() && p->kvs.size() == 1);
  EXPECT_EQ(v->placement_mod_revision["a"], p->kvs[0].mod_revision);
  EXPECT_EQ(v->placement_mod_revision["a"], scratch.placement_mod_revision["a"]);
  EXPECT_LE(v->revision, Rev());
  auto keys = etcd_->GetPrefix(store_->prefix());
  ASSERT_TRUE(keys.ok());
  for (const auto& kv : keys->kvs) EXPECT_LE(kv.mod_revision, v->revision) << kv.key;

  // Later writes are not in the view; the node keys go with their lease.
  ASSERT_TRUE(store_->CreateApp(App("c")).ok());
  ASSERT_TRUE(etcd_->RevokeLease(*lease).ok());
  EXPECT_EQ(v->apps.count("c"), 0u);
  auto v2 = store_->LoadView();
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(v2->apps.size(), 3u);
  EXPECT_TRUE(v2->nodes.empty());
  EXPECT_GT(v2->revision, v->revision);
}

TEST_F(ClusterStoreTest, ApplyPlacementsWritesPlacementAndAssignmentsAtomically) {
  ClusterView view;
  auto n = store_->ApplyPlacements({Create(Place("web", "n1", {"n2"}))}, guard_, &view);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 1u);
  auto stored = StoredPlacement("web");
  ASSERT_TRUE(stored.has_value());
  EXPECT_EQ(stored->primary, "n1");
  EXPECT_EQ(stored->replicas, std::vector<std::string>{"n2"});
  EXPECT_EQ(AssignedApps("n1"), std::vector<std::string>{"web"});
  EXPECT_EQ(AssignedApps("n2"), std::vector<std::string>{"web"});
  auto p = etcd_->Get(store_->PlacementKey("web"));
  ASSERT_TRUE(p.ok() && p->kvs.size() == 1);
  const int64_t rev1 = p->kvs[0].mod_revision;
  EXPECT_EQ(view.placement_mod_revision["web"], rev1);
  EXPECT_EQ(view.placements["web"].primary, "n1");

  int64_t rev;
  auto as = store_->LoadAssignments("n1", &rev);
  ASSERT_TRUE(as.ok()) << as.status().ToString();
  ASSERT_EQ(as->size(), 1u);
  EXPECT_TRUE((*as)[0].primary_here);
  EXPECT_EQ((*as)[0].app.name, "web");
  EXPECT_GE(rev, rev1);
  as = store_->LoadAssignments("n2", nullptr);
  ASSERT_TRUE(as.ok());
  ASSERT_EQ(as->size(), 1u);
  EXPECT_FALSE((*as)[0].primary_here);

  // Fail over to n2 with a new replica on n3: n1's assignment goes.
  PlacementWrite up;
  up.kind = PlacementWrite::kUpdate;
  up.placement = Place("web", "n2", {"n3"}, 2);
  up.app = App("web");
  up.expected_mod_revision = rev1;
  up.previous_nodes = {"n1", "n2"};
  n = store_->ApplyPlacements({up}, guard_, &view);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_TRUE(AssignedApps("n1").empty());
  EXPECT_EQ(AssignedApps("n2"), std::vector<std::string>{"web"});
  EXPECT_EQ(AssignedApps("n3"), std::vector<std::string>{"web"});
  stored = StoredPlacement("web");
  ASSERT_TRUE(stored.has_value());
  EXPECT_EQ(stored->epoch, 2u);
  const int64_t rev2 = view.placement_mod_revision["web"];
  EXPECT_GT(rev2, rev1);

  // A stale expected revision: Conflict, nothing written.
  const auto before = Keys();
  PlacementWrite stale = up;
  stale.placement = Place("web", "n4", {}, 3);
  stale.previous_nodes = {"n2", "n3"};
  stale.expected_mod_revision = rev1;
  ClusterView untouched = view;
  n = store_->ApplyPlacements({stale}, guard_, &view);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), Code::kConflict) << n.status().ToString();
  EXPECT_EQ(Keys(), before);
  EXPECT_TRUE(AssignedApps("n4").empty());
  EXPECT_EQ(view.placement_mod_revision, untouched.placement_mod_revision);

  // A guard that no longer holds (leadership lost): Conflict, nothing written,
  // even for a write that would succeed on its own.
  Compare wrong_guard =
      Compare::CreateRevision(store_->LeaderKey(), Compare::kEqual, guard_.number + 1000);
  PlacementWrite good = stale;
  good.expected_mod_revision = rev2;
  n = store_->ApplyPlacements({Create(Place("api", "n1", {})), good}, wrong_guard, &view);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), Code::kConflict) << n.status().ToString();
  EXPECT_EQ(Keys(), before);
  EXPECT_FALSE(StoredPlacement("api").has_value());
  EXPECT_TRUE(AssignedApps("n1").empty());

  // Creating what exists is a conflict too.
  n = store_->ApplyPlacements({Create(Place("web", "n1", {}))}, guard_, &view);
  EXPECT_EQ(n.status().code(), Code::kConflict) << n.status().ToString();

  // A create without the app spec is a caller's bug, reported as such.
  PlacementWrite bare = Create(Place("x", "n1", {}));
  bare.app.reset();
  n = store_->ApplyPlacements({bare}, guard_, &view);
  EXPECT_EQ(n.status().code(), Code::kInvalidArgument) << n.status().ToString();

  // Delete: the placement and every assignment go.
  PlacementWrite del;
  del.kind = PlacementWrite::kDelete;
  del.placement.app = "web";
  del.expected_mod_revision = rev2;
  del.previous_nodes = {"n2", "n3"};
  n = store_->ApplyPlacements({del}, guard_, &view);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_FALSE(StoredPlacement("web").has_value());
  EXPECT_TRUE(AssignedApps("n2").empty());
  EXPECT_TRUE(AssignedApps("n3").empty());
  EXPECT_EQ(view.placements.count("web"), 0u);
  EXPECT_EQ(view.placement_mod_revision.count("web"), 0u);
}

TEST_F(ClusterStoreTest, ApplyPlacementsSplitsLargeBatchesIntoSeveralTransactions) {
  // 100 creates x (1 placement + 3 assignments) = 400 operations: more than
  // etcd takes in one transaction (128).
  std::vector<PlacementWrite> writes;
  for (int i = 0; i < 100; i++) {
    char name[16];
    snprintf(name, sizeof name, "app%03d", i);
    writes.push_back(Create(
        Place(name, "n" + std::to_string(i % 3 + 1),
              {"n" + std::to_string((i + 1) % 3 + 1), "n" + std::to_string((i + 2) % 3 + 1)})));
  }
  ClusterView view;
  auto n = store_->ApplyPlacements(writes, guard_, &view);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 100u);
  EXPECT_EQ(view.placements.size(), 100u);

  auto placements = etcd_->GetPrefix(store_->PlacementsPrefix());
  ASSERT_TRUE(placements.ok());
  ASSERT_EQ(placements->kvs.size(), 100u);
  std::set<int64_t> txn_revisions;
  for (const auto& kv : placements->kvs) {
    auto p = PlacementFromJson(kv.value);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(view.placement_mod_revision[p->app], kv.mod_revision) << p->app;
    txn_revisions.insert(kv.mod_revision);
  }
  EXPECT_GE(txn_revisions.size(), 4u);  // at most 120 operations per transaction
  EXPECT_LE(txn_revisions.size(), 5u);
  for (const char* node : {"n1", "n2", "n3"}) EXPECT_EQ(AssignedApps(node).size(), 100u) << node;

  auto view2 = store_->LoadView();
  ASSERT_TRUE(view2.ok());
  EXPECT_EQ(view2->placement_mod_revision, view.placement_mod_revision);

  // A conflict in a later batch: the batches before it stay applied, and the
  // caller's view matches etcd.
  std::vector<PlacementWrite> more;
  for (int i = 0; i < 60; i++) {
    char name[16];
    snprintf(name, sizeof name, "new%03d", i);
    more.push_back(Create(Place(name, "n1", {"n2", "n3"})));
  }
  more.push_back(Create(Place("app000", "n1", {})));  // exists
  n = store_->ApplyPlacements(more, guard_, &view);
  EXPECT_EQ(n.status().code(), Code::kConflict) << n.status().ToString();
  view2 = store_->LoadView();
  ASSERT_TRUE(view2.ok());
  EXPECT_EQ(view2->placement_mod_revision, view.placement_mod_revision);
  EXPECT_LT(view2->placements.size(), 161u);
}

TEST_F(ClusterStoreTest, ReportObservedWritesLeaseBoundStatusAndListObservedReadsIt) {
  auto lease = etcd_->GrantLease(30);
  ASSERT_TRUE(lease.ok());
  auto obs = [](const std::string& app, const std::string& node, const std::string& role) {
    AppObserved o;
    o.app = app;
    o.node = node;
    o.role = role;
    o.epoch = 1;
    o.state = role == "primary" ? "running" : "replica";
    o.ready = role == "primary";
    o.port = 20000;
    o.message = "ok";
    o.updated_unix = 1700000000;
    return o;
  };
  Status s = store_->ReportObserved("n1", {obs("a", "n1", "primary"), obs("b", "n1", "replica")},
                                    {}, *lease);
  ASSERT_TRUE(s.ok()) << s.ToString();
  s = store_->ReportObserved("n2", {obs("a", "n2", "replica")}, {}, *lease);
  ASSERT_TRUE(s.ok()) << s.ToString();

  auto all = store_->ListObserved();
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(all->size(), 3u);
  auto a = store_->ListObserved("a");
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(a->size(), 2u);
  std::set<std::string> nodes;
  for (const auto& o : *a) {
    nodes.insert(o.node);
    EXPECT_EQ(o.app, "a");
    if (o.node == "n1") {
      EXPECT_EQ(o.role, "primary");
      EXPECT_TRUE(o.ready);
      EXPECT_EQ(o.port, 20000);
      EXPECT_EQ(o.message, "ok");
    }
  }
  EXPECT_EQ(nodes, (std::set<std::string>{"n1", "n2"}));
  auto st = etcd_->Get(store_->StatusKey("n1", "a"));
  ASSERT_TRUE(st.ok() && st->kvs.size() == 1);
  EXPECT_EQ(st->kvs[0].lease, *lease);

  // Gone apps are removed; big reports are split.
  std::vector<AppObserved> many;
  for (int i = 0; i < 150; i++) many.push_back(obs("m" + std::to_string(i), "n3", "primary"));
  s = store_->ReportObserved("n1", {}, {"b"}, *lease);
  ASSERT_TRUE(s.ok()) << s.ToString();
  s = store_->ReportObserved("n3", many, {}, *lease);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto b = store_->ListObserved("b");
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->empty());
  all = store_->ListObserved();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 152u);

  // Status dies with the node's lease.
  ASSERT_TRUE(etcd_->RevokeLease(*lease).ok());
  all = store_->ListObserved();
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->empty());
}

}  // namespace
}  // namespace hc::cluster
