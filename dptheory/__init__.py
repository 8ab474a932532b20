"""dptheory: analytical models of clipped, noisy gradient descent on quadratic and low-rank basins.

Pure functions of numbers and arrays (no I/O, no plotting, no global state). See NOTATION.md for
the map from paper symbols to argument names.
"""

from dptheory.records import Basin, LinearDynamics, Mode, Optimizer

__all__ = ["Basin", "LinearDynamics", "Mode", "Optimizer"]
