// Memory this process uses on a device, for benchmarks and training logs: on the CPU the resident
// set (VmRSS / VmHWM of /proc/self/status, what /usr/bin/time -v reports as maximum resident set
// size), on CUDA the bytes held by LibTorch's caching allocator for tensors.
#pragma once

#include <cstdint>
#include <string>

#include <torch/torch.h>

namespace ming {

int64_t current_memory_bytes(torch::Device device);
// The most used since the process started or since the last reset_peak_memory().
int64_t peak_memory_bytes(torch::Device device);
// Starts a new peak window at the current use. False when the system refuses (the CPU peak then
// keeps covering the whole run).
bool reset_peak_memory(torch::Device device);

// "3.07 GB" (decimal units, as --plan-memory takes them).
std::string format_bytes(double bytes);
// "80GB", "80 GB", "512MiB", "1.5T", "1000000": decimal (k, M, G, T) or binary (KiB, MiB, GiB,
// TiB) units, B optional. UsageError naming the text otherwise.
int64_t parse_bytes(const std::string& text);

}  // namespace ming
