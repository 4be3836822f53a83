// The language-model loss of a training step without full logits: only positions that have a
// label reach the output head (with MING's masking a minority of them), in chunks of rows, so no
// (tokens x vocab) fp32 tensor exists for the whole batch. Each chunk's gradient is taken while
// its logits exist (the loss is a scalar, so the backward only scales it), which costs no second
// pass over the head. The gradient is the full-logits one up to summation order.
#pragma once

#include <cstdint>

#include <torch/torch.h>

#include "ming/data/loader.h"
#include "ming/model/transformer.h"

namespace ming::train {

// Sum of the next-token cross-entropy (fp32) over the positions t with labels[:, t+1] !=
// kIgnoreIndex. hidden (B, T, D) after the final norm; labels (B, T) int64 aligned with the
// inputs. chunk_rows: labelled positions per head chunk (0: about 16M logits per chunk).
torch::Tensor labelled_token_loss(model::CausalLM& model, const torch::Tensor& hidden,
                                  const torch::Tensor& labels, int64_t chunk_rows = 0);

// The summed loss of one batch: the forward (with activation recomputation when `recompute`)
// and labelled_token_loss.
torch::Tensor summed_token_loss(model::CausalLM& model, const data::Batch& batch,
                                torch::Device device, bool recompute);

}  // namespace ming::train
