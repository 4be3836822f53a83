#!/usr/bin/env bash
# Builds ming (installing its Debian dependencies when missing) and runs the whole test suite.
# The last line is ctest's summary ("100% tests passed, 0 tests failed out of N").
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -R tokenizer    # extra arguments go to ctest
# Tests read the real data in ../shared/data; set MING_DATA to use another copy.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
build_dir=${BUILD_DIR:-$root/build}
export MING_DATA=${MING_DATA:-$root/../shared/data}
cd "$build_dir"
ctest --output-on-failure -j "$(nproc 2>/dev/null || echo 2)" "$@"
