// EMBER_ASAN: 1 in an AddressSanitizer build (GCC or Clang), else 0. ember's caches of freed
// memory (the host allocator's buffers, the object pool's blocks) step aside there, so that a
// use after free reaches the sanitizer.
#pragma once

#if defined(__SANITIZE_ADDRESS__)
#define EMBER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMBER_ASAN 1
#endif
#endif
#ifndef EMBER_ASAN
#define EMBER_ASAN 0
#endif
