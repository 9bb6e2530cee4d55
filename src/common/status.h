// Status and Result<T>: errors as values at module boundaries.
//
// A Status is either OK or carries a code and a message written for the
// person who has to act on it ("volume 'shop' has no snapshot 'x'; newest is
// 'y'"). Result<T> holds either a T or a non-OK Status.
//
//   Result<int> ParsePort(std::string_view s);
//   HC_ASSIGN_OR_RETURN(int port, ParsePort(arg));
//   HC_RETURN_IF_ERROR(store.CreateVolume("shop"));
//
// Crash policy: bad input from users, files or the network becomes a Status;
// broken internal invariants abort through HC_CHECK with context.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace hc {

enum class Code {
  kOk = 0,
  kInvalidArgument,   // the caller's input is malformed
  kNotFound,          // a named thing does not exist
  kAlreadyExists,     // a named thing exists and may not be replaced
  kConflict,          // the request contradicts the current state (divergence)
  kCorrupt,           // stored or streamed data failed verification
  kUnavailable,       // a dependency (daemon, tool) is missing or down
  kPermissionDenied,  // refused by policy (read-only, outside root)
  kIo,                // the operating system reported an error
  kInternal,          // a bug: should not happen
};

const char* CodeName(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // "conflict: volume 'x' ..." — suitable for a log line or a CLI error.
  std::string ToString() const;

  // Returns a copy whose message is prefixed with `context: `.
  Status Annotate(const std::string& context) const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) {
  return {Code::kInvalidArgument, std::move(m)};
}
inline Status NotFound(std::string m) {
  return {Code::kNotFound, std::move(m)};
}
inline Status AlreadyExists(std::string m) {
  return {Code::kAlreadyExists, std::move(m)};
}
inline Status Conflict(std::string m) {
  return {Code::kConflict, std::move(m)};
}
inline Status Corrupt(std::string m) {
  return {Code::kCorrupt, std::move(m)};
}
inline Status Unavailable(std::string m) {
  return {Code::kUnavailable, std::move(m)};
}
inline Status PermissionDenied(std::string m) {
  return {Code::kPermissionDenied, std::move(m)};
}
inline Status IoError(std::string m) {
  return {Code::kIo, std::move(m)};
}
inline Status Internal(std::string m) {
  return {Code::kInternal, std::move(m)};
}

// An OS error: "<what>: <strerror(err)>".
Status ErrnoStatus(const std::string& what, int err);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    if (std::get<Status>(v_).ok()) {
      v_ = Internal("Result constructed from an OK status without a value");
    }
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return Checked(); }
  const T& value() const& { return const_cast<Result*>(this)->Checked(); }
  T&& value() && { return std::move(Checked()); }
  T& operator*() & { return Checked(); }
  T&& operator*() && { return std::move(Checked()); }
  const T& operator*() const& { return const_cast<Result*>(this)->Checked(); }
  T* operator->() { return &Checked(); }
  const T* operator->() const { return &const_cast<Result*>(this)->Checked(); }

 private:
  T& Checked() {
    if (!ok()) {
      std::fprintf(stderr, "fatal: value() on error Result: %s\n",
                   std::get<Status>(v_).ToString().c_str());
      std::abort();
    }
    return std::get<T>(v_);
  }
  std::variant<T, Status> v_;
};

[[noreturn]] void CheckFailed(const char* file, int line, const char* expr,
                              const std::string& context);

}  // namespace hc

#define HC_CONCAT_INNER(a, b) a##b
#define HC_CONCAT(a, b) HC_CONCAT_INNER(a, b)

#define HC_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::hc::Status hc_status_ = (expr);        \
    if (!hc_status_.ok()) return hc_status_; \
  } while (0)

#define HC_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()

#define HC_ASSIGN_OR_RETURN(lhs, expr) \
  HC_ASSIGN_OR_RETURN_IMPL(HC_CONCAT(hc_result_, __LINE__), lhs, expr)

// Aborts with context when an internal invariant is broken. Never use it for
// conditions that input from outside can cause.
#define HC_CHECK(cond, context)                                         \
  do {                                                                  \
    if (!(cond)) ::hc::CheckFailed(__FILE__, __LINE__, #cond, context); \
  } while (0)
