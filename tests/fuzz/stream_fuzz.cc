// Fuzzes the stream envelope reader: any bytes must give records or kCorrupt.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "storage/stream_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hc::storage;
  (void)DecodeStreamHeader({data, size});
  hc::StringSource in(std::string_view(reinterpret_cast<const char*>(data), size));
  StreamReader r(in);
  if (!r.Begin().ok()) return 0;
  for (int i = 0; i < 100000; ++i) {
    auto rec = r.Next();
    if (!rec.ok() || rec->type == kRecordEnd) break;
  }
  return 0;
}
