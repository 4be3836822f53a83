// Shared by test_eval_runner.cpp and test_eval_cli.cpp: a tiny random model folder (with the
// real tok512.bin tokenizer) and hand-made task files and suites.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "ming/model/load.h"
#include "support.h"

namespace ming::test {

inline model::ModelConfig tiny_eval_config() {
  model::ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = 512;  // tok512
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 256;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  return c;
}

// Writes a random fp32 model with tokenizer.bin (llama2.c format, found by load_tokenizer) into
// `dir`. Large weights make the next-token distributions peaked and prompt-dependent.
inline void write_tiny_eval_model(const fs::path& dir, uint64_t seed = 11) {
  torch::manual_seed(seed);
  auto config = tiny_eval_config();
  model::CausalLM m(config, torch::TensorOptions().dtype(torch::kFloat32));
  m->init_random(0.5);
  model::save_model(dir, config, m);
  fs::copy_file(data_dir() / "models" / "tok512.bin", dir / "tokenizer.bin",
                fs::copy_options::overwrite_existing);
}

// A four-option multiple-choice task over {suite}/toy/{split}.jsonl.
inline std::string toy_mc_yaml(const std::string& name = "toy-mc",
                               const std::string& continuation = "letter",
                               const std::string& metrics = "[accuracy]") {
  return "name: " + name +
         "\n"
         "language: en\n"
         "data: \"{suite}/toy/{split}.jsonl\"\n"
         "prompt: |-\n"
         "  Question: {question}\n"
         "  {options}\n"
         "  Answer:\n"
         "gold: answer_idx\n"
         "scorer: loglik_choice\n"
         "choices:\n"
         "  field: options\n"
         "  continuation: " +
         continuation +
         "\n"
         "metrics: " +
         metrics + "\n";
}

// n records with options A-D; gold letters cycle A, B, C, D.
inline std::string toy_mc_jsonl(int n) {
  static const std::vector<std::string> q = {
      "Where did the little cat sleep?", "What did Lily find in the park?",
      "Who gave Tom a red ball?",        "Why was the dog happy?",
      "What colour was the big boat?",   "When did the bird sing?",
      "How did Ben fix the toy?",        "What did Mom bake for the party?"};
  std::string out;
  for (int i = 0; i < n; ++i) {
    const char gold = static_cast<char>('A' + i % 4);
    out += "{\"id\": \"toy-" + std::to_string(i) + "\", \"question\": \"" + q[i % q.size()] +
           "\", \"reference\": \"The little cat slept on the bed and was happy.\", \"options\": "
           "{\"A\": \"on the bed\", \"B\": \"a shiny stone\", \"C\": \"his "
           "friend Sam\", \"D\": \"it was blue\"}, \"answer_idx\": \"" +
           std::string(1, gold) + "\"}\n";
  }
  return out;
}

// A generation task with a regex parser over the same data.
inline std::string toy_gen_yaml() {
  return "name: toy-gen\n"
         "language: en\n"
         "data: \"{suite}/toy/{split}.jsonl\"\n"
         "prompt: \"Question: {question}\\nAnswer:\"\n"
         "gold: answer_idx\n"
         "scorer: generate\n"
         "answer:\n"
         "  parser: option_letter\n"
         "  options_field: options\n"
         "metrics: [accuracy]\n"
         "generation:\n"
         "  max_new_tokens: 6\n";
}

// Perplexity of each record's reference sentence given its question.
inline std::string toy_ppl_yaml() {
  return "name: toy-ppl\n"
         "language: en\n"
         "data: \"{suite}/toy/{split}.jsonl\"\n"
         "prompt: \"Question: {question}\\nAnswer:\"\n"
         "gold: reference\n"
         "scorer: perplexity\n"
         "metrics: [perplexity]\n";
}

}  // namespace ming::test
