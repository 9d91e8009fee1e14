# trick_cuda_architectures(OUT NVCC NVIDIA_SMI): the CUDA architectures to build for when none
# were given (CMakeLists.txt calls it unless CMAKE_CUDA_ARCHITECTURES or CUDAARCHS is set).
#
# A build for one architecture runs on GPUs of that architecture's major version with the
# same or a higher minor one (its SASS), and on newer ones only through its PTX, compiled by
# the driver at the first run. So a binary built for the H100/H200 (90) cannot run on an
# A100 (80) or an RTX 4090 (89). Where nvidia-smi lists GPUs, the build is for each of their
# compute capabilities that NVCC supports (`nvcc --list-gpu-arch`); with none (a build
# machine or CI without a GPU, or no driver), for 90, the GPU trick is tuned for. A GPU NVCC
# cannot build for (CUDA 13 dropped everything before 7.5) is a warning, not an error: trick
# still builds, and at run time says it cannot use that GPU and runs on the CPU.
# tests/cuda_architectures.sh checks this with stand-ins for nvidia-smi and nvcc.
function(trick_cuda_architectures out nvcc nvidia_smi)
  set(chosen "")
  set(caps "")
  if(nvidia_smi)
    execute_process(COMMAND "${nvidia_smi}" --query-gpu=compute_cap --format=csv,noheader
                    OUTPUT_VARIABLE listed RESULT_VARIABLE status ERROR_QUIET TIMEOUT 30)
    if(status EQUAL 0)
      string(REGEX MATCHALL "[0-9]+\\.[0-9]+" caps "${listed}")
    endif()
  endif()
  if(caps)
    set(supported "")
    if(nvcc)
      execute_process(COMMAND "${nvcc}" --list-gpu-arch OUTPUT_VARIABLE archs RESULT_VARIABLE status ERROR_QUIET
                      TIMEOUT 30)
      if(status EQUAL 0)
        string(REGEX MATCHALL "compute_[0-9]+" supported "${archs}")
        list(TRANSFORM supported REPLACE "compute_" "")
      endif()
    endif()
    foreach(cap ${caps})
      string(REPLACE "." "" arch "${cap}")
      list(FIND supported "${arch}" found)  # (not IN_LIST: tests/cuda_architectures.sh runs this without a policy)
      if(NOT supported OR found GREATER -1)
        list(APPEND chosen ${arch})
      else()
        message(WARNING "trick: a GPU of compute capability ${cap} is present, but ${nvcc} cannot build for it "
                        "(it builds for: ${supported}); trick will run on the CPU there")
      endif()
    endforeach()
    list(REMOVE_DUPLICATES chosen)
  endif()
  if(chosen)
    message(STATUS "trick: CUDA architectures ${chosen} (the GPUs nvidia-smi lists; -DCMAKE_CUDA_ARCHITECTURES=... to choose)")
  else()
    set(chosen 90)
    message(STATUS "trick: CUDA architectures 90, H100/H200 (no GPU listed by nvidia-smi; -DCMAKE_CUDA_ARCHITECTURES=... to choose)")
  endif()
  set(${out} "${chosen}" PARENT_SCOPE)
endfunction()
