// Tests specific to the zfs backend: output parsing and safe browsing (no
// pool needed), and zfs-fuse quirks against a real pool (skipped without
// one). Behaviour shared with `dir` is in conformance_test.cc.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "common/fs.h"
#include "storage/test_stores.h"
#include "storage/zfs/zfs_util.h"
#include "test_util.h"

namespace hc::storage {
namespace {

using ::hc::testing::RandomBytes;
using zfs::BrowseListDir;
using zfs::BrowseReadFile;
using zfs::BrowseStat;
using zfs::DiffTrees;
using zfs::ParseGetOutput;
using zfs::ParseU64;

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream(path) << data;
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/hc-zfs-unit-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { (void)RemoveTree(path_); }
  const std::string& path() const { return path_; }
  UniqueFd Open() const { return OpenFile(path_, O_RDONLY | O_DIRECTORY).value(); }

 private:
  std::string path_;
};

TEST(ZfsParse, GetOutputGroupsPropertiesByDataset) {
  auto t = ParseGetOutput(
      "tank/hc/shop\tguid\t123\n"
      "tank/hc/shop@s1\tcreation\t1700000000\n"
      "tank/hc/shop\treadonly\ton\n"
      "garbage line\n");
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t["tank/hc/shop"]["guid"], "123");
  EXPECT_EQ(t["tank/hc/shop"]["readonly"], "on");
  EXPECT_EQ(t["tank/hc/shop@s1"]["creation"], "1700000000");
}

TEST(ZfsParse, NumbersRejectDashesAndOverflow) {
  EXPECT_EQ(ParseU64("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(ParseU64("18446744073709551616", 7), 7u);
  EXPECT_EQ(ParseU64("-", 3), 3u);
  EXPECT_EQ(ParseU64("12K", 0), 0u);
}

TEST(ZfsParse, BusyErrorsAreRecognised) {
  EXPECT_TRUE(zfs::IsBusyError("cannot destroy 'p/x': dataset is busy\n"));
  EXPECT_FALSE(zfs::IsBusyError("cannot open 'p/x': dataset does not exist"));
}

class BrowseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path() + "/root";
    ASSERT_TRUE(MakeDirs(root_ + "/d/e").ok());
    WriteFile(root_ + "/a.txt", "hello");
    WriteFile(root_ + "/d/e/f", "x");
    WriteFile(dir_.path() + "/secret", "outside");
    ASSERT_EQ(::symlink("/etc/passwd", (root_ + "/abs").c_str()), 0);
    ASSERT_EQ(::symlink("../secret", (root_ + "/up").c_str()), 0);
    ASSERT_EQ(::symlink("d/e", (root_ + "/in").c_str()), 0);
    ASSERT_EQ(::symlink("../a.txt", (root_ + "/d/back").c_str()), 0);
    fd_ = OpenFile(root_, O_RDONLY | O_DIRECTORY).value();
  }
  TempDir dir_;
  std::string root_;
  UniqueFd fd_;
  const std::string label_ = "volume 'v' snapshot 's'";
};

TEST_F(BrowseTest, ListsRootSortedWithSymlinkTargets) {
  auto r = BrowseListDir(fd_.get(), "/", label_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::vector<std::string> names;
  for (const auto& e : *r) names.push_back(e.name);
  EXPECT_EQ(names, (std::vector<std::string>{"a.txt", "abs", "d", "in", "up"}));
  EXPECT_EQ((*r)[1].type, FileType::kSymlink);
  EXPECT_EQ((*r)[1].link_target, "/etc/passwd");
  EXPECT_EQ((*r)[2].size, 0u);  // directories report no size
}

TEST_F(BrowseTest, FollowsSymlinksThatStayInside) {
  auto r = BrowseListDir(fd_.get(), "in", label_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 1u);
  StringSink out;
  ASSERT_TRUE(BrowseReadFile(fd_.get(), "d/back", label_, out).ok());
  EXPECT_EQ(out.out, "hello");
}

TEST_F(BrowseTest, RefusesEscapes) {
  StringSink out;
  EXPECT_EQ(BrowseReadFile(fd_.get(), "abs", label_, out).code(), Code::kPermissionDenied);
  EXPECT_EQ(BrowseReadFile(fd_.get(), "up", label_, out).code(), Code::kPermissionDenied);
  EXPECT_EQ(BrowseReadFile(fd_.get(), "d/../a.txt", label_, out).code(), Code::kPermissionDenied);
  EXPECT_EQ(BrowseListDir(fd_.get(), "..", label_).status().code(), Code::kPermissionDenied);
  EXPECT_EQ(BrowseStat(fd_.get(), "up", label_).status().code(), Code::kPermissionDenied);
  EXPECT_TRUE(out.out.empty());
}

TEST_F(BrowseTest, ReportsMissingAndWrongKinds) {
  StringSink out;
  EXPECT_EQ(BrowseStat(fd_.get(), "nope", label_).status().code(), Code::kNotFound);
  EXPECT_EQ(BrowseReadFile(fd_.get(), "d", label_, out).code(), Code::kInvalidArgument);
  auto st = BrowseStat(fd_.get(), "in", label_);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->type, FileType::kSymlink);
  EXPECT_EQ(st->link_target, "d/e");
}

TEST(ZfsDiffTrees, ListsAddedAndDeletedDirectoriesWithTheirContents) {
  TempDir a, b;
  ASSERT_TRUE(MakeDirs(a.path() + "/gone/sub").ok());
  WriteFile(a.path() + "/gone/sub/f", "1");
  WriteFile(a.path() + "/same", "s");
  WriteFile(a.path() + "/changed", "aaaa");
  ASSERT_TRUE(MakeDirs(b.path() + "/new").ok());
  WriteFile(b.path() + "/new/g", "2");
  WriteFile(b.path() + "/changed", "bbbb");
  // Same size and mtime, different content: still modified.
  struct timespec ts[2] = {{1000, 0}, {1000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (a.path() + "/changed").c_str(), ts, 0), 0);
  ASSERT_EQ(::utimensat(AT_FDCWD, (b.path() + "/changed").c_str(), ts, 0), 0);
  ::link((a.path() + "/same").c_str(), (b.path() + "/same").c_str());
  auto fa = a.Open(), fb = b.Open();
  auto d = DiffTrees(fa.get(), fb.get());
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  std::vector<std::string> got;
  for (const auto& e : *d) got.push_back(std::string(DiffKindName(e.kind)) + e.path);
  EXPECT_EQ(got, (std::vector<std::string>{"Mchanged", "-gone", "-gone/sub", "-gone/sub/f", "+new",
                                           "+new/g"}));
}

// Against a real pool (zfs-fuse or OpenZFS); skipped where there is none.
class ZfsPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    t_ = testing::MakeZfsTestStore();
    if (!t_.skip_reason.empty()) GTEST_SKIP() << t_.skip_reason;
  }
  testing::TestStore t_;
};

TEST_F(ZfsPoolTest, ReadOnlyStateIsReportedOnZfsFuse) {
  Store& s = *t_.store;
  ASSERT_TRUE(s.CreateVolume("v").ok());
  ASSERT_TRUE(s.SetReadOnly("v", true).ok());
  EXPECT_TRUE(s.GetVolume("v")->read_only);
  EXPECT_EQ(s.Snapshot("v", "s1", {}).status().code(), Code::kPermissionDenied);
  ASSERT_TRUE(s.SetReadOnly("v", false).ok());
  EXPECT_FALSE(s.GetVolume("v")->read_only);
}

TEST_F(ZfsPoolTest, ReceivesIntoReadOnlyReplica) {
  Store& s = *t_.store;
  ASSERT_TRUE(s.CreateVolume("src").ok());
  WriteFile(s.LivePath("src").value() + "/f", "1");
  ASSERT_TRUE(s.Snapshot("src", "s1", {}).ok());
  WriteFile(s.LivePath("src").value() + "/f", "2");
  ASSERT_TRUE(s.Snapshot("src", "s2", {}).ok());
  StringSink full, inc;
  ASSERT_TRUE(s.Send("src", std::nullopt, "s1", full).ok());
  ASSERT_TRUE(s.Send("src", std::string("s1"), "s2", inc).ok());
  StringSource in1(full.out), in2(inc.out);
  ASSERT_TRUE(s.Receive("rep", in1, {}).ok());
  ASSERT_TRUE(s.GetVolume("rep")->read_only);
  auto r = s.Receive("rep", in2, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->snapshot.id, s.ListSnapshots("src")->back().id);
  EXPECT_EQ(ReadFileToString(s.LivePath("rep").value() + "/f").value(), "2");
}

TEST_F(ZfsPoolTest, BrowsingLeavesNoTemporaryDatasets) {
  Store& s = *t_.store;
  ASSERT_TRUE(s.CreateVolume("v").ok());
  WriteFile(s.LivePath("v").value() + "/f", "1");
  ASSERT_TRUE(s.Snapshot("v", "s1", {}).ok());
  ASSERT_TRUE(s.ListDir("v", "s1", "").ok());
  // A leftover browse clone would make the snapshot undeletable.
  EXPECT_TRUE(s.DestroySnapshot("v", "s1").ok());
  EXPECT_EQ(s.ListVolumes()->size(), 1u);
}

// Scrub and repair against real damage: two stores on pools of their own
// (two nodes), bytes of a file's block flipped in one pool's vdev.
class ZfsRepairTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = testing::MakeZfsTestStoreOnOwnPool();
    if (!a_.skip_reason.empty()) GTEST_SKIP() << a_.skip_reason;
    b_ = testing::MakeZfsTestStoreOnOwnPool();
    if (!b_.skip_reason.empty()) GTEST_SKIP() << b_.skip_reason;
  }

  // `from` sends every snapshot of "v" that `to` lacks, as replication does.
  static void Replicate(Store& from, Store& to) {
    auto snaps = from.ListSnapshots("v").value();
    auto have = to.ListSnapshots("v");
    std::optional<std::string> base;
    size_t i = 0;
    if (have.ok() && !have->empty()) {
      while (i < snaps.size() && snaps[i].id != have->back().id) ++i;
      ASSERT_LT(i, snaps.size());
      base = snaps[i++].name;
    }
    for (; i < snaps.size(); ++i) {
      StringSink out;
      ASSERT_TRUE(from.Send("v", base, snaps[i].name, out).ok());
      StringSource in(out.out);
      auto r = to.Receive("v", in, {});
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      base = snaps[i].name;
    }
  }

  static std::string Live(Store& s, const std::string& file) {
    auto text = ReadFileToString(s.LivePath("v").value() + "/" + file);
    return text.ok() ? *text : "<unreadable>";
  }

  static std::vector<std::string> Ids(Store& s, const std::string& volume = "v") {
    std::vector<std::string> out;
    auto snaps = s.ListSnapshots(volume).value();
    for (const auto& x : snaps) out.push_back(x.id);
    return out;
  }

  // Runs what a repair fetch does: `healthy` exports, `damaged` applies.
  static Result<RepairResult> Repair(Store& damaged, Store& healthy, const ScrubReport& scrub) {
    StringSink stream;
    Status exported = healthy.ExportRepair("v", scrub.RepairRequestIds(), stream);
    StringSource in(stream.out);
    auto applied = damaged.ApplyRepair("v", in);
    if (!exported.ok() && applied.ok()) return Internal("export failed but apply succeeded");
    return applied;
  }

  testing::TestStore a_, b_;
};

TEST_F(ZfsRepairTest, DamagedReplicaIsReReceivedFromTheNewestCommonSnapshot) {
  Store& primary = *b_.store;
  Store& replica = *a_.store;
  const std::string old_data = RandomBytes(128 << 10, 1), data = RandomBytes(128 << 10, 2);
  ASSERT_TRUE(primary.CreateVolume("v").ok());
  WriteFile(primary.LivePath("v").value() + "/old", old_data);
  ASSERT_TRUE(primary.Snapshot("v", "s1", {}).ok());
  WriteFile(primary.LivePath("v").value() + "/data", data);
  ASSERT_TRUE(primary.Snapshot("v", "s2", {}).ok());
  WriteFile(primary.LivePath("v").value() + "/small", "3");
  ASSERT_TRUE(primary.Snapshot("v", "s3", {}).ok());
  Replicate(primary, replica);
  ASSERT_TRUE(replica.Scrub("v", {}).value().ok());

  // A block born in s2 goes bad on the replica's disk.
  ASSERT_EQ(testing::DamageInZfsPool(a_, data).value(), 1);
  EXPECT_EQ(Live(replica, "data"), "<unreadable>");
  auto scrub = replica.Scrub("v", {});
  ASSERT_TRUE(scrub.ok()) << scrub.status().ToString();
  ASSERT_EQ(scrub->problems.size(), 1u);
  EXPECT_EQ(scrub->problems[0].object_id, Ids(primary)[1]);
  EXPECT_NE(scrub->problems[0].text.find("'s2'"), std::string::npos) << scrub->problems[0].text;
  EXPECT_EQ(scrub->repair_hints, std::vector<std::string>{"base:" + Ids(primary)[0]});

  auto r = Repair(replica, primary, *scrub);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->repaired, 2u);  // s2 and s3, from s1
  EXPECT_EQ(r->kept_branch, "");
  EXPECT_EQ(Live(replica, "data"), data);
  EXPECT_EQ(Live(replica, "old"), old_data);
  EXPECT_EQ(Ids(replica), Ids(primary));
  EXPECT_TRUE(replica.GetVolume("v")->read_only);
  EXPECT_TRUE(replica.Scrub("v", {}).value().ok());
  EXPECT_EQ(replica.ListVolumes()->size(), 1u);  // no temporary datasets left
  // Replication goes on from the repaired copy.
  WriteFile(primary.LivePath("v").value() + "/small", "4");
  ASSERT_TRUE(primary.Snapshot("v", "s4", {}).ok());
  Replicate(primary, replica);
  EXPECT_EQ(Live(replica, "small"), "4");
}

TEST_F(ZfsRepairTest, DamagedPrimaryIsRebuiltAndKeepsWhatOnlyItHad) {
  Store& primary = *a_.store;
  Store& replica = *b_.store;
  const std::string data = RandomBytes(128 << 10, 3);
  ASSERT_TRUE(primary.CreateVolume("v").ok());
  WriteFile(primary.LivePath("v").value() + "/data", data);
  ASSERT_TRUE(primary.Snapshot("v", "s1", {}).ok());
  WriteFile(primary.LivePath("v").value() + "/small", "2");
  ASSERT_TRUE(primary.Snapshot("v", "s2", {}).ok());
  Replicate(primary, replica);
  // Written after the last replicated snapshot: only the primary has it.
  WriteFile(primary.LivePath("v").value() + "/unreplicated", "only here");

  ASSERT_EQ(testing::DamageInZfsPool(a_, data).value(), 1);
  auto scrub = primary.Scrub("v", {});
  ASSERT_TRUE(scrub.ok()) << scrub.status().ToString();
  ASSERT_EQ(scrub->problems.size(), 1u);
  EXPECT_EQ(scrub->problems[0].object_id, Ids(replica)[0]);
  EXPECT_TRUE(scrub->repair_hints.empty());  // damaged from the first snapshot on

  auto r = Repair(primary, replica, *scrub);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->repaired, 2u);
  EXPECT_EQ(Live(primary, "data"), data);
  EXPECT_EQ(Ids(primary), Ids(replica));
  EXPECT_FALSE(primary.GetVolume("v")->read_only);
  EXPECT_TRUE(primary.Scrub("v", {}).value().ok());
  // The write no other node had is kept, browsable, in the branch.
  ASSERT_TRUE(r->kept_branch.starts_with("v-damaged-")) << r->kept_branch;
  EXPECT_EQ(ReadFileToString(primary.LivePath(r->kept_branch).value() + "/unreplicated").value(),
            "only here");
  EXPECT_EQ(Live(primary, "unreplicated"), "<unreadable>");  // not in the repaired copy
  // The primary takes snapshots again.
  WriteFile(primary.LivePath("v").value() + "/small", "3");
  EXPECT_TRUE(primary.Snapshot("v", "s3", {}).ok());
}

TEST_F(ZfsRepairTest, ACopyDamagedOnBothNodesIsNeverUsed) {
  Store& primary = *a_.store;
  Store& replica = *b_.store;
  const std::string data = RandomBytes(128 << 10, 4);
  ASSERT_TRUE(primary.CreateVolume("v").ok());
  WriteFile(primary.LivePath("v").value() + "/f", "1");
  ASSERT_TRUE(primary.Snapshot("v", "s1", {}).ok());
  WriteFile(primary.LivePath("v").value() + "/data", data);
  ASSERT_TRUE(primary.Snapshot("v", "s2", {}).ok());
  Replicate(primary, replica);
  ASSERT_EQ(testing::DamageInZfsPool(a_, data).value(), 1);
  ASSERT_EQ(testing::DamageInZfsPool(b_, data).value(), 1);
  auto scrub = primary.Scrub("v", {});
  ASSERT_TRUE(scrub.ok()) << scrub.status().ToString();
  ASSERT_EQ(scrub->problems.size(), 1u);
  const auto before = Ids(primary);

  // The replica's send fails on its own damaged block: the stream is cut,
  // and the primary keeps exactly what it had.
  StringSink stream;
  EXPECT_FALSE(replica.ExportRepair("v", scrub->RepairRequestIds(), stream).ok());
  StringSource in(stream.out);
  auto r = primary.ApplyRepair("v", in);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("abandoned"), std::string::npos) << r.status().ToString();
  EXPECT_EQ(Ids(primary), before);
  EXPECT_EQ(Live(primary, "f"), "1");
  EXPECT_EQ(primary.ListVolumes()->size(), 1u);
  EXPECT_FALSE(primary.Scrub("v", {}).value().ok());
}

TEST_F(ZfsRepairTest, APeerWithoutTheDamagedSnapshotSaysSo) {
  Store& primary = *a_.store;
  Store& replica = *b_.store;
  const std::string data = RandomBytes(128 << 10, 5);
  ASSERT_TRUE(primary.CreateVolume("v").ok());
  WriteFile(primary.LivePath("v").value() + "/f", "1");
  ASSERT_TRUE(primary.Snapshot("v", "s1", {}).ok());
  Replicate(primary, replica);
  // s2 was never replicated: no other node can give it back.
  WriteFile(primary.LivePath("v").value() + "/data", data);
  ASSERT_TRUE(primary.Snapshot("v", "s2", {}).ok());
  ASSERT_EQ(testing::DamageInZfsPool(a_, data).value(), 1);
  auto scrub = primary.Scrub("v", {});
  ASSERT_TRUE(scrub.ok());
  ASSERT_EQ(scrub->problems.size(), 1u);
  auto r = Repair(primary, replica, *scrub);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->repaired, 0u);
  ASSERT_EQ(r->peer_missing, std::vector<std::string>{scrub->problems[0].object_id});
  EXPECT_NE(r->peer_missing_reasons[0].find("no snapshot with identity"), std::string::npos);
  EXPECT_EQ(Ids(primary).size(), 2u);
}

}  // namespace
}  // namespace hc::storage
