#include "proxy/pg_startup.h"

namespace hc::proxy::pg {
namespace {

// PostgreSQL 18 accepts cancel keys of up to 256 bytes (protocol 3.2).
constexpr size_t kMaxCancelRequest = 12 + 256;

uint32_t ReadU32(std::string_view b, size_t at) {
  return (uint32_t{static_cast<unsigned char>(b[at])} << 24) |
         (uint32_t{static_cast<unsigned char>(b[at + 1])} << 16) |
         (uint32_t{static_cast<unsigned char>(b[at + 2])} << 8) |
         uint32_t{static_cast<unsigned char>(b[at + 3])};
}

Startup Error(std::string message) {
  Startup s;
  s.kind = Kind::kError;
  s.error = std::move(message);
  return s;
}

// The C string at `at` in `body`, as PostgreSQL's strlen over its copy of the
// packet sees it (that copy has a NUL appended, so it stops at the end).
std::string_view CString(std::string_view body, size_t at) {
  size_t nul = body.find('\0', at);
  return body.substr(at, (nul == std::string_view::npos ? body.size() : nul) - at);
}

// Checks the request code and the length that goes with it (both known from
// the first 8 bytes). Empty if fine.
std::string CheckCode(uint32_t len, uint32_t code) {
  switch (code) {
    case kSslRequestCode:
    case kGssEncRequestCode:
      if (len != 8) {
        return code == kSslRequestCode ? "invalid length of SSL negotiation request"
                                       : "invalid length of GSSAPI encryption request";
      }
      return "";
    case kCancelRequestCode:
      if (len < 16 || len > kMaxCancelRequest) return "invalid length of cancel request packet";
      return "";
    default: break;
  }
  if ((code >> 16) != 3) {
    return "unsupported frontend protocol " + std::to_string(code >> 16) + "." +
           std::to_string(code & 0xffff) + ": server supports 3.0 and later 3.x";
  }
  return "";
}

}  // namespace

Startup ParseStartup(std::string_view buf) {
  if (buf.size() < 4) return {};
  const uint32_t len = ReadU32(buf, 0);
  if (len < 8 || len > kMaxStartupPacket) return Error("invalid length of startup packet");
  if (buf.size() < 8) return {};
  const uint32_t code = ReadU32(buf, 4);
  if (std::string why = CheckCode(len, code); !why.empty()) return Error(std::move(why));
  if (buf.size() < len) return {};

  Startup s;
  s.length = len;
  switch (code) {
    case kSslRequestCode: s.kind = Kind::kSslRequest; return s;
    case kGssEncRequestCode: s.kind = Kind::kGssEncRequest; return s;
    case kCancelRequestCode: s.kind = Kind::kCancel; return s;
    default: break;
  }

  // The same walk as PostgreSQL's, so that both agree on every packet.
  std::string_view body = buf.substr(8, len - 8);
  size_t off = 0;
  bool have_user = false;
  bool have_database = false;
  while (off < body.size()) {
    std::string_view name = CString(body, off);
    if (name.empty()) break;
    size_t value_off = off + name.size() + 1;
    if (value_off >= body.size()) break;
    std::string_view value = CString(body, value_off);
    off = value_off + value.size() + 1;
    if (name == "user") {
      s.user = value;
      have_user = true;
    } else if (name == "database") {
      s.database = value;
      have_database = true;
    } else if (name == "application_name") {
      s.application_name = value;
    }
  }
  if (body.empty() || off != body.size() - 1) {
    return Error("invalid startup packet layout: expected terminator as last byte");
  }
  if (!have_user || s.user.empty()) {
    return Error("no PostgreSQL user name specified in startup packet");
  }
  if (!have_database || s.database.empty()) s.database = s.user;
  s.kind = Kind::kStartup;
  return s;
}

std::string ErrorResponse(std::string_view sqlstate, std::string_view message) {
  std::string fields;
  auto add = [&fields](char type, std::string_view v) {
    fields += type;
    for (char c : v) {
      if (c != '\0') fields += c;
    }
    fields += '\0';
  };
  add('S', "FATAL");
  add('V', "FATAL");
  add('C', sqlstate);
  add('M', message);
  fields += '\0';
  const uint32_t len = static_cast<uint32_t>(fields.size() + 4);
  std::string out;
  out.reserve(1 + len);
  out += 'E';
  out += static_cast<char>(len >> 24);
  out += static_cast<char>(len >> 16);
  out += static_cast<char>(len >> 8);
  out += static_cast<char>(len);
  out += fields;
  return out;
}

}  // namespace hc::proxy::pg
