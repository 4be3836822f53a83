#include "ming/gen/generate.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <set>

#include "ming/core/error.h"

namespace ming::gen {

namespace {
const torch::TensorOptions kLong = torch::TensorOptions().dtype(torch::kInt64);
}

size_t stable_prefix_length(const std::string& text, const std::vector<std::string>& stop) {
  size_t n = text.size();
  // A trailing incomplete UTF-8 sequence: find the start of the last character.
  if (n > 0) {
    size_t j = n - 1;
    while (j > 0 && (static_cast<unsigned char>(text[j]) & 0xC0) == 0x80 && n - j < 4) --j;
    const auto lead = static_cast<unsigned char>(text[j]);
    const size_t need = lead < 0x80           ? 1
                        : (lead >> 5) == 0x6  ? 2
                        : (lead >> 4) == 0xE  ? 3
                        : (lead >> 3) == 0x1E ? 4
                                              : 1;
    if (n - j < need) n = j;
  }
  // Decoders may render an incomplete byte sequence as U+FFFD; the next token can complete it.
  static const std::string kReplacement = "\xEF\xBF\xBD";
  while (n >= 3 && text.compare(n - 3, 3, kReplacement) == 0) n -= 3;
  size_t hold = 0;
  for (const auto& s : stop) {
    for (size_t len = std::min(s.size() - (s.empty() ? 0 : 1), n); len > hold; --len)
      if (text.compare(n - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
  }
  return n - hold;
}

std::vector<int64_t> sample_next(const torch::Tensor& logits,
                                 const std::vector<std::vector<int64_t>>& history,
                                 const SamplingOptions& o, torch::Generator& generator) {
  auto x = logits.detach().to(torch::kCPU, torch::kFloat32).contiguous().clone();  // (B, V)
  const int64_t B = x.size(0), V = x.size(1);
  if (o.repetition_penalty != 1.0) {
    for (int64_t b = 0; b < B; ++b) {
      std::set<int64_t> seen;
      for (auto id : history[b])
        if (id >= 0 && id < V) seen.insert(id);
      if (seen.empty()) continue;
      auto idx = torch::tensor(std::vector<int64_t>(seen.begin(), seen.end()), kLong);
      auto row = x[b];
      auto vals = row.index_select(0, idx);
      vals = torch::where(vals < 0, vals * o.repetition_penalty, vals / o.repetition_penalty);
      row.index_copy_(0, idx, vals);
    }
  }
  torch::Tensor next;
  if (o.temperature <= 0) {
    next = x.argmax(-1);
  } else {
    x.div_(o.temperature);
    const float neg_inf = -std::numeric_limits<float>::infinity();
    if (o.top_k > 0 && o.top_k < V) {
      auto kth = std::get<0>(x.topk(o.top_k, -1)).narrow(1, o.top_k - 1, 1);  // (B, 1)
      x.masked_fill_(x < kth, neg_inf);
    }
    if (o.top_p < 1.0) {
      auto [sorted, order] = x.sort(-1, /*descending=*/true);
      auto probs = sorted.softmax(-1);
      // Drop a token when the tokens ranked above it already hold top_p of the mass; the most
      // likely token always stays.
      auto remove = (probs.cumsum(-1) - probs) > o.top_p;
      remove.narrow(1, 0, 1).fill_(false);
      sorted.masked_fill_(remove, neg_inf);
      x = torch::empty_like(x).scatter_(1, order, sorted);
    }
    next = torch::multinomial(x.softmax(-1), 1, /*replacement=*/false, generator).squeeze(1);
  }
  std::vector<int64_t> out(B);
  auto acc = next.to(torch::kInt64).contiguous();
  std::copy(acc.data_ptr<int64_t>(), acc.data_ptr<int64_t>() + B, out.begin());
  return out;
}

std::vector<Generation> generate(model::CausalLM& model, const text::Tokenizer& tokenizer,
                                 const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerateOptions& o, const StreamCallback& stream) {
  torch::NoGradGuard no_grad;
  const int64_t B = static_cast<int64_t>(prompts.size());
  std::vector<Generation> out(B);
  if (B == 0 || o.max_new_tokens <= 0) return out;
  int64_t P = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty())
      fail_usage("generate: prompt {} is empty (start it with the BOS token, if the model has one)",
                 i);
    P = std::max<int64_t>(P, prompts[i].size());
  }
  const int64_t vocab = model->config().vocab_size;
  for (size_t i = 0; i < prompts.size(); ++i)
    for (auto id : prompts[i])
      if (id < 0 || id >= vocab)
        fail_usage("generate: prompt {} holds token id {} outside the model's vocabulary of {}", i,
                   id, vocab);
  const auto device = model->device();
  const int64_t N = o.max_new_tokens;

  // Left-padded prompts: ids (B, P); mask (B, P + N), generated columns all real.
  auto ids = torch::zeros({B, P}, kLong);
  auto mask = torch::zeros({B, P + N}, kLong);
  mask.narrow(1, P, N).fill_(1);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t L = prompts[b].size();
    ids[b].narrow(0, P - L, L).copy_(torch::tensor(prompts[b], kLong));
    mask[b].narrow(0, P - L, L).fill_(1);
  }
  mask = mask.to(device);

  auto cache = model->new_cache(B, P + N);
  model::ForwardOptions fo;
  fo.cache = &cache;
  fo.output = model::ForwardOutput::logits_last;
  fo.attention_mask = mask.narrow(1, 0, P);
  auto logits = model->forward(ids.to(device), fo);  // (B, 1, V)

  torch::Generator generator = at::detail::createCPUGenerator(o.sampling.seed);
  std::set<int64_t> eos(o.eos_ids.begin(), o.eos_ids.end());
  std::vector<std::vector<int64_t>> history(prompts.begin(), prompts.end());
  std::vector<size_t> emitted(B, 0);
  std::vector<int64_t> active(B);  // batch row -> prompt index
  std::iota(active.begin(), active.end(), 0);

  for (int64_t step = 0; step < N && !active.empty(); ++step) {
    std::vector<std::vector<int64_t>> seen;
    for (auto i : active) seen.push_back(history[i]);
    auto next = sample_next(logits.select(1, 0), seen, o.sampling, generator);

    std::vector<int64_t> keep_rows, keep_ids;
    for (size_t r = 0; r < active.size(); ++r) {
      const int64_t i = active[r];
      Generation& g = out[i];
      const int64_t tok = next[r];
      bool done = false;
      if (eos.count(tok)) {
        g.finish = FinishReason::eos;
        done = true;
      } else {
        g.tokens.push_back(tok);
        history[i].push_back(tok);
        std::vector<text::TokenId> as_ids(g.tokens.begin(), g.tokens.end());
        g.text = tokenizer.decode(as_ids, o.skip_special);
        size_t cut = std::string::npos;
        for (const auto& s : o.stop)
          if (!s.empty()) cut = std::min(cut, g.text.find(s));
        if (cut != std::string::npos) {
          g.text.resize(cut);
          g.finish = FinishReason::stop;
          done = true;
        } else if (static_cast<int64_t>(g.tokens.size()) == N) {
          g.finish = FinishReason::length;
          done = true;
        }
      }
      if (stream) {
        const size_t upto = done ? g.text.size() : stable_prefix_length(g.text, o.stop);
        if (upto > emitted[i]) {
          stream(i, g.text.substr(emitted[i], upto - emitted[i]));
          emitted[i] = upto;
        }
      }
      if (!done) {
        keep_rows.push_back(static_cast<int64_t>(r));
        keep_ids.push_back(tok);
      }
    }
    if (keep_rows.empty()) break;
    if (keep_rows.size() < active.size()) {
      // Drop finished sequences from the batch and the cache.
      auto rows = torch::tensor(keep_rows, kLong).to(device);
      cache.select_rows(rows);
      mask = mask.index_select(0, rows);
      std::vector<int64_t> still;
      for (auto r : keep_rows) still.push_back(active[r]);
      active = std::move(still);
    }
    fo.attention_mask = mask.narrow(1, 0, P + step + 1);
    auto input = torch::tensor(keep_ids, kLong).view({-1, 1}).to(device);
    logits = model->forward(input, fo);
  }
  return out;
}

std::vector<ScoreResult> score(model::CausalLM& model, const std::vector<ScoreRequest>& requests,
                               const ScoreOptions& o) {
  torch::NoGradGuard no_grad;
  const int64_t max_len = o.max_length > 0 ? o.max_length : model->config().max_position_embeddings;
  const int64_t vocab = model->config().vocab_size;
  std::vector<ScoreResult> results(requests.size());
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), 0);
  auto total = [&](size_t i) {
    return requests[i].context.size() + requests[i].continuation.size();
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return total(a) > total(b); });

  const auto device = model->device();
  const int64_t bs = std::max<int64_t>(1, o.batch_size);
  for (size_t start = 0; start < order.size(); start += bs) {
    const size_t end = std::min(order.size(), start + static_cast<size_t>(bs));
    // Per row: the model input (everything but the last token, cut from the left to max_len).
    std::vector<std::vector<int64_t>> inputs;
    int64_t T = 0, C = 0;
    for (size_t k = start; k < end; ++k) {
      const auto& r = requests[order[k]];
      if (r.context.empty() || r.continuation.empty())
        fail_usage("score: request {} needs a non-empty context and continuation", order[k]);
      if (static_cast<int64_t>(r.continuation.size()) > max_len)
        fail_usage(
            "score: request {} has a continuation of {} tokens, longer than the maximum "
            "length {}",
            order[k], r.continuation.size(), max_len);
      std::vector<int64_t> full(r.context);
      full.insert(full.end(), r.continuation.begin(), r.continuation.end());
      for (auto id : full)
        if (id < 0 || id >= vocab)
          fail_usage("score: request {} holds token id {} outside the vocabulary of {}", order[k],
                     id, vocab);
      full.pop_back();
      if (static_cast<int64_t>(full.size()) > max_len)
        full.erase(full.begin(), full.end() - max_len);
      T = std::max<int64_t>(T, full.size());
      C = std::max<int64_t>(C, r.continuation.size());
      inputs.push_back(std::move(full));
    }
    const int64_t Bn = inputs.size();
    auto ids = torch::zeros({Bn, T}, kLong);
    auto mask = torch::zeros({Bn, T}, kLong);
    for (int64_t b = 0; b < Bn; ++b) {
      const int64_t L = inputs[b].size();
      ids[b].narrow(0, T - L, L).copy_(torch::tensor(inputs[b], kLong));
      mask[b].narrow(0, T - L, L).fill_(1);
    }
    model::ForwardOptions fo;
    fo.attention_mask = mask.to(device);
    fo.output = model::ForwardOutput::hidden;
    auto hidden = model->forward(ids.to(device), fo);  // (Bn, T, D)
    // Only the last C positions predict continuation tokens: the head runs on those alone.
    auto logprobs = model->logits(hidden.narrow(1, T - C, C))
                        .to(torch::kFloat32)
                        .log_softmax(-1)
                        .to(torch::kCPU);  // (Bn, C, V)
    for (int64_t b = 0; b < Bn; ++b) {
      const auto& cont = requests[order[start + b]].continuation;
      const int64_t n = cont.size();
      auto lp = logprobs[b].narrow(0, C - n, n);  // (n, V)
      auto target = torch::tensor(cont, kLong);
      ScoreResult& res = results[order[start + b]];
      res.tokens = n;
      res.logprob = lp.gather(1, target.unsqueeze(1)).sum().item<double>();
      res.greedy = lp.argmax(-1).eq(target).all().item<bool>();
    }
  }
  return results;
}

}  // namespace ming::gen
