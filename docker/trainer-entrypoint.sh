#!/bin/sh
# Entrypoint of the compose `trainer` service: make sure there are shards, then exec the
# service's command (torchrun ... -m trainer train ...).
#
# ImageNet shards are written into the shards volume by the one-shot service
#   docker compose --profile preprocess run --rm preprocess
# Without them the trainer does not fail: it builds the demo corpus once (photos that the
# installed packages ship) and appends the demo configuration's flags, which override the
# command's --data/--run-dir and size the model for it (argparse keeps the last value).
# DEMO_ONLY=1 trains the demo corpus even where ImageNet shards are (the CPU variant).
set -eu

imagenet_shards="${IMAGENET_SHARDS:-/data/shards/imagenet}"
if [ "${DEMO_ONLY:-0}" = 1 ]; then
  # docker-compose.cpu.yml: the full net on ImageNet is weeks on a CPU, even with shards.
  echo "trainer-entrypoint: DEMO_ONLY=1 (the CPU variant): training the demo corpus" >&2
elif [ -f "$imagenet_shards/dataset.json" ]; then
  exec "$@"
else
  echo "trainer-entrypoint: no ImageNet shards at $imagenet_shards;" \
       "training the demo corpus instead (run the preprocess profile for the real thing)" >&2
fi
# trainer.demo owns the demo configuration; --prepare builds what is missing and prints
# the flags on stdout (paths without spaces, so word splitting is safe here).
demo_flags="$(python -m trainer.demo --prepare --workdir "${DEMO_ROOT:-/data/shards/demo}" \
  --runs-dir "${RUNS_ROOT:-/data/runs}" --device "${DEMO_DEVICE:-cuda}" ${DEMO_PREPARE_ARGS:-})"
# shellcheck disable=SC2086
exec "$@" $demo_flags
