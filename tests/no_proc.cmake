# The embedded model needs no /proc (tests/no_proc.sh): skipped where no mount namespace can
# be made.
add_test(NAME "embedded model: trick classify works with no /proc"
  COMMAND /bin/sh ${CMAKE_CURRENT_LIST_DIR}/no_proc.sh $<TARGET_FILE:trick>
  WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties("embedded model: trick classify works with no /proc" PROPERTIES SKIP_RETURN_CODE 77)
