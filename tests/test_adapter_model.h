// A tiny decoder-shaped module for the adapter tests: Projections named with Hugging Face module
// paths (model.layers.{i}.self_attn.{q,k,v,o}_proj, model.layers.{i}.mlp.{gate,up,down}_proj),
// an embedding, and a forward that uses every projection so that outputs reveal adapters.
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "ming/model/projection.h"

namespace ming::test {

struct TinyDecoder : torch::nn::Module {
  TinyDecoder(int n_layers, int64_t hidden, int64_t intermediate, uint64_t seed = 123) {
    torch::manual_seed(seed);
    embed = register_module("embed", torch::nn::Embedding(10, hidden));
    auto opt = torch::TensorOptions().dtype(torch::kFloat32);
    for (int l = 0; l < n_layers; ++l) {
      const std::string at = "model.layers." + std::to_string(l) + ".";
      Layer layer;
      auto make = [&](const std::string& name, int64_t in, int64_t out, bool bias) {
        ming::model::Projection p(at + name, in, out, bias, opt);
        torch::NoGradGuard g;
        p->weight.normal_(0, 0.3);
        if (bias) p->bias.normal_(0, 0.1);
        register_module("l" + std::to_string(l) + "_" + name.substr(name.find('.') + 1), p);
        return p;
      };
      layer.q = make("self_attn.q_proj", hidden, hidden, true);
      layer.k = make("self_attn.k_proj", hidden, hidden, true);
      layer.v = make("self_attn.v_proj", hidden, hidden, true);
      layer.o = make("self_attn.o_proj", hidden, hidden, false);
      layer.gate = make("mlp.gate_proj", hidden, intermediate, false);
      layer.up = make("mlp.up_proj", hidden, intermediate, false);
      layer.down = make("mlp.down_proj", intermediate, hidden, false);
      layers.push_back(layer);
    }
  }

  // ids (B, T) -> (B, T, hidden). Not a real attention: a cheap mix that touches q/k/v/o.
  torch::Tensor forward(const torch::Tensor& ids) {
    auto h = embed(ids);
    for (auto& l : layers) {
      auto att = torch::tanh(l.q(h)) * torch::sigmoid(l.k(h)) + l.v(h);
      h = h + l.o(att);
      h = h + l.down(torch::silu(l.gate(h)) * l.up(h));
    }
    return h;
  }

  struct Layer {
    ming::model::Projection q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr};
    ming::model::Projection gate{nullptr}, up{nullptr}, down{nullptr};
  };
  torch::nn::Embedding embed{nullptr};
  std::vector<Layer> layers;
};

}  // namespace ming::test
