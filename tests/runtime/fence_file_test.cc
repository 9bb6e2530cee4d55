// The fence file (runtime/fence.h): format, atomic replacement, and the
// errors a supervisor must treat as "fenced".
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "runtime/fence.h"

namespace hc::runtime {
namespace {

class FenceFile : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/hc-fence-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = JoinPath(dir_, "fence");
  }
  void TearDown() override { (void)RemoveTree(dir_); }
  std::string dir_, path_;
};

TEST_F(FenceFile, BoottimeIsMonotonicAndNanoseconds) {
  int64_t a = BoottimeNowNs();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  int64_t b = BoottimeNowNs();
  EXPECT_GT(a, 0);
  EXPECT_GE(b - a, 19'000'000);
  EXPECT_LT(b - a, 5'000'000'000);
}

TEST_F(FenceFile, WritesANumberAndANewlineAndReadsItBack) {
  ASSERT_TRUE(WriteFenceDeadline(path_, 1234567890123).ok());
  EXPECT_EQ(*ReadFileToString(path_), "1234567890123\n");
  auto d = ReadFenceDeadline(path_);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(*d, 1234567890123);
  // Replaced, not appended; no temporary file left behind.
  ASSERT_TRUE(WriteFenceDeadline(path_, 7).ok());
  EXPECT_EQ(*ReadFenceDeadline(path_), 7);
  ASSERT_TRUE(WriteFenceDeadline(path_, INT64_MAX).ok());
  EXPECT_EQ(*ReadFenceDeadline(path_), INT64_MAX);
  EXPECT_EQ(std::system(("test $(ls -A " + dir_ + " | wc -l) -eq 1").c_str()), 0);
  EXPECT_EQ(WriteFenceDeadline(path_, -1).code(), Code::kInvalidArgument);
}

TEST_F(FenceFile, MissingIsNotFound) {
  EXPECT_EQ(ReadFenceDeadline(path_).status().code(), Code::kNotFound);
  EXPECT_EQ(WriteFenceDeadline(JoinPath(dir_, "no/such/dir/fence"), 1).code(), Code::kNotFound);
}

TEST_F(FenceFile, MalformedContentIsCorruptAndNamesThePath) {
  for (const char* bad : {"", "\n", "12a\n", "-5\n", "+5\n", " 5\n", "5 \n", "5\n\n", "0x10\n",
                          "99999999999999999999\n", "9223372036854775808\n", "1.5\n", "5\r\n"}) {
    ASSERT_TRUE(WriteFileAtomic(path_, bad, false).ok());
    auto d = ReadFenceDeadline(path_);
    ASSERT_FALSE(d.ok()) << "'" << bad << "' gave " << *d;
    EXPECT_EQ(d.status().code(), Code::kCorrupt) << bad;
    EXPECT_NE(d.status().message().find(path_), std::string::npos) << d.status().message();
  }
  // The newline is optional (a writer that forgot it still fences nobody by mistake).
  ASSERT_TRUE(WriteFileAtomic(path_, "42", false).ok());
  EXPECT_EQ(*ReadFenceDeadline(path_), 42);
  EXPECT_EQ(*ParseFenceDeadline("9223372036854775807\n"), INT64_MAX);
  EXPECT_EQ(*ParseFenceDeadline(FormatFenceDeadline(0)), 0);
}

TEST_F(FenceFile, ConcurrentWritersNeverLeaveAMixedFile) {
  // Different lengths: a shared temporary file would end up "123\n8\n"-like.
  std::vector<std::thread> writers;
  std::atomic<bool> failed{false};
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      int64_t v = t % 2 ? 123 : 4567890123;
      for (int i = 0; i < 300; ++i) {
        if (!WriteFenceDeadline(path_, v).ok()) failed = true;
      }
    });
  }
  for (int i = 0; i < 300; ++i) {
    auto d = ReadFenceDeadline(path_);
    if (d.ok()) {
      EXPECT_TRUE(*d == 123 || *d == 4567890123) << *d;
    } else {
      EXPECT_EQ(d.status().code(), Code::kNotFound) << d.status().ToString();
    }
  }
  for (auto& w : writers) w.join();
  EXPECT_FALSE(failed);
}

}  // namespace
}  // namespace hc::runtime
