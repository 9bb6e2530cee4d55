#include <gtest/gtest.h>

#include "storage/dir/tree.h"
#include "storage/stream_format.h"

namespace hc::storage::dir {
namespace {

Tree SampleTree() {
  Tree t;
  TreeEntry a;
  a.name = "a.txt";
  a.type = FileType::kFile;
  a.mode = 0644;
  a.size = 5;
  a.chunks = {{Digest{1}, 5}};
  TreeEntry b;
  b.name = "b";
  b.type = FileType::kDirectory;
  b.mode = 0755;
  b.subtree = Digest{2};
  TreeEntry c;
  c.name = "c";
  c.type = FileType::kSymlink;
  c.link_target = "a.txt";
  t.entries = {a, b, c};
  return t;
}

TEST(DirFormat, TreeRoundTrips) {
  Tree t = SampleTree();
  auto enc = EncodeTree(t);
  auto dec = DecodeTree(AsBytes(enc));
  ASSERT_TRUE(dec.ok()) << dec.status().ToString();
  EXPECT_EQ(dec->entries, t.entries);
}

TEST(DirFormat, TreeDecoderRejectsMalformedInput) {
  std::string enc = EncodeTree(SampleTree());
  for (size_t cut = 0; cut < enc.size(); ++cut) {
    EXPECT_FALSE(DecodeTree(AsBytes(enc.substr(0, cut))).ok()) << cut;
  }
  Tree unsorted = SampleTree();
  std::swap(unsorted.entries[0], unsorted.entries[1]);
  EXPECT_FALSE(DecodeTree(AsBytes(EncodeTree(unsorted))).ok());
  for (const char* bad : {"", ".", "..", "a/b"}) {
    Tree t = SampleTree();
    t.entries[0].name = bad;
    EXPECT_FALSE(DecodeTree(AsBytes(EncodeTree(t))).ok()) << bad;
  }
  Tree wrong_size = SampleTree();
  wrong_size.entries[0].size = 6;
  EXPECT_FALSE(DecodeTree(AsBytes(EncodeTree(wrong_size))).ok());
}

TEST(DirFormat, SnapshotRecordIdentityCoversEveryField) {
  SnapshotRecord r;
  r.name = "s1";
  r.created_unix_ns = 1;
  auto id = SnapshotId(r);
  auto dec = DecodeSnapshotRecord(AsBytes(EncodeSnapshotRecord(r)));
  ASSERT_TRUE(dec.ok());
  EXPECT_EQ(SnapshotId(*dec), id);
  r.created_unix_ns = 2;
  EXPECT_NE(SnapshotId(r), id);
}

TEST(DirFormat, StatCacheRoundTripsAndIgnoresDamage) {
  StatCache c;
  c.scan_start_ns = 42;
  c.Put("a/b", {"", 1, 2, 3, 4, {{Digest{9}, 4}}});
  c.Put("a/a", {"", 5, 6, 7, 8, {}});
  c.Put("top", {"", 5, 6, 7, 8, {}});
  std::string enc = EncodeStatCache(c);
  StatCache d = DecodeStatCache(AsBytes(enc));
  ASSERT_EQ(d.size(), 3u);
  ASSERT_NE(d.Find("a/b"), nullptr);
  EXPECT_EQ(d.Find("a/b")->chunks[0].id, Digest{9});
  EXPECT_EQ(d.dirs["a"][0].name, "a");
  d.EraseTree("a");
  EXPECT_EQ(d.size(), 1u);
  enc[10] ^= 1;
  EXPECT_TRUE(DecodeStatCache(AsBytes(enc)).dirs.empty());
}

TEST(DirFormat, SnapshotPathsRefuseDotDot) {
  EXPECT_EQ(SplitSnapshotPath("a/../b").status().code(), Code::kPermissionDenied);
  auto ok = SplitSnapshotPath("/a//./b/");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, (std::vector<std::string>{"a", "b"}));
}

}  // namespace
}  // namespace hc::storage::dir
