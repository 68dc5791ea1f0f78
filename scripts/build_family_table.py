#!/usr/bin/env python3
"""Write the family x node table of tests/family_matrix.py between README.md's family-table markers.

    python scripts/build_family_table.py
tests/test_families.py runs every cell of the table and fails when README.md is not what this script writes.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from family_matrix import with_section  # noqa: E402


def main() -> None:
    readme = ROOT / "README.md"
    readme.write_text(with_section(readme.read_text(encoding="utf-8")), encoding="utf-8")


if __name__ == "__main__":
    main()
