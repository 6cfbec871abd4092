"""Load user text into a `datasets.Dataset`, validating every record once, with errors that name the fix.

A source spec is a plain dict (or a string path, short for `{kind: file, path: ...}`):

- `{kind: file, path: data/train.jsonl}`: a .txt / .jsonl / .json / .parquet file, a directory of them, or a
  glob. `.txt`: one document per blank-line-separated block (`txt_split: paragraph`, default) or per file
  (`txt_split: file`).
- `{kind: hf, name: roneneldan/TinyStories, config: null, split: train, data_files: null, revision: null}`:
  `datasets.load_dataset`; works offline (HF_DATASETS_OFFLINE=1) once the dataset is in the HF cache.
- `{kind: stories, n_docs: 20000, seed: 0}`: the generated quickstart corpus (`src/data/tasks/stories.py`).
- `{kind: records, records: [{text: ...}, ...]}`: in-memory records (tests, notebooks).

Only the fields the format reads are kept (`DataFormat.columns`, src/data/formats/: `text` for pretraining;
`prompt`/`response` or `messages` for SFT), so extra fields of any type never break Arrow schema inference. What a
valid record is, is the format's to say (`DataFormat.project`); this module only reads files and datasets.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import datasets
import numpy as np
import pyarrow.parquet as pq

from src.data.cache import Hasher, file_digest
from src.data.errors import DataError
from src.data.formats.base import DataFormat, Fields, FormatSettings
from src.data.formats.registry import get_format

TEXT_EXTS = (".txt",)
JSONL_EXTS = (".jsonl", ".json")
PARQUET_EXTS = (".parquet",)
SUPPORTED_EXTS = TEXT_EXTS + JSONL_EXTS + PARQUET_EXTS
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")


class RecordReader(Protocol):
    """What the readers need to know about a record: a `DataFormat` (src/data/formats/base.py) or another schema
    such as the skills records' `SkillFields`."""

    @property
    def columns(self) -> list[str]: ...  # the fields kept

    @property
    def txt_field(self) -> str | None: ...  # the field a .txt block fills; None = no .txt files

    @property
    def record_kind(self) -> str: ...  # how errors name these records ("SFT")

    def project(self, rec: Any, where: str) -> dict[str, Any]: ...  # validate, keep `columns`


def as_format(records: Fields | DataFormat) -> DataFormat:
    """The format object of `records`: itself, or the format `Fields.format` names built with default settings
    (enough to read and validate records)."""
    if isinstance(records, DataFormat):
        return records
    return get_format(records.format)(FormatSettings(fields=records))


@dataclass(frozen=True)
class Locations:
    """Where each record of a (shuffled, split) dataset came from, for errors raised long after loading.

    A record's position in a split says nothing to the user; "chats.jsonl line 30" does. `rows[i]` is the source
    row of the split's record i; `names[row]` its place in a local file, or `f"{prefix} {row}"` (HF datasets).
    Picklable and small (one int per record, plus the names of local-file records) for `datasets.map` workers.
    """

    prefix: str
    rows: np.ndarray  # [N] int64
    names: tuple[str, ...] | None = None

    def __call__(self, i: int) -> str:
        row = int(self.rows[i])
        return self.names[row] if self.names is not None else f"{self.prefix} {row}"

    def take(self, idx: np.ndarray) -> Locations:
        """The locations of `dataset.select(idx)`."""
        return replace(self, rows=self.rows[np.asarray(idx, dtype=np.int64)])

    @classmethod
    def of(cls, n: int, prefix: str, names: list[str] | None = None) -> Locations:
        return cls(prefix, np.arange(n, dtype=np.int64), tuple(names) if names is not None else None)


def locate(locations: Locations | None, i: int) -> str:
    """The name of record `i` in error messages: its file and line when known, else its position."""
    return locations(i) if locations is not None else f"record {i}"


@dataclass
class LoadedSource:
    dataset: datasets.Dataset
    fingerprint: str  # stable across runs when the underlying data did not change (tokenization cache key)
    origin: str  # human-readable name for error messages
    locations: Locations | None = field(default=None, repr=False)  # None: "record <position>"


# --- readers --------------------------------------------------------------------------------------------------
def _read_jsonl(path: str, fields: RecordReader) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, encoding="utf-8") as f:
        head = f.read(1)
        while head and head.isspace():
            head = f.read(1)
        f.seek(0)
        if head == "[":  # a .json file holding one array of records
            try:
                recs = json.load(f)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: invalid JSON ({e}); fix the file") from None
            for i, rec in enumerate(recs):
                where = f"{path} record {i}"
                yield where, fields.project(rec, where)
            return
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path} line {lineno}: invalid JSON ({e.msg} at column {e.colno}); fix the record"
                ) from None
            where = f"{path} line {lineno}"
            yield where, fields.project(rec, where)


def _read_txt(path: str, fields: RecordReader, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    text_field = fields.txt_field
    if text_field is None:
        raise DataError(
            f"{path}: .txt files hold pretraining text; {fields.record_kind} data must be .jsonl/.json/.parquet"
        )
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e}); re-encode the file as UTF-8") from None
    if split == "file":
        blocks = [text.strip()]
    elif split == "paragraph":
        blocks = [b.strip() for b in _BLANK_LINES.split(text.replace("\r\n", "\n"))]
    else:
        raise DataError(f"txt_split must be 'paragraph' or 'file', got {split!r}")
    for i, b in enumerate(x for x in blocks if x):
        yield f"{path} {'paragraph' if split == 'paragraph' else 'file'} {i}", {text_field: b}


def _read_parquet(path: str, fields: RecordReader) -> Iterator[tuple[str, dict[str, Any]]]:
    schema_names = pq.read_schema(path).names
    cols = [c for c in fields.columns if c in schema_names]
    if not cols:
        # let project() produce the standard "field missing" message for the first row
        rows = pq.read_table(path).slice(0, 1).to_pylist()
        for rec in rows:
            fields.project(rec, f"{path} row 0")
        return
    for i, rec in enumerate(pq.read_table(path, columns=cols).to_pylist()):
        where = f"{path} row {i}"
        yield where, fields.project(rec, where)


def _resolve_files(path: str) -> list[str]:
    if any(ch in path for ch in "*?["):
        files = sorted(glob.glob(path, recursive=True))
    elif os.path.isdir(path):
        files = sorted(str(p) for p in Path(path).iterdir() if p.suffix.lower() in SUPPORTED_EXTS)
    elif os.path.isfile(path):
        files = [path]
    else:
        raise DataError(f"data source path {path!r} does not exist (cwd: {os.getcwd()}); set data.source.path=...")
    files = [f for f in files if os.path.isfile(f)]
    bad = [f for f in files if Path(f).suffix.lower() not in SUPPORTED_EXTS]
    if bad:
        raise DataError(f"unsupported file type(s) {bad[:3]}; supported: {', '.join(SUPPORTED_EXTS)}")
    if not files:
        raise DataError(f"no {'/'.join(SUPPORTED_EXTS)} files match data source path {path!r}")
    return files


def _read_file(path: str, fields: RecordReader, txt_split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, record) pairs; `where` ("a.jsonl line 30") names the record in later errors (`Locations`)."""
    ext = Path(path).suffix.lower()
    if ext in TEXT_EXTS:
        return _read_txt(path, fields, txt_split)
    if ext in JSONL_EXTS:
        return _read_jsonl(path, fields)
    return _read_parquet(path, fields)


# --- entry point ----------------------------------------------------------------------------------------------
def normalize_spec(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """A plain-dict source spec (accepts a bare path string and OmegaConf nodes)."""
    if isinstance(spec, (str, os.PathLike)):
        return {"kind": "file", "path": str(spec)}
    if not isinstance(spec, Mapping):
        raise DataError(f"data.source must be a path or a mapping with a 'kind', got {type(spec).__name__}")
    out = to_plain(spec)
    out.setdefault("kind", "file" if "path" in out else None)
    if out["kind"] not in ("file", "hf", "stories", "records"):
        raise DataError(f"data.source.kind must be one of file|hf|stories|records, got {out['kind']!r}")
    return out


def to_plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) or (hasattr(obj, "__iter__") and type(obj).__name__ == "ListConfig"):
        return [to_plain(v) for v in obj]
    return obj


def load_source(spec: str | Mapping[str, Any], records: Fields | DataFormat, cache_dir: str | Path) -> LoadedSource:
    """Load and validate a source, keeping what the format `records` reads; raises DataError on malformed records
    or an empty result."""
    fmt = as_format(records)
    key = fmt.source_key()  # part of the fingerprint: the same files read by another format are other data
    spec = normalize_spec(spec)
    kind = spec["kind"]
    if kind == "stories":
        from src.data.tasks.stories import ensure_stories_jsonl

        gen_kwargs = {k: v for k, v in spec.items() if k != "kind"}
        path = ensure_stories_jsonl(cache_dir, **gen_kwargs)
        spec = {"kind": "file", "path": str(path)}
        kind = "file"
    if kind == "file":
        if not spec.get("path") or spec["path"] == "???":
            raise DataError("data.source.path is not set; pass data.source.path=path/to/train.jsonl")
        files = _resolve_files(str(spec["path"]))
        split = spec.get("txt_split", "paragraph")
        pairs = [wr for f in files for wr in _read_file(f, fmt, split)]
        recs = [r for _, r in pairs]
        fp = Hasher().update_json([[file_digest(f) for f in files], split, key]).hexdigest()
        origin = files[0] if len(files) == 1 else f"{spec['path']} ({len(files)} files)"
        ds = datasets.Dataset.from_list(recs) if recs else None
        locations = Locations.of(len(pairs), origin, [w for w, _ in pairs])
    elif kind == "records":
        origin = "in-memory records"
        recs = [fmt.project(r, f"record {i}") for i, r in enumerate(spec.get("records") or [])]
        fp = Hasher().update_json([recs, key]).hexdigest()
        ds = datasets.Dataset.from_list(recs) if recs else None
        locations = Locations.of(len(recs), "record")
    else:  # hf
        ds, fp, origin = _load_hf(spec, fmt)
        locations = Locations.of(len(ds), f"{origin} row")
    if ds is None or len(ds) == 0:
        raise DataError(
            f"{origin}: the dataset is empty (no records with the fields {fmt.columns}); point data.source at "
            "a non-empty file or dataset"
        )
    return LoadedSource(ds, fp, origin, locations)


def _load_hf(spec: dict[str, Any], fmt: DataFormat) -> tuple[datasets.Dataset, str, str]:
    name = spec.get("name")
    if not name:
        raise DataError("data.source.kind=hf needs data.source.name (e.g. roneneldan/TinyStories)")
    origin = f"HF dataset {name}"
    kwargs = {k: spec[k] for k in ("data_files", "revision", "data_dir") if spec.get(k) is not None}
    ds = datasets.load_dataset(name, spec.get("config"), split=spec.get("split", "train"), **kwargs)
    if isinstance(ds, datasets.DatasetDict):
        raise DataError(f"{origin}: set data.source.split (available: {list(ds)})")
    if spec.get("max_records"):
        ds = ds.select(range(min(int(spec["max_records"]), len(ds))))
    cols = set(ds.column_names)
    fmt.check_columns(cols, origin)
    keep = [c for c in fmt.columns if c in cols]
    ds = ds.select_columns(keep)
    fp = Hasher().update_json([ds._fingerprint, fmt.source_key()]).hexdigest()
    # every row validated like a file's records (one DataError naming the row), once: datasets caches the map
    ds = ds.map(_ValidateRows(fmt, origin), batched=True, with_indices=True, remove_columns=keep,
                desc=f"validate {origin}")
    return ds, fp, origin


class _ValidateRows:
    """Picklable batched map: the format's `project` on every row of a Hugging Face dataset."""

    def __init__(self, fmt: DataFormat, origin: str) -> None:
        self.fmt, self.origin = fmt, origin

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {c: [] for c in self.fmt.columns}
        for j, i in enumerate(indices):
            rec = self.fmt.project({c: v[j] for c, v in batch.items()}, f"{self.origin} row {i}")
            for c in out:
                out[c].append(rec.get(c))
        return out
