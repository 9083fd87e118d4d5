"""Caches that heal: a damaged parent, probe-cache entry or tuning database is dropped (or cut
back to what parses), logged and rebuilt, never a reason for every later candidate to fail."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from tests.workers.factories import candidate
from workers.data import Split
from workers.parents import _load_checked, trained_parent
from workers.probe.cache import ProbeCache
from workers.probe.tuning import heal_db
from workers.train import Recipe


def _split(shape: tuple[int, ...], n: int = 32) -> Split:
    rng = np.random.default_rng(0)
    return Split(rng.standard_normal((n, *shape)).astype(np.float32), np.arange(n) % 10)


@pytest.mark.parametrize(("family", "damage"), [("mlp", "torn"), ("cnn", "flipped")])
def test_a_damaged_parent_is_dropped_and_trained_again(
    family: str, damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cand = candidate(family)  # cnn: BatchNorm, with a 0-d num_batches_tracked tensor
    recipe = Recipe(epochs=1, batch_size=16)
    data = _split(cand.input_shape)
    kw = {"dataset": "t", "split_seed": 0, "recipe": recipe, "train_data": data}
    _, hit = trained_parent(cand, cache_dir=tmp_path, **kw)  # type: ignore[arg-type]
    assert not hit
    (entry,) = tmp_path.glob("*.safetensors")
    raw = bytearray(entry.read_bytes())
    if damage == "torn":
        entry.write_bytes(raw[: len(raw) // 2])
    else:  # a bit flipped in the last tensor's bytes: the file still parses
        raw[-3] ^= 0x40
        entry.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        _, hit = trained_parent(cand, cache_dir=tmp_path, **kw)  # type: ignore[arg-type]
    assert not hit and "is corrupt" in caplog.text
    _load_checked(entry)  # rebuilt, and it matches its checksum
    assert trained_parent(cand, cache_dir=tmp_path, **kw)[1]  # type: ignore[arg-type]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_torn_probe_cache_entry_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ProbeCache(tmp_path)
    cache.put("abcdef", {"median_ms": 1.5})
    assert cache.get("abcdef") == {"median_ms": 1.5}
    path = cache._path("abcdef")
    path.write_text('{"median_ms": ')
    with caplog.at_level(logging.WARNING):
        assert cache.get("abcdef") is None
    assert "corrupt" in caplog.text and not path.exists()
    cache.put("abcdef", {"median_ms": 1.4})
    assert cache.get("abcdef") == {"median_ms": 1.4}


def test_a_damaged_tuning_database_keeps_what_parses(tmp_path: Path) -> None:
    wl = tmp_path / "database_workload.json"
    rec = tmp_path / "database_tuning_record.json"
    wl.write_text('["h0", "m0"]\n["h1", "m1"]\n["h2", GARBAGE\n["h3", "m3"]\n')
    rec.write_text('[0, {"a": 1}]\n[1, {"b": 2}]\n[3, {"lost": 1}]\n[0, {"torn"\n')
    heal_db(tmp_path, ValueError("bad line"))
    # workloads after the first bad line are gone (records point at workloads by index)
    assert [json.loads(x) for x in wl.read_text().splitlines()] == [["h0", "m0"], ["h1", "m1"]]
    assert [json.loads(x)[0] for x in rec.read_text().splitlines()] == [0, 1]
    assert (tmp_path / "database_workload.json.corrupt").is_file()


def test_a_lock_held_past_its_deadline_fails_instead_of_waiting(tmp_path: Path) -> None:
    import fcntl

    from workers.probe._locks import LockTimeoutError, flocked

    lock = tmp_path / "x.lock"
    with open(lock, "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # another process's hold, as far as flock knows
        with pytest.raises(LockTimeoutError), flocked(lock, timeout_s=0.2):
            pass
    with flocked(lock, timeout_s=0.2):  # released: taken at once
        pass
