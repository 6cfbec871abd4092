"""Cache files are written atomically and are readable by whoever may read the cache directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from src.data.cache import atomic_write_bytes, atomic_write_lines


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_get_the_umask_permissions_of_a_plain_write(tmp_path: Path, umask: int) -> None:
    """mkstemp's 0600 would leave a shared cache's tokenizer and corpus files unreadable to the rest of the team."""
    old = os.umask(umask)
    try:
        with open(tmp_path / "plain", "w") as f:
            f.write("x")
        a = atomic_write_bytes(tmp_path / "sub" / "a.bin", b"abc")
        b = atomic_write_lines(tmp_path / "b.txt", ["one", "two"])
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert want == 0o666 & ~umask
    assert stat.S_IMODE(a.stat().st_mode) == want and stat.S_IMODE(b.stat().st_mode) == want
    assert a.read_bytes() == b"abc" and b.read_text() == "one\ntwo\n"
    assert not list(tmp_path.rglob("*.tmp"))  # no temp file left behind
