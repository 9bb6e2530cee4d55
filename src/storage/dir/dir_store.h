// Backend `dir`: volumes in plain directories, snapshots as Merkle trees of
// content-addressed, checksummed, zstd-compressed chunks (docs/dir-format.md).
#pragma once

#include <memory>

#include "storage/store.h"

namespace hc::storage {

Result<std::unique_ptr<Store>> OpenDirStore(const StoreConfig& config);

}  // namespace hc::storage
