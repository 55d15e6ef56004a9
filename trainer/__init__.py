"""Train AlexNet on prepared shards, analyse the result, and serve the progress page.

Sub-packages (the rooms; docs/architecture.md draws them):
  run        the training run, `trainer train`
  analysis   the paper's analysis tools: `trainer evaluate|predict|neighbors|filters|experiment`
  demo       `make demo`: the demo and its process supervisor
  runstore   the run store (SQLite) and the run dir's lock: where the run and the server meet
  server     `trainer serve`: the progress page, the REST API and /metrics
cli.py maps each subcommand to its module and imports it only when chosen.

May import: common, preprocess, pipeline (never the other way). Inside, the arrows go one
way: run <- analysis; server <- demo; runstore <- run, runstore <- server, runstore <- demo;
server and runstore import no domain package (only common) and never torch, trainer.run
or trainer.analysis (docs/architecture.md's diagram; tests/test_import_graph.py).
"""
