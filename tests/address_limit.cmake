# Out of memory under an address-space limit (tests/address_limit.sh): an error line, no hang.
add_test(NAME "out of memory: under an address-space limit, one error line and no hang"
  COMMAND /bin/sh ${CMAKE_CURRENT_LIST_DIR}/address_limit.sh $<TARGET_FILE:trick>
  WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties("out of memory: under an address-space limit, one error line and no hang"
  PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 900)
