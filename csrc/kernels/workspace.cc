// The per-thread scratch arena behind Buffer and Workspace (common.h).
#include <algorithm>

#include "common.h"

namespace fusedrnn {
namespace detail {

Arena& Arena::local() {
  thread_local Arena arena;
  return arena;
}

void* Arena::take(size_t bytes) {
  constexpr size_t kAlign = 64;
  bytes = (bytes + kAlign - 1) / kAlign * kAlign + kAlign;  // room to align the start
  if (chunks_.empty() || chunks_[current_].size - chunks_[current_].used < bytes) {
    // Chunks past the current one hold no live buffer (buffers are released in order).
    const size_t next = chunks_.empty() ? 0 : current_ + 1;
    if (next < chunks_.size() && chunks_[next].size >= bytes) {
      chunks_[next].used = 0;
    } else {
      const size_t size = std::max(bytes, size_t{1} << 20);
      chunks_.resize(next);
      chunks_.push_back(Chunk{std::unique_ptr<char[]>(new char[size]), size, 0});
    }
    current_ = next;
  }
  Chunk& c = chunks_[current_];
  const uintptr_t at = reinterpret_cast<uintptr_t>(c.data.get()) + c.used;
  char* out = reinterpret_cast<char*>((at + kAlign - 1) / kAlign * kAlign);
  c.used += bytes;
  return out;
}

void Arena::release(Mark m) {
  current_ = m.chunk;
  if (!chunks_.empty()) chunks_[current_].used = m.used;
}

}  // namespace detail
}  // namespace fusedrnn
