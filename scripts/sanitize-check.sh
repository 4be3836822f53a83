#!/usr/bin/env bash
# The sanitizer and fuzzing check (CI runs it; see .ci/run): one clang build with AddressSanitizer
# + UndefinedBehaviorSanitizer + libFuzzer instrumentation (MING_FUZZ) into build-sanitize/, then
#   1. the unit tier of the test suite under the sanitizers (the replay of every kept fuzz
#      regression input included), and
#   2. every fuzzer in fuzz/targets for MING_FUZZ_SECONDS (default 30) from its seed corpus.
# Any sanitizer report, crash, leak-free abort or fuzzer finding fails the check; a fuzzer's
# crashing input is left in build-sanitize/fuzz/findings/<target>/ (keep it in
# fuzz/regressions/<target>/ once fixed). The last line sums up like ctest's.
#
#   scripts/sanitize-check.sh                       # build, unit tier, all fuzzers
#   MING_FUZZ_SECONDS=120 scripts/sanitize-check.sh tokenizer_json safetensors   # some fuzzers
#   MING_SANITIZE_STEPS=build,unit scripts/sanitize-check.sh                     # no fuzzing
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${SANITIZE_BUILD_DIR:-$root/build-sanitize}
seconds=${MING_FUZZ_SECONDS:-30}
steps=${MING_SANITIZE_STEPS:-build,unit,fuzz}
export MING_DATA=${MING_DATA:-$root/../shared/data}
start=$SECONDS

# clang and its sanitizer/fuzzer runtimes, besides what scripts/setup.sh installs.
packages=(clang libclang-rt-14-dev llvm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "sanitize-check: installing ${missing[*]}" >&2
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# Findings abort at once; libtorch's own allocations at exit are not ours to chase (no leak
# check), and symbolized stacks need llvm-symbolizer (package llvm).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_odr_violation=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
command -v llvm-symbolizer >/dev/null && export ASAN_SYMBOLIZER_PATH=$(command -v llvm-symbolizer)

jobs=$(nproc 2>/dev/null || echo 2)
mem_gb=$(awk '/MemAvailable/ {print int($2/1048576)}' /proc/meminfo 2>/dev/null || echo 8)
(( jobs > mem_gb / 3 && mem_gb >= 3 )) && jobs=$(( mem_gb / 3 ))
(( jobs < 1 )) && jobs=1

if [[ ,$steps, == *,build,* ]]; then
  generator=()
  command -v ninja >/dev/null && [[ ! -f "$build_dir/Makefile" ]] && generator=(-G Ninja)
  CC=clang CXX=clang++ cmake -S "$root" -B "$build_dir" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Sanitize -DCMAKE_CXX_FLAGS_SANITIZE="-O1 -gline-tables-only" \
    -DMING_FUZZ=ON ${Torch_DIR:+-DTorch_DIR="$Torch_DIR"} ${MING_CMAKE_ARGS:-} >/dev/null
  echo "sanitize-check: building in $build_dir with $jobs jobs" >&2
  cmake --build "$build_dir" -j "$jobs"
fi

failures=()
if [[ ,$steps, == *,unit,* ]]; then
  # The unit tier: ctest's "unit" label when the suite has it, else the test files that read no
  # data folder (none of their lines, nor the test headers they include, mention data_dir).
  cd "$build_dir"
  if ctest -N -L unit 2>/dev/null | grep -q "Total Tests: [1-9]"; then
    ctest --output-on-failure -j "$jobs" -L unit || failures+=("unit tier")
  else
    data_headers=$(cd "$root/tests" && grep -l 'data_dir()' -- *.h || true)
    files=()
    for f in "$root"/tests/test_*.cpp; do
      grep -q 'data_dir()' "$f" && continue
      uses_data=0
      for h in $data_headers; do grep -q "#include \"$h\"" "$f" && uses_data=1; done
      ((uses_data)) || files+=("*$(basename "$f")")
    done
    filter=$(IFS=,; echo "${files[*]}")
    echo "sanitize-check: unit tier = ${#files[@]} data-free test files" >&2
    tests/ming-tests --source-file="$filter" --no-intro || failures+=("unit tier")
  fi
  cd "$root"
fi

if [[ ,$steps, == *,fuzz,* ]]; then
  corpus=$build_dir/fuzz/corpus
  MING_FUZZ_SEED_WRITER=$build_dir/fuzz/fuzz-seed-writer "$root/scripts/fuzz-seeds" "$corpus" \
    "$MING_DATA"
  targets=("$@")
  if ((${#targets[@]} == 0)); then
    for f in "$root"/fuzz/targets/*.cpp; do targets+=("$(basename "$f" .cpp)"); done
  fi
  for t in "${targets[@]}"; do
    mkdir -p "$corpus/$t" "$build_dir/fuzz/findings/$t"
    log=$build_dir/fuzz/$t.log
    echo "sanitize-check: fuzz-$t for ${seconds}s" >&2
    if "$build_dir/fuzz/fuzz-$t" "$corpus/$t" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
      -artifact_prefix="$build_dir/fuzz/findings/$t/" >"$log" 2>&1; then
      grep -E '^stat::number_of_executed_units|cov: ' "$log" | tail -2 | tr '\n' ' ' >&2
      echo >&2
    else
      echo "sanitize-check: fuzz-$t FOUND A PROBLEM (input in $build_dir/fuzz/findings/$t/):" >&2
      grep -E 'ERROR|runtime error|==[0-9]+==|terminate|what\(\)' "$log" | head -15 >&2 || true
      failures+=("fuzz-$t")
    fi
  done
fi

took=$((SECONDS - start))
if ((${#failures[@]})); then
  echo "sanitize-check: FAILED (${failures[*]}) in $((took / 60))m$((took % 60))s"
  exit 1
fi
echo "sanitize-check: passed (${steps}) in $((took / 60))m$((took % 60))s"
