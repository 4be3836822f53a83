#include "ming/eval/scorer.h"

#include <algorithm>
#include <cctype>
#include <set>

#include <utf8proc.h>

#include "ming/core/error.h"
#include "ming/core/log.h"
#include "ming/data/encode.h"
#include "ming/text/chat_template.h"

namespace ming::eval {

using nlohmann::json;

namespace {

const torch::TensorOptions kLong = torch::TensorOptions().dtype(torch::kInt64);

bool ends_with_space(const std::string& s) {
  return !s.empty() && std::isspace(static_cast<unsigned char>(s.back()));
}

std::vector<int64_t> widen(const std::vector<text::TokenId>& ids) {
  return std::vector<int64_t>(ids.begin(), ids.end());
}

// A marker that is exactly one special token maps to that id (SentencePiece models do not parse
// "<s>" in text, BPE models do); everything else is encoded with special tokens parsed. The same
// rule data::encode_conversation applies, so evaluation sees the ids training saw.
std::vector<int64_t> encode_segment(const text::Tokenizer& tok, const text::Segment& seg) {
  if (seg.kind == text::SegmentKind::marker)
    if (auto id = tok.find(seg.text); id && tok.is_special(*id)) return {*id};
  return widen(tok.encode(seg.text, /*add_bos=*/false, /*parse_special=*/true));
}

text::ChatTemplate resolve_template(const model::LoadedModel& m, PromptFormat f) {
  switch (f) {
    case PromptFormat::raw:
      return text::ChatTemplateKind::raw;
    case PromptFormat::chat:
      if (m.chat_template.kind() == text::ChatTemplateKind::raw)
        fail_usage(
            "--prompt-format chat: the model in {} declares no chat template "
            "(hint: use --prompt-format raw)",
            m.dir.string());
      return m.chat_template;
    case PromptFormat::automatic:
      break;
  }
  return m.chat_template;
}

// The prompt ids plus what continuation tokenization needs. Re-encoding a whole long prompt for
// every choice would dominate multiple-choice scoring with a quadratic BPE, so continuations are
// tokenized after a short tail of the prompt: the last line of a raw prompt, or the last segment
// (the assistant header) of a chat prompt, which is encoded on its own anyway.
struct PromptUnits {
  EncodedPrompt prompt;
  std::string tail_text;
  std::vector<int64_t> tail_ids;  // encode(tail_text); its last ids end prompt.ids
  // tail_ids[tail_skip:] is verified to be the end of prompt.ids (a raw tail's first token is
  // encoded with a dummy prefix where the full prompt has a newline); merges that reach further
  // left than that fall back to encoding the whole text.
  size_t tail_skip = 0;
  bool parse_special = false;
  size_t bos_offset = 0;  // raw: 1 when the ids start with BOS
  bool raw = false;
};

PromptUnits encode_units(const TaskSpec& spec, const json& record, const model::LoadedModel& m,
                         PromptFormat format) {
  if (!m.tokenizer) fail_usage("{}: the model was loaded without a tokenizer", m.dir.string());
  const auto& tok = *m.tokenizer;
  const text::ChatTemplate chat_template = resolve_template(m, format);
  const text::ChatTemplateKind kind = chat_template.kind();
  const std::string user = render_prompt(spec, record);
  PromptUnits u;
  auto bos = tok.bos_id();
  if (kind == text::ChatTemplateKind::raw) {
    u.raw = true;
    u.prompt.text = spec.system.empty() ? user : spec.system + "\n\n" + user;
    if (bos) u.prompt.ids.push_back(*bos);
    u.bos_offset = u.prompt.ids.size();
    // Record text is data: "<|im_end|>" written in a question stays text.
    for (auto id : tok.encode(u.prompt.text, false, /*parse_special=*/false))
      u.prompt.ids.push_back(id);
    u.tail_text = u.prompt.text;
    u.tail_ids.assign(u.prompt.ids.begin() + u.bos_offset, u.prompt.ids.end());
    const size_t nl = u.prompt.text.rfind('\n');
    if (nl != std::string::npos && nl + 1 < u.prompt.text.size()) {
      std::string tail = u.prompt.text.substr(nl + 1);
      auto ids = widen(tok.encode(tail, false, false));
      const size_t n = u.prompt.ids.size() - u.bos_offset;
      if (ids.size() >= 2 && ids.size() - 1 <= n &&
          std::equal(ids.begin() + 1, ids.end(), u.prompt.ids.end() - (ids.size() - 1))) {
        u.tail_text = std::move(tail);
        u.tail_ids = std::move(ids);
        u.tail_skip = 1;
      }
    }
    return u;
  }
  std::vector<text::ChatMessage> messages;
  if (!spec.system.empty()) messages.push_back({text::Role::system, spec.system});
  messages.push_back({text::Role::user, user});
  text::RenderOptions ro;
  ro.add_generation_prompt = true;
  const auto segments = text::render_chat(chat_template, messages, ro);
  if (bos && data::template_expects_bos(kind)) u.prompt.ids.push_back(*bos);
  for (const auto& seg : segments) {
    auto ids = encode_segment(tok, seg);
    if (u.prompt.ids.size() == 1 && bos && u.prompt.ids[0] == *bos && !ids.empty() &&
        ids[0] == *bos)
      ids.erase(ids.begin());  // the template wrote its own <s>
    u.tail_text = seg.text;
    u.tail_ids = ids;
    u.prompt.ids.insert(u.prompt.ids.end(), ids.begin(), ids.end());
    u.prompt.text += seg.text;
  }
  u.parse_special = true;
  return u;
}

size_t common_prefix(const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                     size_t from = 0) {
  size_t n = from;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

// (context, continuation) for `cont` after the prompt, as lm-evaluation-harness splits
// encode(prompt + cont): the continuation is what follows the longest common prefix with
// encode(prompt), so a tokenizer that merges across the boundary moves the split to the left
// and the context is what the tokenizer really produces for the whole text.
gen::ScoreRequest split_request(const text::Tokenizer& tok, const PromptUnits& u,
                                const std::string& cont) {
  gen::ScoreRequest r;
  auto whole = widen(tok.encode(u.tail_text + cont, false, u.parse_special));
  size_t common = common_prefix(whole, u.tail_ids);
  if (common >= u.tail_skip) {
    // The merge stayed inside the verified part of the tail: drop the tail ids it replaced.
    const size_t replaced = u.tail_ids.size() - common;
    r.context.assign(u.prompt.ids.begin(), u.prompt.ids.end() - replaced);
    r.continuation.assign(whole.begin() + common, whole.end());
    return r;
  }
  // Reaches into text the tail does not stand for: encode everything.
  whole.assign(u.prompt.ids.begin(), u.prompt.ids.begin() + u.bos_offset);
  for (auto id : tok.encode(u.prompt.text + cont, false, u.parse_special)) whole.push_back(id);
  common = common_prefix(whole, u.prompt.ids);
  r.context.assign(whole.begin(), whole.begin() + common);
  r.continuation.assign(whole.begin() + common, whole.end());
  return r;
}

std::string scored_continuation(const std::string& prompt_text, const std::string& cont) {
  // Prompts ending in whitespace (a chat header's newline) take the continuation without its
  // separating space, as the model would write it there.
  if (ends_with_space(prompt_text) && !cont.empty() && cont[0] == ' ') return cont.substr(1);
  return cont;
}

int64_t max_length_of(const model::LoadedModel& m, const ScorerOptions& o) {
  return o.max_length > 0 ? o.max_length : m.config.max_position_embeddings;
}

// Scores every continuation of each example after its shared context with one forward over the
// contexts and one over the continuations: the context's keys and values are computed once,
// copied to one cache row per multi-token continuation, and the continuations run on top of
// them. Multiple-choice prompts are long and options short, so this costs about one forward per
// question instead of one per option. Same positions and masking as gen::score (left padding,
// positions counted over real tokens); a context longer than max_len - (longest continuation - 1)
// loses tokens from the left. Returns per example, per continuation (logprob, tokens, greedy).
std::vector<std::vector<gen::ScoreResult>> score_shared_context(
    model::CausalLM& model, const std::vector<const std::vector<int64_t>*>& contexts,
    const std::vector<std::vector<const std::vector<int64_t>*>>& conts, int64_t max_len) {
  const int64_t B = static_cast<int64_t>(contexts.size());
  int64_t T = 0, C = 1;
  std::vector<int64_t> keep(B);
  for (int64_t b = 0; b < B; ++b) {
    int64_t longest = 1;
    for (const auto* c : conts[b]) longest = std::max<int64_t>(longest, c->size());
    C = std::max(C, longest);
    keep[b] = std::max<int64_t>(1, std::min<int64_t>(contexts[b]->size(), max_len - (longest - 1)));
    T = std::max(T, keep[b]);
  }
  const int64_t L = C - 1;                      // continuation inputs after the first token
  auto ids = torch::zeros({B, T}, kLong);       // (B, T) left-padded contexts
  auto mask = torch::zeros({B, T + L}, kLong);  // (B, T + L) 1 = real token
  for (int64_t b = 0; b < B; ++b) {
    const auto& c = *contexts[b];
    ids[b]
        .narrow(0, T - keep[b], keep[b])
        .copy_(torch::tensor(std::vector<int64_t>(c.end() - keep[b], c.end()), kLong));
    mask[b].narrow(0, T - keep[b], keep[b]).fill_(1);
  }
  const auto device = model->device();
  auto cache = model->new_cache(B, T + L);
  model::ForwardOptions fo;
  fo.cache = &cache;
  fo.attention_mask = mask.narrow(1, 0, T).to(device);
  fo.output = model::ForwardOutput::logits_last;
  // (B, V): the distribution of every continuation's first token.
  auto first = model->forward(ids.to(device), fo)
                   .select(1, 0)
                   .to(torch::kFloat32)
                   .log_softmax(-1)
                   .to(torch::kCPU);
  auto first_best = first.argmax(-1);
  auto fa = first.accessor<float, 2>();
  auto fb = first_best.accessor<int64_t, 1>();

  std::vector<std::vector<gen::ScoreResult>> out(B);
  std::vector<int64_t> rows;                      // cache row per multi-token continuation
  std::vector<std::pair<int64_t, size_t>> owner;  // (example, choice) of each row
  for (int64_t b = 0; b < B; ++b) {
    for (size_t k = 0; k < conts[b].size(); ++k) {
      const auto& c = *conts[b][k];
      gen::ScoreResult r;
      r.tokens = static_cast<int64_t>(c.size());
      r.logprob = fa[b][c[0]];
      r.greedy = fb[b] == c[0];
      out[b].push_back(r);
      if (c.size() > 1) {
        rows.push_back(b);
        owner.push_back({b, k});
      }
    }
  }
  if (rows.empty()) return out;
  const int64_t R = static_cast<int64_t>(rows.size());
  auto row_index = torch::tensor(rows, kLong);
  cache.select_rows(row_index.to(device));           // repeated rows copy the shared context
  auto cont_ids = torch::zeros({R, L}, kLong);       // (R, L) cont[0 .. n-2], right-padded
  auto cont_mask = mask.index_select(0, row_index);  // (R, T + L)
  for (int64_t r = 0; r < R; ++r) {
    const auto& c = *conts[owner[r].first][owner[r].second];
    const int64_t n = static_cast<int64_t>(c.size()) - 1;
    cont_ids[r].narrow(0, 0, n).copy_(
        torch::tensor(std::vector<int64_t>(c.begin(), c.end() - 1), kLong));
    cont_mask[r].narrow(0, T, n).fill_(1);
  }
  model::ForwardOptions fo2;
  fo2.cache = &cache;
  fo2.attention_mask = cont_mask.to(device);
  fo2.output = model::ForwardOutput::logits_all;
  auto lp = model->forward(cont_ids.to(device), fo2)
                .to(torch::kFloat32)
                .log_softmax(-1)
                .to(torch::kCPU);  // (R, L, V)
  auto best = lp.argmax(-1);       // (R, L)
  auto la = lp.accessor<float, 3>();
  auto ba = best.accessor<int64_t, 2>();
  for (int64_t r = 0; r < R; ++r) {
    const auto& c = *conts[owner[r].first][owner[r].second];
    auto& res = out[owner[r].first][owner[r].second];
    for (size_t j = 1; j < c.size(); ++j) {
      res.logprob += la[r][j - 1][c[j]];
      res.greedy = res.greedy && ba[r][j - 1] == c[j];
    }
  }
  return out;
}

void score_choices(const TaskSpec& spec, const std::vector<TaskRecord>& records, size_t begin,
                   size_t end, model::LoadedModel& m, const ScorerOptions& o,
                   const std::vector<PromptUnits>& units, std::vector<ExampleResult>& results) {
  const auto& tok = *m.tokenizer;
  const int64_t max_len = max_length_of(m, o);
  // Per example: its choices' requests; examples whose choices all follow the unchanged prompt
  // share one context forward (score_shared_context), the others go through gen::score.
  std::vector<std::vector<gen::ScoreRequest>> requests(end - begin);
  std::vector<size_t> fast, slow;
  for (size_t i = begin; i < end; ++i) {
    auto& res = results[i];
    const auto& u = units[i - begin];
    const Choices c = record_choices(spec, records[i].data);
    bool shared = true;
    for (size_t k = 0; k < c.continuations.size(); ++k) {
      ChoiceScore cs;
      cs.key = c.keys[k];
      cs.continuation = scored_continuation(u.prompt.text, c.continuations[k]);
      auto req = split_request(tok, u, cs.continuation);
      if (req.continuation.empty())
        fail_usage(
            "task {}: record '{}' (line {}): choice '{}' encodes to no tokens after the "
            "prompt",
            spec.name, records[i].id, records[i].line, cs.key);
      shared = shared && req.context == u.prompt.ids;
      cs.tokens = static_cast<int64_t>(req.continuation.size());
      res.choices.push_back(std::move(cs));
      requests[i - begin].push_back(std::move(req));
    }
    (shared ? fast : slow).push_back(i);
  }
  if (!fast.empty()) {
    std::vector<const std::vector<int64_t>*> contexts;
    std::vector<std::vector<const std::vector<int64_t>*>> conts;
    for (size_t i : fast) {
      contexts.push_back(&units[i - begin].prompt.ids);
      conts.emplace_back();
      for (const auto& r : requests[i - begin]) conts.back().push_back(&r.continuation);
    }
    auto scored = score_shared_context(m.model, contexts, conts, max_len);
    for (size_t b = 0; b < fast.size(); ++b)
      for (size_t k = 0; k < scored[b].size(); ++k) {
        results[fast[b]].choices[k].logprob = scored[b][k].logprob;
        results[fast[b]].choices[k].greedy = scored[b][k].greedy;
      }
  }
  if (!slow.empty()) {
    std::vector<gen::ScoreRequest> flat;
    for (size_t i : slow)
      for (auto& r : requests[i - begin]) flat.push_back(r);
    gen::ScoreOptions so;
    so.batch_size = o.batch_size;
    so.max_length = max_len;
    auto scored = gen::score(m.model, flat, so);
    size_t j = 0;
    for (size_t i : slow)
      for (auto& cs : results[i].choices) {
        cs.logprob = scored[j].logprob;
        cs.greedy = scored[j].greedy;
        ++j;
      }
  }
  for (size_t i = begin; i < end; ++i) {
    auto& res = results[i];
    res.chosen = pick_choice(res.choices, o.choice_norm);
    res.output = res.choices[res.chosen].key;
    res.parsed = res.output;
    res.output_tokens = requests[i - begin][res.chosen].continuation;
  }
}

void score_generation(const TaskSpec& spec, const std::vector<TaskRecord>& records, size_t begin,
                      size_t end, model::LoadedModel& m, const ScorerOptions& o,
                      const std::vector<PromptUnits>& units, std::vector<ExampleResult>& results) {
  gen::GenerateOptions go;
  go.sampling = o.sampling;
  go.max_new_tokens = o.max_new_tokens > 0 ? o.max_new_tokens : spec.max_new_tokens;
  go.eos_ids = m.eos_token_ids;
  for (const auto& token : spec.stop_tokens)
    if (auto id = m.tokenizer->find(token); id && m.tokenizer->is_special(*id))
      go.eos_ids.push_back(*id);
  go.stop = spec.stop;
  const int64_t max_len = max_length_of(m, o);
  // Room for the answer: prompts lose tokens from the left so prompt + answer fit the model.
  const int64_t room = std::max<int64_t>(1, max_len - go.max_new_tokens);
  std::vector<std::vector<int64_t>> prompts;
  for (size_t i = begin; i < end; ++i) {
    const auto& ids = units[i - begin].prompt.ids;
    if (static_cast<int64_t>(ids.size()) > room) {
      log::debug("{} {}: prompt of {} tokens cut to its last {}", spec.name, records[i].id,
                 ids.size(), room);
      prompts.emplace_back(ids.end() - room, ids.end());
    } else {
      prompts.push_back(ids);
    }
  }
  auto outs = gen::generate(m.model, *m.tokenizer, prompts, go);
  for (size_t i = begin; i < end; ++i) {
    auto& res = results[i];
    auto& g = outs[i - begin];
    res.output = g.text;
    res.output_tokens = g.tokens;
    res.finish = g.finish == gen::FinishReason::eos    ? "eos"
                 : g.finish == gen::FinishReason::stop ? "stop"
                                                       : "length";
    res.parsed = parse_answer(spec, g.text, records[i].data);
  }
}

void score_perplexity(const TaskSpec& spec, const std::vector<TaskRecord>& records, size_t begin,
                      size_t end, model::LoadedModel& m, const ScorerOptions& o,
                      const std::vector<PromptUnits>& units, std::vector<ExampleResult>& results) {
  std::vector<gen::ScoreRequest> requests;
  std::vector<size_t> which;
  for (size_t i = begin; i < end; ++i) {
    const auto& u = units[i - begin];
    std::string ref =
        results[i].gold.is_string() ? results[i].gold.get<std::string>() : results[i].gold.dump();
    if (ref.empty()) continue;  // nothing to predict: contributes no tokens
    if (!ends_with_space(u.prompt.text) && !std::isspace(static_cast<unsigned char>(ref[0])))
      ref = " " + ref;
    auto req = split_request(*m.tokenizer, u, ref);
    if (req.continuation.empty()) continue;
    results[i].output_tokens = req.continuation;
    requests.push_back(std::move(req));
    which.push_back(i);
  }
  gen::ScoreOptions so;
  so.batch_size = o.batch_size;
  so.max_length = max_length_of(m, o);
  auto scored = gen::score(m.model, requests, so);
  for (size_t j = 0; j < which.size(); ++j) {
    results[which[j]].nll = -scored[j].logprob;
    results[which[j]].n_tokens = scored[j].tokens;
  }
}

// Per token id, whether it decodes to a fragment of a UTF-8 character (a byte-fallback piece),
// computed on first use.
class BytePieces {
 public:
  explicit BytePieces(const text::Tokenizer& tok) : tok_(tok), known_(tok.vocab_size(), -1) {}
  int64_t count(const std::vector<int64_t>& ids) {
    int64_t n = 0;
    for (int64_t id : ids) {
      if (id < 0 || id >= static_cast<int64_t>(known_.size())) continue;
      if (known_[id] < 0) known_[id] = is_fragment(tok_.decode({static_cast<text::TokenId>(id)}));
      n += known_[id];
    }
    return n;
  }

 private:
  // Decoders write a lone byte as U+FFFD or leave it as an invalid sequence.
  static bool is_fragment(const std::string& s) {
    if (s.find("\xEF\xBF\xBD") != std::string::npos) return true;
    const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
    for (utf8proc_ssize_t i = 0, n = static_cast<utf8proc_ssize_t>(s.size()); i < n;) {
      utf8proc_int32_t cp = 0;
      const utf8proc_ssize_t len = utf8proc_iterate(p + i, n - i, &cp);
      if (len <= 0) return true;
      i += len;
    }
    return false;
  }
  const text::Tokenizer& tok_;
  std::vector<int8_t> known_;
};

// Whether a prediction is right as a whole, for the parsers where that is meaningful.
std::optional<bool> whole_answer_correct(const TaskSpec& spec, const json& pred, const json& gold) {
  switch (spec.parser) {
    case AnswerParser::text:
    case AnswerParser::promptcblue:
      return std::nullopt;
    case AnswerParser::entity_list:
    case AnswerParser::pair_list: {
      std::set<std::string> a, b;
      for (const auto& x : pred) a.insert(x.is_string() ? x.get<std::string>() : x.dump());
      for (const auto& x : gold) b.insert(x.is_string() ? x.get<std::string>() : x.dump());
      return a == b;
    }
    default:
      return pred == gold;
  }
}

}  // namespace

PromptFormat parse_prompt_format(const std::string& name) {
  if (name == "auto") return PromptFormat::automatic;
  if (name == "chat") return PromptFormat::chat;
  if (name == "raw") return PromptFormat::raw;
  fail_usage("prompt format '{}': expected auto, chat or raw", name);
}

const char* prompt_format_name(PromptFormat f) {
  switch (f) {
    case PromptFormat::chat:
      return "chat";
    case PromptFormat::raw:
      return "raw";
    case PromptFormat::automatic:
      break;
  }
  return "auto";
}

ChoiceNorm parse_choice_norm(const std::string& name) {
  if (name == "none") return ChoiceNorm::none;
  if (name == "tokens") return ChoiceNorm::tokens;
  if (name == "chars") return ChoiceNorm::chars;
  fail_usage("choice normalisation '{}': expected none, tokens or chars", name);
}

const char* choice_norm_name(ChoiceNorm n) {
  switch (n) {
    case ChoiceNorm::tokens:
      return "tokens";
    case ChoiceNorm::chars:
      return "chars";
    case ChoiceNorm::none:
      break;
  }
  return "none";
}

EncodedPrompt encode_prompt(const TaskSpec& spec, const json& record,
                            const model::LoadedModel& model, PromptFormat format) {
  return encode_units(spec, record, model, format).prompt;
}

int64_t pick_choice(const std::vector<ChoiceScore>& choices, ChoiceNorm norm) {
  if (choices.empty()) fail("pick_choice: no choices");
  auto value = [norm](const ChoiceScore& c) {
    switch (norm) {
      case ChoiceNorm::tokens:
        return c.logprob / std::max<double>(1, c.tokens);
      // Bytes of the continuation without its separating space (harness: len(continuation)).
      case ChoiceNorm::chars: {
        size_t n = c.continuation.size();
        if (n > 1 && c.continuation[0] == ' ') --n;
        return c.logprob / std::max<double>(1, n);
      }
      case ChoiceNorm::none:
        break;
    }
    return c.logprob;
  };
  int64_t best = 0;
  for (size_t k = 1; k < choices.size(); ++k)
    if (value(choices[k]) > value(choices[best])) best = static_cast<int64_t>(k);
  return best;
}

std::vector<ExampleResult> score_task(const TaskSpec& spec, const std::vector<TaskRecord>& records,
                                      model::LoadedModel& m, const ScorerOptions& o,
                                      const BatchCallback& on_batch) {
  if (!m.tokenizer) fail_usage("{}: the model was loaded without a tokenizer", m.dir.string());
  torch::NoGradGuard no_grad;
  m.model->eval();
  std::vector<ExampleResult> results(records.size());
  BytePieces byte_pieces(*m.tokenizer);
  const size_t bs = static_cast<size_t>(std::max<int64_t>(1, o.batch_size));
  for (size_t begin = 0; begin < records.size(); begin += bs) {
    const size_t end = std::min(records.size(), begin + bs);
    std::vector<PromptUnits> units;
    for (size_t i = begin; i < end; ++i) {
      const auto& rec = records[i];
      try {
        units.push_back(encode_units(spec, rec.data, m, o.prompt_format));
      } catch (const UsageError& e) {
        fail_usage("task {}: record '{}' (line {}): {}", spec.name, rec.id, rec.line, e.what());
      }
      auto& res = results[i];
      res = example_shell(spec, rec);
      res.prompt = units.back().prompt.text;
      res.prompt_tokens = units.back().prompt.ids;
      res.prompt_byte_pieces = byte_pieces.count(res.prompt_tokens);
    }
    switch (spec.scorer) {
      case Scorer::loglik_choice:
        score_choices(spec, records, begin, end, m, o, units, results);
        break;
      case Scorer::generate:
        score_generation(spec, records, begin, end, m, o, units, results);
        break;
      case Scorer::perplexity:
        score_perplexity(spec, records, begin, end, m, o, units, results);
        break;
    }
    for (size_t i = begin; i < end; ++i) {
      auto& res = results[i];
      if (spec.scorer == Scorer::perplexity) {
        for (size_t k = 0; k < spec.metrics.size(); ++k)
          res.stats.push_back(example_nll(res.nll, static_cast<double>(res.n_tokens)));
        continue;
      }
      finish_example(spec, records[i], res);
    }
    if (on_batch) on_batch(results, begin, end);
  }
  return results;
}

ExampleResult example_shell(const TaskSpec& spec, const TaskRecord& record) {
  ExampleResult res;
  res.id = record.id;
  res.task = spec.name;
  res.line = record.line;
  res.gold = gold_answer(spec, record.data);
  for (const auto& field : spec.categories) {
    const json& v = record.data.at(field);
    res.categories[field] = v.is_string() ? v.get<std::string>() : v.dump();
  }
  return res;
}

void finish_example(const TaskSpec& spec, const TaskRecord& record, ExampleResult& res) {
  res.correct = whole_answer_correct(spec, res.parsed, res.gold);
  res.stats.clear();
  for (Metric metric : spec.metrics)
    res.stats.push_back(score_example(spec, metric, res.parsed, record.data));
}

ExampleResult rescore_example(const TaskSpec& spec, const TaskRecord& record,
                              const std::string& output) {
  if (spec.scorer == Scorer::perplexity)
    fail_usage("task {}: scored by perplexity, which needs the model, not generated text",
               spec.name);
  ExampleResult res = example_shell(spec, record);
  res.prompt = render_prompt(spec, record.data);
  res.output = output;
  if (spec.scorer == Scorer::loglik_choice) {
    // What a loglik run writes as output: the chosen option's key.
    res.parsed = strip_unicode(output);
    const Choices c = record_choices(spec, record.data);
    for (size_t k = 0; k < c.keys.size(); ++k)
      if (c.keys[k] == res.parsed.get<std::string>()) res.chosen = static_cast<int64_t>(k);
  } else {
    res.parsed = parse_answer(spec, output, record.data);
  }
  finish_example(spec, record, res);
  return res;
}

std::vector<ExampleStats> metric_rows(const std::vector<ExampleResult>& results,
                                      size_t metric_index) {
  std::vector<ExampleStats> rows;
  rows.reserve(results.size());
  for (const auto& r : results) rows.push_back(r.stats.at(metric_index));
  return rows;
}

}  // namespace ming::eval
