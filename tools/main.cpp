// trick: the command. Library errors become one "error: ..." line and exit code 1;
// command-line mistakes print CLI11's message and exit code 2.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <new>
#include <vector>

#include "tensor/cpu_check.h"
#include "tensor/error.h"
#include "tools/command.h"

// Before every other initialisation: a CPU without an instruction set this build targets gets
// one error line, not SIGILL.
__attribute__((constructor(101))) static void check_cpu() { trick::require_built_cpu_features(); }

namespace trick {

static std::vector<CommandInfo>& registry() {
  static std::vector<CommandInfo> r;
  return r;
}

bool register_command(CommandInfo info) {
  registry().push_back(std::move(info));
  return true;
}

static std::string& command_line_storage() {
  static std::string s;
  return s;
}
const std::string& command_line() { return command_line_storage(); }

}  // namespace trick

int main(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    const bool quote = a.empty() || a.find_first_of(" \t'\"$`\\*?") != std::string::npos;
    trick::command_line_storage() += (i ? " " : "") + (quote ? "'" + a + "'" : a);
  }
  CLI::App app{"trick: adversarial perturbations with a from-scratch tensor library", "trick"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "trick 0.1.0");
  auto& cmds = trick::registry();
  std::stable_sort(cmds.begin(), cmds.end(), [](const auto& a, const auto& b) { return a.order < b.order; });
  std::vector<std::pair<CLI::App*, std::function<int()>>> runs;
  try {
    for (auto& c : cmds) {
      CLI::App* sub = app.add_subcommand(c.name, c.help);
      runs.emplace_back(sub, c.setup(*sub));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: internal: %s\n", e.what());
    return 1;
  }
  if (argc > 1 && argv[1][0] != '-') {  // CLI11 would say only "A subcommand is required"
    std::string known;
    bool found = false;
    for (const auto& c : cmds) {
      known += (known.empty() ? "" : ", ") + c.name;
      found = found || c.name == argv[1];
    }
    if (!found) {
      std::fprintf(stderr, "error: unknown command '%s' (commands: %s; see 'trick --help')\n", argv[1], known.c_str());
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0 through CLI11; a mistake is one "error:" line and status 2
    // (CLI11's own codes, 100 and up, would read like a crash to scripts checking for 1 or 2).
    if (e.get_exit_code() == 0) return app.exit(e);
    std::string where;
    for (const CLI::App* sub = &app; !sub->get_subcommands().empty(); sub = sub->get_subcommands().front())
      where += " " + sub->get_subcommands().front()->get_name();
    std::fprintf(stderr, "error: %s (see 'trick%s --help')\n", e.what(), where.c_str());
    return 2;
  }
  try {
    for (auto& [sub, run] : runs)
      if (sub->parsed()) return run();
  } catch (const trick::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of host memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 1;
}
