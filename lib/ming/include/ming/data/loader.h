// The training data pipeline: datasets -> encoded examples -> a seeded, resumable, shardable
// stream of padded batches.
//
//   auto data = TrainingData::load(options, *tokenizer, model_dir);   // read, encode, cut
//   DataLoader loader(data, /*batch_size=*/b, /*rank=*/r, /*world_size=*/w);
//   loader.restore(state_json);                  // optional: resume exactly where a run stopped
//   Batch batch = loader.next();                 // this rank's part of the next global batch
//   Json state = loader.state();                 // save with the checkpoint
//
// Order. Epoch e of the mixture is a list of epoch_size (dataset, example) items, drawn per
// dataset from an endless stream of seeded passes (see DataOptions::epoch_size) and shuffled with
// (seed, e). The stream of epochs is cut into units (one example per row, or with packing the
// examples greedily concatenated, in order, into rows of at most cutoff_len tokens), and the
// units into global batches of batch_size * world_size. Batches run on across epoch boundaries
// (there is no partial last batch); Batch::epoch tells where a batch started.
//
// Sharding. Every rank walks the same global sequence and keeps units [rank*b, (rank+1)*b) of
// each global batch, so w ranks with batch b together see exactly the global batch that one rank
// with batch w*b sees, in the same order.
//
// Resume. The position is (epoch, index of the next item in that epoch's list); restoring it
// reproduces every later batch exactly. The state carries a fingerprint of the data and of the
// options that shape the order, and restore() refuses a state from different data.
//
// Notation: B rows in this rank's batch, T the longest row in it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "ming/data/encode.h"
#include "ming/data/options.h"
#include "ming/data/reader.h"
#include "ming/io/json.h"

namespace ming::data {

// What reading and encoding did to one dataset (logged by TrainingData::load).
struct DatasetStats {
  std::string path;
  std::string name;  // DatasetSpec::display_name()
  DataFormat format = DataFormat::auto_detect;
  double weight = 1.0;
  int64_t n_records = 0;    // usable records read
  int64_t n_bad = 0;        // records skipped as unreadable
  int64_t n_examples = 0;   // encoded examples kept (text documents may give several chunks)
  int64_t n_truncated = 0;  // conversations cut to cutoff_len and kept
  int64_t n_dropped = 0;    // conversations with no assistant label left within cutoff_len
  int64_t n_tokens = 0;     // tokens in the kept examples
  int64_t n_label_tokens = 0;
};

// Encoded, cut examples of every dataset of a mixture, plus the options that shape the order.
// Immutable once built; loaders share it.
class TrainingData {
 public:
  // Reads, templates, encodes and cuts every dataset of `options` (datasets given by name are
  // looked up in options.dataset_dir first, see registry.h). The template "auto" is
  // resolved from `model_dir` when given (text::detect_chat_template), else from the tokenizer's
  // special tokens (<|im_start|> -> chatml, <|start_header_id|> -> llama3, else raw). Invalid
  // option values throw UsageError naming the key; a mixture with no trainable example left
  // throws UsageError.
  static std::shared_ptr<const TrainingData> load(
      const DataOptions& options, const text::Tokenizer& tokenizer,
      const std::optional<std::filesystem::path>& model_dir = std::nullopt);

  // Already-encoded examples, one list per dataset (tests, and callers with their own readers).
  // Examples are cut to options.cutoff_len as load() would; `options.datasets` supplies the
  // weights (all 1 when empty) and must otherwise have one entry per list.
  static std::shared_ptr<const TrainingData> from_examples(
      std::vector<std::vector<EncodedExample>> datasets, const DataOptions& options,
      int32_t pad_id);

  // Holds out examples for evaluation (LLaMA-Factory's val_size): val_size in (0, 1) is the
  // fraction of each dataset's examples, val_size >= 1 a count in all, shared out in proportion
  // to the datasets' sizes (largest remainder). Each dataset's held-out examples are a seeded
  // permutation's first ones, so the same data and seed always give the same split. UsageError
  // when val_size is out of range or a dataset would keep no training example.
  struct Split {
    std::shared_ptr<const TrainingData> train, eval;
  };
  static Split split_held_out(const TrainingData& data, double val_size, uint64_t seed);

  const DataOptions& options() const { return options_; }
  const std::vector<DatasetStats>& stats() const { return stats_; }
  int64_t n_datasets() const { return static_cast<int64_t>(examples_.size()); }
  const std::vector<EncodedExample>& examples(int64_t dataset) const {
    return examples_.at(dataset);
  }
  int32_t pad_id() const { return pad_id_; }
  const text::ChatTemplate& chat_template() const { return chat_template_; }
  // Items per epoch of the mixture, and how many each dataset contributes.
  int64_t epoch_size() const { return epoch_size_; }
  const std::vector<int64_t>& per_epoch_counts() const { return per_epoch_counts_; }
  // Hash of the encoded data and of the options that decide the order (not batch or world size).
  uint64_t fingerprint() const { return fingerprint_; }

 private:
  TrainingData() = default;
  void finish();  // counts per epoch, fingerprint, validation

  DataOptions options_;
  std::vector<std::vector<EncodedExample>> examples_;
  std::vector<DatasetStats> stats_;
  int32_t pad_id_ = 0;
  text::ChatTemplate chat_template_{text::ChatTemplateKind::raw};
  int64_t epoch_size_ = 0;
  std::vector<int64_t> per_epoch_counts_;
  uint64_t fingerprint_ = 0;
};

// DataOptions::mix_strategy with "" resolved: concat when every dataset has a name, else weights.
std::string resolved_mix_strategy(const DataOptions& options);

// Where an example of a batch came from.
struct ExampleRef {
  int32_t dataset = 0;
  int64_t index = 0;  // into TrainingData::examples(dataset)
  int64_t row = 0;    // row of the batch it was placed in
};

// One rank's batch. Right padded: padding has labels -100, attention 0, segment 0.
struct Batch {
  torch::Tensor input_ids;       // (B, T) int64
  torch::Tensor labels;          // (B, T) int64, input id or -100; the loss shifts by one
  torch::Tensor attention_mask;  // (B, T) int64, 1 = real token, 0 = padding
  // (B, T) int64: position within its own example (restarts at 0 for each packed example).
  torch::Tensor position_ids;
  // (B, T) int64: 1, 2, ... for the examples packed in a row, 0 for padding. A token may attend
  // to earlier tokens of the same segment only (packed_attention_mask builds that).
  torch::Tensor segment_ids;
  // Labels that take part in the shifted loss: count of labels[:, 1:] != -100 on this rank.
  // Divide summed token losses by the sum of this over ranks and accumulation steps.
  int64_t n_target_tokens = 0;
  std::vector<ExampleRef> examples;
  int64_t epoch = 0;          // epoch the global batch started in
  double epoch_progress = 0;  // epoch + fraction of it consumed before this batch
};

// One example per row, in the given order (evaluation walks a dataset without the mixture).
Batch collate_examples(const TrainingData& data, const std::vector<ExampleRef>& examples);

// (B, T) segment ids -> (B, 1, T, T) bool, true where query t may attend key s: same non-zero
// segment and s <= t. Broadcasts over heads. Without packing this is the ordinary causal mask
// with padding keys removed.
torch::Tensor packed_attention_mask(const torch::Tensor& segment_ids);

class DataLoader {
 public:
  // `batch_size` rows per rank; the global batch is batch_size * world_size rows.
  DataLoader(std::shared_ptr<const TrainingData> data, int64_t batch_size, int64_t rank = 0,
             int64_t world_size = 1);

  Batch next();

  // Position of the next global batch: {"epoch", "index", "fingerprint", "batches"}.
  io::Json state() const;
  // Resumes at a saved position; UsageError when the state is malformed or the fingerprint
  // says it was saved for other data or options.
  void restore(const io::Json& state);

  // Rows (units) in one epoch (with packing: as packed in epoch 0; later epochs differ by a few
  // rows) and the resulting optimizer steps per epoch, rounded up.
  int64_t rows_per_epoch() const;
  int64_t steps_per_epoch() const;

  int64_t batch_size() const { return batch_size_; }
  int64_t rank() const { return rank_; }
  int64_t world_size() const { return world_size_; }
  int64_t batches_served() const { return n_batches_; }

 private:
  struct Item {
    int32_t dataset;
    int64_t index;
  };
  const std::vector<Item>& plan(int64_t epoch) const;  // epoch's shuffled item list (cached)
  std::vector<Item> take_unit();                       // next row's items; advances the cursor
  int64_t example_length(const Item& item) const;

  std::shared_ptr<const TrainingData> data_;
  int64_t batch_size_, rank_, world_size_;
  int64_t epoch_ = 0, index_ = 0, n_batches_ = 0;
  // The last two epochs' plans: a packed row or a batch may straddle an epoch boundary.
  mutable std::vector<std::pair<int64_t, std::vector<Item>>> plan_cache_;
};

}  // namespace ming::data
