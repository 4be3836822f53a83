// A frozen linear projection of the decoder (q/k/v/o, gate/up/down, lm_head) with a hook for an
// adapter. The model knows nothing about LoRA: the adapt module attaches a ProjectionAdapter,
// which receives the projection's input and the base output computed once, and returns the
// adapted output.
#pragma once

#include <memory>
#include <string>

#include <torch/torch.h>

namespace ming::model {

class ProjectionAdapter : public torch::nn::Module {
 public:
  // x: (..., in) the projection's input; base: (..., out) = x W0^T + b. Returns (..., out).
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& base) = 0;
};

class ProjectionImpl : public torch::nn::Module {
 public:
  // `name` is the Hugging Face module path, e.g. "model.layers.0.self_attn.q_proj".
  ProjectionImpl(std::string name, int64_t in_features, int64_t out_features, bool bias,
                 const torch::TensorOptions& options);

  // (..., in) -> (..., out)
  torch::Tensor forward(const torch::Tensor& x);

  // Attaches (or with nullptr, detaches) an adapter; registered as submodule "adapter" so its
  // parameters show up as "<...>.adapter.<...>" in named_parameters().
  void set_adapter(std::shared_ptr<ProjectionAdapter> adapter);
  const std::shared_ptr<ProjectionAdapter>& adapter() const { return adapter_; }

  const std::string& name() const { return name_; }
  int64_t in_features() const { return weight.size(1); }
  int64_t out_features() const { return weight.size(0); }

  torch::Tensor weight;  // (out, in) base weight, frozen unless full fine-tuning
  torch::Tensor bias;    // (out) or undefined

 private:
  std::string name_;
  std::shared_ptr<ProjectionAdapter> adapter_;
};
TORCH_MODULE(Projection);

}  // namespace ming::model
