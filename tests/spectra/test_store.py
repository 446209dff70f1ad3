"""Spectra stores: round trips, mock sources, resume after interruption, workers writing
their own chunks on Ray and Dask, survey files, bad input, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import labkit.spectra.to_store as to_store
from labkit.errors import MissingRedshiftError, StoreError
from labkit.spectra import mock_source, preprocess, read
from labkit.spectra.preprocess import TRAINING_GRID
from labkit.spectra.store import open_store
from tests.spectra.archive import write_sdss_spec

N, CHUNK = 600, 128  # five chunks, the last one short (88 rows)
SOURCE = mock_source(N, 0.05, seed=11)


def assert_same(got, want, rtol: float = 0.0) -> None:
    """Same pixels and metadata, exactly (flux, ivar and norm to ``rtol`` if given)."""
    assert len(got) == len(want)
    for name in ("wave", "mask"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    for name in ("flux", "ivar"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol, 0, err_msg=name)
    assert got.frame == want.frame == "rest"
    assert got.meta.colnames == want.meta.colnames
    for name in want.meta.colnames:
        got_column, want_column = np.asarray(got.meta[name]), np.asarray(want.meta[name])
        if name == "norm":
            np.testing.assert_allclose(got_column, want_column, rtol, 0, err_msg=name)
        else:
            np.testing.assert_array_equal(got_column, want_column, err_msg=name)


def count_tasks(monkeypatch, fail_on: int | None = None) -> list[int]:
    """Record each chunk ``write_task`` is called for (in-process); KeyboardInterrupt on
    call ``fail_on``, as Ctrl-C would stop the driver there."""
    calls: list[int] = []
    started = []  # every call, even after calls.clear()
    real = to_store.write_task

    def counted(task):
        calls.append(task.chunk)
        started.append(task.chunk)
        if len(started) == fail_on:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(to_store, "write_task", counted)
    return calls


@pytest.fixture(scope="module")
def observed():
    return SOURCE.rows(0, N)


@pytest.fixture(scope="module")
def reference(observed):
    """The survey preprocessed in memory, as the store must hold it."""
    return preprocess(observed, grid=TRAINING_GRID, cluster=False, progress=False)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The mock survey written to a store in-process, uninterrupted (read-only: copy it)."""
    out = tmp_path_factory.mktemp("store") / "mock.store"
    preprocess(SOURCE, out=out, cluster=False, chunk_rows=CHUNK, progress=False)
    return out


@pytest.fixture
def copy_of(written, tmp_path):
    return Path(shutil.copytree(written, tmp_path / "copy.store"))


# -- 1. round trip ---------------------------------------------------------------------------
def test_store_round_trips_what_preprocess_makes_in_memory(observed, reference, tmp_path):
    out = tmp_path / "s"
    returned = preprocess(observed, grid=TRAINING_GRID, out=out, cluster=False, chunk_rows=CHUNK)
    store = open_store(out)
    assert len(store) == len(returned) == N and store.n_chunks == 5 and store.is_complete
    np.testing.assert_array_equal(store.wave, reference.wave)
    assert_same(store[0:N], reference)
    assert_same(store[:], reference)
    # slices across chunk boundaries, within one chunk, stepped, negative, single rows
    for key in (slice(100, 300), slice(127, 129), slice(130, 140), slice(5, 590, 7)):
        assert_same(store[key], reference[key])
    assert_same(store[-20:], reference[-20:])
    assert_same(store[::-1], reference[::-1])
    assert_same(store[128], reference[128:129])
    assert_same(store[-1], reference[N - 1 : N])
    for key in (slice(N, N), slice(200, 100), slice(N + 5, None)):
        empty = store[key]
        assert len(empty) == 0 and empty.meta.colnames == reference.meta.colnames
    with pytest.raises(IndexError):
        store[N]
    chunks = list(store.iter_chunks())
    assert [len(c) for c in chunks] == [128, 128, 128, 128, 88]
    assert_same(chunks[4], reference[512:])
    meta = store.meta
    assert type(meta).__name__ == "Table" and len(meta) == N
    np.testing.assert_array_equal(meta["norm"], reference.meta["norm"])
    assert list(meta["targetid"]) == list(observed.meta["targetid"])
    assert repr(store) == (
        f"<SpectraStore {out} {N} spectra x {TRAINING_GRID.size} pixels, 5 chunks of 128, complete>"
    )


def test_open_store_reads_nothing_but_store_json_until_asked(copy_of):
    for name in ("flux", "ivar", "mask"):
        shutil.rmtree(copy_of / name / "c")
    shutil.rmtree(copy_of / "meta")
    store = open_store(copy_of)  # store.json alone is enough to open it and say what it holds
    assert len(store) == N and store.n_chunks == 5 and store.is_complete
    assert f"{N} spectra" in repr(store)
    with pytest.raises(StoreError, match=f"{copy_of}, chunk 2: the flux chunk file is missing"):
        store.read_chunk(2)


# -- 2. mock sources -------------------------------------------------------------------------
def test_mock_source_is_deterministic_and_consistent_across_ranges(observed):
    again = mock_source(N, 0.05, seed=11)
    for start, stop in ((0, 100), (250, 262), (500, 600)):
        part = again.rows(start, stop)
        assert_observed_same(part, observed[start:stop])
    other = mock_source(N, 0.05, seed=12).rows(0, 50)
    assert not np.array_equal(other.flux, observed[:50].flux)
    assert int(np.sum(observed.meta["is_anomaly"])) == round(N * 0.05)
    assert len(np.unique(observed.meta["targetid"])) == N
    odd = mock_source(1001, 0.013, seed=2)
    assert int(np.sum(odd.rows(0, 1001).meta["is_anomaly"])) == round(1001 * 0.013)


def assert_observed_same(got, want) -> None:
    for name in ("wave", "flux", "ivar", "mask"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    for name in want.meta.colnames:
        np.testing.assert_array_equal(np.asarray(got.meta[name]), np.asarray(want.meta[name]))


def test_mock_store_is_the_same_whatever_the_chunk_size(written, reference, tmp_path):
    assert_same(open_store(written)[:], reference)
    store = preprocess(SOURCE, out=tmp_path / "s", cluster=False, chunk_rows=250, progress=False)
    assert store.n_chunks == 3
    assert_same(store[:], reference)


# -- 3. interrupted writes and resuming ------------------------------------------------------
def test_interrupted_write_says_what_is_missing_and_a_rerun_completes_it(
    monkeypatch, written, tmp_path
):
    out = tmp_path / "s"
    calls = count_tasks(monkeypatch, fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        preprocess(SOURCE, out=out, cluster=False, chunk_rows=CHUNK, progress=False)
    store = open_store(out)
    assert store.complete_chunks == [0, 1] and store.missing_chunks == [2, 3, 4]
    assert not store.is_complete and "3 of 5 chunks missing" in repr(store)
    with pytest.raises(StoreError, match=r"3 of 5 chunks are missing \(2, 3, 4\)"):
        _ = store.meta
    with pytest.raises(StoreError, match=f"{out}, chunk 3: this chunk was never completed"):
        store.read_chunk(3)
    assert_same(store.read_chunk(1), open_store(written).read_chunk(1))  # what is there reads
    calls.clear()
    resumed = preprocess(SOURCE, out=out, cluster=False, chunk_rows=CHUNK, progress=False)
    assert sorted(calls) == [2, 3, 4]  # nothing complete was computed again
    assert resumed.is_complete
    assert_same(resumed[:], open_store(written)[:])
    calls.clear()
    preprocess(SOURCE, out=out, cluster=False, chunk_rows=CHUNK, progress=False)
    assert calls == []


def test_chunks_sealed_but_not_recorded_are_adopted_not_recomputed(monkeypatch, copy_of, written):
    manifest = json.loads((copy_of / "store.json").read_text())
    manifest["complete"] = [0, 2]  # the driver died before recording 1, 3 and 4
    (copy_of / "store.json").write_text(json.dumps(manifest))
    assert open_store(copy_of).missing_chunks == [1, 3, 4]
    calls = count_tasks(monkeypatch)
    store = preprocess(SOURCE, out=copy_of, cluster=False, chunk_rows=CHUNK, progress=False)
    assert calls == [] and store.is_complete
    assert json.loads((copy_of / "store.json").read_text())["complete"] == [0, 1, 2, 3, 4]
    assert_same(store[:], open_store(written)[:])


# -- 4. workers write their own chunks -------------------------------------------------------
def test_workers_write_their_own_chunks(cluster, monkeypatch, written, tmp_path):
    def not_here(*args, **kwargs):
        raise AssertionError("the driver wrote a chunk")

    monkeypatch.setattr(to_store, "write_chunk", not_here)  # this process's copy only
    source = mock_source(256, 0.05, seed=11)  # SOURCE's first block of rows: its first 256
    store = preprocess(source, out=tmp_path / "s", cluster=cluster, chunk_rows=64, progress=False)
    assert store.is_complete and store.n_chunks == 4
    assert_same(store[:], open_store(written)[0:256])
    # the same call again on the complete store sends no task and changes nothing
    again = preprocess(source, out=tmp_path / "s", cluster=cluster, chunk_rows=64, progress=False)
    assert again.complete_chunks == store.complete_chunks
    assert_same(again[:], store[:])


# -- 5. survey files -------------------------------------------------------------------------
def test_desi_files_to_a_store_match_reading_them_in_memory(desi_archive, tmp_path):
    paths = [str(p) for p in desi_archive.coadds]
    out = tmp_path / "desi.store"
    store = preprocess(
        paths, redshifts=desi_archive.redrock, out=out, cluster=False, chunk_rows=3, progress=False
    )
    assert store.n_chunks == 4  # chunk 1 spans both files
    spectra = read(paths, redshifts=desi_archive.redrock, progress=False)
    want = preprocess(spectra, grid=TRAINING_GRID, cluster=False, progress=False)
    assert_same(store[:], want)
    files = json.loads((out / "store.json").read_text())["provenance"]["files"]
    assert sorted(f["path"] for f in files) == sorted(paths)
    for entry in files:
        assert entry["sha256"] == to_store.sha256(entry["path"])
        assert len(entry["sha256"]) == 64


def test_sdss_files_to_a_store_match_reading_them_in_memory(tmp_path):
    rng, paths = np.random.default_rng(5), []
    for k, (first, size) in enumerate(((35800, 3800), (35650, 4000), (35900, 3600))):
        loglam = (first + np.arange(size)) * 1e-4
        paths.append(
            str(
                write_sdss_spec(
                    tmp_path / f"spec-7{k}00-57000-{k + 1:04d}.fits",
                    loglam,
                    np.full(size, 10.0 + k) + rng.normal(0, 0.1, size),
                    np.full(size, 100.0),
                    np.zeros(size, np.int32),
                    plate=7000 + 100 * k,
                    mjd=57000,
                    fiberid=k + 1,
                    z=0.1 * (k + 1),
                    cls=["GALAXY", "QSO", "STAR"][k],
                )
            )
        )
    store = preprocess(paths, out=tmp_path / "sdss.store", cluster=False, chunk_rows=2)
    want = preprocess(read(paths, progress=False), grid=TRAINING_GRID, cluster=False)
    assert store.n_chunks == 2
    # chunk 1 is file 2 alone, on its own observed grid: the in-memory read pads it to the
    # union of all three, and preprocess's normalisation then differs in float rounding
    assert_same(store[:], want, rtol=1e-5)
    files = json.loads((tmp_path / "sdss.store" / "store.json").read_text())["provenance"]
    assert sorted(f["path"] for f in files["files"]) == sorted(paths)


def test_missing_redshifts_in_one_chunk_name_the_targets(desi_archive, tmp_path):
    out = tmp_path / "s"
    with pytest.raises(MissingRedshiftError) as caught:
        preprocess(
            [str(p) for p in desi_archive.coadds],
            redshifts=desi_archive.redrock[0],  # nothing for the second file's live fibres
            out=out,
            cluster=False,
            chunk_rows=5,
            progress=False,
        )
    live_second = desi_archive.targetid[5:][desi_archive.live[5:]]
    assert sorted(caught.value.targetids) == sorted(int(t) for t in live_second)
    assert str(live_second[0]) in str(caught.value)
    store = open_store(out)
    assert store.complete_chunks == [0] and store.missing_chunks == [1]
    assert list(store.read_chunk(0).meta["targetid"]) == list(desi_archive.targetid[:5])


# -- 6. bad input ----------------------------------------------------------------------------
def test_missing_chunk_file_names_the_chunk_and_the_store(copy_of):
    (copy_of / "flux" / "c" / "1" / "0").unlink()
    store = open_store(copy_of)
    with pytest.raises(StoreError, match=f"^{copy_of}, chunk 1: the flux chunk file is missing"):
        store.read_chunk(1)
    with pytest.raises(StoreError, match=f"{copy_of}, chunk 1"):
        store[100:200]
    assert len(store.read_chunk(0)) == CHUNK  # the others still read
    (copy_of / "meta" / "chunk-000002.parquet").unlink()
    with pytest.raises(StoreError, match=f"^{copy_of}, chunk 2: the metadata file .* missing"):
        store.read_chunk(2)


@pytest.mark.parametrize("damage", ["truncate", "overwrite"])
def test_corrupt_chunk_file_names_the_chunk_and_the_store(copy_of, damage):
    path = copy_of / "ivar" / "c" / "3" / "0"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, len(data), np.uint8)))
    store = open_store(copy_of)
    with pytest.raises(StoreError, match=f"^{copy_of}, chunk 3: the ivar chunk file is corrupt"):
        store.read_chunk(3)
    meta = copy_of / "meta" / "chunk-000000.parquet"
    meta.write_bytes(meta.read_bytes()[:50])
    with pytest.raises(StoreError, match=f"^{copy_of}, chunk 0: the metadata file .* corrupt"):
        store.read_chunk(0)


def test_store_of_another_version_is_refused_naming_both_versions(copy_of):
    manifest = json.loads((copy_of / "store.json").read_text())
    manifest["version"] = 99
    (copy_of / "store.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"format version 99, but this labkit reads version 1"):
        open_store(copy_of)
    # the message says to rewrite it with overwrite=True: that works
    store = preprocess(
        SOURCE, out=copy_of, cluster=False, chunk_rows=CHUNK, overwrite=True, progress=False
    )
    assert store.is_complete and store.manifest["version"] == 1


def test_a_store_from_other_inputs_or_another_grid_is_refused_unless_overwrite(tmp_path):
    small = mock_source(40, 0.05, seed=1)
    out = tmp_path / "s"
    preprocess(small, out=out, cluster=False, chunk_rows=16, progress=False)
    before = (out / "store.json").read_text()
    other_grid = TRAINING_GRID[10:-10]
    for kwargs in (
        {"spectra": mock_source(40, 0.05, seed=2)},
        {"spectra": small, "grid": other_grid},
        {"spectra": small, "chunk_rows": 8},
    ):
        kwargs = {"chunk_rows": 16, **kwargs}
        with pytest.raises(StoreError, match=f"^{out}: it was written from other inputs"):
            preprocess(out=out, cluster=False, progress=False, **kwargs)
        assert (out / "store.json").read_text() == before  # untouched
    store = preprocess(
        small, grid=other_grid, out=out, cluster=False, overwrite=True, progress=False
    )
    assert store.n_pixels == other_grid.size and store.is_complete
    want = preprocess(small.rows(0, 40), grid=other_grid, cluster=False, progress=False)
    assert_same(store[:], want)


def test_a_folder_that_is_not_a_store_is_refused_and_left_alone(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(StoreError, match=f"^{folder}: the folder exists and is not a labkit"):
            preprocess(
                mock_source(20), out=folder, cluster=False, overwrite=overwrite, progress=False
            )
        assert [p.name for p in folder.iterdir()] == ["thesis.tex"]
        assert (folder / "thesis.tex").read_text() == "precious"


@pytest.fixture
def small_disk(tmp_path):
    """A 1.5 MB tmpfs (root only); unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_says_so_and_leaves_complete_chunks_readable(small_disk, observed, reference):
    out = small_disk / "s"
    with pytest.raises(StoreError, match=f"^{out}, chunk \\d+: the disk is full"):
        preprocess(
            observed, grid=TRAINING_GRID, out=out, cluster=False, chunk_rows=CHUNK, progress=False
        )
    store = open_store(out)
    assert 0 < len(store.complete_chunks) < store.n_chunks
    for chunk in store.complete_chunks:
        assert_same(store.read_chunk(chunk), reference[store.chunk_slice(chunk)])


# -- 7. the command line ---------------------------------------------------------------------
def test_cli_preprocess_writes_a_store_and_errors_are_one_line(desi_archive, tmp_path):
    from labkit.cli import main

    out = tmp_path / "cli.store"
    args = ["preprocess", *map(str, desi_archive.coadds), "--out", str(out)]
    args += [arg for path in desi_archive.redrock for arg in ("--redshifts", str(path))]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    store = open_store(out)
    assert store.is_complete and len(store) == len(desi_archive.targetid)
    assert f"{out}: {len(store)} spectra x {store.n_pixels} pixels in 1 chunks" in result.output
    again = CliRunner().invoke(main, [*args, "--grid", "1000", "5000", "1e-3"])
    assert again.exit_code == 1
    lines = again.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"labkit: {out}: it was written from other")
