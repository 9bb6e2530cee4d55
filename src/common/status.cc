#include "common/status.h"

#include <cstring>

namespace hc {

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk: return "ok";
    case Code::kInvalidArgument: return "invalid argument";
    case Code::kNotFound: return "not found";
    case Code::kAlreadyExists: return "already exists";
    case Code::kConflict: return "conflict";
    case Code::kCorrupt: return "corrupt";
    case Code::kUnavailable: return "unavailable";
    case Code::kPermissionDenied: return "permission denied";
    case Code::kIo: return "i/o error";
    case Code::kInternal: return "internal error";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return std::string(CodeName(code_)) + ": " + message_;
}

Status Status::Annotate(const std::string& context) const {
  if (ok()) return *this;
  return Status(code_, context + ": " + message_);
}

Status ErrnoStatus(const std::string& what, int err) {
  Code code = Code::kIo;
  if (err == ENOENT) code = Code::kNotFound;
  if (err == EEXIST) code = Code::kAlreadyExists;
  if (err == EACCES || err == EPERM || err == EROFS) {
    code = Code::kPermissionDenied;
  }
  return Status(code, what + ": " + std::strerror(err));
}

void CheckFailed(const char* file, int line, const char* expr, const std::string& context) {
  std::fprintf(stderr, "fatal: %s:%d: check '%s' failed: %s\n", file, line, expr, context.c_str());
  std::abort();
}

}  // namespace hc
