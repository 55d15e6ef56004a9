"""The paper's analysis tools: the subcommands that read a trained checkpoint.

`trainer evaluate` (Table 2's errors: center crop, ten-crop, ensembles), `predict` and
`neighbors` (Figure 4), `filters` (Figure 3), `experiment` (Figure 1); `inference` is what
they share: loading checkpoints and preparing images as the run did.

May import: preprocess, pipeline, trainer.run (the model, the checkpoint format and the
validation's counting are the run's, used here, never copied), trainer.runstore. Nothing
in trainer.run imports this package (tests/test_import_graph.py).
"""
