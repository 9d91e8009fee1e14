// trick::Error and the helpers every library file uses to report bad input.
// Library code throws; only tools/ turns an Error into "error: ..." and an exit code.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace trick {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// cat("conv2d: ", 3, " channels") -> "conv2d: 3 channels"
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// byte_size(1536) -> "1.50 KiB": a size for a message: whole bytes, else KiB, MiB, GiB or TiB to 3 digits.
inline std::string byte_size(double bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) bytes /= 1024, ++u;
  std::ostringstream os;
  os.precision(u == 0 ? 0 : bytes < 10 ? 2 : bytes < 100 ? 1 : 0);
  os << std::fixed << bytes << " " << units[u];
  return os.str();
}

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(cat(args...));
}

}  // namespace trick

// Checks on user input or on an op's arguments: throws trick::Error with the message.
#define TRICK_CHECK(cond, ...)                  \
  do {                                          \
    if (!(cond)) ::trick::fail(__VA_ARGS__);    \
  } while (0)
