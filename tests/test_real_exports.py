"""doccano.py on exports downloaded from the real tools (doccano 1.8.4, Label Studio 1.23.2) by the live
round trip (tests/live/): every format converts to exactly the files that round trip expects, so the
regular suite checks the real formats without the tools."""
from __future__ import annotations

import pytest

from live.round_trip import DOCCANO_DIR, FORMAT_OF, LABEL_STUDIO_DIR, check_conversion

REAL_EXPORTS = sorted(path for folder in (DOCCANO_DIR, LABEL_STUDIO_DIR) if folder.is_dir()
                      for path in folder.iterdir() if path.name in FORMAT_OF)


def test_every_real_format_is_committed():
    assert sorted(path.name for path in REAL_EXPORTS) == sorted(FORMAT_OF)


@pytest.mark.parametrize("export", REAL_EXPORTS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_real_export_converts_to_the_expected_files(export, tmp_path):
    check_conversion(export, tmp_path / "out")
