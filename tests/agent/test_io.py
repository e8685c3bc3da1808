"""Crash-safe writes: no temporary leftovers, clear errors on torn files, SIGKILL safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mbpo_arm.agent.checkpoint import atomic_torch_save
from mbpo_arm.agent.io import (
    atomic_save_npz,
    atomic_write_bytes,
    atomic_write_text,
    load_npz,
    remove_stale_temporaries,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_writers_round_trip_and_leave_no_temporaries(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "b.txt", "héllo")
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "c.pt")
    atomic_save_npz(tmp_path / "d.npz", x=np.arange(4), y=np.eye(2, dtype=np.float32))
    atomic_write_text(tmp_path / "b.txt", "replaced")  # overwrite an existing file

    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt", "c.pt", "d.npz"]
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "replaced"
    assert torch.equal(torch.load(tmp_path / "c.pt")["w"], torch.arange(3))
    arrays = load_npz(tmp_path / "d.npz")
    assert np.array_equal(arrays["x"], np.arange(4)) and arrays["y"].dtype == np.float32


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "state.pt"
    atomic_torch_save({"v": 1}, target)
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails, type varies
        atomic_torch_save({"v": lambda: 2}, target)
    assert torch.load(target)["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_truncated_or_foreign_npz_gives_a_clear_error(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    atomic_save_npz(good, x=np.arange(10_000, dtype=np.float64))
    data = good.read_bytes()
    cases = {"half.npz": data[: len(data) // 2], "tail_cut.npz": data[:-30],
             "empty.npz": b"", "garbage.npz": b"not an archive at all" * 10}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=r"corrupted or truncated") as err:
            load_npz(tmp_path / name)
        assert name in str(err.value)
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "missing.npz")


def test_remove_stale_temporaries_only_removes_writer_leftovers(tmp_path: Path) -> None:
    (tmp_path / ".replay.npz.1234.deadbeef.tmp").write_bytes(b"torn")
    (tmp_path / ".keep.tmp").write_bytes(b"a user's file")
    (tmp_path / "replay.npz").write_bytes(b"x")
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [".replay.npz.1234.deadbeef.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep.tmp", "replay.npz"]


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from mbpo_arm.agent.io import atomic_save_npz
    i = 0
    while True:
        i += 1
        # ~4 MB per write, so a kill lands inside a write most of the time
        atomic_save_npz(sys.argv[1], version=np.array(i), data=np.full(500_000, i))
        print(i, flush=True)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_during_writes_leaves_a_loadable_file(tmp_path: Path) -> None:
    target = tmp_path / "replay.npz"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        completed, stamps = [], []
        for _ in range(3):
            completed.append(int(proc.stdout.readline()))
            stamps.append(time.perf_counter())
        time.sleep(0.5 * (stamps[2] - stamps[1]))  # halfway through the fourth write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert completed == [1, 2, 3]
    arrays = load_npz(target)  # the last complete write, whole
    version = int(arrays["version"])
    assert version >= 3
    assert arrays["data"].shape == (500_000,) and (arrays["data"] == version).all()
    remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["replay.npz"]
