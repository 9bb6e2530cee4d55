// The IMAP/POP3 login dialogue (src/proxy/mail_login.h): what an untrusted
// client says before it is routed. Input: one control byte (protocol, split
// seed), then the client's bytes. Invariants:
//  - the answers and the outcome (route with user, domain, script and the
//    bytes after the login; or close) do not depend on how the bytes are
//    split into Feed calls;
//  - every answer is whole CRLF-terminated lines;
//  - a route has a lower-case domain that ends the user name and a script
//    that starts by expecting the greeting.
#include <stddef.h>
#include <stdint.h>

#include <string>
#include <string_view>

#include "common/status.h"
#include "proxy/mail_login.h"

namespace {

using hc::proxy::mail::BackendStep;
using hc::proxy::mail::LoginSession;
using hc::proxy::mail::Protocol;
using hc::proxy::mail::Step;

struct Outcome {
  std::string to_client;
  bool close = false;
  bool route = false;
  std::string user, domain, script, rest;
  std::string failure;
  bool operator==(const Outcome&) const = default;
};

// Feeds `in` in pieces whose sizes come from `seed` (1 = one piece).
Outcome Run(Protocol p, std::string_view in, uint32_t seed) {
  LoginSession s(p, "fuzz.test");
  Outcome o;
  size_t pos = 0;
  while (pos < in.size()) {
    size_t n = in.size() - pos;
    if (seed != 1) {
      seed = seed * 1103515245u + 12345u;
      n = std::min<size_t>(n, 1 + (seed >> 16) % 64);
    }
    std::string piece(in.substr(pos, n));  // a copy, so ASan sees its end
    Step st = s.Feed(piece);
    pos += n;
    o.to_client += st.to_client;
    if (st.route || st.close) {
      o.close = st.close;
      o.route = st.route;
      if (st.route) {
        HC_CHECK(!st.script.empty() && st.script[0].expect == BackendStep::Expect::kGreeting,
                 "script does not start with the greeting");
        HC_CHECK(!st.domain.empty() && st.user.size() > st.domain.size() &&
                     st.user[st.user.size() - st.domain.size() - 1] == '@',
                 "domain does not end the user name");
        for (char c : st.domain) HC_CHECK(!(c >= 'A' && c <= 'Z'), "domain not lower-case");
        o.user = st.user;
        o.domain = st.domain;
        for (const BackendStep& b : st.script) {
          o.script += std::to_string(static_cast<int>(b.expect)) + ":" + b.send + "|";
        }
        o.rest = st.rest + std::string(in.substr(pos));
        o.failure = s.Failure("x");
      }
      break;
    }
  }
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const Protocol p = (data[0] & 1) ? Protocol::kPop3 : Protocol::kImap;
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  Outcome whole = Run(p, in, 1);
  HC_CHECK(whole.to_client.empty() || whole.to_client.ends_with("\r\n"),
           "answer is not whole lines");
  Outcome split = Run(p, in, data[0] | 0x100u);
  HC_CHECK(whole == split, "outcome depends on how the input is split");
  return 0;
}
