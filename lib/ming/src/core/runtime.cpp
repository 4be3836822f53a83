#include "ming/core/runtime.h"

#include <malloc.h>
#include <sched.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include <torch/version.h>

#include "ming/core/error.h"

namespace ming {
namespace {

// cgroup v2 "cpu.max" ("max 100000" or "200000 100000"), then v1 cfs quota; 0 = no limit.
int cgroup_cpu_limit() {
  std::ifstream v2("/sys/fs/cgroup/cpu.max");
  std::string quota, period;
  if (v2 >> quota >> period && quota != "max") {
    double q = std::stod(quota), p = std::stod(period);
    if (p > 0) return std::max(1, static_cast<int>(std::ceil(q / p)));
  }
  std::ifstream q1("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
      p1("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
  long q = -1, p = -1;
  if (q1 >> q && p1 >> p && q > 0 && p > 0) return std::max(1L, (q + p - 1) / p);
  return 0;
}

}  // namespace

int available_cores() {
  int n = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int limit = cgroup_cpu_limit();
  if (limit > 0) n = std::min(n, limit);
  return std::max(1, n);
}

void keep_freed_tensor_memory() {
  // glibc serves blocks above 32 MB with fresh mmap()s and unmaps them on free, so every forward
  // that materialises attention scores or an MLP activation of that size pays page faults and
  // kernel page zeroing again (measured: 2x slower training steps on the quickstart model).
  // Serving them from the heap and not trimming it keeps freed blocks for the next step, as
  // PyTorch's caching allocator does on GPUs; the cost is that resident memory stays at its peak.
  static const bool done = [] {
    constexpr int kOneGiB = 1 << 30;
    mallopt(M_MMAP_THRESHOLD, kOneGiB);
    mallopt(M_TRIM_THRESHOLD, kOneGiB);
    return true;
  }();
  (void)done;
}

void set_threads(int n) {
  keep_freed_tensor_memory();
  if (n <= 0) n = available_cores();
  torch::set_num_threads(n);
  static bool interop_set = false;  // LibTorch allows setting inter-op threads once
  if (!interop_set) {
    try {
      torch::set_num_interop_threads(1);
    } catch (const c10::Error&) {
      // already started by an earlier parallel region; harmless
    }
    interop_set = true;
  }
}

bool cpu_has_fast_bf16() {
  static const bool has = [] {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("flags", 0) != 0) continue;
      std::istringstream words(line);
      std::string w;
      while (words >> w)
        if (w == "amx_bf16" || w == "avx512_bf16") return true;
      return false;
    }
    return false;
  }();
  return has;
}

torch::Device parse_device(const std::string& text) {
  if (text == "cpu") return torch::kCPU;
  if (text.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available())
      fail_usage("--device {}: this build of LibTorch has no usable CUDA device (use --device cpu)",
                 text);
    if (text == "cuda") return torch::Device(torch::kCUDA, 0);
    if (text.size() > 5 && text[4] == ':') {
      int index = -1;
      try {
        index = std::stoi(text.substr(5));
      } catch (const std::exception&) {
      }
      if (index >= 0 && index < static_cast<int>(torch::cuda::device_count()))
        return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
      fail_usage("--device {}: expected cuda:N with N in [0, {})", text,
                 torch::cuda::device_count());
    }
  }
  fail_usage("--device {}: expected cpu, cuda or cuda:N", text);
}

torch::ScalarType parse_dtype(const std::string& text, torch::Device device) {
  if (text == "bf16" || text == "bfloat16") return torch::kBFloat16;
  if (text == "fp16" || text == "float16" || text == "half") return torch::kHalf;
  if (text == "fp32" || text == "float32" || text == "float") return torch::kFloat32;
  if (text == "auto")
    return (device.is_cuda() || cpu_has_fast_bf16()) ? torch::kBFloat16 : torch::kFloat32;
  fail_usage("--dtype {}: expected bf16, fp16, fp32 or auto", text);
}

std::string dtype_name(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kBFloat16:
      return "bf16";
    case torch::kHalf:
      return "fp16";
    case torch::kFloat32:
      return "fp32";
    case torch::kFloat64:
      return "fp64";
    default:
      return c10::toString(dtype);
  }
}

void set_seed(uint64_t seed) {
  torch::manual_seed(seed);
  if (torch::cuda::is_available()) torch::cuda::manual_seed_all(seed);
}

std::string torch_version() {
  return TORCH_VERSION;
}

}  // namespace ming
