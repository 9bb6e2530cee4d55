// The TLS ClientHello reader (src/proxy/tls_hello.h): the first bytes an
// untrusted client sends to a TLS passthrough port. The input is the
// client's bytes, copied into a buffer of exactly their size (ASan catches
// any read past it). Invariants:
//  - a verdict (ok, not TLS, error) does not change when more bytes follow,
//    and every prefix is either still kNeedMore or has the same verdict;
//  - kOk: the SNI is lower-case letters, digits, '-', '_', '.'; ALPN names
//    are non-empty;
//  - kNeedMore never past 16 KiB of handshake (plus record headers).
#include <stddef.h>
#include <stdint.h>

#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "proxy/tls_hello.h"

namespace {

using hc::proxy::tls::ClientHello;
using hc::proxy::tls::HelloStatus;
using hc::proxy::tls::ParseClientHello;

bool Same(const ClientHello& a, const ClientHello& b) {
  return a.status == b.status && a.sni == b.sni && a.alpn == b.alpn && a.error == b.error;
}

ClientHello ParseExact(std::string_view in) {
  auto copy = std::make_unique<char[]>(in.empty() ? 1 : in.size());
  std::memcpy(copy.get(), in.data(), in.size());
  return ParseClientHello(std::string_view(copy.get(), in.size()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  ClientHello h = ParseExact(in);
  if (h.status == HelloStatus::kOk) {
    for (char c : h.sni) {
      HC_CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.',
               "SNI with an unexpected character");
    }
    for (const std::string& a : h.alpn) HC_CHECK(!a.empty(), "empty ALPN name");
  } else if (h.status == HelloStatus::kNeedMore) {
    // 16 KiB of handshake in records of at least one byte each.
    HC_CHECK(size < 6 * (hc::proxy::tls::kMaxHandshake + 1), "need-more without bound");
  } else {
    HC_CHECK(!h.error.empty(), "verdict without a reason");
  }
  if (h.status != HelloStatus::kNeedMore) {
    std::string longer(in);
    longer += '\x16';
    HC_CHECK(Same(ParseExact(longer), h), "verdict changed when more bytes arrived");
  }
  if (size > 1) {
    size_t cut = (size_t{data[0]} * 257 + data[size - 1]) % size;
    ClientHello p = ParseExact(in.substr(0, cut));
    HC_CHECK(p.status == HelloStatus::kNeedMore || Same(p, h),
             "a prefix has a different verdict than the whole");
  }
  return 0;
}
