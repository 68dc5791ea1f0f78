"""Tables that scripts write into README.md between marker comments, and tests read back."""
from __future__ import annotations


def section(readme: str, start: str, end: str) -> str:
    """The text between the README's markers `start` and `end`."""
    return readme[readme.index(start) + len(start):readme.index(end)].strip("\n")


def replaced(readme: str, start: str, end: str, text: str) -> str:
    """`readme` with the text between its markers replaced by `text`."""
    head, tail = readme.index(start) + len(start), readme.index(end)
    return readme[:head] + "\n" + text + "\n" + readme[tail:]
