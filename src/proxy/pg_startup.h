// The first message(s) a PostgreSQL client sends (protocol 3, "Start-up" in
// the PostgreSQL documentation's "Message Flow"), parsed so that the proxy
// can route a connection by its database name without speaking the rest of
// the protocol.
//
// How a proxy uses it, with `buf` holding what the client sent so far:
//
//   Startup s = ParseStartup(buf);
//   switch (s.kind) {
//     case Kind::kNeedMore: /* read more (a startup packet is <= 10000 bytes) */ break;
//     case Kind::kSslRequest:     // no TLS here: answer the single byte 'N';
//     case Kind::kGssEncRequest:  // the client then goes on in plain text.
//       send("N"); buf.erase(0, s.length); /* parse again */ break;
//     case Kind::kCancel: /* bytes 8..16 are the backend's pid and key */ break;
//     case Kind::kStartup:
//       /* pick the backend by s.database, connect, and replay buf[0, s.length)
//          unchanged: the backend does authentication itself */ break;
//     case Kind::kError:
//       send(ErrorResponse("08P01", s.error)); /* then close */ break;
//   }
//
// The parser is stateless: it does not know whether an SSLRequest was
// already answered. libpq sends GSSENCRequest before SSLRequest and at most
// one of each; a proxy that wants PostgreSQL's exact behaviour rejects a
// repeated request. Bytes after `length` belong to later messages.
//
// Limits and errors follow the PostgreSQL server (ProcessStartupPacket in
// src/backend/tcop/backend_startup.c): a packet of fewer than 8 or more than
// 10000 bytes, an unknown protocol, a body not ending in the terminator, or
// no user name is an error; the error text is PostgreSQL's. Errors that the
// first 4 or 8 bytes already show are reported before the rest arrives, so
// a client cannot hold a connection by announcing a large packet of junk.
// Values are not truncated to NAMEDATALEN (63 bytes) as the server does.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace hc::proxy::pg {

enum class Kind { kNeedMore, kSslRequest, kGssEncRequest, kCancel, kStartup, kError };

struct Startup {
  Kind kind = Kind::kNeedMore;
  size_t length = 0;     // bytes of `buf` this message occupies (when not kNeedMore/kError)
  std::string database;  // kStartup: "database" parameter, defaults to "user" as PostgreSQL does
  std::string user;      // kStartup
  std::string application_name;  // kStartup, may be empty
  std::string error;             // kError: a message fit to send the client (what is wrong)
};

// The request codes in the second int32 of a start-up packet.
inline constexpr uint32_t kSslRequestCode = 80877103;
inline constexpr uint32_t kGssEncRequestCode = 80877104;
inline constexpr uint32_t kCancelRequestCode = 80877102;
inline constexpr uint32_t kProtocol30 = 196608;  // 3 << 16
// PostgreSQL's MAX_STARTUP_PACKET_LENGTH.
inline constexpr size_t kMaxStartupPacket = 10000;

// `buf` = the bytes the client sent so far (from the first byte, or from just
// after an SSLRequest/GSSENCRequest that was answered 'N').
//
// kStartup for protocol 3.x (a minor version above 0 is accepted: the backend
// answers it with NegotiateProtocolVersion). Parameters are NUL-terminated
// name/value pairs ending with an empty name; a name given twice takes its
// last value, as in PostgreSQL. "options", "replication", "_pq_.*" and other
// parameters are not interpreted. A CancelRequest is 16 bytes (up to 268
// with the longer keys of protocol 3.2); SSLRequest and GSSENCRequest are 8.
Startup ParseStartup(std::string_view buf);

// A complete ErrorResponse message ('E', severity FATAL, the SQLSTATE code, the message) to send
// before closing. NUL bytes in the arguments are dropped. Codes a proxy may use: "08P01"
// protocol_violation (what PostgreSQL sends for a bad start-up packet), "28000" no user name,
// "3D000" no such database, "57P03" cannot connect now.
std::string ErrorResponse(std::string_view sqlstate, std::string_view message);

}  // namespace hc::proxy::pg
