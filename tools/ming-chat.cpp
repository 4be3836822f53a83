// ming-chat: talk to a model. Interactive multi-turn on a terminal (/reset, /exit); one-shot with
// --prompt / --prompt-file; one answer per input line when stdin is piped. Answers go to stdout,
// everything else to stderr, so it composes in pipelines.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include <ming/adapt/adapter_io.h>
#include <ming/core/error.h>
#include <ming/core/log.h>
#include <ming/gen/chat.h>
#include <ming/io/files.h>

#include "common/cli.h"

namespace {

struct ChatFlags {
  std::string model, adapter, prompt, prompt_file, system, template_name = "auto";
  double temperature = -1, top_p = -1,
         repeat_penalty = -1;  // -1: generation_config.json or default
  int64_t top_k = -1, max_new_tokens = 512;
  std::vector<std::string> stop;
  bool one_shot = false;  // --prompt given (possibly empty: raw template starts from BOS)
  bool show_prompt = false;
};

// A flag beats generation_config.json, which beats the built-in default.
double pick(double flag, const nlohmann::json& gen, const char* key, double fallback) {
  if (flag >= 0) return flag;
  if (gen.contains(key) && gen[key].is_number()) return gen[key].get<double>();
  return fallback;
}

void run_chat(const ChatFlags& f, const ming::cli::RuntimeFlags& rf) {
  auto rt = ming::cli::apply_runtime_flags(rf);
  ming::model::LoadOptions lo;
  lo.dtype = rt.dtype;
  lo.device = rt.device;
  auto loaded = ming::model::load_model(f.model, lo);
  if (!f.adapter.empty()) {
    auto adapter = ming::adapt::load_adapter(*loaded.model, f.adapter);
    loaded.model->to(rt.device);
    ming::log::info("attached adapter {} ({})", f.adapter, adapter.format);
  }
  loaded.model->eval();

  ming::gen::ChatOptions co;
  co.chat_template =
      f.template_name == "auto"
          ? loaded.chat_template
          : ming::text::ChatTemplate(ming::text::parse_chat_template(f.template_name));
  if (!f.system.empty()) co.system = f.system;
  const auto& gen = loaded.generation_config;
  const bool sample = !gen.contains("do_sample") || gen["do_sample"] == true;
  auto& s = co.generation.sampling;
  s.temperature = pick(f.temperature, sample ? gen : nlohmann::json::object(), "temperature",
                       sample ? 0.7 : 0.0);
  s.top_p = pick(f.top_p, gen, "top_p", 1.0);
  s.top_k = static_cast<int64_t>(pick(static_cast<double>(f.top_k), gen, "top_k", 0));
  s.repetition_penalty = pick(f.repeat_penalty, gen, "repetition_penalty", 1.0);
  s.seed = rf.seed;
  co.generation.max_new_tokens = f.max_new_tokens;
  co.generation.stop = f.stop;
  co.generation.eos_ids = loaded.eos_token_ids;
  ming::gen::ChatSession chat(loaded, co);
  auto print = [](const std::string& delta) {
    std::fwrite(delta.data(), 1, delta.size(), stdout);
    std::fflush(stdout);
  };
  // The model's input for each turn, on stderr: what the template rendered, as token ids.
  auto reply = [&](const std::string& message) {
    if (f.show_prompt) {
      const auto ids = chat.prompt_ids(message);
      std::fprintf(stderr, "prompt ids: %s\n", nlohmann::json(ids).dump().c_str());
    }
    chat.reply(message, print);
  };

  if (f.one_shot || !f.prompt_file.empty()) {
    std::string prompt = f.prompt;
    if (!f.prompt_file.empty()) {
      prompt = ming::io::read_file(f.prompt_file);
      ming::gen::check_utf8(prompt, "'" + f.prompt_file + "'");
      if (!prompt.empty() && prompt.back() == '\n') prompt.pop_back();
    }
    reply(prompt);
    print("\n");
    return;
  }
  if (!isatty(STDIN_FILENO)) {  // pipeline: one independent answer per input line
    std::string line;
    for (int64_t n = 1; std::getline(std::cin, line); ++n) {
      ming::gen::check_utf8(line, fmt::format("stdin line {}", n));
      chat.reset();
      reply(line);
      print("\n");
    }
    return;
  }
  std::fprintf(stderr, "ming-chat: %s, template %s. /reset clears the history, /exit quits.\n",
               f.model.c_str(), co.chat_template.name().c_str());
  std::string line;
  while (true) {
    std::fprintf(stderr, "> ");
    if (!std::getline(std::cin, line) || line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      chat.reset();
      std::fprintf(stderr, "(history cleared)\n");
      continue;
    }
    if (line.empty()) continue;
    try {
      reply(line);
    } catch (const ming::UsageError& e) {  // a bad line should not end the session
      std::fprintf(stderr, "ming-chat: %s\n", e.what());
      continue;
    }
    print("\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ming-chat: chat with a model (interactive, one-shot, or one answer per stdin line)",
               "ming-chat"};
  ChatFlags f;
  ming::cli::RuntimeFlags rf;
  app.add_option("--model,-m", f.model, "model folder (HF layout)")->required();
  app.add_option("--adapter", f.adapter, "adapter folder to attach (LoRA / MoLoRA)");
  auto* p = app.add_option("--prompt,-p", f.prompt, "answer this one message and exit");
  app.add_option("--prompt-file", f.prompt_file, "answer the message in this file and exit")
      ->excludes(p);
  app.add_option("--system", f.system, "system prompt");
  app.add_flag("--show-prompt", f.show_prompt,
               "write each turn's prompt token ids (the rendered template) to stderr");
  app.add_option("--template", f.template_name,
                 "auto (the model's own chat template) | chatml | llama2 | llama3 | raw")
      ->check(CLI::IsMember({"auto", "chatml", "llama2", "llama3", "raw"}))
      ->capture_default_str();
  app.add_option("--temperature", f.temperature,
                 "0 = greedy (default: generation_config.json, else 0.7)");
  app.add_option("--top-k", f.top_k, "keep the k most likely tokens (0 = off)");
  app.add_option("--top-p", f.top_p, "nucleus sampling mass (1 = off)");
  app.add_option("--repeat-penalty", f.repeat_penalty, "repetition penalty (1 = off)");
  app.add_option("--max-new-tokens,-n", f.max_new_tokens, "longest answer in tokens")
      ->capture_default_str();
  app.add_option("--stop", f.stop, "stop when the answer contains this text (repeatable)");
  ming::cli::add_runtime_flags(app, rf);
  return ming::cli::run(app, argc, argv, [&] {
    f.one_shot = p->count() > 0;
    ming::gen::check_utf8(f.prompt, "--prompt");
    ming::gen::check_utf8(f.system, "--system");
    run_chat(f, rf);
  });
}
