#!/usr/bin/env bash
# Installs Hugging Face's reference Jinja renderer, @huggingface/jinja (pinned), into DIR, for the
# chat-template parity test (tests/test_jinja.cpp). Usage: install.sh DIR. Does nothing when that
# version is already there; exits 3 when node or npm is missing, so the test can tell "not
# installable here" from "install failed".
set -euo pipefail
version=0.5.11
dir=${1:?usage: install.sh DIR}
package="$dir/node_modules/@huggingface/jinja/package.json"
if [ -f "$package" ] && grep -q "\"version\": \"$version\"" "$package"; then exit 0; fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "install.sh: node and npm are needed to install @huggingface/jinja" >&2
  exit 3
fi
mkdir -p "$dir"
npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error "@huggingface/jinja@$version" >&2
