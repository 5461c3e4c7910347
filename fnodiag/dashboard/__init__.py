"""The Panel dashboard over a runs folder: one param store (``store``), thin views, live tails.

Served by ``panel serve app`` (``app/main.py`` only imports it) and by ``fnodiag serve``. It only
reads run folders and starts training as separate processes; it never imports Lightning.
"""
