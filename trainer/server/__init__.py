"""`trainer serve`: the progress page, the REST API and /metrics, over the run store.

Owns the FastAPI app (app, routes/, deps, middleware), its settings and auth, and the
views of a run it computes from the store (summary, prometheus, seriescache, storehealth).
May import: trainer.runstore (the store, the run dir's lock) and common (exit codes,
argument types); never torch, preprocess, pipeline, trainer.run, trainer.analysis or
trainer.demo: the control server
must start in a second on a host without a GPU stack (tests/test_import_graph.py).
"""
