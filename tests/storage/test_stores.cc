#include "storage/test_stores.h"

#include <stdlib.h>

#include <cstdio>

#include "common/fs.h"
#include "common/subprocess.h"

namespace hc::storage::testing {

TestStore MakeTestStore(const std::string& backend) {
  if (backend == "zfs") return MakeZfsTestStore();
  TestStore t;
  char tmpl[] = "/tmp/hc-test-XXXXXX";
  char* dir = ::mkdtemp(tmpl);
  if (dir == nullptr) {
    t.skip_reason = "cannot create a temp directory";
    return t;
  }
  t.scratch_dir = std::string(dir) + "/scratch";
  (void)MakeDirs(t.scratch_dir);
  // Tests do not need durability; syncfs would only slow them down.
  auto s = OpenStore({"dir", std::string(dir) + "/store", "", false});
  if (!s.ok()) {
    t.skip_reason = s.status().ToString();
    return t;
  }
  t.store = std::move(*s);
  t.cleanup_dir = dir;
  return t;
}

Result<std::unique_ptr<Store>> ReopenForFullScan(const TestStore& t) {
  return OpenStore({"dir", t.cleanup_dir + "/store", "", false});
}

TestStore::~TestStore() {
  store.reset();
  if (!zfs_pool.empty()) {
    auto r = RunCommand({"zpool", "destroy", "-f", zfs_pool});
    if (!r.ok() || !r->ok()) {
      std::fprintf(stderr, "warning: test pool %s not destroyed: %s\n", zfs_pool.c_str(),
                   r.ok() ? r->err.c_str() : r.status().ToString().c_str());
    }
  }
  if (!cleanup_dir.empty()) (void)RemoveTree(cleanup_dir);
}

}  // namespace hc::storage::testing
