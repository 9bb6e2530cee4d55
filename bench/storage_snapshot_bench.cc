// Snapshot latency of the `dir` backend on a 10,000-file volume with 0, 10
// and 1,000 files changed since the previous snapshot (target: unchanged
// <= 20 ms). BM_DirSnapshot10kFiles is the daemon's case (one long-lived
// Store, change journal); ...FullScan is a one-shot command's (full scan). Run:
// build/bench/storage_snapshot_bench --benchmark_repetitions=5
//
// The store is durable as in production (sync on): a snapshot that wrote
// chunks ends with syncfs, one that wrote nothing only fsyncs its record.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "common/fs.h"
#include "storage/store.h"

namespace {

constexpr int kFiles = 10000;
constexpr int kDirs = 100;

struct Fixture {
  std::string dir;
  std::unique_ptr<hc::storage::Store> store;
  std::string live;
  int snap = 0;
  int round = 0;

  Fixture() {
    char tmpl[] = "/var/tmp/hc-bench-XXXXXX";
    dir = ::mkdtemp(tmpl);
    store = std::move(*hc::storage::OpenStore({"dir", dir + "/store", "", true}));
    (void)store->CreateVolume("v");
    live = *store->LivePath("v");
    for (int d = 0; d < kDirs; ++d) (void)hc::MakeDirs(live + "/d" + std::to_string(d));
    std::string content(1024, 'x');
    for (int i = 0; i < kFiles; ++i) Write(i, content);
    // Age the files past the racy window, then take the base snapshot.
    ::usleep(200'000);
    (void)store->Snapshot("v", "base", {});
  }
  ~Fixture() {
    store.reset();
    (void)hc::RemoveTree(dir);
  }
  std::string Path(int i) const {
    return live + "/d" + std::to_string(i % kDirs) + "/f" + std::to_string(i);
  }
  void Write(int i, const std::string& content) const {
    (void)hc::WriteFileAtomic(Path(i), content, false);
  }
  // Rewrites `changed` files with new content, then lets them age past the
  // racy window (as they would between two real snapshots).
  void ChangeFiles(int changed) {
    ++round;
    std::string content(1024, static_cast<char>('a' + round % 26));
    content += std::to_string(round);
    for (int i = 0; i < changed; ++i) Write((i * 7919 + round) % kFiles, content);
    if (changed > 0) ::usleep(150'000);
  }
};

Fixture& Get() {
  static Fixture* f = new Fixture();
  return *f;
}

void BM_DirSnapshot10kFiles(benchmark::State& state) {
  Fixture& f = Get();
  int changed = static_cast<int>(state.range(0));
  for (auto _ : state) {
    state.PauseTiming();
    f.ChangeFiles(changed);
    state.ResumeTiming();
    auto s = f.store->Snapshot("v", "s" + std::to_string(++f.snap), {});
    if (!s.ok()) state.SkipWithError(s.status().ToString().c_str());
  }
  state.counters["files"] = kFiles;
  state.counters["changed"] = changed;
}
BENCHMARK(BM_DirSnapshot10kFiles)
    ->Arg(0)
    ->Arg(10)
    ->Arg(1000)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(10);

// The same, but every snapshot by a fresh Store object (as one `hc volume
// snapshot` command does): no change journal, a full stat() scan.
void BM_DirSnapshot10kFilesFullScan(benchmark::State& state) {
  Fixture& f = Get();
  int changed = static_cast<int>(state.range(0));
  for (auto _ : state) {
    state.PauseTiming();
    f.ChangeFiles(changed);
    auto fresh = hc::storage::OpenStore({"dir", f.dir + "/store", "", true});
    state.ResumeTiming();
    auto s = (*fresh)->Snapshot("v", "s" + std::to_string(++f.snap), {});
    if (!s.ok()) state.SkipWithError(s.status().ToString().c_str());
  }
}
BENCHMARK(BM_DirSnapshot10kFilesFullScan)
    ->Arg(0)
    ->Arg(10)
    ->Arg(1000)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(10);

}  // namespace

BENCHMARK_MAIN();
