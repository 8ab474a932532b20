"""The four claim experiments and the theory check, each a frozen config → CLI → result folder.

========  ===========================================================  ===========================
command   question (claim of arXiv 2311.06839v1)                        module
========  ===========================================================  ===========================
switch    1: does the late phase decide? (switch SGD ↔ DP-SGD at s)     ``experiments.switch``
ablate    2: clipping vs noise; recovery from a noise burst             ``experiments.ablate``
width     3: does the penalty grow with the parameter count d?         ``experiments.width``
prune     4: does magnitude pruning help DP-SGD?                        ``experiments.prune``
validate  theory (``dptheory.clipped_dynamics``) vs measured excess     ``experiments.validate``
========  ===========================================================  ===========================

All runs go through ``simulations.nn.train.train``; runs with the same seed are paired.
"""
