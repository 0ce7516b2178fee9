// A process-wide cache of large memory blocks, shared by the Python and MXNet glue.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <new>

namespace fusedrnn {

// Output arrays (Python) and operator reserves (MXNet) reuse blocks that earlier ones
// released. A fresh large allocation costs a page fault (and the kernel's zeroing) per 4 KiB
// page on first touch, which for the reserve and the gradients is a sizeable part of a small
// layer's time (an LSTM at 50 steps, batch 64, H = 128 trained 15% slower through MXNet
// before its 13 MB reserve was reused). Blocks are reused for requests of the same size
// class; at most kCacheLimit bytes stay cached.
class BlockCache {
 public:
  static BlockCache& instance() {
    static BlockCache* cache = new BlockCache();  // outlives every array (never destroyed)
    return *cache;
  }

  // Returns the block and records its size class just before it.
  void* take(size_t bytes) {
    // No allocation can be this large, and size_class would overflow past it.
    if (bytes > (size_t{1} << 60)) throw std::bad_alloc();
    const size_t cls = size_class(bytes);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(cls);
      if (it != free_.end()) {
        void* block = it->second;
        free_.erase(it);
        cached_ -= cls;
        return block;
      }
    }
    char* raw = static_cast<char*>(std::aligned_alloc(kHeader, kHeader + cls));
    if (raw == nullptr) throw std::bad_alloc();
    *reinterpret_cast<size_t*>(raw) = cls;
    return raw + kHeader;
  }

  void give(void* block) {
    char* raw = static_cast<char*>(block) - kHeader;
    const size_t cls = *reinterpret_cast<size_t*>(raw);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + cls <= kCacheLimit) {
        free_.emplace(cls, block);
        cached_ += cls;
        return;
      }
    }
    std::free(raw);
  }

 private:
  static constexpr size_t kHeader = 64;
  static constexpr size_t kCacheLimit = size_t{256} << 20;
  // Sizes round up to 1/8 steps of the power of two below them (at most 12.5% unused).
  static size_t size_class(size_t bytes) {
    size_t top = 64;
    while (top * 2 <= bytes) top *= 2;
    const size_t step = std::max<size_t>(top / 8, 64);
    return (bytes + step - 1) / step * step;
  }
  std::mutex mutex_;
  std::multimap<size_t, void*> free_;
  size_t cached_ = 0;
};

// A block from the cache, given back when it goes out of scope.
struct BlockReturn {
  void operator()(void* block) const { BlockCache::instance().give(block); }
};
using CachedBlock = std::unique_ptr<void, BlockReturn>;

}  // namespace fusedrnn
