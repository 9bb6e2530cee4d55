// Fuzzes the dir backend's binary formats: tree objects, snapshot records,
// the stat cache and chunk files (with decompression).
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "storage/dir/chunk_store.h"
#include "storage/dir/tree.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hc::storage::dir;
  std::span<const uint8_t> in(data, size);
  auto tree = DecodeTree(in);
  if (tree.ok()) {
    // What decodes must re-encode to the same bytes (canonical form).
    std::string again = EncodeTree(*tree);
    if (again.size() != size || std::memcmp(again.data(), data, size) != 0) __builtin_trap();
  }
  auto rec = DecodeSnapshotRecord(in);
  if (rec.ok()) (void)SnapshotId(*rec);
  (void)DecodeStatCache(in);
  auto chunk = ParseChunkFile(in);
  if (chunk.ok()) {
    std::vector<uint8_t> raw;
    (void)Decompress(*chunk, &raw);
  }
  std::string path(reinterpret_cast<const char*>(data), size);
  (void)SplitSnapshotPath(path);
  return 0;
}
