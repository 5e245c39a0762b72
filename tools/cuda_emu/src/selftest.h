// The self-tests' one check: a failed condition prints where and what, and is counted; main()
// returns nonzero when `failures` is.
#pragma once
#include <cstdio>

inline int failures = 0;
#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                          \
    }                                                                      \
  } while (0)
