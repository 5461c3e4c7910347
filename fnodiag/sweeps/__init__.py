"""Sweeps: definitions (``definitions/*.toml``), the per-run task, the runner and its executors
(local processes or Ray), ``sweep.json``, the summary, the verdict and the remove-one attribution.
"""
