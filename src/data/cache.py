"""On-disk cache helpers: content hashes and atomic writes.

Several processes (DDP ranks, dataloader workers, two engineers' runs) may build the same cached artefact at
once. Every writer writes to a unique temporary file in the target directory and `os.replace`s it into place,
so a reader never sees a half-written file and the last identical writer simply wins.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class Hasher:
    """Incremental sha256 over a sequence of parts; each part is length-prefixed so ("ab","c") != ("a","bc")."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, part: str | bytes) -> Hasher:
        data = part.encode("utf-8") if isinstance(part, str) else part
        self._h.update(len(data).to_bytes(8, "little"))
        self._h.update(data)
        return self

    def update_json(self, obj: Any) -> Hasher:
        return self.update(json.dumps(obj, sort_keys=True, default=str))

    def update_all(self, parts: Iterable[str | bytes]) -> Hasher:
        for p in parts:
            self.update(p)
        return self

    def hexdigest(self, n: int = 16) -> str:
        return self._h.hexdigest()[:n]


def file_digest(path: str | os.PathLike) -> str:
    """Content identity of a local file for cache keys: sha256 of its bytes, read in 1 MiB blocks.

    Content, not path+size+mtime: a file rewritten with the same bytes (a re-export, a `cp`, a checkout) keeps its
    key, so it is neither re-tokenized nor reported as other data on resume, and an edit that keeps size and mtime
    still changes the key. The sources read every byte anyway, so the extra pass costs little next to parsing.
    """
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _umask() -> int:
    """The process umask, read without changing it where Linux tells it (os.umask alone must set it to read it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _publish(tmp: str, path: Path) -> None:
    """Give the temp file the permissions a plain `open(path, "w")` would (mkstemp makes it 0600, which would hide
    a shared cache's tokenizers and corpora from other users), then move it into place."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` so that concurrent readers see either nothing or the complete file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_lines(path: str | os.PathLike, lines: Iterable[str]) -> Path:
    """Atomically write an iterable of lines (each gets a trailing newline) without building one big string."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line)
                f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
