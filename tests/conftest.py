"""Test-session settings shared by every test module.

Property-based tests draw their examples from a fixed seed by default (profile ``ci``), so a CI run is
reproducible: the same commit passes or fails the same way on every machine. ``HYPOTHESIS_PROFILE=explore``
draws fresh random examples (and more of them) when hunting for new counterexamples locally.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, max_examples=200, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
