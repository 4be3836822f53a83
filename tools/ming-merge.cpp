// ming-merge: turn checkpoints into Hugging Face model folders (and, later, merge/combine/prune
// adapters). Each operation is a CLI11 subcommand with its own options struct.
#include <ming/core/log.h>
#include <ming/model/llama2c.h>

#include "common/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"ming-merge: convert, merge and reshape model checkpoints", "ming-merge"};
  app.require_subcommand(1);

  // convert --from llama2c: a llama2.c "tinyllamas" checkpoint -> HF LLaMA folder.
  auto* convert = app.add_subcommand("convert", "convert a foreign checkpoint into a HF model folder");
  std::string from;
  ming::model::Llama2cImportOptions llama2c;
  convert->add_option("--from", from, "source format: llama2c")
      ->required()
      ->check(CLI::IsMember({"llama2c"}));
  convert->add_option("--checkpoint", llama2c.checkpoint, "llama2.c checkpoint (e.g. stories260K.bin)")
      ->required()
      ->check(CLI::ExistingFile);
  std::string tokenizer;
  convert->add_option("--tokenizer", tokenizer, "llama2.c tokenizer.bin (e.g. tok512.bin)")
      ->check(CLI::ExistingFile);
  convert->add_option("-o,--output", llama2c.output, "output model folder")->required();
  bool quiet = false;
  app.add_flag("--quiet,-q", quiet, "only errors on stderr");

  return ming::cli::run(app, argc, argv, [&] {
    if (quiet) ming::log::set_level(ming::log::Level::warn);
    if (*convert) {
      if (!tokenizer.empty()) llama2c.tokenizer = tokenizer;
      ming::model::import_llama2c(llama2c);
    }
  });
}
