// cp.async (sm_80+): copies from global to shared memory that run while the thread goes on, in
// commit groups that a later wait_group lands. A copy with `valid` false reads nothing (src-size
// 0) and fills its destination with zeros: how the tile loaders of conv_igemm.cu and
// flash_attention.cu pad past the edge of a tensor without a branch around the copy. Its source
// is not accessed, so it may be the address the element would have outside the tensor (the
// conv gather's windows over the padding; CUTLASS's implicit-GEMM iterators rely on the same);
// both addresses must still be aligned to the copy's size (the emulator checks that).
//
// The "memory" clobbers keep the compiler from moving shared-memory accesses across them even
// where no __syncthreads() stands next to them.
#pragma once
#include <cuda_runtime.h>

namespace ember::kernels::cuda {

#if defined(EMBER_CUDA_EMULATION)
// tools/cuda_emu has no PTX: it queues each copy and lands it at the wait_group that must see it.
__device__ __forceinline__ void cp_async4(void* smem, const float* gmem, bool valid) {
  ::emu::cp_async(smem, gmem, 4, valid);
}
__device__ __forceinline__ void cp_async16(void* smem, const float* gmem, bool valid) {
  ::emu::cp_async(smem, gmem, 16, valid);
}
__device__ __forceinline__ void cp_async_commit() { ::emu::cp_async_commit(); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  ::emu::cp_async_wait(N);
}
#else
// .ca for 4 bytes (the only cache mode a 4-byte copy takes); .cg for 16 bytes: staged tiles are
// read once per block from shared memory, so they need not stay in L1.
__device__ __forceinline__ void cp_async4(void* smem, const float* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 4 : 0) : "memory");
}
__device__ __forceinline__ void cp_async16(void* smem, const float* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
#endif

}  // namespace ember::kernels::cuda
