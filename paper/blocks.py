"""Generated blocks inside hand-written markdown: the text between a begin and an end marker.

The docs and the README carry blocks rendered from result files (``paper.claims_doc``,
``paper.basin_doc``, ``paper.readme``); each replaces its own block and leaves the prose around it.
"""

from __future__ import annotations


def replace_block(text: str, block: str, *, begin: str, end: str) -> str:
    """``text`` with the span from ``begin`` to ``end`` replaced by ``block`` (which carries the markers).

    ValueError if either marker is missing.

    Example:
        >>> replace_block("a <!-- b --> old <!-- e --> z", "<!-- b --> new <!-- e -->", begin="<!-- b -->",
        ...               end="<!-- e -->")
        'a <!-- b --> new <!-- e --> z'
    """
    if begin not in text or end not in text:
        raise ValueError(f"markdown has no {begin} ... {end} block")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return head + block + tail
