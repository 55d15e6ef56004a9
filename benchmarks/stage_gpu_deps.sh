#!/usr/bin/env bash
# Stages the project's small dependencies that the GPU host lacks (no network there), as
# Python 3.12 x86-64 wheels under .device/pydeps (git-ignored; ~0.5 MB). The GPU check
# (benchmarks/gpu_check.sh) installs them into /tmp/site when it finds them missing.
# Usage, from the project's root: bash benchmarks/stage_gpu_deps.sh   (needs pip and the network here)
# What the host already has (numpy, pillow, opencv, scikit-image, scikit-learn, pyyaml,
# tqdm, torch, torchvision) is not staged; DALI and everything it needs (its declared
# requirements, nvImageCodec's decoders, the real nvJPEG) is ../shared/tools/stage-dali-wheels'
# job, listed in .device/wheels/REQUIREMENTS.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.device/pydeps
mkdir -p "$dest"
rm -f "$dest"/*.whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do platforms+=(--platform "$p"); done
# simplejpeg: preprocess's JPEG decoder; webdataset (+ braceexpand): the pipeline's format.
${PYTHON:-python3} -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$dest" simplejpeg==1.9.0 webdataset==1.0.2 braceexpand==0.1.7
du -sh "$dest"; ls "$dest"
