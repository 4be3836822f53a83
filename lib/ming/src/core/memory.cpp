#include "ming/core/memory.h"

#include <cctype>
#include <cmath>
#include <fstream>
#include <string>

#ifdef MING_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "ming/core/error.h"

namespace ming {

namespace {

// A "<key>:   1234 kB" line of /proc/self/status, in bytes; 0 when absent.
int64_t proc_status_bytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.compare(0, key.size(), key) == 0 && line.size() > key.size() &&
        line[key.size()] == ':')
      return std::stoll(line.substr(key.size() + 1)) * 1024;
  return 0;
}

#ifdef MING_WITH_CUDA
// (current, peak) bytes allocated for tensors: the aggregate counter, index 0 of the allocator's
// stat arrays in every LibTorch version.
std::pair<int64_t, int64_t> cuda_allocated(torch::Device device) {
  const auto stats =
      c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
  return {stats.allocated_bytes[0].current, stats.allocated_bytes[0].peak};
}
#endif

}  // namespace

int64_t current_memory_bytes(torch::Device device) {
#ifdef MING_WITH_CUDA
  if (device.is_cuda()) return cuda_allocated(device).first;
#endif
  if (device.is_cuda()) fail("memory use of {}: this build has no CUDA", device.str());
  return proc_status_bytes("VmRSS");
}

int64_t peak_memory_bytes(torch::Device device) {
#ifdef MING_WITH_CUDA
  if (device.is_cuda()) return cuda_allocated(device).second;
#endif
  if (device.is_cuda()) fail("memory use of {}: this build has no CUDA", device.str());
  return proc_status_bytes("VmHWM");
}

bool reset_peak_memory(torch::Device device) {
#ifdef MING_WITH_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
    return true;
  }
#endif
  if (device.is_cuda()) return false;
  // "5" resets the peak resident set size to the current one (Linux >= 4.0, proc(5)).
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (std::abs(bytes) >= 1000 && u < 4) bytes /= 1000, ++u;
  return fmt::format(u == 0 ? "{:.0f} {}" : "{:.2f} {}", bytes, units[u]);
}

int64_t parse_bytes(const std::string& text) {
  size_t pos = 0;
  double value = 0;
  try {
    value = std::stod(text, &pos);
  } catch (const std::exception&) {
    fail_usage("'{}' is not a memory size (expected e.g. 80GB, 512MiB)", text);
  }
  std::string unit;
  for (size_t i = pos; i < text.size(); ++i)
    if (!std::isspace(static_cast<unsigned char>(text[i])))
      unit += static_cast<char>(std::toupper(static_cast<unsigned char>(text[i])));
  if (!unit.empty() && unit.back() == 'B') unit.pop_back();
  double scale = 0;
  if (unit.empty()) scale = 1;
  if (unit == "K") scale = 1e3;
  if (unit == "M") scale = 1e6;
  if (unit == "G") scale = 1e9;
  if (unit == "T") scale = 1e12;
  if (unit == "KI") scale = 1024.0;
  if (unit == "MI") scale = 1024.0 * 1024;
  if (unit == "GI") scale = 1024.0 * 1024 * 1024;
  if (unit == "TI") scale = 1024.0 * 1024 * 1024 * 1024;
  if (scale == 0 || !(value > 0))
    fail_usage("'{}' is not a memory size (expected e.g. 80GB, 512MiB)", text);
  return static_cast<int64_t>(value * scale);
}

}  // namespace ming
