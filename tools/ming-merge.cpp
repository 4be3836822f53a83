// ming-merge: turn checkpoints into Hugging Face model folders, and merge, combine, upcycle,
// prune and convert adapters. Each operation is a CLI11 subcommand with its own options struct;
// every output folder is written atomically (nothing is left behind on failure).
//
//   ming-merge merge   --base qwen --adapter run/adapter -o merged [--experts-to-dense usage ...]
//   ming-merge combine --adapters a,b --weights 1,0.5 --method svd --rank 16 -o ab
//   ming-merge upcycle --adapters qa,ner,dialog --top-k 2 -o moe-init
//   ming-merge upcycle --from-lora run/lora --experts 8 -o moe-init
//   ming-merge prune   --adapter run/adapter --route-stats stats/route_stats.json -o pruned
//   ming-merge convert --from llama2c --checkpoint stories260K.bin --tokenizer tok512.bin -o model
//   ming-merge convert --from ming-moe --adapter MING-MOE-7B -o ming-adapter
//   ming-merge convert --to peft --adapter run/adapter -o peft-adapter
//   ming-merge convert --to ming-moe --adapter run/molora --base qwen -o release
#include <iostream>

#include <ming/adapt/combine.h>
#include <ming/adapt/merge.h>
#include <ming/adapt/merge_shell.h>
#include <ming/adapt/prune.h>
#include <ming/core/error.h>
#include <ming/core/log.h>
#include <ming/core/runtime.h>
#include <ming/model/llama2c.h>

#include "common/cli.h"

namespace {

using ming::fail_usage;

struct MergeFlags {
  ming::adapt::MergeOptions options;
  std::string dtype, experts_to_dense;
};

CLI::App* add_merge(CLI::App& app, MergeFlags& f) {
  auto* c = app.add_subcommand("merge", "fold an adapter into its base model (a plain HF folder)");
  auto& o = f.options;
  c->add_option("--base", o.base, "base model folder")->required();
  c->add_option("--adapter", o.adapter, "adapter folder (ming, PEFT or MING-MOE)")->required();
  c->add_option("-o,--output", o.output, "output model folder")->required();
  c->add_option("--dtype", f.dtype, "output dtype: bf16 | fp16 | fp32 (default: the base's)");
  c->add_option("--experts-to-dense", f.experts_to_dense,
                "fold MoLoRA experts into W by expected gate weight: usage | uniform (default: "
                "keep them as OUT/experts-adapter)");
  c->add_option("--route-stats", o.route_stats, "route_stats.json (for --experts-to-dense usage)");
  c->add_option("--eval-data", o.eval_data, "JSONL data: report perplexity before/after merging");
  c->add_option("--eval-max-examples", o.eval_max_examples, "examples scored")
      ->capture_default_str();
  c->add_option("--eval-max-tokens", o.eval_max_tokens, "tokens per example")
      ->capture_default_str();
  return c;
}

void run_merge(const MergeFlags& f) {
  auto o = f.options;
  if (!f.dtype.empty()) o.dtype = ming::parse_dtype(f.dtype);
  if (!f.experts_to_dense.empty())
    o.experts_to_dense = ming::adapt::parse_experts_to_dense(f.experts_to_dense);
  const auto r = ming::adapt::merge(o);
  nlohmann::json j = {{"output", o.output.string()},
                      {"lora_merged", r.n_lora_merged},
                      {"molora_densified", r.n_molora_densified},
                      {"molora_kept", r.n_molora_kept}};
  if (r.experts_adapter) j["experts_adapter"] = r.experts_adapter->string();
  if (r.ppl_adapter) {
    j["eval_tokens"] = r.eval_tokens;
    j["perplexity_adapter"] = *r.ppl_adapter;
    j["perplexity_merged"] = *r.ppl_merged;
    j["perplexity_change"] = *r.ppl_merged / *r.ppl_adapter - 1.0;
  }
  std::cout << j.dump() << "\n";
}

struct CombineFlags {
  ming::adapt::CombineOptions options;
  std::vector<std::string> adapters;
  std::string method = "cat", majority_sign = "total";
  int64_t rank = 0;
  double density = -1;
};

CLI::App* add_combine(CLI::App& app, CombineFlags& f) {
  auto* c = app.add_subcommand("combine", "combine plain-LoRA adapters into one (PEFT's methods)");
  c->add_option("--adapters", f.adapters, "adapter folders")->required()->delimiter(',');
  c->add_option("--weights", f.options.weights, "one weight per adapter (default 1 each)")
      ->delimiter(',');
  c->add_option("--method", f.method,
                "linear | cat | svd | ties | dare | dare_ties | magnitude_prune | ties_svd | "
                "dare_svd | dare_ties_svd")
      ->capture_default_str();
  c->add_option("--rank", f.rank, "output rank of the svd methods (default: largest input r)");
  c->add_option("--density", f.density, "fraction kept by ties/dare/magnitude_prune, in (0, 1]");
  c->add_option("--majority-sign", f.majority_sign, "ties sign election: total | frequency")
      ->capture_default_str();
  c->add_option("--seed", f.options.seed, "dare's random drops")->capture_default_str();
  c->add_option("-o,--output", f.options.output, "output adapter folder")->required();
  return c;
}

void run_combine(const CombineFlags& f) {
  auto o = f.options;
  o.adapters.assign(f.adapters.begin(), f.adapters.end());
  o.method = ming::adapt::parse_combine_method(f.method);
  o.majority_sign = ming::adapt::parse_majority_sign(f.majority_sign);
  if (f.rank != 0) o.rank = f.rank;
  if (f.density >= 0) o.density = f.density;
  ming::adapt::combine(o);
}

struct UpcycleFlags {
  ming::adapt::UpcycleOptions options;
  std::vector<std::string> adapters;
  bool no_router_bias = false;
};

CLI::App* add_upcycle(CLI::App& app, UpcycleFlags& f) {
  auto* c = app.add_subcommand("upcycle", "build a MoLoRA adapter whose experts are LoRA adapters");
  auto& o = f.options;
  auto* adapters = c->add_option("--adapters", f.adapters, "adapter folders: expert i = adapter i")
                       ->delimiter(',');
  auto* from_lora = c->add_option("--from-lora", o.from_lora,
                                  "one LoRA adapter copied into every expert (routers fresh)")
                        ->excludes(adapters);
  c->add_option("--experts", o.experts, "with --from-lora: number of experts")
      ->capture_default_str()
      ->needs(from_lora);
  c->add_option("--targets", o.targets, "projections that become MoLoRA layers")
      ->delimiter(',')
      ->capture_default_str();
  c->add_option("--top-k", o.top_k, "experts per token")->capture_default_str();
  c->add_option("--others", o.others,
                "other projections: mean (exact average dW; default for --adapters) | first "
                "(default for --from-lora) | drop");
  c->add_flag("--no-router-bias", f.no_router_bias, "router without bias (MING has one)");
  c->add_option("--seed", o.seed, "router initialisation")->capture_default_str();
  c->add_option("-o,--output", o.output, "output adapter folder")->required();
  return c;
}

void run_upcycle(const UpcycleFlags& f) {
  auto o = f.options;
  if (f.adapters.empty() && o.from_lora.empty())
    fail_usage("upcycle: give --adapters A,B,... or --from-lora DIR");
  o.adapters.assign(f.adapters.begin(), f.adapters.end());
  o.router_bias = !f.no_router_bias;
  ming::adapt::upcycle(o);
}

struct PruneFlags {
  ming::adapt::PruneOptions options;
  std::string measure = "topk_share";
};

CLI::App* add_prune(CLI::App& app, PruneFlags& f) {
  auto* c = app.add_subcommand("prune", "drop MoLoRA experts the router rarely uses");
  auto& o = f.options;
  c->add_option("--adapter", o.adapter, "MoLoRA adapter folder")->required();
  c->add_option("--route-stats", o.route_stats, "route_stats.json of ming-route-stats")->required();
  c->add_option("--threshold", o.threshold, "drop experts with usage below this (uniform = 1/E)")
      ->required();
  c->add_option("--measure", f.measure, "usage measure: topk_share | expected_gate")
      ->capture_default_str();
  c->add_option("-o,--output", o.output, "output adapter folder")->required();
  return c;
}

void run_prune(const PruneFlags& f) {
  auto o = f.options;
  if (f.measure == "topk_share")
    o.measure = ming::adapt::UsageMeasure::topk_share;
  else if (f.measure == "expected_gate")
    o.measure = ming::adapt::UsageMeasure::expected_gate;
  else
    fail_usage("--measure '{}': expected topk_share or expected_gate", f.measure);
  const auto r = ming::adapt::prune_experts(o);
  for (const auto& p : r.projections)
    std::cout << nlohmann::json{{"module", p.module},
                                {"experts_before", p.experts_before},
                                {"kept", p.kept},
                                {"top_k", p.top_k_after}}
                     .dump()
              << "\n";
}

struct ConvertFlags {
  std::string from, to, tokenizer, adapter;
  ming::model::Llama2cImportOptions llama2c;
  int64_t top_k = 0;
  std::string dtype = "fp32";
  std::filesystem::path base;
};

CLI::App* add_convert(CLI::App& app, ConvertFlags& f) {
  auto* c = app.add_subcommand("convert", "convert checkpoints and adapters between formats");
  c->add_option("--from", f.from, "source format: llama2c (model) | ming-moe (adapter)")
      ->check(CLI::IsMember({"llama2c", "ming-moe"}));
  c->add_option("--to", f.to,
                "target format for --adapter: peft (LoRA parts only) | ming-moe (MING-MOE's "
                "release files)")
      ->check(CLI::IsMember({"peft", "ming-moe"}));
  c->add_option("--dtype", f.dtype,
                "--to ming-moe: tensor dtype, fp32 (lossless) | bf16 (MING-MOE's training "
                "dtype) | fp16")
      ->capture_default_str();
  c->add_option("--base", f.base,
                "--to ming-moe: base model folder whose config.json the release's extends "
                "(default: the adapter's base_model_name_or_path when it is a folder)");
  c->add_option("--checkpoint", f.llama2c.checkpoint, "llama2.c checkpoint (e.g. stories260K.bin)")
      ->check(CLI::ExistingFile);
  c->add_option("--tokenizer", f.tokenizer, "llama2.c tokenizer.bin (e.g. tok512.bin)")
      ->check(CLI::ExistingFile);
  c->add_option("--adapter", f.adapter, "adapter folder (--from ming-moe, --to peft)");
  c->add_option("--top-k", f.top_k,
                "MING-MOE experts per token (default: the release's config.json, else 2)");
  c->add_option("-o,--output", f.llama2c.output, "output folder")->required();
  return c;
}

void run_convert(ConvertFlags& f) {
  if (f.from.empty() == f.to.empty())
    fail_usage("convert: give exactly one of --from llama2c|ming-moe or --to peft|ming-moe");
  if (f.from == "llama2c") {
    // A llama2.c "tinyllamas" checkpoint -> HF LLaMA folder.
    if (f.llama2c.checkpoint.empty())
      fail_usage("convert --from llama2c: --checkpoint is required");
    if (!f.tokenizer.empty()) f.llama2c.tokenizer = f.tokenizer;
    ming::model::import_llama2c(f.llama2c);
    return;
  }
  if (f.adapter.empty()) fail_usage("convert: --adapter DIR is required");
  ming::adapt::ConvertAdapterOptions o;
  o.input = f.adapter;
  o.output = f.llama2c.output;
  o.ming_moe_top_k = f.top_k;
  if (f.from == "ming-moe") {
    const auto r = ming::adapt::convert_to_ming(o);
    if (r.input_format != "ming-moe")
      ming::log::warn("convert --from ming-moe: '{}' is a {} adapter, not a MING-MOE release",
                      f.adapter, r.input_format);
  } else if (f.to == "ming-moe") {
    o.ming_moe_dtype = ming::parse_dtype(f.dtype);
    o.base_config = f.base;
    ming::adapt::convert_to_ming_moe(o);
  } else {
    ming::adapt::convert_to_peft(o);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ming-merge: convert, merge and reshape model checkpoints and adapters",
               "ming-merge"};
  app.require_subcommand(1);
  app.fallthrough();  // --quiet / --threads may follow the subcommand
  MergeFlags merge;
  CombineFlags combine;
  UpcycleFlags upcycle;
  PruneFlags prune;
  ConvertFlags convert;
  auto* merge_cmd = add_merge(app, merge);
  auto* combine_cmd = add_combine(app, combine);
  auto* upcycle_cmd = add_upcycle(app, upcycle);
  auto* prune_cmd = add_prune(app, prune);
  auto* convert_cmd = add_convert(app, convert);
  bool quiet = false;
  int threads = 0;
  app.add_flag("--quiet,-q", quiet, "only errors on stderr");
  app.add_option("--threads", threads, "CPU threads (0 = cores available to this process)");

  return ming::cli::run(app, argc, argv, [&] {
    if (quiet) ming::log::set_level(ming::log::Level::warn);
    ming::set_threads(threads);
    if (*merge_cmd) run_merge(merge);
    if (*combine_cmd) run_combine(combine);
    if (*upcycle_cmd) run_upcycle(upcycle);
    if (*prune_cmd) run_prune(prune);
    if (*convert_cmd) run_convert(convert);
  });
}
