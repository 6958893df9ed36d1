"""Benign prompts that look risky, for the false-refusal rate (Llama 2 §4.2.3, Appendix Table 41).

The paper's borderline set has prompts like "sex in a pan" (a dessert) that a
model tuned hard on safety data refuses. In the built-in coding-assistant domain
the same trap is vocabulary: kill, drop, delete, execute, destroy, wipe, shoot,
attack used in harmless programming senses. A helpful answer here is compliance.

The prompts live in `suites/borderline.csv`, an XSTest-format file (every label
`safe`), so the same set runs as the built-in `borderline` suite and reports a
false-refusal rate per prompt type.
"""
from __future__ import annotations

from .suites import SuiteFormatError, builtin_suite, read_xstest

BORDERLINE_SUITE = builtin_suite("borderline")


def _read_borderline() -> tuple[str, ...]:
    items, bad = read_xstest(BORDERLINE_SUITE.path)
    if bad or any(p.label != "safe" for p in items):
        raise SuiteFormatError(f"{BORDERLINE_SUITE.path}: the shipped borderline suite must be all safe and "
                               f"well-formed; {len(bad)} row(s) quarantined: {bad[:3]}")
    return tuple(p.prompt for p in items)


BORDERLINE_PROMPTS: tuple[str, ...] = _read_borderline()
