// The pre-authentication dialogue of IMAP4rev1 (RFC 3501) and POP3 (RFC
// 1939, RFC 2449 CAPA, RFC 5034 AUTH), spoken by the proxy itself so that it
// learns the login name and can pick the backend by its domain, as nginx's
// mail proxy and perdition do. The backend checks the password: the proxy
// replays the login to it and relays its answer.
//
//   LoginSession s(Protocol::kImap, "mail.example.net");
//   send(s.Greeting());
//   for (;;) {
//     Step st = s.Feed(read_some());
//     send(st.to_client);
//     if (st.close) { close(); break; }
//     if (st.route) {
//       // backend = lookup(st.domain); on failure: send(s.Failure("...")), close
//       // for each BackendStep b in st.script: read a line from the backend;
//       //   unless LineMatches(p, b.expect, line): send(s.Failure(...)), close
//       //   write b.send
//       // write st.rest (what the client sent after its login command), then
//       // relay both ways: the backend's answer to the login goes to the client.
//       break;
//     }
//   }
//
// IMAP: CAPABILITY (IMAP4rev1 AUTH=PLAIN LITERAL+ SASL-IR ID), NOOP, ID,
// LOGOUT, LOGIN (atoms, quoted strings, synchronizing `{n}` and
// non-synchronizing `{n+}` literals), AUTHENTICATE PLAIN with or without an
// initial response (`*` cancels). Anything else gets "tag BAD". POP3: CAPA
// (USER, SASL PLAIN), USER + PASS, AUTH PLAIN with or without an initial
// response, QUIT; anything else gets "-ERR". A login name must be
// "user@domain" (the domain a host name); otherwise the client is told so.
// With AUTH PLAIN the login name is the authorization identity if one is
// given, else the authentication identity.
//
// Lines end in CRLF (a bare LF is accepted too). A line, a literal and a
// base64 response may each be at most 8 KiB, a whole IMAP command with its
// literals 24 KiB; beyond that the session says why and closes. After 10
// rejected commands it closes too. Base64 is decoded strictly (RFC 4648:
// padding required, no whitespace, no non-zero pad bits).
//
// The replay script re-encodes what was parsed (quoted strings or
// synchronizing literals, canonical base64), so nothing the client sent
// reaches the backend unchecked before the login; the login keeps the
// client's IMAP tag, so the backend's tagged answer is the client's answer.
//
// Thread-safety: a LoginSession belongs to one connection and one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace hc::proxy::mail {

enum class Protocol { kImap, kPop3 };

inline constexpr size_t kMaxLine = 8 * 1024;      // one command line (CRLF excluded)
inline constexpr size_t kMaxLiteral = 8 * 1024;   // one IMAP literal
inline constexpr size_t kMaxCommand = 24 * 1024;  // an IMAP command with its literals
inline constexpr int kMaxErrors = 10;

struct BackendStep {
  // A line the backend must send first: IMAP greeting "* OK", "+ ..." continuation, POP3 "+OK".
  enum class Expect { kNothing, kGreeting, kContinuation, kOk };
  Expect expect = Expect::kNothing;
  std::string send;  // bytes to send the backend after that line
};

struct Step {
  std::string to_client;  // send this to the client now (may be empty)
  bool close = false;     // then close the connection (LOGOUT/QUIT, too many errors, line too long)
  bool route = false;     // login complete: pick the backend by `domain`, run `script`, then relay
  std::string user;       // "alice@example.com" as given
  std::string domain;     // "example.com", lower-case
  std::vector<BackendStep> script;  // how to replay the login to the backend
  // With route: bytes the client sent after its login command (pipelined
  // commands); send them to the backend after the script.
  std::string rest;
};

class LoginSession {
 public:
  LoginSession(Protocol p, std::string server_name);  // server_name appears in the greeting

  // "* OK [CAPABILITY ...] <server_name> ready\r\n" / "+OK <server_name> ready\r\n".
  std::string Greeting() const;

  // Feed bytes from the client; consumes complete lines (keeps partial ones). Several commands in
  // one call are answered in order in `to_client`. After route or close, do not call again (it
  // aborts).
  Step Feed(std::string_view data);

  // What to tell the client when the backend fails (no such domain / backend down / unexpected
  // backend line): "tag NO [UNAVAILABLE] why" for IMAP with the login's tag, "-ERR why" for POP3.
  std::string Failure(std::string_view why) const;

  // Whether a backend line (with or without its CRLF) is what `e` expects: kGreeting "* OK ..."
  // (IMAP) or "+OK ..." (POP3); kContinuation "+" or "+ ..."; kOk "+OK ..." (POP3) or
  // "<tag> OK ..." (IMAP); kNothing anything.
  static bool LineMatches(Protocol p, BackendStep::Expect e, std::string_view line);

 private:
  enum class State : uint8_t {
    kCommand,       // reading a command line
    kLiteral,       // reading the bytes of an IMAP literal
    kSkipLiteral,   // discarding a non-synchronizing literal of a rejected command
    kAuthResponse,  // reading the client's response to a "+ " continuation
    kDone,          // routed or closed
  };
  struct Arg {
    enum Kind : uint8_t { kAtom, kString, kOpen, kClose } kind;
    std::string text;
  };

  void OnLine(std::string_view line, Step* step);
  void ImapLine(std::string_view line, Step* step);
  void ImapCommand(Step* step);
  void ImapAuthResponse(std::string_view line, Step* step);
  void Pop3Line(std::string_view line, Step* step);
  void Pop3AuthResponse(std::string_view line, Step* step);
  // Parses an IMAP line segment (the first of a command, or one after a
  // literal) into args_. Returns false with the reply sent on a syntax error.
  bool ParseSegment(std::string_view line, bool first, Step* step);
  void Reject(std::string_view response, Step* step);
  void PlainLogin(std::string_view decoded, Step* step);
  bool CheckLogin(std::string_view user, std::string_view pass, Step* step);
  void Close(std::string_view response, Step* step);
  void ResetCommand();

  Protocol protocol_;
  std::string server_name_;
  State state_ = State::kCommand;
  std::string in_;      // received bytes not yet consumed
  size_t scanned_ = 0;  // bytes of in_ known to hold no LF
  int errors_ = 0;
  // The IMAP command being read (it may span literals).
  std::string tag_;
  std::string command_;  // upper-cased
  std::vector<Arg> args_;
  int depth_ = 0;  // open parentheses
  size_t command_bytes_ = 0;
  size_t literal_left_ = 0;
  bool skipping_ = false;  // discarding the rest of a rejected IMAP command
  // POP3 USER given so far.
  std::string pop_user_;
};

}  // namespace hc::proxy::mail
