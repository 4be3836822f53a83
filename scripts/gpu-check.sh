#!/usr/bin/env bash
# CUDA build of ming and its parity with Hugging Face transformers + PEFT, in one run on a GPU
# machine (one H200 with a pip PyTorch 2.x + CUDA, transformers, peft and safetensors; no
# internet). Every step reports PASS / FAIL / SKIP with a reason and the run goes on, so one run
# shows the whole picture. Steps:
#   env       GPU, python packages, compilers
#   deps      ming's C++ dependencies (dpkg -s); missing ones from apt, or else unpacked from the
#             carried bundle build-gpucarry/deps/ (made here by --prepare) into a private prefix
#   build     ming against the pip torch's LibTorch, -DMING_CUDA=ON (scripts/setup.sh when no
#             dependency is missing; plain cmake otherwise); retried without NCCL if that fails
#   ctest     the whole test suite, with CUDA available
#   probe     scripts/gpu/probe.cpp (ming-gpu-probe: logits dump, train-step and decode timing)
#   parity    scripts/gpu/hf_parity.py: random Qwen2 (q/k/v bias, GQA, tied) and LLaMA written
#             by transformers, a PEFT LoRA with non-zero B; ming's logits vs HF's, fp32 and bf16
#   train     a short ming-train (MoLoRA) with --set device=cuda on a tiny alpaca set
#   bench     Qwen1.5-1.8B-shaped random model, bf16: one training step of ming (MING-MOE
#             layout, sparse dispatch) vs transformers+PEFT LoRA of the same trainable count vs
#             MING-MOE's dense path in PyTorch; decode tok/s vs transformers' generate
#   report    $OUT/gpu-check.json (every figure) and a table on stdout ($OUT/gpu-check.txt)
#
# ---- On the GPU machine, through the device tool -------------------------------------------
# Build folders cannot travel (64 MiB limit), so ming is built there, in /tmp. Once, here:
#   scripts/gpu-check.sh --prepare      # fills build-gpucarry/ (ignored by git's /build*/):
#                                       # the dependency bundle (.tar.gz per Debian package) and a
#                                       # copy of ../shared/data for the tests (about 45 MB)
# then one call of the device tool's `run` (it runs in the repository root there; $OUT is the
# folder whose files come back):
#   command:   bash scripts/gpu-check.sh --out "$OUT"
#   carry:     ["build-gpucarry"]
#   timeout_s: 530
# What comes back in $OUT: gpu-check.json (every figure), gpu-check.txt (the tables) and
# gpu-check.log (every step's full output). The run stops starting steps at GPU_CHECK_DEADLINE
# (500 s) and cuts a running one there, so the report is always written; it is planned for about
# 8 minutes (build ~3, tests ~1, parity + train ~1, benchmarks ~2). Each step also has its own
# limit (GPU_CHECK_{BUILD,CTEST,PARITY,BENCH}_TIMEOUT). The machine stays warm for 30 s after a
# call, and the build folder (/tmp/ming-gpu-check/build) with it: to redo some steps at once,
#   command:   bash scripts/gpu-check.sh --out "$OUT" --skip-build --only "parity train bench"
# ---- Here, on the CPU -----------------------------------------------------------------------
#   scripts/gpu-check.sh --dry-run      # syntax of this script and of the Python helpers, the
#                                       # probe compiled against a CPU build of libming and run on
#                                       # a tiny random model (no transformers needed)
#
# Options: --out DIR (default $OUT, else build-gpucheck/out), --work DIR (default
# /tmp/ming-gpu-check), --build-dir DIR (default /tmp/ming-gpu-check/build), --skip-build (reuse
# the build folder), --only "step step ..." (run just those steps, in order).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mode=check
out_dir=${OUT:-}
work=/tmp/ming-gpu-check
build_dir=""
skip_build=0
only=""
while (($#)); do
  case $1 in
    --dry-run) mode=dry ;;
    --prepare) mode=prepare ;;
    --out) out_dir=$2; shift ;;
    --work) work=$2; shift ;;
    --build-dir) build_dir=$2; shift ;;
    --skip-build) skip_build=1 ;;
    --only) only=$2; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
    *) echo "gpu-check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
out_dir=${out_dir:-$root/build-gpucheck/out}
build_dir=${build_dir:-$work/build}
carry=$root/build-gpucarry
deps_prefix=$work/deps
jobs=$(nproc 2>/dev/null || echo 2)
# Seconds after which no step starts and a running one is cut (the device tool's timeout_s should
# exceed it by ~30 s so that the report still comes back).
deadline=${GPU_CHECK_DEADLINE:-500}
[[ $mode == dry && -z "${GPU_CHECK_DEADLINE:-}" ]] && deadline=3600

# Debian packages ming builds against: -dev package -> the runtime libraries it needs.
declare -A dep_runtime=(
  [libfmt-dev]="libfmt9"
  [libyaml-cpp-dev]="libyaml-cpp0.7"
  [libcli11-dev]=""
  [doctest-dev]=""
  [nlohmann-json3-dev]=""
  [libpcre2-dev]="libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3"
  [libutf8proc-dev]="libutf8proc2"
  [libsentencepiece-dev]="libsentencepiece0 libprotobuf-lite32"
  [pkgconf]="pkgconf-bin libpkgconf3 pkg-config"
)

# ---- step bookkeeping -----------------------------------------------------------------------
mkdir -p "$out_dir" "$work/results" "$work/logs"
: >"$work/steps.tsv"
log_all=$out_dir/gpu-check.log
: >"$log_all"

say() { echo "gpu-check: $*" | tee -a "$log_all" >&2; }

# run_step NAME TIMEOUT_S FUNCTION: runs FUNCTION with its output in logs/NAME.log (and the
# combined log), records PASS/FAIL/SKIP with the seconds taken and the last message. A function
# SKIPs by writing "SKIP: reason" as its last line and returning 3.
run_step() {
  local name=$1 limit=$2 fn=$3
  if [[ -n "$only" && " $only " != *" $name "* ]]; then return 0; fi
  local logf=$work/logs/$name.log t0=$SECONDS rc status msg
  # Never past the overall deadline: the report at the end must still be written.
  local left=$((deadline - SECONDS))
  if ((left < 20)); then
    printf '%s\t%s\t%s\t%s\n' "$name" SKIP 0 "out of time (GPU_CHECK_DEADLINE=${deadline}s)" >>"$work/steps.tsv"
    say "$name: SKIP (out of time)"; return 0
  fi
  ((limit > left - 10)) && limit=$((left - 10))
  say "---- $name (limit ${limit}s)"
  # Job control puts the step in its own process group, so a timeout ends all of it.
  set -m
  ( "$fn" ) >"$logf" 2>&1 &
  local pid=$!
  ( sleep "$limit"; kill -TERM -- "-$pid" 2>/dev/null; sleep 5; kill -KILL -- "-$pid" 2>/dev/null ) \
    >/dev/null 2>&1 &
  local watchdog=$!
  set +m
  wait "$pid"; rc=$?
  kill -- "-$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null
  { echo "==== $name (rc $rc)"; cat "$logf"; } >>"$log_all"
  msg=$(grep -v '^\s*$' "$logf" | tail -n 1 | tr '\t' ' ' | cut -c1-300)
  if ((rc == 0)); then status=PASS
  elif ((rc == 3)); then status=SKIP; msg=${msg#SKIP: }
  elif ((rc == 143 || rc == 137)); then status=FAIL; msg="timed out after ${limit}s: $msg"
  else status=FAIL; msg="exit $rc: $msg"; fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" "$msg" >>"$work/steps.tsv"
  say "$name: $status ($((SECONDS - t0))s) $msg"
  if [[ $status == FAIL ]]; then tail -n 25 "$logf" | sed 's/^/    | /' >&2; fi
  return 0
}
skip() { echo "SKIP: $*"; exit 3; }
fail() { echo "FAIL: $*"; exit 1; }

# Environment for ming's own binaries: the carried libraries (never for python, whose own
# libraries they could shadow).
deps_libdir() {
  [[ -d $deps_prefix/usr/lib/x86_64-linux-gnu ]] && echo "$deps_prefix/usr/lib/x86_64-linux-gnu"
  return 0
}
ming_env() {
  local lib; lib=$(deps_libdir)
  [[ -n $lib ]] && export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  if [[ -z "${MING_DATA:-}" ]]; then
    if [[ -d $carry/data/models ]]; then export MING_DATA=$carry/data
    elif [[ -d $root/../shared/data/models ]]; then export MING_DATA=$root/../shared/data; fi
  fi
  return 0
}

torch_dir() { python3 -c 'import torch,os;print(os.path.join(torch.utils.cmake_prefix_path,"Torch"))'; }

# ---- steps ----------------------------------------------------------------------------------
step_env() {
  echo "host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {print int($2/1048576)}' /proc/meminfo) GiB"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  for t in cmake ninja g++ c++ nvcc pkg-config dpkg apt-get; do
    printf '%-10s %s\n' "$t" "$(command -v $t >/dev/null && $t --version 2>&1 | head -n 1 || echo MISSING)"
  done
  python3 - "$work/results/env.json" <<'EOF'
import json, sys, importlib
env = {}
for name in ("torch", "transformers", "peft", "safetensors", "numpy"):
    try:
        env[name] = importlib.import_module(name).__version__
    except Exception as e:
        env[name] = f"MISSING ({type(e).__name__}: {e})"
import torch
env["cuda_available"] = torch.cuda.is_available()
env["torch_cuda"] = torch.version.cuda
env["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
env["cxx11_abi"] = torch.compiled_with_cxx11_abi()
json.dump(env, open(sys.argv[1], "w"), indent=2)
print(json.dumps(env))
if not env["cuda_available"]:
    sys.exit("torch sees no CUDA device")
missing = [k for k, v in env.items() if isinstance(v, str) and v.startswith("MISSING")]
if missing:
    sys.exit(f"python packages missing: {missing}")
EOF
}

# Which -dev packages dpkg does not know as installed (all of them when there is no dpkg).
missing_dev_packages() {
  local p
  for p in "${!dep_runtime[@]}"; do
    if [[ $p == pkgconf ]]; then command -v pkg-config >/dev/null || echo "$p"; continue; fi
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done | sort
}

step_deps() {
  local missing
  missing=$(missing_dev_packages | tr '\n' ' ')
  if [[ -z "${missing// }" ]]; then echo "all of ming's Debian dependencies are installed"; return 0; fi
  echo "not installed (dpkg -s): $missing"
  if [[ -d $carry/deps ]]; then
    rm -rf "$deps_prefix"; mkdir -p "$deps_prefix"
    local p q
    for p in $missing; do
      for q in $p ${dep_runtime[$p]}; do
        if [[ -f $carry/deps/$q.tar.gz ]]; then
          tar -xzf "$carry/deps/$q.tar.gz" -C "$deps_prefix" || fail "cannot unpack $q.tar.gz"
          echo "unpacked $q into $deps_prefix"
        else
          echo "WARNING: $q is missing and not in the carried bundle $carry/deps"
        fi
      done
    done
    # pkg-config files and the pkgconf binary carry /usr paths: point them at the prefix.
    find "$deps_prefix" -name '*.pc' -exec sed -i "s|^prefix=/usr|prefix=$deps_prefix/usr|" {} +
    echo "dependencies from the bundle under $deps_prefix (pkg-config: $(ls "$deps_prefix"/usr/bin/pkgconf 2>/dev/null || echo system))"
    return 0
  fi
  if command -v apt-get >/dev/null && [[ $(id -u) -eq 0 ]]; then
    echo "no carried bundle ($carry/deps); trying apt-get (fails without a package mirror)"
    local pkgs="" p
    for p in $missing; do pkgs+="$p ${dep_runtime[$p]} "; done
    timeout 120 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 300 \
      apt-get install -y -qq --no-install-recommends $pkgs && return 0
    fail "apt-get could not install: $missing (run scripts/gpu-check.sh --prepare here and carry build-gpucarry)"
  fi
  fail "missing $missing, no apt-get and no carried bundle (run scripts/gpu-check.sh --prepare and carry build-gpucarry)"
}

# The packages scripts/setup.sh would install (its own list, read from it), minus libtorch-dev
# (not needed with Torch_DIR), that dpkg does not know as installed.
setup_sh_missing() {
  local p out=""
  for p in $(sed -n '/^packages=(/,/)/p' "$root/scripts/setup.sh" | tr -d '()' | sed 's/packages=//'); do
    [[ $p == libtorch-dev ]] && continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+="$p "
  done
  echo "$out"
}

cmake_dep_args() {
  local args=()
  if [[ -d $deps_prefix/usr ]]; then
    args+=(-DCMAKE_PREFIX_PATH="$deps_prefix/usr")
    [[ -x $deps_prefix/usr/bin/pkgconf ]] && args+=(-DPKG_CONFIG_EXECUTABLE="$deps_prefix/usr/bin/pkgconf")
  fi
  ((${#args[@]})) && printf '%s\n' "${args[@]}"
  return 0
}

# PKG_CONFIG_PATH/LD_LIBRARY_PATH for configuring and building against the bundle.
build_env() {
  if [[ -d $deps_prefix/usr ]]; then
    export PKG_CONFIG_PATH=$deps_prefix/usr/lib/x86_64-linux-gnu/pkgconfig:$deps_prefix/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
    export LD_LIBRARY_PATH=$deps_prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  fi
  command -v nvcc >/dev/null || { [[ -x /usr/local/cuda/bin/nvcc ]] && export PATH=/usr/local/cuda/bin:$PATH; }
  # The H200 (sm_90); without it Torch's CMake probes the GPU or builds for every architecture.
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
}

step_build() {
  ((skip_build)) && [[ -f $build_dir/libming.so ]] && { echo "reusing $build_dir (--skip-build)"; return 0; }
  build_env
  local tdir; tdir=$(torch_dir) || fail "python3 cannot import torch"
  echo "Torch_DIR=$tdir"
  local args; mapfile -t args < <(cmake_dep_args)
  args+=(-DMING_CUDA=ON)
  command -v nvcc >/dev/null && args+=(-DCMAKE_CUDA_COMPILER="$(command -v nvcc)" -DCMAKE_CUDA_ARCHITECTURES=90)
  # LibTorch units take ~1.5 GB each to compile.
  local mem_gb; mem_gb=$(awk '/MemAvailable/ {print int($2/1048576)}' /proc/meminfo)
  local j=$jobs; ((j > mem_gb / 2)) && j=$((mem_gb / 2)); ((j < 1)) && j=1
  local configure=(cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTorch_DIR="$tdir" "${args[@]}")
  local setup_missing; setup_missing=$(setup_sh_missing)
  if [[ -n "$setup_missing" ]]; then
    echo "not using scripts/setup.sh: it would apt-get install $setup_missing (no package mirror here); plain cmake instead"
  else
    echo "every package scripts/setup.sh wants is installed: building through it"
    if BUILD_DIR=$build_dir Torch_DIR=$tdir MING_CMAKE_ARGS="${args[*]}" "$root/scripts/setup.sh"; then
      grep -E "MING_WITH_NCCL|MING_NCCL" "$build_dir/CMakeCache.txt" || true
      return 0
    fi
    echo "scripts/setup.sh failed; retrying with plain cmake"
  fi
  rm -f "$work/build.out"
  if "${configure[@]}" && cmake --build "$build_dir" -j "$j" 2>&1 | tee "$work/build.out"; then
    grep -E "MING_NCCL" "$build_dir/CMakeCache.txt" || true
    return 0
  fi
  # Only an NCCL failure is worth a second (full) build: the flags of every unit change.
  grep -qiE "nccl|distributed\.cpp" "$work/build.out" ||
    fail "ming does not build against $tdir (see the compiler output above)"
  echo "BUILD FAILED in the NCCL path; retrying with -DMING_NCCL=OFF"
  "${configure[@]}" -DMING_NCCL=OFF && cmake --build "$build_dir" -j "$j" ||
    fail "ming does not build against $tdir even without NCCL (see the compiler output above)"
  echo "built WITHOUT NCCL: the NCCL path (MING_WITH_NCCL) does not compile against this LibTorch"
}

step_ctest() {
  [[ -f $build_dir/CTestTestfile.cmake ]] || skip "no build in $build_dir"
  ming_env
  [[ -n "${MING_DATA:-}" ]] || echo "WARNING: no data folder (carry build-gpucarry or set MING_DATA): data tests fail"
  echo "MING_DATA=${MING_DATA:-unset}"
  local rc=0
  (cd "$build_dir" && ctest --output-on-failure -j "$jobs" --timeout 300) >"$work/ctest.out" 2>&1 || rc=$?
  cat "$work/ctest.out"
  python3 - "$work/ctest.out" "$work/results/ctest.json" <<'EOF'
import json, re, sys
text = open(sys.argv[1], errors="replace").read()
m = re.search(r"(\d+)% tests passed, (\d+) tests failed out of (\d+)", text)
failed = re.findall(r"^\s*\d+ - (.+?) \((?:Failed|Timeout|SEGFAULT|Exception|Subprocess aborted|Not Run)", text, re.M)
res = {"total": int(m.group(3)) if m else None,
       "failed_count": int(m.group(2)) if m else None, "failed": failed}
if m: res["passed"] = res["total"] - res["failed_count"]
json.dump(res, open(sys.argv[2], "w"), indent=2)
EOF
  tail -n 1 "$work/ctest.out"
  return $rc
}

# Builds ming-gpu-probe against libming in $1; prints its path.
build_probe() {
  local mdir=$1 pdir=$2
  local args; mapfile -t args < <(cmake_dep_args)
  cmake -S "$root/scripts/gpu" -B "$pdir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DMING_BUILD_DIR="$mdir" "${args[@]}" >&2 && cmake --build "$pdir" >&2 &&
    echo "$pdir/ming-gpu-probe"
}

step_probe() {
  [[ -f $build_dir/libming.so ]] || skip "no libming.so in $build_dir"
  build_env
  build_probe "$build_dir" "$build_dir/gpu-probe" || fail "ming-gpu-probe does not build"
}

probe_bin() { echo "$build_dir/gpu-probe/ming-gpu-probe"; }

step_parity() {
  [[ -x $(probe_bin) ]] || skip "no ming-gpu-probe"
  local python_ld=${LD_LIBRARY_PATH:-}
  ming_env
  # The probe gets the carried libraries (hf_parity.py adds them for it); python keeps its own.
  MING_RUNTIME_LD_LIBRARY_PATH=$(deps_libdir) LD_LIBRARY_PATH=$python_ld \
    PYTHONUNBUFFERED=1 python3 "$root/scripts/gpu/hf_parity.py" --work "$work/parity" \
    --probe "$(probe_bin)" --device cuda --out "$work/results/parity.json" \
    --tokenizer-bin "${MING_DATA:-/nonexistent}/models/tok512.bin"
}

step_train() {
  [[ -x $build_dir/ming-train ]] || skip "no ming-train in $build_dir"
  [[ -f $work/parity/llama/config.json ]] || skip "no tiny LLaMA checkpoint (the parity step makes it)"
  [[ -f $work/parity/llama/tokenizer.bin ]] || skip "no tokenizer for it (tok512.bin from MING_DATA; carry build-gpucarry)"
  ming_env
  local d=$work/train
  rm -rf "$d"; mkdir -p "$d"
  python3 - "$d/alpaca.jsonl" <<'EOF'
import json, sys
names = ["Tom", "Lily", "Ben", "Sue", "Max", "Amy"]
with open(sys.argv[1], "w") as f:
    for i in range(48):
        n = names[i % 6]
        f.write(json.dumps({"instruction": "Who has the red ball?", "input": f"{n} has a red ball.",
                            "output": f"The red ball belongs to {n}."}) + "\n")
EOF
  cat >"$d/train.yaml" <<EOF
model_name_or_path: $work/parity/llama
output_dir: $d/run
finetuning_type: molora
lora_rank: 4
lora_alpha: 8
lora_dropout: 0.0
moe: {experts: 4, top_k: 2, lora_rank: 4, lora_alpha: 8}
dataset:
  - {path: $d/alpaca.jsonl, format: alpaca}
template: raw
mask: assistant
cutoff_len: 64
learning_rate: 0.01
max_steps: 30
warmup_steps: 1
per_device_train_batch_size: 8
logging_steps: 1
save_steps: 0
bf16: true
EOF
  "$build_dir/ming-train" --config "$d/train.yaml" --set device=cuda || fail "ming-train exited $?"
  python3 - "$d/run/metrics.jsonl" "$work/results/train.json" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
losses = [r["loss"] for r in rows if "loss" in r]
tps = [r["tokens_per_second"] for r in rows if "tokens_per_second" in r]
first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
res = {"steps": len(losses), "first_loss": first, "last_loss": last,
       "tokens_per_second": sum(tps[-5:]) / max(1, len(tps[-5:])) if tps else None,
       "loss_fell": last < 0.8 * first}
json.dump(res, open(sys.argv[2], "w"), indent=2)
print(json.dumps(res))
sys.exit(0 if res["loss_fell"] else "the loss did not fall by 20% in 30 steps on CUDA")
EOF
}

step_bench() {
  local batch=${GPU_CHECK_BATCH:-4} seq=${GPU_CHECK_SEQ:-512} rc=0
  if [[ -x $(probe_bin) ]]; then
    ( ming_env
      probe_json() {  # one probe run -> its JSON line, or {"error": ...} (and a FAIL later)
        local o; o=$("$(probe_bin)" "$@" 2>"$work/probe.err") && echo "$o" && return 0
        echo "{\"error\": \"ming-gpu-probe $1 exited $?: $(tail -n 1 "$work/probe.err" | tr -d '"\\')\"}"
        cat "$work/probe.err" >&2; return 1
      }
      ok=0
      t=$(probe_json train-step --shape qwen1.5-1.8b --device cuda --dtype bf16 --batch "$batch" --seq "$seq") || ok=1
      d1=$(probe_json decode --shape qwen1.5-1.8b --device cuda --dtype bf16 --adapter ming-moe --prompt 16 --new 64) || ok=1
      d0=$(probe_json decode --shape qwen1.5-1.8b --device cuda --dtype bf16 --adapter none --prompt 16 --new 64) || ok=1
      echo "{\"train_step\": $t, \"decode_ming_moe\": $d1, \"decode_none\": $d0}" >"$work/results/bench_ming.json"
      cat "$work/results/bench_ming.json"
      exit $ok
    ) || { echo "ming benchmark (ming-gpu-probe) failed"; rc=1; }
  else
    echo "no ming-gpu-probe: ming's side not timed"; rc=1
  fi
  PYTHONUNBUFFERED=1 python3 "$root/scripts/gpu/bench_hf.py" --out "$work/results/bench_hf.json" \
    --batch "$batch" --seq "$seq" || { echo "transformers benchmark failed"; rc=1; }
  if [[ -x $build_dir/ming-bench ]]; then
    # Another engineer's tool, when present: its own figures go beside the probe's.
    # Same shape, batch and length; decode as for transformers' generate above (16-token
    # prompt, 64 new); --reference both adds ming's own run of MING-MOE's dense path.
    ( ming_env; timeout 150 "$build_dir/ming-bench" --shape qwen1.5-1.8b --device cuda --dtype bf16 \
        --train "$((batch * seq))" --train-seq "$seq" --reference both -b 1 -p 16 -n 64 \
        --adapter-shape none,lora,molora --json ) >"$work/results/ming_bench.json" ||
      { echo "ming-bench failed (exit $?)"; rm -f "$work/results/ming_bench.json"; rc=1; }
  fi
  return $rc
}

# ---- --prepare: the bundle to carry (here, where the packages are installed) ---------------
prepare() {
  set -e
  mkdir -p "$carry/deps"
  local p q files
  for p in "${!dep_runtime[@]}"; do
    for q in $p ${dep_runtime[$p]}; do
      # The installed files of each package (dpkg -L), as a tarball to unpack under a prefix.
      files=$(dpkg -L "$q" 2>/dev/null | while read -r f; do [[ -f $f || -L $f ]] && echo "${f#/}"; done) ||
        true
      if [[ -z "$files" ]]; then echo "gpu-check: $q is not installed here; not bundled" >&2; continue; fi
      tar -czf "$carry/deps/$q.tar.gz" -C / $files
    done
  done
  if [[ -d $root/../shared/data ]]; then
    rm -rf "$carry/data"
    cp -r "$root/../shared/data" "$carry/data"
  fi
  du -sh "$carry"/* >&2
  echo "gpu-check: carry build-gpucarry ($(du -sm "$carry" | cut -f1) MB; the limit is 64 MiB with the tree)" >&2
}

# ---- --dry-run: what the CPU here can check ----------------------------------------------
dry_bash() { bash -n "$0" && echo "bash -n: ok"; }
dry_python() {
  local f
  for f in "$root"/scripts/gpu/*.py; do
    PYTHONPYCACHEPREFIX=$work/pycache python3 -m py_compile "$f" || fail "$f"
    echo "py_compile $(basename "$f"): ok"
  done
}
# The probe against the first CPU build of libming it links with (the lead's build/ first).
dry_probe() {
  local d sym need=(ming::model::load_model ming::adapt::load_adapter ming::adapt::inject_adapters
                    ming::adapt::save_adapter ming::model::save_model ming::io::save_safetensors)
  for d in "$root/build" "$root"/build-*; do
    [[ -f $d/libming.so && -f $d/CMakeCache.txt ]] || continue
    local exported; exported=$(nm -DC "$d/libming.so" 2>/dev/null)
    for sym in "${need[@]}"; do
      grep -q "$sym(" <<<"$exported" || { echo "$d/libming.so lacks $sym (stale or partial build)"; continue 2; }
    done
    echo "building the probe against $d/libming.so"
    build_probe "$d" "$work/probe-$(basename "$d")" >"$work/probe-bin" || fail "the probe does not build against $d"
    return 0
  done
  skip "no build folder with a complete libming.so (${need[*]}) to link the probe against"
}
dry_run_probe() {
  [[ -f $work/probe-bin ]] || skip "the probe was not built"
  local probe m=$work/dry
  probe=$(cat "$work/probe-bin")
  rm -rf "$m"; mkdir -p "$m"
  "$probe" random-model --out "$m/qwen2" --arch qwen2 --adapter-out "$m/qwen2-molora" || fail "random-model"
  "$probe" random-model --out "$m/llama" --arch llama || fail "random-model llama"
  # ids (2, 8) int64 as safetensors, written with the standard library.
  python3 - "$m/ids.safetensors" <<'EOF'
import json, struct, sys
ids = [(7 * i + 3) % 512 for i in range(16)]
data = struct.pack("<16q", *ids)
header = json.dumps({"ids": {"dtype": "I64", "shape": [2, 8], "data_offsets": [0, len(data)]}}).encode()
header += b" " * (-len(header) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(header)) + header + data)
EOF
  local a
  for a in qwen2 llama; do
    "$probe" logits --model "$m/$a" --ids "$m/ids.safetensors" --out "$m/$a-fp32.safetensors" --dtype fp32 || fail "logits $a fp32"
    "$probe" logits --model "$m/$a" --ids "$m/ids.safetensors" --out "$m/$a-bf16.safetensors" --dtype bf16 || fail "logits $a bf16"
    python3 "$root/scripts/gpu/report.py" st-diff "$m/$a-fp32.safetensors" "$m/$a-bf16.safetensors" --expect same --tol 0.1 ||
      fail "$a: bf16 logits far from fp32"
  done
  "$probe" logits --model "$m/qwen2" --adapter "$m/qwen2-molora" --ids "$m/ids.safetensors" --out "$m/qwen2-molora.safetensors" || fail "logits with adapter"
  python3 "$root/scripts/gpu/report.py" st-diff "$m/qwen2-fp32.safetensors" "$m/qwen2-molora.safetensors" --expect different --tol 1e-3 ||
    fail "the adapter does not change the logits"
  "$probe" train-step --shape tiny --device cpu --dtype fp32 --batch 2 --seq 16 --warmup 1 --iters 2 || fail "train-step"
  "$probe" decode --shape tiny --device cpu --dtype fp32 --prompt 4 --new 4 || fail "decode"
  if "$probe" logits --model "$m/nonexistent" --ids "$m/ids.safetensors" --out "$m/x.safetensors" 2>"$m/err"; then
    fail "a missing model folder did not fail"
  fi
  echo "a missing model exits non-zero: $(head -c 200 "$m/err")"
}
dry_report() {
  python3 "$root/scripts/gpu/report.py" summarise --work "$work" --json "$out_dir/gpu-check.json" --text "$out_dir/gpu-check.txt"
}

# ---- main -----------------------------------------------------------------------------------
case $mode in
  prepare) prepare; exit ;;
  dry)
    say "dry run (CPU): $root -> $out_dir"
    run_step bash 30 dry_bash
    run_step python 60 dry_python
    run_step probe-build 900 dry_probe
    run_step probe-run 300 dry_run_probe
    ;;
  check)
    say "GPU check: $root -> $out_dir (work $work, build $build_dir)"
    run_step env 60 step_env
    run_step deps 150 step_deps
    run_step build "${GPU_CHECK_BUILD_TIMEOUT:-330}" step_build
    run_step ctest "${GPU_CHECK_CTEST_TIMEOUT:-150}" step_ctest
    run_step probe 120 step_probe
    run_step parity "${GPU_CHECK_PARITY_TIMEOUT:-150}" step_parity
    run_step train 90 step_train
    run_step bench "${GPU_CHECK_BENCH_TIMEOUT:-260}" step_bench
    ;;
esac
python3 "$root/scripts/gpu/report.py" summarise --work "$work" --json "$out_dir/gpu-check.json" \
  --text "$out_dir/gpu-check.txt"
