// Names of volumes, snapshots and apps: they become paths, ZFS dataset
// names, cgroup and container ids, so one strict rule for all of them.
#pragma once

#include <string>

#include "common/status.h"

namespace hc {

// 1 to 64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or
// digit. `what` names the kind in the message ("volume name 'X' ...").
Status ValidateName(const std::string& what, const std::string& name);

}  // namespace hc
