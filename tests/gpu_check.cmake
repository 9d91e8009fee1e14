# tools/gpu_check.sh run without a GPU on this build's binaries (tests/gpu_check_dry.py): every
# stage reached, every command line it gives trick and bench_gpu.py still parses. Skipped where
# a GPU is present.
add_test(NAME "gpu_check.sh: a dry run without a GPU reaches every stage, and every command line parses"
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/gpu_check_dry.py $<TARGET_FILE_DIR:trick>
  WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties("gpu_check.sh: a dry run without a GPU reaches every stage, and every command line parses"
  PROPERTIES SKIP_RETURN_CODE 77)
