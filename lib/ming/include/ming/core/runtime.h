// Process-wide runtime choices every tool makes the same way: threads, device, dtype, seed.
//
// Defaults are chosen to be fast without flags: the thread count is the number of cores this
// process may actually use (affinity mask and cgroup CPU quota), BLAS/OpenMP pools are pinned to
// the same count so they never oversubscribe, and bf16 is the default compute dtype on CPUs that
// have AMX or AVX512-BF16 (fp32 elsewhere).
#pragma once

#include <cstdint>
#include <string>

#include <torch/torch.h>

namespace ming {

// Cores available to this process: min(affinity mask, cgroup v2/v1 cpu quota), at least 1.
int available_cores();

// Sets LibTorch intra-op threads (and OpenMP/OpenBLAS through LibTorch) to n; n <= 0 means
// available_cores(). Inter-op threads are kept at 1: ming has no independent ops to overlap.
// Also calls keep_freed_tensor_memory(): every tool sets threads before tensor work.
void set_threads(int n);

// Makes glibc keep freed blocks of up to 1 GiB in the heap for reuse instead of returning them
// to the kernel (and faulting them in again on the next step). Idempotent.
void keep_freed_tensor_memory();

// True when the CPU runs bf16 matmuls natively (AMX-BF16 or AVX512-BF16), from /proc/cpuinfo.
bool cpu_has_fast_bf16();

// "cpu", "cuda", "cuda:1". Throws UsageError naming the flag value on anything else, or when
// LibTorch was built without CUDA.
torch::Device parse_device(const std::string& text);

// "bf16"|"bfloat16", "fp16"|"float16"|"half", "fp32"|"float32"|"float", and "auto"
// (bf16 on CUDA and on CPUs with fast bf16, else fp32). Throws UsageError otherwise.
torch::ScalarType parse_dtype(const std::string& text, torch::Device device = torch::kCPU);
// Short name used in files and tables: "bf16", "fp16", "fp32".
std::string dtype_name(torch::ScalarType dtype);

// Seeds LibTorch's CPU (and CUDA) generators.
void set_seed(uint64_t seed);

// "1.13.1" etc.: the LibTorch this binary runs against (logged by tools at start-up).
std::string torch_version();

}  // namespace ming
