#include "machine.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace fusedrnn {
namespace detail {

namespace {

// The size in /sys's form ("1024K", "2048K", "32M"), or 0.
int64_t parse_size(const std::string& text) {
  char* end = nullptr;
  const long long n = std::strtoll(text.c_str(), &end, 10);
  if (n <= 0 || end == text.c_str()) return 0;
  switch (*end) {
    case 'K': case 'k': return n << 10;
    case 'M': case 'm': return n << 20;
    case 'G': case 'g': return int64_t{n} << 30;
    default: return n;
  }
}

// The unified level-2 cache of cpu0 in /sys: the index whose level is 2 and type not Instruction.
int64_t sysfs_l2() {
  for (int index = 0; index < 8; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index);
    std::ifstream level(dir + "/level"), type(dir + "/type"), size(dir + "/size");
    std::string l, t, s;
    if (!(level >> l) || !(type >> t) || !(size >> s)) continue;
    if (l == "2" && t != "Instruction") return parse_size(s);
  }
  return 0;
}

int64_t detect() {
  if (const char* env = std::getenv("FUSEDRNN_L2_BYTES")) {
    const int64_t n = parse_size(env);
    if (n > 0) return n;
  }
  // glibc reads cpuid here (per core on Intel and AMD); /sys when it cannot.
  const long conf = sysconf(_SC_LEVEL2_CACHE_SIZE);
  if (conf > 0) return conf;
  const int64_t sys = sysfs_l2();
  // Nothing known: 1 MB, the smallest per-core L2 of the x86 server cores of recent years.
  return sys > 0 ? sys : int64_t{1} << 20;
}

}  // namespace

int64_t l2_bytes_per_core() {
  static const int64_t bytes = detect();
  return bytes;
}

}  // namespace detail
}  // namespace fusedrnn
