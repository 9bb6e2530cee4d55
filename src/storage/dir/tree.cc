#include "storage/dir/tree.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>

#include "storage/dir/chunk_store.h"
#include "storage/stream_format.h"

namespace hc::storage::dir {
namespace {

constexpr char kTreeMagic[4] = {'H', 'C', 'T', '1'};
constexpr char kSnapMagic[4] = {'H', 'C', 'S', '1'};
constexpr char kCacheMagic[4] = {'H', 'C', 'C', '3'};
constexpr uint32_t kMaxName = 255;
constexpr uint32_t kMaxLink = 4096;

void PutDigest(Encoder& e, const Digest& d) {
  e.Bytes(d);
}
bool GetDigest(Decoder& d, Digest* out) {
  auto b = d.Bytes(32);
  if (!d.ok()) return false;
  std::memcpy(out->data(), b.data(), 32);
  return true;
}
bool CheckMagic(Decoder& d, const char* magic) {
  auto b = d.Bytes(4);
  return d.ok() && std::memcmp(b.data(), magic, 4) == 0;
}
bool ValidEntryName(const std::string& n) {
  return !n.empty() && n != "." && n != ".." && n.find('/') == std::string::npos &&
         n.find('\0') == std::string::npos;
}

}  // namespace

const TreeEntry* Tree::Find(std::string_view name) const {
  auto it = std::lower_bound(entries.begin(), entries.end(), name,
                             [](const TreeEntry& e, std::string_view n) { return e.name < n; });
  if (it == entries.end() || it->name != name) return nullptr;
  return &*it;
}

std::string EncodeTree(const Tree& tree) {
  Encoder e;
  e.Raw({kTreeMagic, 4});
  e.U32(static_cast<uint32_t>(tree.entries.size()));
  for (const auto& en : tree.entries) {
    e.Str(en.name);
    e.U8(static_cast<uint8_t>(en.type));
    e.U32(en.mode);
    e.U32(en.uid);
    e.U32(en.gid);
    e.U64(en.size);
    e.I64(en.mtime_ns);
    switch (en.type) {
      case FileType::kFile:
        e.U32(static_cast<uint32_t>(en.chunks.size()));
        for (const auto& c : en.chunks) {
          PutDigest(e, c.id);
          e.U32(c.len);
        }
        break;
      case FileType::kDirectory: PutDigest(e, en.subtree); break;
      case FileType::kSymlink: e.Str(en.link_target); break;
      case FileType::kOther: break;
    }
  }
  return std::move(e.out());
}

Result<Tree> DecodeTree(std::span<const uint8_t> bytes) {
  Decoder d(bytes);
  if (!CheckMagic(d, kTreeMagic)) return Corrupt("tree object has a bad magic");
  uint32_t count = d.U32();
  // Every entry takes at least 37 bytes: a bound that stops huge reserves.
  if (!d.ok() || count > d.remaining() / 37) return Corrupt("tree object entry count is bad");
  Tree t;
  t.entries.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    TreeEntry en;
    en.name = d.Str(kMaxName);
    uint8_t type = d.U8();
    en.mode = d.U32();
    en.uid = d.U32();
    en.gid = d.U32();
    en.size = d.U64();
    en.mtime_ns = d.I64();
    if (!d.ok()) return Corrupt("tree object is truncated");
    if (!ValidEntryName(en.name)) return Corrupt("tree object has an invalid name");
    if (type < 1 || type > 4) return Corrupt("tree object has an unknown entry type");
    if (en.mode > 07777) return Corrupt("tree object has invalid mode bits");
    en.type = static_cast<FileType>(type);
    if (!t.entries.empty() && !(t.entries.back().name < en.name)) {
      return Corrupt("tree object entries are not sorted and unique");
    }
    switch (en.type) {
      case FileType::kFile: {
        uint32_t n = d.U32();
        if (!d.ok() || n > d.remaining() / 36) return Corrupt("tree object chunk count is bad");
        uint64_t total = 0;
        en.chunks.resize(n);
        for (auto& c : en.chunks) {
          GetDigest(d, &c.id);
          c.len = d.U32();
          if (c.len == 0 || c.len > kMaxChunk) return Corrupt("tree object chunk length is bad");
          total += c.len;
        }
        if (!d.ok() || total != en.size) return Corrupt("tree object file size does not add up");
        break;
      }
      case FileType::kDirectory: GetDigest(d, &en.subtree); break;
      case FileType::kSymlink:
        en.link_target = d.Str(kMaxLink);
        if (d.ok() && (en.link_target.empty() || en.link_target.find('\0') != std::string::npos)) {
          return Corrupt("tree object has an invalid symlink");
        }
        break;
      case FileType::kOther: break;
    }
    if (!d.ok()) return Corrupt("tree object is truncated");
    t.entries.push_back(std::move(en));
  }
  if (!d.done()) return Corrupt("tree object has trailing bytes");
  return t;
}

std::string EncodeSnapshotRecord(const SnapshotRecord& r) {
  Encoder e;
  e.Raw({kSnapMagic, 4});
  e.Str(r.name);
  e.I64(r.created_unix_ns);
  PutDigest(e, r.tree);
  PutDigest(e, r.parent);
  e.U64(r.logical_bytes);
  e.U64(r.file_count);
  return std::move(e.out());
}

Result<SnapshotRecord> DecodeSnapshotRecord(std::span<const uint8_t> bytes) {
  Decoder d(bytes);
  if (!CheckMagic(d, kSnapMagic)) return Corrupt("snapshot record has a bad magic");
  SnapshotRecord r;
  r.name = d.Str(64);
  r.created_unix_ns = d.I64();
  GetDigest(d, &r.tree);
  GetDigest(d, &r.parent);
  r.logical_bytes = d.U64();
  r.file_count = d.U64();
  if (!d.done()) return Corrupt("snapshot record is malformed");
  Status s = ValidateName("snapshot", r.name);
  if (!s.ok()) return Corrupt("snapshot record: " + s.message());
  return r;
}

Digest SnapshotId(const SnapshotRecord& r) {
  std::string enc = EncodeSnapshotRecord(r);
  return Sha256Of(AsBytes(enc));
}

namespace {
std::pair<std::string, std::string> SplitPath(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return {"", path};
  return {path.substr(0, slash), path.substr(slash + 1)};
}
bool NameLess(const CachedFile& f, const std::string& n) {
  return f.name < n;
}
}  // namespace

void StatCache::Put(const std::string& path, CachedFile f) {
  auto [dir, name] = SplitPath(path);
  f.name = name;
  auto& v = dirs[dir];
  auto it = std::lower_bound(v.begin(), v.end(), name, NameLess);
  if (it != v.end() && it->name == name) {
    *it = std::move(f);
  } else {
    v.insert(it, std::move(f));
  }
}

void StatCache::Erase(const std::string& path) {
  auto [dir, name] = SplitPath(path);
  auto d = dirs.find(dir);
  if (d == dirs.end()) return;
  auto it = std::lower_bound(d->second.begin(), d->second.end(), name, NameLess);
  if (it != d->second.end() && it->name == name) d->second.erase(it);
}

void StatCache::EraseTree(const std::string& path) {
  std::string prefix = path + "/";
  for (auto it = dirs.begin(); it != dirs.end();) {
    if (it->first == path || it->first.compare(0, prefix.size(), prefix) == 0) {
      dir_scanned_ns.erase(it->first);
      it = dirs.erase(it);
    } else {
      ++it;
    }
  }
}

const CachedFile* StatCache::Find(const std::string& path) const {
  auto [dir, name] = SplitPath(path);
  auto d = dirs.find(dir);
  if (d == dirs.end()) return nullptr;
  auto it = std::lower_bound(d->second.begin(), d->second.end(), name, NameLess);
  return it != d->second.end() && it->name == name ? &*it : nullptr;
}

size_t StatCache::size() const {
  size_t n = 0;
  for (const auto& [d, v] : dirs) n += v.size();
  return n;
}

std::string EncodeStatCache(const StatCache& c) {
  Encoder e;
  e.Raw({kCacheMagic, 4});
  e.I64(c.scan_start_ns);
  e.U32(static_cast<uint32_t>(c.dirs.size()));
  for (const auto& [dir, files] : c.dirs) {
    e.Str(dir);
    e.I64(c.ScannedAt(dir));
    e.U32(static_cast<uint32_t>(files.size()));
    for (const auto& f : files) {
      e.Str(f.name);
      e.U64(f.ino);
      e.I64(f.ctime_ns);
      e.I64(f.mtime_ns);
      e.U64(f.size);
      e.U32(static_cast<uint32_t>(f.chunks.size()));
      for (const auto& ch : f.chunks) {
        PutDigest(e, ch.id);
        e.U32(ch.len);
      }
    }
  }
  uint64_t check = XXH3_64bits(e.out().data(), e.out().size());
  e.U64(check);
  return std::move(e.out());
}

StatCache DecodeStatCache(std::span<const uint8_t> bytes) {
  StatCache empty;
  if (bytes.size() < 8) return empty;
  uint64_t check = 0;
  for (int i = 0; i < 8; ++i)
    check |= static_cast<uint64_t>(bytes[bytes.size() - 8 + i]) << (8 * i);
  auto body = bytes.first(bytes.size() - 8);
  if (XXH3_64bits(body.data(), body.size()) != check) return empty;
  Decoder d(body);
  if (!CheckMagic(d, kCacheMagic)) return empty;
  StatCache c;
  c.scan_start_ns = d.I64();
  uint32_t ndirs = d.U32();
  if (!d.ok() || ndirs > d.remaining() / 8) return empty;
  c.dirs.reserve(ndirs);
  for (uint32_t i = 0; i < ndirs; ++i) {
    std::string dir = d.Str(1 << 16);
    int64_t scanned = d.I64();
    uint32_t n = d.U32();
    if (!d.ok() || n > d.remaining() / 40) return empty;
    std::vector<CachedFile> files(n);
    for (auto& f : files) {
      f.name = d.Str(kMaxName);
      f.ino = d.U64();
      f.ctime_ns = d.I64();
      f.mtime_ns = d.I64();
      f.size = d.U64();
      uint32_t k = d.U32();
      if (!d.ok() || k > d.remaining() / 36) return empty;
      f.chunks.resize(k);
      for (auto& ch : f.chunks) {
        GetDigest(d, &ch.id);
        ch.len = d.U32();
      }
      if (!d.ok()) return empty;
    }
    for (size_t j = 1; j < files.size(); ++j) {
      if (!(files[j - 1].name < files[j].name)) return empty;
    }
    c.dir_scanned_ns[dir] = scanned;
    c.dirs.emplace(std::move(dir), std::move(files));
  }
  if (!d.done()) return empty;
  return c;
}

std::vector<std::string> SplitPathSegments(const std::string& path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    std::string seg = path.substr(i, j - i);
    if (!seg.empty() && seg != ".") out.push_back(std::move(seg));
    i = j + 1;
  }
  return out;
}

Result<std::vector<std::string>> SplitSnapshotPath(const std::string& path) {
  if (path.find('\0') != std::string::npos) return InvalidArgument("path contains a NUL byte");
  std::vector<std::string> out = SplitPathSegments(path);
  for (const auto& seg : out) {
    if (seg == "..") {
      return PermissionDenied("path '" + path +
                              "' contains '..'; snapshot paths cannot leave the snapshot");
    }
  }
  return out;
}

}  // namespace hc::storage::dir
