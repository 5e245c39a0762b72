// CPU threads: a persistent pool (or OpenMP when built with EMBER_USE_OPENMP) behind one call,
// parallel_for. The kernels and the ops use it for elementwise loops, reductions and GEMM.
//
// The pool holds num_threads()-1 workers; the calling thread runs chunks too. A job is at most
// num_threads() chunks, claimed dynamically (an atomic counter), so a worker that wakes late
// costs nothing: the caller takes its chunk. Idle workers spin for a short while before
// sleeping on a condition variable, so back-to-back calls (thousands per training step) are
// dispatched in about a microsecond, and an idle process does not burn CPU.
//
// Rules:
// - No nested parallelism: parallel_for called from inside a chunk runs inline.
// - One job at a time: when another thread is already using the pool, the call runs inline
//   on its own thread (never blocks, never deadlocks).
// - The first exception thrown by a chunk is rethrown in the caller once every started chunk
//   has finished; chunks not yet started are skipped.
// - The workers are joined at process exit; a forked child runs everything inline.
#pragma once
#include <cstdint>

#include "ember/kernels/cpu/function_ref.h"

namespace ember::kernels::cpu {

// Threads used by parallel_for, the caller included. Default: the environment variable
// EMBER_NUM_THREADS when it holds a positive integer, else std::thread::hardware_concurrency().
int num_threads();

// Sets the thread count (n < 1 means 1) for the jobs that start after this call; the pool
// grows or shrinks when its next job starts.
void set_num_threads(int n);

// True inside a parallel_for chunk (on a worker or on the calling thread), where a nested
// parallel_for runs inline.
bool in_parallel_region();

// Splits [begin, end) into at most num_threads() contiguous chunks of at least `grain` items
// each (grain < 1 means 1) and runs fn(chunk_begin, chunk_end) for each, on the pool. Runs
// fn(begin, end) inline when there is only one chunk (the range is smaller than 2*grain or one
// thread is configured) or when called from inside a chunk. Returns when all chunks are done.
void parallel_for(int64_t begin, int64_t end, int64_t grain, FunctionRef<void(int64_t, int64_t)> fn);

}  // namespace ember::kernels::cpu
