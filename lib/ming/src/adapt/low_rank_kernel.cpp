#include "adapt/low_rank_kernel.h"

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <vector>

namespace ming::adapt::detail {
namespace {

template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

// One token: acc (O) starts at base, then each slot adds gate * (A_e x) @ Bt_e. Bt rows are
// contiguous, so the O-long update is a plain vectorisable axpy per rank.
template <class T>
inline __attribute__((always_inline)) void update_token(const T* x, const T* base, T* out,
                                                        const int64_t* experts, const Acc<T>* gates,
                                                        int64_t k, const T* a, const T* bt,
                                                        int64_t r, int64_t d_in, int64_t d_out,
                                                        Acc<T>* h, Acc<T>* acc) {
  using F = Acc<T>;
  for (int64_t o = 0; o < d_out; ++o) acc[o] = static_cast<F>(base[o]);
  for (int64_t s = 0; s < k; ++s) {
    const int64_t e = experts ? experts[s] : 0;
    const T* ae = a + e * r * d_in;
    for (int64_t j = 0; j < r; ++j) {
      const T* row = ae + j * d_in;
      F sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t d = 0; d < d_in; ++d) sum += static_cast<F>(row[d]) * static_cast<F>(x[d]);
      h[j] = gates[s] * sum;
    }
    const T* be = bt + e * r * d_out;
    for (int64_t j = 0; j < r; ++j) {
      const T* row = be + j * d_out;
      const F hj = h[j];
#pragma omp simd
      for (int64_t o = 0; o < d_out; ++o) acc[o] += static_cast<F>(row[o]) * hj;
    }
  }
  for (int64_t o = 0; o < d_out; ++o) out[o] = static_cast<T>(acc[o]);
}

// One clone per x86-64 level, picked at load time: the kernel is built for the generic baseline
// like the rest of the library, but runs 16 lanes wide where the CPU has AVX-512.
#if defined(__x86_64__) && defined(__GNUC__)
#define MING_CPU_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MING_CPU_CLONES
#endif

template <class T>
inline __attribute__((always_inline)) void update_tokens(int64_t begin, int64_t end, const T* x,
                                                         const T* base, T* out, const int64_t* ids,
                                                         const Acc<T>* g, int64_t k, const T* a,
                                                         const T* bt, int64_t r, int64_t d_in,
                                                         int64_t d_out) {
  std::vector<Acc<T>> h(static_cast<size_t>(r)), acc(static_cast<size_t>(d_out));
  for (int64_t t = begin; t < end; ++t)
    update_token<T>(x + t * d_in, base + t * d_out, out + t * d_out, ids ? ids + t * k : nullptr,
                    g + (ids ? t * k : 0), k, a, bt, r, d_in, d_out, h.data(), acc.data());
}

#define MING_UPDATE_TOKENS(NAME, T)                                                        \
  MING_CPU_CLONES void NAME(int64_t begin, int64_t end, const T* x, const T* base, T* out, \
                            const int64_t* ids, const Acc<T>* g, int64_t k, const T* a,    \
                            const T* bt, int64_t r, int64_t d_in, int64_t d_out) {         \
    update_tokens<T>(begin, end, x, base, out, ids, g, k, a, bt, r, d_in, d_out);          \
  }
MING_UPDATE_TOKENS(update_tokens_of, float)
MING_UPDATE_TOKENS(update_tokens_of, double)
MING_UPDATE_TOKENS(update_tokens_of, c10::BFloat16)
MING_UPDATE_TOKENS(update_tokens_of, c10::Half)
#undef MING_UPDATE_TOKENS

template <class T>
void run(const at::Tensor& x, const at::Tensor& experts, const at::Tensor& gates,
         const at::Tensor& a, const at::Tensor& bt, const at::Tensor& base, at::Tensor& out) {
  using F = Acc<T>;
  const int64_t n = x.size(0), d_in = x.size(1), d_out = base.size(1), r = a.size(1);
  const int64_t k = experts.defined() ? experts.size(1) : 1;
  const int64_t* ids = experts.defined() ? experts.data_ptr<int64_t>() : nullptr;
  const F* g = gates.data_ptr<F>();
  const T *xp = x.data_ptr<T>(), *ap = a.data_ptr<T>(), *btp = bt.data_ptr<T>();
  const T* bp = base.data_ptr<T>();
  T* op = out.data_ptr<T>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    update_tokens_of(begin, end, xp, bp, op, ids, g, k, ap, btp, r, d_in, d_out);
  });
}

}  // namespace

bool needs_autograd(std::initializer_list<at::Tensor> tensors) {
  if (!at::GradMode::is_enabled()) return false;
  for (const auto& t : tensors)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

bool low_rank_kernel_applies(const at::Tensor& x) {
  const auto dt = x.scalar_type();
  return x.device().is_cpu() && x.dim() == 2 && x.size(0) <= kFewTokens &&
         (dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16 || dt == at::kHalf);
}

at::Tensor low_rank_update(const at::Tensor& x, const at::Tensor& experts, const at::Tensor& gates,
                           const at::Tensor& a, const at::Tensor& bt, const at::Tensor& base,
                           double scale) {
  TORCH_CHECK(x.dim() == 2 && a.dim() == 3 && bt.dim() == 3 && base.dim() == 2,
              "low_rank_update: expects x (N, D), a (E, r, D), bt (E, r, O), base (N, O)");
  TORCH_CHECK(a.size(2) == x.size(1) && bt.size(2) == base.size(1) && a.size(1) == bt.size(1) &&
                  a.size(0) == bt.size(0) && base.size(0) == x.size(0),
              "low_rank_update: shape mismatch x ", x.sizes(), " a ", a.sizes(), " bt ", bt.sizes(),
              " base ", base.sizes());
  const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor ids, g;
  if (experts.defined()) {
    TORCH_CHECK(
        experts.dim() == 2 && experts.sizes() == gates.sizes() && experts.size(0) == x.size(0),
        "low_rank_update: experts and gates must be (N, k)");
    ids = experts.to(at::kLong).contiguous();
    g = gates.to(acc_type).contiguous();
  } else {
    g = at::full({1}, scale, at::TensorOptions().dtype(acc_type));
  }
  auto xc = x.contiguous(), ac = a.contiguous(), btc = bt.contiguous(), bc = base.contiguous();
  auto out = at::empty_like(bc);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "low_rank_update",
                                  [&] { run<scalar_t>(xc, ids, g, ac, btc, bc, out); });
  return out;
}

}  // namespace ming::adapt::detail
