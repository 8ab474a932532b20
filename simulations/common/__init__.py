"""Run machinery shared by every experiment: command lines, result folders, statistics, tables, sweeps.

=============  ====================================================================================
module         what it owns
=============  ====================================================================================
``cli``        command lines generated from one frozen config dataclass; bad input → one line, exit 2
``results``    atomic result folders (``config.json``, ``metrics.json``, ``metrics.npz``, ``env.json``)
``stats``      standard errors (batch means, replicas, seeds), paired differences, rank correlation
``tables``     plain-text tables and number formatting
``sweep``      sweep grids and per-run seeds
=============  ====================================================================================

Nothing here simulates, trains or plots.
"""
