#include "storage/stream_format.h"

#include <gtest/gtest.h>

namespace hc::storage {
namespace {

std::string MakeStream(int records) {
  StringSink out;
  StreamWriter w(out);
  StreamHeader h;
  h.backend = "dir";
  h.volume = "shop";
  h.to_id = "abc";
  h.to_name = "s1";
  EXPECT_TRUE(w.Begin(h).ok());
  for (int i = 0; i < records; ++i) {
    std::string p = "payload-" + std::to_string(i);
    EXPECT_TRUE(w.Write(kRecordChunk, AsBytes(p)).ok());
  }
  EXPECT_TRUE(w.Finish().ok());
  return out.out;
}

Status ReadAll(const std::string& s, int* records = nullptr) {
  StringSource in(s);
  StreamReader r(in);
  HC_ASSIGN_OR_RETURN(StreamHeader h, r.Begin());
  int n = 0;
  for (;;) {
    HC_ASSIGN_OR_RETURN(StreamRecord rec, r.Next());
    if (rec.type == kRecordEnd) break;
    ++n;
  }
  if (records) *records = n;
  return Status::Ok();
}

TEST(StreamFormat, RoundTripsRecords) {
  int n = 0;
  ASSERT_TRUE(ReadAll(MakeStream(5), &n).ok());
  EXPECT_EQ(n, 5);
}

TEST(StreamFormat, EveryFlippedByteIsDetected) {
  std::string s = MakeStream(3);
  for (size_t i = 0; i < s.size(); ++i) {
    std::string bad = s;
    bad[i] ^= 0x01;
    Status st = ReadAll(bad);
    EXPECT_EQ(st.code(), Code::kCorrupt) << "byte " << i;
  }
}

TEST(StreamFormat, EveryTruncationIsDetected) {
  std::string s = MakeStream(3);
  for (size_t cut = 0; cut < s.size(); ++cut) {
    EXPECT_EQ(ReadAll(s.substr(0, cut)).code(), Code::kCorrupt) << "cut " << cut;
  }
}

TEST(StreamFormat, DroppedOrRepeatedRecordsAreDetected) {
  // Records of one stream have the same length: splice them around.
  std::string s = MakeStream(3);
  size_t rec = 5 + std::string("payload-0").size() + 8;
  size_t first = s.find("payload-0") - 5;
  std::string dropped = s.substr(0, first) + s.substr(first + rec);
  EXPECT_EQ(ReadAll(dropped).code(), Code::kCorrupt);
  std::string repeated = s.substr(0, first + rec) + s.substr(first);
  EXPECT_EQ(ReadAll(repeated).code(), Code::kCorrupt);
}

TEST(StreamFormat, RejectsForeignData) {
  EXPECT_EQ(ReadAll("").code(), Code::kCorrupt);
  EXPECT_EQ(ReadAll("GIF89a....").code(), Code::kCorrupt);
}

}  // namespace
}  // namespace hc::storage
