// The cluster PKI without a cluster: the CA, node certificates and their
// checks, the AEAD box, join tokens and the join exchange, and the files.
// `openssl` (the command) double-checks what we issue where it is installed.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <ctime>
#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "pki/cert.h"
#include "pki/crypto.h"
#include "pki/identity.h"
#include "pki/join.h"

namespace hc::pki {
namespace {

constexpr int64_t kDay = 86400;

struct Issued {
  CaMaterial ca;
  KeyAndCsr node;
  std::string cert;
};

Issued IssueNode(const std::string& id, std::vector<std::string> addrs = {"10.0.0.2"},
                 int64_t now = 0) {
  Issued out;
  auto ca = CreateCa("HybridCluster CA test", 3650, now);
  EXPECT_TRUE(ca.ok()) << ca.status().ToString();
  out.ca = *ca;
  auto k = CreateKeyAndCsr(id);
  EXPECT_TRUE(k.ok()) << k.status().ToString();
  out.node = *k;
  auto c = SignNodeCert(out.ca, out.node.csr_pem,
                        {.node_id = id, .addresses = std::move(addrs), .now = now});
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  out.cert = c.ok() ? *c : "";
  return out;
}

TEST(PkiCertTest, CaIsSelfSignedP256ForTenYears) {
  auto ca = CreateCa("HybridCluster CA abc");
  ASSERT_TRUE(ca.ok()) << ca.status().ToString();
  auto info = InspectCert(ca->cert_pem);
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->is_ca);
  EXPECT_EQ(info->common_name, "HybridCluster CA abc");
  EXPECT_EQ(info->issuer_common_name, "HybridCluster CA abc");
  int64_t years = (info->not_after - time(nullptr)) / (365 * kDay);
  EXPECT_GE(years, 9);
  EXPECT_LE(years, 10);
  EXPECT_TRUE(VerifyCaCert(ca->cert_pem).ok());
  EXPECT_TRUE(CheckKeyMatchesCert(ca->cert_pem, ca->key_pem).ok());
  EXPECT_NE(ca->key_pem.find("BEGIN PRIVATE KEY"), std::string::npos);
}

TEST(PkiCertTest, NodeCertNamesTheNodeAndItsAddresses) {
  Issued n = IssueNode("node2", {"10.0.0.2", "2001:db8::2", "node2.example.net"});
  auto info = InspectCert(n.cert);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->common_name, "node2");
  EXPECT_FALSE(info->is_ca);
  EXPECT_EQ(info->dns_names, (std::vector<std::string>{"node2", "node2.example.net"}));
  EXPECT_EQ(info->ip_addresses, (std::vector<std::string>{"10.0.0.2", "2001:db8::2"}));
  int64_t days = (info->not_after - time(nullptr)) / kDay;
  EXPECT_GE(days, 364);
  EXPECT_LE(days, 365);
  EXPECT_TRUE(VerifyNodeCert(n.ca.cert_pem, n.cert, "node2").ok());
  EXPECT_TRUE(CheckKeyMatchesCert(n.cert, n.node.key_pem).ok());
}

TEST(PkiCertTest, CertForAnotherNodeIsRefused) {
  Issued n = IssueNode("node2");
  Status s = VerifyNodeCert(n.ca.cert_pem, n.cert, "node3");
  EXPECT_EQ(s.code(), Code::kPermissionDenied);
  EXPECT_NE(s.message().find("for node 'node2', not 'node3'"), std::string::npos) << s.message();
}

TEST(PkiCertTest, CertFromAForeignCaIsRefused) {
  Issued n = IssueNode("node2");
  auto other = CreateCa("HybridCluster CA other");
  ASSERT_TRUE(other.ok());
  Status s = VerifyNodeCert(other->cert_pem, n.cert, "node2");
  EXPECT_EQ(s.code(), Code::kPermissionDenied);
  EXPECT_NE(s.message().find("not issued by this cluster's CA"), std::string::npos) << s.message();
}

TEST(PkiCertTest, ExpiredCertIsRefusedWithItsDate) {
  int64_t long_ago = time(nullptr) - 400 * kDay;
  Issued n = IssueNode("node2", {"10.0.0.2"}, long_ago);
  Status s = VerifyNodeCert(n.ca.cert_pem, n.cert, "node2");
  EXPECT_EQ(s.code(), Code::kPermissionDenied);
  EXPECT_NE(s.message().find("expired on"), std::string::npos) << s.message();
  // Valid at the time it was made.
  EXPECT_TRUE(VerifyNodeCert(n.ca.cert_pem, n.cert, "node2", long_ago + kDay).ok());
}

TEST(PkiCertTest, NotYetValidCertIsRefused) {
  Issued n = IssueNode("node2", {"10.0.0.2"}, time(nullptr) + 10 * kDay);
  Status s = VerifyNodeCert(n.ca.cert_pem, n.cert, "node2");
  EXPECT_EQ(s.code(), Code::kPermissionDenied);
}

TEST(PkiCertTest, CaCertIsNotANodeCert) {
  auto ca = CreateCa("HybridCluster CA x");
  ASSERT_TRUE(ca.ok());
  EXPECT_FALSE(VerifyNodeCert(ca->cert_pem, ca->cert_pem, "node1").ok());
}

TEST(PkiCertTest, SignerRefusesBadInput) {
  Issued n = IssueNode("node2");
  auto bad_id = SignNodeCert(n.ca, n.node.csr_pem, {.node_id = "Node_2", .addresses = {}});
  EXPECT_EQ(bad_id.status().code(), Code::kInvalidArgument);
  auto bad_addr = SignNodeCert(n.ca, n.node.csr_pem, {.node_id = "node2", .addresses = {"a b"}});
  EXPECT_EQ(bad_addr.status().code(), Code::kInvalidArgument);
  auto not_csr = SignNodeCert(n.ca, "hello", {.node_id = "node2", .addresses = {}});
  EXPECT_EQ(not_csr.status().code(), Code::kInvalidArgument);
  // A CSR whose body was changed after signing.
  std::string csr = n.node.csr_pem;
  size_t mid = csr.find('\n') + 30;
  csr[mid] = csr[mid] == 'A' ? 'B' : 'A';
  auto forged = SignNodeCert(n.ca, csr, {.node_id = "node2", .addresses = {}});
  EXPECT_FALSE(forged.ok());
  // A CA key that is not the CA's.
  auto other = CreateCa("HybridCluster CA other");
  CaMaterial mixed{n.ca.cert_pem, other->key_pem};
  auto wrong = SignNodeCert(mixed, n.node.csr_pem, {.node_id = "node2", .addresses = {}});
  EXPECT_EQ(wrong.status().code(), Code::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("does not belong"), std::string::npos);
}

TEST(PkiCertTest, RenewalKeepsTheKey) {
  Issued n = IssueNode("node2");
  auto csr = CreateCsr(n.node.key_pem, "node2");
  ASSERT_TRUE(csr.ok());
  auto again = SignNodeCert(n.ca, *csr, {.node_id = "node2", .addresses = {"10.0.0.2"}});
  ASSERT_TRUE(again.ok());
  EXPECT_NE(*again, n.cert);
  EXPECT_TRUE(CheckKeyMatchesCert(*again, n.node.key_pem).ok());
  EXPECT_TRUE(VerifyNodeCert(n.ca.cert_pem, *again, "node2").ok());
}

TEST(PkiCertTest, FingerprintMatchesOpenssl) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "skipped: no openssl";
  char tmpl[] = "/tmp/hc-pki-test-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  Issued n = IssueNode("node2", {"127.0.0.1"});
  ASSERT_TRUE(WriteFileAtomic(dir + "/ca.crt", n.ca.cert_pem, false).ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/node.crt", n.cert, false).ok());
  std::string cmd = "openssl x509 -in " + dir + "/ca.crt -noout -fingerprint -sha256 > " + dir +
                    "/fp && openssl verify -purpose sslserver -CAfile " + dir + "/ca.crt " + dir +
                    "/node.crt >/dev/null && openssl verify -purpose sslclient -CAfile " + dir +
                    "/ca.crt " + dir + "/node.crt >/dev/null";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  auto fp = ReadFileToString(dir + "/fp");
  auto ours = CertFingerprint(n.ca.cert_pem);
  ASSERT_TRUE(fp.ok() && ours.ok());
  EXPECT_NE(fp->find(FingerprintText(*ours)), std::string::npos) << *fp;
  (void)RemoveTree(dir);
}

TEST(PkiCryptoTest, Base64UrlRoundTripsAndRefusesJunk) {
  for (size_t n = 0; n < 40; n++) {
    std::string b = RandomBytes(n);
    auto back = Base64UrlDecode(Base64UrlEncode(b));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, b);
  }
  EXPECT_EQ(Base64UrlEncode("\xfb\xff"), "-_8");
  EXPECT_FALSE(Base64UrlDecode("ab=c").ok());
  EXPECT_FALSE(Base64UrlDecode("a").ok());
  EXPECT_FALSE(Base64UrlDecode("ab+/").ok());
  EXPECT_FALSE(Base64UrlDecode("-_9").ok());  // stray bits
}

TEST(PkiCryptoTest, HmacMatchesRfc4231) {
  // RFC 4231 test case 2.
  EXPECT_EQ(Base64UrlEncode(HmacSha256("Jefe", "what do ya want for nothing?")),
            Base64UrlEncode(std::string(
                "\x5b\xdc\xc1\x46\xbf\x60\x75\x4e\x6a\x04\x24\x26\x08\x95\x75\xc7\x5a\x00\x3f\x08"
                "\x9d\x27\x39\x83\x9d\xec\x58\xb9\x64\xec\x38\x43",
                32)));
  EXPECT_TRUE(ConstantTimeEqual("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEqual("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEqual("abc", "ab"));
}

TEST(PkiCryptoTest, HkdfMatchesRfc5869) {
  // RFC 5869 test case 1.
  std::string ikm(22, '\x0b');
  std::string salt;
  for (char c = 0; c <= 0x0c; c++) salt += c;
  std::string info = "\xf0\xf1\xf2\xf3\xf4\xf5\xf6\xf7\xf8\xf9";
  std::string okm = DeriveKey(ikm, salt, info, 42);
  EXPECT_EQ(ToHex({reinterpret_cast<const uint8_t*>(okm.data()), okm.size()}),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
}

TEST(PkiCryptoTest, SealOpensOnlyUnchangedWithTheRightKeyAndContext) {
  std::string key = DeriveKey("a shared secret", "salt", "hc test");
  std::string box = Seal(key, "the CA key", "ctx");
  EXPECT_EQ(box.size(), 12 + 10 + 16u);
  auto back = Open(key, box, "ctx");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, "the CA key");
  EXPECT_NE(Seal(key, "the CA key", "ctx"), box);  // fresh nonce
  for (size_t i = 0; i < box.size(); i++) {
    std::string t = box;
    t[i] ^= 1;
    EXPECT_EQ(Open(key, t, "ctx").status().code(), Code::kCorrupt) << "byte " << i;
  }
  EXPECT_FALSE(Open(key, box, "other ctx").ok());
  EXPECT_FALSE(Open(DeriveKey("another secret", "salt", "hc test"), box, "ctx").ok());
  EXPECT_FALSE(Open(key, box.substr(0, 20), "ctx").ok());
  EXPECT_TRUE(Open(key, Seal(key, "", ""), "").ok());
}

TEST(PkiCryptoTest, SignaturesAndKeyAgreement) {
  SigningKey k = NewSigningKey();
  auto again = SigningKeyFromSeed(k.seed);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->public_key, k.public_key);
  std::string sig = Sign(k, "message");
  EXPECT_TRUE(VerifySignature(k.public_key, "message", sig).ok());
  EXPECT_EQ(VerifySignature(k.public_key, "messagE", sig).code(), Code::kPermissionDenied);
  EXPECT_EQ(VerifySignature(NewSigningKey().public_key, "message", sig).code(),
            Code::kPermissionDenied);
  ExchangeKey a = NewExchangeKey(), b = NewExchangeKey();
  auto ab = Agree(a, b.public_key), ba = Agree(b, a.public_key);
  ASSERT_TRUE(ab.ok() && ba.ok());
  EXPECT_EQ(*ab, *ba);
  EXPECT_FALSE(Agree(a, std::string(32, '\0')).ok());  // the all-zero point
}

TEST(PkiJoinTokenTest, FormatsAndParses) {
  auto ca = CreateCa("HybridCluster CA t");
  auto fp = CertFingerprint(ca->cert_pem);
  JoinToken t = NewJoinToken(*fp);
  std::string text = FormatJoinToken(t);
  EXPECT_TRUE(text.starts_with("hcjoin1."));
  EXPECT_EQ(text.size(), 8 + 12 + 1 + 43 + 1 + 43u);
  auto back = ParseJoinToken("  " + text + "\n");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->id, t.id);
  EXPECT_EQ(back->seed, t.seed);
  EXPECT_EQ(back->ca_fingerprint, t.ca_fingerprint);
}

TEST(PkiJoinTokenTest, ParseErrorsSayWhatIsWrong) {
  JoinToken t = NewJoinToken(Digest{});
  std::string good = FormatJoinToken(t);
  auto err = [](std::string_view s) {
    auto r = ParseJoinToken(s);
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << s;
    return r.status().message();
  };
  EXPECT_NE(err("").find("empty"), std::string::npos);
  EXPECT_NE(err("hello").find("must start with 'hcjoin1.'"), std::string::npos);
  EXPECT_NE(err(good.substr(0, 40)).find("3 parts"), std::string::npos);
  EXPECT_NE(err(good.substr(0, good.size() - 5)).find("fingerprint is damaged"), std::string::npos);
  EXPECT_NE(err("hcjoin1.XYZ." + good.substr(21)).find("not 12 hex digits"), std::string::npos);
  std::string bad_secret = good;
  bad_secret[25] = '*';
  EXPECT_NE(err(bad_secret).find("secret is damaged"), std::string::npos);
  EXPECT_NE(err(good + ".x").find("5 parts"), std::string::npos);
  EXPECT_NE(err("hello").find("hc cluster join-token"), std::string::npos);
}

struct JoinSetup {
  CaMaterial ca;
  JoinToken token;
  KeyAndCsr key;
  ExchangeKey exchange;
  JoinRequest request;
};

JoinSetup MakeJoin() {
  JoinSetup s;
  s.ca = *CreateCa("HybridCluster CA j");
  s.token = NewJoinToken(*CertFingerprint(s.ca.cert_pem));
  s.key = *CreateKeyAndCsr("node4");
  s.exchange = NewExchangeKey();
  s.request = MakeJoinRequest(s.token, "node4", {"10.0.0.4"}, s.key.csr_pem, s.exchange);
  return s;
}

// What a member does with a request once the proof checked out.
Result<JoinAnswer> Answer(const JoinSetup& s, const JoinRequest& r) {
  HC_ASSIGN_OR_RETURN(
      std::string cert,
      SignNodeCert(s.ca, r.csr_pem, {.node_id = r.node_id, .addresses = r.addresses}));
  return SealJoinGrant(r, {cert, s.ca.cert_pem, s.ca.key_pem});
}

TEST(PkiJoinTest, ExchangeDeliversCertCaAndKey) {
  JoinSetup s = MakeJoin();
  auto wire = JoinRequestFromJson(ToJson(s.request));
  ASSERT_TRUE(wire.ok()) << wire.status().ToString();
  EXPECT_TRUE(CheckJoinProof(*wire, JoinTokenPublicKey(s.token)).ok());
  auto a = Answer(s, *wire);
  ASSERT_TRUE(a.ok());
  auto a_wire = JoinAnswerFromJson(ToJson(*a));
  ASSERT_TRUE(a_wire.ok());
  // Nothing secret in the clear.
  std::string on_wire = ToJson(*wire) + ToJson(*a_wire);
  EXPECT_EQ(on_wire.find(Base64UrlEncode(s.token.seed)), std::string::npos);
  EXPECT_EQ(on_wire.find("PRIVATE KEY"), std::string::npos);
  auto g = OpenJoinAnswer(s.token, s.request, s.exchange, s.key.key_pem, *a_wire);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->ca_key_pem, s.ca.key_pem);
  EXPECT_TRUE(VerifyNodeCert(g->ca_cert_pem, g->node_cert_pem, "node4").ok());
}

TEST(PkiJoinTest, ProofFromAnotherTokenOrChangedRequestIsRefused) {
  JoinSetup s = MakeJoin();
  JoinToken other = NewJoinToken(s.token.ca_fingerprint);
  other.id = s.token.id;  // same id, different secret
  JoinRequest forged = MakeJoinRequest(other, "node4", {"10.0.0.4"}, s.key.csr_pem, s.exchange);
  Status st = CheckJoinProof(forged, JoinTokenPublicKey(s.token));
  EXPECT_EQ(st.code(), Code::kPermissionDenied);
  EXPECT_NE(st.message().find("not signed with join token"), std::string::npos);
  JoinRequest changed = s.request;
  changed.node_id = "node1";
  EXPECT_FALSE(CheckJoinProof(changed, JoinTokenPublicKey(s.token)).ok());
  changed = s.request;
  changed.addresses.push_back("10.9.9.9");
  EXPECT_FALSE(CheckJoinProof(changed, JoinTokenPublicKey(s.token)).ok());
  changed = s.request;
  changed.exchange_public_key = NewExchangeKey().public_key;
  EXPECT_FALSE(CheckJoinProof(changed, JoinTokenPublicKey(s.token)).ok());
}

TEST(PkiJoinTest, TamperedAnswerOrForeignCaIsRefused) {
  JoinSetup s = MakeJoin();
  auto a = Answer(s, s.request);
  ASSERT_TRUE(a.ok());
  JoinAnswer t = *a;
  t.sealed[t.sealed.size() / 2] ^= 1;
  EXPECT_EQ(OpenJoinAnswer(s.token, s.request, s.exchange, s.key.key_pem, t).status().code(),
            Code::kCorrupt);
  // Somebody else's CA (a man in the middle, or a token of another cluster).
  JoinSetup other = MakeJoin();
  JoinRequest r = s.request;
  auto cert = SignNodeCert(other.ca, r.csr_pem, {.node_id = "node4", .addresses = {}});
  auto foreign = SealJoinGrant(r, {*cert, other.ca.cert_pem, other.ca.key_pem});
  auto g = OpenJoinAnswer(s.token, s.request, s.exchange, s.key.key_pem, *foreign);
  EXPECT_EQ(g.status().code(), Code::kPermissionDenied);
  EXPECT_NE(g.status().message().find("fingerprint"), std::string::npos);
  // An answer sealed for someone else's exchange key cannot be opened.
  EXPECT_FALSE(OpenJoinAnswer(s.token, s.request, NewExchangeKey(), s.key.key_pem, *a).ok());
}

TEST(PkiJoinTest, RequestJsonIsStrict) {
  EXPECT_FALSE(JoinRequestFromJson("[]").ok());
  EXPECT_FALSE(JoinRequestFromJson("{}").ok());
  JoinSetup s = MakeJoin();
  auto j = nlohmann::json::parse(ToJson(s.request));
  j["proof"] = "abc";
  EXPECT_FALSE(JoinRequestFromJson(j.dump()).ok());
  j = nlohmann::json::parse(ToJson(s.request));
  j["token_id"] = "../../x";
  EXPECT_FALSE(JoinRequestFromJson(j.dump()).ok());
  j = nlohmann::json::parse(ToJson(s.request));
  j["addresses"] = "10.0.0.1";
  EXPECT_FALSE(JoinRequestFromJson(j.dump()).ok());
}

TEST(PkiDirTest, SavesKeysPrivatelyAndLoadsThemBack) {
  char tmpl[] = "/tmp/hc-pki-test-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  PkiDir d(std::string(tmpl) + "/pki");
  EXPECT_FALSE(d.HasNodeCert());
  Issued n = IssueNode("node2");
  ASSERT_TRUE(d.SaveCa(n.ca).ok());
  ASSERT_TRUE(d.SaveNode(n.cert, n.node.key_pem).ok());
  struct stat st;
  ASSERT_EQ(stat(d.CaKeyPath().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat(d.NodeKeyPath().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat(d.dir().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  auto id = d.LoadIdentity("node2");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(id->cert_pem, n.cert);
  EXPECT_EQ(id->ca_fingerprint, *CertFingerprint(n.ca.cert_pem));
  EXPECT_GT(id->not_after, time(nullptr));
  auto ca = d.LoadCa();
  ASSERT_TRUE(ca.ok());
  EXPECT_EQ(ca->key_pem, n.ca.key_pem);
  // A key that does not belong to the certificate.
  ASSERT_TRUE(d.SaveNode(n.cert, n.ca.key_pem).ok());
  EXPECT_FALSE(d.LoadIdentity("node2").ok());
  ASSERT_TRUE(d.RemoveAll().ok());
  EXPECT_FALSE(d.HasNodeCert());
  (void)RemoveTree(tmpl);
}

}  // namespace
}  // namespace hc::pki
