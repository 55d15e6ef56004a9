"""`make demo` (`python -m trainer.demo`): build a corpus, shard it, train on it and serve
the page, as child processes of one supervisor (launcher, supervisor).

It drives the other rooms through their command lines (`preprocess`, `trainer train`,
`trainer serve`), so it imports little of them. May import: preprocess, pipeline,
trainer.run, trainer.runstore, trainer.server (the token file). Nothing imports this
package (tests/test_import_graph.py).
"""
