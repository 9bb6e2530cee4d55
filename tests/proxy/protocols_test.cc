// The parsers of other protocols' first bytes (src/proxy/pg_startup.h,
// mail_login.h, tls_hello.h): every rule, every prefix, byte-at-a-time
// feeding; plus golden files (tests/proxy/golden/): captures of real psql,
// openssl s_client and curl connections (*.hex, see CAPTURES.md) -> parse,
// and IMAP/POP3 transcripts -> steps. HC_UPDATE_GOLDEN=1 rewrites the
// rendered files after a deliberate change.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "golden.h"
#include "proxy/mail_login.h"
#include "proxy/pg_startup.h"
#include "proxy/tls_hello.h"

namespace hc::proxy {
namespace {

std::string FromHex(std::string_view hex) {
  std::string out;
  auto nib = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    if (hex[i] == '\n' || hex[i] == ' ') {
      --i;
      continue;
    }
    out += static_cast<char>(nib(hex[i]) << 4 | nib(hex[i + 1]));
  }
  return out;
}

std::string ReadCapture(const std::string& name) {
  std::ifstream in(std::string(HC_SOURCE_DIR) + "/tests/proxy/golden/" + name);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string hex = ss.str();
  EXPECT_FALSE(hex.empty()) << name;
  return FromHex(hex);
}

std::vector<std::string> Captures(std::string_view prefix) {
  std::vector<std::string> names;
  for (const auto& e :
       std::filesystem::directory_iterator(std::string(HC_SOURCE_DIR) + "/tests/proxy/golden")) {
    std::string n = e.path().filename().string();
    if (n.starts_with(prefix) && n.ends_with(".hex")) names.push_back(n);
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string Escape(std::string_view s) {
  std::string out;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c >= 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else {
      out += ch;
    }
  }
  return out;
}

// ---------------------------------------------------------------- PostgreSQL

namespace pgt {

using pg::Kind;
using pg::ParseStartup;
using pg::Startup;

std::string U32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

// A start-up packet with the given code and body.
std::string Packet(uint32_t code, std::string_view body) {
  return U32(static_cast<uint32_t>(8 + body.size())) + U32(code) + std::string(body);
}

std::string Params(std::initializer_list<std::pair<std::string_view, std::string_view>> kv) {
  std::string body;
  for (auto& [k, v] : kv) {
    body += k;
    body += '\0';
    body += v;
    body += '\0';
  }
  body += '\0';
  return body;
}

std::string ErrorOf(std::string_view buf) {
  Startup s = ParseStartup(buf);
  return s.kind == Kind::kError ? s.error : "<not an error>";
}

TEST(PgStartup, ParsesWhatPsqlSends) {
  // psql "host=127.0.0.1 dbname=shop user=alice sslmode=prefer" (captured).
  std::string buf = ReadCapture("pg_psql_sslmode_prefer.hex");
  Startup s = ParseStartup(buf);
  ASSERT_EQ(s.kind, Kind::kSslRequest);
  EXPECT_EQ(s.length, 8u);
  std::string rest = buf.substr(s.length);  // after answering 'N'
  s = ParseStartup(rest);
  ASSERT_EQ(s.kind, Kind::kStartup) << s.error;
  EXPECT_EQ(s.length, rest.size());
  EXPECT_EQ(s.database, "shop");
  EXPECT_EQ(s.user, "alice");
  EXPECT_EQ(s.application_name, "psql");
}

TEST(PgStartup, EveryPrefixNeedsMoreAndByteAtATimeFindsTheEnd) {
  std::string buf = Packet(pg::kProtocol30, Params({{"user", "bob"}, {"database", "db"}}));
  buf += "Qtrailing";  // a later message
  size_t len = buf.size() - 9;
  for (size_t i = 0; i < len; ++i) {
    EXPECT_EQ(ParseStartup(buf.substr(0, i)).kind, Kind::kNeedMore) << i;
  }
  for (size_t i = len; i <= buf.size(); ++i) {
    Startup s = ParseStartup(buf.substr(0, i));
    ASSERT_EQ(s.kind, Kind::kStartup) << i;
    EXPECT_EQ(s.length, len);
    EXPECT_EQ(s.database, "db");
  }
}

TEST(PgStartup, DatabaseDefaultsToUser) {
  Startup s = ParseStartup(Packet(pg::kProtocol30, Params({{"user", "bob"}})));
  ASSERT_EQ(s.kind, Kind::kStartup);
  EXPECT_EQ(s.database, "bob");
  s = ParseStartup(Packet(pg::kProtocol30, Params({{"database", ""}, {"user", "bob"}})));
  EXPECT_EQ(s.database, "bob");
  EXPECT_EQ(s.application_name, "");
}

TEST(PgStartup, LastValueWinsAndOtherParametersAreIgnored) {
  Startup s = ParseStartup(Packet(pg::kProtocol30, Params({{"database", "a"},
                                                           {"user", "u"},
                                                           {"options", "-c x=y"},
                                                           {"replication", "database"},
                                                           {"_pq_.x", "1"},
                                                           {"application_name", "app"},
                                                           {"database", "b"}})));
  ASSERT_EQ(s.kind, Kind::kStartup) << s.error;
  EXPECT_EQ(s.database, "b");
  EXPECT_EQ(s.application_name, "app");
}

TEST(PgStartup, AcceptsMinorVersionsOfProtocol3) {
  Startup s = ParseStartup(Packet((3 << 16) | 2, Params({{"user", "u"}})));
  EXPECT_EQ(s.kind, Kind::kStartup);
}

TEST(PgStartup, RecognizesSslGssAndCancelRequests) {
  Startup s = ParseStartup(Packet(pg::kGssEncRequestCode, ""));
  EXPECT_EQ(s.kind, Kind::kGssEncRequest);
  EXPECT_EQ(s.length, 8u);
  s = ParseStartup(Packet(pg::kSslRequestCode, "") + "more");
  EXPECT_EQ(s.kind, Kind::kSslRequest);
  EXPECT_EQ(s.length, 8u);
  s = ParseStartup(Packet(pg::kCancelRequestCode, U32(1234) + U32(5678)));
  EXPECT_EQ(s.kind, Kind::kCancel);
  EXPECT_EQ(s.length, 16u);
  std::string partial = Packet(pg::kCancelRequestCode, U32(1234) + U32(5678));
  EXPECT_EQ(ParseStartup(partial.substr(0, 15)).kind, Kind::kNeedMore);
}

TEST(PgStartup, RejectsBadLengthsAsSoonAsTheyAreKnown) {
  EXPECT_EQ(ErrorOf(U32(7)), "invalid length of startup packet");
  EXPECT_EQ(ErrorOf(U32(0)), "invalid length of startup packet");
  EXPECT_EQ(ErrorOf(U32(10001)), "invalid length of startup packet");
  EXPECT_EQ(ErrorOf(U32(0xffffffff)), "invalid length of startup packet");
  EXPECT_EQ(ParseStartup(U32(10000) + U32(pg::kProtocol30)).kind, Kind::kNeedMore);
  EXPECT_EQ(ErrorOf(U32(16) + U32(pg::kSslRequestCode)),
            "invalid length of SSL negotiation request");
  EXPECT_EQ(ErrorOf(U32(9) + U32(pg::kGssEncRequestCode)),
            "invalid length of GSSAPI encryption request");
  EXPECT_EQ(ErrorOf(U32(8) + U32(pg::kCancelRequestCode)),
            "invalid length of cancel request packet");
}

TEST(PgStartup, RejectsOtherProtocolVersions) {
  EXPECT_EQ(ErrorOf(U32(100) + U32(2 << 16)),
            "unsupported frontend protocol 2.0: server supports 3.0 and later 3.x");
  EXPECT_EQ(ErrorOf(U32(100) + U32((4 << 16) | 1)),
            "unsupported frontend protocol 4.1: server supports 3.0 and later 3.x");
  EXPECT_EQ(ErrorOf(U32(100) + U32(1234)),
            "unsupported frontend protocol 0.1234: server supports 3.0 and later 3.x");
}

TEST(PgStartup, RequiresAUserName) {
  const char* kNoUser = "no PostgreSQL user name specified in startup packet";
  EXPECT_EQ(ErrorOf(Packet(pg::kProtocol30, Params({{"database", "d"}}))), kNoUser);
  EXPECT_EQ(ErrorOf(Packet(pg::kProtocol30, Params({{"user", ""}}))), kNoUser);
  EXPECT_EQ(ErrorOf(Packet(pg::kProtocol30, std::string(1, '\0'))), kNoUser);
}

TEST(PgStartup, RejectsMalformedParameterLists) {
  const char* kLayout = "invalid startup packet layout: expected terminator as last byte";
  EXPECT_EQ(ErrorOf(Packet(pg::kProtocol30, "")), kLayout);
  EXPECT_EQ(ErrorOf(Packet(pg::kProtocol30, std::string("user\0bob\0", 9))), kLayout);
  EXPECT_EQ(ErrorOf(Packet(pg::kProtocol30, std::string("user\0bob", 8))), kLayout);
  EXPECT_EQ(ErrorOf(Packet(pg::kProtocol30, std::string("user\0", 5))), kLayout);
  EXPECT_EQ(ErrorOf(Packet(pg::kProtocol30, std::string("user\0bob\0\0\0", 11))), kLayout);
  EXPECT_EQ(ErrorOf(Packet(pg::kProtocol30, std::string("user\0bob\0x\0", 11))), kLayout);
}

TEST(PgStartup, ErrorResponseIsACompleteMessage) {
  std::string e = pg::ErrorResponse("3D000", std::string("no db \"x\"\0!", 11));
  std::string want("E\0\0\0\x26SFATAL\0VFATAL\0C3D000\0Mno db \"x\"!\0\0", 39);
  EXPECT_EQ(e, want);
}

std::string RenderStartup(std::string buf) {
  std::string out;
  for (int i = 0; i < 4 && !buf.empty(); ++i) {
    Startup s = ParseStartup(buf);
    const char* kinds[] = {"need-more",     "SSLRequest", "GSSENCRequest",
                           "CancelRequest", "startup",    "error"};
    out += std::string(kinds[static_cast<int>(s.kind)]);
    if (s.kind == Kind::kStartup) {
      out += " database=" + Escape(s.database) + " user=" + Escape(s.user) +
             " application_name=" + Escape(s.application_name);
    }
    if (s.kind == Kind::kError) out += ": " + s.error;
    if (s.kind == Kind::kNeedMore || s.kind == Kind::kError) break;
    out += " (" + std::to_string(s.length) + " bytes)\n";
    buf.erase(0, s.length);
  }
  if (!out.ends_with("\n")) out += "\n";
  return out;
}

TEST(PgStartup, Golden) {
  std::string got;
  for (const std::string& name : Captures("pg_")) {
    got += "### " + name + "\n" + RenderStartup(ReadCapture(name)) + "\n";
  }
  const std::pair<const char*, std::string> synthetic[] = {
      {"GSSENCRequest, SSLRequest, startup",
       Packet(pg::kGssEncRequestCode, "") + Packet(pg::kSslRequestCode, "") +
           Packet(pg::kProtocol30, Params({{"user", "u"}, {"database", "d"}}))},
      {"cancel", Packet(pg::kCancelRequestCode, U32(42) + U32(7))},
      {"protocol 2", Packet(2 << 16, "user\0u\0\0")},
      {"no user", Packet(pg::kProtocol30, Params({{"database", "d"}}))},
      {"no terminator", Packet(pg::kProtocol30, std::string("user\0u\0", 7))},
      {"too long", U32(20000)},
  };
  for (const auto& [title, bytes] : synthetic) {
    got += std::string("### ") + title + "\n" + RenderStartup(bytes) + "\n";
  }
  ::hc::testing::ExpectGolden("tests/proxy/golden/pg_startup.txt", got);
}

}  // namespace pgt

// ------------------------------------------------------------------------ TLS

namespace tlst {

using tls::ClientHello;
using tls::HelloStatus;
using tls::ParseClientHello;

std::string U16(size_t v) {
  return {static_cast<char>(v >> 8), static_cast<char>(v)};
}

std::string Ext(uint16_t type, std::string_view data) {
  return U16(type) + U16(data.size()) + std::string(data);
}

std::string SniExt(std::string_view host) {
  std::string entry = std::string(1, '\0') + U16(host.size()) + std::string(host);
  return Ext(0, U16(entry.size()) + entry);
}

std::string AlpnExt(std::vector<std::string> names) {
  std::string list;
  for (auto& n : names) list += static_cast<char>(n.size()) + n;
  return Ext(16, U16(list.size()) + list);
}

// A ClientHello handshake message (header included) with these extensions
// (none at all if `exts` is null).
std::string Hello(const std::string* exts, size_t session_id = 32, uint16_t version = 0x0303) {
  std::string body = U16(version) + std::string(32, 'r');
  body += static_cast<char>(session_id);
  body += std::string(session_id, 's');
  body += U16(4) + std::string("\x13\x01\x13\x02", 4);
  body += std::string("\x01\x00", 2);
  if (exts != nullptr) body += U16(exts->size()) + *exts;
  return std::string(1, '\x01') + '\0' + U16(body.size()) + body;
}

// `msg` in handshake records of at most `chunk` bytes each.
std::string Records(std::string_view msg, size_t chunk = 16384, uint16_t version = 0x0301) {
  std::string out;
  for (size_t i = 0; i < msg.size(); i += chunk) {
    std::string_view part = msg.substr(i, chunk);
    out += std::string(1, '\x16') + U16(version) + U16(part.size()) + std::string(part);
  }
  return out;
}

std::string ErrorOf(std::string_view buf) {
  ClientHello h = ParseClientHello(buf);
  return h.status == HelloStatus::kError ? h.error : "<not an error>";
}

TEST(TlsHello, ReadsSniAndAlpnFromOpensslSClient) {
  // openssl s_client -servername Shop.Example.COM -alpn h2,http/1.1 (captured).
  ClientHello h = ParseClientHello(ReadCapture("tls_openssl_sni_alpn.hex"));
  ASSERT_EQ(h.status, HelloStatus::kOk) << h.error;
  EXPECT_EQ(h.sni, "shop.example.com");
  EXPECT_EQ(h.alpn, (std::vector<std::string>{"h2", "http/1.1"}));
}

TEST(TlsHello, ReadsCurlAndTls12AndNoServerName) {
  ClientHello h = ParseClientHello(ReadCapture("tls_curl.hex"));
  ASSERT_EQ(h.status, HelloStatus::kOk) << h.error;
  EXPECT_EQ(h.sni, "www.example.net");
  EXPECT_EQ(h.alpn, (std::vector<std::string>{"h2", "http/1.1"}));
  h = ParseClientHello(ReadCapture("tls_openssl_tls12.hex"));
  ASSERT_EQ(h.status, HelloStatus::kOk) << h.error;
  EXPECT_EQ(h.sni, "blog.example.org");
  EXPECT_TRUE(h.alpn.empty());
  h = ParseClientHello(ReadCapture("tls_openssl_noservername.hex"));
  ASSERT_EQ(h.status, HelloStatus::kOk) << h.error;
  EXPECT_EQ(h.sni, "");
}

TEST(TlsHello, EveryPrefixOfARealHelloNeedsMore) {
  std::string buf = ReadCapture("tls_curl.hex");
  for (size_t i = 0; i < buf.size(); ++i) {
    ClientHello h = ParseClientHello(std::string_view(buf).substr(0, i));
    ASSERT_EQ(h.status, HelloStatus::kNeedMore) << i << ": " << h.error;
  }
}

TEST(TlsHello, ReassemblesAHelloSplitOverManyRecords) {
  std::string exts = SniExt("A.Example") + AlpnExt({"imap"});
  std::string msg = Hello(&exts);
  for (size_t chunk : {1, 2, 3, 5, 100}) {
    std::string buf = Records(msg, chunk, 0x0303);
    for (size_t i = 0; i < buf.size(); ++i) {
      ASSERT_EQ(ParseClientHello(buf.substr(0, i)).status, HelloStatus::kNeedMore) << chunk;
    }
    ClientHello h = ParseClientHello(buf + "\x17\x03\x03");
    ASSERT_EQ(h.status, HelloStatus::kOk) << chunk << ": " << h.error;
    EXPECT_EQ(h.sni, "a.example");
    EXPECT_EQ(h.alpn, std::vector<std::string>{"imap"});
  }
}

TEST(TlsHello, AcceptsHellosWithoutExtensionsAndOldRecordVersions) {
  ClientHello h = ParseClientHello(Records(Hello(nullptr), 16384, 0x0300));
  ASSERT_EQ(h.status, HelloStatus::kOk) << h.error;
  EXPECT_EQ(h.sni, "");
  std::string none;
  EXPECT_EQ(ParseClientHello(Records(Hello(&none, 0))).status, HelloStatus::kOk);
}

TEST(TlsHello, LimitsTheHandshakeTo16KiB) {
  std::string pad = Ext(21, std::string(16400, '\0'));  // padding extension
  std::string msg = Hello(&pad);
  ASSERT_GT(msg.size(), tls::kMaxHandshake);
  // Known from the handshake header, long before the rest arrives.
  EXPECT_EQ(ErrorOf(Records(msg).substr(0, 9)), "ClientHello over 16 KiB");
  std::string fits = Ext(21, std::string(16384 - 200, '\0')) + SniExt("big.test");
  msg = Hello(&fits);
  ASSERT_LE(msg.size(), tls::kMaxHandshake);
  ClientHello h = ParseClientHello(Records(msg, 1000));
  ASSERT_EQ(h.status, HelloStatus::kOk) << h.error;
  EXPECT_EQ(h.sni, "big.test");
}

TEST(TlsHello, SaysWhatIsNotTls) {
  EXPECT_EQ(ParseClientHello("GET / HTTP/1.1\r\n").status, HelloStatus::kNotTls);
  EXPECT_EQ(ParseClientHello("G").status, HelloStatus::kNotTls);
  EXPECT_EQ(ParseClientHello(ReadCapture("tls_plain_http_curl.hex")).status, HelloStatus::kNotTls);
  // An SSLv2-compatible ClientHello (2-byte header, msg type 1).
  EXPECT_EQ(ParseClientHello(std::string("\x80\x2e\x01\x03\x01", 5)).status, HelloStatus::kNotTls);
  EXPECT_EQ(ParseClientHello(std::string("\x16\x02", 2)).status, HelloStatus::kNotTls);
  EXPECT_EQ(ParseClientHello(std::string("\x00", 1)).status, HelloStatus::kNotTls);
  EXPECT_EQ(ParseClientHello("").status, HelloStatus::kNeedMore);
  EXPECT_EQ(ParseClientHello("\x16").status, HelloStatus::kNeedMore);
}

TEST(TlsHello, RejectsBadRecords) {
  std::string exts = SniExt("a.test");
  std::string msg = Hello(&exts);
  EXPECT_EQ(ErrorOf(std::string("\x16\x03\x01\x00\x00", 5)), "bad record length");
  EXPECT_EQ(ErrorOf(std::string("\x16\x03\x01\x40\x01", 5)), "bad record length");
  EXPECT_EQ(ErrorOf(std::string("\x16\x03\x05", 3)), "unknown record version");
  std::string two = Records(msg, 10);
  two[15] = 0x15;  // the second record is an alert
  EXPECT_EQ(ErrorOf(two), "non-handshake record inside the ClientHello");
  std::string server_hello = msg;
  server_hello[0] = 2;
  EXPECT_EQ(ErrorOf(Records(server_hello)), "first handshake message is not a ClientHello");
  EXPECT_EQ(ErrorOf(Records(Hello(&exts, 32, 0x0300))), "unsupported client_version 0x0300");
}

TEST(TlsHello, ValidatesEveryLength) {
  std::string exts = SniExt("a.test");
  EXPECT_EQ(ErrorOf(Records(Hello(&exts, 33))), "bad session_id length");
  std::string msg = Hello(&exts);
  std::string odd = msg;
  odd[4 + 2 + 32 + 1 + 32 + 1] = 3;  // cipher_suites length 3
  EXPECT_EQ(ErrorOf(Records(odd)), "bad cipher_suites length");
  std::string short_ext = exts.substr(0, exts.size() - 1);
  std::string m = Hello(&short_ext);
  EXPECT_EQ(ErrorOf(Records(m)), "bad extension length");
  // Extensions longer than the message says.
  std::string trailing = Hello(&exts);
  trailing[3] = static_cast<char>(trailing[3] - 1);
  trailing.pop_back();
  EXPECT_EQ(ErrorOf(Records(trailing)), "extensions length does not match the ClientHello");
  std::string dup = SniExt("a.test") + SniExt("b.test");
  EXPECT_EQ(ErrorOf(Records(Hello(&dup))), "extension sent twice");
  std::string bad_list = Ext(0, U16(5) + std::string("\0\0\x01x", 4));
  EXPECT_EQ(ErrorOf(Records(Hello(&bad_list))), "bad server_name list length");
  std::string bad_entry = Ext(0, U16(4) + std::string("\0\0\x05x", 4));
  EXPECT_EQ(ErrorOf(Records(Hello(&bad_entry))), "bad server_name entry length");
  std::string empty_alpn = Ext(16, U16(3) + std::string("\x03h2", 3));
  EXPECT_EQ(ErrorOf(Records(Hello(&empty_alpn))), "bad ALPN protocol name length");
  std::string zero_alpn = AlpnExt({"h2", ""});
  EXPECT_EQ(ErrorOf(Records(Hello(&zero_alpn))), "bad ALPN protocol name length");
  std::string no_alpn = Ext(16, U16(0));
  EXPECT_EQ(ErrorOf(Records(Hello(&no_alpn))), "bad ALPN list length");
}

TEST(TlsHello, ChecksTheServerName) {
  for (std::string bad : std::vector<std::string>{"", "a..b", ".a", "a.", "a b",
                                                  std::string("a\0b", 3), "caf\xc3\xa9"}) {
    std::string exts = SniExt(bad);
    EXPECT_EQ(ErrorOf(Records(Hello(&exts))), "invalid host_name in server_name") << bad;
  }
  std::string two = Ext(0, U16(14) + std::string("\0\0\x04"
                                                 "a.bc\0\0\x04"
                                                 "d.ef",
                                                 14));
  EXPECT_EQ(ErrorOf(Records(Hello(&two))), "two host_name entries in server_name");
  std::string other = Ext(0, U16(12) + std::string("\x07\0\x02xy\0\0\x04"
                                                   "a.bc",
                                                   12));
  ClientHello h = ParseClientHello(Records(Hello(&other)));
  ASSERT_EQ(h.status, HelloStatus::kOk) << h.error;
  EXPECT_EQ(h.sni, "a.bc");
  std::string under = SniExt("_Acme-1.Example.COM");
  EXPECT_EQ(ParseClientHello(Records(Hello(&under))).sni, "_acme-1.example.com");
}

std::string RenderHello(std::string_view buf) {
  ClientHello h = ParseClientHello(buf);
  const char* st[] = {"need-more", "ok", "not-tls", "error"};
  std::string out = st[static_cast<int>(h.status)];
  if (h.status == HelloStatus::kOk) {
    out += " sni=" + (h.sni.empty() ? std::string("(none)") : h.sni) + " alpn=";
    for (size_t i = 0; i < h.alpn.size(); ++i) out += (i ? "," : "") + Escape(h.alpn[i]);
    if (h.alpn.empty()) out += "(none)";
  } else {
    out += ": " + h.error;
  }
  return out + "\n";
}

TEST(TlsHello, Golden) {
  std::string got;
  for (const std::string& name : Captures("tls_")) {
    got += "### " + name + "\n" + RenderHello(ReadCapture(name)) + "\n";
  }
  std::string exts = SniExt("split.test") + AlpnExt({"h2"});
  got += "### split into 64-byte records\n" + RenderHello(Records(Hello(&exts), 64)) + "\n";
  got += "### SSLv2\n" + RenderHello(std::string("\x80\x2e\x01\x03\x01", 5)) + "\n";
  ::hc::testing::ExpectGolden("tests/proxy/golden/tls_hello.txt", got);
}

}  // namespace tlst

// ----------------------------------------------------------------- IMAP, POP3

namespace mailt {

using mail::BackendStep;
using mail::LoginSession;
using mail::Protocol;
using mail::Step;
using Expect = BackendStep::Expect;

// Feeds `chunks` in order, collecting the answers, until route or close.
Step FeedAll(LoginSession& s, const std::vector<std::string>& chunks) {
  Step all;
  for (const std::string& c : chunks) {
    Step st = s.Feed(c);
    all.to_client += st.to_client;
    if (st.close || st.route) {
      st.to_client = all.to_client;
      return st;
    }
  }
  return all;
}

Step Imap(const std::vector<std::string>& chunks) {
  LoginSession s(Protocol::kImap, "mx.test");
  return FeedAll(s, chunks);
}

Step Pop3(const std::vector<std::string>& chunks) {
  LoginSession s(Protocol::kPop3, "mx.test");
  return FeedAll(s, chunks);
}

// The same input fed one byte at a time.
// The same input fed one byte at a time; after a route, `rest` gets what
// was not fed yet.
Step ByteAtATime(Protocol p, std::string_view input) {
  LoginSession s(p, "mx.test");
  std::string to_client;
  for (size_t i = 0; i < input.size(); ++i) {
    Step st = s.Feed(input.substr(i, 1));
    to_client += st.to_client;
    if (st.close || st.route) {
      st.to_client = to_client;
      if (st.route) st.rest += input.substr(i + 1);
      return st;
    }
  }
  Step st;
  st.to_client = to_client;
  return st;
}

std::string RenderStep(const Step& st) {
  std::string out = "  to_client: " + Escape(st.to_client) + "\n";
  if (st.close) out += "  close\n";
  if (st.route) {
    out += "  route user=" + Escape(st.user) + " domain=" + st.domain + "\n";
    const char* ex[] = {"nothing", "greeting", "continuation", "ok"};
    for (const BackendStep& b : st.script) {
      out += std::string("  expect ") + ex[static_cast<int>(b.expect)] + ", send " +
             Escape(b.send) + "\n";
    }
    if (!st.rest.empty()) out += "  rest: " + Escape(st.rest) + "\n";
  }
  return out;
}

bool SameStep(const Step& a, const Step& b) {
  return RenderStep(a) == RenderStep(b);
}

TEST(MailLogin, Greetings) {
  EXPECT_EQ(LoginSession(Protocol::kImap, "mx.test").Greeting(),
            "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN LITERAL+ SASL-IR ID] mx.test ready\r\n");
  EXPECT_EQ(LoginSession(Protocol::kPop3, "mx\r\n.test").Greeting(), "+OK mx.test ready\r\n");
}

TEST(MailLogin, ImapAnswersCapabilityNoopIdAndLogout) {
  Step st = Imap({"a1 CAPABILITY\r\na2 noop\r\na3 ID (\"name\" \"mutt\")\r\na4 ID NIL\r\n"});
  EXPECT_EQ(st.to_client,
            "* CAPABILITY IMAP4rev1 AUTH=PLAIN LITERAL+ SASL-IR ID\r\na1 OK CAPABILITY "
            "completed\r\na2 OK NOOP completed\r\n* ID NIL\r\na3 OK ID completed\r\n* ID "
            "NIL\r\na4 OK ID completed\r\n");
  EXPECT_FALSE(st.close || st.route);
  st = Imap({"z LOGOUT\r\n"});
  EXPECT_TRUE(st.close);
  EXPECT_EQ(st.to_client, "* BYE Logging out\r\nz OK LOGOUT completed\r\n");
}

TEST(MailLogin, ImapLoginWithAtomsRoutesByDomain) {
  Step st = Imap({"a LOGIN alice@Example.COM secret\r\n"});
  ASSERT_TRUE(st.route);
  EXPECT_EQ(st.to_client, "");
  EXPECT_EQ(st.user, "alice@Example.COM");
  EXPECT_EQ(st.domain, "example.com");
  ASSERT_EQ(st.script.size(), 1u);
  EXPECT_EQ(st.script[0].expect, Expect::kGreeting);
  EXPECT_EQ(st.script[0].send, "a LOGIN \"alice@Example.COM\" \"secret\"\r\n");
}

TEST(MailLogin, ImapLoginWithQuotedStringsAndEscapes) {
  Step st = Imap({"t1 login \"bob@b.test\" \"p \\\"q\\\" \\\\ r\"\r\n"});
  ASSERT_TRUE(st.route);
  EXPECT_EQ(st.user, "bob@b.test");
  EXPECT_EQ(st.script[0].send, "t1 LOGIN \"bob@b.test\" \"p \\\"q\\\" \\\\ r\"\r\n");
  EXPECT_EQ(Imap({"t1 LOGIN \"bob@b.test\" \"a\\b\"\r\n"}).to_client,
            "t1 BAD Invalid escape in quoted string\r\n");
  EXPECT_EQ(Imap({"t1 LOGIN \"bob@b.test\r\n"}).to_client, "t1 BAD Unterminated quoted string\r\n");
}

TEST(MailLogin, ImapSynchronizingLiteralsGetAContinuation) {
  LoginSession s(Protocol::kImap, "mx.test");
  Step st = s.Feed("a LOGIN {12}\r\n");
  EXPECT_EQ(st.to_client, "+ go ahead\r\n");
  st = s.Feed("carol@c.te");
  EXPECT_EQ(st.to_client, "");
  st = s.Feed("st {4}\r\n");
  EXPECT_EQ(st.to_client, "+ go ahead\r\n");
  st = s.Feed(std::string("p\xc3\xa9\r", 4));
  EXPECT_FALSE(st.route);
  st = s.Feed("\r\nb NOOP\r\n");
  ASSERT_TRUE(st.route);
  EXPECT_EQ(st.user, "carol@c.test");
  EXPECT_EQ(st.rest, "b NOOP\r\n");
  // The 8-bit password goes to the backend as a literal, after its "+".
  ASSERT_EQ(st.script.size(), 2u);
  EXPECT_EQ(st.script[0].send, "a LOGIN \"carol@c.test\" {4}\r\n");
  EXPECT_EQ(st.script[1].expect, Expect::kContinuation);
  EXPECT_EQ(st.script[1].send, std::string("p\xc3\xa9\r\r\n"));
  EXPECT_EQ(s.Failure("no backend for c.test"), "a NO [UNAVAILABLE] no backend for c.test\r\n");
}

TEST(MailLogin, ImapNonSynchronizingLiteralsDoNot) {
  Step st = Imap({"a LOGIN {7+}\r\nd@d.xyz {2+}\r\npw\r\n"});
  ASSERT_TRUE(st.route);
  EXPECT_EQ(st.to_client, "");
  EXPECT_EQ(st.script[0].send, "a LOGIN \"d@d.xyz\" \"pw\"\r\n");
}

TEST(MailLogin, ImapRejectedCommandsSkipTheirNonSynchronizingLiterals) {
  Step st = Imap({"a SELECT {5+}\r\nx\r\ny\r\nb NOOP\r\n"});
  EXPECT_EQ(st.to_client, "a BAD Unexpected literal\r\nb OK NOOP completed\r\n");
  st = Imap({"a SELECT {5}\r\nb NOOP\r\n"});
  EXPECT_EQ(st.to_client, "a BAD Unexpected literal\r\nb OK NOOP completed\r\n");
  // A syntax error after a literal: the rest of the command is skipped.
  st = Imap({"a LOGIN {1+}\r\nx \"unterminated {2+}\r\nzz {3+}\r\nabc\r\nb NOOP\r\n"});
  EXPECT_EQ(st.to_client, "a BAD Unterminated quoted string\r\nb OK NOOP completed\r\n");
}

TEST(MailLogin, ImapAuthenticatePlainWithInitialResponse) {
  // "\0alice@a.test\0pw"
  Step st = Imap({"x AUTHENTICATE PLAIN AGFsaWNlQGEudGVzdABwdw==\r\n"});
  ASSERT_TRUE(st.route);
  EXPECT_EQ(st.user, "alice@a.test");
  ASSERT_EQ(st.script.size(), 2u);
  EXPECT_EQ(st.script[0].expect, Expect::kGreeting);
  EXPECT_EQ(st.script[0].send, "x AUTHENTICATE PLAIN\r\n");
  EXPECT_EQ(st.script[1].expect, Expect::kContinuation);
  EXPECT_EQ(st.script[1].send, "AGFsaWNlQGEudGVzdABwdw==\r\n");
}

TEST(MailLogin, ImapAuthenticatePlainWithContinuationAndAuthzid) {
  LoginSession s(Protocol::kImap, "mx.test");
  Step st = s.Feed("x authenticate plain\r\n");
  EXPECT_EQ(st.to_client, "+ \r\n");
  // "boss@b.test\0admin@a.test\0pw": logs in as the authorization identity.
  st = s.Feed("Ym9zc0BiLnRlc3QAYWRtaW5AYS50ZXN0AHB3\r\n");
  ASSERT_TRUE(st.route);
  EXPECT_EQ(st.user, "boss@b.test");
  EXPECT_EQ(st.domain, "b.test");
}

TEST(MailLogin, ImapAuthenticateCancelBadBase64AndOtherMechanisms) {
  EXPECT_EQ(Imap({"x AUTHENTICATE PLAIN\r\n*\r\n"}).to_client,
            "+ \r\nx BAD AUTHENTICATE cancelled\r\n");
  for (const char* b64 : {"AGFsaWNlQGEudGVzdABwdw=", "AGFsaWNlQGEudGVzdABwdw",
                          " AGFsaWNlQGEudGVzdABwdw==", "AGFsaWNl QGEudGVzdABwdw==",
                          "AGFsaWNlQGEudGVzdABwdx==", "AG=saWNl", "AGFsaWNlQGEudGVzdABwdw==="}) {
    EXPECT_EQ(Imap({"x AUTHENTICATE PLAIN\r\n", std::string(b64) + "\r\n"}).to_client,
              "+ \r\nx BAD Invalid base64 response\r\n")
        << b64;
  }
  EXPECT_EQ(Imap({"x AUTHENTICATE PLAIN AGFsaWNlQGEudGVzdABwdx==\r\n"}).to_client,
            "x BAD Invalid base64 in initial response\r\n");
  EXPECT_EQ(Imap({"x AUTHENTICATE PLAIN =\r\n"}).to_client, "x BAD Malformed PLAIN response\r\n");
  // "alice@a.test\0pw": one NUL only.
  EXPECT_EQ(Imap({"x AUTHENTICATE PLAIN YWxpY2VAYS50ZXN0AHB3\r\n"}).to_client,
            "x BAD Malformed PLAIN response\r\n");
  EXPECT_EQ(Imap({"x AUTHENTICATE CRAM-MD5\r\n"}).to_client,
            "x NO Unsupported authentication mechanism\r\n");
}

TEST(MailLogin, ImapLoginWithoutADomainIsRefused) {
  Step st = Imap({"a LOGIN alice secret\r\n"});
  EXPECT_FALSE(st.route);
  EXPECT_EQ(st.to_client, "a NO [AUTHENTICATIONFAILED] Log in as user@domain\r\n");
  EXPECT_EQ(Imap({"a LOGIN alice@ secret\r\n"}).to_client,
            "a NO [AUTHENTICATIONFAILED] Log in as user@domain\r\n");
  EXPECT_EQ(Imap({"a LOGIN alice@a..b secret\r\n"}).to_client,
            "a NO [AUTHENTICATIONFAILED] Log in as user@domain\r\n");
  EXPECT_EQ(Imap({"a LOGIN {7}\r\n", std::string("a\0@b.cd", 7) + " x\r\n"}).to_client,
            "+ go ahead\r\na NO [AUTHENTICATIONFAILED] Invalid characters in user name or "
            "password\r\n");
  // The local part may hold '@' itself: the domain follows the last one.
  EXPECT_EQ(Imap({"a LOGIN \"x@y\"@z.test p\r\n"}).to_client,
            "a BAD Missing space between arguments\r\n");
  EXPECT_EQ(Imap({"a LOGIN \"x@y@z.test\" p\r\n"}).domain, "z.test");
}

TEST(MailLogin, ImapRejectsEverythingElseAndClosesAfterTenErrors) {
  EXPECT_EQ(Imap({"a SELECT INBOX\r\n"}).to_client,
            "a BAD Command unknown or not allowed before login\r\n");
  EXPECT_EQ(Imap({"a STARTTLS\r\n"}).to_client,
            "a BAD Command unknown or not allowed before login\r\n");
  EXPECT_EQ(Imap({"a LOGIN onlyone\r\n"}).to_client, "a BAD Invalid arguments to LOGIN\r\n");
  EXPECT_EQ(Imap({"a CAPABILITY x\r\n"}).to_client, "a BAD Invalid arguments to CAPABILITY\r\n");
  EXPECT_EQ(Imap({"+x NOOP\r\n"}).to_client, "* BAD Invalid tag or missing command\r\n");
  EXPECT_EQ(Imap({"NOOP\r\n"}).to_client, "* BAD Invalid tag or missing command\r\n");
  EXPECT_EQ(Imap({"a ID (\"x\"\r\n"}).to_client, "a BAD Unbalanced parentheses\r\n");
  EXPECT_EQ(Imap({"\r\n\r\na NOOP\r\n"}).to_client, "a OK NOOP completed\r\n");
  std::string ten;
  for (int i = 0; i < 10; ++i) ten += "a FOO\r\n";
  Step st = Imap({ten + "b NOOP\r\n"});
  EXPECT_TRUE(st.close);
  EXPECT_TRUE(st.to_client.ends_with(
      "a BAD Command unknown or not allowed before login\r\n* BYE Too many invalid commands\r\n"));
  EXPECT_EQ(st.to_client.find("NOOP"), std::string::npos);
}

TEST(MailLogin, ImapLimitsLinesAndLiterals) {
  Step st = Imap({"a NOOP " + std::string(mail::kMaxLine, 'x')});
  EXPECT_TRUE(st.close);
  EXPECT_EQ(st.to_client, "* BYE Line too long\r\n");
  st = Imap({"a NOOP" + std::string(mail::kMaxLine - 6, 'x') + "\r\n"});  // exactly 8 KiB
  EXPECT_FALSE(st.close);
  st = Imap({"a LOGIN {8193}\r\n"});
  EXPECT_TRUE(st.close);
  EXPECT_EQ(st.to_client, "* BYE Literal too big\r\n");
  st = Imap({"a LOGIN {99999999999999999999+}\r\n"});
  EXPECT_TRUE(st.close);
  // A command may not grow without bound through literals.
  std::string many = "a ID (";
  for (int i = 0; i < 8; ++i) many += "{4096+}\r\n" + std::string(4096, 'v') + " ";
  st = Imap({many});
  EXPECT_TRUE(st.close);
  EXPECT_EQ(st.to_client, "* BYE Command too long\r\n");
}

TEST(MailLogin, Pop3UserPass) {
  Step st = Pop3({"CAPA\r\nuser dave@D.test\r\nPASS pass word\r\nSTAT\r\n"});
  ASSERT_TRUE(st.route);
  EXPECT_EQ(st.to_client, "+OK Capability list follows\r\nUSER\r\nSASL PLAIN\r\n.\r\n+OK\r\n");
  EXPECT_EQ(st.user, "dave@D.test");
  EXPECT_EQ(st.domain, "d.test");
  ASSERT_EQ(st.script.size(), 2u);
  EXPECT_EQ(st.script[0].expect, Expect::kGreeting);
  EXPECT_EQ(st.script[0].send, "USER dave@D.test\r\n");
  EXPECT_EQ(st.script[1].expect, Expect::kOk);
  EXPECT_EQ(st.script[1].send, "PASS pass word\r\n");
  EXPECT_EQ(st.rest, "STAT\r\n");
}

TEST(MailLogin, Pop3AuthPlain) {
  Step st = Pop3({"AUTH PLAIN AGFsaWNlQGEudGVzdABwdw==\r\n"});
  ASSERT_TRUE(st.route);
  EXPECT_EQ(st.user, "alice@a.test");
  ASSERT_EQ(st.script.size(), 1u);
  EXPECT_EQ(st.script[0].send, "AUTH PLAIN AGFsaWNlQGEudGVzdABwdw==\r\n");
  LoginSession s(Protocol::kPop3, "mx.test");
  EXPECT_EQ(s.Feed("AUTH plain\r\n").to_client, "+ \r\n");
  st = s.Feed("AGFsaWNlQGEudGVzdABwdw==\r\n");
  ASSERT_TRUE(st.route);
  EXPECT_EQ(s.Failure("backend down"), "-ERR backend down\r\n");
  EXPECT_EQ(Pop3({"AUTH\r\n"}).to_client, "+OK\r\nPLAIN\r\n.\r\n");
  EXPECT_EQ(Pop3({"AUTH PLAIN\r\n*\r\n"}).to_client, "+ \r\n-ERR Authentication cancelled\r\n");
  EXPECT_EQ(Pop3({"AUTH PLAIN\r\nAGFsaWNl\r\n"}).to_client,
            "+ \r\n-ERR Malformed PLAIN response\r\n");
  EXPECT_EQ(Pop3({"AUTH PLAIN !!!!\r\n"}).to_client, "-ERR Invalid base64 in initial response\r\n");
  EXPECT_EQ(Pop3({"AUTH LOGIN\r\n"}).to_client, "-ERR Unsupported authentication mechanism\r\n");
}

TEST(MailLogin, Pop3RejectsAndQuits) {
  EXPECT_EQ(Pop3({"PASS x\r\n"}).to_client, "-ERR USER first\r\n");
  EXPECT_EQ(Pop3({"USER bob\r\n"}).to_client, "-ERR Log in as user@domain\r\n");
  EXPECT_EQ(Pop3({"USER\r\n"}).to_client, "-ERR Missing user name\r\n");
  EXPECT_EQ(Pop3({"USER a@b.c\r\nPASS\r\n"}).to_client, "+OK\r\n-ERR Missing password\r\n");
  EXPECT_EQ(Pop3({"NOOP\r\n"}).to_client, "-ERR Command unknown or not allowed before login\r\n");
  EXPECT_EQ(Pop3({"STLS\r\n"}).to_client, "-ERR Command unknown or not allowed before login\r\n");
  Step st = Pop3({"quit\r\n"});
  EXPECT_TRUE(st.close);
  EXPECT_EQ(st.to_client, "+OK Bye\r\n");
  std::string ten;
  for (int i = 0; i < 10; ++i) ten += "APOP x y\r\n";
  st = Pop3({ten});
  EXPECT_TRUE(st.close);
  EXPECT_TRUE(st.to_client.ends_with("-ERR Too many invalid commands\r\n"));
  st = Pop3({std::string(mail::kMaxLine + 2, 'x')});
  EXPECT_TRUE(st.close);
  EXPECT_EQ(st.to_client, "-ERR Line too long\r\n");
}

TEST(MailLogin, BareLfEndsALineToo) {
  EXPECT_TRUE(Imap({"a LOGIN a@b.c p\n"}).route);
  EXPECT_TRUE(Pop3({"USER a@b.c\nPASS p\n"}).route);
}

TEST(MailLogin, LineMatches) {
  using L = LoginSession;
  EXPECT_TRUE(L::LineMatches(Protocol::kImap, Expect::kGreeting, "* OK Dovecot ready.\r\n"));
  EXPECT_TRUE(L::LineMatches(Protocol::kImap, Expect::kGreeting, "* ok [CAPABILITY IMAP4rev1]"));
  EXPECT_FALSE(L::LineMatches(Protocol::kImap, Expect::kGreeting, "* PREAUTH hi\r\n"));
  EXPECT_FALSE(L::LineMatches(Protocol::kImap, Expect::kGreeting, "* BYE busy\r\n"));
  EXPECT_FALSE(L::LineMatches(Protocol::kImap, Expect::kGreeting, "* OKAY\r\n"));
  EXPECT_TRUE(L::LineMatches(Protocol::kImap, Expect::kContinuation, "+ \r\n"));
  EXPECT_TRUE(L::LineMatches(Protocol::kImap, Expect::kContinuation, "+\r\n"));
  EXPECT_TRUE(L::LineMatches(Protocol::kImap, Expect::kContinuation, "+ Ready for literal"));
  EXPECT_FALSE(L::LineMatches(Protocol::kImap, Expect::kContinuation, "a NO x\r\n"));
  EXPECT_TRUE(L::LineMatches(Protocol::kImap, Expect::kOk, "a1 OK done\r\n"));
  EXPECT_TRUE(L::LineMatches(Protocol::kPop3, Expect::kGreeting, "+OK POP3 ready\r\n"));
  EXPECT_TRUE(L::LineMatches(Protocol::kPop3, Expect::kOk, "+OK\r\n"));
  EXPECT_FALSE(L::LineMatches(Protocol::kPop3, Expect::kOk, "-ERR no\r\n"));
  EXPECT_FALSE(L::LineMatches(Protocol::kPop3, Expect::kContinuation, "+OK\r\n"));
  EXPECT_TRUE(L::LineMatches(Protocol::kPop3, Expect::kNothing, ""));
}

struct Transcript {
  const char* title;
  Protocol protocol;
  std::vector<std::string> chunks;
};

const std::vector<Transcript>& Transcripts() {
  static const std::vector<Transcript> t = {
      {"imap: Thunderbird-like",
       Protocol::kImap,
       {"1 capability\r\n", "2 ID (\"name\" \"Thunderbird\" \"version\" \"115\")\r\n",
        "3 authenticate PLAIN\r\n", "AGFsaWNlQGV4YW1wbGUuY29tAHMzY3JldA==\r\n"}},
      {"imap: mutt-like LOGIN with literal",
       Protocol::kImap,
       {"a0000 CAPABILITY\r\n", "a0001 LOGIN {15}\r\n", "bob@example.org {6}\r\n", "pa ss\"\r\n"}},
      {"imap: SASL-IR and pipelined SELECT",
       Protocol::kImap,
       {"A1 AUTHENTICATE PLAIN AGJvYkBleGFtcGxlLm9yZwBwdw==\r\nA2 SELECT INBOX\r\n"}},
      {"imap: errors then logout",
       Protocol::kImap,
       {"a LOGIN bob pw\r\n", "b STARTTLS\r\n", "c AUTHENTICATE PLAIN\r\n", "*\r\n",
        "d LOGOUT\r\n"}},
      {"imap: too long", Protocol::kImap, {std::string(9000, 'a')}},
      {"pop3: USER/PASS",
       Protocol::kPop3,
       {"CAPA\r\n", "USER carol@Example.Net\r\n", "PASS hunter2\r\n"}},
      {"pop3: AUTH PLAIN with continuation",
       Protocol::kPop3,
       {"AUTH PLAIN\r\n", "AGNhcm9sQGV4YW1wbGUubmV0AGh1bnRlcjI=\r\n"}},
      {"pop3: errors then quit",
       Protocol::kPop3,
       {"USER carol\r\n", "PASS x\r\n", "APOP carol abc\r\n", "QUIT\r\n"}},
  };
  return t;
}

TEST(MailLogin, ByteAtATimeGivesTheSameAnswers) {
  for (const Transcript& t : Transcripts()) {
    LoginSession s(t.protocol, "mx.test");
    Step whole = FeedAll(s, t.chunks);
    std::string all;
    for (const std::string& c : t.chunks) all += c;
    EXPECT_TRUE(SameStep(whole, ByteAtATime(t.protocol, all))) << t.title;
    LoginSession s2(t.protocol, "mx.test");
    EXPECT_TRUE(SameStep(whole, FeedAll(s2, {all}))) << t.title;
  }
}

TEST(MailLogin, Golden) {
  std::string got;
  for (const Transcript& t : Transcripts()) {
    LoginSession s(t.protocol, "mx.test");
    got += std::string("### ") + t.title + "\n< " + Escape(s.Greeting()) + "\n";
    for (const std::string& c : t.chunks) {
      Step st = s.Feed(c);
      got += "> " + (c.size() > 100 ? "(" + std::to_string(c.size()) + " bytes)" : Escape(c)) +
             "\n" + RenderStep(st);
      if (st.route || st.close) {
        if (st.route) got += "  failure: " + Escape(s.Failure("backend unavailable")) + "\n";
        break;
      }
    }
    got += "\n";
  }
  ::hc::testing::ExpectGolden("tests/proxy/golden/mail_login.txt", got);
}

}  // namespace mailt

}  // namespace
}  // namespace hc::proxy
