# The CUDA architectures CMake chooses from nvidia-smi (tests/cuda_architectures.sh).
add_test(NAME "cmake: the CUDA architectures follow the GPUs nvidia-smi lists, else 90"
  COMMAND /bin/sh ${CMAKE_CURRENT_LIST_DIR}/cuda_architectures.sh ${CMAKE_COMMAND}
  WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
