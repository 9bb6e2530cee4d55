#include "common/units.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <string>

namespace hc {

Result<uint64_t> ParseSize(std::string_view s) {
  if (s.empty()) return InvalidArgument("empty size");
  size_t i = 0;
  int dots = 0, digits = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) {
    (s[i] == '.' ? dots : digits)++;
    i++;
  }
  if (digits == 0 || dots > 1)
    return InvalidArgument("size '" + std::string(s) +
                           "' must start with a number like 512 or 1.5");
  double v = std::strtod(std::string(s.substr(0, i)).c_str(), nullptr);
  std::string unit(s.substr(i));
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) unit.pop_back();
  if (unit.size() == 2 && (unit[1] == 'i' || unit[1] == 'I')) unit.pop_back();
  double mul = 1;
  if (unit.empty())
    mul = 1;
  else if (unit == "K" || unit == "k")
    mul = 1024.0;
  else if (unit == "M" || unit == "m")
    mul = 1024.0 * 1024;
  else if (unit == "G" || unit == "g")
    mul = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "t")
    mul = 1024.0 * 1024 * 1024 * 1024;
  else
    return InvalidArgument("size '" + std::string(s) + "': unknown unit (use K, M, G or T)");
  double bytes = v * mul;
  if (!(bytes >= 0) || bytes > 9.0e18)
    return InvalidArgument("size '" + std::string(s) + "' is too large");
  return static_cast<uint64_t>(std::llround(bytes));
}

}  // namespace hc
