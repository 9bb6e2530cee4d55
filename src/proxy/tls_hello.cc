#include "proxy/tls_hello.h"

#include <bitset>
#include <cstdint>
#include <cstdio>

namespace hc::proxy::tls {
namespace {

constexpr uint8_t kHandshakeRecord = 22;
constexpr uint8_t kClientHelloType = 1;
constexpr size_t kRecordHeader = 5;
constexpr size_t kMaxRecord = 16384;  // 2^14, RFC 8446 section 5.1
constexpr uint16_t kExtServerName = 0;
constexpr uint16_t kExtAlpn = 16;

ClientHello Verdict(HelloStatus status, std::string why) {
  ClientHello h;
  h.status = status;
  h.error = std::move(why);
  return h;
}

// Bounds-checked big-endian reads over one length-delimited region; every
// read past the end fails and the reader stays failed.
class Reader {
 public:
  explicit Reader(std::string_view b) : b_(b) {}
  bool U8(size_t* v) { return Int(1, v); }
  bool U16(size_t* v) { return Int(2, v); }
  bool U24(size_t* v) { return Int(3, v); }
  bool Bytes(size_t n, std::string_view* v) {
    if (n > b_.size() - pos_) return false;
    *v = b_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool Skip(size_t n) {
    std::string_view ignored;
    return Bytes(n, &ignored);
  }
  size_t left() const { return b_.size() - pos_; }

 private:
  bool Int(size_t n, size_t* v) {
    if (n > b_.size() - pos_) return false;
    *v = 0;
    for (size_t i = 0; i < n; ++i) *v = (*v << 8) | static_cast<unsigned char>(b_[pos_ + i]);
    pos_ += n;
    return true;
  }
  std::string_view b_;
  size_t pos_ = 0;
};

bool ValidHostName(std::string_view name) {
  if (name.empty() || name.size() > 255 || name.front() == '.' || name.back() == '.') return false;
  char prev = 0;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (!ok || (c == '.' && prev == '.')) return false;
    prev = c;
  }
  return true;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// RFC 6066 section 3: ServerNameList.
bool ParseServerName(std::string_view ext, ClientHello* out, std::string* why) {
  Reader r(ext);
  size_t list_len = 0;
  std::string_view list;
  if (!r.U16(&list_len) || list_len == 0 || list_len != r.left() || !r.Bytes(list_len, &list)) {
    *why = "bad server_name list length";
    return false;
  }
  Reader names(list);
  bool have_host = false;
  while (names.left() > 0) {
    size_t type = 0, len = 0;
    std::string_view name;
    if (!names.U8(&type) || !names.U16(&len) || !names.Bytes(len, &name)) {
      *why = "bad server_name entry length";
      return false;
    }
    if (type != 0) continue;  // only host_name(0) is defined
    if (have_host) {
      *why = "two host_name entries in server_name";
      return false;
    }
    if (!ValidHostName(name)) {
      *why = "invalid host_name in server_name";
      return false;
    }
    have_host = true;
    out->sni = Lower(name);
  }
  return true;
}

// RFC 7301 section 3.1: ProtocolNameList.
bool ParseAlpn(std::string_view ext, ClientHello* out, std::string* why) {
  Reader r(ext);
  size_t list_len = 0;
  std::string_view list;
  if (!r.U16(&list_len) || list_len < 2 || list_len != r.left() || !r.Bytes(list_len, &list)) {
    *why = "bad ALPN list length";
    return false;
  }
  Reader names(list);
  while (names.left() > 0) {
    size_t len = 0;
    std::string_view name;
    if (!names.U8(&len) || len == 0 || !names.Bytes(len, &name)) {
      *why = "bad ALPN protocol name length";
      return false;
    }
    out->alpn.emplace_back(name);
  }
  return true;
}

// The body of a complete ClientHello message (after its 4-byte header).
ClientHello ParseBody(std::string_view body) {
  ClientHello h;
  Reader r(body);
  size_t version = 0, len = 0;
  if (!r.U16(&version) || !r.Skip(32)) return Verdict(HelloStatus::kError, "ClientHello too short");
  if (version < 0x0301 || (version >> 8) != 3) {
    char v[32];
    std::snprintf(v, sizeof v, "0x%04zx", version);
    return Verdict(HelloStatus::kError, std::string("unsupported client_version ") + v);
  }
  if (!r.U8(&len) || len > 32 || !r.Skip(len)) {
    return Verdict(HelloStatus::kError, "bad session_id length");
  }
  if (!r.U16(&len) || len < 2 || len % 2 != 0 || !r.Skip(len)) {
    return Verdict(HelloStatus::kError, "bad cipher_suites length");
  }
  if (!r.U8(&len) || len < 1 || !r.Skip(len)) {
    return Verdict(HelloStatus::kError, "bad compression_methods length");
  }
  h.status = HelloStatus::kOk;
  if (r.left() == 0) return h;  // no extensions (TLS 1.0-1.2)
  std::string_view exts;
  if (!r.U16(&len) || len != r.left() || !r.Bytes(len, &exts)) {
    return Verdict(HelloStatus::kError, "extensions length does not match the ClientHello");
  }
  Reader e(exts);
  std::bitset<65536> seen;
  std::string why;
  while (e.left() > 0) {
    size_t type = 0;
    std::string_view data;
    if (!e.U16(&type) || !e.U16(&len) || !e.Bytes(len, &data)) {
      return Verdict(HelloStatus::kError, "bad extension length");
    }
    if (seen.test(type)) return Verdict(HelloStatus::kError, "extension sent twice");
    seen.set(type);
    if (type == kExtServerName && !ParseServerName(data, &h, &why)) {
      return Verdict(HelloStatus::kError, why);
    }
    if (type == kExtAlpn && !ParseAlpn(data, &h, &why)) return Verdict(HelloStatus::kError, why);
  }
  return h;
}

}  // namespace

ClientHello ParseClientHello(std::string_view buf) {
  if (buf.empty()) return {};
  const auto first = static_cast<unsigned char>(buf[0]);
  if (first != kHandshakeRecord) {
    if (first & 0x80)
      return Verdict(HelloStatus::kNotTls, "SSLv2-style record (SSLv2 ClientHello)");
    if (first >= 0x20 && first < 0x7f) {
      return Verdict(HelloStatus::kNotTls, "plain-text protocol (for example HTTP), not TLS");
    }
    return Verdict(HelloStatus::kNotTls, "not a TLS handshake record");
  }

  // Walk the records, collecting handshake bytes until the ClientHello is
  // complete. The common case (one record) needs no copy.
  std::string_view single;
  std::string joined;
  size_t records = 0;
  size_t pos = 0;
  size_t need = 0;  // the whole handshake message, once its header is known
  for (;;) {
    std::string_view have = records > 1 ? std::string_view(joined) : single;
    if (need == 0 && have.size() >= 4) {
      if (static_cast<unsigned char>(have[0]) != kClientHelloType) {
        return Verdict(HelloStatus::kError, "first handshake message is not a ClientHello");
      }
      size_t body = (size_t{static_cast<unsigned char>(have[1])} << 16) |
                    (size_t{static_cast<unsigned char>(have[2])} << 8) |
                    static_cast<unsigned char>(have[3]);
      if (body + 4 > kMaxHandshake) return Verdict(HelloStatus::kError, "ClientHello over 16 KiB");
      need = body + 4;
    }
    if (need != 0 && have.size() >= need) return ParseBody(have.substr(4, need - 4));
    if (pos > buf.size()) return {};  // the last record was partial

    // The next record header, checked byte by byte as it arrives.
    std::string_view rec = buf.substr(pos);
    if (rec.empty()) return {};
    if (static_cast<unsigned char>(rec[0]) != kHandshakeRecord) {
      return Verdict(HelloStatus::kError, "non-handshake record inside the ClientHello");
    }
    if (rec.size() < 2) return {};
    if (rec[1] != 0x03) {
      return Verdict(records == 0 ? HelloStatus::kNotTls : HelloStatus::kError,
                     "record version is not 3.x");
    }
    if (rec.size() < 3) return {};
    if (static_cast<unsigned char>(rec[2]) > 0x04) {
      return Verdict(HelloStatus::kError, "unknown record version");
    }
    if (rec.size() < kRecordHeader) return {};
    size_t len =
        (size_t{static_cast<unsigned char>(rec[3])} << 8) | static_cast<unsigned char>(rec[4]);
    if (len == 0 || len > kMaxRecord) return Verdict(HelloStatus::kError, "bad record length");
    std::string_view fragment = rec.substr(kRecordHeader, len);  // may be partial
    if (records == 0) {
      single = fragment;
    } else {
      if (records == 1) joined.assign(single);
      joined.append(fragment);
    }
    ++records;
    // A partial record: check what it has (once more round the loop), then
    // ask for more.
    pos = fragment.size() < len ? buf.size() + 1 : pos + kRecordHeader + len;
  }
}

}  // namespace hc::proxy::tls
