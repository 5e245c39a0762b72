# libFuzzer targets, built with clang++ whatever compiler builds the rest of ember.
#
# Included by the top-level CMakeLists.txt when tests are enabled, after enable_testing()
# and after EMBER_BUILD_INCLUDE (the directory holding the `ember` link to the source root)
# is set:
#     if(EMBER_BUILD_TESTS)
#       enable_testing()
#       add_subdirectory(tests)
#       include(cmake/fuzz.cmake)
#     endif()
#
# libFuzzer ships with clang only, and the project may be configured with GCC, so the fuzz
# programs are compiled by a custom command that calls clang++ directly on the few sources
# they need (each target depends on the standard library and engine/error.h only, never on
# the ember library, which GCC may have built with another ABI or other sanitizers).
#
# Targets: fuzz_safetensors (part of ALL) -> ${CMAKE_BINARY_DIR}/fuzz/fuzz_safetensors.
# Test:    fuzz_safetensors_brief, a 10-second run from a copy of tests/fuzz/corpus, so that
#          ctest exercises the fuzzer without writing into the source tree. For a long run:
#            build/fuzz/fuzz_safetensors -max_total_time=600 build/fuzz/corpus_safetensors
# Turn off with -DEMBER_FUZZ=OFF.

option(EMBER_FUZZ "Build libFuzzer targets when clang++ with -fsanitize=fuzzer is found" ON)
if(NOT EMBER_FUZZ)
  return()
endif()
if(NOT DEFINED EMBER_BUILD_INCLUDE)
  message(FATAL_ERROR "cmake/fuzz.cmake needs EMBER_BUILD_INCLUDE (include it after it is set)")
endif()

find_program(EMBER_FUZZ_CLANGXX NAMES clang++ clang++-19 clang++-18 clang++-17 clang++-16 clang++-15 clang++-14
  DOC "clang++ used to build the libFuzzer targets")
if(NOT EMBER_FUZZ_CLANGXX)
  message(STATUS "ember: no clang++ found; fuzz targets skipped")
  return()
endif()

# Does this clang link -fsanitize=fuzzer (it needs libclang_rt.fuzzer, packaged separately
# on some systems)? Try once per compiler and cache the answer.
if(NOT DEFINED EMBER_FUZZ_WORKS OR NOT EMBER_FUZZ_WORKS_FOR STREQUAL EMBER_FUZZ_CLANGXX)
  set(_probe_dir ${CMAKE_BINARY_DIR}/CMakeFiles/ember_fuzz_probe)
  file(WRITE ${_probe_dir}/probe.cpp
    "#include <cstddef>\n#include <cstdint>\n"
    "extern \"C\" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n")
  execute_process(
    COMMAND ${EMBER_FUZZ_CLANGXX} -std=c++20 -fsanitize=fuzzer,address,undefined
            ${_probe_dir}/probe.cpp -o ${_probe_dir}/probe
    RESULT_VARIABLE _probe_result OUTPUT_QUIET ERROR_VARIABLE _probe_error)
  if(_probe_result EQUAL 0)
    set(_works ON)
  else()
    set(_works OFF)
  endif()
  set(EMBER_FUZZ_WORKS ${_works} CACHE INTERNAL "clang++ links -fsanitize=fuzzer")
  set(EMBER_FUZZ_WORKS_FOR ${EMBER_FUZZ_CLANGXX} CACHE INTERNAL "the clang++ EMBER_FUZZ_WORKS was probed with")
endif()
if(NOT EMBER_FUZZ_WORKS)
  message(STATUS "ember: ${EMBER_FUZZ_CLANGXX} cannot link -fsanitize=fuzzer (libclang_rt.fuzzer missing?); "
                 "fuzz targets skipped")
  return()
endif()
message(STATUS "ember: fuzz targets built with ${EMBER_FUZZ_CLANGXX}")

# The source root, found from this file's place so that it is right also when ember is a
# subproject of another build.
get_filename_component(_fuzz_root ${CMAKE_CURRENT_LIST_DIR}/.. ABSOLUTE)

set(EMBER_FUZZ_DIR ${CMAKE_BINARY_DIR}/fuzz)
# -O1 -g: fast enough to fuzz, readable stacks. UB is made fatal so that libFuzzer stops on
# it and saves the input, rather than printing a report and going on.
set(EMBER_FUZZ_FLAGS -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
  -fno-omit-frame-pointer)

# ---- fuzz_safetensors: the safetensors header reader and the JSON parser ---------------
set(_fuzz_st_sources
  ${_fuzz_root}/tests/fuzz/fuzz_safetensors.cpp
  ${_fuzz_root}/engine/serialization/safetensors_format.cpp
  ${_fuzz_root}/engine/serialization/json.cpp)
set(_fuzz_st_headers
  ${_fuzz_root}/engine/error.h
  ${_fuzz_root}/engine/serialization/json.h
  ${_fuzz_root}/engine/serialization/safetensors_format.h)
file(GLOB _fuzz_st_seeds CONFIGURE_DEPENDS ${_fuzz_root}/tests/fuzz/corpus/*)
set(_fuzz_st_bin ${EMBER_FUZZ_DIR}/fuzz_safetensors)
# libFuzzer writes the inputs it finds into the first corpus directory: give it a copy.
set(_fuzz_st_corpus ${EMBER_FUZZ_DIR}/corpus_safetensors)
set(_fuzz_st_stamp ${EMBER_FUZZ_DIR}/corpus_safetensors.stamp)

add_custom_command(OUTPUT ${_fuzz_st_bin}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${EMBER_FUZZ_DIR}
  COMMAND ${EMBER_FUZZ_CLANGXX} ${EMBER_FUZZ_FLAGS} -I${EMBER_BUILD_INCLUDE} ${_fuzz_st_sources} -o ${_fuzz_st_bin}
  DEPENDS ${_fuzz_st_sources} ${_fuzz_st_headers}
  COMMENT "Building libFuzzer target fuzz_safetensors with ${EMBER_FUZZ_CLANGXX}"
  VERBATIM)
add_custom_command(OUTPUT ${_fuzz_st_stamp}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${_fuzz_st_corpus}
  COMMAND ${CMAKE_COMMAND} -E copy_directory ${_fuzz_root}/tests/fuzz/corpus ${_fuzz_st_corpus}
  COMMAND ${CMAKE_COMMAND} -E touch ${_fuzz_st_stamp}
  DEPENDS ${_fuzz_st_seeds}
  COMMENT "Copying the fuzz_safetensors seed corpus"
  VERBATIM)
add_custom_target(fuzz_safetensors ALL DEPENDS ${_fuzz_st_bin} ${_fuzz_st_stamp})

add_test(NAME fuzz_safetensors_brief
  COMMAND ${_fuzz_st_bin} -max_total_time=10 -rss_limit_mb=1024 -artifact_prefix=${EMBER_FUZZ_DIR}/
          ${_fuzz_st_corpus}
  WORKING_DIRECTORY ${EMBER_FUZZ_DIR})
set_tests_properties(fuzz_safetensors_brief PROPERTIES TIMEOUT 120 LABELS fuzz)
