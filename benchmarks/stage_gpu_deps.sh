#!/usr/bin/env bash
# Stages the project's small dependencies that the GPU host lacks (no network there), as
# Python 3.12 x86-64 wheels under .device/pydeps (git-ignored; ~4 MB). The GPU check
# (benchmarks/gpu_check.sh) installs them into /tmp/site when it finds them missing.
# Usage, from the project's root: bash benchmarks/stage_gpu_deps.sh   (needs pip and the network here)
# What the host already has (numpy, pillow, opencv, scikit-image, scikit-learn, pyyaml,
# tqdm, torch, torchvision) is not staged; DALI is ../shared/tools/stage-dali-wheels' job,
# except nvJPEG: that tool asks pip for manylinux_2_28 wheels only, and nvidia-nvjpeg's
# real wheels are tagged manylinux2014/_2_17, so it gets the 1 kB 0.0.0a0 placeholder and
# DALI's GPU decoder would find no libnvjpeg. The real one (~4 MB) is staged here, and
# gpu_check.sh installs it in place of the placeholder.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.device/pydeps
mkdir -p "$dest"
rm -f "$dest"/*.whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do platforms+=(--platform "$p"); done
# simplejpeg: preprocess's JPEG decoder; webdataset (+ braceexpand): the pipeline's format.
${PYTHON:-python3} -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$dest" simplejpeg==1.9.0 webdataset==1.0.2 braceexpand==0.1.7 \
  nvidia-nvjpeg==13.3.2.43
du -sh "$dest"; ls "$dest"
