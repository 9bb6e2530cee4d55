// Small cryptographic building blocks for the cluster's PKI and the
// node-to-node channel: random bytes, base64url, HMAC-SHA256, HKDF-SHA256,
// AEAD (AES-256-GCM), Ed25519 signatures and X25519 key agreement. OpenSSL
// stays behind crypto.cc; callers see bytes as std::string.
//
//   std::string key = DeriveKey(shared_secret, "salt", "hc example v1");
//   std::string box = Seal(key, plaintext, /*aad=*/"context");
//   HC_ASSIGN_OR_RETURN(std::string back, Open(key, box, "context"));
//
// Thread-safety: every function is reentrant.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace hc::pki {

// n bytes from the kernel's CSPRNG (aborts if it fails: no safe fallback).
std::string RandomBytes(size_t n);

// RFC 4648 §5 alphabet, no padding. Decoding refuses any other character,
// padding and impossible lengths.
std::string Base64UrlEncode(std::string_view bytes);
Result<std::string> Base64UrlDecode(std::string_view text);

// HMAC-SHA256 (32 bytes) and a constant-time comparison for tags.
std::string HmacSha256(std::string_view key, std::string_view message);
bool ConstantTimeEqual(std::string_view a, std::string_view b);

// HKDF-SHA256 (RFC 5869) of `secret`: `length` bytes (default: an AES-256 key).
std::string DeriveKey(std::string_view secret, std::string_view salt, std::string_view info,
                      size_t length = 32);

// AES-256-GCM with a fresh random 96-bit nonce. The box is
// nonce (12) || ciphertext || tag (16). `key` must be 32 bytes (HC_CHECK).
std::string Seal(std::string_view key, std::string_view plaintext, std::string_view aad);
// Corrupt when the box was changed, the key or aad differ, or it is too short.
Result<std::string> Open(std::string_view key, std::string_view box, std::string_view aad);

// Ed25519: a 32-byte private seed and its 32-byte public key.
struct SigningKey {
  std::string seed;        // secret
  std::string public_key;  // raw 32 bytes
};
SigningKey NewSigningKey();
Result<SigningKey> SigningKeyFromSeed(std::string_view seed);
std::string Sign(const SigningKey& key, std::string_view message);  // 64 bytes
// InvalidArgument for a malformed public key, PermissionDenied for a bad signature.
Status VerifySignature(std::string_view public_key, std::string_view message,
                       std::string_view signature);

// X25519: a fresh key pair; Agree derives the 32-byte shared secret.
struct ExchangeKey {
  std::string private_key;  // raw 32 bytes
  std::string public_key;   // raw 32 bytes
};
ExchangeKey NewExchangeKey();
Result<std::string> Agree(const ExchangeKey& mine, std::string_view their_public_key);

}  // namespace hc::pki
