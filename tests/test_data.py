"""Datasets: sources, splits, checksums, batches and the errors users see for bad data."""

import errno
import hashlib
import json
import math
import os
import socket
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from workers.data import (
    STDLIB_MAX_BYTES,
    Dataset,
    DatasetError,
    load_dataset,
    resolve_source,
    source_signature,
)

SHAKESPEARE = Path(__file__).resolve().parent / "data" / "tinyshakespeare_head.txt"
SHAKESPEARE_BYTES = 300_174  # the project's excerpt (tests/data/README.md)


def write_tokens(
    path: Path, values, dtype: str = "uint16", vocab_size: int = 1000, **sidecar
) -> Path:
    """A raw little-endian token file with its JSON sidecar; ``sidecar`` overrides its fields."""
    np.asarray(values).astype(np.dtype(dtype).newbyteorder("<")).tofile(path)
    Path(f"{path}.json").write_text(
        json.dumps({"dtype": dtype, "vocab_size": vocab_size, **sidecar})
    )
    return path


@pytest.fixture
def counting(tmp_path) -> Dataset:
    """Tokens 0, 1, 2, ...: a window is contiguous iff its values are consecutive."""
    path = write_tokens(tmp_path / "count.bin", np.arange(10_000), "uint32", vocab_size=10_000)
    return load_dataset(f"tokens:{path}", valid_fraction=0.2)


@pytest.fixture(scope="module")
def stdlib() -> Dataset:
    return load_dataset("builtin:stdlib")


def assert_dataset_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert message.startswith("dataset: "), message
    for fragment in fragments:
        assert fragment in message, message


# Sources


def test_text_file_is_the_file_bytes():
    ds = load_dataset(f"text:{SHAKESPEARE}")
    raw = SHAKESPEARE.read_bytes()
    assert (ds.vocab_size, ds.bytes_per_token) == (256, 1.0)
    assert ds.train.dtype == ds.valid.dtype == np.uint8
    assert len(ds.train) + len(ds.valid) == SHAKESPEARE_BYTES
    assert bytes(ds.train) + bytes(ds.valid) == raw
    assert ds.checksum == hashlib.sha256(raw).hexdigest()
    assert ds.source == f"text:{SHAKESPEARE.resolve()}"


def test_text_folder_concatenates_files_in_relative_path_order(tmp_path):
    root = tmp_path / "corpus"
    (root / "a" / "b").mkdir(parents=True)
    (root / "b.txt").write_bytes(b"third|")
    (root / "a" / "z.txt").write_bytes(b"second|")
    (root / "a" / "b" / "c.txt").write_bytes(b"first|")
    (root / "a" / "empty.txt").write_bytes(b"")
    ds = load_dataset(f"text:{root}", valid_fraction=0.1)
    assert bytes(ds.train) + bytes(ds.valid) == b"first|second|third|"
    assert ds.vocab_size == 256
    assert ds.checksum == hashlib.sha256(b"first|second|third|").hexdigest()


@pytest.mark.parametrize(("dtype", "vocab_size"), [("uint16", 50_257), ("uint32", 100_000)])
def test_tokens_memmap_with_sidecar(tmp_path, dtype, vocab_size):
    values = np.random.default_rng(0).integers(0, vocab_size, size=5_000)
    path = write_tokens(tmp_path / "data.bin", values, dtype, vocab_size)
    ds = load_dataset(f"tokens:{path}")
    assert isinstance(ds.train, np.memmap)
    assert isinstance(ds.valid, np.memmap)
    assert ds.train.dtype == ds.valid.dtype == np.dtype(dtype)
    assert (ds.vocab_size, ds.bytes_per_token) == (vocab_size, None)
    np.testing.assert_array_equal(np.concatenate([ds.train, ds.valid]), values)
    assert ds.checksum == hashlib.sha256(path.read_bytes()).hexdigest()


def test_builtin_stdlib_is_a_large_deterministic_python_corpus(stdlib):
    assert stdlib.source == "builtin:stdlib"
    assert (stdlib.vocab_size, stdlib.bytes_per_token) == (256, 1.0)
    n = len(stdlib.train) + len(stdlib.valid)
    assert 2**20 < n <= STDLIB_MAX_BYTES
    assert b"def " in bytes(stdlib.train[:100_000])
    again = load_dataset("builtin:stdlib")
    assert again.checksum == stdlib.checksum
    np.testing.assert_array_equal(again.valid, stdlib.valid)


# resolve_source


def test_resolve_source_makes_relative_paths_absolute(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_bytes(b"hello world")
    expected = f"text:{tmp_path.resolve() / 'sub' / 'a.txt'}"
    assert resolve_source("text:sub/a.txt", base_dir=tmp_path) == expected
    assert resolve_source("text:a.txt", base_dir=str(tmp_path / "sub")) == expected
    assert resolve_source(expected, base_dir="/nonexistent") == expected
    monkeypatch.chdir(tmp_path)
    assert resolve_source("text:./sub/../sub/a.txt") == expected
    assert load_dataset("text:sub/a.txt").source == expected


def test_resolve_source_keeps_builtin_sources():
    assert resolve_source("builtin:stdlib", base_dir="/elsewhere") == "builtin:stdlib"


# Checksums and splits


def test_checksum_is_stable_and_tracks_the_data(tmp_path):
    one = tmp_path / "one.txt"
    one.write_bytes(b"the same bytes, twice over")
    two = tmp_path / "two.txt"
    two.write_bytes(b"the same bytes, twice ovER")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "x.txt").write_bytes(b"the same bytes, twice over")
    first = load_dataset(f"text:{one}").checksum
    assert load_dataset(f"text:{one}").checksum == first
    assert load_dataset(f"text:{one}", valid_fraction=0.3).checksum == first
    assert load_dataset(f"text:{folder}").checksum == first
    assert load_dataset(f"text:{two}").checksum != first


@pytest.mark.parametrize("valid_fraction", [0.01, 0.05, 0.2, 0.49])
def test_split_holds_out_the_last_fraction(tmp_path, valid_fraction):
    path = write_tokens(tmp_path / "t.bin", np.arange(12_345) % 1000)
    ds = load_dataset(f"tokens:{path}", valid_fraction=valid_fraction)
    n_valid = math.floor(12_345 * valid_fraction)
    assert (len(ds.train), len(ds.valid)) == (12_345 - n_valid, n_valid)
    np.testing.assert_array_equal(ds.valid, np.arange(12_345 - n_valid, 12_345) % 1000)


def test_tiny_corpus_still_holds_out_one_token(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_bytes(b"abcdef")
    ds = load_dataset(f"text:{path}")
    assert (bytes(ds.train), bytes(ds.valid)) == (b"abcde", b"f")


# train_batches


def test_train_batches_are_seeded_contiguous_train_windows(counting):
    batches = list(islice(counting.train_batches(batch_size=8, seq_len=16, seed=3), 50))
    n_train = len(counting.train)
    for batch in batches:
        assert batch.shape == (8, 17)
        assert batch.dtype == np.int32
        inputs, targets = batch[:, :-1], batch[:, 1:]
        np.testing.assert_array_equal(targets, inputs + 1)  # next token of the same window
        assert batch.min() >= 0
        assert batch.max() < n_train
    again = islice(counting.train_batches(batch_size=8, seq_len=16, seed=3), 50)
    for ours, theirs in zip(batches, again, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    other = next(counting.train_batches(batch_size=8, seq_len=16, seed=4))
    assert not np.array_equal(other, batches[0])


def test_train_batches_of_text_are_windows_of_the_train_split():
    ds = load_dataset(f"text:{SHAKESPEARE}")
    train = bytes(ds.train)
    valid_start = bytes(ds.valid[:64])
    for row in next(ds.train_batches(batch_size=4, seq_len=64, seed=0)):
        assert row.astype(np.uint8).tobytes() in train
        assert row.astype(np.uint8).tobytes() != valid_start


def test_train_batches_reach_the_last_window(tmp_path):
    path = write_tokens(tmp_path / "t.bin", np.arange(100), vocab_size=100)
    ds = load_dataset(f"tokens:{path}", valid_fraction=0.1)
    for batch in islice(ds.train_batches(batch_size=2, seq_len=89, seed=0), 3):
        np.testing.assert_array_equal(batch, np.tile(np.arange(90), (2, 1)))


# validation_batches


def test_validation_batches_are_fixed_consecutive_windows_from_the_valid_split(counting):
    batches = counting.validation_batches(batch_size=4, seq_len=9, max_tokens=1_000)
    assert len(batches) == 1_000 // (4 * 10)
    assert all(b.shape == (4, 10) and b.dtype == np.int32 for b in batches)
    flat = np.concatenate([b.ravel() for b in batches])
    np.testing.assert_array_equal(flat, counting.valid[: len(flat)])  # no overlap, no gap
    again = counting.validation_batches(batch_size=4, seq_len=9, max_tokens=1_000)
    assert len(again) == len(batches)
    for ours, theirs in zip(batches, again, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_validation_batches_respect_max_tokens_and_the_split(counting):
    assert len(counting.validation_batches(batch_size=4, seq_len=9, max_tokens=79)) == 1
    assert len(counting.validation_batches(batch_size=4, seq_len=9, max_tokens=80)) == 2
    assert len(counting.validation_batches(batch_size=4, seq_len=9, max_tokens=1)) == 1
    everything = counting.validation_batches(batch_size=4, seq_len=9, max_tokens=10**9)
    assert len(everything) == len(counting.valid) // 40


def test_validation_needs_one_full_batch(counting):
    with pytest.raises(DatasetError) as excinfo:
        counting.validation_batches(batch_size=1_000, seq_len=9, max_tokens=10**9)
    assert_dataset_error(excinfo, "valid split", "2000 tokens", "10000")


@pytest.mark.parametrize(
    "call",
    [
        lambda ds: ds.train_batches(batch_size=0, seq_len=8, seed=0),
        lambda ds: ds.validation_batches(batch_size=2, seq_len=0, max_tokens=100),
        lambda ds: ds.validation_batches(batch_size=2, seq_len=8, max_tokens=0),
    ],
)
def test_bad_batch_arguments_fail_at_the_call(counting, call):
    with pytest.raises(ValueError, match="must be >= 1"):
        call(counting)


# Errors users see


def test_missing_path(tmp_path):
    for scheme in ("text", "tokens"):
        with pytest.raises(DatasetError) as excinfo:
            load_dataset(f"{scheme}:{tmp_path / 'nope.bin'}")
        assert_dataset_error(excinfo, str(tmp_path / "nope.bin"), "does not exist")


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("csv:data.csv", "unknown source"),
        ("no-scheme-here", "unknown source"),
        ("builtin:wikipedia", "unknown built-in corpus"),
        ("text:", "no path"),
    ],
)
def test_malformed_sources(source, fragment):
    with pytest.raises(DatasetError) as excinfo:
        resolve_source(source)
    assert_dataset_error(excinfo, fragment, repr(source))


def test_empty_text_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(f"text:{path}")
    assert_dataset_error(excinfo, "empty", str(path))


@pytest.mark.parametrize("with_empty_file", [False, True])
def test_empty_text_folder(tmp_path, with_empty_file):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    if with_empty_file:
        (folder / "sub" / "empty.txt").write_bytes(b"")
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(f"text:{folder}")
    assert_dataset_error(excinfo, "no data", str(folder))


def test_tokens_without_sidecar(tmp_path):
    path = tmp_path / "t.bin"
    np.arange(10, dtype="<u2").tofile(path)
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(f"tokens:{path}")
    assert_dataset_error(excinfo, "no sidecar", f"{path}.json")


@pytest.mark.parametrize(
    ("sidecar", "fragment"),
    [
        ("{not json", "cannot read sidecar"),
        ("[1, 2]", "JSON object"),
        ('{"vocab_size": 100}', "dtype None"),
        ('{"dtype": "uint16"}', "vocab_size None"),
        ('{"dtype": "uint16", "vocab_size": "100"}', "vocab_size '100'"),
        ('{"dtype": "uint16", "vocab_size": true}', "vocab_size True"),
        ('{"dtype": "uint16", "vocab_size": 1}', "[2, 65536]"),
        ('{"dtype": "uint16", "vocab_size": 65537}', "[2, 65536]"),
        ('{"dtype": "uint32", "vocab_size": 4294967296}', "[2, 2147483648]"),
    ],
)
def test_bad_sidecar(tmp_path, sidecar, fragment):
    path = tmp_path / "t.bin"
    np.arange(10, dtype="<u2").tofile(path)
    Path(f"{path}.json").write_text(sidecar)
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(f"tokens:{path}")
    assert_dataset_error(excinfo, fragment, f"{path}.json")


@pytest.mark.parametrize("dtype", ["int16", "uint8", "float32", "int64"])
def test_bad_token_dtype(tmp_path, dtype):
    path = write_tokens(tmp_path / "t.bin", np.arange(10), dtype)
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(f"tokens:{path}")
    assert_dataset_error(excinfo, f"dtype '{dtype}'", "uint16", "uint32")


def test_token_file_size_must_fit_the_dtype(tmp_path):
    path = write_tokens(tmp_path / "t.bin", np.arange(10), "uint32")
    with path.open("ab") as f:
        f.write(b"\x00\x01")
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(f"tokens:{path}")
    assert_dataset_error(excinfo, "42 bytes", "4-byte uint32", str(path))


def test_empty_token_file(tmp_path):
    path = write_tokens(tmp_path / "t.bin", np.arange(0))
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(f"tokens:{path}")
    assert_dataset_error(excinfo, "empty", str(path))


def test_out_of_vocab_token(tmp_path):
    values = np.arange(300) % 200
    values[123] = 200
    path = write_tokens(tmp_path / "t.bin", values, vocab_size=200)
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(f"tokens:{path}")
    assert_dataset_error(excinfo, "token 200 at index 123", "vocab_size 200", str(path))


def test_too_short_for_seq_len(tmp_path):
    path = tmp_path / "short.txt"
    path.write_bytes(bytes(range(100)))
    ds = load_dataset(f"text:{path}", valid_fraction=0.1)
    ds.check_fits(seq_len=9)
    with pytest.raises(DatasetError) as excinfo:
        ds.check_fits(seq_len=10)
    assert_dataset_error(excinfo, "valid split", str(path), "10 tokens", "at least 11")
    with pytest.raises(DatasetError) as excinfo:
        ds.train_batches(batch_size=1, seq_len=90, seed=0)
    assert_dataset_error(excinfo, "train split", "90 tokens", "at least 91")


@pytest.mark.parametrize("valid_fraction", [0, 0.5, -0.1, 1.0, float("nan"), True])
def test_bad_valid_fraction(tmp_path, valid_fraction):
    path = tmp_path / "a.txt"
    path.write_bytes(b"some text")
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(f"text:{path}", valid_fraction=valid_fraction)
    assert_dataset_error(excinfo, "valid_fraction", repr(valid_fraction))


# Unreadable, non-regular and out-of-bounds data


def test_a_file_system_root_is_refused_without_walking_it(monkeypatch):
    def walk(root, *args, **kwargs):
        raise AssertionError(f"walked {root}")

    monkeypatch.setattr("workers.data.os.walk", walk)
    for call in (resolve_source, load_dataset):
        with pytest.raises(DatasetError) as info:
            call("text:/")
        assert_dataset_error(info, "file system root")


def test_non_regular_files_are_refused(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    try:
        for source in (f"text:{fifo}", f"text:{tmp_path / 'sock'}", "text:/dev/null"):
            with pytest.raises(DatasetError) as info:
                load_dataset(source)
            assert_dataset_error(info, "not a regular file or folder")
        with pytest.raises(DatasetError) as info:
            load_dataset(f"tokens:{fifo}")
        assert_dataset_error(info, "not a regular file")
    finally:
        sock.close()


def test_a_folder_skips_fifos_and_sockets(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"data")
    os.mkfifo(tmp_path / "b.fifo")  # opening it would block forever
    assert bytes(load_dataset(f"text:{tmp_path}", valid_fraction=0.25).train) == b"dat"


def _denied(path):
    return PermissionError(errno.EACCES, "Permission denied", str(path))


def test_permission_denied_is_a_dataset_error(tmp_path, monkeypatch):
    """Root reads anything: the error is raised where the OS would raise it."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"x" * 1000)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"x" * 1000)

    def memmap(path, *args, **kwargs):
        raise _denied(path)

    monkeypatch.setattr("workers.data.np.memmap", memmap)
    with pytest.raises(DatasetError) as info:
        load_dataset(f"text:{corpus}")
    assert_dataset_error(info, "cannot read", str(corpus), "Permission denied")

    def denied_open(path, *args, **kwargs):
        raise _denied(path)

    monkeypatch.setattr("workers.data.open", denied_open, raising=False)
    with pytest.raises(DatasetError) as info:
        load_dataset(f"text:{folder}")
    assert_dataset_error(info, "cannot read", "a.txt", "Permission denied")

    real_stat = Path.stat

    def stat(self, *args, **kwargs):
        if self == corpus:
            raise _denied(self)
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    with pytest.raises(DatasetError) as info:
        resolve_source(f"text:{corpus}")
    assert_dataset_error(info, "permission denied", str(corpus))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files of mode 000")
def test_unreadable_files_and_folders_for_real(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"x" * 1000)
    corpus.chmod(0)
    with pytest.raises(DatasetError) as info:
        load_dataset(f"text:{corpus}")
    assert_dataset_error(info, "cannot read", "ermission denied")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_bytes(b"x" * 1000)
    (tmp_path / "sub").chmod(0)
    try:
        with pytest.raises(DatasetError) as info:
            load_dataset(f"text:{tmp_path}")
        assert_dataset_error(info, "cannot read folder", "sub")
    finally:
        (tmp_path / "sub").chmod(0o755)


def test_data_roots_accept_inside_and_refuse_outside_and_escaping_symlinks(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "a.txt").write_bytes(b"inside " * 100)
    (outside / "secret.txt").write_bytes(b"secret " * 100)
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "escape_dir").symlink_to(outside)
    roots = [str(root)]
    inside = f"text:{root / 'sub' / 'a.txt'}"
    assert resolve_source(inside, data_roots=roots) == inside
    assert load_dataset(f"text:{root / 'sub'}", data_roots=roots).source == f"text:{root / 'sub'}"
    assert resolve_source("text:sub", base_dir=root, data_roots=[root, "/nowhere"]) == (
        f"text:{root / 'sub'}"
    )
    refused = [
        f"text:{outside / 'secret.txt'}",
        f"text:{root / 'escape.txt'}",
        f"text:{root / 'escape_dir'}",
        f"text:{root}/../outside/secret.txt",
        f"tokens:{outside / 'secret.txt'}",
    ]
    for source in refused:
        with pytest.raises(DatasetError) as info:
            load_dataset(source, data_roots=roots)
        assert_dataset_error(info, "outside the allowed data roots", str(root))
    # A folder inside the root holding a symlink to a file outside it.
    (root / "sub" / "b.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(DatasetError) as info:
        load_dataset(f"text:{root / 'sub'}", data_roots=roots)
    assert_dataset_error(info, "outside the allowed data roots", "secret.txt")
    assert load_dataset(f"text:{root / 'sub'}").checksum  # no roots: any readable path
    assert load_dataset("builtin:stdlib", data_roots=roots).source == "builtin:stdlib"


def test_text_folder_size_cap_is_checked_before_reading(tmp_path, monkeypatch):
    for name in "abc":
        (tmp_path / f"{name}.txt").write_bytes(b"x" * 400)
    assert len(load_dataset(f"text:{tmp_path}", max_text_bytes=1200).train) > 0

    def never_open(path, *args, **kwargs):
        raise AssertionError(f"read {path}")

    monkeypatch.setattr("workers.data.open", never_open, raising=False)
    with pytest.raises(DatasetError) as info:
        load_dataset(f"text:{tmp_path}", max_text_bytes=1000)
    assert_dataset_error(info, "1200 bytes", "cap of 1000 bytes", "NAS_MAX_TEXT_BYTES")


def test_source_signature_changes_with_the_data(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"one")
    source = f"text:{corpus}"
    first = source_signature(source)
    assert source_signature(source) == first
    corpus.write_bytes(b"two")
    os.utime(corpus, ns=(1, 1))  # same size, even with a coarse clock: the mtime differs
    assert source_signature(source) != first
    folder_first = source_signature(f"text:{tmp_path}")
    (tmp_path / "new.txt").write_bytes(b"")
    assert source_signature(f"text:{tmp_path}") != folder_first
    assert source_signature("builtin:stdlib") == source_signature("builtin:stdlib")
