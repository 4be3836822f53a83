// Activation recomputation ("gradient checkpointing"): a region of the forward (one decoder layer,
// say) that keeps only its inputs for backward and runs again inside the backward to get its
// gradients, trading one extra forward for the activations the region would have kept.
//
// The re-run is exact: it replays the device's random state (dropout, router jitter), runs the
// same code path as the first run (both with autograd on, so adapters take their training path),
// and code inside the region can ask replaying() to skip side effects that must happen once
// (router load statistics, route recording). A loss term produced inside a region (MoLoRA's
// balance / z losses) is handed to defer_region_loss(), which routes it through the region's
// outputs so that its gradient, too, flows through the re-run.
#pragma once

#include <functional>
#include <vector>

#include <torch/torch.h>

namespace ming::model {

using RegionFn = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>;

// Runs fn(inputs) and returns its outputs, connected to autograd through one node that keeps
// `inputs` (not fn's intermediates) and re-runs fn in the backward. `parameters` are the
// trainable tensors fn reads besides its inputs (they receive gradients through the same node).
// Without autograd (grad mode off, or nothing requires grad) it is simply fn(inputs).
std::vector<torch::Tensor> run_recomputed(const RegionFn& fn,
                                          const std::vector<torch::Tensor>& inputs,
                                          const std::vector<torch::Tensor>& parameters);

// True while a backward re-runs a region on this thread.
bool replaying();

// Inside a region: keeps `loss` (a scalar with autograd history inside the region) as an extra
// output of the region and, in the first run only, calls receive(output) once the region is done
// with a tensor of the same value whose gradient reaches `loss` through the re-run. Returns false
// (and does nothing) outside a region; the caller then uses `loss` itself.
bool defer_region_loss(const torch::Tensor& loss,
                       std::function<void(const torch::Tensor&)> receive);

}  // namespace ming::model
