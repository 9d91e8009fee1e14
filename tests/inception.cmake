# Inception v3 against PyTorch (Debian's python3-torch): logits and input gradients.
add_test(NAME "inception: logits and input gradients match PyTorch (zip and legacy .pth)"
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/tests/inception_parity.py $<TARGET_FILE:trick>
          ${CMAKE_CURRENT_BINARY_DIR}/parity)
set_tests_properties("inception: logits and input gradients match PyTorch (zip and legacy .pth)"
  PROPERTIES TIMEOUT 1200 PROCESSORS 2)
