#!/usr/bin/env bash
# The GPU check in one call: environment, GPU-path correctness, pipeline and trainer
# throughput on shards it makes on the spot. See benchmarks/README.md, "GPU check".
#
#   bash benchmarks/gpu_check.sh             on the GPU host; writes $OUT/gpu_check.{log,json}
#   bash benchmarks/gpu_check.sh --dry-run   the same steps on the CPU, tiny sizes ($OUT optional)
#
# Installs nothing from the network. Where DALI or the small pure-Python deps are not
# importable, it installs them from what was staged under .device/ (DALI's parts from
# ../shared/tools/stage-dali-wheels, the rest from benchmarks/stage_gpu_deps.sh) into
# /tmp/site; whatever is still missing is reported and its steps skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dry=""
[[ "${1:-}" == "--dry-run" ]] && dry="--dry-run"

if [[ -z "$dry" && -z "${OUT:-}" ]]; then
  echo "gpu_check: set OUT to the folder for the log and JSON (or pass --dry-run)" >&2
  exit 2
fi
OUT=${OUT:-$(mktemp -d -t gpu_check_out.XXXXXX)}
mkdir -p "$OUT"
work=$(mktemp -d -t gpu_check_work.XXXXXX)
trap 'rm -rf "$work"' EXIT
log="$OUT/gpu_check.log"

# The repo's venv where there is one (this project's machines); python3 on the GPU host.
PYTHON=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

{
  echo "== gpu_check $(date -u +%FT%TZ) ${dry:-(GPU)} commit $(git rev-parse --short HEAD 2>/dev/null || echo none)"
  nvidia-smi 2>/dev/null || echo "nvidia-smi: not available"
  echo "python: $($PYTHON -V 2>&1) ($PYTHON), cpus: $(nproc)"

  importable() { "$PYTHON" -c "import $1" >/dev/null 2>&1; }
  site=/tmp/site
  t0=$SECONDS
  if ! importable nvidia.dali && compgen -G ".device/parts/part-*" >/dev/null; then
    # The header of ../shared/tools/stage-dali-wheels: all parts, concatenated, are one tar.
    echo "== installing DALI from $(ls .device/parts/part-* | wc -l) staged parts"
    mkdir -p /tmp/w && cat .device/parts/part-* | tar -x -C /tmp/w &&
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" /tmp/w/*.whl ||
      echo "DALI install failed (parts missing or incomplete?): continuing without DALI"
    export PYTHONPATH="$PYTHONPATH:$site"
  fi
  if ! { importable webdataset && importable simplejpeg; } && compgen -G ".device/pydeps/*.whl" >/dev/null; then
    echo "== installing staged wheels: $(cd .device/pydeps && ls *.whl | tr '\n' ' ')"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site/deps" .device/pydeps/*.whl ||
      echo "staged wheels did not install"
    export PYTHONPATH="$PYTHONPATH:$site/deps"
  fi
  echo "== staging took $((SECONDS - t0)) s"
  # SIGINT at the limit lets the check record the step it was in and print what it has;
  # its own deadline (gpu_check.py) normally ends it well before.
  timeout -s INT -k 30 "${GPU_CHECK_LIMIT_S:-420}" "$PYTHON" benchmarks/gpu_check.py --out "$OUT" --work "$work" $dry
} 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
echo "gpu_check: exit $rc; log and JSON in $OUT" >&2
exit "$rc"
