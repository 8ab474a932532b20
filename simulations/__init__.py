"""simulations: Monte Carlo of DP-SGD on synthetic basins (numba) and on real networks (PyTorch).

Simulations never plot: command-line experiments write result folders, and ``paper/`` draws them.
"""
