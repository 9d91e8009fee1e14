# The bad-input corpus (tests/bad_inputs.py): one CTest test per case, named
# "bad input: <command> <case>", each running one `trick` command line with one input made bad
# and checking that it fails cleanly. The cases are listed by the script at configure time
# (CMake re-runs when the script changes); the weights they share (torchvision's Inception v3
# state dict saved by torch, converted by `trick convert`) are made once per test run by the
# fixture test, which every case requires.
set(TRICK_BAD_INPUTS_PY ${CMAKE_CURRENT_SOURCE_DIR}/tests/bad_inputs.py)
set(TRICK_BAD_INPUTS_DIR ${CMAKE_CURRENT_BINARY_DIR}/bad_inputs)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${TRICK_BAD_INPUTS_PY})
execute_process(COMMAND /usr/bin/python3 ${TRICK_BAD_INPUTS_PY} list
                OUTPUT_VARIABLE TRICK_BAD_INPUT_CASES RESULT_VARIABLE TRICK_BAD_INPUTS_RC)
if(NOT EXISTS /usr/bin/python3)
  message(WARNING "no /usr/bin/python3: no bad-input tests (tools/test.sh installs it)")
  set(TRICK_BAD_INPUT_CASES "")
elseif(NOT TRICK_BAD_INPUTS_RC EQUAL 0)
  # A broken script must not leave a test suite that passes with the corpus missing.
  message(FATAL_ERROR "tests/bad_inputs.py list failed (${TRICK_BAD_INPUTS_RC})")
endif()

add_test(NAME "bad input: fixture (Inception v3 weights saved by torch)"
  COMMAND /usr/bin/python3 ${TRICK_BAD_INPUTS_PY} setup $<TARGET_FILE:trick> ${TRICK_BAD_INPUTS_DIR}
  WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties("bad input: fixture (Inception v3 weights saved by torch)"
  PROPERTIES FIXTURES_SETUP trick_bad_inputs TIMEOUT 600)

string(REPLACE "\n" ";" TRICK_BAD_INPUT_CASES "${TRICK_BAD_INPUT_CASES}")
foreach(line IN LISTS TRICK_BAD_INPUT_CASES)
  if(line STREQUAL "")
    continue()
  endif()
  separate_arguments(words UNIX_COMMAND "${line}")
  list(GET words 0 bad_command)
  list(GET words 1 bad_case)
  add_test(NAME "bad input: ${bad_command} ${bad_case}"
    COMMAND /usr/bin/python3 ${TRICK_BAD_INPUTS_PY} run $<TARGET_FILE:trick> ${TRICK_BAD_INPUTS_DIR}
            ${bad_command} ${bad_case}
    WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  set_tests_properties("bad input: ${bad_command} ${bad_case}" PROPERTIES
    FIXTURES_REQUIRED trick_bad_inputs SKIP_RETURN_CODE 77 TIMEOUT 600 LABELS bad_inputs)
endforeach()
