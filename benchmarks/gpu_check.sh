#!/usr/bin/env bash
# The GPU check in one call: environment, GPU-path correctness, pipeline and trainer
# throughput on shards it makes on the spot. See benchmarks/README.md, "GPU check".
#
#   bash benchmarks/gpu_check.sh [--budget S]   on the GPU host; writes $OUT/gpu_check.{log,json}
#                                               and $OUT/steps/NN_step.json as each step ends
#   bash benchmarks/gpu_check.sh --dry-run      the same steps on the CPU, tiny sizes ($OUT optional)
#   bash benchmarks/gpu_check.sh --stage-only   unpack and install what is staged, import DALI, stop
#
# --budget S: the seconds the check may take after staging (default 450). Its Python skips
# a step whose estimate does not fit in what is left, and is interrupted at S (what
# finished is on disk by then).
#
# Installs nothing from the network. Where DALI or the small pure-Python deps are not
# importable, it installs them from what was staged under .device/ (DALI's parts from
# ../shared/tools/stage-dali-wheels, the rest from benchmarks/stage_gpu_deps.sh) into
# the run's scratch folder; whatever is still missing is reported and its steps skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dry="" stage_only="" budget=${GPU_CHECK_LIMIT_S:-450}
while (( $# )); do
  case "$1" in
    --dry-run) dry="--dry-run" ;;
    --stage-only) stage_only=1 ;;
    --budget) budget=${2:?--budget needs seconds}; shift ;;
    *) echo "gpu_check: unknown argument $1 (--dry-run, --stage-only, --budget S)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$budget" =~ ^[0-9]+$ ]] && (( budget >= 30 )) || { echo "gpu_check: --budget is whole seconds, at least 30" >&2; exit 2; }

if [[ -z "$dry" && -z "$stage_only" && -z "${OUT:-}" ]]; then
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
  if [[ -n "$stage_only" ]]; then
    # The rehearsal of a device's first call: what the check would import, from what was staged.
    "$PYTHON" -c 'import nvidia.dali as d, webdataset, simplejpeg; print("staged imports ok: DALI", d.__version__)'
    exit $?
  fi
  # SIGINT at the limit lets the check record the step it was in and print what it has;
  # its own deadline (gpu_check.py) normally ends it well before.
  # The Python's own deadline leaves 15 s of the budget for the table and the teardown.
  timeout -s INT -k 15 "$budget" "$PYTHON" benchmarks/gpu_check.py --out "$OUT" --work "$work" $dry \
    --budget $((budget - 15))
} 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
echo "gpu_check: exit $rc; log and JSON in $OUT" >&2
exit "$rc"
