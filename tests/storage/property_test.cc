// Property: after any sequence of random file operations, snapshots and
// incremental send/receive, the replica's live tree equals the source's
// byte for byte, and each snapshot read back equals the tree it captured.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>

#include "common/fs.h"
#include "storage/store.h"
#include "storage/test_stores.h"
#include "storage/tree_util.h"

namespace hc::storage {
namespace {

using testing::CaptureTree;
using testing::DescribeDifference;
using testing::TreeState;
using testing::WriteFile;

class RandomTree {
 public:
  RandomTree(std::string root, uint32_t seed) : root_(std::move(root)), rng_(seed) {}

  void Mutate(int ops) {
    for (int i = 0; i < ops; ++i) Step();
  }

 private:
  std::string RandomDir() {
    std::vector<std::string> dirs{""};
    for (const auto& [p, n] : CaptureTree(root_, false)) {
      if (n.type == 'd') dirs.push_back(p);
    }
    return dirs[rng_() % dirs.size()];
  }
  std::vector<std::string> Files() {
    std::vector<std::string> files;
    for (const auto& [p, n] : CaptureTree(root_, false)) {
      if (n.type == 'f') files.push_back(p);
    }
    return files;
  }
  std::string Path(const std::string& rel) { return rel.empty() ? root_ : root_ + "/" + rel; }
  std::string NewName() { return "n" + std::to_string(rng_() % 1000); }
  std::string Content() {
    static const size_t sizes[] = {0, 1, 100, 4096, 70000, 262144, 262145, 600000};
    size_t n = sizes[rng_() % 8];
    std::string s(n, '\0');
    int style = rng_() % 3;
    for (size_t i = 0; i < n; ++i) {
      s[i] = style == 0 ? static_cast<char>(rng_()) : style == 1 ? 'a' + (i % 7) : 0;
    }
    return s;
  }

  void Step() {
    auto files = Files();
    int op = rng_() % 9;
    if (files.empty()) op = 0;
    std::string f = files.empty() ? "" : files[rng_() % files.size()];
    switch (op) {
      case 0:
      case 1: {  // create a file
        std::string d = RandomDir();
        std::string p = Path(d.empty() ? NewName() : d + "/" + NewName());
        struct stat st;
        if (::lstat(p.c_str(), &st) == 0) return;
        WriteFile(p, Content());
        break;
      }
      case 2:  // overwrite
        WriteFile(Path(f), Content());
        break;
      case 3: {  // append
        std::string old = testing::ReadWholeFile(Path(f));
        WriteFile(Path(f), old + "appended" + std::to_string(rng_()));
        break;
      }
      case 4:  // delete
        ::unlink(Path(f).c_str());
        break;
      case 5: {  // mkdir
        std::string d = RandomDir();
        ::mkdir(Path(d.empty() ? NewName() : d + "/" + NewName()).c_str(), 0755);
        break;
      }
      case 6: {  // rename a file into another directory
        std::string d = RandomDir();
        ::rename(Path(f).c_str(), Path(d.empty() ? NewName() : d + "/" + NewName()).c_str());
        break;
      }
      case 7: {  // symlink
        std::string d = RandomDir();
        ::symlink(f.c_str(), Path(d.empty() ? NewName() : d + "/" + NewName()).c_str());
        break;
      }
      case 8:  // chmod
        ::chmod(Path(f).c_str(), (rng_() % 2) ? 0600 : 0755);
        break;
    }
  }

  std::string root_;
  std::mt19937 rng_;
};

class StoreProperty : public ::testing::TestWithParam<std::string> {};

TEST_P(StoreProperty, RandomChangesReplicateByteForByte) {
  auto t = testing::MakeTestStore(GetParam());
  if (!t.skip_reason.empty()) GTEST_SKIP() << "skipped: " << t.skip_reason;
  Store& st = *t.store;
  ASSERT_TRUE(st.CreateVolume("src").ok());
  std::string src = *st.LivePath("src");
  int rounds = GetParam() == "zfs" ? 6 : 25;
  RandomTree tree(src, 20261125);
  std::vector<std::pair<std::string, TreeState>> snaps;
  for (int round = 0; round < rounds; ++round) {
    tree.Mutate(round == 0 ? 30 : 8);
    std::string name = "r" + std::to_string(round);
    auto s = st.Snapshot("src", name, {});
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    snaps.emplace_back(name, CaptureTree(src));
    StringSink stream;
    std::optional<std::string> base;
    if (round > 0) base = "r" + std::to_string(round - 1);
    ASSERT_TRUE(st.Send("src", base, name, stream).ok());
    StringSource in(stream.out);
    auto r = st.Receive("dst", in, {});
    ASSERT_TRUE(r.ok()) << "round " << round << ": " << r.status().ToString();
    auto a = CaptureTree(src);
    auto b = CaptureTree(*st.LivePath("dst"));
    ASSERT_EQ(a, b) << "round " << round << "\n" << DescribeDifference(a, b);
  }
  // Every snapshot still reads back as it was captured.
  for (const auto& [name, state] : snaps) {
    for (const auto& [path, node] : state) {
      if (node.type != 'f') continue;
      StringSink out;
      ASSERT_TRUE(st.ReadFile("dst", name, path, out).ok()) << name << ":" << path;
      ASSERT_EQ(out.out, node.content) << name << ":" << path;
    }
  }
  // And rolling the source back to the middle restores that state exactly.
  size_t mid = snaps.size() / 2;
  ASSERT_TRUE(st.Rollback("src", snaps[mid].first, {true, ""}).ok());
  auto now = CaptureTree(src);
  EXPECT_EQ(now, snaps[mid].second) << DescribeDifference(now, snaps[mid].second);
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreProperty, ::testing::Values("dir", "zfs"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace hc::storage
