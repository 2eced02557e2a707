"""Files the library writes: readable with the user's umask, strict JSON (no NaN)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from metapose.files import write_json_atomic


def test_json_gets_the_umask_and_null_for_nan(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "table.json", {"ap": math.nan, "rows": [1.5, math.inf]})
    finally:
        os.umask(old)
    path = tmp_path / "table.json"
    assert path.stat().st_mode & 0o777 == 0o644
    text = path.read_text()
    assert json.loads(text, parse_constant=lambda c: 1 / 0) == {"ap": None, "rows": [1.5, None]}
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]  # no temporary left
