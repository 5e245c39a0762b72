// The emulated kernels' scheduler: a grid's blocks run one after another on the launching host
// thread; a block's CUDA threads are fibers that run one at a time, in thread order, each until
// it finishes or must wait at a barrier (block, warp, shuffle, WMMA). A round in which no fiber
// can move is a deadlock; a barrier met at two call sites is divergent. Both end the launch
// with an error (emu::record_error) rather than a hang, like a faulting kernel.
//
// The fibers switch with a few instructions of x86-64 assembly (callee-saved registers, the
// stack pointer, MXCSR and the x87 control word), not swapcontext, which makes a system call
// per switch: a grid of 10^5 threads switches 2 * 10^5 times at the least.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <array>
#include <bit>
#include <memory>
#include <string>
#include <vector>

#include "emu/device.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#if !defined(__x86_64__)
#error "tools/cuda_emu switches fibers with x86-64 assembly"
#endif

extern "C" void emu_switch_context(void** save_sp, void* load_sp);
asm(R"(
.text
.globl emu_switch_context
.type emu_switch_context,@function
emu_switch_context:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size emu_switch_context, .-emu_switch_context
.section .note.GNU-stack,"",@progbits
.text
)");

namespace emu {
namespace {

constexpr size_t kStackBytes = 512 * 1024;  // kernels keep tiles of registers as local arrays
constexpr int kMaxThreads = 1024;

struct PendingCopy {
  void* dst;
  const void* src;
  size_t bytes;
  bool valid;
};

struct Barrier {
  int arrived = 0;
  unsigned generation = 0;
  unsigned mask = 0;  // a warp barrier's lanes (__syncwarp(mask), a shuffle's mask)
  const char* file = nullptr;
  int line = 0;
};

struct Fiber {
  void* sp = nullptr;
  bool done = false;
  const Barrier* waiting_at = nullptr;  // until its generation moves on
  unsigned wait_generation = 0;
  uint3 index{};
  std::vector<std::vector<PendingCopy>> committed;  // cp.async groups, oldest first
  std::vector<PendingCopy> open_group;
};

// Lanes of a warp may meet in groups of their own (divergent halves shuffling with their own
// masks): one barrier per mask in use.
struct WarpState {
  std::array<Barrier, 8> barriers;
  int barriers_used = 0;
  unsigned live = 0;  // lanes not yet finished
  uint64_t slots[32] = {};
  std::vector<unsigned char> scratch;  // warp-collective operations' shared bytes (WMMA)
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<WarpState> warps;
  Barrier barrier;
  int live = 0;
  std::vector<unsigned char> dynamic_shared;
  const std::function<void()>* body = nullptr;
  std::string failure;  // set: abandon the block and the launch
};

struct Scheduler {
  void* sp = nullptr;  // the host thread's own stack while a fiber runs
  Block* block = nullptr;
  int current = -1;
  unsigned char* stacks = nullptr;  // kMaxThreads stacks, each above a guard page
  size_t stride = 0;
  bool stacks_abandoned = false;  // a failed block left fibers mid-stack (see unpoison_stacks)
};

thread_local Scheduler sched;

Fiber& me() { return sched.block->fibers[static_cast<size_t>(sched.current)]; }

void yield_to_scheduler() { emu_switch_context(&me().sp, sched.sp); }

[[noreturn]] void fiber_main() {
  (*sched.block->body)();
  Fiber& f = me();
  f.done = true;
  Block& b = *sched.block;
  --b.live;
  WarpState& w = b.warps[static_cast<size_t>(sched.current / 32)];
  w.live &= ~(1u << (sched.current % 32));
  // A thread that finishes no longer holds back the barriers it will never reach.
  if (b.barrier.arrived > 0 && b.barrier.arrived >= b.live) {
    b.barrier.arrived = 0;
    ++b.barrier.generation;
  }
  for (int k = 0; k < w.barriers_used; ++k) {
    Barrier& bar = w.barriers[static_cast<size_t>(k)];
    if (bar.arrived > 0 && bar.arrived >= __builtin_popcount(bar.mask & w.live)) {
      bar.arrived = 0;
      ++bar.generation;
    }
  }
  emu_switch_context(&f.sp, sched.sp);
  __builtin_unreachable();
}

void allocate_stacks() {
  if (sched.stacks) return;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  sched.stride = kStackBytes + page;
  void* p = mmap(nullptr, sched.stride * kMaxThreads, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("cuda_emu: mmap of the fiber stacks");
    std::abort();
  }
  sched.stacks = static_cast<unsigned char*>(p);
  for (int i = 0; i < kMaxThreads; ++i) mprotect(sched.stacks + sched.stride * i, page, PROT_NONE);
}

// Under AddressSanitizer: a failed block abandons its fibers mid-call, so their frames' redzones
// stay poisoned, and the next fiber to use that stack would trip over them (a false
// stack-buffer-overflow). The next block clears the stacks' poison once.
void unpoison_stacks() {
#if defined(__SANITIZE_ADDRESS__)
  if (sched.stacks_abandoned && sched.stacks) {
    const size_t page = sched.stride - kStackBytes;
    for (int i = 0; i < kMaxThreads; ++i)
      ASAN_UNPOISON_MEMORY_REGION(sched.stacks + sched.stride * i + page, kStackBytes);
  }
#endif
  sched.stacks_abandoned = false;
}

// A fresh fiber's stack holds what emu_switch_context pops: MXCSR and x87 control word,
// six callee-saved registers, and fiber_main as the return address.
void* initial_stack(int thread) {
  unsigned char* top = sched.stacks + sched.stride * static_cast<size_t>(thread + 1);
  auto* sp = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(top) & ~uintptr_t{15});
  *--sp = 0;                                            // alignment: fiber_main starts as if called
  *--sp = reinterpret_cast<uint64_t>(&fiber_main);      // return address
  for (int r = 0; r < 6; ++r) *--sp = 0;                // rbp rbx r12 r13 r14 r15
  *--sp = 0x1F80u | (uint64_t{0x037Fu} << 32);          // MXCSR (default), x87 control word
  return sp;
}

// EMBER_EMU_BLOCK_ORDER=reverse runs each grid's blocks last to first: a kernel whose result
// depends on the order its blocks run in (a race between blocks) then gives another answer.
bool blocks_in_reverse() {
  static const bool reverse = [] {
    const char* v = std::getenv("EMBER_EMU_BLOCK_ORDER");
    return v && std::strcmp(v, "reverse") == 0;
  }();
  return reverse;
}

std::string where(const char* file, int line) { return std::string(file) + ":" + std::to_string(line); }

[[noreturn]] void fail(const std::string& why) {
  Block& b = *sched.block;
  if (b.failure.empty()) b.failure = why;
  yield_to_scheduler();  // never resumed: the scheduler abandons the block
  std::abort();
}

std::string coords(const uint3& v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}

// Arrive at `bar`, whose round completes when `participants` have arrived.
void arrive(Barrier& bar, int participants, const char* file, int line, const char* what) {
  if (bar.arrived == 0) {
    bar.file = file;
    bar.line = line;
  } else if (bar.line != line || (bar.file != file && std::strcmp(bar.file, file) != 0)) {
    fail(std::string("divergent ") + what + ": thread " + coords(threadIdx) + " of block " + coords(blockIdx) +
         " waits at " + where(file, line) + " while others wait at " + where(bar.file, bar.line));
  }
  if (++bar.arrived >= participants) {
    bar.arrived = 0;
    ++bar.generation;
    return;
  }
  Fiber& f = me();
  f.waiting_at = &bar;
  f.wait_generation = bar.generation;
  yield_to_scheduler();
  f.waiting_at = nullptr;
}

bool can_run(const Fiber& f) {
  return !f.done && (!f.waiting_at || f.waiting_at->generation != f.wait_generation);
}

void run_block(Block& b, const LaunchConfig& c) {
  unpoison_stacks();
  const int n = static_cast<int>(c.block.x * c.block.y * c.block.z);
  b.fibers.assign(static_cast<size_t>(n), Fiber{});
  b.warps.assign(static_cast<size_t>((n + 31) / 32), WarpState{});
  for (int i = 0; i < n; ++i) {
    b.warps[static_cast<size_t>(i / 32)].live |= 1u << (i % 32);
    Fiber& f = b.fibers[static_cast<size_t>(i)];
    f.index = {static_cast<unsigned>(i) % c.block.x, static_cast<unsigned>(i) / c.block.x % c.block.y,
               static_cast<unsigned>(i) / (c.block.x * c.block.y)};
    f.sp = initial_stack(i);
  }
  b.barrier = Barrier{};
  b.live = n;
  std::fill(b.dynamic_shared.begin(), b.dynamic_shared.end(), static_cast<unsigned char>(0xFF));
  int finished = 0;
  while (finished < n) {
    bool moved = false;
    for (int i = 0; i < n; ++i) {
      Fiber& f = b.fibers[static_cast<size_t>(i)];
      if (!can_run(f)) continue;
      sched.current = i;
      threadIdx = f.index;
      emu_switch_context(&sched.sp, f.sp);
      moved = true;
      if (f.done) ++finished;
      if (!b.failure.empty()) {
        sched.stacks_abandoned = true;
        return;
      }
    }
    if (!moved) {
      std::string who;
      for (int i = 0; i < n && who.size() < 200; ++i) {
        const Fiber& f = b.fibers[static_cast<size_t>(i)];
        if (!f.done) who += " " + coords(f.index) + (f.waiting_at == &b.barrier ? "@__syncthreads" : "@warp");
      }
      b.failure = "deadlock in block " + coords(blockIdx) + ": threads waiting for ones that never arrive:" + who;
      sched.stacks_abandoned = true;
      return;
    }
  }
}

}  // namespace

void launch(const LaunchConfig& c, const void* kernel, std::function<void()> body) {
  auto site = [&c] { return where(c.file, c.line); };  // built only for a message
  const uint64_t threads = uint64_t{c.block.x} * c.block.y * c.block.z;
  if (threads == 0 || threads > kMaxThreads || c.block.z > 64) {
    record_error(cudaErrorInvalidConfiguration, "kernel launch at " + site() + ": block of " + std::to_string(c.block.x) +
                                                    "x" + std::to_string(c.block.y) + "x" + std::to_string(c.block.z) +
                                                    " threads (1..1024, z <= 64)");
    return;
  }
  if (c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0 || c.grid.x > 0x7fffffffu || c.grid.y > 65535 ||
      c.grid.z > 65535) {
    record_error(cudaErrorInvalidConfiguration, "kernel launch at " + site() + ": grid of " + std::to_string(c.grid.x) +
                                                    "x" + std::to_string(c.grid.y) + "x" + std::to_string(c.grid.z));
    return;
  }
  if (c.shared_bytes > static_cast<size_t>(max_dynamic_shared_bytes(kernel))) {
    record_error(cudaErrorInvalidValue, "kernel launch at " + site() + ": " + std::to_string(c.shared_bytes) +
                                            " bytes of dynamic shared memory, allowed " +
                                            std::to_string(max_dynamic_shared_bytes(kernel)));
    return;
  }
  // submit() reports its own failures (an invalidated capture, an unknown stream).
  submit(c.stream, [c, body = std::move(body)]() {
    note_kernel_run();
    if (skip_device_work()) return;
    allocate_stacks();
    if (sched.block) {
      record_error(cudaErrorLaunchFailure, "kernel launch at " + where(c.file, c.line) + " from inside a running kernel");
      return;
    }
    Block b;
    b.body = &body;
    b.dynamic_shared.resize(c.shared_bytes);
    sched.block = &b;
    blockDim = c.block;
    gridDim = c.grid;
    const uint64_t blocks = uint64_t{c.grid.x} * c.grid.y * c.grid.z;
    const bool reverse = blocks_in_reverse();
    for (uint64_t k = 0; k < blocks && b.failure.empty(); ++k) {
      const uint64_t i = reverse ? blocks - 1 - k : k;
      blockIdx = {static_cast<unsigned>(i % c.grid.x), static_cast<unsigned>(i / c.grid.x % c.grid.y),
                  static_cast<unsigned>(i / (uint64_t{c.grid.x} * c.grid.y))};
      run_block(b, c);
    }
    sched.block = nullptr;
    sched.current = -1;
    if (!b.failure.empty()) record_error(cudaErrorLaunchFailure, "kernel launched at " + where(c.file, c.line) + ": " + b.failure);
  });
}

void syncthreads(const char* file, int line) {
  Block& b = *sched.block;
  arrive(b.barrier, b.live, file, line, "__syncthreads");
}

void syncwarp(unsigned mask, const char* file, int line) {
  WarpState& w = sched.block->warps[static_cast<size_t>(sched.current / 32)];
  Barrier* bar = nullptr;
  for (int k = 0; k < w.barriers_used && !bar; ++k)
    if (w.barriers[static_cast<size_t>(k)].mask == mask) bar = &w.barriers[static_cast<size_t>(k)];
  if (!bar) {
    if (w.barriers_used == static_cast<int>(w.barriers.size()))
      fail("more than 8 distinct warp masks in use at once in block " + coords(blockIdx) + " (" + where(file, line) + ")");
    bar = &w.barriers[static_cast<size_t>(w.barriers_used++)];
    bar->mask = mask;
  }
  if (!(mask >> (sched.current % 32) & 1u))
    fail("thread " + coords(threadIdx) + " is not in the mask of the warp operation at " + where(file, line));
  arrive(*bar, __builtin_popcount(mask & w.live), file, line, "warp barrier");
}

unsigned lane() { return static_cast<unsigned>(sched.current % 32); }

uint64_t* warp_exchange_slots() { return sched.block->warps[static_cast<size_t>(sched.current / 32)].slots; }

unsigned char* warp_scratch(size_t bytes) {
  std::vector<unsigned char>& s = sched.block->warps[static_cast<size_t>(sched.current / 32)].scratch;
  if (s.size() < bytes) s.resize(bytes);
  return s.data();
}

bool first_live_lane() {
  const unsigned live = sched.block->warps[static_cast<size_t>(sched.current / 32)].live;
  return static_cast<unsigned>(__builtin_ctz(live)) == lane();
}

void report_divergent_fragments(const char* op) {
  fail(std::string(op) + ": the lanes of a warp of block " + coords(blockIdx) + " hold different fragments (thread " +
       coords(threadIdx) + "); a warp-collective WMMA operation needs the same tiles in every lane");
}

unsigned char* dynamic_shared() { return sched.block->dynamic_shared.data(); }

// cp.async: a copy lands only when a wait_group lets it, so code that reads a stage before
// waiting for it reads the stage's old contents, as it might on the GPU.
void cp_async(void* smem, const void* gmem, size_t bytes, bool valid) {
  if (bytes != 4 && bytes != 8 && bytes != 16)
    fail("cp.async of " + std::to_string(bytes) + " bytes (4, 8 or 16) by thread " + coords(threadIdx));
  if (reinterpret_cast<uintptr_t>(smem) % bytes != 0 || reinterpret_cast<uintptr_t>(gmem) % bytes != 0)
    fail("cp.async of " + std::to_string(bytes) + " bytes from a misaligned address (thread " + coords(threadIdx) +
         " of block " + coords(blockIdx) + ")");
  me().open_group.push_back({smem, gmem, bytes, valid});
}

// mma.sync m16n8k{8,16}: each lane leaves its registers in the warp's scratch; the first lane
// places them in the tiles by the fragment layout (emu/device.h), multiplies and leaves each
// lane's D; every lane takes its own.
namespace {
struct MmaLaneRegs {
  uint32_t a[4], b[2];
  float c[4];
};

float tf32_operand(uint32_t bits) { return std::bit_cast<float>(bits & 0xffffe000u); }
float bf16_half(uint32_t bits, int high) { return std::bit_cast<float>(high ? bits & 0xffff0000u : bits << 16); }

void mma_m16n8(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], bool bf16) {
  unsigned char* scratch = warp_scratch(sizeof(MmaLaneRegs) * 32 + sizeof(float) * 128);
  auto* regs = reinterpret_cast<MmaLaneRegs*>(scratch);
  float* out = reinterpret_cast<float*>(scratch + sizeof(MmaLaneRegs) * 32);
  const unsigned me_lane = lane();
  std::memcpy(regs[me_lane].a, a, sizeof(regs->a));
  std::memcpy(regs[me_lane].b, b, sizeof(regs->b));
  std::memcpy(regs[me_lane].c, c, sizeof(regs->c));
  syncwarp(0xffffffffu, "mma.sync", 0);
  if (first_live_lane()) {
    if (sched.block->warps[static_cast<size_t>(sched.current / 32)].live != 0xffffffffu)
      fail("mma.sync with a partial warp in block " + coords(blockIdx) + ": all 32 lanes must take part");
    const int K = bf16 ? 16 : 8;
    float A[16][16] = {}, B[16][8] = {}, C[16][8] = {};
    for (int l = 0; l < 32; ++l) {
      const int g = l / 4, t = l % 4;
      const MmaLaneRegs& r = regs[l];
      if (bf16) {
        for (int i = 0; i < 4; ++i)
          for (int h = 0; h < 2; ++h) A[g + 8 * (i % 2)][2 * t + 8 * (i / 2) + h] = bf16_half(r.a[i], h);
        for (int i = 0; i < 2; ++i)
          for (int h = 0; h < 2; ++h) B[2 * t + 8 * i + h][g] = bf16_half(r.b[i], h);
      } else {
        for (int i = 0; i < 4; ++i) A[g + 8 * (i % 2)][t + 4 * (i / 2)] = tf32_operand(r.a[i]);
        for (int i = 0; i < 2; ++i) B[t + 4 * i][g] = tf32_operand(r.b[i]);
      }
      for (int i = 0; i < 4; ++i) C[g + 8 * (i / 2)][2 * t + i % 2] = r.c[i];
    }
    for (int l = 0; l < 32; ++l) {
      const int g = l / 4, t = l % 4;
      for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
        float s = C[row][col];
        for (int k = 0; k < K; ++k) s += A[row][k] * B[k][col];
        out[l * 4 + i] = s;
      }
    }
  }
  syncwarp(0xffffffffu, "mma.sync", 1);
  std::memcpy(d, out + me_lane * 4, 4 * sizeof(float));
  syncwarp(0xffffffffu, "mma.sync", 2);
}
}  // namespace

void mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  mma_m16n8(d, a, b, c, false);
}
void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  mma_m16n8(d, a, b, c, true);
}

void cp_async_commit() {
  Fiber& f = me();
  f.committed.push_back(std::move(f.open_group));
  f.open_group.clear();
}

void cp_async_wait(int pending_groups_allowed) {
  Fiber& f = me();
  while (static_cast<int>(f.committed.size()) > pending_groups_allowed) {
    for (const PendingCopy& c : f.committed.front()) {
      if (c.valid) std::memcpy(c.dst, c.src, c.bytes);
      else std::memset(c.dst, 0, c.bytes);  // src-size 0: the destination is zero-filled
    }
    f.committed.erase(f.committed.begin());
  }
}

}  // namespace emu
