#include "pki/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include <memory>

namespace hc::pki {
namespace {

constexpr size_t kNonce = 12;
constexpr size_t kTag = 16;

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

const unsigned char* U(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}
unsigned char* U(std::string& s) {
  return reinterpret_cast<unsigned char*>(s.data());
}

std::string RawPublic(EVP_PKEY* k) {
  std::string out(32, '\0');
  size_t len = out.size();
  HC_CHECK(EVP_PKEY_get_raw_public_key(k, U(out), &len) == 1 && len == 32,
           "raw public key of a 25519 key");
  return out;
}

std::string RawPrivate(EVP_PKEY* k) {
  std::string out(32, '\0');
  size_t len = out.size();
  HC_CHECK(EVP_PKEY_get_raw_private_key(k, U(out), &len) == 1 && len == 32,
           "raw private key of a 25519 key");
  return out;
}

Pkey Generate(int type) {
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new_id(type, nullptr));
  EVP_PKEY* k = nullptr;
  HC_CHECK(ctx && EVP_PKEY_keygen_init(ctx.get()) == 1 && EVP_PKEY_keygen(ctx.get(), &k) == 1,
           "25519 key generation");
  return Pkey(k);
}

int Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

}  // namespace

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  HC_CHECK(n == 0 || RAND_bytes(U(out), static_cast<int>(n)) == 1, "RAND_bytes failed");
  return out;
}

std::string Base64UrlEncode(std::string_view in) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  auto byte = [&](size_t k) { return static_cast<uint32_t>(static_cast<uint8_t>(in[k])); };
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    for (int s = 18; s >= 0; s -= 6) out += kAlphabet[(v >> s) & 63];
  }
  if (in.size() - i == 1) {
    uint32_t v = byte(i) << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
  } else if (in.size() - i == 2) {
    uint32_t v = byte(i) << 16 | byte(i + 1) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
  }
  return out;
}

Result<std::string> Base64UrlDecode(std::string_view in) {
  if (in.size() % 4 == 1)
    return InvalidArgument("not base64url: " + std::to_string(in.size()) +
                           " characters cannot be a whole number of bytes (was it cut short?)");
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v = Value(c);
    if (v < 0)
      return InvalidArgument(std::string("not base64url: unexpected character '") + c +
                             "' (only A-Z, a-z, 0-9, '-' and '_' are allowed)");
    acc = acc << 6 | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  // Leftover bits must be zero, so every byte string has one encoding.
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
    return InvalidArgument("not base64url: the last character has stray bits");
  return out;
}

std::string HmacSha256(std::string_view key, std::string_view message) {
  std::string out(32, '\0');
  unsigned int len = 0;
  HC_CHECK(HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), U(message), message.size(),
                U(out), &len) != nullptr &&
               len == 32,
           "HMAC-SHA256");
  return out;
}

bool ConstantTimeEqual(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string DeriveKey(std::string_view secret, std::string_view salt, std::string_view info,
                      size_t length) {
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr));
  std::string out(length, '\0');
  size_t len = length;
  // An empty salt is legal in HKDF (it means zeros) but OpenSSL wants a pointer.
  static const unsigned char kZero = 0;
  HC_CHECK(
      ctx && EVP_PKEY_derive_init(ctx.get()) == 1 &&
          EVP_PKEY_CTX_set_hkdf_md(ctx.get(), EVP_sha256()) == 1 &&
          EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), U(secret), static_cast<int>(secret.size())) == 1 &&
          EVP_PKEY_CTX_set1_hkdf_salt(ctx.get(), salt.empty() ? &kZero : U(salt),
                                      static_cast<int>(salt.size())) == 1 &&
          EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), U(info), static_cast<int>(info.size())) == 1 &&
          EVP_PKEY_derive(ctx.get(), U(out), &len) == 1 && len == length,
      "HKDF-SHA256");
  return out;
}

std::string Seal(std::string_view key, std::string_view plaintext, std::string_view aad) {
  HC_CHECK(key.size() == 32, "Seal needs a 32-byte key");
  std::string out = RandomBytes(kNonce);
  out.resize(kNonce + plaintext.size() + kTag);
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  int len = 0, total = 0;
  unsigned char* dst = U(out) + kNonce;
  HC_CHECK(
      ctx && EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, U(key), U(out)) == 1 &&
          EVP_EncryptUpdate(ctx.get(), nullptr, &len, U(aad), static_cast<int>(aad.size())) == 1 &&
          EVP_EncryptUpdate(ctx.get(), dst, &len, U(plaintext),
                            static_cast<int>(plaintext.size())) == 1,
      "AES-256-GCM encrypt");
  total = len;
  HC_CHECK(EVP_EncryptFinal_ex(ctx.get(), dst + total, &len) == 1, "AES-256-GCM final");
  total += len;
  HC_CHECK(static_cast<size_t>(total) == plaintext.size(), "GCM output length");
  HC_CHECK(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTag, dst + total) == 1,
           "AES-256-GCM tag");
  return out;
}

Result<std::string> Open(std::string_view key, std::string_view box, std::string_view aad) {
  HC_CHECK(key.size() == 32, "Open needs a 32-byte key");
  if (box.size() < kNonce + kTag)
    return Corrupt("sealed data is " + std::to_string(box.size()) +
                   " bytes, too short to be a box (at least 28)");
  size_t n = box.size() - kNonce - kTag;
  std::string out(n, '\0');
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  std::string tag(box.substr(kNonce + n));
  HC_CHECK(ctx && EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, U(key),
                                     U(box.substr(0, kNonce))) == 1,
           "AES-256-GCM init");
  if (EVP_DecryptUpdate(ctx.get(), nullptr, &len, U(aad), static_cast<int>(aad.size())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), U(out), &len, U(box.substr(kNonce, n)), static_cast<int>(n)) !=
          1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTag, tag.data()) != 1 ||
      EVP_DecryptFinal_ex(ctx.get(), U(out) + len, &len) != 1)
    return Corrupt(
        "sealed data failed authentication (changed in transit, or sealed with another key)");
  return out;
}

SigningKey NewSigningKey() {
  Pkey k = Generate(EVP_PKEY_ED25519);
  return {RawPrivate(k.get()), RawPublic(k.get())};
}

Result<SigningKey> SigningKeyFromSeed(std::string_view seed) {
  if (seed.size() != 32)
    return InvalidArgument("an Ed25519 seed is 32 bytes, got " + std::to_string(seed.size()));
  Pkey k(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, U(seed), seed.size()));
  if (!k) return InvalidArgument("not a usable Ed25519 seed");
  return SigningKey{std::string(seed), RawPublic(k.get())};
}

std::string Sign(const SigningKey& key, std::string_view message) {
  Pkey k(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, U(key.seed), key.seed.size()));
  HC_CHECK(k != nullptr, "Ed25519 key from seed");
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  std::string sig(64, '\0');
  size_t len = sig.size();
  HC_CHECK(ctx && EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, k.get()) == 1 &&
               EVP_DigestSign(ctx.get(), U(sig), &len, U(message), message.size()) == 1 &&
               len == 64,
           "Ed25519 sign");
  return sig;
}

Status VerifySignature(std::string_view public_key, std::string_view message,
                       std::string_view signature) {
  if (public_key.size() != 32) return InvalidArgument("an Ed25519 public key is 32 bytes");
  Pkey k(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, U(public_key), public_key.size()));
  if (!k) return InvalidArgument("not an Ed25519 public key");
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  HC_CHECK(ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, k.get()) == 1,
           "Ed25519 verify init");
  if (EVP_DigestVerify(ctx.get(), U(signature), signature.size(), U(message), message.size()) != 1)
    return PermissionDenied("the signature does not match");
  return Status::Ok();
}

ExchangeKey NewExchangeKey() {
  Pkey k = Generate(EVP_PKEY_X25519);
  return {RawPrivate(k.get()), RawPublic(k.get())};
}

Result<std::string> Agree(const ExchangeKey& mine, std::string_view their_public_key) {
  if (their_public_key.size() != 32) return InvalidArgument("an X25519 public key is 32 bytes");
  Pkey me(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, U(mine.private_key),
                                       mine.private_key.size()));
  Pkey them(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, U(their_public_key),
                                        their_public_key.size()));
  if (!me || !them) return InvalidArgument("not an X25519 key");
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new(me.get(), nullptr));
  std::string out(32, '\0');
  size_t len = out.size();
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 ||
      EVP_PKEY_derive_set_peer(ctx.get(), them.get()) != 1 ||
      EVP_PKEY_derive(ctx.get(), U(out), &len) != 1 || len != 32)
    return InvalidArgument("X25519 key agreement failed (a degenerate public key?)");
  return out;
}

}  // namespace hc::pki
