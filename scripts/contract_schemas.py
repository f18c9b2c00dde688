"""Write the contract's JSON Schema files and OpenAPI component from modelmon/events.py.

Usage: python scripts/contract_schemas.py [--check]. `--check` writes nothing and
exits 1 when a committed file differs from what the definition generates
(tests/core/test_schemas.py runs the same comparison).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelmon.schemagen import outputs, stale  # noqa: E402


def main(argv: list[str]) -> int:
    if argv not in ([], ["--check"]):
        print("usage: python scripts/contract_schemas.py [--check]", file=sys.stderr)
        return 2
    if argv == ["--check"]:
        old = stale()
        for path in old:
            print(f"stale: {path} (run python scripts/contract_schemas.py)", file=sys.stderr)
        return 1 if old else 0
    for path, text in outputs().items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
