#include "storage/dir/chunk_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zstd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "common/fs.h"

namespace hc::storage::dir {
namespace {

constexpr char kMagic[4] = {'H', 'C', 'K', '1'};

void PutLe32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t GetLe32(const uint8_t* p) {
  return p[0] | p[1] << 8 | p[2] << 16 | static_cast<uint32_t>(p[3]) << 24;
}

void EncodeHeader(const StoredChunk& c, uint8_t* h) {
  std::memcpy(h, kMagic, 4);
  h[4] = static_cast<uint8_t>(c.kind);
  h[5] = static_cast<uint8_t>(c.codec);
  h[6] = h[7] = 0;
  PutLe32(h + 8, c.raw_len);
  PutLe32(h + 12, static_cast<uint32_t>(c.stored.size()));
  PutLe32(h + 16, 0);
}

std::atomic<uint64_t> g_tmp_counter{0};

}  // namespace

Digest ChunkId(ChunkKind kind, std::span<const uint8_t> raw) {
  Sha256 h;
  uint8_t k = static_cast<uint8_t>(kind);
  h.Update({&k, 1});
  h.Update(raw);
  return h.Final();
}

ChunkStore::ChunkStore(std::string dir, std::string tmp_dir)
    : dir_(std::move(dir)), tmp_dir_(std::move(tmp_dir)) {}

std::string ChunkStore::PathOf(const Digest& id) const {
  std::string hex = ToHex(id);
  return dir_ + "/" + hex.substr(0, 2) + "/" + hex;
}

bool ChunkStore::Has(const Digest& id) const {
  // A file shorter than a header is what a crash can leave of a chunk that
  // was not flushed yet: treat it as absent so it is written again.
  struct stat st;
  return ::stat(PathOf(id).c_str(), &st) == 0 && st.st_size >= static_cast<off_t>(kChunkHeader);
}

Status ChunkStore::WriteTo(const std::string& dir, const std::string& tmp_dir, const Digest& id,
                           const StoredChunk& chunk) {
  std::string hex = ToHex(id);
  std::string sub = dir + "/" + hex.substr(0, 2);
  std::string final_path = sub + "/" + hex;
  std::string tmp = tmp_dir + "/chunk." + std::to_string(::getpid()) + "." +
                    std::to_string(g_tmp_counter.fetch_add(1));
  uint8_t header[kChunkHeader];
  EncodeHeader(chunk, header);
  {
    HC_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0444));
    struct iovec iov[2] = {{header, kChunkHeader},
                           {const_cast<uint8_t*>(chunk.stored.data()), chunk.stored.size()}};
    size_t want = kChunkHeader + chunk.stored.size();
    ssize_t n = ::writev(fd.get(), iov, 2);
    if (n < 0 || static_cast<size_t>(n) != want) {
      int err = n < 0 ? errno : ENOSPC;
      ::unlink(tmp.c_str());
      return ErrnoStatus("write chunk " + tmp, err);
    }
  }
  if (::rename(tmp.c_str(), final_path.c_str()) == 0) return Status::Ok();
  if (errno == ENOENT) {
    if (::mkdir(sub.c_str(), 0755) == 0 || errno == EEXIST) {
      if (::rename(tmp.c_str(), final_path.c_str()) == 0) return Status::Ok();
    }
  }
  int err = errno;
  ::unlink(tmp.c_str());
  return ErrnoStatus("store chunk " + final_path, err);
}

Result<Digest> ChunkStore::Put(ChunkKind kind, std::span<const uint8_t> raw, bool* added) {
  HC_CHECK(raw.size() <= (16u << 20), "chunk too large");
  Digest id = ChunkId(kind, raw);
  if (added) *added = false;
  if (Has(id)) return id;
  StoredChunk c;
  c.kind = kind;
  c.raw_len = static_cast<uint32_t>(raw.size());
  size_t bound = ZSTD_compressBound(raw.size());
  c.stored.resize(bound);
  size_t n = ZSTD_compress(c.stored.data(), bound, raw.data(), raw.size(), 1);
  // Keep zstd only where it saves at least 1/32: incompressible data is
  // cheaper to read back raw (and can be copied in-kernel on checkout).
  if (!ZSTD_isError(n) && n < raw.size() - raw.size() / 32) {
    c.codec = Codec::kZstd;
    c.stored.resize(n);
  } else {
    c.codec = Codec::kRaw;
    c.stored.assign(raw.begin(), raw.end());
  }
  HC_RETURN_IF_ERROR(WriteTo(dir_, tmp_dir_, id, c));
  if (added) *added = true;
  return id;
}

Result<StoredChunk> ParseChunkFile(std::span<const uint8_t> file) {
  if (file.size() < kChunkHeader || std::memcmp(file.data(), kMagic, 4) != 0) {
    return Corrupt("chunk has a bad header");
  }
  StoredChunk c;
  uint8_t kind = file[4], codec = file[5];
  if (kind != 1 && kind != 2) return Corrupt("chunk has unknown kind");
  if (codec > 1) return Corrupt("chunk has unknown codec");
  c.kind = static_cast<ChunkKind>(kind);
  c.codec = static_cast<Codec>(codec);
  c.raw_len = GetLe32(file.data() + 8);
  uint32_t stored_len = GetLe32(file.data() + 12);
  if (stored_len != file.size() - kChunkHeader) {
    return Corrupt("chunk length does not match its header");
  }
  if (c.raw_len > (16u << 20)) return Corrupt("chunk claims an impossible size");
  c.stored.assign(file.begin() + kChunkHeader, file.end());
  return c;
}

Result<StoredChunk> ChunkStore::ReadStored(const Digest& id) const {
  std::string path = PathOf(id);
  auto data = ReadFileToString(path);
  if (!data.ok()) {
    if (data.status().code() == Code::kNotFound) {
      return NotFound("chunk " + ToHex(id) + " is missing from the store");
    }
    return data.status();
  }
  auto r = ParseChunkFile({reinterpret_cast<const uint8_t*>(data->data()), data->size()});
  if (!r.ok()) return r.status().Annotate("chunk " + ToHex(id));
  return r;
}

Status Decompress(const StoredChunk& c, std::vector<uint8_t>* out) {
  if (c.codec == Codec::kRaw) {
    if (c.stored.size() != c.raw_len) return Corrupt("raw chunk has the wrong length");
    out->assign(c.stored.begin(), c.stored.end());
    return Status::Ok();
  }
  out->resize(c.raw_len);
  size_t n = ZSTD_decompress(out->data(), out->size(), c.stored.data(), c.stored.size());
  if (ZSTD_isError(n) || n != c.raw_len) return Corrupt("chunk does not decompress");
  return Status::Ok();
}

Status ChunkStore::Verify(const Digest& id, const StoredChunk& chunk, std::vector<uint8_t>* raw) {
  std::vector<uint8_t> local;
  std::vector<uint8_t>* buf = raw ? raw : &local;
  if (chunk.codec == Codec::kRaw && raw == nullptr) {
    if (chunk.stored.size() != chunk.raw_len) return Corrupt("raw chunk has the wrong length");
    if (ChunkId(chunk.kind, chunk.stored) != id) {
      return Corrupt("chunk " + ToHex(id) + " does not match its checksum");
    }
    return Status::Ok();
  }
  HC_RETURN_IF_ERROR(Decompress(chunk, buf).Annotate("chunk " + ToHex(id)));
  if (ChunkId(chunk.kind, *buf) != id) {
    return Corrupt("chunk " + ToHex(id) + " does not match its checksum");
  }
  return Status::Ok();
}

Result<std::vector<uint8_t>> ChunkStore::Get(const Digest& id, ChunkKind kind) const {
  HC_ASSIGN_OR_RETURN(StoredChunk c, ReadStored(id));
  if (c.kind != kind) return Corrupt("chunk " + ToHex(id) + " has the wrong kind");
  std::vector<uint8_t> raw;
  HC_RETURN_IF_ERROR(Verify(id, c, &raw));
  return raw;
}

Status ChunkStore::ForEach(const std::function<void(const Digest&)>& fn) const {
  DIR* top = ::opendir(dir_.c_str());
  if (top == nullptr) return ErrnoStatus("opendir " + dir_, errno);
  std::vector<std::string> subs;
  while (struct dirent* e = ::readdir(top)) {
    if (std::strlen(e->d_name) == 2) subs.emplace_back(e->d_name);
  }
  ::closedir(top);
  for (const auto& s : subs) {
    std::string sub = dir_ + "/" + s;
    DIR* d = ::opendir(sub.c_str());
    if (d == nullptr) continue;
    while (struct dirent* e = ::readdir(d)) {
      Digest id;
      if (FromHex(e->d_name, &id)) fn(id);
    }
    ::closedir(d);
  }
  return Status::Ok();
}

Status ChunkStore::Remove(const Digest& id) {
  std::string p = PathOf(id);
  if (::unlink(p.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("unlink " + p, errno);
  return Status::Ok();
}

uint64_t ChunkStore::StoredSize(const Digest& id) const {
  struct stat st;
  if (::stat(PathOf(id).c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace hc::storage::dir
