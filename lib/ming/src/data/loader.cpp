#include "ming/data/loader.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <thread>

#include "data/rng.h"
#include "ming/core/error.h"
#include "ming/core/log.h"
#include "ming/data/registry.h"

namespace ming::data {

namespace fs = std::filesystem;
using io::Json;

namespace {

// FNV-1a over 64-bit words: a cheap, stable fingerprint of the data.
struct Hasher {
  uint64_t h = 0xcbf29ce484222325ULL;
  void add(uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 0x100000001b3ULL;
    }
  }
};

int64_t first_label(const EncodedExample& ex) {
  for (size_t i = 0; i < ex.labels.size(); ++i)
    if (ex.labels[i] != kIgnoreIndex) return static_cast<int64_t>(i);
  return -1;
}

// Keeps the first `cutoff_len` tokens. Returns false when nothing worth training on is left.
bool cut(EncodedExample& ex, int64_t cutoff_len, int64_t& n_truncated) {
  if (ex.first_trained < 0 || ex.first_trained >= cutoff_len) return false;
  if (static_cast<int64_t>(ex.input_ids.size()) > cutoff_len) {
    ex.input_ids.resize(cutoff_len);
    ex.labels.resize(cutoff_len);
    ++n_truncated;
  }
  return true;
}

// A document longer than cutoff_len becomes consecutive chunks rather than losing its tail.
// A chunk needs two tokens to give the shifted loss anything to predict.
std::vector<EncodedExample> chunk_document(const EncodedExample& doc, int64_t cutoff_len) {
  std::vector<EncodedExample> out;
  const int64_t n = static_cast<int64_t>(doc.input_ids.size());
  for (int64_t begin = 0; begin < n; begin += cutoff_len) {
    const int64_t end = std::min(n, begin + cutoff_len);
    if (end - begin < 2) break;
    EncodedExample c;
    c.input_ids.assign(doc.input_ids.begin() + begin, doc.input_ids.begin() + end);
    c.labels.assign(doc.labels.begin() + begin, doc.labels.begin() + end);
    c.first_trained = first_label(c);
    if (c.first_trained >= 0) out.push_back(std::move(c));
  }
  return out;
}

// auto: the model's own template, except under MING's masking, which needs the built-in
// renderer of the model's family.
text::ChatTemplate resolve_template(const std::string& name, MaskPolicy mask,
                                    const text::Tokenizer& tokenizer,
                                    const std::optional<fs::path>& model_dir) {
  if (name != "auto") {
    try {
      return text::parse_chat_template(name);
    } catch (const UsageError& e) {
      fail_usage("data.template: {}", e.what());
    }
  }
  if (model_dir && mask == MaskPolicy::assistant) return text::ChatTemplate::load(*model_dir);
  if (model_dir) return text::detect_chat_template(*model_dir);
  if (tokenizer.find("<|im_start|>")) return text::ChatTemplateKind::chatml;
  if (tokenizer.find("<|start_header_id|>")) return text::ChatTemplateKind::llama3;
  return text::ChatTemplateKind::raw;
}

template <typename F>
auto with_key(const char* key, F&& parse) {
  try {
    return parse();
  } catch (const UsageError& e) {
    fail_usage("data.{}: {}", key, e.what());
  }
}

// Rows of (dataset, index) -> a right-padded batch; several examples in a row are packed.
Batch collate(const TrainingData& data,
              const std::vector<std::vector<std::pair<int32_t, int64_t>>>& rows) {
  Batch batch;
  const int64_t B = static_cast<int64_t>(rows.size());
  int64_t T = 1;
  for (const auto& row : rows) {
    int64_t n = 0;
    for (const auto& [dataset, index] : row)
      n += static_cast<int64_t>(data.examples(dataset)[index].input_ids.size());
    T = std::max(T, n);
  }
  std::vector<int64_t> ids(B * T, data.pad_id()), labels(B * T, kIgnoreIndex), attention(B * T, 0),
      positions(B * T, 0), segments(B * T, 0);
  for (int64_t r = 0; r < B; ++r) {
    int64_t t = 0;
    for (size_t k = 0; k < rows[r].size(); ++k) {
      const auto [dataset, index] = rows[r][k];
      const EncodedExample& ex = data.examples(dataset)[index];
      for (size_t i = 0; i < ex.input_ids.size(); ++i, ++t) {
        ids[r * T + t] = ex.input_ids[i];
        // The first token of a later packed example would be "predicted" from the previous
        // example's last token by the shifted loss; it must not be.
        labels[r * T + t] = (k > 0 && i == 0) ? kIgnoreIndex : ex.labels[i];
        attention[r * T + t] = 1;
        positions[r * T + t] = static_cast<int64_t>(i);
        segments[r * T + t] = static_cast<int64_t>(k) + 1;
        if (t > 0 && labels[r * T + t] != kIgnoreIndex) ++batch.n_target_tokens;
      }
      batch.examples.push_back({dataset, index, r});
    }
  }
  auto to_tensor = [&](std::vector<int64_t>& v) {
    return torch::from_blob(v.data(), {B, T}, torch::kLong).clone();
  };
  batch.input_ids = to_tensor(ids);
  batch.labels = to_tensor(labels);
  batch.attention_mask = to_tensor(attention);
  batch.position_ids = to_tensor(positions);
  batch.segment_ids = to_tensor(segments);
  return batch;
}

}  // namespace

// ---- TrainingData ----------------------------------------------------------

std::string resolved_mix_strategy(const DataOptions& options) {
  if (!options.mix_strategy.empty()) return options.mix_strategy;
  bool all_named = !options.datasets.empty();
  for (const auto& spec : options.datasets) all_named = all_named && !spec.name.empty();
  return all_named ? "concat" : "weights";
}

std::shared_ptr<const TrainingData> TrainingData::load(const DataOptions& requested,
                                                       const text::Tokenizer& tokenizer,
                                                       const std::optional<fs::path>& model_dir) {
  if (requested.datasets.empty()) fail_usage("data.datasets: no dataset given");
  DataOptions options = requested;
  options.datasets = resolve_dataset_names(requested.datasets, requested.dataset_dir);
  const MaskPolicy mask = with_key("mask", [&] { return parse_mask_policy(options.mask); });
  const BadExamplePolicy policy = with_key(
      "bad_example_policy", [&] { return parse_bad_example_policy(options.bad_example_policy); });
  std::vector<DataFormat> formats;
  for (size_t i = 0; i < options.datasets.size(); ++i)
    formats.push_back(with_key(fmt::format("datasets.{}.format", i).c_str(),
                               [&] { return parse_data_format(options.datasets[i].format); }));
  if (options.cutoff_len < 2)
    fail_usage("data.cutoff_len: must be at least 2, got {}", options.cutoff_len);

  std::shared_ptr<TrainingData> data(new TrainingData());
  data->options_ = options;
  data->chat_template_ = resolve_template(options.chat_template, mask, tokenizer, model_dir);
  if (options.pad_id >= 0) {
    if (options.pad_id >= tokenizer.vocab_size())
      fail_usage("data.pad_id: {} is outside the vocabulary (size {})", options.pad_id,
                 tokenizer.vocab_size());
    data->pad_id_ = static_cast<int32_t>(options.pad_id);
  } else {
    auto eos = tokenizer.eos_ids();
    bool has_eot =
        !eos.empty() || tokenizer.find("<|endoftext|>") || tokenizer.find("<|end_of_text|>");
    data->pad_id_ = has_eot ? end_of_text_id(tokenizer) : 0;
  }

  EncodeOptions enc;
  enc.chat_template = data->chat_template_;
  enc.mask = mask;
  enc.system_prompt = options.system_prompt;
  const bool doc_bos = tokenizer.bos_id().has_value();

  for (size_t d = 0; d < options.datasets.size(); ++d) {
    const DatasetSpec& spec = options.datasets[d];
    const bool renamed = !spec.name.empty() || !spec.columns.empty() || !spec.tags.empty();
    const RecordLayout layout{spec.columns, spec.tags};
    ReadResult read = read_examples(spec.path, formats[d], policy, renamed ? &layout : nullptr);
    if (options.max_samples > 0 && static_cast<int64_t>(read.examples.size()) > options.max_samples)
      read.examples.resize(options.max_samples);
    DatasetStats st;
    st.path = spec.path;
    st.name = spec.display_name();
    st.format = read.format;
    st.weight = spec.weight;
    st.n_records = static_cast<int64_t>(read.examples.size());
    st.n_bad = read.n_bad;
    std::vector<EncodedExample> kept;
    // Encoding is the slow part (BPE); records are independent and the tokenizer is safe to
    // share, so they are encoded on the intra-op threads and then merged in file order.
    const int64_t n = static_cast<int64_t>(read.examples.size());
    std::vector<std::vector<EncodedExample>> pieces(n);
    std::vector<int8_t> truncated(n, 0), dropped(n, 0);
    std::vector<std::string> errors(n);
    std::atomic<int64_t> next{0};
    auto work = [&] {
      for (int64_t i; (i = next.fetch_add(1)) < n;) {
        const Example& ex = read.examples[i];
        try {
          if (ex.is_text) {
            pieces[i] =
                chunk_document(encode_document(tokenizer, ex.text, doc_bos), options.cutoff_len);
          } else {
            EncodedExample e = encode_conversation(tokenizer, ex.messages, enc);
            int64_t cut_count = 0;
            if (cut(e, options.cutoff_len, cut_count))
              pieces[i].push_back(std::move(e));
            else
              dropped[i] = 1;
            truncated[i] = cut_count > 0;
          }
        } catch (const std::exception& e) {
          errors[i] = e.what();
          if (errors[i].empty()) errors[i] = "encoding failed";
        }
      }
    };
    const int64_t n_threads =
        std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / 16));
    std::vector<std::thread> workers;
    for (int64_t t = 1; t < n_threads; ++t) workers.emplace_back(work);
    work();
    for (auto& w : workers) w.join();

    int64_t n_unencodable = 0;
    std::string first_unencodable;
    for (int64_t i = 0; i < n; ++i) {
      if (!errors[i].empty()) {
        if (policy == BadExamplePolicy::stop)
          fail_usage("{}: cannot encode: {}", read.examples[i].origin, errors[i]);
        if (n_unencodable++ == 0)
          first_unencodable = fmt::format("{}: {}", read.examples[i].origin, errors[i]);
        continue;
      }
      st.n_truncated += truncated[i];
      st.n_dropped += dropped[i];
      for (auto& p : pieces[i]) {
        st.n_tokens += static_cast<int64_t>(p.input_ids.size());
        for (int32_t l : p.labels) st.n_label_tokens += l != kIgnoreIndex;
        kept.push_back(std::move(p));
      }
    }
    if (n_unencodable > 0) {
      st.n_bad += n_unencodable;
      log::warn("'{}': skipped {} records that cannot be encoded, first: {}", spec.path,
                n_unencodable, first_unencodable);
    }
    st.n_examples = static_cast<int64_t>(kept.size());
    if (st.n_dropped > 0)
      log::warn("'{}': dropped {} conversations with no answer token within cutoff_len {}",
                spec.path, st.n_dropped, options.cutoff_len);
    log::info(
        "data: '{}' ({}, weight {}): {} records, {} bad, {} examples, {} truncated, {} dropped, "
        "{} tokens, {} label tokens",
        spec.path, data_format_name(st.format), spec.weight, st.n_records, st.n_bad, st.n_examples,
        st.n_truncated, st.n_dropped, st.n_tokens, st.n_label_tokens);
    data->examples_.push_back(std::move(kept));
    data->stats_.push_back(std::move(st));
  }
  data->finish();
  log::info("data: template {}, mask {}, cutoff_len {}, packing {}, epoch of {} examples",
            data->chat_template_.name(), mask_policy_name(mask), options.cutoff_len,
            options.packing ? "on" : "off", data->epoch_size_);
  return data;
}

std::shared_ptr<const TrainingData> TrainingData::from_examples(
    std::vector<std::vector<EncodedExample>> datasets, const DataOptions& options, int32_t pad_id) {
  if (datasets.empty()) fail_usage("TrainingData::from_examples: no dataset given");
  if (!options.datasets.empty() && options.datasets.size() != datasets.size())
    fail_usage("TrainingData::from_examples: {} example lists but {} dataset specs",
               datasets.size(), options.datasets.size());
  if (options.cutoff_len < 2)
    fail_usage("data.cutoff_len: must be at least 2, got {}", options.cutoff_len);
  std::shared_ptr<TrainingData> data(new TrainingData());
  data->options_ = options;
  data->pad_id_ = pad_id;
  for (size_t d = 0; d < datasets.size(); ++d) {
    DatasetStats st;
    st.path = options.datasets.empty() ? fmt::format("<examples {}>", d) : options.datasets[d].path;
    st.name = options.datasets.empty() ? st.path : options.datasets[d].display_name();
    st.weight = options.datasets.empty() ? 1.0 : options.datasets[d].weight;
    st.n_records = static_cast<int64_t>(datasets[d].size());
    std::vector<EncodedExample> kept;
    for (auto& ex : datasets[d]) {
      if (ex.labels.size() != ex.input_ids.size())
        fail_usage("TrainingData::from_examples: dataset {}: labels and input_ids differ in length",
                   d);
      if (ex.first_trained < 0) ex.first_trained = first_label(ex);
      if (!cut(ex, options.cutoff_len, st.n_truncated)) {
        ++st.n_dropped;
        continue;
      }
      st.n_tokens += static_cast<int64_t>(ex.input_ids.size());
      for (int32_t l : ex.labels) st.n_label_tokens += l != kIgnoreIndex;
      kept.push_back(std::move(ex));
    }
    st.n_examples = static_cast<int64_t>(kept.size());
    data->examples_.push_back(std::move(kept));
    data->stats_.push_back(std::move(st));
  }
  data->finish();
  return data;
}

void TrainingData::finish() {
  const size_t n = examples_.size();
  std::vector<double> weights(n, 1.0);
  for (size_t d = 0; d < n; ++d) {
    if (!options_.datasets.empty()) weights[d] = options_.datasets[d].weight;
    if (!(weights[d] > 0) || !std::isfinite(weights[d]))
      fail_usage("data.datasets.{}.weight: must be a positive number, got {}", d, weights[d]);
    if (examples_[d].empty())
      fail_usage("data: dataset '{}' has no trainable example left (see the warnings above)",
                 stats_[d].path);
  }
  if (options_.epoch_size < 0)
    fail_usage("data.epoch_size: must be >= 0, got {}", options_.epoch_size);
  int64_t total = 0;
  for (const auto& e : examples_) total += static_cast<int64_t>(e.size());
  epoch_size_ = total;
  const std::string strategy = resolved_mix_strategy(options_);
  const double w_total = std::accumulate(weights.begin(), weights.end(), 0.0);
  if (strategy == "concat") {
    for (size_t d = 0; d < n; ++d) weights[d] = static_cast<double>(examples_[d].size());
  } else if (strategy == "interleave_under" || strategy == "interleave_over") {
    // The epoch in which dataset d, drawn with probability w_d / w_total, is exhausted.
    double epoch = strategy == "interleave_under" ? HUGE_VAL : 0.0;
    for (size_t d = 0; d < n; ++d) {
      const double exhausted = static_cast<double>(examples_[d].size()) * w_total / weights[d];
      epoch =
          strategy == "interleave_under" ? std::min(epoch, exhausted) : std::max(epoch, exhausted);
    }
    epoch_size_ = std::max<int64_t>(1, strategy == "interleave_under"
                                           ? static_cast<int64_t>(std::floor(epoch + 1e-9))
                                           : static_cast<int64_t>(std::ceil(epoch - 1e-9)));
  } else if (strategy != "weights") {
    fail_usage(
        "data.mix_strategy: '{}' is not one of weights, concat, interleave_under, interleave_over",
        strategy);
  }
  if (options_.epoch_size > 0) epoch_size_ = options_.epoch_size;

  // Largest remainder: counts sum to epoch_size exactly and follow the weights as closely as
  // integers allow; ties go to the earlier dataset.
  const double w_sum = std::accumulate(weights.begin(), weights.end(), 0.0);
  per_epoch_counts_.assign(n, 0);
  std::vector<std::pair<double, size_t>> remainders;
  int64_t assigned = 0;
  for (size_t d = 0; d < n; ++d) {
    const double exact = static_cast<double>(epoch_size_) * weights[d] / w_sum;
    per_epoch_counts_[d] = static_cast<int64_t>(std::floor(exact));
    assigned += per_epoch_counts_[d];
    remainders.push_back({exact - std::floor(exact), d});
  }
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; assigned < epoch_size_; ++i, ++assigned)
    ++per_epoch_counts_[remainders[i % n].second];

  Hasher h;
  h.add(static_cast<uint64_t>(options_.seed));
  h.add(static_cast<uint64_t>(options_.cutoff_len));
  h.add(options_.packing ? 1 : 0);
  h.add(static_cast<uint64_t>(epoch_size_));
  for (size_t d = 0; d < n; ++d) {
    h.add(static_cast<uint64_t>(per_epoch_counts_[d]));
    h.add(examples_[d].size());
    for (const auto& ex : examples_[d]) {
      h.add(ex.input_ids.size());
      for (size_t i = 0; i < ex.input_ids.size(); ++i)
        h.add((static_cast<uint64_t>(static_cast<uint32_t>(ex.input_ids[i])) << 32) |
              static_cast<uint32_t>(ex.labels[i]));
    }
  }
  fingerprint_ = h.h;
}

// ---- batches ---------------------------------------------------------------

torch::Tensor packed_attention_mask(const torch::Tensor& segment_ids) {
  TORCH_CHECK(segment_ids.dim() == 2, "packed_attention_mask: segment_ids must be (B, T), got ",
              segment_ids.sizes());
  const int64_t T = segment_ids.size(1);
  auto query = segment_ids.unsqueeze(2);             // (B, T, 1)
  auto key = segment_ids.unsqueeze(1);               // (B, 1, T)
  auto same = query.eq(key).logical_and(key.ne(0));  // (B, T, T)
  auto causal = torch::ones({T, T}, torch::dtype(torch::kBool).device(segment_ids.device())).tril();
  return same.logical_and(causal).unsqueeze(1);  // (B, 1, T, T)
}

DataLoader::DataLoader(std::shared_ptr<const TrainingData> data, int64_t batch_size, int64_t rank,
                       int64_t world_size)
    : data_(std::move(data)), batch_size_(batch_size), rank_(rank), world_size_(world_size) {
  if (!data_) fail("DataLoader: no data");
  if (batch_size_ < 1) fail_usage("batch size must be at least 1, got {}", batch_size_);
  if (world_size_ < 1 || rank_ < 0 || rank_ >= world_size_)
    fail_usage("data parallel rank {} is outside world size {}", rank_, world_size_);
}

const std::vector<DataLoader::Item>& DataLoader::plan(int64_t epoch) const {
  for (const auto& [e, items] : plan_cache_)
    if (e == epoch) return items;
  const uint64_t seed = static_cast<uint64_t>(data_->options().seed);
  std::vector<Item> items;
  items.reserve(data_->epoch_size());
  for (int64_t d = 0; d < data_->n_datasets(); ++d) {
    const int64_t size = static_cast<int64_t>(data_->examples(d).size());
    const int64_t count = data_->per_epoch_counts()[d];
    // Dataset d is an endless stream of passes, each a fresh permutation; this epoch reads
    // stream positions [epoch * count, (epoch + 1) * count).
    int64_t pass = -1;
    std::vector<int64_t> perm;
    for (int64_t k = 0; k < count; ++k) {
      const int64_t s = epoch * count + k;
      if (s / size != pass) {
        pass = s / size;
        perm.resize(size);
        std::iota(perm.begin(), perm.end(), 0);
        detail::shuffle(perm, detail::mix_seed({seed, 2, static_cast<uint64_t>(d),
                                                static_cast<uint64_t>(pass)}));
      }
      items.push_back({static_cast<int32_t>(d), perm[s % size]});
    }
  }
  detail::shuffle(items, detail::mix_seed({seed, 1, static_cast<uint64_t>(epoch)}));
  if (plan_cache_.size() >= 2) plan_cache_.erase(plan_cache_.begin());
  plan_cache_.emplace_back(epoch, std::move(items));
  return plan_cache_.back().second;
}

int64_t DataLoader::example_length(const Item& item) const {
  return static_cast<int64_t>(data_->examples(item.dataset)[item.index].input_ids.size());
}

std::vector<DataLoader::Item> DataLoader::take_unit() {
  auto advance = [&] {
    if (++index_ == data_->epoch_size()) {
      ++epoch_;
      index_ = 0;
    }
  };
  std::vector<Item> row;
  if (!data_->options().packing) {
    row.push_back(plan(epoch_)[index_]);
    advance();
    return row;
  }
  // Greedy, in order: the row closes when the next example does not fit. Keeping the order
  // (no bin-packing search) keeps the stream a pure function of the position.
  int64_t length = 0;
  const int64_t cutoff = data_->options().cutoff_len;
  while (true) {
    const Item item = plan(epoch_)[index_];
    const int64_t n = example_length(item);
    if (!row.empty() && length + n > cutoff) break;
    row.push_back(item);
    length += n;
    advance();
    if (length >= cutoff) break;
  }
  return row;
}

Batch DataLoader::next() {
  const int64_t epoch = epoch_;
  const double progress = static_cast<double>(epoch_) +
                          static_cast<double>(index_) / static_cast<double>(data_->epoch_size());
  // Every rank builds the whole global batch's rows (cheap: only lengths are looked at for the
  // others) so that the position after it is the same everywhere.
  std::vector<std::vector<std::pair<int32_t, int64_t>>> rows;
  for (int64_t u = 0; u < batch_size_ * world_size_; ++u) {
    std::vector<Item> unit = take_unit();
    if (u / batch_size_ != rank_) continue;
    rows.emplace_back();
    for (const auto& item : unit) rows.back().emplace_back(item.dataset, item.index);
  }
  ++n_batches_;
  Batch batch = collate(*data_, rows);
  batch.epoch = epoch;
  batch.epoch_progress = progress;
  return batch;
}

Batch collate_examples(const TrainingData& data, const std::vector<ExampleRef>& examples) {
  std::vector<std::vector<std::pair<int32_t, int64_t>>> rows;
  for (const auto& ex : examples) rows.push_back({{ex.dataset, ex.index}});
  return collate(data, rows);
}

Json DataLoader::state() const {
  return Json{{"epoch", epoch_},
              {"index", index_},
              {"batches", n_batches_},
              {"fingerprint", fmt::format("{:016x}", data_->fingerprint())}};
}

void DataLoader::restore(const Json& state) {
  auto integer = [&](const char* key) {
    if (!state.is_object() || !state.contains(key) || !state[key].is_number_integer())
      fail_usage("data loader state: missing or non-integer '{}' in {}", key, state.dump());
    return state[key].get<int64_t>();
  };
  const int64_t epoch = integer("epoch"), index = integer("index"), batches = integer("batches");
  if (!state.contains("fingerprint") || !state["fingerprint"].is_string())
    fail_usage("data loader state: missing 'fingerprint' in {}", state.dump());
  const std::string expected = fmt::format("{:016x}", data_->fingerprint());
  if (state["fingerprint"].get<std::string>() != expected)
    fail_usage(
        "data loader state was saved for different data or data options (fingerprint {}, now {}); "
        "resume with the same datasets, tokenizer, template, mask, cutoff_len, packing, seed and "
        "epoch_size",
        state["fingerprint"].get<std::string>(), expected);
  if (epoch < 0 || index < 0 || index >= data_->epoch_size() || batches < 0)
    fail_usage(
        "data loader state: position (epoch {}, index {}) is outside an epoch of {} examples",
        epoch, index, data_->epoch_size());
  epoch_ = epoch;
  index_ = index;
  n_batches_ = batches;
}

int64_t DataLoader::rows_per_epoch() const {
  if (!data_->options().packing) return data_->epoch_size();
  const int64_t cutoff = data_->options().cutoff_len;
  int64_t rows = 0, length = 0;
  for (const Item& item : plan(0)) {
    const int64_t n = example_length(item);
    if (length == 0 || length + n > cutoff) {
      ++rows;
      length = 0;
    }
    length += n;
  }
  return rows;
}

int64_t DataLoader::steps_per_epoch() const {
  const int64_t global = batch_size_ * world_size_;
  return (rows_per_epoch() + global - 1) / global;
}

}  // namespace ming::data
