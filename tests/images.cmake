# `trick preprocess` against PIL and torchvision (decoding, Resize(342) + CenterCrop(299)).
add_test(NAME "images: resize matches PIL"
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/tests/images_check.py $<TARGET_FILE:trick>
         WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
