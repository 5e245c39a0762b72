# cmake -P script behind the CTest test `embedding_example` (added by example_test.cmake):
#   1. cmake --install <EMBER_BUILD_DIR> --prefix <work>/prefix   (a fresh prefix each run)
#   2. configure docs/example with -DCMAKE_PREFIX_PATH=<work>/prefix, the same generator and
#      C++ compiler as ember, and check that find_package found the package in that prefix
#   3. build it
#   4. run it; its exit code is the test's
# Any failing step stops the script with FATAL_ERROR naming the step and showing its output,
# so ctest reports the test as failed.
#
# Variables (-D):
#   EMBER_BUILD_DIR            ember's build tree (already built)
#   EMBER_EXAMPLE_SOURCE_DIR   docs/example
#   EMBER_EXAMPLE_WORK_DIR     scratch folder for the prefix and the example's build
#   EMBER_EXAMPLE_CONFIG       build configuration (Release, RelWithDebInfo...); may be empty
#   EMBER_EXAMPLE_GENERATOR    CMake generator of ember's build
#   EMBER_EXAMPLE_MAKE_PROGRAM make / ninja of ember's build (optional)
#   EMBER_EXAMPLE_CXX_COMPILER C++ compiler of ember's build
#   EMBER_EXAMPLE_CXX_FLAGS    extra compile flags (ember's CMAKE_CXX_FLAGS, sanitizers)
cmake_minimum_required(VERSION 3.25)

foreach(var EMBER_BUILD_DIR EMBER_EXAMPLE_SOURCE_DIR EMBER_EXAMPLE_WORK_DIR EMBER_EXAMPLE_GENERATOR
            EMBER_EXAMPLE_CXX_COMPILER)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "embedding_example: run_example_test.cmake needs -D${var}=...")
  endif()
endforeach()
if(NOT EXISTS "${EMBER_BUILD_DIR}/cmake_install.cmake")
  message(FATAL_ERROR "embedding_example: ${EMBER_BUILD_DIR} is not a configured ember build tree "
                      "(no cmake_install.cmake)")
endif()

set(prefix "${EMBER_EXAMPLE_WORK_DIR}/prefix")
set(build "${EMBER_EXAMPLE_WORK_DIR}/build")

# Runs one step; on failure stops with the step's name, its command, its output and
# ${hint} when set.
function(run_step name)
  string(REPLACE ";" " " shown "${ARGN}")
  message(STATUS "embedding_example: ${name}: ${shown}")
  execute_process(COMMAND ${ARGN}
    RESULT_VARIABLE rc
    OUTPUT_VARIABLE out
    ERROR_VARIABLE out)
  if(NOT rc STREQUAL "0")
    message(FATAL_ERROR "embedding_example: step '${name}' failed (exit ${rc}).\n"
                        "command: ${shown}\n"
                        "---- output ----\n${out}\n---- end of output ----\n${hint}")
  endif()
endfunction()

# ---- 1. install into a fresh prefix (stale files there could hide a missing install rule) ----
file(REMOVE_RECURSE "${prefix}" "${build}")
set(install_cmd ${CMAKE_COMMAND} --install "${EMBER_BUILD_DIR}" --prefix "${prefix}")
if(EMBER_EXAMPLE_CONFIG)
  list(APPEND install_cmd --config "${EMBER_EXAMPLE_CONFIG}")
endif()
set(hint "Is the build complete? The install needs every installed target built: run "
         "`cmake --build ${EMBER_BUILD_DIR}` (all targets) before ctest.")
string(CONCAT hint ${hint})
run_step("install ember" ${install_cmd})
set(hint "")

# ---- 2. configure the example against the prefix only ----
set(configure_cmd ${CMAKE_COMMAND} -S "${EMBER_EXAMPLE_SOURCE_DIR}" -B "${build}"
  -G "${EMBER_EXAMPLE_GENERATOR}"
  "-DCMAKE_CXX_COMPILER=${EMBER_EXAMPLE_CXX_COMPILER}"
  "-DCMAKE_CXX_FLAGS=${EMBER_EXAMPLE_CXX_FLAGS}"
  "-DCMAKE_PREFIX_PATH=${prefix}"
  # never a package registered elsewhere on this machine
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
if(EMBER_EXAMPLE_MAKE_PROGRAM)
  list(APPEND configure_cmd "-DCMAKE_MAKE_PROGRAM=${EMBER_EXAMPLE_MAKE_PROGRAM}")
endif()
if(EMBER_EXAMPLE_CONFIG)
  list(APPEND configure_cmd "-DCMAKE_BUILD_TYPE=${EMBER_EXAMPLE_CONFIG}")
endif()
run_step("configure docs/example" ${configure_cmd})

# The package must come from the prefix just installed, not from a system copy.
file(STRINGS "${build}/CMakeCache.txt" found_dir REGEX "^ember_DIR:")
string(REGEX REPLACE "^ember_DIR:[A-Z]+=" "" found_dir "${found_dir}")
file(REAL_PATH "${prefix}" real_prefix)
if(EXISTS "${found_dir}")
  file(REAL_PATH "${found_dir}" found_dir)
endif()
string(FIND "${found_dir}/" "${real_prefix}/" at)
if(NOT at EQUAL 0)
  message(FATAL_ERROR "embedding_example: find_package(ember) found '${found_dir}', "
                      "not the package installed in ${prefix}")
endif()

# ---- 3. build ----
set(build_cmd ${CMAKE_COMMAND} --build "${build}")
if(EMBER_EXAMPLE_CONFIG)
  list(APPEND build_cmd --config "${EMBER_EXAMPLE_CONFIG}")
endif()
run_step("build docs/example" ${build_cmd})

# ---- 4. run ----
set(exe "")
foreach(candidate "${build}/ember_example" "${build}/${EMBER_EXAMPLE_CONFIG}/ember_example")
  if(EXISTS "${candidate}" AND NOT IS_DIRECTORY "${candidate}")
    set(exe "${candidate}")
    break()
  endif()
endforeach()
if(NOT exe)
  message(FATAL_ERROR "embedding_example: the build succeeded but no ember_example program is in ${build}")
endif()
message(STATUS "embedding_example: run: ${exe}")
execute_process(COMMAND "${exe}" RESULT_VARIABLE rc WORKING_DIRECTORY "${build}")  # output goes to ctest's log
if(NOT rc STREQUAL "0")
  message(FATAL_ERROR "embedding_example: ${exe} failed (exit ${rc}): the loss did not fall, the double "
                      "backward was not finite, or ember threw (see its output above)")
endif()
message(STATUS "embedding_example: passed")
