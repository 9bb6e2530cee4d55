// Fresh stores for tests, one per test case, for each backend.
#pragma once

#include <memory>
#include <string>

#include "storage/store.h"

namespace hc::storage::testing {

struct TestStore {
  TestStore() = default;
  TestStore(TestStore&&) = default;
  TestStore& operator=(TestStore&&) = default;
  ~TestStore();  // destroys the store and removes cleanup_dir
  std::unique_ptr<Store> store;
  std::string skip_reason;  // non-empty: the backend cannot run here, and why
  std::string scratch_dir;  // a private temp directory for the test's files
  std::string cleanup_dir;  // removed (rm -rf) when the TestStore goes away
  // MakeZfsTestStoreOnOwnPool: the pool (destroyed when the TestStore goes
  // away) and the directory holding its only vdev, the file pool.img.
  std::string zfs_pool;
  std::string zfs_pool_dir;
};

// A new, empty store. For "dir" a temp directory; for "zfs" a fresh parent
// dataset on a file-backed test pool (zfs-fuse is started if not running and
// stopped at process exit by the environment that started it).
TestStore MakeTestStore(const std::string& backend);

// A second Store object on the same dir store (no change journal history,
// so its first snapshot of a volume is a full scan).
Result<std::unique_ptr<Store>> ReopenForFullScan(const TestStore& t);

// Implemented in zfs_test_env.cc.
TestStore MakeZfsTestStore();

// A zfs store on a pool of its own (a 256 MiB file), for tests that damage
// the pool's bytes: nothing else shares its blocks.
TestStore MakeZfsTestStoreOnOwnPool();

// Flips one byte in every copy of `block` (at least 512 bytes of data no
// other file has, as written into a file of the store) found in the pool's
// vdev, then exports and imports the pool so ZFS forgets cached copies.
// Returns how many copies were damaged.
Result<int> DamageInZfsPool(const TestStore& t, const std::string& block);

}  // namespace hc::storage::testing
