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

Status ValidateName(const std::string& what, const std::string& name) {
  if (name.empty() || name.size() > 64) {
    return InvalidArgument(what + " name '" + name + "' must be 1 to 64 characters long");
  }
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(name[0])) {
    return InvalidArgument(what + " name '" + name +
                           "' must start with a lower-case letter or a digit");
  }
  for (char c : name) {
    if (!alnum(c) && c != '-' && c != '_' && c != '.') {
      return InvalidArgument(what + " name '" + name + "' contains '" + std::string(1, c) +
                             "'; use only a-z, 0-9, '.', '_' and '-'");
    }
  }
  return Status::Ok();
}

Result<std::unique_ptr<Store>> OpenStore(const StoreConfig& config) {
  if (config.backend == "dir") return OpenDirStore(config);
  if (config.backend == "zfs") return OpenZfsStore(config);
  return InvalidArgument("unknown storage backend '" + config.backend + "'; choose 'dir' or 'zfs'");
}

}  // namespace hc::storage
