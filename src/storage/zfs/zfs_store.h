// Backend `zfs`: one dataset per volume under a parent dataset, driven
// through the `zfs`/`zpool` commands (zfs-fuse pool v23 and OpenZFS 2.x).
#pragma once

#include <memory>

#include "storage/store.h"

namespace hc::storage {

Result<std::unique_ptr<Store>> OpenZfsStore(const StoreConfig& config);

}  // namespace hc::storage
