"""The datasets proxy language models train on.

A source string names the data, so that a job can store it and every worker loads the same
tokens:

- ``text:PATH``: a text file, or a folder whose regular files (recursively, sorted by relative
  path) are concatenated. Byte-level: vocabulary 256, one byte per token.
- ``tokens:PATH``: a pre-tokenized raw little-endian array (no header) with a sidecar
  ``PATH.json`` such as ``{"dtype": "uint16", "vocab_size": 50257}``.
- ``builtin:stdlib``: the running interpreter's standard-library sources, so that a corpus
  exists on every machine without a download.

The last ``valid_fraction`` of the tokens is held out for validation. Nothing is cached here:
the caller decides what to keep (``source_signature`` tells it when a source may have changed).

Every problem with the data (missing, unreadable, not a regular file, outside the allowed
``data_roots``, over ``max_text_bytes``) is a ``DatasetError``, never a bare ``OSError``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import sys
import sysconfig
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "BYTE_VOCAB_SIZE",
    "MAX_TEXT_FILES",
    "STDLIB_MAX_BYTES",
    "TEXT_MAX_BYTES",
    "Dataset",
    "DatasetError",
    "load_dataset",
    "resolve_source",
    "source_signature",
]

BYTE_VOCAB_SIZE = 256
STDLIB_MAX_BYTES = 8 * 2**20
"""``builtin:stdlib`` keeps the first 8 MiB of sources: ample for proxy runs, quick to load."""
TEXT_MAX_BYTES = 2 * 2**30
"""Default cap on a ``text:`` folder, which is read into memory (a single file is mapped)."""
MAX_TEXT_FILES = 100_000
"""A ``text:`` folder with more files than this is refused before any is read."""

_SCHEMES = ("text", "tokens", "builtin")
_BUILTINS = ("stdlib",)
_STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib"})
# Token dtypes and the largest vocabulary each may declare. uint32 stops at 2**31 so that every
# token fits the int32 batches.
_TOKEN_DTYPES = {"uint16": (np.dtype("<u2"), 2**16), "uint32": (np.dtype("<u4"), 2**31)}
_CHUNK_ITEMS = 2**24  # scan memmaps in pieces so checksums and vocab checks never load a file


class DatasetError(ValueError):
    """The data behind a source is missing, malformed or too small for the request.

    `str()` names the field (`dataset: ...`) for a log or a trial's reason; `message` is the
    words alone, for callers that name the field themselves (a 422's `loc`, a CLI option).
    """

    field = "dataset"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(f"{self.field}: {message}")


def resolve_source(
    source: str,
    base_dir: str | Path | None = None,
    *,
    data_roots: Sequence[str | Path] | None = None,
) -> str:
    """Return ``source`` with its path made absolute, so that it means the same file anywhere.

    Relative paths are taken from ``base_dir`` (the current directory when None). The path must
    exist and be a regular file (or, for ``text:``, a folder): a typo is caught when a job is
    submitted, not when its first worker starts. With ``data_roots``, the path (symlinks
    resolved) must lie inside one of those directories.
    """
    scheme, sep, rest = source.partition(":")
    if not sep or scheme not in _SCHEMES:
        raise DatasetError(
            f"unknown source {source!r}: expected text:PATH, tokens:PATH or builtin:stdlib"
        )
    if scheme == "builtin":
        if rest not in _BUILTINS:
            raise DatasetError(f"unknown built-in corpus {rest!r} in {source!r}: expected stdlib")
        return source
    if not rest:
        raise DatasetError(f"no path in source {source!r}")
    try:
        path = (Path(base_dir or Path.cwd()) / Path(rest).expanduser()).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, an unknown ~user
        raise DatasetError(f"cannot resolve the path of source {source!r}: {exc}") from exc
    if data_roots:
        _check_inside(path, data_roots, source)
    mode = _stat(path, source).st_mode
    if stat.S_ISDIR(mode):
        if scheme == "tokens":
            raise DatasetError(f"{path} is not a file (source {source!r})")
        if path == Path(path.anchor):
            raise DatasetError(
                f"{path} is a file system root: refusing to read every file below it "
                f"(source {source!r}); name the folder that holds the corpus"
            )
    elif not stat.S_ISREG(mode):
        raise DatasetError(
            f"{path} is not a regular file{' or folder' if scheme == 'text' else ''} "
            f"(source {source!r})"
        )
    return f"{scheme}:{path}"


def source_signature(source: str) -> tuple:
    """A cheap fingerprint (paths, sizes, inodes, modification times) of what ``source`` reads.

    When it is unchanged the data is taken to be unchanged, so a caller can skip re-hashing;
    any write to a file (or a file added to or removed from a folder) changes it.
    """
    scheme, _, rest = resolve_source(source).partition(":")
    if scheme == "builtin":
        return (scheme, rest, sys.version)
    path = Path(rest)
    paths = [path, Path(f"{path}.json")] if scheme == "tokens" else [path]
    if path.is_dir():
        paths = _files_under(path, max_files=None)
    return tuple(_signature(p, source) for p in paths)


def _signature(path: Path, source: str) -> tuple:
    info = _stat(path, source)
    return (str(path), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev)


def _stat(path: Path, source: str) -> os.stat_result:
    """``os.stat`` whose errors are DatasetErrors naming the source."""
    try:
        return path.stat()
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist (source {source!r})") from None
    except PermissionError:
        raise DatasetError(f"permission denied reading {path} (source {source!r})") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path} (source {source!r}): {exc}") from exc


def _check_inside(path: Path, data_roots: Sequence[str | Path], source: str) -> None:
    """Refuse ``path`` (already resolved) unless it lies inside one of ``data_roots``."""
    roots = []
    for root in data_roots:
        try:
            roots.append(Path(root).expanduser().resolve())
        except (OSError, RuntimeError):
            continue
    try:
        real = path.resolve()
    except (OSError, RuntimeError) as exc:
        raise DatasetError(f"cannot resolve {path} (source {source!r}): {exc}") from exc
    if not any(real == root or real.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in roots) or "(none)"
        raise DatasetError(
            f"{real} is outside the allowed data roots {allowed} (source {source!r}; "
            "the server's NAS_DATA_ROOTS)"
        )


@dataclass(frozen=True, eq=False)
class Dataset:
    """Tokens split into train and valid, with what is needed to compare results across runs.

    ``checksum`` is the sha256 of exactly the tokens used (train then valid), so results are
    only compared when they come from the same data. ``bytes_per_token`` is 1.0 for byte-level
    corpora (bits per byte = loss / ln 2) and None when unknown.
    """

    source: str
    vocab_size: int
    bytes_per_token: float | None
    checksum: str
    train: np.ndarray = field(repr=False)
    valid: np.ndarray = field(repr=False)

    def check_fits(self, seq_len: int) -> None:
        """Raise DatasetError unless each split holds one window of ``seq_len + 1`` tokens."""
        self._check_split("train", seq_len)
        self._check_split("valid", seq_len)

    def train_batches(self, batch_size: int, seq_len: int, seed: int) -> Iterator[np.ndarray]:
        """Yield int32 ``[batch_size, seq_len + 1]`` windows from random train offsets, forever.

        Inputs are ``batch[:, :-1]`` and targets ``batch[:, 1:]``. The same seed gives the same
        batches, so a retried trial sees the same data.
        """
        _check_positive("batch_size", batch_size)
        self._check_split("train", seq_len)
        return self._random_windows(batch_size, seq_len + 1, np.random.default_rng(seed))

    def validation_batches(
        self, batch_size: int, seq_len: int, max_tokens: int
    ) -> list[np.ndarray]:
        """The fixed int32 ``[batch_size, seq_len + 1]`` batches every candidate is scored on.

        Windows are consecutive and non-overlapping from the start of the valid split; there are
        as many full batches as fit in both the split and ``max_tokens`` (counting every token of
        every window), and at least one.
        """
        _check_positive("batch_size", batch_size)
        _check_positive("max_tokens", max_tokens)
        self._check_split("valid", seq_len)
        window = seq_len + 1
        batch_tokens = batch_size * window
        if len(self.valid) < batch_tokens:
            raise DatasetError(
                f"the valid split of {self.source} has {len(self.valid)} tokens; one validation "
                f"batch of {batch_size} x {window} needs {batch_tokens}"
            )
        n_batches = max(1, min(max_tokens, len(self.valid)) // batch_tokens)
        used = self.valid[: n_batches * batch_tokens]
        return list(np.asarray(used, dtype=np.int32).reshape(n_batches, batch_size, window))

    def _check_split(self, name: str, seq_len: int) -> None:
        _check_positive("seq_len", seq_len)
        split = getattr(self, name)
        if len(split) < seq_len + 1:
            raise DatasetError(
                f"the {name} split of {self.source} has {len(split)} tokens; "
                f"seq_len {seq_len} needs at least {seq_len + 1}"
            )

    def _random_windows(
        self, batch_size: int, window: int, rng: np.random.Generator
    ) -> Iterator[np.ndarray]:
        offsets = np.arange(window)
        while True:
            starts = rng.integers(0, len(self.train) - window + 1, size=batch_size)
            yield np.asarray(self.train[starts[:, None] + offsets], dtype=np.int32)


def load_dataset(
    source: str,
    valid_fraction: float = 0.05,
    *,
    data_roots: Sequence[str | Path] | None = None,
    max_text_bytes: int | None = TEXT_MAX_BYTES,
) -> Dataset:
    """Load ``source`` and hold out its last ``valid_fraction`` of tokens (at least one).

    ``data_roots`` limits where the data (symlinks resolved, each file of a folder included)
    may live. ``max_text_bytes`` caps a ``text:`` folder, which is read into memory: the sum
    of its file sizes is checked before any is read (None: no cap). The ``builtin:stdlib``
    checksum depends on the Python version, whose sources it reads.
    """
    if isinstance(valid_fraction, bool) or not 0 < valid_fraction < 0.5:
        raise DatasetError(f"valid_fraction must be in (0, 0.5), got {valid_fraction!r}")
    source = resolve_source(source, data_roots=data_roots)
    scheme, _, rest = source.partition(":")
    try:
        if scheme == "tokens":
            tokens, vocab_size = _load_tokens(Path(rest), data_roots)
            bytes_per_token = None
        else:
            if scheme == "builtin":
                tokens = _load_stdlib()
            else:
                tokens = _load_text(Path(rest), max_text_bytes, data_roots)
            vocab_size, bytes_per_token = BYTE_VOCAB_SIZE, 1.0
        n_valid = max(1, math.floor(len(tokens) * valid_fraction))
        checksum = _sha256(tokens)
    except OSError as exc:  # a file unreadable, or gone since it was resolved
        name = f" {exc.filename}" if exc.filename else ""
        raise DatasetError(f"cannot read{name} (source {source!r}): {exc.strerror or exc}") from exc
    return Dataset(
        source=source,
        vocab_size=vocab_size,
        bytes_per_token=bytes_per_token,
        checksum=checksum,
        train=tokens[:-n_valid],
        valid=tokens[-n_valid:],
    )


def _load_text(
    path: Path, max_bytes: int | None, data_roots: Sequence[str | Path] | None
) -> np.ndarray:
    """A single file is memory-mapped; a folder's files are concatenated in memory."""
    source = f"text:{path}"
    if not path.is_dir():
        if _stat(path, source).st_size == 0:
            raise DatasetError(f"text file {path} is empty")
        return np.memmap(path, dtype=np.uint8, mode="r")
    files = _files_under(path, max_files=MAX_TEXT_FILES)
    sizes = []
    for file in files:
        if data_roots:
            _check_inside(file, data_roots, source)
        sizes.append(_stat(file, source).st_size)
    total = sum(sizes)
    if max_bytes is not None and total > max_bytes:
        raise DatasetError(
            f"text folder {path} holds {total} bytes in {len(files)} files, over the cap of "
            f"{max_bytes} bytes on text read into memory (raise it with NAS_MAX_TEXT_BYTES, "
            "or use one file, which is memory-mapped, or tokens:PATH)"
        )
    data = _concat(files, limit=None if max_bytes is None else max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:  # grew since its size was checked
        raise DatasetError(f"text folder {path} grew past the cap of {max_bytes} bytes")
    if not data:
        raise DatasetError(f"text folder {path} holds no data (no files, or only empty ones)")
    return np.frombuffer(data, dtype=np.uint8)


def _load_stdlib() -> np.ndarray:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in _files_under(root, skip_dirs=_STDLIB_SKIP_DIRS) if p.suffix == ".py"]
    data = _concat(files, limit=STDLIB_MAX_BYTES)
    if not data:
        raise DatasetError(f"builtin:stdlib found no Python sources under {root}")
    return np.frombuffer(data, dtype=np.uint8)


def _files_under(
    root: Path, skip_dirs: frozenset[str] = frozenset(), max_files: int | None = None
) -> list[Path]:
    """Regular files under ``root`` sorted by relative path, never entering ``skip_dirs``.

    An unreadable folder is an error (not silently skipped); entries that are not regular
    files (FIFOs, sockets, devices) are left out. Symlinked folders are not entered. Past
    ``max_files`` files the walk stops with an error.
    """

    def fail(exc: OSError) -> None:
        raise DatasetError(
            f"cannot read folder {exc.filename} under {root}: {exc.strerror or exc}"
        ) from exc

    found = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        dirnames[:] = [d for d in dirnames if d not in skip_dirs]
        for name in filenames:
            path = Path(dirpath, name)
            try:
                regular = stat.S_ISREG(path.stat().st_mode)
            except FileNotFoundError:  # a dangling symlink, or removed meanwhile
                continue
            except OSError as exc:
                raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
            if regular:
                found.append(path)
        if max_files is not None and len(found) > max_files:
            raise DatasetError(
                f"text folder {root} holds more than {max_files} files: name the folder "
                "that holds the corpus, or concatenate it into one file"
            )
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _concat(files: Iterable[Path], limit: int | None) -> bytes:
    """The files' bytes end to end, reading no further than ``limit`` bytes when given."""
    parts, total = [], 0
    for path in files:
        if limit is not None and total >= limit:
            break
        with open(path, "rb") as file:
            parts.append(file.read() if limit is None else file.read(limit - total))
        total += len(parts[-1])
    return b"".join(parts)


def _load_tokens(
    path: Path, data_roots: Sequence[str | Path] | None = None
) -> tuple[np.ndarray, int]:
    """Memory-map a raw token file after checking it against its sidecar."""
    if data_roots and Path(f"{path}.json").exists():
        _check_inside(Path(f"{path}.json"), data_roots, f"tokens:{path}")
    dtype, vocab_size = _read_sidecar(path)
    size = _stat(path, f"tokens:{path}").st_size
    if size == 0:
        raise DatasetError(f"token file {path} is empty")
    if size % dtype.itemsize:
        raise DatasetError(
            f"token file {path} has {size} bytes, not a multiple of the {dtype.itemsize}-byte "
            f"{dtype.name} its sidecar declares"
        )
    tokens = np.memmap(path, dtype=dtype, mode="r")
    _check_vocab(tokens, vocab_size, path)
    return tokens, vocab_size


def _read_sidecar(path: Path) -> tuple[np.dtype, int]:
    sidecar = Path(f"{path}.json")
    try:
        meta = json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise DatasetError(
            f"token file {path} has no sidecar {sidecar} "
            '(expected e.g. {"dtype": "uint16", "vocab_size": 50257})'
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read sidecar {sidecar}: {exc}") from exc
    if not isinstance(meta, dict):
        raise DatasetError(f"sidecar {sidecar} must hold a JSON object, got {meta!r}")
    name = meta.get("dtype")
    if name not in _TOKEN_DTYPES:
        raise DatasetError(
            f"sidecar {sidecar} has dtype {name!r}; expected one of {sorted(_TOKEN_DTYPES)}"
        )
    dtype, max_vocab = _TOKEN_DTYPES[name]
    vocab_size = meta.get("vocab_size")
    if (
        not isinstance(vocab_size, int)
        or isinstance(vocab_size, bool)
        or not 2 <= vocab_size <= max_vocab
    ):
        raise DatasetError(
            f"sidecar {sidecar} has vocab_size {vocab_size!r}; "
            f"expected an int in [2, {max_vocab}] for {name}"
        )
    return dtype, vocab_size


def _check_vocab(tokens: np.ndarray, vocab_size: int, path: Path) -> None:
    for start in range(0, len(tokens), _CHUNK_ITEMS):
        chunk = tokens[start : start + _CHUNK_ITEMS]
        bad = np.flatnonzero(chunk >= vocab_size)
        if bad.size:
            index = start + int(bad[0])
            raise DatasetError(
                f"token file {path} has token {int(tokens[index])} at index {index}, "
                f"outside its vocab_size {vocab_size}"
            )


def _sha256(tokens: np.ndarray) -> str:
    """Hash the raw bytes piece by piece, so a memory-mapped file is never read in whole."""
    digest = hashlib.sha256()
    for start in range(0, len(tokens), _CHUNK_ITEMS):
        digest.update(np.ascontiguousarray(tokens[start : start + _CHUNK_ITEMS]))
    return digest.hexdigest()


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
