#include "ming/io/json.h"
#include "ming/route/trace.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "ming/core/error.h"
#include "ming/core/log.h"
#include "ming/model/transformer.h"

namespace ming::route {

namespace fs = std::filesystem;
using nlohmann::json;

static_assert(sizeof(float) == 4, "f32 gates are written as 4-byte IEEE floats");

namespace {

// The format is little-endian; every supported target (x86-64, aarch64) is too, so values are
// copied as they lie in memory. Refuse to build silently wrong files elsewhere.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "route traces are little-endian; add byte swapping for this target"
#endif

const char* gate_dtype_name(GateDtype dtype) {
  return dtype == GateDtype::f16 ? "f16" : "f32";
}

size_t expert_bytes(int64_t experts) {
  return experts <= 256 ? 1 : 2;
}

}  // namespace

int64_t layer_index(const std::string& name) {
  const std::string key = "layers.";
  size_t pos = 0;
  while ((pos = name.find(key, pos)) != std::string::npos) {
    // Must start a path component ("model.layers.3", not "sublayers.3").
    if (pos == 0 || name[pos - 1] == '.') {
      size_t start = pos + key.size(), end = start;
      while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) ++end;
      if (end > start && (end == name.size() || name[end] == '.'))
        return std::stoll(name.substr(start, end - start));
    }
    pos += key.size();
  }
  return -1;
}

std::string projection_name(const std::string& name) {
  auto dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

// ---- writer ------------------------------------------------------------------------------------

RouteTraceWriter::RouteTraceWriter(fs::path path, RouteTraceOptions options)
    : path_(std::move(path)), options_(std::move(options)) {
  if (!options_.meta.is_object())
    fail("route trace '{}': meta must be a JSON object", path_.string());
  temp_ = path_;
  temp_ += ".tmp-" + std::to_string(::getpid());
  if (path_.has_parent_path() && !fs::is_directory(path_.parent_path()))
    fail_usage("route trace '{}': folder '{}' does not exist", path_.string(),
               path_.parent_path().string());
  file_ = std::fopen(temp_.c_str(), "wb");
  if (!file_)
    fail("route trace '{}': cannot create '{}': {}", path_.string(), temp_.string(),
         std::strerror(errno));
}

RouteTraceWriter::~RouteTraceWriter() {
  if (file_) std::fclose(file_);
  if (!closed_) {
    std::error_code ec;
    fs::remove(temp_, ec);
  }
}

void RouteTraceWriter::declare_layers(const adapt::InjectedAdapters& injected) {
  for (const auto& [name, adapter] : injected.adapters) {
    if (auto moe = std::dynamic_pointer_cast<adapt::MoloraAdapter>(adapter))
      declare_layer(name, moe->options().experts, moe->options().top_k);
  }
}

void RouteTraceWriter::declare_layer(const std::string& name, int64_t experts, int64_t top_k) {
  if (header_written_)
    fail("route trace '{}': layer '{}' declared after the first batch was written", path_.string(),
         name);
  if (experts < 1 || experts > 65536 || top_k < 1 || top_k > experts)
    fail(
        "route trace '{}': layer '{}' has experts {} and top_k {}; need 1 <= top_k <= experts "
        "<= 65536",
        path_.string(), name, experts, top_k);
  if (layer_index_.count(name))
    fail("route trace '{}': layer '{}' declared twice", path_.string(), name);
  layer_index_[name] = layers_.size();
  layers_.push_back({name, experts, top_k});
}

void RouteTraceWriter::set_meta(const std::string& key, json value) {
  if (header_written_)
    fail("route trace '{}': meta '{}' set after the header was written", path_.string(), key);
  options_.meta[key] = std::move(value);
}

void RouteTraceWriter::write_bytes(const void* data, size_t size) {
  if (size == 0) return;
  if (std::fwrite(data, 1, size, file_) != size)
    fail("route trace '{}': write to '{}' failed: {}", path_.string(), temp_.string(),
         std::strerror(errno));
}

void RouteTraceWriter::write_header() {
  json layers = json::array();
  for (const auto& layer : layers_)
    layers.push_back({{"name", layer.name},
                      {"experts", layer.experts},
                      {"top_k", layer.top_k},
                      {"expert_dtype", expert_bytes(layer.experts) == 1 ? "u8" : "u16"}});
  json header = {{"format", "ming-route-trace"},
                 {"version", kTraceVersion},
                 {"gate_dtype", gate_dtype_name(options_.gate_dtype)},
                 {"layers", std::move(layers)},
                 {"meta", options_.meta}};
  std::string text = header.dump();
  uint32_t version = kTraceVersion, length = static_cast<uint32_t>(text.size());
  write_bytes(kTraceMagic, sizeof(kTraceMagic));
  write_bytes(&version, 4);
  write_bytes(&length, 4);
  write_bytes(text.data(), text.size());
  header_written_ = true;
}

void RouteTraceWriter::begin_batch(std::vector<ExampleTag> tags, const torch::Tensor& token_mask) {
  if (closed_) fail("route trace '{}': begin_batch after close", path_.string());
  if (in_batch_)
    fail("route trace '{}': begin_batch without end_batch of the previous batch", path_.string());
  if (!token_mask.defined() || token_mask.dim() != 2 ||
      token_mask.size(0) != static_cast<int64_t>(tags.size()))
    fail(
        "route trace '{}': token mask must be (B, T) with B = {} example tags, got {}",
        path_.string(), tags.size(),
        token_mask.defined() ? fmt::format("{}", fmt::join(token_mask.sizes(), "x")) : "undefined");
  tags_ = std::move(tags);
  mask_ = token_mask.detach().to(torch::kCPU).ne(0).contiguous();  // (B, T) bool
  batch_experts_.assign(layers_.size(), torch::Tensor());
  batch_gates_.assign(layers_.size(), torch::Tensor());
  in_batch_ = true;
}

void RouteTraceWriter::record(const std::string& layer, const torch::Tensor& experts,
                              const torch::Tensor& gates, const torch::Tensor& /*token_mask*/) {
  if (!in_batch_)
    fail(
        "route trace '{}': layer '{}' routed outside begin_batch/end_batch (set the recorder "
        "only around traced forwards)",
        path_.string(), layer);
  auto it = layer_index_.find(layer);
  if (it == layer_index_.end())
    fail("route trace '{}': layer '{}' was not declared (declare_layers before the first batch)",
         path_.string(), layer);
  const auto& info = layers_[it->second];
  const int64_t n = mask_.numel();
  if (experts.dim() != 2 || experts.size(0) != n || experts.size(1) != info.top_k ||
      gates.sizes() != experts.sizes())
    fail(
        "route trace '{}': layer '{}' recorded experts {} / gates {}, expected ({}, {}) for a "
        "({}x{}) batch",
        path_.string(), layer, fmt::join(experts.sizes(), "x"), fmt::join(gates.sizes(), "x"), n,
        info.top_k, mask_.size(0), mask_.size(1));
  if (batch_experts_[it->second].defined())
    fail("route trace '{}': layer '{}' recorded twice in one batch (one forward per batch)",
         path_.string(), layer);
  // Copies: the recorder contract says the tensors are reused.
  batch_experts_[it->second] = experts.detach().to(torch::kCPU, torch::kInt64).contiguous().clone();
  batch_gates_[it->second] = gates.detach().to(torch::kCPU, torch::kFloat).contiguous().clone();
}

void RouteTraceWriter::end_batch() {
  if (!in_batch_) fail("route trace '{}': end_batch without begin_batch", path_.string());
  in_batch_ = false;
  for (size_t l = 0; l < layers_.size(); ++l)
    if (!batch_experts_[l].defined())
      fail("route trace '{}': layer '{}' was declared but not recorded during the batch",
           path_.string(), layers_[l].name);
  if (!header_written_) write_header();

  const int64_t batch = mask_.size(0), length = mask_.size(1);
  // Per layer: ids narrowed to the file's width, gates to f16/f32, still (B*T, k).
  std::vector<torch::Tensor> ids(layers_.size()), weights(layers_.size());
  for (size_t l = 0; l < layers_.size(); ++l) {
    const auto& e = batch_experts_[l];
    int64_t lo = e.numel() ? e.min().item<int64_t>() : 0,
            hi = e.numel() ? e.max().item<int64_t>() : 0;
    if (lo < 0 || hi >= layers_[l].experts)
      fail("route trace '{}': layer '{}' routed to expert {} outside [0, {})", path_.string(),
           layers_[l].name, lo < 0 ? lo : hi, layers_[l].experts);
    ids[l] = e.to(expert_bytes(layers_[l].experts) == 1 ? torch::kUInt8 : torch::kInt16);
    weights[l] =
        batch_gates_[l].to(options_.gate_dtype == GateDtype::f16 ? torch::kHalf : torch::kFloat);
  }
  auto mask = mask_.accessor<bool, 2>();
  std::vector<int64_t> rows;
  for (int64_t b = 0; b < batch; ++b) {
    rows.clear();
    for (int64_t t = 0; t < length; ++t)
      if (mask[b][t]) rows.push_back(b * length + t);
    const auto& tag = tags_[b];
    uint64_t body = 4 + tag.id.size() + 4 + tag.task.size() + 4;
    for (size_t l = 0; l < layers_.size(); ++l)
      body += rows.size() * layers_[l].top_k *
              (expert_bytes(layers_[l].experts) + (options_.gate_dtype == GateDtype::f16 ? 2 : 4));
    uint32_t tag_value = kExampleTag, id_len = tag.id.size(), task_len = tag.task.size(),
             tokens = rows.size();
    write_bytes(&tag_value, 4);
    write_bytes(&body, 8);
    write_bytes(&id_len, 4);
    write_bytes(tag.id.data(), id_len);
    write_bytes(&task_len, 4);
    write_bytes(tag.task.data(), task_len);
    write_bytes(&tokens, 4);
    for (size_t l = 0; l < layers_.size(); ++l) {
      const int64_t k = layers_[l].top_k;
      for (auto* t : {&ids[l], &weights[l]}) {
        const size_t row_bytes = k * t->element_size();
        const auto* base = static_cast<const char*>(t->data_ptr());
        // Real tokens of one example are usually one contiguous run of rows.
        size_t i = 0;
        while (i < rows.size()) {
          size_t j = i + 1;
          while (j < rows.size() && rows[j] == rows[j - 1] + 1) ++j;
          write_bytes(base + rows[i] * row_bytes, (j - i) * row_bytes);
          i = j;
        }
      }
    }
    ++examples_;
    tokens_ += rows.size();
  }
  batch_experts_.assign(layers_.size(), torch::Tensor());
  batch_gates_.assign(layers_.size(), torch::Tensor());
}

void RouteTraceWriter::close() {
  if (closed_) return;
  if (in_batch_) fail("route trace '{}': close() inside a batch (end_batch first)", path_.string());
  if (!header_written_) write_header();  // a trace of no examples is still a valid file
  uint32_t tag = kEndTag;
  uint64_t examples = examples_, tokens = tokens_;
  write_bytes(&tag, 4);
  write_bytes(&examples, 8);
  write_bytes(&tokens, 8);
  if (std::fflush(file_) != 0 || ::fsync(fileno(file_)) != 0)
    fail("route trace '{}': flushing '{}' failed: {}", path_.string(), temp_.string(),
         std::strerror(errno));
  std::fclose(file_);
  file_ = nullptr;
  std::error_code ec;
  fs::rename(temp_, path_, ec);
  if (ec)
    fail("route trace '{}': rename from '{}' failed: {}", path_.string(), temp_.string(),
         ec.message());
  closed_ = true;
}

// ---- reader ------------------------------------------------------------------------------------

RouteTraceReader::RouteTraceReader(fs::path path) : path_(std::move(path)) {
  std::error_code ec;
  if (!fs::exists(path_, ec)) fail_usage("route trace '{}': no such file", path_.string());
  if (fs::is_directory(path_, ec))
    fail_usage("route trace '{}': is a folder, not a trace file", path_.string());
  file_ = std::fopen(path_.c_str(), "rb");
  if (!file_) fail_usage("route trace '{}': cannot open: {}", path_.string(), std::strerror(errno));

  char magic[8];
  read_exact(magic, 8, "magic");
  if (std::memcmp(magic, kTraceMagic, 8) != 0)
    corrupt("not a route trace (magic is not \"MINGRTRC\")");
  uint32_t version = 0, length = 0;
  read_exact(&version, 4, "version");
  if (version != kTraceVersion)
    corrupt(fmt::format("format version {} is not supported (this build reads {})", version,
                        kTraceVersion));
  read_exact(&length, 4, "header length");
  if (length > (64u << 20)) corrupt(fmt::format("header length {} is implausible", length));
  std::string text(length, '\0');
  read_exact(text.data(), length, "JSON header");
  json header;
  try {
    header = io::parse_json(text, "JSON header");
  } catch (const UsageError& e) {
    corrupt(e.what());
  }
  try {
    if (header.value("format", "") != "ming-route-trace")
      corrupt("header format is not \"ming-route-trace\"");
    std::string gate = header.at("gate_dtype").get<std::string>();
    if (gate == "f16")
      gate_dtype_ = GateDtype::f16;
    else if (gate == "f32")
      gate_dtype_ = GateDtype::f32;
    else
      corrupt(fmt::format("header gate_dtype '{}' is not f16 or f32", gate));
    for (const auto& layer : header.at("layers")) {
      TraceLayer info{layer.at("name").get<std::string>(), layer.at("experts").get<int64_t>(),
                      layer.at("top_k").get<int64_t>()};
      if (info.experts < 1 || info.experts > 65536 || info.top_k < 1 || info.top_k > info.experts)
        corrupt(fmt::format("layer '{}' has experts {} and top_k {}", info.name, info.experts,
                            info.top_k));
      std::string expected = expert_bytes(info.experts) == 1 ? "u8" : "u16";
      if (layer.value("expert_dtype", expected) != expected)
        corrupt(fmt::format("layer '{}' expert_dtype is not {}", info.name, expected));
      layers_.push_back(std::move(info));
    }
    meta_ = header.value("meta", json::object());
  } catch (const json::exception& e) {
    corrupt(fmt::format("header field missing or of the wrong type: {}", e.what()));
  }
}

RouteTraceReader::~RouteTraceReader() {
  if (file_) std::fclose(file_);
}

void RouteTraceReader::corrupt(const std::string& what) const {
  fail_usage("route trace '{}': {} (at byte {}{})", path_.string(), what, offset_,
             examples_ > 0 || done_ ? fmt::format(", after example {}", examples_) : "");
}

void RouteTraceReader::read_exact(void* data, size_t size, const char* what) {
  if (size == 0) return;
  size_t got = std::fread(data, 1, size, file_);
  if (got != size) corrupt(fmt::format("truncated: file ends inside the {}", what));
  offset_ += size;
}

bool RouteTraceReader::next(TraceExample& example) {
  if (done_) return false;
  uint32_t tag = 0;
  read_exact(&tag, 4, "record tag (no end record: the trace is incomplete)");
  if (tag == kEndTag) {
    uint64_t examples = 0, tokens = 0;
    read_exact(&examples, 8, "end record");
    read_exact(&tokens, 8, "end record");
    if (examples != static_cast<uint64_t>(examples_) || tokens != static_cast<uint64_t>(tokens_))
      corrupt(fmt::format("end record says {} examples / {} tokens, read {} / {}", examples, tokens,
                          examples_, tokens_));
    char extra;
    if (std::fread(&extra, 1, 1, file_) == 1) corrupt("data after the end record");
    done_ = true;
    return false;
  }
  if (tag != kExampleTag) corrupt(fmt::format("bad record tag 0x{:08x}", tag));
  uint64_t body = 0;
  read_exact(&body, 8, "record length");
  const uint64_t start = offset_;
  auto read_string = [&](std::string& out, const char* what) {
    uint32_t n = 0;
    read_exact(&n, 4, what);
    if (n > body) corrupt(fmt::format("{} length {} exceeds the record length {}", what, n, body));
    out.assign(n, '\0');
    read_exact(out.data(), n, what);
  };
  read_string(example.id, "example id");
  read_string(example.task, "task name");
  uint32_t tokens = 0;
  read_exact(&tokens, 4, "token count");
  uint64_t expected = offset_ - start;
  const size_t gate_bytes = gate_dtype_ == GateDtype::f16 ? 2 : 4;
  for (const auto& layer : layers_)
    expected += uint64_t(tokens) * layer.top_k * (expert_bytes(layer.experts) + gate_bytes);
  if (expected != body)
    corrupt(fmt::format("example '{}' record length {} does not match {} tokens ({} expected)",
                        example.id, body, tokens, expected));
  example.tokens = tokens;
  example.experts.resize(layers_.size());
  example.gates.resize(layers_.size());
  std::vector<uint8_t> raw;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const auto& layer = layers_[l];
    const size_t n = size_t(tokens) * layer.top_k;
    auto& ids = example.experts[l];
    ids.resize(n);
    if (expert_bytes(layer.experts) == 1) {
      raw.resize(n);
      read_exact(raw.data(), n, "expert ids");
      std::copy(raw.begin(), raw.end(), ids.begin());
    } else {
      read_exact(ids.data(), n * 2, "expert ids");
    }
    for (size_t i = 0; i < n; ++i)
      if (ids[i] >= layer.experts)
        corrupt(fmt::format("example '{}' layer '{}': expert id {} outside [0, {})", example.id,
                            layer.name, ids[i], layer.experts));
    auto& gates = example.gates[l];
    gates.resize(n);
    if (gate_dtype_ == GateDtype::f32) {
      read_exact(gates.data(), n * 4, "gate weights");
    } else {
      std::vector<uint16_t> half(n);
      read_exact(half.data(), n * 2, "gate weights");
      for (size_t i = 0; i < n; ++i)
        gates[i] = static_cast<float>(c10::Half(half[i], c10::Half::from_bits()));
    }
  }
  ++examples_;
  tokens_ += tokens;
  return true;
}

// ---- collect -----------------------------------------------------------------------------------

void collect_routes(model::CausalLMImpl& model, const adapt::InjectedAdapters& injected,
                    const std::vector<TokenizedExample>& examples, RouteTraceWriter& writer,
                    const CollectOptions& options) {
  if (!injected.context) fail_usage("collect_routes: the adapter has no MoLoRA layer to trace");
  if (writer.layers().empty()) writer.declare_layers(injected);
  if (writer.layers().empty())
    fail_usage("collect_routes: the adapter has no MoLoRA layer to trace");
  if (options.batch_size < 1)
    fail_usage("collect_routes: batch size {} must be >= 1", options.batch_size);
  for (const auto& ex : examples)
    if (ex.tokens.empty())
      fail_usage("collect_routes: example '{}' ({}) has no tokens", ex.id, ex.task);

  auto& context = *injected.context;
  // The context keeps a shared_ptr; the writer outlives this call, so a non-owning one suffices.
  std::shared_ptr<adapt::RouteRecorder> recorder(&writer, [](adapt::RouteRecorder*) {});
  struct Restore {
    adapt::MoeContext& context;
    ~Restore() {
      context.set_recorder(nullptr);
      context.clear_token_mask();
    }
  } restore{context};
  context.set_recorder(recorder);

  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const auto device = model.device();
  const auto started = std::chrono::steady_clock::now();
  auto last_log = started;
  for (size_t begin = 0; begin < examples.size(); begin += options.batch_size) {
    const size_t end = std::min(examples.size(), begin + size_t(options.batch_size));
    int64_t length = 0;
    for (size_t i = begin; i < end; ++i) {
      int64_t n = examples[i].tokens.size();
      if (options.max_tokens > 0) n = std::min(n, options.max_tokens);
      length = std::max(length, n);
    }
    const int64_t batch = end - begin;
    auto ids = torch::zeros({batch, length}, torch::kInt64);   // (B, T), right padding
    auto mask = torch::zeros({batch, length}, torch::kInt64);  // (B, T), 1 = real token
    std::vector<ExampleTag> tags;
    for (size_t i = begin; i < end; ++i) {
      const auto& ex = examples[i];
      int64_t n = ex.tokens.size();
      if (options.max_tokens > 0) n = std::min(n, options.max_tokens);
      ids[i - begin].narrow(0, 0, n).copy_(
          torch::tensor(std::vector<int64_t>(ex.tokens.begin(), ex.tokens.begin() + n)));
      mask[i - begin].narrow(0, 0, n).fill_(1);
      tags.push_back({ex.id, ex.task});
    }
    ids = ids.to(device);
    mask = mask.to(device);
    writer.begin_batch(std::move(tags), mask);
    context.set_token_mask(mask);
    model::ForwardOptions forward;
    forward.attention_mask = mask;
    forward.output = model::ForwardOutput::hidden;  // logits are not needed
    model.forward(ids, forward);
    context.clear_token_mask();
    writer.end_batch();
    auto now = std::chrono::steady_clock::now();
    if (options.progress && (now - last_log > std::chrono::seconds(10) || end == examples.size())) {
      log::info("route trace: {}/{} examples, {} tokens, {:.1f}s", end, examples.size(),
                writer.tokens_written(), std::chrono::duration<double>(now - started).count());
      last_log = now;
    }
  }
  if (was_training) model.train();
}

}  // namespace ming::route
