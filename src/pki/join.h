// Join tokens and the join exchange (docs/design.md, "Cluster PKI"): how a
// new node gets a certificate, the CA certificate and the CA key from any
// member over the plain-HTTP API without the token's secret or the CA key
// ever crossing the wire in the clear. Pure functions: no etcd, no network.
//
// Token text (one line a hoster copies):
//   hcjoin1.<token id>.<secret, base64url>.<SHA-256 of the CA cert, base64url>
// The secret is the seed of an Ed25519 key; etcd holds only its public key.
//
// The exchange:
//   joiner:  r = MakeJoinRequest(token, node id, addresses, csr, exchange key)
//            POST /v1/cluster/join  r
//   member:  CheckJoinProof(r, public key from etcd), sign the CSR,
//            answer = SealJoinGrant(r, {node cert, CA cert, CA key})
//   joiner:  grant = OpenJoinAnswer(token, r, exchange key, node key, answer)
//            (checks the CA against the token's fingerprint, the node cert
//            against the CA, the key, and the node id)
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/hash.h"
#include "common/status.h"
#include "pki/crypto.h"

namespace hc::pki {

inline constexpr std::string_view kJoinTokenPrefix = "hcjoin1.";

struct JoinToken {
  std::string id;    // 12 lower-case hex digits
  std::string seed;  // 32 bytes: the Ed25519 seed (secret)
  Digest ca_fingerprint{};
};

// A fresh token for the cluster whose CA certificate has `ca_fingerprint`.
JoinToken NewJoinToken(const Digest& ca_fingerprint);
std::string FormatJoinToken(const JoinToken& t);
// InvalidArgument with what is wrong and what to do ("copy the whole line
// `hc cluster join-token` printed").
Result<JoinToken> ParseJoinToken(std::string_view text);
// The raw Ed25519 public key of the token's secret (what etcd stores).
std::string JoinTokenPublicKey(const JoinToken& t);
// Token ids: 12 lower-case hex digits.
bool ValidJoinTokenId(std::string_view id);

struct JoinRequest {
  std::string token_id;
  std::string node_id;
  std::vector<std::string> addresses;  // IP SANs wanted
  std::string csr_pem;
  std::string exchange_public_key;  // raw X25519
  std::string proof;                // raw Ed25519 signature of the fields above
};
std::string ToJson(const JoinRequest& r);
Result<JoinRequest> JoinRequestFromJson(std::string_view json);

JoinRequest MakeJoinRequest(const JoinToken& t, const std::string& node_id,
                            const std::vector<std::string>& addresses, const std::string& csr_pem,
                            const ExchangeKey& exchange);
// PermissionDenied when the proof was not made with the token's secret.
Status CheckJoinProof(const JoinRequest& r, std::string_view token_public_key);

struct JoinGrant {
  std::string node_cert_pem;
  std::string ca_cert_pem;
  std::string ca_key_pem;
};
struct JoinAnswer {
  std::string exchange_public_key;  // raw X25519 (the member's, fresh per answer)
  std::string sealed;               // AES-256-GCM box of the grant
};
std::string ToJson(const JoinAnswer& a);
Result<JoinAnswer> JoinAnswerFromJson(std::string_view json);

// Seals the grant for the requester: key = HKDF(X25519(member, joiner),
// salt = token id, info = both public keys), aad = token id + node id.
Result<JoinAnswer> SealJoinGrant(const JoinRequest& r, const JoinGrant& g);
// Opens and checks an answer (see the overview). `now` 0 = system clock.
Result<JoinGrant> OpenJoinAnswer(const JoinToken& t, const JoinRequest& r,
                                 const ExchangeKey& exchange, const std::string& node_key_pem,
                                 const JoinAnswer& a, int64_t now = 0);

}  // namespace hc::pki
