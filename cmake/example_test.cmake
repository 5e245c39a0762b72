# The CTest test `embedding_example`: ember as a product embeds it. It installs the built
# library into a scratch prefix inside the build tree, configures docs/example against that
# prefix with find_package(ember), builds it with the compiler that built ember, and runs it
# (the program trains a small MLP and takes a double backward; it exits non-zero when the
# loss does not fall or the result is not finite). The steps are in run_example_test.cmake.
#
# Included by the top-level CMakeLists.txt when tests are enabled, after enable_testing():
#     if(EMBER_BUILD_TESTS)
#       enable_testing()
#       add_subdirectory(tests)
#       include(cmake/example_test.cmake)
#     endif()
#
# Scratch folders: ${CMAKE_BINARY_DIR}/embedding_example/{prefix,build}. By hand:
#     ctest --test-dir build -R embedding_example --output-on-failure

# The source root, found from this file's place so that it is right also when ember is a
# subproject of another build.
get_filename_component(_example_root ${CMAKE_CURRENT_LIST_DIR}/.. ABSOLUTE)
set(_example_work ${CMAKE_BINARY_DIR}/embedding_example)

# Compile flags the consumer must share with the library: the build's own flags, and the
# sanitizers (the installed package also asks for the sanitizer runtime at link time, see
# emberConfig.cmake.in).
set(_example_cxx_flags "${CMAKE_CXX_FLAGS}")
if(EMBER_SANITIZE)
  string(APPEND _example_cxx_flags " -fsanitize=${EMBER_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all")
endif()
string(STRIP "${_example_cxx_flags}" _example_cxx_flags)

add_test(NAME embedding_example
  COMMAND ${CMAKE_COMMAND}
    -DEMBER_BUILD_DIR=${CMAKE_BINARY_DIR}
    -DEMBER_EXAMPLE_SOURCE_DIR=${_example_root}/docs/example
    -DEMBER_EXAMPLE_WORK_DIR=${_example_work}
    -DEMBER_EXAMPLE_CONFIG=$<CONFIG>
    -DEMBER_EXAMPLE_GENERATOR=${CMAKE_GENERATOR}
    -DEMBER_EXAMPLE_MAKE_PROGRAM=${CMAKE_MAKE_PROGRAM}
    -DEMBER_EXAMPLE_CXX_COMPILER=${CMAKE_CXX_COMPILER}
    "-DEMBER_EXAMPLE_CXX_FLAGS=${_example_cxx_flags}"
    -P ${_example_root}/cmake/run_example_test.cmake)
# It compiles a program: give it time on a slow machine, and keep two runs of it (ctest -j
# with -C for two configurations) from sharing the scratch folders.
set_tests_properties(embedding_example PROPERTIES
  TIMEOUT 600
  LABELS example
  RESOURCE_LOCK ember_embedding_example)
