"""Test-wide set-up: where the datasets are.

``$LSR_DATA`` if set, else ``../shared/data`` beside the checkout, else the SciFact copy in
``tests/data`` (decided once here, before any test module reads ``LSR_DATA``).
"""

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]

if not os.environ.get("LSR_DATA"):
    _shared = _ROOT.parent / "shared" / "data"
    os.environ["LSR_DATA"] = str(_shared if (_shared / "beir" / "scifact").exists() else _ROOT / "tests" / "data")
