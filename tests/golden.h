// Golden files: compare a test's rendered output with a file under tests/;
// HC_UPDATE_GOLDEN=1 rewrites the file instead (then read the diff).
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace hc::testing {

// `rel_path` is relative to the source tree, e.g. "tests/dns/golden/answers.txt".
inline void ExpectGolden(const std::string& rel_path, const std::string& got) {
  std::string path = std::string(HC_SOURCE_DIR) + "/" + rel_path;
  if (std::getenv("HC_UPDATE_GOLDEN")) {
    std::ofstream(path) << got;
    GTEST_SKIP() << "wrote " << path;
  }
  std::ifstream in(path);
  std::stringstream want;
  want << in.rdbuf();
  EXPECT_EQ(got, want.str()) << "golden file " << path
                             << " differs; HC_UPDATE_GOLDEN=1 rewrites it after a deliberate "
                                "change";
}

}  // namespace hc::testing
