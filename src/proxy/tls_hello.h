// The server name (SNI, RFC 6066 section 3) and ALPN protocols (RFC 7301) of
// a TLS ClientHello, read without OpenSSL and without terminating TLS: what a
// proxy needs to route a TLS connection by name and relay it unchanged (SNI
// passthrough, as nginx's ssl_preread and HAProxy's req.ssl_sni).
//
//   ClientHello h = ParseClientHello(buf);
//   switch (h.status) {
//     case HelloStatus::kNeedMore: /* read more (at most 16 KiB + record headers) */ break;
//     case HelloStatus::kOk: /* route by h.sni, then relay buf and everything after */ break;
//     case HelloStatus::kNotTls:  // plain HTTP on a TLS port, SSLv2, other protocols
//     case HelloStatus::kError: /* close; h.error says why (for logs) */ break;
//   }
//
// Accepted: handshake records (type 22) with record version 0x0300-0x0304
// (RFC 5246 appendix E.1 lets clients send {03,00}), the ClientHello split
// over any number of records, client_version 0x0301 or later (TLS 1.3
// clients send 0x0303 and the real versions in an extension). Every length
// is checked against its container: record length 1..16384, handshake
// message at most 16 KiB, session id at most 32 bytes, cipher suites a
// non-empty even length, at least one compression method, extensions
// exactly filling the message, no extension type twice. SNI: one host_name
// of letters, digits, '-', '_' and '.' (returned lower-cased); other name
// types are skipped. ALPN: a non-empty list of non-empty names.
//
// Verdicts depend only on the bytes, not on how they were split: a prefix of
// a ClientHello is kNeedMore unless the prefix itself is already wrong.
//
// Thread-safety: a pure function.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace hc::proxy::tls {

enum class HelloStatus { kNeedMore, kOk, kNotTls, kError };

struct ClientHello {
  HelloStatus status = HelloStatus::kNeedMore;
  std::string sni;  // lower-cased host_name, "" if none
  std::vector<std::string> alpn;
  std::string error;  // kError/kNotTls: why
};

// Largest handshake message (header included) that is reassembled.
inline constexpr size_t kMaxHandshake = 16 * 1024;

// `buf` = bytes from the first byte of the connection; the handshake message may span several TLS
// records (reassemble up to 16 KiB of handshake; more → kError).
ClientHello ParseClientHello(std::string_view buf);

}  // namespace hc::proxy::tls
