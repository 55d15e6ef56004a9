#!/bin/sh
# Entrypoint of the compose `trainer` service: make sure there are shards, then exec the
# service's command (torchrun ... -m trainer train ...).
#
# ImageNet shards are written into the shards volume by the one-shot service
#   docker compose --profile preprocess run --rm preprocess
# Without them the trainer does not fail: it builds the demo corpus once (photos that the
# installed packages ship) and appends the demo configuration's flags, which override the
# command's --data/--run-dir and size the model for it (argparse keeps the last value).
set -eu

imagenet_shards="${IMAGENET_SHARDS:-/data/shards/imagenet}"
if [ -f "$imagenet_shards/dataset.json" ]; then
  exec "$@"
fi

echo "trainer-entrypoint: no ImageNet shards at $imagenet_shards;" \
     "training the demo corpus instead (run the preprocess profile for the real thing)" >&2
# trainer.demo owns the demo configuration; --prepare builds what is missing and prints
# the flags on stdout (paths without spaces, so word splitting is safe here).
demo_flags="$(python -m trainer.demo --prepare --workdir "${DEMO_ROOT:-/data/shards/demo}" \
  --runs-dir "${RUNS_ROOT:-/data/runs}" --device "${DEMO_DEVICE:-cuda}" ${DEMO_PREPARE_ARGS:-})"
# shellcheck disable=SC2086
exec "$@" $demo_flags
