# The command's GPU paths (--device cuda, CUDA graphs against eager, TF32/bf16, classify, grad)
# on the CUDA emulator, against its CPU backend (tests/emu_cli.py); where trick_emu is built.
if(TARGET trick_emu)
  add_test(NAME "emu/cli: attack, classify and grad on the emulated GPU equal the CPU; graphs equal eager"
    COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/emu_cli.py $<TARGET_FILE:trick_emu>
    WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  set_tests_properties("emu/cli: attack, classify and grad on the emulated GPU equal the CPU; graphs equal eager"
    PROPERTIES COST 50)
endif()
