#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "kernels/gemm.h"

int main(int argc, char** argv) {
  trick::set_num_threads(0);
  doctest::Context context(argc, argv);
  return context.run();
}
