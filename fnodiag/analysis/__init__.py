"""Judging runs from their records: outcomes (``outcome``), asked-vs-got settings (``audit``) and
per-layer arm comparison (``compare``). Pure functions over run folders; no Lightning.
"""
