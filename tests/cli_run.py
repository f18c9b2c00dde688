"""Running the `modelmon` command as a user does, for the CLI tests of every stage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def modelmon(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m modelmon ARGS` with no MODELMON_* variables leaking in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELMON_")}
    return subprocess.run(
        [sys.executable, "-m", "modelmon", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
