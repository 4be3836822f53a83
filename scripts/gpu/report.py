#!/usr/bin/env python3
"""Summary of scripts/gpu-check.sh: merges each step's status and the JSON results of the steps
into one gpu-check.json and prints a table. Standard library only (also runs in --dry-run).

  report.py summarise --work DIR --json OUT.json [--text OUT.txt]
      DIR/steps.tsv: name TAB status TAB seconds TAB message (one line per step)
      DIR/results/*.json: one object per step that measured something
  report.py st-diff A.safetensors B.safetensors [--expect same|different] [--tol X]
      max |A - B| of the F32 tensor "logits" in two files (for the CPU dry run)
"""
import argparse
import glob
import json
import math
import os
import struct
import sys


def read_steps(work):
    steps = []
    path = os.path.join(work, "steps.tsv")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 3:
                    steps.append({"step": parts[0], "status": parts[1],
                                  "seconds": float(parts[2] or 0),
                                  "message": parts[3] if len(parts) > 3 else ""})
    return steps


def read_results(work):
    results = {}
    for path in sorted(glob.glob(os.path.join(work, "results", "*.json"))):
        name = os.path.splitext(os.path.basename(path))[0]
        try:
            with open(path) as f:
                results[name] = json.load(f)
        except (OSError, ValueError) as e:
            results[name] = {"error": f"unreadable {path}: {e}"}
    return results


def fmt(x, digits=3):
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e6):
            return f"{x:.{digits}e}"
        return f"{x:.{digits}f}"
    return str(x)


def figure_rows(results):
    """(what, value, note) rows for the measured figures."""
    rows = []
    parity = results.get("parity", {})
    for name, c in parity.get("cases", {}).items():
        if "error" in c:
            rows.append((f"parity {name}", "ERROR", c["error"][:100]))
        elif name.endswith("/fp32"):
            rows.append((f"parity {name}", f"max|d| {fmt(c['max_abs_diff'])}",
                         f"{'PASS' if c['pass'] else 'FAIL'} ({c['gate']})"))
        else:
            rows.append((f"parity {name}",
                         f"argmax {100 * c['argmax_agree_decisive']:.2f}% decisive, "
                         f"{100 * c['argmax_agree']:.2f}% all",
                         f"{'PASS' if c['pass'] else 'FAIL'}; bf16 err ming "
                         f"{fmt(c.get('ming_vs_hf_fp32_mean_abs', float('nan')))} vs hf "
                         f"{fmt(c.get('hf_bf16_vs_hf_fp32_mean_abs', float('nan')))}"))
    tr = results.get("train", {})
    if tr:
        rows.append(("ming-train on cuda", f"loss {fmt(tr.get('first_loss', float('nan')))} -> "
                     f"{fmt(tr.get('last_loss', float('nan')))}",
                     f"{tr.get('steps', '?')} steps, {fmt(tr.get('tokens_per_second', 0.0), 0)} tok/s"))
    ming = results.get("bench_ming", {})
    hf = results.get("bench_hf", {})
    ts = ming.get("train_step", {})
    if "ms_per_step" in ts:
        rows.append(("train step ming MoLoRA (sparse)", f"{fmt(ts['ms_per_step'], 1)} ms",
                     f"{ts.get('trainable')} trainable, B{ts.get('batch')}xT{ts.get('seq')}"))
    for key, label in (("train_dense_molora", "train step torch dense MoLoRA"),
                       ("train_peft_lora", "train step HF+PEFT LoRA")):
        v = hf.get(key, {})
        if "ms_per_step" in v:
            extra = f"r={hf.get('peft_rank')}" if "peft" in key else "every expert, every token"
            rows.append((label, f"{fmt(v['ms_per_step'], 1)} ms",
                         f"{v.get('trainable')} trainable, {extra}, {v.get('attention')} attention"))
        elif "error" in v:
            rows.append((label, "ERROR", v["error"][:100]))
    for key, label in (("decode_ming_moe", "decode ming + MoLoRA"),
                       ("decode_none", "decode ming base")):
        v = ming.get(key, {})
        if "tokens_per_second" in v:
            rows.append((label, f"{fmt(v['tokens_per_second'], 1)} tok/s",
                         f"batch {v.get('batch')}, {v.get('new_tokens')} new"))
    for key, label in (("decode_dense_molora", "decode HF + dense MoLoRA"),
                       ("decode_peft_lora", "decode HF + PEFT LoRA (unmerged)"),
                       ("decode_base", "decode HF base")):
        v = hf.get(key, {})
        if "tokens_per_second" in v:
            rows.append((label, f"{fmt(v['tokens_per_second'], 1)} tok/s",
                         f"batch 1, {v.get('new_tokens')} new, generate()"))
        elif "error" in v:
            rows.append((label, "ERROR", v["error"][:100]))
    tests = results.get("ctest", {})
    if tests:
        rows.append(("ctest", f"{tests.get('passed', '?')}/{tests.get('total', '?')} passed",
                     ", ".join(tests.get("failed", [])[:6])))
    return rows


def table(rows, headers):
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(len(headers))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def summarise(args):
    steps = read_steps(args.work)
    results = read_results(args.work)
    failed = [s["step"] for s in steps if s["status"] == "FAIL"]
    doc = {"ok": not failed and bool(steps), "failed_steps": failed, "steps": steps,
           "results": results}
    with open(args.json + ".tmp", "w") as f:
        json.dump(doc, f, indent=2)
    os.replace(args.json + ".tmp", args.json)
    text = table([(s["step"], s["status"], f"{s['seconds']:.0f}s", s["message"][:90])
                  for s in steps], ("step", "status", "time", "message"))
    rows = figure_rows(results)
    if rows:
        text += "\n\n" + table(rows, ("figure", "value", "note"))
    text += f"\n\noverall: {'OK' if doc['ok'] else 'FAILED: ' + ', '.join(failed)}\n"
    print(text, end="")
    if args.text:
        with open(args.text, "w") as f:
            f.write(text)
    return 0 if doc["ok"] else 1


def read_f32(path, name="logits"):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        info = header[name]
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {info['dtype']}, expected F32")
        begin, end = info["data_offsets"]
        f.seek(8 + n + begin)
        data = f.read(end - begin)
    return info["shape"], struct.unpack(f"<{len(data) // 4}f", data)


def st_diff(args):
    sa, a = read_f32(args.a)
    sb, b = read_f32(args.b)
    if sa != sb:
        print(f"shape mismatch: {sa} vs {sb}")
        return 1
    finite = all(math.isfinite(x) for x in a) and all(math.isfinite(x) for x in b)
    d = max(abs(x - y) for x, y in zip(a, b))
    ok = finite and ((d <= args.tol) if args.expect == "same" else (d > args.tol))
    print(json.dumps({"shape": sa, "max_abs_diff": d, "finite": finite, "expect": args.expect,
                      "tol": args.tol, "ok": ok}))
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summarise")
    s.add_argument("--work", required=True)
    s.add_argument("--json", required=True)
    s.add_argument("--text", default="")
    d = sub.add_parser("st-diff")
    d.add_argument("a")
    d.add_argument("b")
    d.add_argument("--expect", choices=["same", "different"], default="same")
    d.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    return summarise(args) if args.cmd == "summarise" else st_diff(args)


if __name__ == "__main__":
    sys.exit(main())
