// Helpers of the `zfs` backend that do not run any command: parsing the
// output of `zfs get -H -p`, classifying `zfs` error messages, and reading a
// mounted snapshot tree safely (browse and diff). Kept apart from
// zfs_store.cc so they can be unit-tested without a pool.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/fs.h"
#include "common/io.h"
#include "common/status.h"
#include "storage/store.h"

namespace hc::storage::zfs {

// name -> property -> value, from `zfs get -H -p -o name,property,value`.
// Lines that do not have exactly three tab-separated fields are skipped.
using PropertyTable = std::map<std::string, std::map<std::string, std::string>>;
PropertyTable ParseGetOutput(const std::string& text);

// Parses a decimal unsigned number; "-" and garbage give `fallback`.
uint64_t ParseU64(const std::string& s, uint64_t fallback = 0);

// True if `zfs` stderr says the dataset is busy (zfs-fuse reports this for a
// moment after an unmount; the caller retries).
bool IsBusyError(const std::string& err);

// Browsing a mounted, read-only copy of a snapshot whose root is `root_fd`.
// Paths are relative to the root; ".." segments are refused with
// kPermissionDenied; symlinks are followed only while they stay below the
// root (openat2 RESOLVE_BENEATH), otherwise kPermissionDenied. `label` names
// the snapshot in messages ("volume 'shop' snapshot 's1'").
Result<std::vector<DirEntry>> BrowseListDir(int root_fd, const std::string& path,
                                            const std::string& label);
// lstat-like: a final symlink is reported as a symlink (with its target),
// but refused if it leads outside the snapshot.
Result<DirEntry> BrowseStat(int root_fd, const std::string& path, const std::string& label);
Status BrowseReadFile(int root_fd, const std::string& path, const std::string& label,
                      ByteSink& out);

// Changes between two mounted trees, sorted by path. Files are modified when
// their type, permission bits, size, mtime, link target or content differ;
// directories when their type or permission bits differ (their size and
// mtime change with their children, which are listed themselves).
Result<std::vector<DiffEntry>> DiffTrees(int from_root_fd, int to_root_fd);

}  // namespace hc::storage::zfs
