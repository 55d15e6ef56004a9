"""The training run: `trainer train` from flags to the last checkpoint.

Owns the model (model, lrn), the optimizer and its schedule (optim, lr_policy), the step
and the loop (step, train), the run's config and loaders (config, loaders), the process
group (distributed), checkpoints and resuming (checkpoint, resume, finetune), the run's
records as the loop writes them (session, progress, storeguard, trace), operator commands
(commands), the loop's validation (validation) and the run's filters.png (filters).

May import: preprocess, pipeline, trainer.runstore. Never trainer.analysis, trainer.demo
or trainer.server: those build on the run (docs/architecture.md;
tests/test_import_graph.py checks it).
"""
