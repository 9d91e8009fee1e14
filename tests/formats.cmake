# `trick convert` against PyTorch: state dicts saved by torch (zip and legacy .pth) must convert
# to safetensors with torch's exact values; truncated and hostile files must fail cleanly.
add_test(NAME "formats: pth parity with torch"
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/formats_check.py $<TARGET_FILE:trick>
  WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
