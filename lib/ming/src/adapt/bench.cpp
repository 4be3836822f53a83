#include "ming/adapt/bench.h"

#include <algorithm>
#include <chrono>
#include <functional>

#include "ming/core/runtime.h"
#include "ming/model/projection.h"

namespace ming::adapt {

using torch::Tensor;

Tensor dense_reference_mixture(MoloraAdapter& adapter, const Tensor& x, const Tensor& base) {
  const auto cd = x.scalar_type();
  const auto& o = adapter.options();
  auto x2 = x.reshape({-1, x.size(-1)});
  auto logits = torch::nn::functional::linear(
      x2.to(torch::kFloat32), adapter.router_weight,
      adapter.router_bias.defined() ? adapter.router_bias : Tensor());  // (N, E)
  auto top = logits.softmax(-1).topk(o.top_k, -1);
  auto weights = std::get<0>(top);
  weights = weights / weights.sum(-1, true);  // (N, k)
  auto a = adapter.lora_A.to(cd), b = adapter.lora_B.to(cd);
  std::vector<Tensor> all;
  for (int64_t e = 0; e < o.experts; ++e)
    all.push_back(torch::mm(torch::mm(x2, a[e].t()), b[e].t()) * adapter.scaling());  // (N, O)
  auto stacked = torch::stack(all, 0).transpose(0, 1);                                // (N, E, O)
  auto selected = stacked.gather(
      1, std::get<1>(top).unsqueeze(-1).expand({-1, -1, stacked.size(2)}));  // (N, k, O)
  auto mixed = torch::einsum("be,bef->bf", {weights.to(cd), selected});
  return (base.reshape({-1, base.size(-1)}) + mixed).view(base.sizes());
}

namespace {

double median_ms(int warmup, int iterations, const std::function<void()>& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> times;
  for (int i = 0; i < std::max(1, iterations); ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    auto t1 = std::chrono::steady_clock::now();
    times.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void randomise_(MoloraAdapter& m) {
  torch::NoGradGuard no_grad;
  m.lora_B.normal_(0, 0.02);  // B = 0 would let a lazy kernel skip work
}

}  // namespace

MoloraBenchResult bench_molora_mlp(const MoloraBenchOptions& opt) {
  if (opt.threads > 0) set_threads(opt.threads);
  torch::manual_seed(opt.seed);
  const auto cd = torch::TensorOptions().dtype(opt.dtype);
  MoloraOptions mo;
  mo.experts = opt.experts;
  mo.top_k = opt.top_k;
  mo.r = opt.r;
  const int64_t n = opt.tokens, h = opt.hidden, im = opt.intermediate;

  MoloraBenchResult result;
  struct Shape {
    const char* name;
    int64_t in, out;
  };
  for (const Shape& s :
       {Shape{"gate_proj", h, im}, Shape{"up_proj", h, im}, Shape{"down_proj", im, h}}) {
    MoloraAdapter m(s.in, s.out, mo);
    m.set_dispatch_a(opt.dispatch);
    randomise_(m);
    m.train();
    auto x = torch::randn({n, s.in}, cd);
    auto base = torch::randn({n, s.out}, cd);
    auto grad = torch::randn({n, s.out}, cd);
    ProjectionBench pb{s.name, s.in, s.out, 0, 0};
    auto run = [&](bool sparse) {
      auto xi = x.detach().requires_grad_(true);
      auto y = sparse ? m.forward(xi, base) : dense_reference_mixture(m, xi, base);
      y.backward(grad);
      m.zero_grad();
    };
    pb.sparse_ms = median_ms(opt.warmup, opt.iterations, [&] { run(true); });
    pb.dense_ms = median_ms(opt.warmup, opt.iterations, [&] { run(false); });
    result.sparse_ms += pb.sparse_ms;
    result.dense_ms += pb.dense_ms;
    result.projections.push_back(pb);
  }

  // Whole MLP block: y = down(silu(gate(x)) * up(x)), frozen base weights.
  auto make = [&](const char* name, int64_t in, int64_t out) {
    model::Projection p(std::string("model.layers.0.mlp.") + name, in, out, false, cd);
    torch::NoGradGuard no_grad;
    p->weight.normal_(0, 0.02);
    return p;
  };
  auto gate = make("gate_proj", h, im), up = make("up_proj", h, im),
       down = make("down_proj", im, h);
  auto x = torch::randn({n, h}, cd);
  auto grad = torch::randn({n, h}, cd);
  auto step = [&] {
    auto xi = x.detach().requires_grad_(true);
    auto y = down(torch::silu(gate(xi)) * up(xi));
    y.backward(grad);
  };
  result.base_mlp_ms = median_ms(opt.warmup, opt.iterations, step);
  auto context = std::make_shared<MoeContext>();
  std::vector<std::shared_ptr<MoloraAdapter>> adapters;
  for (auto* p : {&gate, &up, &down}) {
    auto m =
        std::make_shared<MoloraAdapter>((*p)->in_features(), (*p)->out_features(), mo, context);
    m->set_dispatch_a(opt.dispatch);
    randomise_(*m);
    m->set_name((*p)->name());
    (*p)->set_adapter(m);
    adapters.push_back(m);
  }
  result.molora_mlp_ms = median_ms(opt.warmup, opt.iterations, [&] {
    step();
    for (auto& m : adapters) m->zero_grad();
    context->take_load();
  });
  return result;
}

}  // namespace ming::adapt
