#include "pki/join.h"

#include <nlohmann/json.hpp>

#include "pki/cert.h"

namespace hc::pki {
namespace {

using json = nlohmann::json;

constexpr size_t kMaxPem = 16 * 1024;

const char* kTokenHelp =
    " (copy the whole line `hc cluster join-token` printed on a member, e.g. "
    "hcjoin1.0a1b2c3d4e5f.<secret>.<fingerprint>)";

// Everything the proof covers, one field per line; PEM and addresses cannot
// contain the separators they are joined with.
std::string ProofMessage(const JoinRequest& r) {
  std::string addrs;
  for (const auto& a : r.addresses) addrs += (addrs.empty() ? "" : ",") + a;
  return "hcjoin1 request\n" + r.token_id + "\n" + r.node_id + "\n" + addrs + "\n" +
         Base64UrlEncode(r.exchange_public_key) + "\n" + r.csr_pem;
}

std::string SealAad(const JoinRequest& r) {
  return "hcjoin1 answer\n" + r.token_id + "\n" + r.node_id;
}

std::string SealKey(const std::string& shared, const JoinRequest& r,
                    const std::string& member_public) {
  return DeriveKey(shared, r.token_id, "hcjoin1 seal\n" + r.exchange_public_key + member_public);
}

Status Field(const json& j, const char* key, size_t max, std::string* out) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string())
    return InvalidArgument(std::string("missing string field '") + key + "'");
  if (it->get_ref<const std::string&>().size() > max)
    return InvalidArgument(std::string("field '") + key + "' is too long");
  *out = it->get<std::string>();
  return Status::Ok();
}

Status Bytes(const json& j, const char* key, size_t size, std::string* out) {
  std::string text;
  HC_RETURN_IF_ERROR(Field(j, key, 200, &text));
  auto decoded = Base64UrlDecode(text);
  if (!decoded.ok()) return decoded.status().Annotate(key);
  *out = std::move(*decoded);
  if (size && out->size() != size)
    return InvalidArgument(std::string("field '") + key + "' must decode to " +
                           std::to_string(size) + " bytes");
  return Status::Ok();
}

}  // namespace

bool ValidJoinTokenId(std::string_view id) {
  if (id.size() != 12) return false;
  for (char c : id)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

JoinToken NewJoinToken(const Digest& ca_fingerprint) {
  JoinToken t;
  std::string raw = RandomBytes(6);
  t.id = ToHex({reinterpret_cast<const uint8_t*>(raw.data()), raw.size()});
  t.seed = NewSigningKey().seed;
  t.ca_fingerprint = ca_fingerprint;
  return t;
}

std::string FormatJoinToken(const JoinToken& t) {
  return std::string(kJoinTokenPrefix) + t.id + "." + Base64UrlEncode(t.seed) + "." +
         Base64UrlEncode(std::string_view(reinterpret_cast<const char*>(t.ca_fingerprint.data()),
                                          t.ca_fingerprint.size()));
}

Result<JoinToken> ParseJoinToken(std::string_view text) {
  while (!text.empty() &&
         (text.back() == '\n' || text.back() == '\r' || text.back() == ' ' || text.back() == '\t'))
    text.remove_suffix(1);
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  if (text.empty()) return InvalidArgument(std::string("the join token is empty") + kTokenHelp);
  if (!text.starts_with(kJoinTokenPrefix))
    return InvalidArgument(std::string("this is not a join token: it must start with 'hcjoin1.'") +
                           kTokenHelp);
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t dot = text.find('.', start);
    parts.push_back(text.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (parts.size() != 4)
    return InvalidArgument("the join token has " + std::to_string(parts.size()) +
                           " parts separated by '.', expected 4 (was it cut short?)" + kTokenHelp);
  JoinToken t;
  t.id = std::string(parts[1]);
  if (!ValidJoinTokenId(t.id))
    return InvalidArgument("the join token's id '" + t.id.substr(0, 20) + "' is not 12 hex digits" +
                           kTokenHelp);
  auto seed = Base64UrlDecode(parts[2]);
  if (!seed.ok() || seed->size() != 32)
    return InvalidArgument("the join token's secret is damaged (expected 43 base64url characters)" +
                           std::string(kTokenHelp));
  t.seed = std::move(*seed);
  auto fp = Base64UrlDecode(parts[3]);
  if (!fp.ok() || fp->size() != 32)
    return InvalidArgument(
        "the join token's CA fingerprint is damaged (expected 43 base64url characters)" +
        std::string(kTokenHelp));
  std::copy(fp->begin(), fp->end(), t.ca_fingerprint.begin());
  return t;
}

std::string JoinTokenPublicKey(const JoinToken& t) {
  auto k = SigningKeyFromSeed(t.seed);
  HC_CHECK(k.ok(), "a parsed token has a 32-byte seed");
  return k->public_key;
}

std::string ToJson(const JoinRequest& r) {
  return json{{"token_id", r.token_id},
              {"node_id", r.node_id},
              {"addresses", r.addresses},
              {"csr", r.csr_pem},
              {"exchange_public_key", Base64UrlEncode(r.exchange_public_key)},
              {"proof", Base64UrlEncode(r.proof)}}
      .dump();
}

Result<JoinRequest> JoinRequestFromJson(std::string_view text) {
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return InvalidArgument("the join request must be a JSON object");
  JoinRequest r;
  HC_RETURN_IF_ERROR(Field(j, "token_id", 64, &r.token_id));
  if (!ValidJoinTokenId(r.token_id))
    return InvalidArgument("token_id must be 12 hex digits (the second part of the token)");
  HC_RETURN_IF_ERROR(Field(j, "node_id", 64, &r.node_id));
  HC_RETURN_IF_ERROR(Field(j, "csr", kMaxPem, &r.csr_pem));
  auto a = j.find("addresses");
  if (a == j.end() || !a->is_array() || a->size() > 16)
    return InvalidArgument("addresses must be a list of at most 16 IP addresses");
  for (const auto& e : *a) {
    if (!e.is_string() || e.get_ref<const std::string&>().size() > 64)
      return InvalidArgument("addresses must be a list of IP addresses as text");
    r.addresses.push_back(e.get<std::string>());
  }
  HC_RETURN_IF_ERROR(Bytes(j, "exchange_public_key", 32, &r.exchange_public_key));
  HC_RETURN_IF_ERROR(Bytes(j, "proof", 64, &r.proof));
  return r;
}

JoinRequest MakeJoinRequest(const JoinToken& t, const std::string& node_id,
                            const std::vector<std::string>& addresses, const std::string& csr_pem,
                            const ExchangeKey& exchange) {
  JoinRequest r{t.id, node_id, addresses, csr_pem, exchange.public_key, ""};
  auto key = SigningKeyFromSeed(t.seed);
  HC_CHECK(key.ok(), "a parsed token has a 32-byte seed");
  r.proof = Sign(*key, ProofMessage(r));
  return r;
}

Status CheckJoinProof(const JoinRequest& r, std::string_view token_public_key) {
  Status s = VerifySignature(token_public_key, ProofMessage(r), r.proof);
  if (!s.ok())
    return PermissionDenied("the join request was not signed with join token " + r.token_id +
                            "'s secret (a damaged or different token?)");
  return Status::Ok();
}

std::string ToJson(const JoinAnswer& a) {
  return json{{"exchange_public_key", Base64UrlEncode(a.exchange_public_key)},
              {"sealed", Base64UrlEncode(a.sealed)}}
      .dump();
}

Result<JoinAnswer> JoinAnswerFromJson(std::string_view text) {
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return InvalidArgument("the join answer is not a JSON object");
  JoinAnswer a;
  HC_RETURN_IF_ERROR(Bytes(j, "exchange_public_key", 32, &a.exchange_public_key));
  std::string sealed;
  HC_RETURN_IF_ERROR(Field(j, "sealed", 4 * kMaxPem, &sealed));
  HC_ASSIGN_OR_RETURN(a.sealed, Base64UrlDecode(sealed));
  return a;
}

Result<JoinAnswer> SealJoinGrant(const JoinRequest& r, const JoinGrant& g) {
  ExchangeKey mine = NewExchangeKey();
  HC_ASSIGN_OR_RETURN(std::string shared, Agree(mine, r.exchange_public_key));
  std::string plain =
      json{{"node_cert", g.node_cert_pem}, {"ca_cert", g.ca_cert_pem}, {"ca_key", g.ca_key_pem}}
          .dump();
  return JoinAnswer{mine.public_key, Seal(SealKey(shared, r, mine.public_key), plain, SealAad(r))};
}

Result<JoinGrant> OpenJoinAnswer(const JoinToken& t, const JoinRequest& r,
                                 const ExchangeKey& exchange, const std::string& node_key_pem,
                                 const JoinAnswer& a, int64_t now) {
  HC_ASSIGN_OR_RETURN(std::string shared, Agree(exchange, a.exchange_public_key));
  auto plain = Open(SealKey(shared, r, a.exchange_public_key), a.sealed, SealAad(r));
  if (!plain.ok()) return plain.status().Annotate("the member's join answer");
  json j = json::parse(*plain, nullptr, false);
  JoinGrant g;
  if (!j.is_object() || !Field(j, "node_cert", kMaxPem, &g.node_cert_pem).ok() ||
      !Field(j, "ca_cert", kMaxPem, &g.ca_cert_pem).ok() ||
      !Field(j, "ca_key", kMaxPem, &g.ca_key_pem).ok())
    return Corrupt("the member's join answer lacks node_cert, ca_cert or ca_key");
  HC_ASSIGN_OR_RETURN(Digest fp, CertFingerprint(g.ca_cert_pem));
  if (fp != t.ca_fingerprint)
    return PermissionDenied(
        "the member answered with a CA certificate whose fingerprint is not the one in the join "
        "token (" +
        FingerprintText(fp) +
        "); the token belongs to another cluster, or something is in the middle");
  HC_RETURN_IF_ERROR(VerifyCaCert(g.ca_cert_pem, now));
  HC_RETURN_IF_ERROR(
      CheckKeyMatchesCert(g.ca_cert_pem, g.ca_key_pem).Annotate("the CA key from the member"));
  HC_RETURN_IF_ERROR(VerifyNodeCert(g.ca_cert_pem, g.node_cert_pem, r.node_id, now));
  HC_RETURN_IF_ERROR(CheckKeyMatchesCert(g.node_cert_pem, node_key_pem)
                         .Annotate("the node certificate from the member"));
  return g;
}

}  // namespace hc::pki
