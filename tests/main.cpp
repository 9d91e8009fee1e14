#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "kernels/gemm.h"
#include "tensor/cpu_check.h"
#include "tensor/tensor.h"

// As in trick: a CPU that lacks an instruction set of this build gets one line, not SIGILL.
__attribute__((constructor(101))) static void check_cpu() { trick::require_built_cpu_features(); }

namespace {

// A run whose filters select no test case is an error, not a pass: CTest runs each case by
// name (--test-case=NAME), and a name the filter cannot match (CMake once split names at ';')
// would otherwise "pass" with nothing run.
unsigned g_cases_run = 0;
bool g_run_ended = false;

struct CountCases : doctest::IReporter {
  explicit CountCases(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats& s) override {
    g_run_ended = true;
    g_cases_run = s.numTestCasesPassingFilters;
  }
  void test_case_start(const doctest::TestCaseData&) override {}
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

}  // namespace

REGISTER_LISTENER("count_cases", 1, CountCases);

int main(int argc, char** argv) {
  trick::set_num_threads(0);
  trick::set_poison_new_host_memory(true);  // an output a kernel forgets to write is NaN
  doctest::Context context(argc, argv);
  const int rc = context.run();
  if (context.shouldExit()) return rc;  // --help, --list-test-cases, ...
  if (rc == 0 && g_run_ended && g_cases_run == 0) {
    std::fprintf(stderr, "error: no test case matches the filters given (%d arguments)\n", argc - 1);
    return 1;
  }
  return rc;
}
