"""Parts of `benchmarks/scale_bench.py`: the synthetic corpora, the memory probes, the measurements."""
