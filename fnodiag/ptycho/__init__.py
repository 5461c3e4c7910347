"""The ptychography domain: grid_lines simulation (``simulate``), the physics forward model and losses
(``forward``), reconstruction metrics and the constant-output fingerprint (``metrics``).

Numpy and torch only; nothing here knows about runs, training or the dashboard.
"""
