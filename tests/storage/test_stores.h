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

}  // namespace hc::storage::testing
