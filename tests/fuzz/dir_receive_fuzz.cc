// Fuzzes a whole receive into a dir store: the input is a stream. Seeds are
// real streams (tests/fuzz/corpus/fuzz_dir_receive), so the fuzzer reaches
// chunk records, snapshot records and checkout. A stream that is accepted
// must leave a volume that verifies clean.
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/fs.h"
#include "storage/store.h"

namespace {
std::string& Root() {
  static std::string root = [] {
    // libFuzzer may end the process without running atexit handlers: the
    // runner points TMPDIR at a directory it removes itself.
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp != nullptr ? tmp : "/tmp") + "/hc-fuzz-XXXXXX";
    std::string r = ::mkdtemp(tmpl.data());
    std::atexit([] { (void)hc::RemoveTree(Root()); });
    return r;
  }();
  return root;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string store_dir = Root() + "/store";
  (void)hc::RemoveTree(store_dir);
  auto store = hc::storage::OpenStore({"dir", store_dir, "", false});
  if (!store.ok()) __builtin_trap();
  hc::StringSource in(std::string_view(reinterpret_cast<const char*>(data), size));
  auto r = (*store)->Receive("v", in, {});
  if (r.ok()) {
    auto v = (*store)->Verify("v");
    if (!v.ok() || !v->ok()) __builtin_trap();
  }
  return 0;
}
