// model.safetensors.index.json naming the tensors of two small, valid shards.
#include <torch/torch.h>

#include "../fuzz.h"
#include "ming/io/safetensors.h"

MING_FUZZ_TARGET(safetensors_index) {
  static const bool shards_written = [] {
    const auto dir = ming::fuzz::scratch() / "index";
    std::filesystem::create_directories(dir);
    ming::io::save_safetensors(dir / "model-00001-of-00002.safetensors",
                               {{"a.weight", torch::ones({2, 3})}, {"b", torch::zeros({4})}});
    ming::io::save_safetensors(dir / "model-00002-of-00002.safetensors",
                               {{"c.weight", torch::arange(6).to(torch::kBFloat16)}});
    return true;
  }();
  (void)shards_written;
  const auto path =
      ming::fuzz::write_file("index/model.safetensors.index.json", ming::fuzz::as_text(data, size));
  ming::fuzz::expect_clean([&] {
    const auto store = ming::io::TensorStore::open(path);
    for (const auto& name : store.names()) store.get(name).sum();
  });
}
