// The same behaviour, checked against every storage backend.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>

#include "common/fs.h"
#include "storage/store.h"
#include "storage/test_stores.h"
#include "storage/tree_util.h"

namespace hc::storage {
namespace {

using testing::CaptureTree;
using testing::DescribeDifference;
using testing::ReadWholeFile;
using testing::TestStore;
using testing::WriteFile;

#define ASSERT_OK(expr)                                               \
  do {                                                                \
    auto&& s_ = (expr);                                               \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << StatusOf(s_).ToString(); \
  } while (0)

const Status& StatusOf(const Status& s) {
  return s;
}
template <typename T>
const Status& StatusOf(const Result<T>& r) {
  return r.status();
}

class StoreConformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    t_ = testing::MakeTestStore(GetParam());
    if (!t_.skip_reason.empty()) GTEST_SKIP() << "skipped: " << t_.skip_reason;
    store_ = t_.store.get();
  }

  std::string Live(const std::string& v) {
    auto p = store_->LivePath(v);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return p.ok() ? *p : "";
  }

  // A volume with a few files and snapshot s1.
  void MakeSite(const std::string& v) {
    ASSERT_OK(store_->CreateVolume(v));
    std::string live = Live(v);
    ASSERT_OK(MakeDirs(live + "/public/img"));
    WriteFile(live + "/public/index.html", "<h1>hello</h1>\n");
    WriteFile(live + "/public/about.html", "about us\n");
    WriteFile(live + "/public/img/logo.bin", std::string(300000, 'x') + "end");
    WriteFile(live + "/data.db", std::string(5000, '\0'));
    ASSERT_EQ(::symlink("public/index.html", (live + "/home").c_str()), 0);
    ASSERT_OK(store_->Snapshot(v, "s1", {}));
  }

  std::string SendToString(const std::string& v, std::optional<std::string> from,
                           const std::string& to) {
    StringSink out;
    Status s = store_->Send(v, from, to, out);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out.out;
  }

  Result<ReceiveResult> ReceiveString(const std::string& v, const std::string& stream,
                                      bool read_only = true) {
    StringSource in(stream);
    return store_->Receive(v, in, {.read_only = read_only});
  }

  std::vector<std::string> SnapNames(const std::string& v) {
    std::vector<std::string> out;
    auto l = store_->ListSnapshots(v);
    if (l.ok()) {
      for (const auto& s : *l) out.push_back(s.name);
    }
    return out;
  }

  std::vector<std::string> SnapIds(const std::string& v) {
    std::vector<std::string> out;
    auto l = store_->ListSnapshots(v);
    if (l.ok()) {
      for (const auto& s : *l) out.push_back(s.id);
    }
    return out;
  }

  TestStore t_;
  Store* store_ = nullptr;
};

TEST_P(StoreConformance, CreateListAndDestroyVolumes) {
  ASSERT_OK(store_->CreateVolume("shop"));
  EXPECT_EQ(store_->CreateVolume("shop").code(), Code::kAlreadyExists);
  EXPECT_EQ(store_->CreateVolume("Bad/Name").code(), Code::kInvalidArgument);
  EXPECT_EQ(store_->CreateVolume("").code(), Code::kInvalidArgument);
  auto vols = store_->ListVolumes();
  ASSERT_OK(vols);
  ASSERT_EQ(vols->size(), 1u);
  EXPECT_EQ((*vols)[0].name, "shop");
  EXPECT_FALSE((*vols)[0].read_only);
  std::string live = Live("shop");
  WriteFile(live + "/f", "x");
  EXPECT_EQ(ReadWholeFile(live + "/f"), "x");
  ASSERT_OK(store_->DestroyVolume("shop"));
  EXPECT_EQ(store_->DestroyVolume("shop").code(), Code::kNotFound);
  EXPECT_EQ(store_->GetVolume("shop").status().code(), Code::kNotFound);
  vols = store_->ListVolumes();
  ASSERT_OK(vols);
  EXPECT_TRUE(vols->empty());
}

TEST_P(StoreConformance, SnapshotsHaveStableDistinctIdentities) {
  MakeSite("shop");
  WriteFile(Live("shop") + "/public/index.html", "<h1>changed</h1>\n");
  auto s2 = store_->Snapshot("shop", "s2", {});
  ASSERT_OK(s2);
  EXPECT_EQ(store_->Snapshot("shop", "s2", {}).status().code(), Code::kAlreadyExists);
  EXPECT_EQ(store_->Snapshot("shop", "bad name", {}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(store_->Snapshot("nope", "s1", {}).status().code(), Code::kNotFound);
  auto list = store_->ListSnapshots("shop");
  ASSERT_OK(list);
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "s1");
  EXPECT_EQ((*list)[1].name, "s2");
  EXPECT_FALSE((*list)[0].id.empty());
  EXPECT_NE((*list)[0].id, (*list)[1].id);
  EXPECT_EQ((*list)[1].id, s2->id);
  EXPECT_GT((*list)[0].created_unix_ns, 1'600'000'000LL * 1'000'000'000LL);
  EXPECT_LE((*list)[0].created_unix_ns, (*list)[1].created_unix_ns);
  // Identity is stable across listings.
  EXPECT_EQ(SnapIds("shop"), SnapIds("shop"));
}

TEST_P(StoreConformance, SnapshotCallsFreezeAndThawAroundIt) {
  ASSERT_OK(store_->CreateVolume("app"));
  std::vector<std::string> calls;
  SnapshotOptions o;
  o.freeze = [&] {
    calls.push_back("freeze");
    return Status::Ok();
  };
  o.thaw = [&] {
    calls.push_back("thaw");
    return Status::Ok();
  };
  ASSERT_OK(store_->Snapshot("app", "s1", o));
  EXPECT_EQ(calls, (std::vector<std::string>{"freeze", "thaw"}));
  // A failing freeze aborts the snapshot.
  o.freeze = [] { return Unavailable("cgroup gone"); };
  EXPECT_FALSE(store_->Snapshot("app", "s2", o).ok());
  EXPECT_EQ(SnapNames("app"), std::vector<std::string>{"s1"});
}

// The dir backend reads changes once before the freeze (the app still
// running) and confirms them frozen: whatever is written up to the freeze,
// also a same-size rewrite in the same second, is in the snapshot.
TEST_P(StoreConformance, WritesUpToTheFreezeAreInTheSnapshot) {
  ASSERT_OK(store_->CreateVolume("app"));
  WriteFile(Live("app") + "/big", std::string(3 << 20, 'x'));
  ASSERT_OK(MakeDirs(Live("app") + "/sub", 0755));
  WriteFile(Live("app") + "/sub/small", "one");
  ASSERT_OK(store_->Snapshot("app", "s1", {}));
  for (bool skip : {false, true}) {
    const std::string name = skip ? "s3" : "s2";
    const char fill = skip ? 'z' : 'y';
    WriteFile(Live("app") + "/big", std::string(3 << 20, 'w'));  // read before the freeze
    SnapshotOptions o;
    o.skip_if_unchanged = skip;
    o.freeze = [&] {
      // The last writes before the app stops: same sizes, same second.
      WriteFile(Live("app") + "/big", std::string(3 << 20, fill));
      WriteFile(Live("app") + "/sub/small", name == "s2" ? "two" : "six");
      return Status::Ok();
    };
    o.thaw = [] { return Status::Ok(); };
    auto snap = store_->Snapshot("app", name, o);
    ASSERT_OK(snap);
    EXPECT_EQ(snap->name, name);
    StringSink big, small;
    ASSERT_OK(store_->ReadFile("app", name, "big", big));
    EXPECT_EQ(big.out, std::string(3 << 20, fill)) << name;
    ASSERT_OK(store_->ReadFile("app", name, "sub/small", small));
    EXPECT_EQ(small.out, name == "s2" ? "two" : "six");
  }
}

TEST_P(StoreConformance, SkipIfUnchangedTakesASnapshotOnlyAfterWrites) {
  SnapshotOptions o;
  o.skip_if_unchanged = true;
  ASSERT_OK(store_->CreateVolume("app"));
  auto first = store_->Snapshot("app", "c1", o);  // no snapshot yet: always taken
  ASSERT_OK(first);
  auto same = store_->Snapshot("app", "c2", o);
  ASSERT_OK(same);
  EXPECT_EQ(same->id, first->id);
  EXPECT_EQ(same->name, "c1");
  EXPECT_EQ(SnapNames("app"), std::vector<std::string>{"c1"});
  WriteFile(Live("app") + "/f", "written");
  auto changed = store_->Snapshot("app", "c3", o);
  ASSERT_OK(changed);
  EXPECT_NE(changed->id, first->id);
  EXPECT_EQ(SnapNames("app"), (std::vector<std::string>{"c1", "c3"}));
  auto again = store_->Snapshot("app", "c4", o);
  ASSERT_OK(again);
  EXPECT_EQ(again->id, changed->id);
  // quick_only answers only when the backend can tell at once.
  SnapshotOptions q = o;
  q.quick_only = true;
  auto quick = store_->Snapshot("app", "q1", q);
  if (GetParam() == "dir") {
    ASSERT_OK(quick);
    EXPECT_EQ(quick->id, changed->id);
  } else {
    EXPECT_EQ(quick.status().code(), Code::kUnavailable);
  }
  WriteFile(Live("app") + "/f", "written again");
  EXPECT_EQ(store_->Snapshot("app", "q2", q).status().code(), Code::kUnavailable);
  // A write after a skipped check is still caught by the next one.
  WriteFile(Live("app") + "/g", "more");
  auto later = store_->Snapshot("app", "c5", o);
  ASSERT_OK(later);
  EXPECT_EQ(SnapNames("app"), (std::vector<std::string>{"c1", "c3", "c5"}));
}

TEST_P(StoreConformance, DiffListsAddedModifiedAndDeletedPaths) {
  MakeSite("shop");
  std::string live = Live("shop");
  WriteFile(live + "/public/index.html", "<h1>new</h1>\n");
  ASSERT_EQ(::unlink((live + "/public/about.html").c_str()), 0);
  ASSERT_OK(MakeDirs(live + "/public/new"));
  WriteFile(live + "/public/new/a.txt", "a");
  ASSERT_OK(store_->Snapshot("shop", "s2", {}));
  auto d = store_->Diff("shop", "s1", "s2");
  ASSERT_OK(d);
  std::set<std::string> got;
  for (const auto& e : *d) {
    if (e.type == FileType::kDirectory && e.kind == DiffEntry::Kind::kModified) continue;
    got.insert(std::string(DiffKindName(e.kind)) + " " + e.path);
  }
  std::set<std::string> want = {"M public/index.html", "- public/about.html", "+ public/new",
                                "+ public/new/a.txt"};
  EXPECT_EQ(got, want);
  auto none = store_->Diff("shop", "s2", "s2");
  ASSERT_OK(none);
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(store_->Diff("shop", "s1", "zz").status().code(), Code::kNotFound);
}

TEST_P(StoreConformance, FullAndIncrementalStreamsRecreateSnapshotsExactly) {
  MakeSite("shop");
  std::string full = SendToString("shop", std::nullopt, "s1");
  auto r = ReceiveString("replica", full);
  ASSERT_OK(r);
  EXPECT_FALSE(r->already_present);
  EXPECT_EQ(r->snapshot.name, "s1");
  EXPECT_EQ(SnapIds("replica"), SnapIds("shop"));
  auto info = store_->GetVolume("replica");
  ASSERT_OK(info);
  EXPECT_TRUE(info->read_only);
  EXPECT_EQ(CaptureTree(Live("replica")), CaptureTree(Live("shop")))
      << DescribeDifference(CaptureTree(Live("replica")), CaptureTree(Live("shop")));

  std::string live = Live("shop");
  WriteFile(live + "/public/index.html", "<h1>v2</h1>\n");
  ASSERT_EQ(::unlink((live + "/public/about.html").c_str()), 0);
  WriteFile(live + "/public/img/logo.bin", std::string(300000, 'y'));
  ASSERT_OK(store_->Snapshot("shop", "s2", {}));
  std::string inc = SendToString("shop", std::string("s1"), "s2");
  EXPECT_LT(inc.size(), full.size() + 300000);
  auto r2 = ReceiveString("replica", inc);
  ASSERT_OK(r2);
  EXPECT_EQ(SnapIds("replica"), SnapIds("shop"));
  EXPECT_EQ(CaptureTree(Live("replica")), CaptureTree(Live("shop")))
      << DescribeDifference(CaptureTree(Live("replica")), CaptureTree(Live("shop")));

  // Receiving the same stream again changes nothing.
  auto again = ReceiveString("replica", inc);
  ASSERT_OK(again);
  EXPECT_TRUE(again->already_present);
  EXPECT_EQ(SnapIds("replica"), SnapIds("shop"));
}

TEST_P(StoreConformance, SendRejectsBadArguments) {
  MakeSite("shop");
  StringSink out;
  EXPECT_EQ(store_->Send("shop", std::nullopt, "nope", out).code(), Code::kNotFound);
  EXPECT_EQ(store_->Send("nope", std::nullopt, "s1", out).code(), Code::kNotFound);
  EXPECT_FALSE(store_->Send("shop", std::string("s1"), "s1", out).ok());
}

TEST_P(StoreConformance, ReceiverRejectsStreamWithUnknownBase) {
  MakeSite("shop");
  ASSERT_OK(ReceiveString("replica", SendToString("shop", std::nullopt, "s1")));
  WriteFile(Live("shop") + "/a", "1");
  ASSERT_OK(store_->Snapshot("shop", "s2", {}));
  WriteFile(Live("shop") + "/b", "2");
  ASSERT_OK(store_->Snapshot("shop", "s3", {}));
  auto before = CaptureTree(Live("replica"));
  auto r = ReceiveString("replica", SendToString("shop", std::string("s2"), "s3"));
  EXPECT_EQ(r.status().code(), Code::kConflict) << r.status().ToString();
  EXPECT_EQ(SnapNames("replica"), std::vector<std::string>{"s1"});
  EXPECT_EQ(CaptureTree(Live("replica")), before);
  // An incremental stream cannot create a volume.
  auto r2 = ReceiveString("other", SendToString("shop", std::string("s1"), "s2"));
  EXPECT_EQ(r2.status().code(), Code::kConflict);
  EXPECT_EQ(store_->GetVolume("other").status().code(), Code::kNotFound);
}

TEST_P(StoreConformance, ReceiverMatchesBaseByIdentityNotName) {
  MakeSite("shop");
  // A different volume with a snapshot that happens to be called s1 too.
  ASSERT_OK(store_->CreateVolume("impostor"));
  WriteFile(Live("impostor") + "/x", "not the same data");
  ASSERT_OK(store_->Snapshot("impostor", "s1", {}));
  WriteFile(Live("shop") + "/a", "1");
  ASSERT_OK(store_->Snapshot("shop", "s2", {}));
  auto r = ReceiveString("impostor", SendToString("shop", std::string("s1"), "s2"));
  EXPECT_EQ(r.status().code(), Code::kConflict) << r.status().ToString();
  EXPECT_EQ(SnapNames("impostor"), std::vector<std::string>{"s1"});
}

TEST_P(StoreConformance, ReceiverRefusesDivergedTarget) {
  MakeSite("shop");
  ASSERT_OK(ReceiveString("replica", SendToString("shop", std::nullopt, "s1"), false));
  WriteFile(Live("shop") + "/a", "1");
  ASSERT_OK(store_->Snapshot("shop", "s2", {}));
  std::string inc = SendToString("shop", std::string("s1"), "s2");

  // Unsnapshotted writes on the target.
  WriteFile(Live("replica") + "/local-write", "mine");
  auto before = CaptureTree(Live("replica"));
  auto r = ReceiveString("replica", inc);
  EXPECT_EQ(r.status().code(), Code::kConflict) << r.status().ToString();
  EXPECT_EQ(CaptureTree(Live("replica")), before);
  EXPECT_EQ(SnapNames("replica"), std::vector<std::string>{"s1"});

  // A snapshot the sender lacks.
  ASSERT_OK(store_->Snapshot("replica", "mine", {}));
  r = ReceiveString("replica", inc);
  EXPECT_EQ(r.status().code(), Code::kConflict) << r.status().ToString();
  EXPECT_EQ(SnapNames("replica"), (std::vector<std::string>{"s1", "mine"}));
  EXPECT_EQ(ReadWholeFile(Live("replica") + "/local-write"), "mine");
}

TEST_P(StoreConformance, FullStreamNeverOverwritesAnExistingVolume) {
  MakeSite("shop");
  ASSERT_OK(store_->CreateVolume("taken"));
  WriteFile(Live("taken") + "/precious", "data");
  auto r = ReceiveString("taken", SendToString("shop", std::nullopt, "s1"));
  EXPECT_EQ(r.status().code(), Code::kConflict);
  EXPECT_EQ(ReadWholeFile(Live("taken") + "/precious"), "data");
}

TEST_P(StoreConformance, DamagedOrTruncatedStreamsAreRejectedAndChangeNothing) {
  MakeSite("shop");
  std::string full = SendToString("shop", std::nullopt, "s1");
  ASSERT_OK(ReceiveString("replica", full));
  WriteFile(Live("shop") + "/public/index.html", "<h1>v2</h1>\n");
  WriteFile(Live("shop") + "/big", std::string(200000, 'q'));
  ASSERT_OK(store_->Snapshot("shop", "s2", {}));
  std::string inc = SendToString("shop", std::string("s1"), "s2");
  auto before = CaptureTree(Live("replica"));
  auto ids_before = SnapIds("replica");

  // Positions: every byte of the first 64, then spread over the stream, and
  // the last 32 bytes. zfs is slower per attempt: fewer positions.
  bool zfs = GetParam() == "zfs";
  std::vector<size_t> flips;
  for (size_t i = 0; i < std::min<size_t>(inc.size(), zfs ? 16 : 64); ++i) flips.push_back(i);
  size_t step = std::max<size_t>(1, inc.size() / (zfs ? 6 : 40));
  for (size_t i = 64; i < inc.size(); i += step) flips.push_back(i);
  for (size_t i = inc.size() > 32 ? inc.size() - 32 : 0; i < inc.size(); i += zfs ? 8 : 1) {
    flips.push_back(i);
  }
  for (size_t pos : flips) {
    std::string bad = inc;
    bad[pos] ^= 0x5a;
    auto r = ReceiveString("replica", bad);
    ASSERT_FALSE(r.ok()) << "flip at " << pos << " was accepted";
    EXPECT_EQ(r.status().code(), Code::kCorrupt)
        << "flip at " << pos << ": " << r.status().ToString();
  }
  std::vector<size_t> cuts = {
      0, 1, 7, 8, 20, inc.size() / 3, inc.size() / 2, inc.size() - 9, inc.size() - 1};
  for (size_t cut : cuts) {
    auto r = ReceiveString("replica", inc.substr(0, cut));
    ASSERT_FALSE(r.ok()) << "cut at " << cut << " was accepted";
    EXPECT_EQ(r.status().code(), Code::kCorrupt)
        << "cut at " << cut << ": " << r.status().ToString();
  }
  EXPECT_EQ(CaptureTree(Live("replica")), before);
  EXPECT_EQ(SnapIds("replica"), ids_before);
  // A damaged full stream creates nothing.
  std::string bad_full = full;
  bad_full[bad_full.size() / 2] ^= 1;
  EXPECT_EQ(ReceiveString("fresh", bad_full).status().code(), Code::kCorrupt);
  EXPECT_EQ(store_->GetVolume("fresh").status().code(), Code::kNotFound);
  // The untouched stream still applies afterwards.
  ASSERT_OK(ReceiveString("replica", inc));
  EXPECT_EQ(CaptureTree(Live("replica")), CaptureTree(Live("shop")));
}

TEST_P(StoreConformance, RollbackKeepsNewerSnapshotsAndWritesOnABranch) {
  MakeSite("shop");
  auto at_s1 = CaptureTree(Live("shop"));
  WriteFile(Live("shop") + "/public/index.html", "<h1>v2</h1>\n");
  ASSERT_OK(store_->Snapshot("shop", "s2", {}));
  WriteFile(Live("shop") + "/unsnapshotted", "precious");
  auto before = CaptureTree(Live("shop"), false);

  auto r = store_->Rollback("shop", "s1", {false, "shop-kept"});
  ASSERT_OK(r);
  EXPECT_EQ(r->branch, "shop-kept");
  EXPECT_EQ(CaptureTree(Live("shop")), at_s1)
      << DescribeDifference(CaptureTree(Live("shop")), at_s1);
  EXPECT_EQ(SnapNames("shop"), std::vector<std::string>{"s1"});
  // Nothing lost: the branch has s2 and the unsnapshotted write.
  auto branch_snaps = SnapNames("shop-kept");
  EXPECT_NE(std::find(branch_snaps.begin(), branch_snaps.end(), "s2"), branch_snaps.end());
  EXPECT_EQ(CaptureTree(Live("shop-kept"), false), before)
      << DescribeDifference(CaptureTree(Live("shop-kept"), false), before);
  // The volume keeps working: new snapshots after the rollback.
  WriteFile(Live("shop") + "/after", "x");
  ASSERT_OK(store_->Snapshot("shop", "s3", {}));
}

TEST_P(StoreConformance, RollbackWithDiscardDestroysNewerSnapshots) {
  MakeSite("shop");
  auto at_s1 = CaptureTree(Live("shop"));
  WriteFile(Live("shop") + "/x", "1");
  ASSERT_OK(store_->Snapshot("shop", "s2", {}));
  WriteFile(Live("shop") + "/y", "2");
  auto r = store_->Rollback("shop", "s1", {true, ""});
  ASSERT_OK(r);
  EXPECT_TRUE(r->branch.empty());
  EXPECT_EQ(r->discarded, std::vector<std::string>{"s2"});
  EXPECT_EQ(SnapNames("shop"), std::vector<std::string>{"s1"});
  EXPECT_EQ(CaptureTree(Live("shop")), at_s1);
  auto vols = store_->ListVolumes();
  ASSERT_OK(vols);
  EXPECT_EQ(vols->size(), 1u);
  EXPECT_EQ(store_->Rollback("shop", "nope", {}).status().code(), Code::kNotFound);
}

TEST_P(StoreConformance, BrowseListsStatsAndReadsSnapshotFiles) {
  MakeSite("shop");
  WriteFile(Live("shop") + "/public/index.html", "changed after s1");
  auto root = store_->ListDir("shop", "s1", "");
  ASSERT_OK(root);
  std::set<std::string> names;
  for (const auto& e : *root) names.insert(e.name);
  EXPECT_EQ(names, (std::set<std::string>{"data.db", "home", "public"}));
  auto pub = store_->ListDir("shop", "s1", "/public/");
  ASSERT_OK(pub);
  EXPECT_EQ(pub->size(), 3u);
  auto st = store_->Stat("shop", "s1", "public/img/logo.bin");
  ASSERT_OK(st);
  EXPECT_EQ(st->type, FileType::kFile);
  EXPECT_EQ(st->size, 300003u);
  auto link = store_->Stat("shop", "s1", "home");
  ASSERT_OK(link);
  EXPECT_EQ(link->type, FileType::kSymlink);
  EXPECT_EQ(link->link_target, "public/index.html");
  StringSink out;
  ASSERT_OK(store_->ReadFile("shop", "s1", "public/index.html", out));
  EXPECT_EQ(out.out, "<h1>hello</h1>\n");
  StringSink via_link;
  ASSERT_OK(store_->ReadFile("shop", "s1", "home", via_link));
  EXPECT_EQ(via_link.out, "<h1>hello</h1>\n");
  EXPECT_EQ(store_->Stat("shop", "s1", "public/none").status().code(), Code::kNotFound);
  StringSink dir_out;
  EXPECT_FALSE(store_->ReadFile("shop", "s1", "public", dir_out).ok());
}

TEST_P(StoreConformance, BrowseRefusesPathsThatEscapeTheSnapshot) {
  ASSERT_OK(store_->CreateVolume("evil"));
  std::string live = Live("evil");
  ASSERT_OK(MakeDirs(live + "/sub"));
  WriteFile(live + "/sub/ok.txt", "fine");
  ASSERT_EQ(::symlink("/etc/passwd", (live + "/abs").c_str()), 0);
  ASSERT_EQ(::symlink("../../../../etc/passwd", (live + "/sub/rel").c_str()), 0);
  ASSERT_EQ(::symlink("..", (live + "/sub/up").c_str()), 0);
  ASSERT_EQ(::symlink("/", (live + "/rootlink").c_str()), 0);
  ASSERT_EQ(::symlink("ok.txt", (live + "/sub/inside").c_str()), 0);
  ASSERT_OK(store_->Snapshot("evil", "s1", {}));
  StringSink out;
  for (const char* p : {"../etc/passwd", "sub/../../etc/passwd", "..", "abs", "sub/rel",
                        "rootlink/etc/passwd", "sub/up/sub/up/abs"}) {
    StringSink o;
    Status s = store_->ReadFile("evil", "s1", p, o);
    EXPECT_FALSE(s.ok()) << p;
    if (std::string(p) != "sub/up/sub/up/abs") {
      EXPECT_EQ(s.code(), Code::kPermissionDenied) << p << ": " << s.ToString();
    }
    EXPECT_EQ(o.out.find("root:"), std::string::npos) << p;
  }
  EXPECT_EQ(store_->ListDir("evil", "s1", "..").status().code(), Code::kPermissionDenied);
  EXPECT_EQ(store_->ListDir("evil", "s1", "rootlink").status().code(), Code::kPermissionDenied);
  // Symlinks that stay inside are followed.
  ASSERT_OK(store_->ReadFile("evil", "s1", "sub/inside", out));
  EXPECT_EQ(out.out, "fine");
  auto up = store_->ListDir("evil", "s1", "sub/up");
  ASSERT_OK(up);
}

TEST_P(StoreConformance, CloneMakesAWritableCopyOfASnapshot) {
  MakeSite("shop");
  auto at_s1 = CaptureTree(Live("shop"));
  WriteFile(Live("shop") + "/later", "x");
  ASSERT_OK(store_->Clone("shop", "s1", "shop-copy"));
  EXPECT_EQ(CaptureTree(Live("shop-copy")), at_s1);
  auto info = store_->GetVolume("shop-copy");
  ASSERT_OK(info);
  EXPECT_FALSE(info->read_only);
  EXPECT_EQ(info->origin, "shop@s1");
  WriteFile(Live("shop-copy") + "/mine", "y");
  ASSERT_OK(store_->Snapshot("shop-copy", "c1", {}));
  EXPECT_EQ(ReadWholeFile(Live("shop") + "/later"), "x");
  EXPECT_EQ(store_->Clone("shop", "s1", "shop-copy").code(), Code::kAlreadyExists);
}

TEST_P(StoreConformance, DestroySnapshotRemovesOnlyThatSnapshot) {
  MakeSite("shop");
  WriteFile(Live("shop") + "/a", "1");
  ASSERT_OK(store_->Snapshot("shop", "s2", {}));
  WriteFile(Live("shop") + "/b", "2");
  ASSERT_OK(store_->Snapshot("shop", "s3", {}));
  ASSERT_OK(store_->DestroySnapshot("shop", "s2"));
  EXPECT_EQ(SnapNames("shop"), (std::vector<std::string>{"s1", "s3"}));
  EXPECT_EQ(store_->DestroySnapshot("shop", "s2").code(), Code::kNotFound);
  StringSink out;
  ASSERT_OK(store_->ReadFile("shop", "s3", "a", out));
  EXPECT_EQ(out.out, "1");
  // Incremental sends across the gap still work.
  ASSERT_OK(ReceiveString("replica", SendToString("shop", std::nullopt, "s1")));
  ASSERT_OK(ReceiveString("replica", SendToString("shop", std::string("s1"), "s3")));
  EXPECT_EQ(CaptureTree(Live("replica")), CaptureTree(Live("shop")));
}

TEST_P(StoreConformance, ReadOnlyVolumesRefuseSnapshots) {
  MakeSite("shop");
  ASSERT_OK(store_->SetReadOnly("shop", true));
  auto info = store_->GetVolume("shop");
  ASSERT_OK(info);
  EXPECT_TRUE(info->read_only);
  EXPECT_EQ(store_->Snapshot("shop", "s2", {}).status().code(), Code::kPermissionDenied);
  ASSERT_OK(store_->SetReadOnly("shop", false));
  ASSERT_OK(store_->Snapshot("shop", "s2", {}));
}

TEST_P(StoreConformance, VerifyAndSpaceOnAHealthyVolume) {
  MakeSite("shop");
  auto r = store_->Verify("shop");
  ASSERT_OK(r);
  EXPECT_TRUE(r->ok());
  EXPECT_GT(r->objects_checked, 0u);
  auto all = store_->Verify("");
  ASSERT_OK(all);
  EXPECT_TRUE(all->ok());
  auto sp = store_->Space("shop");
  ASSERT_OK(sp);
  EXPECT_GE(sp->live_bytes, 300000u);
  EXPECT_EQ(store_->Verify("nope").status().code(), Code::kNotFound);
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreConformance, ::testing::Values("dir", "zfs"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace hc::storage
