#include "ming/adapt/molora.h"

#include <cmath>

#include "adapt/low_rank_kernel.h"
#include "ming/adapt/lora.h"
#include "ming/core/error.h"
#include "ming/model/recompute.h"

namespace ming::adapt {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

BalanceLoss parse_balance_loss(const std::string& text) {
  if (text == "none") return BalanceLoss::none;
  if (text == "switch") return BalanceLoss::switch_style;
  if (text == "mixtral") return BalanceLoss::mixtral;
  fail_usage("unknown balance_loss '{}' (expected none, switch or mixtral)", text);
}

std::string balance_loss_name(BalanceLoss loss) {
  switch (loss) {
    case BalanceLoss::none:
      return "none";
    case BalanceLoss::switch_style:
      return "switch";
    case BalanceLoss::mixtral:
      return "mixtral";
  }
  return "none";
}

namespace {

// The A stage runs dense by default: one (N, D) x (D, E*r) GEMM over all tokens costs E/k times
// the flops of gathering each expert's tokens, but r is small, so it is a cheap GEMM, and it
// avoids moving k copies of x forward and k copies of dx backward (memory traffic, not flops, is
// what bounds the adapter on CPU). Measured with E=8, k=2, r=16, N=2048, bf16 (bench.h, 1 thread,
// on a heavily shared 2-core machine): adapter fwd+bwd dense-A 361/211/447 ms vs gathered
// 424/425/544 ms for gate/up/down (896->4864, 896->4864, 4864->896); dense-A was never slower.
bool use_dense_a(DispatchA mode, int64_t /*in_features*/) {
  return mode != DispatchA::gathered;
}

// Adds the k slots of each token: rows of `pairs_sorted` (P = N*k, C) are in expert-sorted order;
// `inv` (P) maps token-major pair position t*k+s to its sorted row. Returns base + sum_s rows,
// or the plain sum when base is undefined. index_select is a parallel gather (its scatter
// counterpart, index_add_, runs serially on CPU, which is why every combine goes this way).
Tensor combine_slots(const Tensor& pairs_sorted, const Tensor& inv, int64_t n_tokens, int64_t k,
                     const Tensor& base) {
  auto by_token = pairs_sorted.index_select(0, inv).view({n_tokens, k, -1});  // (N, k, C)
  Tensor out = base.defined() ? torch::add(base, by_token.select(1, 0)) : by_token.select(1, 0);
  if (!base.defined() && k > 1) out = out.clone();
  for (int64_t s = 1; s < k; ++s) out.add_(by_token.select(1, s));
  return out;
}

// The routed low-rank experts as one autograd node, so that every large tensor moves through
// parallel gathers (index_select) and GEMMs writing straight into their destination rows; the
// generic autograd of index_select/index_copy would use serial index_add_ and full-size clones.
struct SparseLoraMixture : public torch::autograd::Function<SparseLoraMixture> {
  // x (N, D), scaled_gates (N, k), a (E, r, D), b (E, O, r), base (N, O): one dtype.
  // experts (N, k) int64: distinct within a row.
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& experts,
                        const Tensor& scaled_gates, const Tensor& a, const Tensor& b,
                        const Tensor& base, bool dense_a) {
    const int64_t n_tokens = x.size(0), k = experts.size(1);
    const int64_t n_experts = a.size(0), r = a.size(1), d_in = a.size(2);
    const int64_t n_pairs = n_tokens * k;

    // Group the (token, slot) pairs by expert: one stable sort of P small integers.
    auto flat = experts.reshape({-1});                                       // (P)
    auto order = std::get<1>(flat.sort(/*stable=*/true, /*dim=*/0, false));  // (P) sorted->pair
    auto inv = torch::empty_like(order);                                     // (P) pair->sorted
    inv.index_put_({order}, torch::arange(n_pairs, order.options()));
    auto tok = order.div(k, "floor");                            // (P) token of each sorted pair
    auto expert_sorted = flat.index_select(0, order);            // (P)
    auto counts_t = torch::bincount(flat, {}, n_experts).cpu();  // (E)
    std::vector<int64_t> offsets(n_experts + 1, 0);
    for (int64_t e = 0; e < n_experts; ++e)
      offsets[e + 1] = offsets[e] + counts_t[e].item<int64_t>();

    auto gs = scaled_gates.reshape({-1}).index_select(0, order);  // (P)
    Tensor h;                                                     // (P, r) A_e x per pair
    if (dense_a) {
      // One (N, D) x (D, E*r) GEMM for all experts, then pick each pair's r columns.
      auto h_all = torch::mm(x, a.reshape({n_experts * r, d_in}).t());  // (N, E*r)
      h = h_all.view({n_tokens * n_experts, r}).index_select(0, tok * n_experts + expert_sorted);
    } else {
      h = torch::empty({n_pairs, r}, x.options());
      for (int64_t e = 0; e < n_experts; ++e) {
        const int64_t lo = offsets[e], n = offsets[e + 1] - lo;
        if (n == 0) continue;
        auto xe = x.index_select(0, tok.narrow(0, lo, n));  // (n_e, D)
        auto he = h.narrow(0, lo, n);
        torch::mm_out(he, xe, a[e].t());
      }
    }
    auto hw = h * gs.unsqueeze(1);                             // (P, r) gate * scaling * A_e x
    auto y = torch::empty({n_pairs, b.size(1)}, x.options());  // (P, O) expert-sorted
    for (int64_t e = 0; e < n_experts; ++e) {
      const int64_t lo = offsets[e], n = offsets[e + 1] - lo;
      if (n == 0) continue;
      auto ye = y.narrow(0, lo, n);
      torch::mm_out(ye, hw.narrow(0, lo, n), b[e].t());
    }
    auto out = combine_slots(y, inv, n_tokens, k, base);  // (N, O)

    ctx->save_for_backward({x, a, b, h, gs, order, inv, tok, expert_sorted, counts_t});
    ctx->saved_data["dense_a"] = dense_a;
    ctx->saved_data["k"] = k;
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &a = saved[1], &b = saved[2], &h = saved[3], &gs = saved[4];
    const Tensor &order = saved[5], &inv = saved[6], &tok = saved[7], &expert_sorted = saved[8];
    const Tensor& counts_t = saved[9];
    const bool dense_a = ctx->saved_data["dense_a"].toBool();
    const int64_t k = ctx->saved_data["k"].toInt();
    const int64_t n_tokens = x.size(0), n_experts = a.size(0), r = a.size(1), d_in = a.size(2);
    const int64_t n_pairs = n_tokens * k;
    std::vector<int64_t> offsets(n_experts + 1, 0);
    for (int64_t e = 0; e < n_experts; ++e)
      offsets[e + 1] = offsets[e] + counts_t[e].item<int64_t>();

    Tensor grad_out = grads[0].contiguous();  // (N, O)
    auto hw = h * gs.unsqueeze(1);            // (P, r)
    auto grad_hw = torch::empty({n_pairs, r}, x.options());
    auto grad_b = torch::zeros_like(b);  // (E, O, r)
    for (int64_t e = 0; e < n_experts; ++e) {
      const int64_t lo = offsets[e], n = offsets[e + 1] - lo;
      if (n == 0) continue;
      auto ge = grad_out.index_select(0, tok.narrow(0, lo, n));  // (n_e, O)
      auto ghw = grad_hw.narrow(0, lo, n);
      torch::mm_out(ghw, ge, b[e]);  // (n_e, r)
      auto gb = grad_b[e];
      torch::mm_out(gb, ge.t(), hw.narrow(0, lo, n));  // (O, r)
    }
    // d gate = <dL/d(hw), h> per pair, back in token-major pair order.
    auto grad_gs = (grad_hw * h).sum(1);                                 // (P) sorted
    auto grad_gates = grad_gs.index_select(0, inv).view({n_tokens, k});  // (N, k)
    auto grad_h = grad_hw * gs.unsqueeze(1);                             // (P, r)

    Tensor grad_x, grad_a;
    if (dense_a) {
      // Scatter each pair's r-vector to its (token, expert) block; blocks are distinct, so a
      // plain (non-accumulating, parallel) index_put_ suffices.
      auto grad_h_all = torch::zeros({n_tokens * n_experts, r}, x.options());
      grad_h_all.index_put_({tok * n_experts + expert_sorted}, grad_h);
      auto g2 = grad_h_all.view({n_tokens, n_experts * r});      // (N, E*r)
      grad_x = torch::mm(g2, a.reshape({n_experts * r, d_in}));  // (N, D)
      grad_a = torch::mm(g2.t(), x).view({n_experts, r, d_in});  // (E, r, D)
    } else {
      grad_a = torch::zeros_like(a);
      auto grad_x_pairs = torch::empty({n_pairs, d_in}, x.options());  // (P, D) sorted
      for (int64_t e = 0; e < n_experts; ++e) {
        const int64_t lo = offsets[e], n = offsets[e + 1] - lo;
        if (n == 0) continue;
        auto xe = x.index_select(0, tok.narrow(0, lo, n));  // (n_e, D)
        auto gh = grad_h.narrow(0, lo, n);                  // (n_e, r)
        auto ga = grad_a[e];
        torch::mm_out(ga, gh.t(), xe);  // (r, D)
        auto gx = grad_x_pairs.narrow(0, lo, n);
        torch::mm_out(gx, gh, a[e]);  // (n_e, D)
      }
      grad_x = combine_slots(grad_x_pairs, inv, n_tokens, k, Tensor());
    }
    (void)order;
    return {grad_x, Tensor(), grad_gates, grad_a, grad_b, grad_out, Tensor()};
  }
};

}  // namespace

Tensor sparse_lora_mixture(const Tensor& x, const Tensor& experts, const Tensor& scaled_gates,
                           const Tensor& a, const Tensor& b, const Tensor& base, DispatchA mode) {
  TORCH_CHECK(x.dim() == 2 && a.dim() == 3 && b.dim() == 3 && base.dim() == 2,
              "sparse_lora_mixture: expects x (N, D), a (E, r, D), b (E, O, r), base (N, O)");
  TORCH_CHECK(experts.sizes() == scaled_gates.sizes() && experts.size(0) == x.size(0),
              "sparse_lora_mixture: experts/gates must be (N, k) with N = ", x.size(0));
  TORCH_CHECK(a.size(2) == x.size(1) && b.size(1) == base.size(1) && b.size(2) == a.size(1) &&
                  a.size(0) == b.size(0),
              "sparse_lora_mixture: shape mismatch x ", x.sizes(), " a ", a.sizes(), " b ",
              b.sizes(), " base ", base.sizes());
  if (x.size(0) == 0) return base;
  return SparseLoraMixture::apply(x.contiguous(), experts.contiguous(), scaled_gates.contiguous(),
                                  a.contiguous(), b.contiguous(), base.contiguous(),
                                  use_dense_a(mode, x.size(1)));
}

MoloraAdapter::MoloraAdapter(int64_t in_features, int64_t out_features, MoloraOptions options,
                             std::shared_ptr<MoeContext> context, torch::Device device)
    : options_(options),
      scaling_(lora_scaling(options.r, options.alpha, options.use_rslora)),
      context_(context ? std::move(context) : std::make_shared<MoeContext>()) {
  if (options.experts < 1) fail_usage("MoLoRA experts must be >= 1, got {}", options.experts);
  if (options.top_k < 1 || options.top_k > options.experts)
    fail_usage("MoLoRA top_k must be in [1, experts={}], got {}", options.experts, options.top_k);
  if (options.r <= 0) fail_usage("MoLoRA rank r must be positive, got {}", options.r);
  if (options.dropout < 0 || options.dropout >= 1)
    fail_usage("MoLoRA dropout must be in [0, 1), got {}", options.dropout);
  if (options.jitter < 0 || options.jitter >= 1)
    fail_usage("MoLoRA jitter must be in [0, 1), got {}", options.jitter);
  auto fp32 = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  const int64_t n_experts = options.experts, r = options.r;
  lora_A = register_parameter("lora_A", torch::empty({n_experts, r, in_features}, fp32));
  lora_B = register_parameter("lora_B", torch::zeros({n_experts, out_features, r}, fp32));
  router_weight = register_parameter("router_weight", torch::empty({n_experts, in_features}, fp32));
  if (options.router_bias)
    router_bias = register_parameter("router_bias", torch::empty({n_experts}, fp32));
  if (options.shared_expert) {
    shared_A = register_parameter("shared_A", torch::empty({r, in_features}, fp32));
    shared_B = register_parameter("shared_B", torch::zeros({out_features, r}, fp32));
  }
  reset_parameters();
}

void MoloraAdapter::set_context(std::shared_ptr<MoeContext> context) {
  context_ = context ? std::move(context) : std::make_shared<MoeContext>();
}

void MoloraAdapter::reset_parameters() {
  torch::NoGradGuard no_grad;
  init_lora_a_(lora_A);
  lora_B.zero_();
  // nn.Linear's default init (MING's router "switch"): weight kaiming_uniform(a=sqrt(5)) =
  // U(-1/sqrt(D), 1/sqrt(D)), bias U(-1/sqrt(D), 1/sqrt(D)).
  const double bound = 1.0 / std::sqrt(double(router_weight.size(1)));
  router_weight.uniform_(-bound, bound);
  if (router_bias.defined()) router_bias.uniform_(-bound, bound);
  if (shared_A.defined()) {
    init_lora_a_(shared_A);
    shared_B.zero_();
  }
}

namespace {
// fp32 router math (fp64 when the activations are fp64, for gradient checks).
torch::ScalarType router_dtype(torch::ScalarType x) {
  return x == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

// x (N, D), weight (E, D), bias (E) or undefined -> (N, E). Computed as the wide (E, N) product
// W x^T: BLAS runs it twice as fast as the narrow (N, E) one (E = 8, N = 512, D = 896: 0.22 vs
// 0.43 ms). Training and inference share it, so they route alike.
Tensor router_logits(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  auto logits = torch::mm(weight, x.t()).t();
  return bias.defined() ? logits + bias : logits;
}
}  // namespace

std::pair<Tensor, Tensor> MoloraAdapter::route(const Tensor& x) {
  torch::NoGradGuard no_grad;
  auto rd = router_dtype(x.scalar_type());
  auto logits = router_logits(x.reshape({-1, x.size(-1)}).to(rd), router_weight.to(rd),
                              router_bias.defined() ? router_bias.to(rd) : Tensor());
  auto top = logits.topk(options_.top_k, -1);
  return {std::get<1>(top), torch::softmax(std::get<0>(top), -1).to(torch::kFloat32)};
}

Tensor MoloraAdapter::forward(const Tensor& x, const Tensor& base) {
  const int64_t d_in = x.size(-1), d_out = base.size(-1), k = options_.top_k;
  const int64_t n_experts = options_.experts;
  const auto cd = x.scalar_type();
  const auto rd = router_dtype(cd);
  auto x2 = x.reshape({-1, d_in});         // (N, D)
  auto base2 = base.reshape({-1, d_out});  // (N, O)
  const int64_t n_tokens = x2.size(0);
  const bool training = is_training();

  const Tensor& mask = context_->token_mask();
  if (mask.defined() && mask.numel() != n_tokens)
    fail(
        "MoLoRA layer '{}': the token mask set in the MoeContext has {} entries but this "
        "forward has {} tokens (set_token_mask must be called with the batch's (B, T) mask)",
        name_, mask.numel(), n_tokens);

  // Router, in fp32: the top-k choice is discrete, so bf16 rounding here would change routes.
  auto xr = x2.to(rd);  // (N, D)
  if (training && options_.jitter > 0)
    xr = xr * torch::empty_like(xr).uniform_(1.0 - options_.jitter, 1.0 + options_.jitter);
  auto logits = router_logits(xr, router_weight.to(rd),
                              router_bias.defined() ? router_bias.to(rd) : Tensor());  // (N, E)
  auto top = logits.topk(k, -1);                      // sorted, highest first
  auto experts = std::get<1>(top);                    // (N, k) int64
  auto gates = torch::softmax(std::get<0>(top), -1);  // (N, k) softmax over the chosen logits

  auto xd = (training && options_.dropout > 0) ? torch::dropout(x2, options_.dropout, true) : x2;
  Tensor out;  // (N, O)
  const bool inference = !detail::needs_autograd({xd, lora_A, lora_B, base2});
  if (inference && detail::low_rank_kernel_applies(xd)) {
    out = detail::low_rank_update(xd, experts, gates * scaling_, a_copy_.get(lora_A, cd),
                                  bt_copy_.get(lora_B, cd, Layout::transposed), base2);
  } else if (inference) {
    // Many tokens without autograd (prefill, scoring): two GEMMs over all experts, the unchosen
    // experts' gates zero. E/k times the sparse flops, but r is small, and the output is written
    // once instead of as k expert-sorted copies gathered back per token (memory, not flops,
    // bounds the grouped path at this size: 4.6 ms vs 1.2 ms per Qwen2-0.5B gate_proj, N=512).
    const auto a = a_copy_.get(lora_A, cd);                        // (E, r, D)
    const auto bt = bt_copy_.get(lora_B, cd, Layout::transposed);  // (E, r, O)
    const int64_t r = options_.r;
    auto h = torch::mm(xd, a.view({n_experts * r, d_in}).t());  // (N, E*r)
    auto w = torch::zeros({n_tokens, n_experts}, gates.options())
                 .scatter_(1, experts, gates * scaling_);  // (N, E) gate * scaling, 0 unchosen
    h.view({n_tokens, n_experts, r}).mul_(w.to(cd).unsqueeze(2));
    out = torch::addmm(base2, h, bt.view({n_experts * r, d_out}));  // (N, O)
  } else {
    out = sparse_lora_mixture(xd, experts, (gates * scaling_).to(cd), a_copy_.get(lora_A, cd),
                              b_copy_.get(lora_B, cd), base2, dispatch_a_);
  }
  if (shared_A.defined()) {
    auto hs = torch::mm(xd, shared_a_copy_.get(shared_A, cd).t()).mul_(scaling_);  // (N, r)
    out = torch::addmm(out, hs, shared_b_copy_.get(shared_B, cd).t());
  }

  const bool want_balance = options_.balance_loss != BalanceLoss::none;
  const bool want_z = options_.router_z_loss_coef > 0;
  if (training && (want_balance || want_z) && n_tokens > 0) {
    auto m = mask.defined() ? mask.to(rd) : torch::ones({n_tokens}, logits.options());  // (N)
    auto n_valid = m.sum().clamp_min(1.0);
    Tensor weighted = torch::zeros({}, logits.options());
    double balance_value = 0, z_value = 0;
    if (want_balance) {
      auto probs = torch::softmax(logits, -1);                              // (N, E)
      auto p_mean = (probs * m.unsqueeze(1)).sum(0) / n_valid;              // (E)
      auto assigned = torch::zeros_like(logits).scatter_(1, experts, 1.0);  // (N, E)
      auto counts = (assigned * m.unsqueeze(1)).sum(0);                     // (E)
      double denom_k = options_.balance_loss == BalanceLoss::switch_style ? double(k) : 1.0;
      auto f = counts / (n_valid * denom_k);  // (E)
      auto balance = double(n_experts) * (f * p_mean).sum();
      balance_value = balance.item<double>();
      weighted = weighted + options_.balance_loss_coef * balance;
    }
    if (want_z) {
      auto lse = torch::logsumexp(logits, -1);  // (N)
      auto z = (lse * lse * m).sum() / n_valid;
      z_value = z.item<double>();
      weighted = weighted + options_.router_z_loss_coef * z;
    }
    context_->add_aux_loss(weighted, balance_value, z_value, want_balance, want_z);
  }

  // A recomputed layer's re-run (model/recompute.h) routes exactly as its first run, already
  // counted and recorded.
  if (model::replaying()) return out.view(base.sizes());
  if (training && n_tokens > 0) {
    torch::NoGradGuard no_grad;
    auto flat = mask.defined() ? experts.index({mask}).reshape({-1}) : experts.reshape({-1});
    auto counts_t = torch::bincount(flat, {}, n_experts).cpu();
    std::vector<int64_t> counts(counts_t.data_ptr<int64_t>(),
                                counts_t.data_ptr<int64_t>() + n_experts);
    const int64_t valid = mask.defined() ? mask.sum().item<int64_t>() : n_tokens;
    context_->add_load(name_, counts, valid, k);
  }
  if (RouteRecorder* recorder = context_->recorder())
    recorder->record(name_, experts.detach(), gates.detach().to(torch::kFloat32), mask);

  return out.view(base.sizes());
}

}  // namespace ming::adapt
