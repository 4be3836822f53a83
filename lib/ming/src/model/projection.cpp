#include "ming/model/projection.h"

namespace ming::model {

ProjectionImpl::ProjectionImpl(std::string name, int64_t in_features, int64_t out_features,
                               bool with_bias, const torch::TensorOptions& options)
    : name_(std::move(name)) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}, options),
                              /*requires_grad=*/false);
  if (with_bias)
    bias = register_parameter("bias", torch::zeros({out_features}, options),
                              /*requires_grad=*/false);
}

torch::Tensor ProjectionImpl::forward(const torch::Tensor& x) {
  torch::Tensor base = torch::nn::functional::linear(x, weight, bias);
  return adapter_ ? adapter_->forward(x, base) : base;
}

void ProjectionImpl::set_adapter(std::shared_ptr<ProjectionAdapter> adapter) {
  if (adapter_) unregister_module("adapter");
  adapter_ = std::move(adapter);
  if (adapter_) register_module("adapter", adapter_);
}

}  // namespace ming::model
