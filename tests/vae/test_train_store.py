"""``labkit.vae.train`` from a ``SpectraStore``: streamed in chunks, never whole, and the same
model as from the same spectra in memory."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import labkit
from labkit.errors import TrainingDataError
from labkit.spectra import SpectraStore, mock_source, preprocess, rest_grid
from labkit.vae import TrainConfig, data, loop, train
from labkit.vae.data import Prefetch, batches

from .conftest import GRID

SMALL = TrainConfig(latent_dim=4, hidden=(64, 32), batch_size=32, epochs=3, kl_warmup=2)
CHUNK = 128  # 1200 spectra: 10 chunks, so epochs pool chunks in groups and carry rows over
# store and memory batches hold the very same float32 rows in the same order; what is left is
# float round-off, should torch ever sum them differently
RTOL = 1e-6


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> SpectraStore:
    path = tmp_path_factory.mktemp("store") / "s.zarr"
    grid = rest_grid(*GRID[:2], GRID[2])
    return preprocess(
        mock_source(1200, 0.02, seed=1),
        grid=grid,
        out=path,
        chunk_rows=CHUNK,
        cluster=False,
        progress=False,
    )


@pytest.fixture(scope="module")
def in_memory(store):
    return store[0 : len(store)]


@pytest.fixture
def streamed_only(monkeypatch):
    """Refuse ``store[a:b]`` and count the rows each ``read_chunk`` hands out."""
    reads: list[int] = []
    original = SpectraStore.read_chunk

    def read_chunk(self, chunk):
        spectra = original(self, chunk)
        reads.append(len(spectra))
        return spectra

    def refuse(self, key):
        raise AssertionError(f"training read store[{key}]")

    monkeypatch.setattr(SpectraStore, "read_chunk", read_chunk)
    monkeypatch.setattr(SpectraStore, "__getitem__", refuse)
    return reads


@pytest.fixture(scope="module")
def store_run(store, tmp_path_factory):
    directory = tmp_path_factory.mktemp("store-run")
    return train(store, SMALL, "in-process", checkpoint_dir=directory, progress=False)


def test_store_and_memory_train_the_same_model(store, in_memory, store_run, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CHUNK_ROWS", CHUNK)  # the store's chunks, as virtual chunks
    from_memory = train(in_memory, SMALL, "in-process", checkpoint_dir=tmp_path, progress=False)
    assert [r["epoch"] for r in store_run.history] == [1, 2, 3]
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(
            [r[key] for r in store_run.history],
            [r[key] for r in from_memory.history],
            rtol=RTOL,
        )
    assert store_run.best_epoch == from_memory.best_epoch
    z = from_memory.model.encode(in_memory)
    np.testing.assert_allclose(store_run.model.encode(in_memory), z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        store_run.model.decode(z), from_memory.model.decode(z), rtol=1e-5, atol=1e-6
    )
    # the anomaly statistics come from the same few chunks of training rows
    np.testing.assert_allclose(
        store_run.model.anomaly_score(in_memory[:20]),
        from_memory.model.anomaly_score(in_memory[:20]),
        rtol=1e-4,
        atol=1e-5,
    )


def test_training_streams_chunks_and_never_reads_the_store_whole(store, streamed_only, tmp_path):
    result = train(
        store, SMALL.replace(epochs=2), "in-process", checkpoint_dir=tmp_path, progress=False
    )
    assert len(result.history) == 2
    assert streamed_only and max(streamed_only) <= CHUNK
    # sample (once), validation rows (once: they are few), each epoch once, population sample
    assert len(streamed_only) <= store.n_chunks * (1 + 1 + 2) + store.n_chunks


def test_resume_from_a_store_repeats_the_uninterrupted_run(store, store_run, tmp_path):
    stop = threading.Event()

    def stop_after_one(record):
        if record["epoch"] == 1:
            stop.set()

    first = train(
        store,
        SMALL,
        "in-process",
        checkpoint_dir=tmp_path,
        progress=False,
        callback=stop_after_one,
        stop=stop,
    )
    assert first.stopped and len(first.history) == 1
    resumed = train(
        store, SMALL, "in-process", checkpoint_dir=tmp_path, resume=True, progress=False
    )
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in store_run.history]
    assert not resumed.stopped


def test_a_bad_chunk_is_named(store, tmp_path):
    import shutil

    import zarr

    broken = tmp_path / "broken.zarr"
    shutil.copytree(store.path, broken)
    mask = zarr.open_array(broken / "mask", mode="r")[300]
    pixel = int(np.flatnonzero(~mask)[0])
    zarr.open_array(broken / "flux", mode="r+")[300, pixel] = np.nan
    with pytest.raises(
        TrainingDataError,
        match=r"chunk 2 \(rows 256-383\) of the store at .*broken.zarr has NaN or inf flux in "
        r"unmasked pixels of 1 spectra \(rows 300\)",
    ):
        train(
            labkit.spectra.open_store(broken),
            SMALL,
            "in-process",
            checkpoint_dir=tmp_path,
            progress=False,
        )


def test_prefetch_reads_at_most_two_chunks_ahead_and_stops_when_left():
    taken = 0
    ahead = []

    def read(i):
        ahead.append(i - taken)
        return i

    reader = Prefetch(read, [(i,) for i in range(20)], depth=2)
    with reader as items:
        for i in items:
            # let the reader run as far ahead as it may: until the queue is full or it is done
            deadline = time.monotonic() + 5
            while not reader.queue.full() and reader.thread.is_alive():
                assert time.monotonic() < deadline, "the reader neither filled the queue nor ended"
            taken = i + 1
    assert max(ahead) <= 3  # two in the queue, one being read
    prefetch = Prefetch(read, [(i,) for i in range(1000)], depth=2)
    with prefetch as items:
        next(items)
    assert not prefetch.thread.is_alive()

    def fail(i):
        if i == 3:
            raise TrainingDataError("chunk 3 is bad")
        return i

    with (
        pytest.raises(TrainingDataError, match="chunk 3 is bad"),
        Prefetch(fail, [(i,) for i in range(10)]) as items,
    ):
        assert list(items)


def test_batches_pool_groups_of_chunks_and_keep_every_row_once():
    import torch

    parts = [
        (np.arange(n, dtype=np.float32)[:, None] + 100 * k, np.ones((n, 1), np.float32))
        for k, n in enumerate([10, 7, 10, 3, 9])
    ]
    generator = torch.Generator().manual_seed(0)
    cut = list(batches(parts, 4, generator, group=2))
    assert [len(f) for f, _ in cut[:-1]] == [4] * (len(cut) - 1)
    rows = np.concatenate([f[:, 0] for f, _ in cut])
    expected = np.concatenate([p[0][:, 0] for p in parts])
    assert sorted(rows) == sorted(expected) and list(rows) != list(expected)
    in_order = np.concatenate([f[:, 0] for f, _ in batches(parts, 4)])
    assert list(in_order) == list(expected)


def test_a_large_validation_set_is_measured_on_a_bounded_sample_of_whole_chunks():
    plan = [(k, np.arange(k % 3, 100, 7)) for k in range(40)]
    n_pixels = 50
    limit = 60 * n_pixels * 8  # room for 60 rows
    kept = loop.bounded(plan, n_pixels, seed=3, limit=limit)
    assert 0 < sum(len(rows) for _, rows in kept) <= 60
    chunks = [k for k, _ in kept]
    assert chunks == sorted(set(chunks)) and len(chunks) < len(plan)
    whole = dict(plan)
    # every kept chunk but the last one taken keeps all its rows: reads stay whole chunks
    assert sum(len(rows) == len(whole[k]) for k, rows in kept) >= len(kept) - 1
    again = loop.bounded(plan, n_pixels, seed=3, limit=limit)  # seeded
    assert [(k, list(r)) for k, r in again] == [(k, list(r)) for k, r in kept]
    assert loop.bounded(plan, n_pixels, seed=3, limit=10**9) is plan  # small sets stay whole


def test_bounded_validation_rows_are_read_once(store, streamed_only, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "VAL_RESIDENT_BYTES", 30 * store.n_pixels * 8)
    result = train(
        store, SMALL.replace(epochs=3), "in-process", checkpoint_dir=tmp_path, progress=False
    )
    assert all(np.isfinite(r["val_loss"]) for r in result.history)
    # sample, population sample (at most every chunk each), 3 epochs, and the few validation
    # chunks of 30 rows (~12 per chunk here) once: not every chunk again after each epoch
    assert len(streamed_only) <= store.n_chunks * (2 + 3) + 4


@pytest.mark.parametrize("n_chunks, world", [(10, 1), (10, 3), (3, 2), (1, 2)])
def test_epoch_plans_share_the_chunks_among_ranks(n_chunks, world):
    train_rows = [np.arange(k % 3, 20, 2) for k in range(n_chunks)]
    plans = [loop.epoch_plan(train_rows, 0, 4, rank, world) for rank in range(world)]
    taken = sorted((k, int(r)) for plan in plans for k, rows in plan for r in rows)
    assert taken == sorted((k, int(r)) for k, rows in enumerate(train_rows) for r in rows)
    again = [loop.epoch_plan(train_rows, 0, 4, rank, world) for rank in range(world)]
    assert [[(k, list(r)) for k, r in p] for p in plans] == [
        [(k, list(r)) for k, r in p] for p in again
    ]
    other = loop.epoch_plan(train_rows, 0, 5, 0, world)
    if n_chunks > 2:
        assert [k for k, _ in other] != [k for k, _ in plans[0]]  # another order next epoch


def test_dask_trains_from_a_store_by_its_path(store, tmp_path):
    with labkit.connect(backend="dask", workers=1):
        result = train(store, SMALL, checkpoint_dir=tmp_path, progress=False)
    assert result.backend == "dask"
    here = train(
        store,
        SMALL.replace(threads=1),
        "in-process",
        checkpoint_dir=tmp_path / "here",
        progress=False,
    )
    assert [r["loss"] for r in result.history] == [r["loss"] for r in here.history]


def test_ray_workers_read_their_own_chunks_of_a_store(store, ray_head, tmp_path, monkeypatch):
    monkeypatch.setattr(SpectraStore, "__getitem__", lambda self, key: pytest.fail("store[..]"))
    cluster = labkit.connect(ray_head.gcs_address, backend="ray", token_file=ray_head.token_file)
    result = train(
        store,
        SMALL.replace(num_workers=2, epochs=2),
        cluster=cluster,
        checkpoint_dir=tmp_path,
        progress=False,
    )
    assert result.backend == "ray"
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["val_loss"]) for r in result.history)
    import ray

    ray.kill(ray.get_actor("AutoscalingCoordinator", namespace="AutoscalingCoordinator"))
