#include "storage/store.h"

#include "storage/dir/dir_store.h"
#include "storage/zfs/zfs_store.h"

namespace hc::storage {

const char* FileTypeName(FileType t) {
  switch (t) {
    case FileType::kFile: return "file";
    case FileType::kDirectory: return "dir";
    case FileType::kSymlink: return "symlink";
    case FileType::kOther: return "other";
  }
  return "?";
}

const char* DiffKindName(DiffEntry::Kind k) {
  switch (k) {
    case DiffEntry::Kind::kAdded: return "+";
    case DiffEntry::Kind::kModified: return "M";
    case DiffEntry::Kind::kDeleted: return "-";
  }
  return "?";
}

Result<std::unique_ptr<Store>> OpenStore(const StoreConfig& config) {
  if (config.backend == "dir") return OpenDirStore(config);
  if (config.backend == "zfs") return OpenZfsStore(config);
  return InvalidArgument("unknown storage backend '" + config.backend + "'; choose 'dir' or 'zfs'");
}

}  // namespace hc::storage
