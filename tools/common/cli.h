// The shared command-line layer of the ming tools: common flags, config loading, and the one
// place where exceptions become exit codes (0 ok, 1 failure, 2 usage/config error).
#pragma once

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include <torch/torch.h>

namespace ming::cli {

// Flags every tool that runs a model shares.
struct RuntimeFlags {
  int threads = 0;                 // 0 = cores available to this process
  std::string device = "cpu";      // cpu | cuda | cuda:N
  std::string dtype = "auto";      // bf16 | fp16 | fp32 | auto
  uint64_t seed = 0;
  bool quiet = false;
};

// Adds --threads --device --dtype --seed --quiet to `app`, bound to `flags`.
void add_runtime_flags(CLI::App& app, RuntimeFlags& flags);

// What the flags resolve to once applied (threads set, seed set, log level set).
struct Runtime {
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;
};
Runtime apply_runtime_flags(const RuntimeFlags& flags);

// Parses argv into `app`, then calls `body`. Every exception is caught here and printed once as
// "<tool>: error: <message>" on stderr; returns the exit status for main to return.
int run(CLI::App& app, int argc, char** argv, const std::function<void()>& body);

}  // namespace ming::cli
