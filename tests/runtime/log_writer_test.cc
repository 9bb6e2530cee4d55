// The per-app log file: line framing, prefixes, partial lines, rotation.
#include "runtime/log_writer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/fs.h"

namespace hc::runtime {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Line = std::pair<std::string, std::string>;  // stream, text

constexpr size_t kMaxLine = 16 * 1024;

bool IsTimestamp(std::string_view s) {
  // 2026-11-25T14:02:03.123Z
  constexpr std::string_view kShape = "dddd-dd-ddTdd:dd:dd.dddZ";
  if (s.size() != kShape.size()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool ok = kShape[i] == 'd' ? (s[i] >= '0' && s[i] <= '9') : s[i] == kShape[i];
    if (!ok) return false;
  }
  return true;
}

// Splits a log file into (stream, text) and checks every line's prefix.
std::vector<Line> ParseLog(const std::string& content) {
  std::vector<Line> lines;
  EXPECT_TRUE(content.empty() || content.back() == '\n') << "log ends mid-line";
  size_t pos = 0;
  while (pos < content.size()) {
    size_t nl = content.find('\n', pos);
    if (nl == std::string::npos) nl = content.size();
    std::string_view line = std::string_view(content).substr(pos, nl - pos);
    pos = nl + 1;
    size_t bar = line.find(" | ");
    if (line.size() < 25 || !IsTimestamp(line.substr(0, 24)) || line[24] != ' ' ||
        bar == std::string_view::npos) {
      ADD_FAILURE() << "malformed log line: " << line.substr(0, 80);
      continue;
    }
    lines.emplace_back(std::string(line.substr(25, bar - 25)), std::string(line.substr(bar + 3)));
  }
  return lines;
}

class LogWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/hc-log-writer-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/app.log";
  }
  void TearDown() override { EXPECT_TRUE(RemoveTree(dir_).ok()); }

  std::string Read(const std::string& path) {
    Result<std::string> r = ReadFileToString(path);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::string();
  }
  std::vector<Line> Lines(const std::string& path) { return ParseLog(Read(path)); }
  std::vector<Line> Lines() { return Lines(path_); }

  std::string dir_, path_;
};

TEST_F(LogWriterTest, PrefixesEachLineWithUtcTimeAndStream) {
  LogWriter w(path_, 0, 3);
  ASSERT_TRUE(w.Open().ok());
  // The writer reads system_clock; ::time() may use a coarse clock that lags it by a tick, which
  // across a second boundary would put the stamp "after" the end of the window.
  auto seconds_now = [] {
    return std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  };
  time_t before = seconds_now();
  ASSERT_TRUE(w.Append("out", "listening on 8080\n").ok());
  time_t after = seconds_now();

  std::string content = Read(path_);
  ASSERT_GE(content.size(), 24u);
  EXPECT_EQ(content.substr(24), " out | listening on 8080\n");
  struct tm tm = {};
  ASSERT_NE(::strptime(content.substr(0, 19).c_str(), "%Y-%m-%dT%H:%M:%S", &tm), nullptr);
  time_t stamped = ::timegm(&tm);
  EXPECT_GE(stamped, before);
  EXPECT_LE(stamped, after);
  EXPECT_THAT(Lines(), ElementsAre(Line{"out", "listening on 8080"}));

  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  mode_t mask = ::umask(0);
  ::umask(mask);
  EXPECT_EQ(st.st_mode & 0777, 0640 & ~mask);
}

TEST_F(LogWriterTest, OpenAppendsToAnExistingLog) {
  ASSERT_TRUE(WriteFileAtomic(path_, "2026-01-01T00:00:00.000Z hc | old\n", false).ok());
  LogWriter w(path_, 0, 3);
  ASSERT_TRUE(w.Open().ok());
  ASSERT_TRUE(w.Append("err", "new\n").ok());
  EXPECT_THAT(Lines(), ElementsAre(Line{"hc", "old"}, Line{"err", "new"}));
}

TEST_F(LogWriterTest, OpenReportsThePath) {
  LogWriter w(dir_ + "/missing/app.log", 0, 3);
  Status s = w.Open();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr(dir_ + "/missing/app.log"));
}

TEST_F(LogWriterTest, SplitsInputIntoLines) {
  LogWriter w(path_, 0, 3);
  ASSERT_TRUE(w.Open().ok());
  ASSERT_TRUE(w.Append("out", "a\n\nb\n").ok());
  EXPECT_THAT(Lines(), ElementsAre(Line{"out", "a"}, Line{"out", ""}, Line{"out", "b"}));
}

TEST_F(LogWriterTest, JoinsPartialLinesAcrossAppends) {
  LogWriter w(path_, 0, 3);
  ASSERT_TRUE(w.Open().ok());
  ASSERT_TRUE(w.Append("out", "hel").ok());
  ASSERT_TRUE(w.Append("out", "lo").ok());
  EXPECT_EQ(Read(path_), "");
  ASSERT_TRUE(w.Append("out", " world\nnext").ok());
  EXPECT_THAT(Lines(), ElementsAre(Line{"out", "hello world"}));
  ASSERT_TRUE(w.Append("out", "\n").ok());
  EXPECT_THAT(Lines(), ElementsAre(Line{"out", "hello world"}, Line{"out", "next"}));
}

TEST_F(LogWriterTest, KeepsPartialLinesPerStream) {
  LogWriter w(path_, 0, 3);
  ASSERT_TRUE(w.Open().ok());
  ASSERT_TRUE(w.Append("out", "o1\no2 part").ok());
  ASSERT_TRUE(w.Append("err", "e1 part").ok());
  ASSERT_TRUE(w.Note("starting").ok());
  ASSERT_TRUE(w.Append("out", "ial\n").ok());
  ASSERT_TRUE(w.Append("err", "ial\ne2\n").ok());
  EXPECT_THAT(Lines(),
              ElementsAre(Line{"out", "o1"}, Line{"hc", "starting"}, Line{"out", "o2 partial"},
                          Line{"err", "e1 partial"}, Line{"err", "e2"}));
}

TEST_F(LogWriterTest, NoteWritesOneHcLinePerLine) {
  LogWriter w(path_, 0, 3);
  ASSERT_TRUE(w.Open().ok());
  ASSERT_TRUE(w.Note("killed\n").ok());
  ASSERT_TRUE(w.Note("exit 1\nsignal 9").ok());
  EXPECT_THAT(Lines(),
              ElementsAre(Line{"hc", "killed"}, Line{"hc", "exit 1"}, Line{"hc", "signal 9"}));
}

TEST_F(LogWriterTest, FlushWritesPendingPartials) {
  LogWriter w(path_, 0, 3);
  ASSERT_TRUE(w.Open().ok());
  ASSERT_TRUE(w.Append("out", "no newline").ok());
  ASSERT_TRUE(w.Append("err", "prompt> ").ok());
  ASSERT_TRUE(w.Flush().ok());
  EXPECT_THAT(Lines(), ElementsAre(Line{"out", "no newline"}, Line{"err", "prompt> "}));
  ASSERT_TRUE(w.Flush().ok());
  ASSERT_TRUE(w.Append("out", "after\n").ok());
  EXPECT_THAT(Lines(), ElementsAre(Line{"out", "no newline"}, Line{"err", "prompt> "},
                                   Line{"out", "after"}));
}

TEST_F(LogWriterTest, SplitsLongLines) {
  LogWriter w(path_, 0, 3);
  ASSERT_TRUE(w.Open().ok());
  ASSERT_TRUE(w.Append("out", std::string(40000, 'x') + "\n").ok());
  EXPECT_THAT(Lines(), ElementsAre(Line{"out", std::string(kMaxLine, 'x')},
                                   Line{"out", std::string(kMaxLine, 'x')},
                                   Line{"out", std::string(40000 - 2 * kMaxLine, 'x')}));
}

TEST_F(LogWriterTest, WritesAPendingPartialOnceItPasses16KiB) {
  LogWriter w(path_, 0, 3);
  ASSERT_TRUE(w.Open().ok());
  ASSERT_TRUE(w.Append("out", std::string(kMaxLine, 'a')).ok());
  EXPECT_EQ(Read(path_), "");  // exactly 16 KiB may still end with its newline
  ASSERT_TRUE(w.Append("out", "bc").ok());
  EXPECT_THAT(Lines(), ElementsAre(Line{"out", std::string(kMaxLine, 'a')}));
  ASSERT_TRUE(w.Append("out", "d\n").ok());
  EXPECT_THAT(Lines(), ElementsAre(Line{"out", std::string(kMaxLine, 'a')}, Line{"out", "bcd"}));
}

TEST_F(LogWriterTest, SplitsLongLinesBetweenUtf8Characters) {
  LogWriter w(path_, 0, 3);
  ASSERT_TRUE(w.Open().ok());
  std::string line = std::string(kMaxLine - 1, 'a') + "\xc3\xa9" + "z";  // "é" straddles 16 KiB
  ASSERT_TRUE(w.Append("out", line + "\n").ok());
  EXPECT_THAT(Lines(),
              ElementsAre(Line{"out", std::string(kMaxLine - 1, 'a')}, Line{"out", "\xc3\xa9z"}));
}

TEST_F(LogWriterTest, KeepsBinaryBytes) {
  LogWriter w(path_, 0, 3);
  ASSERT_TRUE(w.Open().ok());
  std::string bytes;
  for (int c = 0; c < 256; ++c) {
    if (c != '\n') bytes += static_cast<char>(c);
  }
  ASSERT_TRUE(w.Append("err", bytes).ok());
  ASSERT_TRUE(w.Append("err", bytes + "\n").ok());
  EXPECT_THAT(Lines(), ElementsAre(Line{"err", bytes + bytes}));
}

TEST_F(LogWriterTest, RotationKeepsNFilesWithNewestInAppLog) {
  const uint64_t kMax = 400;
  LogWriter w(path_, kMax, 2);
  ASSERT_TRUE(w.Open().ok());
  const int kLines = 100;
  for (int i = 0; i < kLines; ++i) {
    ASSERT_TRUE(w.Append("out", "line " + std::to_string(i) + "\n").ok());
  }
  EXPECT_TRUE(PathExists(path_ + ".1"));
  EXPECT_TRUE(PathExists(path_ + ".2"));
  EXPECT_FALSE(PathExists(path_ + ".3"));

  // Oldest to newest, the files hold consecutive lines ending with the last one.
  std::vector<Line> all;
  for (const std::string& p : {path_ + ".2", path_ + ".1", path_}) {
    std::string content = Read(p);
    EXPECT_LE(content.size(), kMax) << p;
    if (p != path_) {
      EXPECT_GT(content.size(), kMax / 2) << p;
    }
    for (Line& l : ParseLog(content)) all.push_back(std::move(l));
  }
  ASSERT_FALSE(all.empty());
  int first = kLines - static_cast<int>(all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i], (Line{"out", "line " + std::to_string(first + static_cast<int>(i))}));
  }
}

TEST_F(LogWriterTest, RotationSplitsOneBigAppendAtLineBoundaries) {
  const uint64_t kMax = 1000;
  LogWriter w(path_, kMax, 5);
  ASSERT_TRUE(w.Open().ok());
  std::string input;
  for (int i = 0; i < 60; ++i) input += "row " + std::to_string(i) + "\n";
  ASSERT_TRUE(w.Append("out", input).ok());
  std::vector<Line> all;
  for (const std::string& p : {path_ + ".2", path_ + ".1", path_}) {
    std::string content = Read(p);
    EXPECT_LE(content.size(), kMax) << p;
    for (Line& l : ParseLog(content)) all.push_back(std::move(l));
  }
  EXPECT_FALSE(PathExists(path_ + ".3"));
  ASSERT_EQ(all.size(), 60u);
  EXPECT_EQ(all.front().second, "row 0");
  EXPECT_EQ(all.back().second, "row 59");
}

TEST_F(LogWriterTest, RotationRespectsSizeOfExistingFile) {
  std::string old = "2026-01-01T00:00:00.000Z hc | " + std::string(150, 'o') + "\n";
  ASSERT_TRUE(WriteFileAtomic(path_, old, false).ok());
  LogWriter w(path_, 200, 1);
  ASSERT_TRUE(w.Open().ok());
  ASSERT_TRUE(w.Append("out", "fresh\n").ok());
  EXPECT_EQ(Read(path_ + ".1"), old);
  EXPECT_THAT(Lines(), ElementsAre(Line{"out", "fresh"}));
}

TEST_F(LogWriterTest, KeepZeroTruncatesInsteadOfRotating) {
  LogWriter w(path_, 300, 0);
  ASSERT_TRUE(w.Open().ok());
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(w.Append("out", "line " + std::to_string(i) + "\n").ok());
  }
  EXPECT_FALSE(PathExists(path_ + ".1"));
  std::vector<Line> lines = Lines();
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back(), (Line{"out", "line 49"}));
  EXPECT_LE(Read(path_).size(), 300u);
}

TEST_F(LogWriterTest, SurvivesHugeRandomBinaryInput) {
  const uint64_t kMax = 256 * 1024;
  LogWriter w(path_, kMax, 3);
  ASSERT_TRUE(w.Open().ok());
  std::mt19937 rng(42);
  std::string chunk(3 * 1024 * 1024, '\0');
  for (char& c : chunk) c = static_cast<char>(rng());
  // A newline every 256 bytes on average, plus a 100 KiB run without one;
  // split across calls at odd places.
  std::fill(chunk.begin() + 1000000, chunk.begin() + 1100000, 'x');
  for (size_t off = 0; off < chunk.size();) {
    size_t n = std::min<size_t>(chunk.size() - off, 1 + rng() % 100000);
    ASSERT_TRUE(w.Append(rng() % 2 ? "out" : "err", std::string_view(chunk).substr(off, n)).ok());
    off += n;
  }
  ASSERT_TRUE(w.Flush().ok());
  for (const std::string& p : {path_, path_ + ".1", path_ + ".2", path_ + ".3"}) {
    std::string content = Read(p);
    EXPECT_LE(content.size(), kMax) << p;
    for (const Line& l : ParseLog(content)) EXPECT_LE(l.second.size(), kMaxLine);
  }
  EXPECT_FALSE(PathExists(path_ + ".4"));
}

}  // namespace
}  // namespace hc::runtime
