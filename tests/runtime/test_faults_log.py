"""Faults injected into real replay logs: torn tails of every length, flipped bytes, damage
before and after the newest checkpoint, episodes cut by a stop; and a real ``runtime=async``
run on the twin killed (SIGKILL) mid-episode and resumed.

What every case asserts: a reader never changes the file; the records kept are the records
written less exactly the damaged ones; a torn tail's bytes land in ``replay.log.torn``; a
resume goes on where the checkpoint covers the damage and stops with one line where it does
not; no transition joins two episodes.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from mbpo_arm.agent.checkpoint import latest_checkpoint
from mbpo_arm.agent.replay import ReplayBuffer
from mbpo_arm.agent.runtime.replay_log import (
    HEADER,
    LogDamageError,
    ReplayLog,
    read_log,
    record_dtype,
)
from tests.runtime.async_helpers import QUICK, check_nothing_lost, finish, logged, start, wait_for

OBS, ACT = 19, 5
SIZE = record_dtype(OBS, ACT).itemsize
EPISODE = 100  # transitions per episode in the logs written here (ArmReach's time limit)


def transition(k: int, episode: int = EPISODE) -> tuple:
    """Transition ``k`` of a run whose episodes are ``episode`` long: obs continue within an
    episode (``next_obs`` of ``k`` is ``obs`` of ``k + 1``), the last one is truncated."""
    obs = np.full(OBS, k, np.float32)
    return (obs, np.full(ACT, -k, np.float32), float(k), obs + 1, False,
            k % episode == episode - 1)


def write_log(path: Path, n: int, first: int = 0) -> bytes:
    """A log of transitions ``first .. first + n - 1``, closed; returns its bytes."""
    log = ReplayLog.open(path, OBS, ACT, first_seq=first)
    for k in range(first, first + n):
        log.append(*transition(k))
    log.close()
    return path.read_bytes()


def flip(path: Path, offset: int) -> bytes:
    """Invert one byte of ``path`` at ``offset``; returns the damaged file's bytes."""
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))
    return bytes(raw)


def joined(obs: np.ndarray, next_obs: np.ndarray, terminated: np.ndarray,
           truncated: np.ndarray) -> int:
    """Transitions read as continuing into the next although it starts elsewhere."""
    done = (np.asarray(terminated) > 0) | (np.asarray(truncated) > 0)
    return int((~done[:-1] & (next_obs[:-1] != obs[1:]).any(axis=1)).sum())


# ------------------------------------------------------------------------------ torn tails
def test_torn_tails_of_every_length_are_kept_aside_and_appends_line_up(tmp_path: Path) -> None:
    """A write cut after 1 .. size - 1 bytes: readers keep the 20 whole records and leave the
    file as it is; a resume whose checkpoint holds the torn transition moves exactly those
    bytes into ``replay.log.torn`` and appends at the record boundary; one whose checkpoint
    does not refuses and changes nothing."""
    whole = write_log(tmp_path / "whole.log", 21)
    for cut in range(1, SIZE):
        run = tmp_path / f"cut{cut}"
        run.mkdir()
        path, torn = run / "replay.log", whole[:HEADER.size + 20 * SIZE + cut]
        path.write_bytes(torn)
        records = read_log(path, OBS, ACT)
        assert len(records) == 20 and records.torn_bytes == cut and not len(records.missing)
        assert path.read_bytes() == torn
        with pytest.raises(LogDamageError, match=r"1 record after the newest checkpoint "
                                                 r"\(step 20\) is damaged \(seq 20\)"):
            ReplayLog.open(path, OBS, ACT, checkpoint_step=20)
        assert path.read_bytes() == torn and not (run / "replay.log.torn").exists()
        log = ReplayLog.open(path, OBS, ACT, checkpoint_step=21)
        assert log.next_seq == 21
        log.append(*transition(21))
        log.close()
        assert (run / "replay.log.torn").read_bytes() == torn[HEADER.size + 20 * SIZE:]
        kept = path.read_bytes()
        assert kept[:HEADER.size + 20 * SIZE] == whole[:HEADER.size + 20 * SIZE]
        assert len(kept) == HEADER.size + 21 * SIZE
        assert read_log(path, OBS, ACT).seq.tolist() == [*range(20), 21]


def test_a_torn_last_record_the_checkpoint_holds_resumes(tmp_path: Path,
                                                         capfd: pytest.CaptureFixture) -> None:
    """699 whole records and 185 bytes of the 700th, the newest checkpoint at step 700: the
    resume goes on at 700 (it used to refuse: "the log was replaced")."""
    path = tmp_path / "replay.log"
    whole = write_log(path, 700)
    path.write_bytes(whole[:HEADER.size + 699 * SIZE + 185])
    log = ReplayLog.open(path, OBS, ACT, checkpoint_step=700)
    assert log.next_seq == 700
    log.close()
    assert (tmp_path / "replay.log.torn").read_bytes() == whole[HEADER.size + 699 * SIZE:][:185]
    assert path.stat().st_size == HEADER.size + 699 * SIZE
    err = capfd.readouterr().err
    assert "a torn tail of 185 bytes after seq 698 moved to replay.log.torn" in err


# --------------------------------------------------------------------------- flipped bytes
@pytest.mark.parametrize("record", [0, 25, 49])
@pytest.mark.parametrize("where", ["header", "middle", "crc"])
def test_a_flipped_byte_loses_exactly_its_record(tmp_path: Path, record: int,
                                                 where: str) -> None:
    """One byte of record 0, 25 or 49 (the last) inverted in its header (``seq``), its middle
    or its CRC: the reader keeps the other 49, in order; the file stays as it is."""
    path = tmp_path / "replay.log"
    write_log(path, 50)
    at = {"header": 3, "middle": SIZE // 2, "crc": SIZE - 1}[where]
    damaged = flip(path, HEADER.size + record * SIZE + at)
    records = read_log(path, OBS, ACT)
    assert records.seq.tolist() == [k for k in range(50) if k != record]
    assert path.read_bytes() == damaged
    if record == 49:  # the last: a torn tail, its bytes all there
        assert records.torn_bytes == SIZE and not len(records.missing)
    else:
        assert records.missing.tolist() == [record] and records.bad_bytes == SIZE
    part = read_log(path, OBS, ACT, start=record, stop=record + 3)
    assert part.seq.tolist() == [k for k in range(record, min(record + 3, 50)) if k != record]


def test_a_flipped_byte_in_the_file_header_loses_no_record(tmp_path: Path) -> None:
    """The header's ``first_seq`` (no CRC of its own) damaged: records are found by their own
    seq and CRC; a damaged magic is refused in one line, the file kept."""
    path = tmp_path / "replay.log"
    write_log(path, 50)
    flip(path, 8 + 4 + 4 + 6)  # a high byte of first_seq
    assert read_log(path, OBS, ACT).seq.tolist() == list(range(50))
    assert read_log(path, OBS, ACT, start=10, stop=13).seq.tolist() == [10, 11, 12]
    damaged = flip(path, 2)
    with pytest.raises(ValueError, match=r"replay\.log: not a replay log \(no MBPOLOG1 header\)"):
        ReplayLog.open(path, OBS, ACT, checkpoint_step=50)
    assert path.read_bytes() == damaged


def test_bytes_slipped_into_the_log_are_skipped_to_the_next_record(tmp_path: Path) -> None:
    """37 stray bytes between records 30 and 31: every record is found by its own seq and CRC
    (the records after them no longer lie at their slots)."""
    path = tmp_path / "replay.log"
    raw = write_log(path, 60)
    at = HEADER.size + 31 * SIZE
    path.write_bytes(raw[:at] + bytes(range(37)) + raw[at:])
    records = read_log(path, OBS, ACT)
    assert records.seq.tolist() == list(range(60)) and records.bad_bytes == 37
    assert read_log(path, OBS, ACT, start=40, stop=45).seq.tolist() == list(range(40, 45))


# ----------------------------------------------------------- damage against the checkpoint
def test_damage_the_checkpoint_covers_is_reported_and_the_file_kept(
        tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """Record 350 of 700 damaged, the newest checkpoint at 700: the log is not shortened (it
    used to be cut to 67224 bytes, losing 349 valid records), the resume goes on at 700."""
    path = tmp_path / "replay.log"
    write_log(path, 700)
    damaged = flip(path, HEADER.size + 350 * SIZE + 40)
    assert len(damaged) == 134424
    log = ReplayLog.open(path, OBS, ACT, checkpoint_step=700)
    assert log.next_seq == 700 and path.read_bytes() == damaged
    log.append(*transition(700))
    log.close()
    assert "1 record missing or damaged (seq 350); the newest checkpoint (step 700) holds" \
        in capfd.readouterr().err
    records = read_log(path, OBS, ACT)
    assert len(records) == 700 and records.missing.tolist() == [350]
    assert path.read_bytes()[:len(damaged)] == damaged


def test_damage_after_the_checkpoint_stops_with_one_line_then_keeps_every_intact_record(
        tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """Record 650 of 700 damaged, the newest checkpoint at 600: the resume stops with one
    line (it used to drop the 49 valid records after 650 silently); with
    ``accept_log_damage`` it goes on at 700 and a reader returns 600..699 without 650."""
    path = tmp_path / "replay.log"
    write_log(path, 700)
    damaged = flip(path, HEADER.size + 650 * SIZE + 100)
    with pytest.raises(LogDamageError) as err:
        ReplayLog.open(path, OBS, ACT, checkpoint_step=600)
    line = str(err.value)
    assert "\n" not in line and path.read_bytes() == damaged
    assert ("1 record after the newest checkpoint (step 600) is damaged (seq 650) and would "
            "be lost; 99 records after it are intact") in line
    assert line.endswith("resume.accept_log_damage=true")
    log = ReplayLog.open(path, OBS, ACT, checkpoint_step=600, accept_log_damage=True)
    assert log.next_seq == 700
    log.close()
    assert "resume.accept_log_damage=true: 1 record lost (seq 650)" in capfd.readouterr().err
    after = read_log(path, OBS, ACT, start=600)
    assert after.seq.tolist() == [k for k in range(600, 700) if k != 650]
    assert after.missing.tolist() == [650] and path.read_bytes() == damaged


# ------------------------------------------------------------------------ episode boundaries
def test_an_episode_cut_by_a_stop_reads_as_truncated(tmp_path: Path) -> None:
    """A run stopped at transition 129 (mid-episode) resumes with a new episode: readers
    return 129 truncated (its flags on the disk stay as written), whole and by range, and a
    replay restored with 129 open marks it when the new episode's first transition comes."""
    path = tmp_path / "replay.log"
    write_log(path, 130)
    log = ReplayLog.open(path, OBS, ACT, checkpoint_step=130)
    assert log.open_episode
    reset = np.full(OBS, -7.0, np.float32)  # the new episode starts elsewhere
    log.append(reset, np.zeros(ACT, np.float32), 0.0, reset + 1, False, False)
    log.close()
    raw = np.frombuffer(path.read_bytes()[HEADER.size:], record_dtype(OBS, ACT))
    assert not raw["truncated"][129] and raw["truncated"][99]
    records = read_log(path, OBS, ACT)
    assert records.truncated[129] and records.truncated.sum() == 2
    assert joined(records.obs, records.next_obs, records.terminated, records.truncated) == 0
    assert read_log(path, OBS, ACT, start=120, stop=130).truncated[-1]  # by its successor
    assert not read_log(path, OBS, ACT, start=120, stop=129).truncated.any()
    replay = ReplayBuffer(1000, OBS, ACT)  # as restored from a checkpoint at 130
    for k in range(130):
        replay.add(*transition(k))
    assert not replay.all()["truncated"][129]
    replay.add(reset, np.zeros(ACT, np.float32), 0.0, reset + 1, False, False)
    data = replay.all()
    assert data["truncated"][129] and data["truncated"].sum() == 2
    assert joined(data["obs"], data["next_obs"], data["terminated"], data["truncated"]) == 0


# ------------------------------------------------------------------------- a real process
@pytest.mark.slow
def test_async_run_killed_mid_episode_resumes_with_nothing_lost_or_joined(
        tmp_path: Path) -> None:
    """SIGKILL of a real ``runtime=async`` run on the twin (its actor, then its learner)
    mid-episode, after a checkpoint, then ``resume=``: log records = checkpoint replay =
    actor steps, the killed episode's last transition is truncated in the log as read and in
    the replay, no episode joined."""
    run = tmp_path / "run"
    proc = start(*QUICK, "trainer.total_steps=100000", f"run_dir={run}")
    try:
        wait_for(lambda: latest_checkpoint(run) is not None and logged(run) >= 130
                 and 30 <= logged(run) % EPISODE <= 60, timeout=90)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    learner = int((run / "learner.pid").read_text())
    with contextlib.suppress(ProcessLookupError):  # the whole tree, as a power cut does
        os.kill(learner, signal.SIGKILL)
    wait_for(lambda: not _alive(learner), timeout=10)
    before = read_log(run / "replay.log", OBS, ACT)
    n = len(before)
    assert before.seq.tolist() == list(range(n))
    assert not (before.terminated[-1] or before.truncated[-1]), "killed between episodes"
    proc = start(f"resume={run}", f"trainer.total_steps={n + 50}")
    try:
        stats = finish(proc, run)
    finally:
        proc.kill()
    check_nothing_lost(run, n + 50, stats, learned=False)
    log = read_log(run / "replay.log", OBS, ACT)
    replay = ReplayBuffer.load(latest_checkpoint(run) / "replay.npz").all()
    assert log.truncated[n - 1] and replay["truncated"][n - 1]
    np.testing.assert_array_equal(replay["truncated"], log.truncated.astype(np.float32))
    assert joined(log.obs, log.next_obs, log.terminated, log.truncated) == 0
    assert joined(replay["obs"], replay["next_obs"], replay["terminated"],
                  replay["truncated"]) == 0
    state = torch.load(latest_checkpoint(run) / "state.pt", weights_only=False)
    assert state["counters"]["env_steps"] == stats["actor_steps"] == len(log) == n + 50


def _alive(pid: int) -> bool:
    """``pid`` runs (a zombie nobody has reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
