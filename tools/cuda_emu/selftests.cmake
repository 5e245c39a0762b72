# Self-tests of tools/cuda_emu itself, without ember: the runtime, cuBLAS and cuBLASLt side
# (src/selftest_runtime.cpp) and the device side (src/selftest_device.cpp, written like a
# converted .cu file). Included by CMakeLists.txt in an EMBER_CUDA=EMULATE build with tests.
set(_emu_dir ${CMAKE_CURRENT_LIST_DIR})
# The emulator is compiled once for both tests (the ember library compiles its own copy).
add_library(cuda_emu_selftest_support OBJECT
  ${_emu_dir}/src/runtime.cpp ${_emu_dir}/src/cublas.cpp ${_emu_dir}/src/device.cpp)
target_include_directories(cuda_emu_selftest_support PUBLIC ${_emu_dir}/include)
# As in the emulated ember build: no host FMA contraction that the GPU code did not ask for.
target_compile_options(cuda_emu_selftest_support PUBLIC -ffp-contract=off -Wno-unknown-pragmas)
target_link_libraries(cuda_emu_selftest_support PUBLIC Threads::Threads)
foreach(_emu_side runtime device)
  add_executable(cuda_emu_selftest_${_emu_side} ${_emu_dir}/src/selftest_${_emu_side}.cpp)
  target_link_libraries(cuda_emu_selftest_${_emu_side} PRIVATE cuda_emu_selftest_support)
  add_test(NAME cuda_emu_selftest_${_emu_side} COMMAND cuda_emu_selftest_${_emu_side})
endforeach()
unset(_emu_side)
unset(_emu_dir)

# Not a test: prints what one DDE iteration costs in launches (examples/count_dde_launches.cpp).
add_executable(cuda_emu_count_dde_launches ${CMAKE_CURRENT_LIST_DIR}/examples/count_dde_launches.cpp)
target_link_libraries(cuda_emu_count_dde_launches PRIVATE ember)
target_include_directories(cuda_emu_count_dde_launches PRIVATE ${CMAKE_CURRENT_LIST_DIR}/include)
set_target_properties(cuda_emu_count_dde_launches PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tools)
