// What the kernels need to know of the machine they run on, read from the system once.
#pragma once

#include <cstdint>

namespace fusedrnn {
namespace detail {

// Bytes of the level-2 cache that one core has to itself: the cache that keeps a time loop's
// packed weights from one step to the next. FUSEDRNN_L2_BYTES overrides what the system says
// (a virtual machine may report its host's cache, or none).
int64_t l2_bytes_per_core();

}  // namespace detail
}  // namespace fusedrnn
