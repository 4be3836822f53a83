#!/usr/bin/env python3
"""Logit parity of ming with Hugging Face transformers (and PEFT), for scripts/gpu-check.sh.

Writes small random checkpoints with transformers itself (a Qwen2 with q/k/v bias, grouped-query
attention and tied embeddings; a LLaMA with an untied head), a PEFT LoRA adapter with non-zero B
on the Qwen2, and one batch of token ids; runs ming's forward through ming-gpu-probe on the same
ids and compares:
  fp32: max |ming - hf| <= --fp32-tol (1e-4)
  bf16: argmax agreement >= --bf16-agree (99.9%) on the positions where the bf16 answer is
        decisive (HF's own bf16 top-1/top-2 margin of at least two bf16 steps of the top logit:
        random models have many near-ties that one rounding step flips); the agreement over all
        positions, and ming's bf16 error against HF fp32 next to HF's own bf16 error, are
        reported beside it.
Results: one JSON object (--out). Needs torch, transformers, peft, safetensors.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file, save_file

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def from_pretrained(cls, path, dtype, device):
    """Loads the (fp32) checkpoint and casts it, which is what ming does with --dtype; no dtype
    argument because transformers 4.x calls it torch_dtype and 5.x dtype. Eager attention is what
    ming's forward mirrors."""
    model = cls.from_pretrained(path, attn_implementation="eager")
    return model.to(device=device, dtype=dtype).eval()


def randomise(model, std):
    """Every weight and bias random (HF zero-inits biases, which would hide the bias path);
    norms near 1."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(std * noise)


def patch_config_for_ming(folder):
    """transformers 5 writes rope_parameters instead of a top-level rope_theta (and dtype instead
    of torch_dtype); ming reads the 4.x keys. Adds them when absent and says so, so that the
    numbers below test the numerics and the gap is reported rather than silently mis-rotated."""
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    notes = []
    rp = cfg.get("rope_parameters") or {}
    if "rope_theta" in rp and cfg.get("rope_theta") != rp["rope_theta"]:
        # transformers computes with rope_parameters; a stale top-level key would mislead ming.
        notes.append(f"config.json rope_theta {cfg.get('rope_theta')} but rope_parameters."
                     f"rope_theta {rp['rope_theta']} (what transformers uses): top-level set")
        cfg["rope_theta"] = rp["rope_theta"]
    if rp.get("rope_type", "default") != "default" and "rope_scaling" not in cfg:
        notes.append(f"rope_parameters.rope_type={rp.get('rope_type')} not mapped to rope_scaling")
    if "torch_dtype" not in cfg and "dtype" in cfg:
        cfg["torch_dtype"] = cfg["dtype"]
        notes.append("config.json had 'dtype' but no 'torch_dtype': added")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    return notes


def make_models(work, tokenizer_bin):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2)
    specs = {
        # Qwen2: q/k/v bias always, GQA 4:2, tied head, Qwen's large rope base.
        "qwen2": (Qwen2Config, Qwen2ForCausalLM,
                  dict(common, tie_word_embeddings=True, rope_theta=1000000.0,
                       use_sliding_window=False)),
        # LLaMA: no biases, GQA 4:2, separate head.
        "llama": (LlamaConfig, LlamaForCausalLM,
                  dict(common, tie_word_embeddings=False, rope_theta=500000.0)),
    }
    notes = {}
    for arch, (cfg_cls, model_cls, kw) in specs.items():
        torch.manual_seed(0)
        model = model_cls(cfg_cls(**kw))
        randomise(model, std=0.08)
        folder = os.path.join(work, arch)
        model.save_pretrained(folder)
        if not any(n.endswith(".safetensors") for n in os.listdir(folder)):
            raise RuntimeError(f"{folder}: save_pretrained wrote no .safetensors")
        notes[arch] = patch_config_for_ming(folder)
        if tokenizer_bin and os.path.exists(tokenizer_bin):
            # llama2.c's 512-piece tokenizer matches vocab_size; only ming-train needs it.
            shutil.copy(tokenizer_bin, os.path.join(folder, "tokenizer.bin"))
    return specs, notes


def make_peft_adapter(work, device):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2ForCausalLM

    base = from_pretrained(Qwen2ForCausalLM, os.path.join(work, "qwen2"), torch.float32, "cpu")
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS,
                        bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero: the adapter would be a no-op
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    folder = os.path.join(work, "qwen2-lora")
    model.save_pretrained(folder)
    return folder


def hf_logits(arch_cls, folder, dtype, device, ids, adapter=None):
    model = from_pretrained(arch_cls, folder, dtype, device)
    if adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter).to(device).eval()
    with torch.no_grad():
        out = model(input_ids=ids.to(device)).logits
    return out.float().cpu()


def ming_logits(probe, folder, dtype, device, ids_path, out_path, adapter=None):
    cmd = [probe, "logits", "--model", folder, "--ids", ids_path, "--out", out_path,
           "--dtype", dtype, "--device", device]
    if adapter:
        cmd += ["--adapter", adapter]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=probe_env())
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()[-2000:]}")
    info = json.loads(r.stdout.strip().splitlines()[-1])
    info["wall_seconds"] = time.time() - t0
    return load_file(out_path)["logits"], info


def probe_env():
    """The probe may need carried libraries that python itself must not see."""
    env = dict(os.environ)
    extra = os.environ.get("MING_RUNTIME_LD_LIBRARY_PATH", "")
    if extra:
        env["LD_LIBRARY_PATH"] = extra + (":" + env["LD_LIBRARY_PATH"]
                                          if env.get("LD_LIBRARY_PATH") else "")
    return env


def bf16_step(x):
    """One bf16 rounding step (ulp) at |x|: 2^(floor(log2|x|) - 7)."""
    return torch.exp2(torch.floor(torch.log2(x.abs().clamp_min(1e-30))) - 7)


def compare(ming, hf, hf_ref32, dtype, fp32_tol, bf16_agree):
    diff = (ming - hf).abs()
    r = {"shape": list(ming.shape),
         "max_abs_diff": diff.max().item(),
         "mean_abs_diff": diff.mean().item(),
         "logit_std": hf.std().item()}
    a_m, a_h = ming.argmax(-1), hf.argmax(-1)
    r["argmax_agree"] = (a_m == a_h).float().mean().item()
    top2 = hf.topk(2, dim=-1).values
    decisive = (top2[..., 0] - top2[..., 1]) >= 2 * bf16_step(top2[..., 0])
    r["decisive_positions"] = int(decisive.sum().item())
    r["positions"] = int(decisive.numel())
    r["argmax_agree_decisive"] = ((a_m == a_h) & decisive).sum().item() / max(1, r["decisive_positions"])
    if dtype == "fp32":
        r["gate"] = f"max_abs_diff <= {fp32_tol:g}"
        r["pass"] = r["max_abs_diff"] <= fp32_tol
    else:
        # Context: how far bf16 is from fp32 for ming and for HF (should be alike).
        r["ming_vs_hf_fp32_mean_abs"] = (ming - hf_ref32).abs().mean().item()
        r["hf_bf16_vs_hf_fp32_mean_abs"] = (hf - hf_ref32).abs().mean().item()
        r["gate"] = f"argmax_agree_decisive >= {bf16_agree:g}"
        r["pass"] = r["argmax_agree_decisive"] >= bf16_agree
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", required=True, help="folder for checkpoints and logits")
    ap.add_argument("--probe", required=True, help="path of ming-gpu-probe")
    ap.add_argument("--out", required=True, help="JSON results file")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tokenizer-bin", default="", help="tok512.bin to copy as tokenizer.bin")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--fp32-tol", type=float, default=1e-4)
    ap.add_argument("--bf16-agree", type=float, default=0.999)
    args = ap.parse_args()

    # Exact fp32 on both sides: no TF32 in matmuls.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    os.makedirs(args.work, exist_ok=True)
    import peft
    import transformers

    result = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                           "peft": peft.__version__},
              "device": args.device, "cases": {}, "notes": {}}
    specs, notes = make_models(args.work, args.tokenizer_bin)
    result["notes"]["config_json"] = notes
    adapter = make_peft_adapter(args.work, args.device)
    with open(os.path.join(adapter, "adapter_config.json")) as f:
        result["notes"]["peft_adapter_config_keys"] = sorted(json.load(f).keys())

    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, 512, (args.batch, args.tokens), generator=g, dtype=torch.int64)
    ids_path = os.path.join(args.work, "ids.safetensors")
    save_file({"ids": ids}, ids_path)

    cases = [("qwen2", None), ("llama", None), ("qwen2", adapter)]
    for arch, adp in cases:
        model_cls = specs[arch][1]
        folder = os.path.join(args.work, arch)
        hf32 = None
        for dtype in ("fp32", "bf16"):
            name = f"{arch}{'+peft-lora' if adp else ''}/{dtype}"
            try:
                tdt = torch.float32 if dtype == "fp32" else torch.bfloat16
                hf = hf_logits(model_cls, folder, tdt, args.device, ids, adp)
                if dtype == "fp32":
                    hf32 = hf
                out_path = os.path.join(args.work, f"ming-{arch}{'-lora' if adp else ''}-{dtype}.safetensors")
                ming, info = ming_logits(args.probe, folder, dtype, args.device, ids_path,
                                         out_path, adp)
                r = compare(ming, hf, hf32 if hf32 is not None else hf, dtype, args.fp32_tol,
                            args.bf16_agree)
                r["ming_adapter_format"] = info.get("adapter_format")
                if adp:
                    # A no-op adapter would make this case pass vacuously.
                    base = hf_logits(model_cls, folder, tdt, args.device, ids)
                    r["adapter_effect_max_abs"] = (hf - base).abs().max().item()
                    if r["adapter_effect_max_abs"] < 100 * args.fp32_tol:
                        r["pass"] = False
                        r["error"] = "the PEFT adapter barely changes HF's logits"
            except Exception as e:  # keep going: one run should show every case
                r = {"pass": False, "error": f"{type(e).__name__}: {e}"}
            result["cases"][name] = r
            status = "PASS" if r.get("pass") else "FAIL"
            print(f"parity {name}: {status} " + json.dumps({k: v for k, v in r.items()
                                                            if k not in ("shape",)}), flush=True)
    result["pass"] = all(c.get("pass") for c in result["cases"].values())
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
