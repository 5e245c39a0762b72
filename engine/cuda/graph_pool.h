// Internal to engine/cuda: how CudaGraph (graph.cpp) tells the caching allocator
// (allocator.cpp) and the runtime (runtime.cpp) that a capture is in progress. Not for ops or
// programs: they use graph.h.
#pragma once
#include <cstdint>

namespace ember::cuda::detail {

// A new, empty private pool of device `index`'s allocator; its id is never 0.
uint64_t create_graph_pool(int index);
// From now until end_pool_capture, allocations on device `index` come from `pool` and frees go
// to it (see allocator.cpp). Throws if a capture is already routed to a pool there.
void begin_pool_capture(int index, uint64_t pool);
void end_pool_capture(int index);
// The graph is gone: the pool's free blocks return to the device's cache; its live blocks return
// there when their tensors are freed. Safe to call twice.
void release_graph_pool(int index, uint64_t pool);

// Marks device `index` as capturing (runtime.cpp): host reads and synchronisation then raise.
void set_capturing(int index, bool on);

}  // namespace ember::cuda::detail
