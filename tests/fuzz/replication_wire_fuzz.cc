// The replication wire format (src/replication/wire.h): every byte a peer
// sends on the node channel goes through FrameParser and the message
// decoders. Input: arbitrary bytes, fed to a parser in pieces whose sizes
// come from the first byte. Must never crash, and:
//  - a parser error is kCorrupt and sticks (the next call fails too);
//  - every frame's payload that decodes as a message re-encodes to the same
//    bytes (the encoding is canonical), and the input re-framed with the
//    same sequence numbers parses to the same frames.
#include <stddef.h>
#include <stdint.h>

#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "replication/wire.h"

namespace {

using namespace hc::replication;

void Check(bool ok) {
  if (!ok) std::abort();
}

void CheckMessage(const Frame& f) {
  switch (f.type) {
    case kFrameRequest:
      if (auto r = DecodeRequest(f.payload); r.ok()) Check(EncodeRequest(*r) == f.payload);
      break;
    case kFrameAnswer:
      if (auto r = DecodeAnswer(f.payload); r.ok()) Check(EncodeAnswer(*r) == f.payload);
      break;
    case kFrameFinish:
      if (auto r = DecodeFinish(f.payload); r.ok()) Check(EncodeFinish(*r) == f.payload);
      break;
    case kFrameResult:
      if (auto r = DecodeResult(f.payload); r.ok()) Check(EncodeResult(*r) == f.payload);
      break;
    case kFrameRepairRequest:
      if (auto r = DecodeRepairRequest(f.payload); r.ok()) {
        Check(EncodeRepairRequest(*r) == f.payload);
      }
      break;
    case kFrameData: break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  size_t piece = data[0] % 64 + 1;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);

  // Each payload is also decoded directly as every message type.
  Frame raw{kFrameRequest, std::string(in)};
  for (FrameType t :
       {kFrameRequest, kFrameAnswer, kFrameFinish, kFrameResult, kFrameRepairRequest}) {
    raw.type = t;
    CheckMessage(raw);
  }

  FrameParser p;
  std::vector<Frame> frames;
  bool failed = false;
  for (size_t pos = 0; pos < in.size() && !failed; pos += piece) {
    p.Append(in.substr(pos, piece));
    for (;;) {
      auto f = p.Next();
      if (!f.ok()) {
        Check(f.status().code() == hc::Code::kCorrupt);
        Check(!p.Next().ok());
        failed = true;
        break;
      }
      if (!*f) break;
      CheckMessage(**f);
      frames.push_back(std::move(**f));
    }
  }
  std::string again;
  for (size_t i = 0; i < frames.size(); ++i) {
    again += EncodeFrame(i, frames[i].type, frames[i].payload);
  }
  Check(in.substr(0, again.size()) == again);
  return 0;
}
