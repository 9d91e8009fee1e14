# The CUDA emulator's sources (kernels/cuda/emu/README.md): a copy of every CUDA source of
# kernels/cuda/ under ${CMAKE_CURRENT_BINARY_DIR}/emu, for the host compiler, in which
#   - a launch `k<<<cfg>>>(args)` reads
#     `::trick::emu::Launch(::trick::emu::Config(cfg), "k", [=](auto&... a) { k(a...); })(args)`,
#   - `extern __shared__ T name[];` reads `T* const name = ...::trick::emu::dynamic_shared()`,
#   - a .cu file starts with kernels/cuda/emu/emu.h and becomes NAME.cu.cpp,
# and `#line` keeps the original file's name in messages and __FILE__. A kernel is an
# identifier with optional template arguments (no nested <>); launch arguments hold no ';'.
# trick_cuda_emu_sources(OUT) sets OUT to the .cu.cpp files; the copies are rewritten at
# configure time, which each source's change triggers again.
function(trick_cuda_emu_sources out_var)
  set(root ${CMAKE_CURRENT_BINARY_DIR}/emu)
  file(GLOB files RELATIVE ${CMAKE_CURRENT_SOURCE_DIR} CONFIGURE_DEPENDS
       ${CMAKE_CURRENT_SOURCE_DIR}/kernels/cuda/*.cu ${CMAKE_CURRENT_SOURCE_DIR}/kernels/cuda/*.cuh)
  set(out)
  foreach(f ${files})
    set(src ${CMAKE_CURRENT_SOURCE_DIR}/${f})
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${src})
    file(READ ${src} text)
    string(REGEX REPLACE "([A-Za-z_][A-Za-z0-9_:]*(<[^;{}()<>]*>)?)[ \t\r\n]*<<<([^;]*)>>>"
           "::trick::emu::Launch(::trick::emu::Config(\\3), \"\\1\", [=](auto&... a) { \\1(a...); })"
           text "${text}")
    string(REGEX REPLACE "extern __shared__ ([A-Za-z0-9_]+) ([A-Za-z0-9_]+)\\[\\];"
           "\\1* const \\2 = static_cast<\\1*>(::trick::emu::dynamic_shared());" text "${text}")
    if(text MATCHES "<<<")
      message(FATAL_ERROR "tools/cuda_emu.cmake: a launch in ${f} that the emulator's rewrite does not read")
    endif()
    if(f MATCHES "\\.cu$")
      set(dst ${root}/${f}.cpp)
      set(text "#include \"kernels/cuda/emu/emu.h\"\n#line 1 \"${src}\"\n${text}")
      list(APPEND out ${dst})
    else()
      set(dst ${root}/${f})
      set(text "#line 1 \"${src}\"\n${text}")
    endif()
    file(WRITE ${dst}.new "${text}")
    configure_file(${dst}.new ${dst} COPYONLY)  # touched only when it changed
    file(REMOVE ${dst}.new)
  endforeach()
  set(${out_var} ${out} PARENT_SCOPE)
endfunction()
