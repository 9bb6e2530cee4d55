// Content-addressed chunk store of the `dir` backend (docs/dir-format.md).
//
// A chunk is at most kMaxChunk bytes of file data, or an encoded tree object.
// Its id is SHA-256(kind || raw bytes); its file `chunks/<2 hex>/<64 hex>`
// holds a 20-byte header (magic "HCK1", kind, codec, raw and stored length)
// and the stored bytes (zstd level 1, or raw when zstd does not shrink it).
//
// Thread-safety: all methods may be called concurrently; writes go to a
// temporary file renamed into place, so readers never see partial chunks.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "common/hash.h"
#include "common/status.h"

namespace hc::storage::dir {

inline constexpr uint32_t kMaxChunk = 256 * 1024;
inline constexpr size_t kChunkHeader = 20;

enum class ChunkKind : uint8_t { kData = 1, kTree = 2 };
enum class Codec : uint8_t { kRaw = 0, kZstd = 1 };

// A chunk as stored or streamed: header fields plus stored bytes.
struct StoredChunk {
  ChunkKind kind = ChunkKind::kData;
  Codec codec = Codec::kRaw;
  uint32_t raw_len = 0;
  std::vector<uint8_t> stored;
};

Digest ChunkId(ChunkKind kind, std::span<const uint8_t> raw);

class ChunkStore {
 public:
  // `dir` is the chunks directory; `tmp_dir` is on the same file system.
  ChunkStore(std::string dir, std::string tmp_dir);

  std::string PathOf(const Digest& id) const;
  bool Has(const Digest& id) const;

  // Compresses and stores `raw` unless present. Returns the id; *added tells
  // whether a new file was written.
  Result<Digest> Put(ChunkKind kind, std::span<const uint8_t> raw, bool* added = nullptr);

  // Reads the chunk as stored (no decompression, no verification).
  Result<StoredChunk> ReadStored(const Digest& id) const;

  // Reads, decompresses and verifies the chunk against its id.
  Result<std::vector<uint8_t>> Get(const Digest& id, ChunkKind kind) const;

  // Checks that `chunk` really has id `id` (decompressing it). Fills `raw`
  // with the decompressed bytes when non-null.
  static Status Verify(const Digest& id, const StoredChunk& chunk, std::vector<uint8_t>* raw);

  // Writes an already verified chunk below `dir` (the store's chunks dir or
  // a staging dir laid out the same way).
  static Status WriteTo(const std::string& dir, const std::string& tmp_dir, const Digest& id,
                        const StoredChunk& chunk);

  // Calls fn for every chunk id present.
  Status ForEach(const std::function<void(const Digest&)>& fn) const;
  Status Remove(const Digest& id);
  // Bytes the chunk file occupies (stored size + header), 0 if missing.
  uint64_t StoredSize(const Digest& id) const;

  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::string tmp_dir_;
};

// Decompresses a stored chunk into `out` (resized to raw_len).
Status Decompress(const StoredChunk& chunk, std::vector<uint8_t>* out);

// Parses a chunk file's bytes (header + stored). kCorrupt on bad header.
Result<StoredChunk> ParseChunkFile(std::span<const uint8_t> file);

}  // namespace hc::storage::dir
