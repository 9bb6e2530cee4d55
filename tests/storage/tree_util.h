// Helpers for storage tests: write files, capture a directory tree.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace hc::storage::testing {

struct NodeState {
  char type = 'f';  // f, d, l
  uint32_t mode = 0;
  std::string content;   // file content or symlink target
  int64_t mtime_ns = 0;  // files only
  bool operator==(const NodeState&) const = default;
};
using TreeState = std::map<std::string, NodeState>;

// Captures everything below `dir` (not `dir` itself).
TreeState CaptureTree(const std::string& dir, bool with_mtime = true);
std::string DescribeDifference(const TreeState& a, const TreeState& b);

void WriteFile(const std::string& path, const std::string& content);
std::string ReadWholeFile(const std::string& path);

}  // namespace hc::storage::testing
