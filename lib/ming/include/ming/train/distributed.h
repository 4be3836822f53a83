// Data-parallel process groups on PyTorch's own c10d (Gloo on CPU, NCCL where LibTorch has CUDA),
// started the way clusters start jobs.
//
// Rendezvous comes from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
// MASTER_PORT) or, when those are absent, SLURM's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
// the first host of SLURM_JOB_NODELIST, port from MASTER_PORT or 29500). Without either, the
// process is a world of one and every collective is a no-op.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace ming::train {

struct WorldInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string launcher = "single";  // single | torchrun | slurm
};

// Reads the launcher's environment. Throws UsageError naming the variable when it is malformed.
WorldInfo detect_world();

// "node[01-04,07],other" -> "node01"; plain host lists and single hosts too.
std::string first_slurm_host(const std::string& nodelist);

class ProcessGroup {
 public:
  // Connects all ranks (blocking until every rank has joined, or throws after `timeout_s`).
  ProcessGroup(const WorldInfo& world, torch::Device device, int timeout_s = 300);
  ~ProcessGroup();

  int rank() const { return world_.rank; }
  int world_size() const { return world_.world_size; }
  bool is_main() const { return world_.rank == 0; }

  // In-place sum over ranks. Tensors are flattened into one buffer per call (one collective).
  void all_reduce_sum(std::vector<torch::Tensor>& tensors);
  double all_reduce_sum(double value);
  // Rank 0's tensors copied to every rank.
  void broadcast(std::vector<torch::Tensor>& tensors);
  void barrier();

 private:
  struct Impl;
  WorldInfo world_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ming::train
