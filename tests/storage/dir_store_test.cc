// Behaviour specific to the `dir` backend: chunk store, scrub, change detection.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>

#include "common/fs.h"
#include "storage/store.h"
#include "storage/stream_format.h"
#include "storage/test_stores.h"
#include "storage/tree_util.h"
#include "test_util.h"

namespace hc::storage {
namespace {

using testing::ReadWholeFile;
using testing::WriteFile;

// All chunk files of the dir store at `store_root`.
std::vector<std::string> ChunkFilesOf(const std::string& store_root) {
  std::vector<std::string> out;
  std::function<void(const std::string&)> walk = [&](const std::string& d) {
    DIR* dir = ::opendir(d.c_str());
    if (!dir) return;
    while (auto* e = ::readdir(dir)) {
      std::string n = e->d_name;
      if (n == "." || n == "..") continue;
      if (e->d_type == DT_DIR) {
        walk(d + "/" + n);
      } else {
        out.push_back(d + "/" + n);
      }
    }
    ::closedir(dir);
  };
  walk(store_root + "/chunks");
  return out;
}

class DirStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    t_ = testing::MakeTestStore("dir");
    ASSERT_TRUE(t_.skip_reason.empty()) << t_.skip_reason;
    store_ = t_.store.get();
    root_ = t_.cleanup_dir + "/store";
    ASSERT_TRUE(store_->CreateVolume("v").ok());
    live_ = *store_->LivePath("v");
  }

  std::vector<std::string> ChunkFiles() { return ChunkFilesOf(root_); }

  testing::TestStore t_;
  Store* store_;
  std::string root_, live_;
};

// The idle check's shortcut (no lock, no listing) must still see snapshots
// taken or destroyed by another process and a volume made read-only.
TEST_F(DirStoreTest, QuietChecksNoticeSnapshotsMadeElsewhere) {
  SnapshotOptions skip;
  skip.skip_if_unchanged = true;
  ASSERT_TRUE(store_->Snapshot("v", "a1", skip).ok());
  auto same = store_->Snapshot("v", "a2", skip);  // the shortcut
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->name, "a1");
  auto other = OpenStore({"dir", root_, "", false});  // another process, say `hc volume`
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE((*other)->Snapshot("v", "by-hand", {}).ok());
  auto after = store_->Snapshot("v", "a3", skip);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->name, "by-hand");  // the newest, not the remembered one
  ASSERT_TRUE((*other)->DestroySnapshot("v", "by-hand").ok());
  after = store_->Snapshot("v", "a4", skip);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->name, "a1");
  ASSERT_TRUE((*other)->SetReadOnly("v", true).ok());
  EXPECT_EQ(store_->Snapshot("v", "a5", skip).status().code(), Code::kPermissionDenied);
}

TEST_F(DirStoreTest, IdenticalContentIsStoredOnce) {
  std::string big(600000, 'z');
  WriteFile(live_ + "/a", big);
  WriteFile(live_ + "/b", big);
  ASSERT_TRUE(store_->Snapshot("v", "s1", {}).ok());
  size_t n1 = ChunkFiles().size();
  // An unchanged snapshot adds no chunk at all.
  ASSERT_TRUE(store_->Snapshot("v", "s2", {}).ok());
  EXPECT_EQ(ChunkFiles().size(), n1);
  // a and b share 3 chunks (2 full + tail) + 1 tree.
  EXPECT_EQ(n1, 3u);
}

TEST_F(DirStoreTest, ScrubFindsDamagedChunkAndNamesTheFile) {
  WriteFile(live_ + "/page.html", std::string(1000, 'p'));
  ASSERT_TRUE(store_->Snapshot("v", "s1", {}).ok());
  bool damaged = false;
  for (const auto& f : ChunkFiles()) {
    std::string data = ReadWholeFile(f);
    if (data.size() > 20 && data.find("HCT1") == std::string::npos) {
      ::chmod(f.c_str(), 0644);
      data[data.size() - 1] ^= 0x40;
      WriteFile(f, data);
      damaged = true;
    }
  }
  ASSERT_TRUE(damaged);
  auto r = store_->Verify("v");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->problems.size(), 1u);
  EXPECT_NE(r->problems[0].find("page.html"), std::string::npos) << r->problems[0];
  EXPECT_NE(r->problems[0].find("snapshot s1"), std::string::npos) << r->problems[0];
  // Reading the damaged file from the snapshot fails loudly instead of
  // returning bad bytes.
  StringSink out;
  EXPECT_EQ(store_->ReadFile("v", "s1", "page.html", out).code(), Code::kCorrupt);
  // Sending it fails at the receiver.
  StringSink stream;
  ASSERT_TRUE(store_->Send("v", std::nullopt, "s1", stream).ok());
  StringSource in(stream.out);
  EXPECT_EQ(store_->Receive("copy", in, {}).status().code(), Code::kCorrupt);
}

TEST_F(DirStoreTest, ChangeWithSameSizeAndMtimeIsStillSeen) {
  WriteFile(live_ + "/f", "aaaa");
  struct timespec old_times[2] = {{0, UTIME_OMIT}, {1'000'000'000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (live_ + "/f").c_str(), old_times, 0), 0);
  ASSERT_TRUE(store_->Snapshot("v", "s1", {}).ok());
  WriteFile(live_ + "/f", "bbbb");
  ASSERT_EQ(::utimensat(AT_FDCWD, (live_ + "/f").c_str(), old_times, 0), 0);
  ASSERT_TRUE(store_->Snapshot("v", "s2", {}).ok());
  StringSink out;
  ASSERT_TRUE(store_->ReadFile("v", "s2", "f", out).ok());
  EXPECT_EQ(out.out, "bbbb");
}

TEST_F(DirStoreTest, RapidRewritesRightAfterASnapshotAreSeen) {
  for (int i = 0; i < 20; ++i) {
    WriteFile(live_ + "/f", "v" + std::to_string(i % 10));  // same size every time
    ASSERT_TRUE(store_->Snapshot("v", "s" + std::to_string(i), {}).ok());
    StringSink out;
    ASSERT_TRUE(store_->ReadFile("v", "s" + std::to_string(i), "f", out).ok());
    ASSERT_EQ(out.out, "v" + std::to_string(i % 10)) << i;
  }
}

TEST_F(DirStoreTest, StreamChunkWithForgedIdIsRejected) {
  WriteFile(live_ + "/f", "honest content");
  ASSERT_TRUE(store_->Snapshot("v", "s1", {}).ok());
  StringSink stream;
  ASSERT_TRUE(store_->Send("v", std::nullopt, "s1", stream).ok());
  // Re-frame the stream with the chunk's content replaced but its id kept:
  // every record checksum is valid, only the content address is wrong.
  StringSource in(stream.out);
  StreamReader r(in);
  auto h = r.Begin();
  ASSERT_TRUE(h.ok());
  StringSink forged;
  StreamWriter w(forged);
  ASSERT_TRUE(w.Begin(*h).ok());
  for (;;) {
    auto rec = r.Next();
    ASSERT_TRUE(rec.ok());
    if (rec->type == kRecordEnd) break;
    std::string p(reinterpret_cast<const char*>(rec->payload.data()), rec->payload.size());
    size_t at = p.find("honest");
    if (at != std::string::npos) p.replace(at, 6, "forged");
    ASSERT_TRUE(w.Write(rec->type, AsBytes(p)).ok());
  }
  ASSERT_TRUE(w.Finish().ok());
  StringSource fin(forged.out);
  auto res = store_->Receive("copy", fin, {});
  EXPECT_EQ(res.status().code(), Code::kCorrupt) << res.status().ToString();
  EXPECT_EQ(store_->GetVolume("copy").status().code(), Code::kNotFound);
}

TEST_F(DirStoreTest, DestroyingSnapshotsFreesTheirChunks) {
  WriteFile(live_ + "/big", std::string(1 << 20, 'b'));
  ASSERT_TRUE(store_->Snapshot("v", "s1", {}).ok());
  ::unlink((live_ + "/big").c_str());
  WriteFile(live_ + "/small", "s");
  ASSERT_TRUE(store_->Snapshot("v", "s2", {}).ok());
  size_t before = ChunkFiles().size();
  ASSERT_TRUE(store_->DestroySnapshot("v", "s1").ok());
  EXPECT_LT(ChunkFiles().size(), before);
  StringSink out;
  ASSERT_TRUE(store_->ReadFile("v", "s2", "small", out).ok());
  ASSERT_TRUE(store_->DestroyVolume("v").ok());
  EXPECT_TRUE(ChunkFiles().empty());
}

TEST_F(DirStoreTest, ReopeningTheStoreKeepsEverything) {
  WriteFile(live_ + "/f", "kept");
  ASSERT_TRUE(store_->Snapshot("v", "s1", {}).ok());
  auto again = OpenStore({"dir", root_, "", false});
  ASSERT_TRUE(again.ok());
  auto snaps = (*again)->ListSnapshots("v");
  ASSERT_TRUE(snaps.ok());
  ASSERT_EQ(snaps->size(), 1u);
  EXPECT_EQ((*snaps)[0].name, "s1");
}

TEST_F(DirStoreTest, RefusesAStoreOfAnotherFormat) {
  std::string other = t_.scratch_dir + "/other";
  ASSERT_TRUE(MakeDirs(other).ok());
  WriteFile(other + "/format", "something else\n");
  EXPECT_EQ(OpenStore({"dir", other, "", false}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(OpenStore({"dir", "", "", false}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(OpenStore({"nfs", other, "", false}).status().code(), Code::kInvalidArgument);
}

// --- Scrub and repair between two copies of a volume. ---

std::string Noise(size_t n, uint64_t seed) {
  return ::hc::testing::RandomBytes(n, seed);
}

std::string StoreRoot(const testing::TestStore& t) {
  return t.cleanup_dir + "/store";
}

// The chunk files of `root` whose header says `kind` (1 data, 2 tree).
std::vector<std::string> ChunkFilesOfKind(const std::string& root, char kind) {
  std::vector<std::string> out;
  for (const auto& p : ChunkFilesOf(root)) {
    std::string data = ReadWholeFile(p);
    if (data.size() > 20 && data[4] == kind) out.push_back(p);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string IdOfChunkFile(const std::string& path) {
  return path.substr(path.rfind('/') + 1);
}

void FlipLastByte(const std::string& path) {
  std::string data = ReadWholeFile(path);
  ::chmod(path.c_str(), 0644);
  data[data.size() - 1] ^= 0x20;
  WriteFile(path, data);
}

std::string ReadSnapFile(Store& s, const std::string& path) {
  StringSink out;
  Status st = s.ReadFile("v", "s1", path, out);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return out.out;
}

// Two dir stores holding the same volume "v" (B received it from A).
struct TwoCopies {
  TwoCopies() {
    a = testing::MakeTestStore("dir");
    b = testing::MakeTestStore("dir");
    EXPECT_TRUE(a.store->CreateVolume("v").ok());
    std::string live = *a.store->LivePath("v");
    EXPECT_TRUE(MakeDirs(live + "/img", 0755).ok());
    WriteFile(live + "/big.bin", big);
    WriteFile(live + "/img/logo.png", logo);
    WriteFile(live + "/index.html", "<h1>shop</h1>");
    EXPECT_TRUE(a.store->Snapshot("v", "s1", {}).ok());
    StringSink full;
    EXPECT_TRUE(a.store->Send("v", std::nullopt, "s1", full).ok());
    StringSource in(full.out);
    auto r = b.store->Receive("v", in, {});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
  }
  std::string big = Noise(700 * 1024, 7);  // three data chunks
  std::string logo = Noise(20000, 8);
  testing::TestStore a, b;
};

// Repairs `damaged` from `healthy` the way two nodes would: scrub, export
// the damaged ids from the healthy copy, apply.
RepairResult RepairFrom(Store& damaged, Store& healthy) {
  auto scrub = damaged.Scrub("v", {});
  EXPECT_TRUE(scrub.ok()) << scrub.status().ToString();
  StringSink stream;
  Status st = healthy.ExportRepair("v", scrub->DamagedIds(), stream);
  EXPECT_TRUE(st.ok()) << st.ToString();
  StringSource in(stream.out);
  auto r = damaged.ApplyRepair("v", in);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : RepairResult{};
}

void ExpectDamageFoundAndRepaired(Store& damaged_store, const std::string& damaged_root,
                                  Store& healthy_store, const TwoCopies& c) {
  auto data = ChunkFilesOfKind(damaged_root, 1);
  ASSERT_GE(data.size(), 4u);
  std::string flipped = IdOfChunkFile(data[0]);
  std::string removed = IdOfChunkFile(data[1]);
  FlipLastByte(data[0]);
  ASSERT_EQ(::unlink(data[1].c_str()), 0);

  auto scrub = damaged_store.Scrub("v", {});
  ASSERT_TRUE(scrub.ok()) << scrub.status().ToString();
  ASSERT_EQ(scrub->problems.size(), 2u);
  std::vector<std::string> want{flipped, removed};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(scrub->DamagedIds(), want);
  for (const auto& p : scrub->problems) {
    EXPECT_EQ(p.missing, p.object_id == removed) << p.text;
    EXPECT_NE(p.text.find("snapshot s1"), std::string::npos) << p.text;
  }
  EXPECT_GT(scrub->objects_checked, 4u);

  RepairResult r = RepairFrom(damaged_store, healthy_store);
  EXPECT_EQ(r.repaired, 2u);
  EXPECT_TRUE(r.peer_missing.empty());

  auto again = damaged_store.Scrub("v", {});
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->ok()) << again->problems[0].text;
  auto verify = damaged_store.Verify("v");
  ASSERT_TRUE(verify.ok());
  EXPECT_TRUE(verify->ok());
  for (Store* s : {&damaged_store, &healthy_store}) {
    EXPECT_EQ(ReadSnapFile(*s, "big.bin"), c.big);
    EXPECT_EQ(ReadSnapFile(*s, "img/logo.png"), c.logo);
    EXPECT_EQ(ReadSnapFile(*s, "index.html"), "<h1>shop</h1>");
  }
}

TEST(DirRepair, DamagedChunksOnTheReplicaAreFoundAndRepairedFromThePrimary) {
  TwoCopies c;
  ExpectDamageFoundAndRepaired(*c.b.store, StoreRoot(c.b), *c.a.store, c);
}

TEST(DirRepair, DamagedChunksOnThePrimaryAreFoundAndRepairedFromTheReplica) {
  TwoCopies c;
  ExpectDamageFoundAndRepaired(*c.a.store, StoreRoot(c.a), *c.b.store, c);
  // The repaired chunk files are byte-identical to the other copy's.
  auto a_files = ChunkFilesOf(StoreRoot(c.a));
  ASSERT_EQ(a_files.size(), ChunkFilesOf(StoreRoot(c.b)).size());
  for (const auto& p : a_files) {
    std::string rel = p.substr(StoreRoot(c.a).size());
    EXPECT_EQ(ReadWholeFile(p), ReadWholeFile(StoreRoot(c.b) + rel)) << rel;
  }
}

TEST(DirRepair, ACopyThatIsDamagedItselfIsNeverUsedForRepair) {
  TwoCopies c;
  auto a_data = ChunkFilesOfKind(StoreRoot(c.a), 1);
  auto b_data = ChunkFilesOfKind(StoreRoot(c.b), 1);
  ASSERT_EQ(IdOfChunkFile(a_data[0]), IdOfChunkFile(b_data[0]));
  std::string id = IdOfChunkFile(a_data[0]);
  FlipLastByte(a_data[0]);
  FlipLastByte(b_data[0]);
  ::chmod(b_data[0].c_str(), 0644);
  std::string b_bytes = ReadWholeFile(b_data[0]);
  b_bytes[b_bytes.size() / 2] ^= 0x01;  // damaged differently on B
  WriteFile(b_data[0], b_bytes);
  std::string a_before = ReadWholeFile(a_data[0]);

  StringSink stream;
  ASSERT_TRUE(c.b.store->ExportRepair("v", {id}, stream).ok());
  StringSource in(stream.out);
  auto r = c.a.store->ApplyRepair("v", in);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->repaired, 0u);
  ASSERT_EQ(r->peer_missing, std::vector<std::string>{id});
  EXPECT_NE(r->peer_missing_reasons[0].find("damaged here too"), std::string::npos)
      << r->peer_missing_reasons[0];
  EXPECT_EQ(ReadWholeFile(a_data[0]), a_before);
  auto scrub = c.a.store->Scrub("v", {});
  ASSERT_TRUE(scrub.ok());
  EXPECT_EQ(scrub->DamagedIds(), std::vector<std::string>{id});
}

TEST(DirRepair, ExportNeverServesChunksOfAnotherVolume) {
  TwoCopies c;
  ASSERT_TRUE(c.b.store->CreateVolume("secret").ok());
  WriteFile(*c.b.store->LivePath("secret") + "/key", "top secret");
  auto before = ChunkFilesOf(StoreRoot(c.b));
  ASSERT_TRUE(c.b.store->Snapshot("secret", "s1", {}).ok());
  std::vector<std::string> secret_ids;
  for (const auto& p : ChunkFilesOf(StoreRoot(c.b))) {
    if (std::find(before.begin(), before.end(), p) == before.end()) {
      secret_ids.push_back(IdOfChunkFile(p));
    }
  }
  ASSERT_FALSE(secret_ids.empty());
  secret_ids.push_back("not-an-id");
  StringSink stream;
  ASSERT_TRUE(c.b.store->ExportRepair("v", secret_ids, stream).ok());
  EXPECT_EQ(stream.out.find("top secret"), std::string::npos);
  StringSource in(stream.out);
  auto r = c.a.store->ApplyRepair("v", in);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->repaired, 0u);
  EXPECT_EQ(r->peer_missing, secret_ids);
  EXPECT_NE(r->peer_missing_reasons[0].find("does not refer"), std::string::npos);
}

TEST(DirRepair, DamagedTreeIsRepairedAndWhatItHidFollowsInTheNextRound) {
  TwoCopies c;
  // Damage every tree object and one data chunk below them on A.
  auto trees = ChunkFilesOfKind(StoreRoot(c.a), 2);
  ASSERT_EQ(trees.size(), 2u);  // "/" and "img"
  for (const auto& t : trees) FlipLastByte(t);
  auto data = ChunkFilesOfKind(StoreRoot(c.a), 1);
  FlipLastByte(data[0]);
  int rounds = 0;
  uint64_t repaired = 0;
  for (; rounds < 5; ++rounds) {
    auto scrub = c.a.store->Scrub("v", {});
    ASSERT_TRUE(scrub.ok());
    if (scrub->ok()) break;
    repaired += RepairFrom(*c.a.store, *c.b.store).repaired;
  }
  EXPECT_EQ(repaired, 3u);
  EXPECT_LE(rounds, 3);
  EXPECT_EQ(ReadSnapFile(*c.a.store, "big.bin"), c.big);
  EXPECT_EQ(ReadSnapFile(*c.a.store, "img/logo.png"), c.logo);
}

TEST(DirRepair, ApplyIgnoresIntactCopiesAndRefusesSnapshotStreams) {
  TwoCopies c;
  auto data = ChunkFilesOfKind(StoreRoot(c.a), 1);
  std::string id = IdOfChunkFile(data[0]);
  StringSink stream;
  ASSERT_TRUE(c.b.store->ExportRepair("v", {id}, stream).ok());
  StringSource in(stream.out);
  auto r = c.a.store->ApplyRepair("v", in);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->repaired, 0u);
  EXPECT_EQ(r->already_intact, 1u);
  // A flipped byte in the repair stream is caught by its record check.
  std::string bad = stream.out;
  bad[bad.size() / 2] ^= 1;
  StringSource bad_in(bad);
  EXPECT_EQ(c.a.store->ApplyRepair("v", bad_in).status().code(), Code::kCorrupt);
  // A snapshot stream is not a repair stream.
  StringSink snap;
  ASSERT_TRUE(c.a.store->Send("v", std::nullopt, "s1", snap).ok());
  StringSource snap_in(snap.out);
  EXPECT_EQ(c.a.store->ApplyRepair("v", snap_in).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(c.a.store->Scrub("nope", {}).status().code(), Code::kNotFound);
}

TEST(DirRepair, ScrubKeepsToItsRateLimit) {
  TwoCopies c;
  auto start = std::chrono::steady_clock::now();
  auto r = c.a.store->Scrub("v", {.max_bytes_per_sec = 2u << 20});
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->ok());
  EXPECT_GE(r->bytes_checked, 720000u);
  // ~740 KB of data at 2 MiB/s: at least a third of a second.
  EXPECT_GE(took, std::chrono::milliseconds(300));
}

}  // namespace
}  // namespace hc::storage

namespace hc::storage {
namespace {

// The committed seed streams are golden files: this build must still read
// streams written by the version that produced them (format stability).
TEST(DirGolden, ReceivesTheCommittedStreams) {
  auto t = testing::MakeTestStore("dir");
  std::string dir = std::string(HC_SOURCE_DIR) + "/tests/fuzz/corpus/";
  auto full = ReadFileToString(dir + "fuzz_dir_receive/full_v1");
  auto inc = ReadFileToString(dir + "fuzz_stream/incremental_v1_v2");
  ASSERT_TRUE(full.ok() && inc.ok());
  StringSource a(*full);
  auto r1 = t.store->Receive("golden", a, {});
  ASSERT_TRUE(r1.ok()) << r1.status().ToString();
  EXPECT_EQ(r1->snapshot.name, "v1");
  StringSource b(*inc);
  auto r2 = t.store->Receive("golden", b, {});
  ASSERT_TRUE(r2.ok()) << r2.status().ToString();
  std::string live = *t.store->LivePath("golden");
  EXPECT_EQ(ReadWholeFile(live + "/a/b/f"), "hello\nmore\n");
  EXPECT_EQ(ReadWholeFile(live + "/new"), "new\n");
  EXPECT_EQ(ReadWholeFile(live + "/zeros"), std::string(3000, '\0'));
  StringSink via_link;
  ASSERT_TRUE(t.store->ReadFile("golden", "v1", "link", via_link).ok());
  EXPECT_EQ(via_link.out, "hello\n");
  auto v = t.store->Verify("golden");
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok());
}

// A write through a hard link in another directory has no inotify event in
// this one: a long-lived store must still see it.
TEST(DirJournal, SeesWritesThroughHardLinksAndRecreatedDirectories) {
  auto t = testing::MakeTestStore("dir");
  Store& st = *t.store;
  ASSERT_TRUE(st.CreateVolume("v").ok());
  std::string live = *st.LivePath("v");
  for (int i = 0; i < 12; ++i) {
    ASSERT_TRUE(MakeDirs(live + "/d" + std::to_string(i) + "/deep").ok());
    WriteFile(live + "/d" + std::to_string(i) + "/deep/f", "orig" + std::to_string(i));
  }
  ASSERT_TRUE(st.Snapshot("v", "s0", {}).ok());  // full: baseline for the journal
  ASSERT_EQ(::link((live + "/d1/deep/f").c_str(), (live + "/d2/other").c_str()), 0);
  ASSERT_TRUE(st.Snapshot("v", "s1", {}).ok());
  WriteFile(live + "/d2/other", "through the link");  // same inode as d1/deep/f
  ASSERT_TRUE(st.Snapshot("v", "s2", {}).ok());
  StringSink out;
  ASSERT_TRUE(st.ReadFile("v", "s2", "d1/deep/f", out).ok());
  EXPECT_EQ(out.out, "through the link");
  // Remove a subtree and recreate it with other content under the same name.
  ASSERT_TRUE(RemoveTree(live + "/d5").ok());
  ASSERT_TRUE(MakeDirs(live + "/d5/deep").ok());
  WriteFile(live + "/d5/deep/f", "recreated");
  ASSERT_TRUE(st.Snapshot("v", "s3", {}).ok());
  StringSink out3;
  ASSERT_TRUE(st.ReadFile("v", "s3", "d5/deep/f", out3).ok());
  EXPECT_EQ(out3.out, "recreated");
  // A deep change only.
  WriteFile(live + "/d7/deep/f", "deep change");
  ASSERT_TRUE(st.Snapshot("v", "s4", {}).ok());
  auto d = st.Diff("v", "s3", "s4");
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->size(), 1u);
  EXPECT_EQ((*d)[0].path, "d7/deep/f");
  // And everything equals what a fresh store's full scan sees.
  auto fresh = testing::ReopenForFullScan(t);
  ASSERT_TRUE(fresh.ok());
  ASSERT_TRUE((*fresh)->Snapshot("v", "full", {}).ok());
  auto same = (*fresh)->Diff("v", "s4", "full");
  ASSERT_TRUE(same.ok());
  EXPECT_TRUE(same->empty());
}

}  // namespace
}  // namespace hc::storage

namespace hc::storage {
namespace {

TEST(DirJournal, NewLinkIntoADirectoryAlreadyHoldingLinksIsSeen) {
  auto t = testing::MakeTestStore("dir");
  Store& st = *t.store;
  ASSERT_TRUE(st.CreateVolume("v").ok());
  std::string live = *st.LivePath("v");
  for (char c = 'a'; c <= 'h'; ++c) {
    ASSERT_TRUE(MakeDirs(live + "/" + c).ok());
    WriteFile(live + "/" + c + "/f", std::string(1, c));
  }
  WriteFile(live + "/a/m1", "m");
  ASSERT_EQ(::link((live + "/a/m1").c_str(), (live + "/a/m2").c_str()), 0);
  WriteFile(live + "/b/f", "OLD");
  ASSERT_TRUE(st.Snapshot("v", "s1", {}).ok());
  ASSERT_TRUE(st.Snapshot("v", "s2", {}).ok());
  ASSERT_EQ(::link((live + "/b/f").c_str(), (live + "/a/h").c_str()), 0);
  ASSERT_TRUE(st.Snapshot("v", "s3", {}).ok());
  WriteFile(live + "/a/h", "NEW");
  ASSERT_TRUE(st.Snapshot("v", "s4", {}).ok());
  StringSink out;
  ASSERT_TRUE(st.ReadFile("v", "s4", "b/f", out).ok());
  EXPECT_EQ(out.out, "NEW");
}

TEST(DirReceive, RefusesASnapshotNameTakenByAnotherSnapshot) {
  auto a = testing::MakeTestStore("dir");
  auto b = testing::MakeTestStore("dir");
  ASSERT_TRUE(a.store->CreateVolume("v").ok());
  std::string live = *a.store->LivePath("v");
  WriteFile(live + "/f", "1");
  ASSERT_TRUE(a.store->Snapshot("v", "x", {}).ok());
  auto send = [&](std::optional<std::string> from, const std::string& to) {
    StringSink s;
    EXPECT_TRUE(a.store->Send("v", from, to, s).ok());
    StringSource in(s.out);
    return b.store->Receive("v", in, {});
  };
  ASSERT_TRUE(send(std::nullopt, "x").ok());
  WriteFile(live + "/f", "2");
  ASSERT_TRUE(a.store->Snapshot("v", "base", {}).ok());
  ASSERT_TRUE(send(std::string("x"), "base").ok());
  ASSERT_TRUE(a.store->DestroySnapshot("v", "x").ok());
  WriteFile(live + "/f", "3");
  ASSERT_TRUE(a.store->Snapshot("v", "x", {}).ok());
  auto before = b.store->ListSnapshots("v");
  auto r = send(std::string("base"), "x");
  EXPECT_EQ(r.status().code(), Code::kConflict) << r.status().ToString();
  auto after = b.store->ListSnapshots("v");
  ASSERT_TRUE(before.ok() && after.ok());
  ASSERT_EQ(after->size(), before->size());
  EXPECT_EQ((*after)[0].id, (*before)[0].id);
}

TEST(DirReceive, ADamagedStoredCopyIsReplacedNotTrusted) {
  auto a = testing::MakeTestStore("dir");
  auto b = testing::MakeTestStore("dir");
  ASSERT_TRUE(a.store->CreateVolume("v").ok());
  std::string live = *a.store->LivePath("v");
  WriteFile(live + "/f", std::string(5000, 'q'));
  ASSERT_TRUE(a.store->Snapshot("v", "s1", {}).ok());
  StringSink full;
  ASSERT_TRUE(a.store->Send("v", std::nullopt, "s1", full).ok());
  StringSource in(full.out);
  ASSERT_TRUE(b.store->Receive("v", in, {}).ok());
  // Damage B's copy of the data chunk.
  bool damaged = false;
  for (const auto& p : ChunkFilesOf(b.cleanup_dir + "/store")) {
    std::string data = ReadWholeFile(p);
    if (data.size() > 20 && data[4] == 1) {
      ::chmod(p.c_str(), 0644);
      data[data.size() - 1] ^= 1;
      WriteFile(p, data);
      damaged = true;
    }
  }
  ASSERT_TRUE(damaged);
  // The same content arrives again under another name.
  WriteFile(live + "/copy", std::string(5000, 'q'));
  ASSERT_TRUE(a.store->Snapshot("v", "s2", {}).ok());
  StringSink inc;
  ASSERT_TRUE(a.store->Send("v", std::string("s1"), "s2", inc).ok());
  StringSource in2(inc.out);
  auto r = b.store->Receive("v", in2, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(ReadWholeFile(*b.store->LivePath("v") + "/copy"), std::string(5000, 'q'));
  auto v = b.store->Verify("v");
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok()) << v->problems[0];
}

}  // namespace
}  // namespace hc::storage
