#include "proxy/mail_login.h"

#include <algorithm>
#include <array>

#include "common/status.h"

namespace hc::proxy::mail {
namespace {

constexpr std::string_view kImapCapabilities = "IMAP4rev1 AUTH=PLAIN LITERAL+ SASL-IR ID";
constexpr std::string_view kBase64Alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<int8_t, 256> MakeBase64Table() {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (size_t i = 0; i < kBase64Alphabet.size(); ++i) {
    t[static_cast<unsigned char>(kBase64Alphabet[i])] = static_cast<int8_t>(i);
  }
  return t;
}
constexpr std::array<int8_t, 256> kBase64Value = MakeBase64Table();

// RFC 4648 section 4, strictly: length a multiple of 4, padding only at the
// end, pad bits zero (so every input has one canonical form).
bool DecodeBase64(std::string_view in, std::string* out) {
  out->clear();
  if (in.size() % 4 != 0) return false;
  out->reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    const bool last = i + 4 == in.size();
    int pad = 0;
    if (last && in[i + 3] == '=') pad = in[i + 2] == '=' ? 2 : 1;
    uint32_t v = 0;
    for (size_t j = 0; j < 4; ++j) {
      int d = j >= 4 - static_cast<size_t>(pad)
                  ? 0
                  : kBase64Value[static_cast<unsigned char>(in[i + j])];
      if (d < 0) return false;
      v = (v << 6) | static_cast<uint32_t>(d);
    }
    if ((pad == 2 && (v & 0xffff) != 0) || (pad == 1 && (v & 0xff) != 0)) return false;
    out->push_back(static_cast<char>(v >> 16));
    if (pad < 2) out->push_back(static_cast<char>(v >> 8));
    if (pad < 1) out->push_back(static_cast<char>(v));
  }
  return true;
}

std::string EncodeBase64(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << 16;
    if (i + 1 < in.size()) v |= static_cast<uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8;
    if (i + 2 < in.size()) v |= static_cast<unsigned char>(in[i + 2]);
    out += kBase64Alphabet[(v >> 18) & 63];
    out += kBase64Alphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? kBase64Alphabet[(v >> 6) & 63] : '=';
    out += i + 2 < in.size() ? kBase64Alphabet[v & 63] : '=';
  }
  return out;
}

char Upper(char c) {
  return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
}

std::string UpperCase(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = Upper(c);
  return out;
}

bool EqualsUpper(std::string_view s, std::string_view upper) {
  if (s.size() != upper.size()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (Upper(s[i]) != upper[i]) return false;
  }
  return true;
}

// RFC 3501 ASTRING-CHAR (ATOM-CHAR or "]"), 7-bit only.
bool IsAstringChar(char ch) {
  auto c = static_cast<unsigned char>(ch);
  if (c <= 0x20 || c >= 0x7f) return false;
  return c != '(' && c != ')' && c != '{' && c != '%' && c != '*' && c != '"' && c != '\\';
}

// A host name: dot-separated labels of letters, digits, '-' and '_'.
bool ValidDomain(std::string_view d) {
  if (d.empty() || d.size() > 253) return false;
  size_t label = 0;
  for (char c : d) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    if (!ok || ++label > 63) return false;
  }
  return label > 0;
}

// A string the backend can take as an IMAP quoted string.
bool Quotable(std::string_view s) {
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == 0 || c == '\r' || c == '\n' || c >= 0x80) return false;
  }
  return true;
}

std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
  return out;
}

// Text for a response line: no controls.
std::string Clean(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x20 && c != 0x7f) out += c;
  }
  return out;
}

// If `line` ends with an IMAP literal marker "{n}" or "{n+}": its start, n
// (saturated above kMaxLiteral) and whether it is synchronizing.
bool TrailingLiteral(std::string_view line, size_t* start, size_t* n, bool* sync) {
  if (line.empty() || line.back() != '}') return false;
  size_t open = line.rfind('{');
  if (open == std::string_view::npos) return false;
  std::string_view inner = line.substr(open + 1, line.size() - open - 2);
  *sync = true;
  if (!inner.empty() && inner.back() == '+') {
    *sync = false;
    inner.remove_suffix(1);
  }
  if (inner.empty()) return false;
  size_t v = 0;
  for (char c : inner) {
    if (c < '0' || c > '9') return false;
    v = std::min(v * 10 + static_cast<size_t>(c - '0'), kMaxLiteral + 1);
  }
  *start = open;
  *n = v;
  return true;
}

}  // namespace

LoginSession::LoginSession(Protocol p, std::string server_name)
    : protocol_(p), server_name_(Clean(server_name)) {}

std::string LoginSession::Greeting() const {
  if (protocol_ == Protocol::kImap) {
    return "* OK [CAPABILITY " + std::string(kImapCapabilities) + "] " + server_name_ +
           " ready\r\n";
  }
  return "+OK " + server_name_ + " ready\r\n";
}

std::string LoginSession::Failure(std::string_view why) const {
  if (protocol_ == Protocol::kImap) {
    return (tag_.empty() ? std::string("*") : tag_) + " NO [UNAVAILABLE] " + Clean(why) + "\r\n";
  }
  return "-ERR " + Clean(why) + "\r\n";
}

bool LoginSession::LineMatches(Protocol p, BackendStep::Expect e, std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  auto word_is = [](std::string_view s, size_t at, std::string_view upper) {
    return s.size() >= at + upper.size() && EqualsUpper(s.substr(at, upper.size()), upper) &&
           (s.size() == at + upper.size() || s[at + upper.size()] == ' ');
  };
  switch (e) {
    case BackendStep::Expect::kNothing: return true;
    case BackendStep::Expect::kContinuation:
      return !line.empty() && line[0] == '+' && (line.size() == 1 || line[1] == ' ');
    case BackendStep::Expect::kGreeting:
      if (p == Protocol::kPop3) return word_is(line, 0, "+OK");
      return line.size() >= 2 && line[0] == '*' && line[1] == ' ' && word_is(line, 2, "OK");
    case BackendStep::Expect::kOk: {
      if (p == Protocol::kPop3) return word_is(line, 0, "+OK");
      size_t sp = line.find(' ');
      return sp != std::string_view::npos && sp > 0 && word_is(line, sp + 1, "OK");
    }
  }
  return false;
}

Step LoginSession::Feed(std::string_view data) {
  HC_CHECK(state_ != State::kDone, "LoginSession::Feed after route or close");
  Step step;
  in_.append(data);
  size_t pos = 0;
  while (state_ != State::kDone) {
    if (state_ == State::kLiteral || state_ == State::kSkipLiteral) {
      size_t n = std::min(literal_left_, in_.size() - pos);
      if (state_ == State::kLiteral) args_.back().text.append(in_, pos, n);
      pos += n;
      literal_left_ -= n;
      if (literal_left_ > 0) break;
      state_ = State::kCommand;
      continue;
    }
    size_t lf = in_.find('\n', std::max(pos, scanned_));
    if (lf == std::string::npos) {
      scanned_ = in_.size();
      if (in_.size() - pos > kMaxLine + 1) {
        Close(protocol_ == Protocol::kImap ? "* BYE Line too long\r\n" : "-ERR Line too long\r\n",
              &step);
      }
      break;
    }
    std::string_view line(in_.data() + pos, lf - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos = lf + 1;
    if (line.size() > kMaxLine) {
      Close(protocol_ == Protocol::kImap ? "* BYE Line too long\r\n" : "-ERR Line too long\r\n",
            &step);
      break;
    }
    OnLine(line, &step);
  }
  if (step.route) step.rest = in_.substr(pos);
  in_.erase(0, pos);
  scanned_ = scanned_ > pos ? scanned_ - pos : 0;
  return step;
}

void LoginSession::OnLine(std::string_view line, Step* step) {
  if (protocol_ == Protocol::kImap) {
    if (state_ == State::kAuthResponse) {
      ImapAuthResponse(line, step);
    } else {
      ImapLine(line, step);
    }
  } else {
    if (state_ == State::kAuthResponse) {
      Pop3AuthResponse(line, step);
    } else {
      Pop3Line(line, step);
    }
  }
}

void LoginSession::Reject(std::string_view response, Step* step) {
  step->to_client += response;
  if (++errors_ >= kMaxErrors) {
    Close(protocol_ == Protocol::kImap ? "* BYE Too many invalid commands\r\n"
                                       : "-ERR Too many invalid commands\r\n",
          step);
  }
}

void LoginSession::Close(std::string_view response, Step* step) {
  step->to_client += response;
  step->close = true;
  state_ = State::kDone;
}

void LoginSession::ResetCommand() {
  command_.clear();
  args_.clear();
  depth_ = 0;
  command_bytes_ = 0;
}

// Checks a login name and password; on success fills user and domain of
// `step`, else answers the client.
bool LoginSession::CheckLogin(std::string_view user, std::string_view pass, Step* step) {
  const bool imap = protocol_ == Protocol::kImap;
  if (user.find('\0') != std::string_view::npos || pass.find('\0') != std::string_view::npos) {
    Reject(imap
               ? tag_ + " NO [AUTHENTICATIONFAILED] Invalid characters in user name or password\r\n"
               : "-ERR Invalid characters in user name or password\r\n",
           step);
    return false;
  }
  size_t at = user.rfind('@');
  if (at == std::string_view::npos || at == 0 || !ValidDomain(user.substr(at + 1))) {
    Reject(imap ? tag_ + " NO [AUTHENTICATIONFAILED] Log in as user@domain\r\n"
                : "-ERR Log in as user@domain\r\n",
           step);
    return false;
  }
  step->user = user;
  step->domain = user.substr(at + 1);
  for (char& c : step->domain) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return true;
}

// A decoded SASL PLAIN message (RFC 4616): authzid NUL authcid NUL passwd.
void LoginSession::PlainLogin(std::string_view decoded, Step* step) {
  const bool imap = protocol_ == Protocol::kImap;
  size_t a = decoded.find('\0');
  size_t b = a == std::string_view::npos ? a : decoded.find('\0', a + 1);
  if (b == std::string_view::npos || decoded.find('\0', b + 1) != std::string_view::npos ||
      b == a + 1 || b + 1 == decoded.size()) {
    Reject(imap ? tag_ + " BAD Malformed PLAIN response\r\n" : "-ERR Malformed PLAIN response\r\n",
           step);
    return;
  }
  std::string_view authzid = decoded.substr(0, a);
  std::string_view authcid = decoded.substr(a + 1, b - a - 1);
  std::string_view pass = decoded.substr(b + 1);
  if (!CheckLogin(authzid.empty() ? authcid : authzid, pass, step)) return;
  const std::string b64 = EncodeBase64(decoded);
  if (imap) {
    step->script.push_back({BackendStep::Expect::kGreeting, tag_ + " AUTHENTICATE PLAIN\r\n"});
    step->script.push_back({BackendStep::Expect::kContinuation, b64 + "\r\n"});
  } else {
    step->script.push_back({BackendStep::Expect::kGreeting, "AUTH PLAIN " + b64 + "\r\n"});
  }
  step->route = true;
  state_ = State::kDone;
}

// IMAP.

void LoginSession::ImapLine(std::string_view line, Step* step) {
  if (skipping_) {
    // The rest of a rejected command: skip its non-synchronizing literals.
    size_t start = 0, n = 0;
    bool sync = true;
    if (TrailingLiteral(line, &start, &n, &sync) && !sync) {
      if (n > kMaxLiteral) return Close("* BYE Literal too big\r\n", step);
      literal_left_ = n;
      state_ = State::kSkipLiteral;
    } else {
      skipping_ = false;
    }
    return;
  }
  const bool first = command_.empty();
  if (first && line.empty()) return;  // ignored, as most servers do
  command_bytes_ += line.size() + 2;
  if (command_bytes_ > kMaxCommand) return Close("* BYE Command too long\r\n", step);
  if (!ParseSegment(line, first, step)) return;
  if (state_ == State::kLiteral) return;
  ImapCommand(step);
}

bool LoginSession::ParseSegment(std::string_view line, bool first, Step* step) {
  size_t p = 0;
  auto bad = [&](std::string_view why) {
    std::string tag = tag_.empty() ? std::string("*") : tag_;
    ResetCommand();
    // A client that sent a non-synchronizing literal sends its bytes anyway.
    size_t start = 0, n = 0;
    bool sync = true;
    if (TrailingLiteral(line, &start, &n, &sync) && !sync) {
      if (n > kMaxLiteral) {
        Close("* BYE Literal too big\r\n", step);
        return false;
      }
      literal_left_ = n;
      state_ = State::kSkipLiteral;
      skipping_ = true;
    }
    Reject(tag + " BAD " + std::string(why) + "\r\n", step);
    return false;
  };
  if (first) {
    tag_.clear();
    while (p < line.size() && IsAstringChar(line[p]) && line[p] != '+') ++p;
    if (p == 0 || p == line.size() || line[p] != ' ') return bad("Invalid tag or missing command");
    tag_ = line.substr(0, p);
    size_t c = ++p;
    while (p < line.size() && IsAstringChar(line[p]) && line[p] != ']') ++p;
    if (p == c || (p < line.size() && line[p] != ' ')) return bad("Invalid command name");
    command_ = UpperCase(line.substr(c, p - c));
  }
  bool need_sep = !first;  // after a literal, a separator or the end must follow
  for (;;) {
    if (p == line.size()) {
      if (depth_ != 0) return bad("Unbalanced parentheses");
      return true;
    }
    char c = line[p];
    if (c == ' ') {
      ++p;
      need_sep = false;
      continue;
    }
    if (c == ')') {
      if (--depth_ < 0) return bad("Unbalanced parentheses");
      args_.push_back({Arg::kClose, ""});
      ++p;
      need_sep = true;
      continue;
    }
    if (need_sep) return bad("Missing space between arguments");
    if (c == '(') {
      ++depth_;
      args_.push_back({Arg::kOpen, ""});
      ++p;
      continue;
    }
    if (c == '"') {
      std::string text;
      ++p;
      for (;;) {
        if (p == line.size()) return bad("Unterminated quoted string");
        char q = line[p++];
        if (q == '"') break;
        if (q == '\0') return bad("NUL in quoted string");
        if (q == '\\') {
          if (p == line.size() || (line[p] != '"' && line[p] != '\\')) {
            return bad("Invalid escape in quoted string");
          }
          q = line[p++];
        }
        text += q;
      }
      args_.push_back({Arg::kString, std::move(text)});
      need_sep = true;
      continue;
    }
    if (c == '{') {
      size_t start = 0, n = 0;
      bool sync = true;
      if (!TrailingLiteral(line, &start, &n, &sync) || start != p) {
        return bad("Invalid literal");
      }
      size_t strings = 0;
      for (const Arg& a : args_) strings += a.kind == Arg::kAtom || a.kind == Arg::kString;
      if (!(command_ == "LOGIN" && depth_ == 0 && strings < 2) && command_ != "ID") {
        return bad("Unexpected literal");
      }
      if (n > kMaxLiteral) {
        Close("* BYE Literal too big\r\n", step);
        return false;
      }
      command_bytes_ += n;
      if (command_bytes_ > kMaxCommand) {
        Close("* BYE Command too long\r\n", step);
        return false;
      }
      if (sync) step->to_client += "+ go ahead\r\n";
      args_.push_back({Arg::kString, ""});
      literal_left_ = n;
      state_ = State::kLiteral;
      return true;
    }
    size_t start = p;
    while (p < line.size() && IsAstringChar(line[p])) ++p;
    if (p == start) return bad("Invalid character in command");
    args_.push_back({Arg::kAtom, std::string(line.substr(start, p - start))});
    need_sep = true;
  }
}

void LoginSession::ImapCommand(Step* step) {
  const std::string tag = tag_;
  const std::string command = std::move(command_);
  std::vector<Arg> args = std::move(args_);
  ResetCommand();
  auto only = [&args](Arg::Kind k1, Arg::Kind k2, size_t n) {
    if (args.size() != n) return false;
    for (const Arg& a : args) {
      if (a.kind != k1 && a.kind != k2) return false;
    }
    return true;
  };
  if (command == "CAPABILITY" && args.empty()) {
    step->to_client += "* CAPABILITY " + std::string(kImapCapabilities) + "\r\n" + tag +
                       " OK CAPABILITY completed\r\n";
  } else if (command == "NOOP" && args.empty()) {
    step->to_client += tag + " OK NOOP completed\r\n";
  } else if (command == "LOGOUT" && args.empty()) {
    Close("* BYE Logging out\r\n" + tag + " OK LOGOUT completed\r\n", step);
  } else if (command == "ID" && ((args.size() == 1 && args[0].kind == Arg::kAtom &&
                                  EqualsUpper(args[0].text, "NIL")) ||
                                 (args.size() >= 2 && args.front().kind == Arg::kOpen &&
                                  args.back().kind == Arg::kClose))) {
    step->to_client += "* ID NIL\r\n" + tag + " OK ID completed\r\n";
  } else if (command == "LOGIN" && only(Arg::kAtom, Arg::kString, 2)) {
    if (!CheckLogin(args[0].text, args[1].text, step)) return;
    // The backend sees the same tag, so its tagged answer is the client's.
    BackendStep cur{BackendStep::Expect::kGreeting, tag + " LOGIN "};
    auto add = [&](const std::string& s) {
      if (Quotable(s)) {
        cur.send += Quote(s);
        return;
      }
      cur.send += "{" + std::to_string(s.size()) + "}\r\n";
      step->script.push_back(std::move(cur));
      cur = BackendStep{BackendStep::Expect::kContinuation, s};
    };
    add(args[0].text);
    cur.send += ' ';
    add(args[1].text);
    cur.send += "\r\n";
    step->script.push_back(std::move(cur));
    step->route = true;
    state_ = State::kDone;
  } else if (command == "AUTHENTICATE" &&
             (only(Arg::kAtom, Arg::kAtom, 1) || only(Arg::kAtom, Arg::kAtom, 2))) {
    if (!EqualsUpper(args[0].text, "PLAIN")) {
      return Reject(tag + " NO Unsupported authentication mechanism\r\n", step);
    }
    if (args.size() == 1) {
      step->to_client += "+ \r\n";
      state_ = State::kAuthResponse;
      return;
    }
    std::string decoded;
    if (args[1].text != "=" && !DecodeBase64(args[1].text, &decoded)) {
      return Reject(tag + " BAD Invalid base64 in initial response\r\n", step);
    }
    PlainLogin(decoded, step);
  } else if (command == "CAPABILITY" || command == "NOOP" || command == "LOGOUT" ||
             command == "ID" || command == "LOGIN" || command == "AUTHENTICATE") {
    Reject(tag + " BAD Invalid arguments to " + command + "\r\n", step);
  } else {
    Reject(tag + " BAD Command unknown or not allowed before login\r\n", step);
  }
}

void LoginSession::ImapAuthResponse(std::string_view line, Step* step) {
  state_ = State::kCommand;
  if (line == "*") return Reject(tag_ + " BAD AUTHENTICATE cancelled\r\n", step);
  std::string decoded;
  if (!DecodeBase64(line, &decoded)) return Reject(tag_ + " BAD Invalid base64 response\r\n", step);
  PlainLogin(decoded, step);
}

// POP3.

void LoginSession::Pop3Line(std::string_view line, Step* step) {
  size_t sp = line.find(' ');
  const std::string keyword = UpperCase(line.substr(0, sp));
  std::string_view arg = sp == std::string_view::npos ? "" : line.substr(sp + 1);
  if (keyword == "CAPA") {
    step->to_client += "+OK Capability list follows\r\nUSER\r\nSASL PLAIN\r\n.\r\n";
  } else if (keyword == "USER") {
    if (arg.empty()) return Reject("-ERR Missing user name\r\n", step);
    if (!CheckLogin(arg, "", step)) return;
    pop_user_ = arg;
    step->user.clear();
    step->domain.clear();
    step->to_client += "+OK\r\n";
  } else if (keyword == "PASS") {
    if (pop_user_.empty()) return Reject("-ERR USER first\r\n", step);
    if (arg.empty()) return Reject("-ERR Missing password\r\n", step);
    if (!CheckLogin(pop_user_, arg, step)) return;
    step->script.push_back({BackendStep::Expect::kGreeting, "USER " + pop_user_ + "\r\n"});
    step->script.push_back({BackendStep::Expect::kOk, "PASS " + std::string(arg) + "\r\n"});
    step->route = true;
    state_ = State::kDone;
  } else if (keyword == "AUTH") {
    if (arg.empty()) {
      step->to_client += "+OK\r\nPLAIN\r\n.\r\n";
      return;
    }
    size_t sp2 = arg.find(' ');
    std::string_view mech = arg.substr(0, sp2);
    std::string_view initial = sp2 == std::string_view::npos ? "" : arg.substr(sp2 + 1);
    if (!EqualsUpper(mech, "PLAIN")) {
      return Reject("-ERR Unsupported authentication mechanism\r\n", step);
    }
    if (sp2 == std::string_view::npos) {
      step->to_client += "+ \r\n";
      state_ = State::kAuthResponse;
      return;
    }
    std::string decoded;
    if (initial != "=" && !DecodeBase64(initial, &decoded)) {
      return Reject("-ERR Invalid base64 in initial response\r\n", step);
    }
    PlainLogin(decoded, step);
  } else if (keyword == "QUIT") {
    Close("+OK Bye\r\n", step);
  } else {
    Reject("-ERR Command unknown or not allowed before login\r\n", step);
  }
}

void LoginSession::Pop3AuthResponse(std::string_view line, Step* step) {
  state_ = State::kCommand;
  if (line == "*") return Reject("-ERR Authentication cancelled\r\n", step);
  std::string decoded;
  if (!DecodeBase64(line, &decoded)) return Reject("-ERR Invalid base64 response\r\n", step);
  PlainLogin(decoded, step);
}

}  // namespace hc::proxy::mail
