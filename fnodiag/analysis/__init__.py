"""Judging runs from their records: outcomes (``outcome``), asked-vs-got settings (``audit``),
per-layer arm comparison (``compare``) and ranked findings with links to their evidence (``findings``).
Pure functions over run folders; no Lightning.
"""
