// Small helpers shared by tests: is a program installed, random bytes, and a
// temporary directory removed with everything in it.
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/fs.h"
#include "common/status.h"

namespace hc::testing {

inline bool HaveProgram(const char* name) {
  std::string cmd = std::string("command -v ") + name + " >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

// Incompressible bytes (xorshift64 from `seed`): a file of n bytes makes
// about n bytes of chunks or stream.
inline std::string RandomBytes(size_t n, uint64_t seed) {
  std::string out(n, '\0');
  uint64_t x = seed | 1;
  for (char& c : out) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    c = static_cast<char>(x);
  }
  return out;
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/hc-test.XXXXXX";
    HC_CHECK(::mkdtemp(tmpl) != nullptr, "mkdtemp");
    path_ = tmpl;
  }
  ~TempDir() { (void)RemoveTree(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace hc::testing
