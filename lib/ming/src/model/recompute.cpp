#include "ming/model/recompute.h"

#include <torch/csrc/autograd/function.h>

#include <mutex>

namespace ming::model {

using torch::Tensor;

namespace {

// The loss terms a region hands over while it runs (see defer_region_loss).
struct Region {
  std::vector<Tensor> losses;
  std::vector<std::function<void(const Tensor&)>> receivers;
};

thread_local Region* t_region = nullptr;
thread_local bool t_replaying = false;

class RegionScope {
 public:
  explicit RegionScope(Region* region) : saved_(t_region) { t_region = region; }
  ~RegionScope() { t_region = saved_; }
  RegionScope(const RegionScope&) = delete;
  RegionScope& operator=(const RegionScope&) = delete;

 private:
  Region* saved_;
};

// The random state of a device's default generator (dropout, jitter), to draw the same numbers
// again in the re-run.
class RandomState {
 public:
  explicit RandomState(torch::Device device)
      : device_(device), generator_(at::globalContext().defaultGenerator(device)) {
    std::lock_guard<std::mutex> lock(generator_.mutex());
    state_ = generator_.get_state();
  }
  torch::Device device() const { return device_; }
  void restore() {
    std::lock_guard<std::mutex> lock(generator_.mutex());
    generator_.set_state(state_);
  }

 private:
  torch::Device device_;
  at::Generator generator_;
  Tensor state_;
};

// Fresh leaves with the values of `inputs`, requiring grad where `needs_grad` says.
std::vector<Tensor> detached_inputs(const std::vector<Tensor>& inputs,
                                    const std::vector<bool>& needs_grad) {
  std::vector<Tensor> out;
  out.reserve(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i)
    out.push_back(inputs[i].defined() ? inputs[i].detach().requires_grad_(needs_grad[i])
                                      : inputs[i]);
  return out;
}

std::vector<bool> requires_grad_of(const std::vector<Tensor>& tensors) {
  std::vector<bool> out;
  for (const auto& t : tensors) out.push_back(t.defined() && t.requires_grad());
  return out;
}

class RecomputeNode : public torch::autograd::Node {
 public:
  RecomputeNode(RegionFn fn, std::vector<Tensor> inputs, std::vector<bool> input_needs_grad,
                std::vector<Tensor> parameters, RandomState random)
      : fn_(std::move(fn)),
        inputs_(std::move(inputs)),
        input_needs_grad_(std::move(input_needs_grad)),
        parameters_(std::move(parameters)),
        random_(std::move(random)) {}

  std::string name() const override { return "ming::model::RecomputeBackward"; }

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    torch::AutoGradMode grad_on(true);
    std::vector<Tensor> inputs = detached_inputs(inputs_, input_needs_grad_);
    Region region;
    std::vector<Tensor> outputs;
    {
      RandomState now(random_.device());
      random_.restore();
      struct Replay {
        bool saved = t_replaying;
        Replay() { t_replaying = true; }
        ~Replay() { t_replaying = saved; }
      } replay;
      RegionScope scope(&region);
      outputs = fn_(inputs);
      now.restore();
    }
    outputs.insert(outputs.end(), region.losses.begin(), region.losses.end());
    TORCH_INTERNAL_ASSERT(outputs.size() == grads.size(), "recomputed region: ", outputs.size(),
                          " outputs in the re-run, ", grads.size(), " in the first run");

    std::vector<Tensor> roots, root_grads, wrt;
    for (size_t i = 0; i < outputs.size(); ++i)
      if (grads[i].defined() && outputs[i].requires_grad()) {
        roots.push_back(outputs[i]);
        root_grads.push_back(grads[i]);
      }
    std::vector<size_t> slot;  // edge index of each wrt tensor
    for (size_t i = 0; i < inputs.size(); ++i)
      if (inputs[i].defined() && inputs[i].requires_grad())
        wrt.push_back(inputs[i]), slot.push_back(i);
    for (size_t i = 0; i < parameters_.size(); ++i)
      wrt.push_back(parameters_[i]), slot.push_back(inputs.size() + i);

    torch::autograd::variable_list result(num_outputs());
    if (!roots.empty() && !wrt.empty()) {
      auto g = torch::autograd::grad(roots, wrt, root_grads, /*retain_graph=*/false,
                                     /*create_graph=*/false, /*allow_unused=*/true);
      for (size_t j = 0; j < g.size(); ++j) result[slot[j]] = g[j];
    }
    return result;
  }

  void release_variables() override {
    fn_ = nullptr;
    inputs_.clear();
    parameters_.clear();
  }

 private:
  RegionFn fn_;
  std::vector<Tensor> inputs_;  // detached: the node keeps values, not their history
  std::vector<bool> input_needs_grad_;
  std::vector<Tensor> parameters_;  // leaves that require grad
  RandomState random_;
};

torch::autograd::Edge edge_of(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return torch::autograd::Edge();
  return torch::autograd::impl::gradient_edge(t);
}

}  // namespace

bool replaying() {
  return t_replaying;
}

bool defer_region_loss(const Tensor& loss, std::function<void(const Tensor&)> receive) {
  if (!t_region) return false;
  t_region->losses.push_back(loss);
  t_region->receivers.push_back(std::move(receive));
  return true;
}

std::vector<Tensor> run_recomputed(const RegionFn& fn, const std::vector<Tensor>& inputs,
                                   const std::vector<Tensor>& parameters) {
  bool needs_grad = false;
  for (const auto& t : inputs) needs_grad |= t.defined() && t.requires_grad();
  for (const auto& t : parameters) needs_grad |= t.requires_grad();
  if (!torch::GradMode::is_enabled() || !needs_grad) return fn(inputs);

  TORCH_CHECK(!inputs.empty() && inputs[0].defined(), "run_recomputed: needs a defined input");
  const torch::Device device = inputs[0].device();
  RandomState random(device);
  Region region;
  std::vector<Tensor> outputs;
  {
    // The first run builds its graph like the re-run will (same code path in the adapters),
    // then lets it go: only the detached outputs leave this scope.
    RegionScope scope(&region);
    outputs = fn(detached_inputs(inputs, requires_grad_of(inputs)));
  }
  outputs.insert(outputs.end(), region.losses.begin(), region.losses.end());

  std::vector<Tensor> kept_inputs, trainable;
  for (const auto& t : inputs) kept_inputs.push_back(t.defined() ? t.detach() : t);
  for (const auto& t : parameters)
    if (t.requires_grad()) trainable.push_back(t);
  auto node = std::shared_ptr<RecomputeNode>(
      new RecomputeNode(fn, std::move(kept_inputs), requires_grad_of(inputs), trainable,
                        std::move(random)),
      torch::autograd::deleteNode);
  torch::autograd::edge_list edges;
  for (const auto& t : inputs) edges.push_back(edge_of(t));
  for (const auto& t : trainable) edges.push_back(edge_of(t));
  node->set_next_edges(std::move(edges));

  std::vector<Tensor> result;
  result.reserve(outputs.size());
  for (auto& out : outputs) {
    Tensor attached = out.detach();
    torch::autograd::create_gradient_edge(attached, node);
    result.push_back(attached);
  }
  const size_t n_main = result.size() - region.losses.size();
  for (size_t j = 0; j < region.receivers.size(); ++j) region.receivers[j](result[n_main + j]);
  result.resize(n_main);
  return result;
}

}  // namespace ming::model
