"""README's "What is measured so far" quotes only numbers that the results documents hold, so the two cannot
drift apart: every decimal number in that section must appear in docs/results*.md or docs/benchmarks.md, as
written or as a more precise number that rounds to it (README's 40.6 for the table's 40.61)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DECIMAL = re.compile(r"(?<![\w.])[+-]?\d+\.\d+")


def measured_section(readme: str) -> str:
    start = readme.index("## What is measured so far")
    end = readme.index("\n## ", start + 1)
    return readme[start:end]


def numbers(text: str) -> set[str]:
    """Decimal numbers without sign (a difference is quoted as -0.20 in one place and 0.20 in another)."""
    return {match.lstrip("+-") for match in DECIMAL.findall(text)}


def held(quoted: str, corpus: set[str]) -> bool:
    """Whether a corpus number is ``quoted`` or rounds to it at ``quoted``'s precision."""
    places = len(quoted.split(".")[1])
    return any(
        round(float(number), places) == float(quoted) for number in corpus if len(number.split(".")[1]) >= places
    )


def test_every_number_in_readmes_measured_section_is_in_the_results_documents():
    section = measured_section((REPO / "README.md").read_text())
    documents = [*sorted((REPO / "docs").glob("results*.md")), REPO / "docs" / "benchmarks.md"]
    corpus = numbers("\n".join(path.read_text() for path in documents))
    quoted = numbers(section)
    assert len(quoted) > 30  # the section quotes its numbers: the check has something to hold
    missing = sorted((q for q in quoted if not held(q, corpus)), key=float)
    assert not missing, f"README quotes numbers no results document holds: {missing}"


def test_the_check_catches_a_number_that_is_nowhere():
    corpus = numbers("CNN 72.07 ± 0.36, plain ANN 40.61")
    assert held("72.07", corpus) and held("40.6", corpus) and not held("72.2", corpus) and not held("3.14", corpus)
