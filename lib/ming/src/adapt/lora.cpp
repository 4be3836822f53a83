#include "ming/adapt/lora.h"

#include <cmath>

#include "adapt/low_rank_kernel.h"
#include "ming/core/error.h"

namespace ming::adapt {

double lora_scaling(int64_t r, double alpha, bool use_rslora) {
  return use_rslora ? alpha / std::sqrt(double(r)) : alpha / double(r);
}

void init_lora_a_(torch::Tensor a) {
  // kaiming_uniform_(a=sqrt(5)): gain = sqrt(2 / (1 + 5)), bound = gain * sqrt(3 / fan_in)
  // = 1 / sqrt(fan_in), fan_in = the last dimension (in features).
  torch::NoGradGuard no_grad;
  const double bound = 1.0 / std::sqrt(double(a.size(-1)));
  a.uniform_(-bound, bound);
}

torch::Tensor ComputeCopy::get(const torch::Tensor& master, torch::ScalarType dtype,
                               Layout layout) {
  const auto make = [&] {
    auto t = master.to(dtype);
    return layout == Layout::transposed ? t.transpose(-2, -1).contiguous() : t;
  };
  if (layout == Layout::same && master.scalar_type() == dtype) return master;
  if (torch::GradMode::is_enabled() && master.requires_grad()) {
    copy_ = torch::Tensor();  // training: never serve a copy made before the next update
    return make();
  }
  const int64_t version = master._version();
  if (!copy_.defined() || copy_.scalar_type() != dtype || copy_.device() != master.device() ||
      source_ != master.data_ptr() || version_ != version) {
    torch::NoGradGuard no_grad;
    copy_ = make();
    source_ = master.data_ptr();
    version_ = version;
  }
  return copy_;
}

LoraAdapter::LoraAdapter(int64_t in_features, int64_t out_features, LoraOptions options,
                         torch::Device device)
    : options_(options), scaling_(lora_scaling(options.r, options.alpha, options.use_rslora)) {
  if (options.r <= 0) fail_usage("LoRA rank r must be positive, got {}", options.r);
  if (options.dropout < 0 || options.dropout >= 1)
    fail_usage("LoRA dropout must be in [0, 1), got {}", options.dropout);
  auto fp32 = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  lora_A = register_parameter("lora_A", torch::empty({options.r, in_features}, fp32));
  lora_B = register_parameter("lora_B", torch::zeros({out_features, options.r}, fp32));
  reset_parameters();
}

void LoraAdapter::reset_parameters() {
  init_lora_a_(lora_A);
  torch::NoGradGuard no_grad;
  lora_B.zero_();
}

torch::Tensor LoraAdapter::forward(const torch::Tensor& x, const torch::Tensor& base) {
  const auto dtype = x.scalar_type();
  torch::Tensor xd = x;
  if (is_training() && options_.dropout > 0)
    xd = torch::dropout(x, options_.dropout, /*train=*/true);
  // (..., in) -> (N, in): one 2-D GEMM chain; the scaling goes on the small (N, r) tensor, and
  // addmm folds "base +" into the second GEMM so no extra pass over (N, out) is made.
  auto x2 = xd.reshape({-1, xd.size(-1)});         // (N, in)
  auto base2 = base.reshape({-1, base.size(-1)});  // (N, out)
  if (!detail::needs_autograd({x2, lora_A, lora_B, base2}) && detail::low_rank_kernel_applies(x2)) {
    auto a = a_copy_.get(lora_A, dtype).unsqueeze(0);                        // (1, r, in)
    auto bt = bt_copy_.get(lora_B, dtype, Layout::transposed).unsqueeze(0);  // (1, r, out)
    return detail::low_rank_update(x2, {}, {}, a, bt, base2, scaling_).view(base.sizes());
  }
  auto h = torch::mm(x2, a_copy_.get(lora_A, dtype).t()).mul_(scaling_);  // (N, r)
  auto out = torch::addmm(base2, h, b_copy_.get(lora_B, dtype).t());      // (N, out)
  return out.view(base.sizes());
}

torch::Tensor LoraAdapter::delta_weight() const {
  torch::NoGradGuard no_grad;
  return torch::mm(lora_B, lora_A).mul_(scaling_);
}

}  // namespace ming::adapt
