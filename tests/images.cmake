# `trick preprocess` against PIL and torchvision (decoding, Resize(342) + CenterCrop(299)).
add_test(NAME "images: resize matches PIL"
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/tests/images_check.py $<TARGET_FILE:trick>
         WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
# 25 s: started first (CTest runs higher costs first), so it overlaps the many short tests
# instead of running alone before the two-processor Inception parity test at the end.
set_tests_properties("images: resize matches PIL" PROPERTIES COST 100)
