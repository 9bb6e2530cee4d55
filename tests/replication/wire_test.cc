// The replication wire format: golden encodings (tests/replication/golden/
// wire.txt), round trips, and what each parser refuses.
#include "replication/wire.h"

#include <gtest/gtest.h>

#include "common/hash.h"
#include "golden.h"

namespace hc::replication {
namespace {

std::string Hex(std::string_view s) {
  return ToHex({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
}

const TransferRequest kRequest{"shop", "node-a", 7, std::string(64, 'a'), std::string(64, 'b'), 0};
const TransferAnswer kAnswer{Verdict::kRefused, RefuseReason::kBaseMissing, "no base",
                             std::string(64, 'c')};
const TransferResult kResult{Code::kCorrupt, "frame 3 failed its checksum", "", false};
const RepairRequest kRepair{"shop", "node-b", {std::string(64, 'd'), std::string(64, 'e')}};

TEST(ReplicationWire, EncodingsMatchGoldenFile) {
  std::string out;
  auto line = [&](const std::string& what, const std::string& bytes) {
    out += what + "\n  " + Hex(bytes) + "\n";
  };
  line("request payload", EncodeRequest(kRequest));
  line("answer payload", EncodeAnswer(kAnswer));
  line("answer payload (accept, resume at 1 MiB)",
       EncodeAnswer({Verdict::kAccept, RefuseReason::kNone, "", std::string(64, 'c'), 1 << 20}));
  line("finish payload", EncodeFinish({123456789}));
  line("result payload", EncodeResult(kResult));
  line("frame seq 0 'Q' request", EncodeFrame(0, kFrameRequest, EncodeRequest(kRequest)));
  line("frame seq 3 'D' \"hello\"", EncodeFrame(3, kFrameData, "hello"));
  line("frame seq 0 'F' empty payload", EncodeFrame(0, kFrameFinish, ""));
  line("repair request payload", EncodeRepairRequest(kRepair));
  line("answer payload (refused, no such app)",
       EncodeAnswer({Verdict::kRefused, RefuseReason::kNoSuchApp, "no app 'shop'", ""}));
  line("frame seq 0 'G' repair request",
       EncodeFrame(0, kFrameRepairRequest, EncodeRepairRequest(kRepair)));
  hc::testing::ExpectGolden("tests/replication/golden/wire.txt", out);
}

TEST(ReplicationWire, MessagesRoundTrip) {
  EXPECT_EQ(*DecodeRequest(EncodeRequest(kRequest)), kRequest);
  EXPECT_EQ(*DecodeAnswer(EncodeAnswer(kAnswer)), kAnswer);
  TransferAnswer resume{Verdict::kAccept, RefuseReason::kNone, "", "", 123456789012};
  EXPECT_EQ(*DecodeAnswer(EncodeAnswer(resume)), resume);
  EXPECT_EQ(DecodeFinish(EncodeFinish({42}))->total_bytes, 42u);
  EXPECT_EQ(*DecodeResult(EncodeResult(kResult)), kResult);
  TransferRequest full = kRequest;
  full.base_id = "";
  EXPECT_EQ(*DecodeRequest(EncodeRequest(full)), full);
}

TEST(ReplicationWire, ParsersRefuseTruncatedTrailingAndOutOfRangeFields) {
  std::string req = EncodeRequest(kRequest);
  for (size_t n = 0; n < req.size(); ++n) {
    EXPECT_EQ(DecodeRequest(req.substr(0, n)).status().code(), Code::kCorrupt) << n;
  }
  EXPECT_EQ(DecodeRequest(req + "x").status().code(), Code::kCorrupt);
  std::string v2 = req;
  v2[0] = 2;
  auto r = DecodeRequest(v2);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("protocol version 2"), std::string::npos);
  TransferRequest empty_app = kRequest;
  empty_app.app = "";
  EXPECT_FALSE(DecodeRequest(EncodeRequest(empty_app)).ok());

  std::string ans = EncodeAnswer(kAnswer);
  ans[0] = 3;  // no such verdict
  EXPECT_FALSE(DecodeAnswer(ans).ok());
  std::string res = EncodeResult(kResult);
  res[0] = 99;  // no such code
  EXPECT_FALSE(DecodeResult(res).ok());
  EXPECT_FALSE(DecodeFinish("1234567").ok());
}

TEST(ReplicationWire, FrameParserReassemblesByteByByte) {
  std::string wire = EncodeFrame(0, kFrameRequest, EncodeRequest(kRequest)) +
                     EncodeFrame(1, kFrameData, std::string(5000, 'z')) +
                     EncodeFrame(2, kFrameFinish, EncodeFinish({5000}));
  FrameParser p;
  std::vector<Frame> got;
  for (char c : wire) {
    p.Append(std::string_view(&c, 1));
    auto f = p.Next();
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    if (*f) got.push_back(std::move(**f));
  }
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].type, kFrameRequest);
  EXPECT_EQ(got[1].payload, std::string(5000, 'z'));
  EXPECT_EQ(got[2].type, kFrameFinish);
  EXPECT_EQ(p.buffered(), 0u);
}

TEST(ReplicationWire, FrameParserDetectsFlippedDroppedAndReorderedFrames) {
  std::string f0 = EncodeFrame(0, kFrameData, "first");
  std::string f1 = EncodeFrame(1, kFrameData, "second");
  auto first_error = [](const std::string& wire) -> std::string {
    FrameParser p;
    p.Append(wire);
    for (;;) {
      auto f = p.Next();
      if (!f.ok()) return f.status().message();
      // A length damaged upwards waits for bytes that never come: at the
      // connection's end that is "closed in the middle of a frame".
      if (!*f) return p.buffered() > 0 ? "incomplete frame at the end" : "";
    }
  };
  for (size_t i = 0; i < f0.size(); ++i) {
    std::string bad = f0;
    bad[i] ^= 0x01;
    EXPECT_NE(first_error(bad + f1), "") << "flipped bit in byte " << i;
  }
  EXPECT_NE(first_error(f1), "") << "frame 0 dropped";
  EXPECT_NE(first_error(f1 + f0), "") << "reordered";
  EXPECT_NE(first_error(f0 + f0), "") << "repeated";
  EXPECT_EQ(first_error(f0 + f1), "");
  std::string huge = "D";
  huge += std::string("\xff\xff\xff\x7f", 4);
  EXPECT_NE(first_error(huge).find("more than the limit"), std::string::npos);
  EXPECT_NE(first_error("Zxxxx").find("unknown type"), std::string::npos);
}

TEST(ReplicationWire, RepairRequestRoundTripsAndRefusesBadFields) {
  EXPECT_EQ(*DecodeRepairRequest(EncodeRepairRequest(kRepair)), kRepair);
  std::string req = EncodeRepairRequest(kRepair);
  for (size_t n = 0; n < req.size(); ++n) {
    EXPECT_EQ(DecodeRepairRequest(req.substr(0, n)).status().code(), Code::kCorrupt) << n;
  }
  EXPECT_EQ(DecodeRepairRequest(req + "x").status().code(), Code::kCorrupt);
  std::string v2 = req;
  v2[0] = 2;
  EXPECT_NE(DecodeRepairRequest(v2).status().message().find("protocol version 2"),
            std::string::npos);
  RepairRequest none = kRepair;
  none.object_ids.clear();
  EXPECT_FALSE(DecodeRepairRequest(EncodeRepairRequest(none)).ok());
  RepairRequest too_many = kRepair;
  too_many.object_ids.assign(kMaxRepairObjectIds + 1, std::string(64, 'f'));
  EXPECT_FALSE(DecodeRepairRequest(EncodeRepairRequest(too_many)).ok());
  too_many.object_ids.pop_back();
  EXPECT_TRUE(DecodeRepairRequest(EncodeRepairRequest(too_many)).ok());
  RepairRequest long_id = kRepair;
  long_id.object_ids[0] = std::string(129, 'a');
  EXPECT_FALSE(DecodeRepairRequest(EncodeRepairRequest(long_id)).ok());
  // A 'G' frame passes the frame parser; an unknown reason does not decode.
  FrameParser p;
  p.Append(EncodeFrame(0, kFrameRepairRequest, req));
  auto f = p.Next();
  ASSERT_TRUE(f.ok() && *f);
  EXPECT_EQ((*f)->type, kFrameRepairRequest);
  std::string ans = EncodeAnswer({Verdict::kRefused, RefuseReason::kNoSuchApp, "", ""});
  EXPECT_EQ(DecodeAnswer(ans)->reason, RefuseReason::kNoSuchApp);
  ans[1] = 6;
  EXPECT_FALSE(DecodeAnswer(ans).ok());
}

}  // namespace
}  // namespace hc::replication
