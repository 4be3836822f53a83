// Route traces: the routing decisions of every MoLoRA layer for every real token of a set of
// examples, written by ming-eval --trace-routes and ming-route-stats --model, read by
// ming-route-stats (route/stats.h).
//
// File format ("ming-route-trace", version 1). All integers little-endian, no padding/alignment.
//
//   magic        8 bytes  "MINGRTRC"
//   version      u32      1
//   header_len   u32      bytes of the JSON header that follows
//   header       JSON (UTF-8), an object:
//     {"format": "ming-route-trace", "version": 1,
//      "gate_dtype": "f16" | "f32",
//      "layers": [{"name": "model.layers.3.mlp.gate_proj",   // HF module path of the projection
//                  "experts": 8,                            // E: expert ids are in [0, E)
//                  "top_k": 2,                              // k: slots per token
//                  "expert_dtype": "u8" | "u16"},           // u8 when E <= 256
//                 ...],                                     // record order of the layers below
//      "meta": {...}}                                       // free-form: model, adapter, data,
//      tool
//   records      zero or more example records, then one end record
//
//   example record:
//     tag        u32      0x4D584552 ("REXM" as bytes 'R','E','X','M' read little-endian)
//     body_len   u64      bytes of the body that follows (lets readers check and skip)
//     body:
//       id_len   u32, id bytes (UTF-8)       the example id (e.g. the eval record's id)
//       task_len u32, task bytes (UTF-8)     the task name ("" when unknown)
//       tokens   u32      T: the example's real (non-padding) tokens, in sequence order
//       per layer, in header order:
//         experts  T*k ids (u8 or u16 per the layer's expert_dtype), token-major: token t's
//                  slots at [t*k, t*k+k), highest gate first
//         gates    T*k weights (f16 = IEEE binary16, or f32), same order; a token's k weights
//                  are the softmax over its k chosen router logits and sum to 1
//   end record:
//     tag        u32      0x444E4552 ("REND")
//     examples   u64      number of example records (checked by readers)
//     tokens     u64      sum of their token counts (checked by readers)
//
// A file without a valid end record is truncated or corrupt; readers refuse it (UsageError
// naming the file) as soon as they reach the point of damage. Writers never leave one behind: a
// trace is written to "<path>.tmp-<pid>" and renamed by close().
//
// Size: per token and layer k * (1 + 2) bytes with u8 ids and f16 gates, e.g. 24 layers x 3 MLP
// projections x top-2 = 432 bytes per token.
//
// Usage (what ming-eval --trace-routes and collect_routes() do):
//   auto writer = std::make_shared<RouteTraceWriter>("routes.trace");
//   writer->declare_layers(loaded_adapter.injected);   // names, E and k of every MoLoRA layer
//   context->set_recorder(writer);                     // the MoeContext of those adapters
//   for each batch of examples (ids (B, T), mask (B, T), prompt + output tokens):
//     writer->begin_batch(tags, mask);
//     context->set_token_mask(mask);
//     model->forward(ids, {.attention_mask = mask});   // every MoLoRA layer calls record()
//     context->clear_token_mask();
//     writer->end_batch();                             // splits rows by example, writes
//   context->set_recorder(nullptr);
//   writer->close();
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "ming/adapt/config.h"
#include "ming/adapt/routing.h"

namespace ming::model {
class CausalLMImpl;
}

namespace ming::route {

inline constexpr char kTraceMagic[8] = {'M', 'I', 'N', 'G', 'R', 'T', 'R', 'C'};
inline constexpr uint32_t kTraceVersion = 1;
inline constexpr uint32_t kExampleTag = 0x4D584552;  // "REXM"
inline constexpr uint32_t kEndTag = 0x444E4552;      // "REND"

enum class GateDtype { f16, f32 };

// One MoLoRA layer of a trace.
struct TraceLayer {
  std::string name;  // HF module path, "model.layers.3.mlp.gate_proj"
  int64_t experts = 0;
  int64_t top_k = 0;
};

// "model.layers.3.mlp.gate_proj" -> 3 (the number after "layers."), -1 when there is none.
int64_t layer_index(const std::string& name);
// "model.layers.3.mlp.gate_proj" -> "gate_proj" (the last path component).
std::string projection_name(const std::string& name);

// Who an example is, for begin_batch and the reader.
struct ExampleTag {
  std::string id;
  std::string task;
};

struct RouteTraceOptions {
  GateDtype gate_dtype = GateDtype::f16;
  nlohmann::json meta = nlohmann::json::object();  // stored as the header's "meta"
};

// Streams a trace file. Not thread-safe; one forward at a time.
class RouteTraceWriter : public adapt::RouteRecorder {
 public:
  explicit RouteTraceWriter(std::filesystem::path path, RouteTraceOptions options = {});
  ~RouteTraceWriter() override;  // without close(): the temporary file is removed
  RouteTraceWriter(const RouteTraceWriter&) = delete;
  RouteTraceWriter& operator=(const RouteTraceWriter&) = delete;

  // The layers to expect, with their E and k (record() only sees k). Either declare every
  // MoLoRA layer of `injected` or name them one by one; must happen before the first
  // end_batch(). Header layer order = declaration order.
  void declare_layers(const adapt::InjectedAdapters& injected);
  void declare_layer(const std::string& name, int64_t experts, int64_t top_k);
  // Merged into the header's "meta" (before the first end_batch()).
  void set_meta(const std::string& key, nlohmann::json value);

  // tags: one per batch row; token_mask: (B, T), nonzero = real token. B must equal tags.size().
  void begin_batch(std::vector<ExampleTag> tags, const torch::Tensor& token_mask);
  // Called by every MoLoRA layer: experts/gates (N, k) with N = B*T of the current batch. Each
  // declared layer must be recorded exactly once per batch. ming::Error when called outside
  // begin_batch/end_batch, for an undeclared layer, twice for one layer, or with a wrong N or k.
  void record(const std::string& layer, const torch::Tensor& experts, const torch::Tensor& gates,
              const torch::Tensor& token_mask) override;
  // Writes one record per batch row with that row's real tokens. ming::Error when a declared
  // layer was not recorded during the batch.
  void end_batch();

  // Writes the end record, fsyncs and renames the temporary to the target path.
  void close();

  int64_t examples_written() const { return examples_; }
  int64_t tokens_written() const { return tokens_; }
  const std::vector<TraceLayer>& layers() const { return layers_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  void write_header();
  void write_bytes(const void* data, size_t size);

  std::filesystem::path path_, temp_;
  RouteTraceOptions options_;
  std::FILE* file_ = nullptr;
  bool header_written_ = false, closed_ = false, in_batch_ = false;
  std::vector<TraceLayer> layers_;
  std::map<std::string, size_t> layer_index_;
  std::vector<ExampleTag> tags_;
  torch::Tensor mask_;                                      // (B, T) bool on CPU
  std::vector<torch::Tensor> batch_experts_, batch_gates_;  // per layer: (B*T, k) CPU, or undef
  int64_t examples_ = 0, tokens_ = 0;
};

// One example of a trace.
struct TraceExample {
  std::string id;
  std::string task;
  int64_t tokens = 0;
  // Per header layer: experts[l][t * k + j] and gates[l][t * k + j], j = slot (0 = highest gate).
  std::vector<std::vector<uint16_t>> experts;
  std::vector<std::vector<float>> gates;
};

// Reads a trace one example at a time. Every defect (missing file, wrong magic, unknown
// version, bad header, truncation, ids out of range, count mismatch at the end) throws
// UsageError naming the file (and the example number / byte offset where it applies).
class RouteTraceReader {
 public:
  explicit RouteTraceReader(std::filesystem::path path);
  ~RouteTraceReader();
  RouteTraceReader(const RouteTraceReader&) = delete;
  RouteTraceReader& operator=(const RouteTraceReader&) = delete;

  const std::vector<TraceLayer>& layers() const { return layers_; }
  const nlohmann::json& meta() const { return meta_; }
  GateDtype gate_dtype() const { return gate_dtype_; }
  const std::filesystem::path& path() const { return path_; }

  // Fills `example` with the next example; false after the last one (the end record has then
  // been verified).
  bool next(TraceExample& example);

 private:
  [[noreturn]] void corrupt(const std::string& what) const;
  void read_exact(void* data, size_t size, const char* what);

  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
  std::vector<TraceLayer> layers_;
  nlohmann::json meta_;
  GateDtype gate_dtype_ = GateDtype::f16;
  int64_t examples_ = 0, tokens_ = 0;
  uint64_t offset_ = 0;
  bool done_ = false;
};

// A tokenized example for collect_routes: the full sequence (prompt + output) that a
// teacher-forced forward sees.
struct TokenizedExample {
  std::vector<int64_t> tokens;
  std::string id;
  std::string task;
};

struct CollectOptions {
  int64_t batch_size = 8;
  int64_t max_tokens = 0;  // > 0: keep the first max_tokens tokens of longer examples
  bool progress = true;    // periodic log lines on stderr
};

// Runs one forward (no grad, eval mode) per batch of `examples` (right-padded with token 0 and
// masked) with `writer` set as the recorder of `context`, declaring the MoLoRA layers of
// `injected` first when the writer has none. The context's recorder and token mask are restored
// /cleared afterwards, also on error. Does not close the writer. UsageError when `injected` has
// no MoLoRA layer (nothing to trace) or an example is empty.
void collect_routes(model::CausalLMImpl& model, const adapt::InjectedAdapters& injected,
                    const std::vector<TokenizedExample>& examples, RouteTraceWriter& writer,
                    const CollectOptions& options = {});

}  // namespace ming::route
