// The training tests' fixture: stories260K (the real pretrained llama2.c model, imported) as a
// HF folder plus two tiny datasets in two formats, and how to run ming-train on it.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "ming/io/json.h"
#include "ming/model/llama2c.h"
#include "support.h"

namespace ming::test {

namespace fs = std::filesystem;

// stories260K as a HF folder plus two tiny datasets in two formats.
struct Fixture {
  TempDir dir{"ming-train"};
  fs::path model = dir / "stories260K";
  fs::path alpaca = dir / "alpaca.jsonl";
  fs::path sharegpt = dir / "sharegpt.jsonl";

  Fixture() {
    model::Llama2cImportOptions import;
    import.checkpoint = data_dir() / "models/stories260K.bin";
    import.tokenizer = data_dir() / "models/tok512.bin";
    import.output = model;
    model::import_llama2c(import);
    std::string a, s;
    const char* names[] = {"Tom", "Lily", "Ben", "Sue", "Max", "Amy"};
    for (int i = 0; i < 24; ++i) {
      std::string n = names[i % 6];
      a += io::Json{{"instruction", "Who has the red ball?"},
                    {"input", n + " has a red ball."},
                    {"output", "The red ball belongs to " + n + "."}}
               .dump() +
           "\n";
      s +=
          io::Json{{"conversations",
                    {{{"from", "human"}, {"value", "What is the dog called?"}},
                     {{"from", "gpt"}, {"value", "The dog is called " + n + " and it is happy."}}}}}
              .dump() +
          "\n";
    }
    write_text(alpaca, a);
    write_text(sharegpt, s);
  }

  std::string config(const fs::path& out, const std::string& extra = "") const {
    fs::path path = out.string() + ".yaml";
    write_text(path, "model_name_or_path: " + model.string() + "\n" +
                         "output_dir: " + out.string() + "\n" +
                         "finetuning_type: molora\n"
                         "lora_rank: 4\nlora_alpha: 8\nlora_dropout: 0.0\n"
                         "moe: {experts: 4, top_k: 2, lora_rank: 4, lora_alpha: 8}\n"
                         "dataset:\n  - {path: " +
                         alpaca.string() + ", format: alpaca}\n  - {path: " + sharegpt.string() +
                         ", format: sharegpt}\n"
                         "template: raw\nmask: assistant\ncutoff_len: 64\n"
                         "learning_rate: 0.01\nmax_steps: 12\nwarmup_steps: 1\n"
                         "per_device_train_batch_size: 4\nlogging_steps: 1\n"
                         "save_steps: 0\nthreads: 1\nbf16: false\n" +
                         extra);
    return path.string();
  }
};

inline std::vector<double> losses(const fs::path& metrics) {
  std::vector<double> out;
  io::for_each_jsonl(metrics, [&](const io::Json& r, int64_t) {
    if (r.contains("loss")) out.push_back(r["loss"].get<double>());
  });
  return out;
}

inline std::string train_cmd(const std::string& config, const std::string& extra = "") {
  return tool("ming-train").string() + " --config " + config + " " + extra;
}

}  // namespace ming::test
