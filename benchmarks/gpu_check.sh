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
# the run's scratch folder; whatever is still missing is reported and its steps skipped.
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
  stage=${GPU_CHECK_STAGE:-.device}  # what stage-dali-wheels and stage_gpu_deps.sh wrote
  site="$work/site"
  t0=$SECONDS
  wheels=()
  if ! importable nvidia.dali && compgen -G "$stage/parts/part-*" >/dev/null; then
    # The header of ../shared/tools/stage-dali-wheels: all parts, concatenated, are one tar.
    echo "== unpacking DALI from $(ls "$stage"/parts/part-* | wc -l) staged parts (5 expected)"
    if mkdir -p "$work/w" && cat "$stage"/parts/part-* | tar -x -C "$work/w"; then
      wheels+=("$work"/w/*.whl)
    else
      echo "DALI parts missing or incomplete: continuing without DALI"
    fi
  fi
  if (( ${#wheels[@]} )) || ! { importable webdataset && importable simplejpeg; }; then
    compgen -G "$stage/pydeps/*.whl" >/dev/null && wheels+=("$stage"/pydeps/*.whl)
  fi
  if (( ${#wheels[@]} )); then
    echo "== installing ${#wheels[@]} wheels into $site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" "${wheels[@]}" ||
      echo "wheel install failed: the check reports what is missing"
    export PYTHONPATH="$PYTHONPATH:$site"
    # nvJPEG and nvImageCodec's libraries (nvidia/cu13/lib) for DALI's dlopen.
    libs=$(find "$site" -type d -path '*nvidia/cu13/lib' 2>/dev/null | paste -sd:)
    [[ -n "$libs" ]] && export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  echo "== staging took $((SECONDS - t0)) s"
  # SIGINT at the limit lets the check record the step it was in and print what it has;
  # its own deadline (gpu_check.py) normally ends it well before.
  timeout -s INT -k 30 "${GPU_CHECK_LIMIT_S:-450}" "$PYTHON" benchmarks/gpu_check.py --out "$OUT" --work "$work" $dry
} 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
echo "gpu_check: exit $rc; log and JSON in $OUT" >&2
exit "$rc"
