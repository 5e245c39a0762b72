# The CUDA backend's build: EMBER_CUDA = AUTO | ON | OFF | EMULATE decides whether it is built
# (EMULATE: with the C++ compiler alone, run on the CPU by tools/cuda_emu; cmake/cuda_emu.cmake).
#
# What it adds to the `ember` target (ember_add_cuda_sources): the kernels (kernels/cuda/*.cu,
# compiled by nvcc for CMAKE_CUDA_ARCHITECTURES, default sm_90), the host side of the runtime
# (kernels/cuda/*.cpp and, in every build, engine/cuda/*.cpp, compiled by the C++ compiler against the CUDA
# headers), the static CUDA runtime and cuBLAS/cuBLASLt. Nothing of CUDA appears in ember's
# public headers: a program that embeds a CUDA build needs the CUDA toolkit's libraries to link,
# not its headers.
set(EMBER_HAVE_CUDA OFF)
set(EMBER_CUDA_EMULATED OFF)
if(EMBER_CUDA STREQUAL "EMULATE")
  set(EMBER_HAVE_CUDA ON)
  set(EMBER_CUDA_EMULATED ON)
  include(cmake/cuda_emu.cmake)
  message(STATUS "ember: CUDA backend EMULATED on the CPU (tools/cuda_emu): for tests, not for speed")
elseif(EMBER_CUDA STREQUAL "ON" OR EMBER_CUDA STREQUAL "AUTO")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(EMBER_HAVE_CUDA ON)
  elseif(EMBER_CUDA STREQUAL "ON")
    message(FATAL_ERROR "EMBER_CUDA=ON but no CUDA compiler was found: put nvcc on PATH or set CUDACXX, "
                        "or configure with -DEMBER_CUDA=AUTO (builds CPU-only where nvcc is missing)")
  else()
    message(STATUS "ember: no nvcc found: CPU-only build")
  endif()
elseif(NOT EMBER_CUDA STREQUAL "OFF")
  message(FATAL_ERROR "EMBER_CUDA must be AUTO, ON, OFF or EMULATE, got '${EMBER_CUDA}'")
endif()

if(EMBER_HAVE_CUDA AND NOT EMBER_CUDA_EMULATED)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90 CACHE STRING "GPU architectures the CUDA kernels are compiled for")
  endif()
  enable_language(CUDA)
  # CMake 3.25 knows no C++20 dialect flag for nvcc (which has taken -std=c++20 since CUDA 12.0).
  if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  endif()
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  find_package(CUDAToolkit REQUIRED)
  message(STATUS "ember: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
endif()

function(ember_add_cuda_sources target)
  file(GLOB_RECURSE cu_sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/kernels/cuda/*.cu)
  # engine/cuda/*.cpp are in every build (without CUDA they answer "no device"); these are not.
  file(GLOB_RECURSE host_sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/kernels/cuda/*.cpp)
  target_sources(${target} PRIVATE ${cu_sources} ${host_sources})
  # --use_fast_math is not used: the parity tests compare against the CPU to f32 rounding.
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -Xcompiler=-Wall>)
  target_link_libraries(${target} PRIVATE CUDA::cudart_static CUDA::cublas CUDA::cublasLt)
  target_include_directories(${target} PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
endfunction()
