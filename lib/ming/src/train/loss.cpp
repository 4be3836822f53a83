#include "ming/train/loss.h"

#include "ming/data/encode.h"

namespace ming::train {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

namespace {

// Keeps one chunk's logits (and their fp32 copies in the loss) near 64 MB each.
constexpr int64_t kChunkLogits = int64_t(1) << 24;

Tensor chunk_loss(model::CausalLM& model, const Tensor& rows, const Tensor& targets) {
  return torch::nn::functional::cross_entropy(
      model->logits(rows).to(torch::kFloat32), targets,
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
}

// rows (N, D) labelled hidden states, targets (N); `parameters` are the head's trainable tensors
// (the output weight in full fine-tuning, an adapter on lm_head), listed so the node reaches them.
struct HeadLoss : public torch::autograd::Function<HeadLoss> {
  static Tensor forward(AutogradContext* ctx, const Tensor& rows, const Tensor& targets,
                        at::TensorList parameters, model::CausalLM model, int64_t chunk) {
    torch::AutoGradMode grad_on(true);
    const bool rows_grad = rows.requires_grad();
    auto grad_rows = torch::empty_like(rows);
    std::vector<Tensor> grad_parameters(parameters.size());
    auto total = torch::zeros({}, rows.options().dtype(torch::kFloat32));
    for (int64_t r0 = 0; r0 < rows.size(0); r0 += chunk) {
      const int64_t n = std::min(chunk, rows.size(0) - r0);
      auto x = rows.narrow(0, r0, n).detach().requires_grad_(rows_grad);
      auto loss = chunk_loss(model, x, targets.narrow(0, r0, n));
      std::vector<Tensor> wrt(parameters.begin(), parameters.end());
      if (rows_grad) wrt.insert(wrt.begin(), x);
      auto g = torch::autograd::grad({loss}, wrt, {}, /*retain_graph=*/false,
                                     /*create_graph=*/false, /*allow_unused=*/true);
      if (rows_grad) grad_rows.narrow(0, r0, n).copy_(g[0]);
      for (size_t i = 0; i < parameters.size(); ++i) {
        const Tensor& gi = g[i + (rows_grad ? 1 : 0)];
        if (!gi.defined()) continue;
        grad_parameters[i] = grad_parameters[i].defined() ? grad_parameters[i] + gi : gi;
      }
      total.add_(loss.detach());
    }
    std::vector<Tensor> saved = {rows_grad ? grad_rows : Tensor()};
    saved.insert(saved.end(), grad_parameters.begin(), grad_parameters.end());
    ctx->save_for_backward(saved);
    return total;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const Tensor& scale = grads[0];  // d(outer loss) / d(this sum): a scalar
    auto saved = ctx->get_saved_variables();
    tensor_list out;
    out.push_back(saved[0].defined() ? saved[0] * scale.to(saved[0].scalar_type()) : Tensor());
    out.emplace_back();  // targets
    for (size_t i = 1; i < saved.size(); ++i)
      out.push_back(saved[i].defined() ? saved[i] * scale.to(saved[i].scalar_type()) : Tensor());
    out.emplace_back();  // model
    out.emplace_back();  // chunk
    return out;
  }
};

}  // namespace

Tensor labelled_token_loss(model::CausalLM& model, const Tensor& hidden, const Tensor& labels,
                           int64_t chunk_rows) {
  const int64_t B = hidden.size(0), T = hidden.size(1), D = hidden.size(2);
  TORCH_CHECK(labels.sizes() == torch::IntArrayRef({B, T}),
              "labelled_token_loss: labels must be (B, T) = (", B, ", ", T, "), got ",
              labels.sizes());
  const auto dev = hidden.device();
  auto targets = labels.narrow(1, 1, T - 1).to(dev);  // (B, T-1): what position t predicts
  auto labelled = targets.ne(data::kIgnoreIndex);
  auto topt = torch::TensorOptions().dtype(torch::kInt64).device(dev);
  auto row_of = torch::arange(B, topt).mul_(T).unsqueeze(1) + torch::arange(T - 1, topt);
  auto rows = hidden.reshape({B * T, D}).index_select(0, row_of.masked_select(labelled));
  auto wanted = targets.masked_select(labelled);  // (N)
  const int64_t chunk = chunk_rows > 0
                            ? chunk_rows
                            : std::max<int64_t>(64, kChunkLogits / model->config().vocab_size);

  std::vector<Tensor> head;
  for (const auto& p : (model->lm_head ? model->lm_head->parameters()
                                       : std::vector<Tensor>{model->model->embed_tokens->weight}))
    if (p.requires_grad()) head.push_back(p);
  bool needs_grad = rows.requires_grad() || !head.empty();
  if (torch::GradMode::is_enabled() && needs_grad)
    return HeadLoss::apply(rows, wanted, at::TensorList(head), model, chunk);

  auto total = torch::zeros({}, hidden.options().dtype(torch::kFloat32));
  for (int64_t r0 = 0; r0 < rows.size(0); r0 += chunk) {
    const int64_t n = std::min(chunk, rows.size(0) - r0);
    total.add_(chunk_loss(model, rows.narrow(0, r0, n), wanted.narrow(0, r0, n)));
  }
  return total;
}

Tensor summed_token_loss(model::CausalLM& model, const data::Batch& batch, torch::Device device,
                         bool recompute) {
  auto ids = batch.input_ids.to(device);
  model::ForwardOptions fwd;
  fwd.attention_mask = batch.attention_mask.to(device);
  fwd.position_ids = batch.position_ids.to(device);
  if (batch.segment_ids.defined() && batch.segment_ids.max().item<int64_t>() > 1)
    fwd.segment_ids = batch.segment_ids.to(device);
  fwd.output = model::ForwardOutput::hidden;
  fwd.recompute = recompute;
  return labelled_token_loss(model, model->forward(ids, fwd), batch.labels);
}

}  // namespace ming::train
