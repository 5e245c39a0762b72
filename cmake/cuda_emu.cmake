# EMBER_CUDA=EMULATE: the CUDA backend built with the C++ compiler alone and run on the CPU by
# tools/cuda_emu (fibers for CUDA threads, an in-process runtime, cuBLAS and cuBLASLt). It runs
# the GPU test suite without a GPU; it measures nothing about speed. See tools/cuda_emu/README.md.
#
# kernels/cuda/*.cu and *.cuh are converted at build time (cmake/cuda_emu_convert.cmake) into
# <build>/cuda_emu; the converted headers sit first on the include path, so
# "ember/kernels/cuda/map.cuh" finds the converted copy and every other header the original.
function(ember_add_cuda_emulation target)
  set(emu ${CMAKE_SOURCE_DIR}/tools/cuda_emu)
  set(out ${CMAKE_BINARY_DIR}/cuda_emu)
  set(converter ${CMAKE_SOURCE_DIR}/cmake/cuda_emu_convert.cmake)
  file(GLOB cu_sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/kernels/cuda/*.cu)
  file(GLOB cu_headers CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/kernels/cuda/*.cuh)
  file(GLOB host_sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/kernels/cuda/*.cpp)
  set(converted_sources)
  set(converted_headers)
  foreach(f ${cu_sources} ${cu_headers})
    get_filename_component(name ${f} NAME)
    if(name MATCHES "\\.cu$")
      set(o ${out}/kernels/${name}.cpp)
      list(APPEND converted_sources ${o})
    else()
      set(o ${out}/include/ember/kernels/cuda/${name})
      list(APPEND converted_headers ${o})
    endif()
    add_custom_command(OUTPUT ${o}
      COMMAND ${CMAKE_COMMAND} -DIN=${f} -DOUT=${o} -P ${converter}
      DEPENDS ${f} ${converter} VERBATIM)
  endforeach()
  set_source_files_properties(${converted_headers} PROPERTIES HEADER_FILE_ONLY ON GENERATED ON)
  set(emu_sources ${emu}/src/device.cpp ${emu}/src/runtime.cpp ${emu}/src/cublas.cpp)
  target_sources(${target} PRIVATE ${converted_sources} ${converted_headers} ${host_sources} ${emu_sources})
  # The GPU keeps a product and a sum apart unless the code fuses them: so must the host.
  set_source_files_properties(${converted_sources} ${emu_sources} PROPERTIES COMPILE_OPTIONS "-ffp-contract=off;-Wno-unknown-pragmas")
  target_include_directories(${target} BEFORE PRIVATE ${out}/include ${emu}/include)
  target_compile_definitions(${target} PRIVATE EMBER_CUDA_EMULATION=1)
endfunction()
