"""Sweeps: definitions (``definition``, ``definitions/*.toml``), the per-run task (``task``), the runner
(``runner``) and its executors (``executors``: local processes; ``ray``), ``sweep.json`` (``manifest``),
the summary, the verdict and the remove-one attribution.
"""
