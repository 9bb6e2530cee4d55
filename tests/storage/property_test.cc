// Property: after any sequence of random file operations, snapshots and
// incremental send/receive, the replica's live tree equals the source's
// byte for byte, and each snapshot read back equals the tree it captured.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
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
    int op = rng_() % 13;
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
      case 9: {  // rename a whole directory
        std::string d = RandomDir();
        if (d.empty()) return;
        std::string to = RandomDir();
        if (to == d || to.rfind(d + "/", 0) == 0) return;
        ::rename(Path(d).c_str(), Path(to.empty() ? NewName() : to + "/" + NewName()).c_str());
        break;
      }
      case 10: {  // remove a directory tree, maybe recreate it with new content
        std::string d = RandomDir();
        if (d.empty()) return;
        (void)RemoveTree(Path(d));
        if (rng_() % 2) {
          ::mkdir(Path(d).c_str(), 0755);
          WriteFile(Path(d) + "/" + NewName(), Content());
        }
        break;
      }
      case 11: {  // hard link into another directory; later writes go through either
        std::string d = RandomDir();
        ::link(Path(f).c_str(), Path(d.empty() ? NewName() : d + "/" + NewName()).c_str());
        break;
      }
      case 12: {  // overwrite in place (no truncate), same size
        int fd = ::open(Path(f).c_str(), O_WRONLY);
        if (fd >= 0) {
          char c = static_cast<char>(rng_());
          ::pwrite(fd, &c, 1, 0);
          ::close(fd);
        }
        break;
      }
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
  int rounds = GetParam() == "zfs" ? 6 : 40;
  // HC_TEST_SEED=N reruns with another sequence (soak runs); the default
  // keeps CI deterministic.
  const char* seed_env = std::getenv("HC_TEST_SEED");
  uint32_t seed = seed_env ? static_cast<uint32_t>(std::strtoul(seed_env, nullptr, 10)) : 20261125;
  RandomTree tree(src, seed);
  // Enough directories that most rounds touch few of them: that is when a
  // long-lived store narrows its scans to what the change journal reports.
  for (int i = 0; i < 40; ++i) {
    std::string d = src + "/d" + std::to_string(i % 8) + (i >= 8 ? "/e" + std::to_string(i) : "");
    ASSERT_TRUE(MakeDirs(d).ok());
    WriteFile(d + "/seed", "seed " + std::to_string(i));
  }
  std::vector<std::pair<std::string, TreeState>> snaps;
  for (int round = 0; round < rounds; ++round) {
    tree.Mutate(round == 0 ? 30 : 1 + round % 6);
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
  // The last snapshot (taken by a long-lived store, so mostly narrowed by
  // the change journal) equals what a full scan by a fresh store sees.
  if (GetParam() == "dir") {
    auto full = testing::ReopenForFullScan(t);
    ASSERT_TRUE(full.ok()) << full.status().ToString();
    ASSERT_TRUE((*full)->Snapshot("src", "fullscan", {}).ok());
    auto d = (*full)->Diff("src", "r" + std::to_string(rounds - 1), "fullscan");
    ASSERT_TRUE(d.ok());
    EXPECT_TRUE(d->empty()) << d->size() << " differences, first " << (*d)[0].path;
    ASSERT_TRUE((*full)->DestroySnapshot("src", "fullscan").ok());
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
