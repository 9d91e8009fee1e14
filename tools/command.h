// The `trick` command's subcommands register themselves here (one file each, tools/cmd_*.cpp),
// so adding a subcommand touches no shared file. Each file's names go in namespace
// trick::cmd_<name>: the command is a unity build (CMakeLists.txt).
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>

namespace trick {

// Called with the subcommand's CLI11 app: adds the options and returns the function that
// runs the command after parsing (its return value is the exit code).
using CommandSetup = std::function<std::function<int()>(CLI::App&)>;

struct CommandInfo {
  std::string name;
  std::string help;
  CommandSetup setup;
  int order = 100;  // position in --help
};

// Use as: static const bool registered = register_command({...});
bool register_command(CommandInfo info);

// For unsigned options (--seed): digits only, so "-1" is refused instead of wrapping to 2^64 - 1.
inline CLI::Validator whole_number() {
  return CLI::Validator(
      [](std::string& v) {
        const bool ok = !v.empty() && v.size() <= 20 && v.find_first_not_of("0123456789") == std::string::npos;
        return ok ? std::string() : "'" + v + "' is not a whole number in [0, 2^64)";
      },
      "UINT");
}

// The command line trick was started with (for summaries and reports).
const std::string& command_line();

}  // namespace trick
