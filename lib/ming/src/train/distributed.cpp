// The one place that touches c10d; its API moved between LibTorch 1.13 and 2.x (ProcessGroup ->
// Backend, TCPStore's libuv default), so everything version-dependent stays in this file.
#include "ming/train/distributed.h"

#include <cstdlib>
#include <optional>
#include <regex>

#include "ming/core/error.h"
#include "ming/core/log.h"

#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>
#if defined(MING_WITH_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace ming::train {
namespace {

// Gloo and NCCL are c10d::ProcessGroups in LibTorch 1.13; from 2.0 they are c10d::Backends (a
// ProcessGroup became a dispatcher over per-device Backends, and the collectives live on Backend).
#if TORCH_VERSION_MAJOR >= 2
using CollectiveBackend = c10d::Backend;
#else
using CollectiveBackend = c10d::ProcessGroup;
#endif

// LibTorch 2.4 made TCPStore's libuv server the default; Debian's LibTorch 2.6 is built without
// libuv and refuses it ("use_libuv was requested but PyTorch was build without libuv support"),
// so ming asks for the classic server, which every build has.
void use_classic_store_server(c10d::TCPStoreOptions& opts) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  opts.useLibUV = false;
#else
  (void)opts;
#endif
}

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

int env_int(const char* name, int fallback) {
  auto v = env(name);
  if (!v) return fallback;
  try {
    size_t used = 0;
    int x = std::stoi(*v, &used);
    if (used == v->size()) return x;
  } catch (const std::exception&) {
  }
  fail_usage("environment variable {}='{}': expected an integer", name, *v);
}

}  // namespace

std::string first_slurm_host(const std::string& nodelist) {
  // First entry of a comma list, respecting brackets: "gpu[01-04,07],cpu3" -> "gpu[01-04,07]".
  int depth = 0;
  size_t end = nodelist.size();
  for (size_t i = 0; i < nodelist.size(); ++i) {
    if (nodelist[i] == '[') ++depth;
    if (nodelist[i] == ']') --depth;
    if (nodelist[i] == ',' && depth == 0) {
      end = i;
      break;
    }
  }
  std::string first = nodelist.substr(0, end);
  auto open = first.find('[');
  if (open == std::string::npos) return first;
  std::string prefix = first.substr(0, open);
  std::string range = first.substr(open + 1, first.find(']') - open - 1);
  std::string head = range.substr(0, range.find_first_of(",-"));
  return prefix + head;
}

WorldInfo detect_world() {
  WorldInfo w;
  if (env("WORLD_SIZE") || env("RANK")) {
    w.launcher = "torchrun";
    w.rank = env_int("RANK", 0);
    w.world_size = env_int("WORLD_SIZE", 1);
    w.local_rank = env_int("LOCAL_RANK", 0);
    w.master_addr = env("MASTER_ADDR").value_or("127.0.0.1");
    w.master_port = env_int("MASTER_PORT", 29500);
  } else if (env("SLURM_PROCID") && env_int("SLURM_NTASKS", 1) > 1) {
    w.launcher = "slurm";
    w.rank = env_int("SLURM_PROCID", 0);
    w.world_size = env_int("SLURM_NTASKS", 1);
    w.local_rank = env_int("SLURM_LOCALID", 0);
    if (auto addr = env("MASTER_ADDR")) {
      w.master_addr = *addr;
    } else if (auto nodes = env("SLURM_JOB_NODELIST")) {
      w.master_addr = first_slurm_host(*nodes);
    } else if (auto nodes2 = env("SLURM_NODELIST")) {
      w.master_addr = first_slurm_host(*nodes2);
    }
    w.master_port = env_int("MASTER_PORT", 29500);
  }
  if (w.world_size < 1 || w.rank < 0 || w.rank >= w.world_size)
    fail_usage(
        "rank {} is outside a world of size {} (check RANK/WORLD_SIZE or SLURM_PROCID/"
        "SLURM_NTASKS)",
        w.rank, w.world_size);
  return w;
}

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<CollectiveBackend> backend;  // NCCL for CUDA tensors, else Gloo

  void all_reduce(std::vector<torch::Tensor>& t) { backend->allreduce(t)->wait(); }
  void broadcast(std::vector<torch::Tensor>& t) { backend->broadcast(t)->wait(); }
};

ProcessGroup::ProcessGroup(const WorldInfo& world, torch::Device device, int timeout_s)
    : world_(world), impl_(std::make_unique<Impl>()) {
  if (world_.world_size == 1) return;
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<uint16_t>(world_.master_port);
  opts.isServer = world_.rank == 0;
  opts.numWorkers = world_.world_size;
  opts.waitWorkers = true;
  opts.timeout = std::chrono::seconds(timeout_s);
  use_classic_store_server(opts);
  log::info("distributed: rank {}/{} ({}), rendezvous at {}:{}", world_.rank, world_.world_size,
            world_.launcher, world_.master_addr, world_.master_port);
  impl_->store = c10::make_intrusive<c10d::TCPStore>(world_.master_addr, opts);
#if defined(MING_WITH_NCCL)
  if (device.is_cuda()) {
    impl_->backend =
        c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, world_.rank, world_.world_size);
    return;
  }
#else
  if (device.is_cuda())
    log::warn("distributed: this build has no NCCL; gradients travel through Gloo on the CPU");
#endif
  auto options = c10d::ProcessGroupGloo::Options::create();
  options->timeout = std::chrono::seconds(timeout_s);
  // Loopback when every rank is on this host; otherwise the interface that reaches the master.
  if (world_.master_addr == "127.0.0.1" || world_.master_addr == "localhost")
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  else
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  impl_->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, world_.rank,
                                                               world_.world_size, options);
}

ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::all_reduce_sum(std::vector<torch::Tensor>& tensors) {
  if (world_.world_size == 1 || tensors.empty()) return;
  // One flat buffer: one collective per step instead of one per parameter.
  std::vector<torch::Tensor> flat_parts;
  for (auto& t : tensors) flat_parts.push_back(t.reshape(-1).to(torch::kFloat32));
  std::vector<torch::Tensor> buffer = {torch::cat(flat_parts)};
  impl_->all_reduce(buffer);
  int64_t offset = 0;
  for (auto& t : tensors) {
    int64_t n = t.numel();
    t.copy_(buffer[0].narrow(0, offset, n).view(t.sizes()));
    offset += n;
  }
}

double ProcessGroup::all_reduce_sum(double value) {
  if (world_.world_size == 1) return value;
  std::vector<torch::Tensor> t = {torch::tensor({value}, torch::kFloat64)};
  impl_->all_reduce(t);
  return t[0].item<double>();
}

void ProcessGroup::broadcast(std::vector<torch::Tensor>& tensors) {
  if (world_.world_size == 1) return;
  for (auto& t : tensors) {
    std::vector<torch::Tensor> one = {t};
    impl_->broadcast(one);
  }
}

void ProcessGroup::barrier() {
  if (world_.world_size == 1) return;
  std::vector<torch::Tensor> t = {torch::zeros({1})};
  impl_->all_reduce(t);
}

}  // namespace ming::train
