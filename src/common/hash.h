// SHA-256 (OpenSSL; uses the CPU's SHA extensions where present).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace hc {

using Digest = std::array<uint8_t, 32>;

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(std::span<const uint8_t> data);
  void Update(std::string_view s) {
    Update({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
  }
  Digest Final();

 private:
  void* ctx_;
};

Digest Sha256Of(std::span<const uint8_t> data);
std::string ToHex(std::span<const uint8_t> bytes);
// Parses exactly 64 hex digits; returns false otherwise.
bool FromHex(std::string_view hex, Digest* out);

}  // namespace hc
