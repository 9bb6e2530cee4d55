// What a member reads from a joiner (POST /v1/cluster/join), what a joiner
// reads from a member, and the token text a person pastes. Must never
// crash; a parsed request or answer must round-trip exactly; a parsed token
// must format back to what was parsed (modulo surrounding blanks).
#include <stddef.h>
#include <stdint.h>

#include <string_view>

#include "common/status.h"
#include "pki/crypto.h"
#include "pki/join.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  if (auto r = hc::pki::JoinRequestFromJson(in); r.ok()) {
    std::string json = hc::pki::ToJson(*r);
    auto again = hc::pki::JoinRequestFromJson(json);
    HC_CHECK(again.ok() && hc::pki::ToJson(*again) == json, "join request round-trips");
    // Checking a proof of junk must fail cleanly.
    (void)hc::pki::CheckJoinProof(*r, std::string(32, '\x01'));
  }
  if (auto a = hc::pki::JoinAnswerFromJson(in); a.ok()) {
    std::string json = hc::pki::ToJson(*a);
    auto again = hc::pki::JoinAnswerFromJson(json);
    HC_CHECK(again.ok() && hc::pki::ToJson(*again) == json, "join answer round-trips");
  }
  if (auto t = hc::pki::ParseJoinToken(in); t.ok()) {
    auto again = hc::pki::ParseJoinToken(hc::pki::FormatJoinToken(*t));
    HC_CHECK(again.ok() && again->id == t->id && again->seed == t->seed &&
                 again->ca_fingerprint == t->ca_fingerprint,
             "join token round-trips");
  }
  if (auto b = hc::pki::Base64UrlDecode(in); b.ok())
    HC_CHECK(hc::pki::Base64UrlEncode(*b) == in, "base64url has one encoding per byte string");
  return 0;
}
