"""The fnodiag dashboard (``panel serve app``): a param store over :mod:`fnodiag.runs` and thin views.

Modules: ``catalog`` (what a runs folder holds, path checks), ``store`` (the selection store),
``live`` (store tails and streaming into Bokeh), ``views`` (Overview / Activations / Gradients),
``checkpoint`` (capture on demand), ``launch`` (start / stop ``fnodiag train`` processes),
``dashboard`` (one session's layout and tick), ``main`` (the served script).
"""
