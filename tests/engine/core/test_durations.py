"""Durations in words, for messages people read."""

from __future__ import annotations

import pytest

from assay.engine._core._durations import describe_duration


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (2_592_000, "30 days"),
        (86_400, "1 day"),
        (300, "5 minutes"),
        (3_600, "1 hour"),
        (5_400, "90 minutes"),
        (90, "90 seconds"),
        (1, "1 second"),
        (0.5, "0.5 seconds"),
        (129_600.0 + 1, "1.5 days"),
        (7_404, "2.1 hours"),
    ],
)
def test_durations_in_words(seconds: float, words: str) -> None:
    assert describe_duration(seconds) == words
