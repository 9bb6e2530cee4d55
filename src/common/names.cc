#include "common/names.h"

namespace hc {

Status ValidateName(const std::string& what, const std::string& name) {
  if (name.empty() || name.size() > 64) {
    return InvalidArgument(what + " name '" + name + "' must be 1 to 64 characters long");
  }
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(name[0])) {
    return InvalidArgument(what + " name '" + name +
                           "' must start with a lower-case letter or a digit");
  }
  for (char c : name) {
    if (!alnum(c) && c != '-' && c != '_' && c != '.') {
      return InvalidArgument(what + " name '" + name + "' contains '" + std::string(1, c) +
                             "'; use only a-z, 0-9, '.', '_' and '-'");
    }
  }
  return Status::Ok();
}

}  // namespace hc
