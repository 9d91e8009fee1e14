// The `trick` command's subcommands register themselves here (one file each, tools/cmd_*.cpp),
// so adding a subcommand touches no shared file.
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

// The command line trick was started with (for summaries and reports).
const std::string& command_line();

}  // namespace trick
