// Sizes written by people: "512M", "16G", "1.5T", "1048576" (bytes).
// K/M/G/T are powers of 1024; "KiB"/"MB"-style suffixes are accepted too.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/status.h"

namespace hc {

Result<uint64_t> ParseSize(std::string_view s);

}  // namespace hc
