#include "ming/train/llamafactory.h"

#include "ming/core/error.h"
#include "ming/core/log.h"
#include "ming/data/registry.h"

namespace ming::train {

namespace {

struct Inert {
  const char* key;
  const char* why;
};

// LLaMA-Factory keys that change nothing in ming, and why.
constexpr Inert kInertKeys[] = {
    {"trust_remote_code", "ming runs no code from the model folder"},
    {"overwrite_cache", "ming keeps no tokenised-dataset cache; data is encoded at every start"},
    {"preprocessing_num_workers", "tokenisation is native and uses the `threads` threads"},
    {"preprocessing_batch_size", "tokenisation is native and uses the `threads` threads"},
    {"dataloader_num_workers", "batches are built in the training process, no workers needed"},
    {"ddp_timeout", "ming's process group keeps c10d's own timeout"},
    {"deepspeed", "ming shards data only (c10d data parallel); no DeepSpeed config is read"},
    {"flash_attn", "ming's attention kernel is chosen by LibTorch"},
    {"enable_liger_kernel", "ming has its own fused kernels; Liger is a Python library"},
    {"image_max_pixels", "ming trains text-only decoders"},
    {"video_max_pixels", "ming trains text-only decoders"},
    {"freeze_vision_tower", "ming trains text-only decoders (no vision tower)"},
    {"freeze_multi_modal_projector", "ming trains text-only decoders (no projector)"},
    {"train_mm_proj_only", "ming trains text-only decoders (no projector)"},
    {"freeze_language_model", "ming trains text-only decoders; the language model is all there is"},
    {"ray_run_name", "ming does not launch Ray; start ranks with torchrun or srun"},
    {"ray_storage_path", "ming does not launch Ray; start ranks with torchrun or srun"},
    {"ray_num_workers", "ming does not launch Ray; start ranks with torchrun or srun"},
    {"ray_init_kwargs", "ming does not launch Ray; start ranks with torchrun or srun"},
    {"placement_strategy", "ming does not launch Ray; start ranks with torchrun or srun"},
    {"resources_per_worker", "ming does not launch Ray; start ranks with torchrun or srun"},
    {"use_kt", "ming runs its own sparse MoLoRA kernels (no KTransformers backend)"},
    {"kt_optimize_rule", "ming runs its own sparse MoLoRA kernels (no KTransformers backend)"},
    {"cpu_infer", "ming runs its own sparse MoLoRA kernels (no KTransformers backend)"},
    {"chunk_size", "ming runs its own sparse MoLoRA kernels (no KTransformers backend)"},
};

struct OtherStage {
  const char* key;
  const char* stage;
};

// Keys that only mean something in a stage ming-train does not run.
constexpr OtherStage kOtherStageKeys[] = {
    {"pref_beta", "dpo"},          {"pref_ftx", "dpo"},
    {"pref_loss", "dpo"},          {"dpo_label_smoothing", "dpo"},
    {"simpo_gamma", "dpo"},        {"ref_model", "dpo"},
    {"ref_model_adapters", "dpo"}, {"ref_model_quantization_bit", "dpo"},
    {"kto_chosen_weight", "kto"},  {"kto_rejected_weight", "kto"},
    {"reward_model", "ppo"},       {"reward_model_adapters", "ppo"},
    {"reward_model_type", "ppo"},  {"ppo_buffer_size", "ppo"},
    {"ppo_epochs", "ppo"},         {"ppo_score_norm", "ppo"},
    {"ppo_target", "ppo"},         {"ppo_whiten_rewards", "ppo"},
};

// Reporting integrations other than TensorBoard: ming's metrics.jsonl carries the same numbers.
constexpr const char* kOtherReporters[] = {"wandb",   "swanlab", "mlflow",  "comet_ml",
                                           "clearml", "neptune", "dvclive", "all"};

config::Json as_name_list(const config::Json& value) {
  if (value.is_string()) {
    config::Json out = config::Json::array();
    for (const auto& n : data::split_comma_list(value.get<std::string>()))
      out.push_back({{"name", n}});
    return out;
  }
  if (!value.is_array()) return value;
  config::Json out = config::Json::array();
  for (const auto& item : value) {
    if (item.is_string())
      out.push_back({{"name", item}});
    else
      out.push_back(item);
  }
  return out;
}

}  // namespace

void apply_llamafactory_conventions(config::Document& doc) {
  config::Json& root = doc.root;
  if (!root.is_object()) return;

  if (auto it = root.find("stage"); it != root.end()) {
    const std::string stage = it->is_string() ? it->get<std::string>() : it->dump();
    if (stage != "sft")
      fail_usage(
          "{}: stage {} is not supported (ming-train does supervised fine-tuning: stage sft)",
          doc.where("/stage"), stage);
    root.erase(it);
  }
  if (auto it = root.find("do_train"); it != root.end()) {
    if (!it->is_boolean() || !it->get<bool>())
      fail_usage("{}: do_train: {} (ming-train always trains; evaluate with ming-eval)",
                 doc.where("/do_train"), it->dump());
    root.erase(it);
  }
  for (const OtherStage& k : kOtherStageKeys)
    if (root.contains(k.key))
      fail_usage(
          "{}: key '{}' belongs to stage {}, which is not supported (ming-train does "
          "supervised fine-tuning)",
          doc.where(std::string("/") + k.key), k.key, k.stage);
  for (const Inert& k : kInertKeys) {
    auto it = root.find(k.key);
    if (it == root.end()) continue;
    log::info("config: '{}' has no effect in ming: {}", k.key, k.why);
    root.erase(it);
  }

  for (const char* key : {"dataset", "eval_dataset"})
    if (auto it = root.find(key); it != root.end()) {
      if (it->is_null())
        root.erase(it);
      else
        *it = as_name_list(*it);
    }
  if (auto it = root.find("interleave_probs"); it != root.end() && it->is_string()) {
    config::Json probs = config::Json::array();
    for (const auto& p : data::split_comma_list(it->get<std::string>())) {
      try {
        size_t used = 0;
        probs.push_back(std::stod(p, &used));
        if (used != p.size()) throw std::invalid_argument(p);
      } catch (const std::exception&) {
        fail_usage("{}: interleave_probs: '{}' is not a number", doc.where("/interleave_probs"), p);
      }
    }
    *it = probs;
  }
  if (auto it = root.find("max_samples"); it != root.end() && it->is_null()) root.erase(it);
  if (auto it = root.find("resume_from_checkpoint");
      it != root.end() && it->is_boolean() && !it->get<bool>())
    *it = nullptr;
  if (auto it = root.find("report_to"); it != root.end()) {
    config::Json kept = config::Json::array();
    const config::Json list = it->is_array() ? *it : config::Json::array({*it});
    for (const auto& r : list) {
      const std::string name = r.is_string() ? r.get<std::string>() : r.dump();
      bool other = false;
      for (const char* o : kOtherReporters) other = other || name == o;
      if (other)
        log::info(
            "config: report_to '{}' has no effect in ming: it writes metrics.jsonl and, "
            "with report_to tensorboard, TensorBoard event files",
            name);
      else
        kept.push_back(r);
    }
    *it = kept.empty() ? config::Json::array({"none"}) : kept;
  }
}

}  // namespace ming::train
