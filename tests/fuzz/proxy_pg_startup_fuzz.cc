// The PostgreSQL start-up packet parser (src/proxy/pg_startup.h): the first
// bytes an untrusted client sends to the proxy's PostgreSQL port. The input
// is the client's bytes, copied into a buffer of exactly their size (ASan
// catches any read past it). Invariants:
//  - a message occupies 8..10000 bytes of the buffer, and parses the same
//    from a copy of exactly those bytes; one byte less is never complete;
//  - a verdict (message or error) does not change when more bytes follow;
//  - kNeedMore only while fewer bytes than the announced length arrived;
//  - ErrorResponse is a well-formed message for any error text.
#include <stddef.h>
#include <stdint.h>

#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "proxy/pg_startup.h"

namespace {

using hc::proxy::pg::Kind;
using hc::proxy::pg::ParseStartup;
using hc::proxy::pg::Startup;

bool Same(const Startup& a, const Startup& b) {
  return a.kind == b.kind && a.length == b.length && a.database == b.database && a.user == b.user &&
         a.application_name == b.application_name && a.error == b.error;
}

void CheckErrorResponse(const std::string& msg) {
  std::string e = hc::proxy::pg::ErrorResponse("08P01", msg);
  HC_CHECK(e.size() >= 5 && e[0] == 'E', "ErrorResponse without its type byte");
  uint32_t len = (uint32_t{static_cast<unsigned char>(e[1])} << 24) |
                 (uint32_t{static_cast<unsigned char>(e[2])} << 16) |
                 (uint32_t{static_cast<unsigned char>(e[3])} << 8) |
                 uint32_t{static_cast<unsigned char>(e[4])};
  HC_CHECK(len + 1 == e.size(), "ErrorResponse length field is wrong");
  HC_CHECK(e.back() == '\0' && e[e.size() - 2] == '\0', "ErrorResponse not terminated");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto buf = std::make_unique<char[]>(size == 0 ? 1 : size);
  std::memcpy(buf.get(), data, size);
  std::string_view in(buf.get(), size);

  Startup s = ParseStartup(in);
  switch (s.kind) {
    case Kind::kNeedMore:
      HC_CHECK(size < hc::proxy::pg::kMaxStartupPacket, "need-more past the packet limit");
      break;
    case Kind::kError:
      HC_CHECK(!s.error.empty(), "error without a message");
      CheckErrorResponse(s.error);
      break;
    default: {
      HC_CHECK(s.length >= 8 && s.length <= size && s.length <= hc::proxy::pg::kMaxStartupPacket,
               "message length out of range");
      auto copy = std::make_unique<char[]>(s.length);
      std::memcpy(copy.get(), buf.get(), s.length);
      std::string_view exact(copy.get(), s.length);
      HC_CHECK(Same(ParseStartup(exact), s), "message parses differently from an exact copy");
      HC_CHECK(ParseStartup(exact.substr(0, s.length - 1)).kind == Kind::kNeedMore,
               "a prefix of a message is complete");
      if (s.kind == Kind::kStartup) {
        HC_CHECK(!s.user.empty() && !s.database.empty(), "startup without user or database");
      }
      break;
    }
  }
  if (s.kind != Kind::kNeedMore) {
    std::string longer(in);
    longer += '\x7f';
    HC_CHECK(Same(ParseStartup(longer), s), "verdict changed when more bytes arrived");
  }
  return 0;
}
