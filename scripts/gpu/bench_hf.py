#!/usr/bin/env python3
"""The transformers side of scripts/gpu-check.sh's speed comparison, on a random
Qwen1.5-1.8B-shaped model (bf16, one GPU), at the same batch and sequence length as ming's:

  train step (forward, token cross-entropy, backward, AdamW on the adapter only):
    peft-lora    transformers + PEFT, plain LoRA on q/k/v/o/gate/up/down with the rank that gives
                 the same trainable-parameter count as ming's MING-MOE layout
    dense-molora MING-MOE's own training path in a few lines of PyTorch: attention LoRA r16 and,
                 on gate/up/down, 8 experts computed for EVERY token, top-2 of a biased router
                 (fp32), softmax over the two, gathered and mixed (what ming's sparse dispatch
                 avoids); the same parameter count as ming
  decode (greedy generate, batch 1, adapters unmerged): base, peft-lora, dense-molora

Prints and writes (--out) one JSON object. Needs torch, transformers, peft.
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# Qwen1.5-1.8B's config.json (weights random).
QWEN15_18B = dict(vocab_size=151936, hidden_size=2048, intermediate_size=5504,
                  num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
                  max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                  tie_word_embeddings=False, use_sliding_window=False)
ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]


def ming_moe_trainable(c, E=8, r=16):
    """ming's adapter_parameter_count for MING-MOE's layout: attention LoRA r*(in+out); MLP
    MoLoRA E*r*(in+out) + router E*in + E."""
    D, I, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    hd = D // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * hd
    attn = r * ((D + D) + (D + kv) + (D + kv) + (D + D))
    mlp = sum(E * r * (i + o) + E * i + E for i, o in ((D, I), (D, I), (I, D)))
    return L * (attn + mlp)


def peft_rank_for(c, count):
    D, I, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    kv = c["num_key_value_heads"] * (D // c["num_attention_heads"])
    per_rank = L * ((D + D) + 2 * (D + kv) + (D + D) + 2 * (D + I) + (I + D))
    return max(1, round(count / per_rank))


class Lora(nn.Module):
    def __init__(self, base, r=16, alpha=32, dropout=0.05):
        super().__init__()
        self.base, self.scaling = base, alpha / r
        self.A = nn.Parameter(torch.empty(r, base.in_features, device=base.weight.device))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(0.01 * torch.randn(base.out_features, r, device=base.weight.device))
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        h = F.linear(F.linear(self.drop(x), self.A.to(x.dtype)), self.B.to(x.dtype))
        return self.base(x) + self.scaling * h


class DenseMoLora(nn.Module):
    """MING-MOE's molora_helper2: every expert on every token, then the top-k gathered."""

    def __init__(self, base, E=8, k=2, r=16, alpha=32):
        super().__init__()
        self.base, self.k, self.scaling = base, k, alpha / r
        dev, i, o = base.weight.device, base.in_features, base.out_features
        self.A = nn.Parameter(torch.empty(E, r, i, device=dev))
        for e in range(E):
            nn.init.kaiming_uniform_(self.A[e], a=math.sqrt(5))
        self.B = nn.Parameter(0.01 * torch.randn(E, o, r, device=dev))
        self.router = nn.Linear(i, E, bias=True, device=dev)  # fp32

    def forward(self, x):
        y = self.base(x)
        w, idx = self.router(x.float()).topk(self.k, dim=-1)  # (..., k)
        w = w.softmax(-1).to(x.dtype)
        h = torch.einsum("...i,eri->...er", x, self.A.to(x.dtype))     # (..., E, r)
        every = torch.einsum("...er,eor->...eo", h, self.B.to(x.dtype))  # (..., E, o)
        idx = idx.unsqueeze(-1).expand(*idx.shape, every.shape[-1])
        chosen = every.gather(-2, idx)                                # (..., k, o)
        return y + self.scaling * (w.unsqueeze(-1) * chosen).sum(-2)


def build_base(device):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(**QWEN15_18B)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg)
    model = model.to(torch.bfloat16)
    model.requires_grad_(False)
    return model


def attach_dense(model):
    for layer in model.model.layers:
        for n in ATTN:
            setattr(layer.self_attn, n, Lora(getattr(layer.self_attn, n)))
        for n in MLP:
            setattr(layer.mlp, n, DenseMoLora(getattr(layer.mlp, n)))
    return model


def attach_peft(model, r):
    from peft import LoraConfig, get_peft_model
    cfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.05, target_modules=ATTN + MLP,
                     bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    return model


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def time_train(model, batch, seq, warmup, iters, device):
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0)
    g = torch.Generator(device=device).manual_seed(0)
    ids = torch.randint(0, QWEN15_18B["vocab_size"], (batch, seq), device=device, generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=ids).logits                     # (B, T, V)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                               ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(iters):
        loss = step()
    torch.cuda.synchronize()
    ms = 1000 * (time.perf_counter() - t0) / iters
    out = {"ms_per_step": ms, "tokens_per_second": 1000 * batch * seq / ms,
           "loss": loss.item(), "trainable": trainable(model),
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    del opt
    return out


def time_decode(model, prompt, new, device):
    model.eval()
    g = torch.Generator(device=device).manual_seed(1)
    ids = torch.randint(0, QWEN15_18B["vocab_size"], (1, prompt), device=device, generator=g)
    kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, eos_token_id=None,
              pad_token_id=0)
    with torch.no_grad():
        model.generate(input_ids=ids, **kw)  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model.generate(input_ids=ids, **kw)
        torch.cuda.synchronize()
    s = time.perf_counter() - t0
    made = out.shape[1] - prompt
    return {"seconds": s, "new_tokens": made, "tokens_per_second": made / s,
            "note": "includes the prefill of the prompt"}


def guarded(results, key, fn):
    try:
        results[key] = fn()
    except Exception as e:  # keep going: one run should show every figure
        results[key] = {"error": f"{type(e).__name__}: {e}"}
    print(f"bench {key}: {json.dumps(results[key])}", flush=True)
    torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--new", type=int, default=64)
    args = ap.parse_args()
    import peft
    import transformers

    count = ming_moe_trainable(QWEN15_18B)
    r = peft_rank_for(QWEN15_18B, count)
    res = {"shape": "qwen1.5-1.8b", "batch": args.batch, "seq": args.seq, "dtype": "bf16",
           "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "peft": peft.__version__},
           "gpu": torch.cuda.get_device_name(0),
           "ming_moe_trainable": count, "peft_rank": r}

    def dense_train():
        m = attach_dense(build_base(args.device))
        out = time_train(m, args.batch, args.seq, args.warmup, args.iters, args.device)
        out["attention"] = getattr(m.config, "_attn_implementation", "?")
        res["_dense_model"] = m
        return out

    def peft_train():
        m = attach_peft(build_base(args.device), r)
        out = time_train(m, args.batch, args.seq, args.warmup, args.iters, args.device)
        out["attention"] = getattr(m.config, "_attn_implementation", "?")
        res["_peft_model"] = m
        return out

    guarded(res, "train_dense_molora", dense_train)
    if "_dense_model" in res:
        guarded(res, "decode_dense_molora",
                lambda: time_decode(res.pop("_dense_model"), args.prompt, args.new, args.device))
    torch.cuda.empty_cache()
    guarded(res, "train_peft_lora", peft_train)
    if "_peft_model" in res:
        m = res.pop("_peft_model")
        guarded(res, "decode_peft_lora", lambda: time_decode(m, args.prompt, args.new, args.device))
        del m
    torch.cuda.empty_cache()
    guarded(res, "decode_base",
            lambda: time_decode(build_base(args.device), args.prompt, args.new, args.device))
    res = {k: v for k, v in res.items() if not k.startswith("_")}
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
