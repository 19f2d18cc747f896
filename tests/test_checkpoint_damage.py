"""Damaged checkpoints: ``asyncfl resume`` exits 2 with one line naming the file and deletes
nothing; a checkpoint that lost only its ``latest.json`` (or holds a stale newer generation)
resumes to the same outputs as a run that was never stopped."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY, write_scenario

import asyncfl
from asyncfl.cli import main
from asyncfl.config import load_scenario
from asyncfl.errors import RunDirError
from asyncfl.runs import checkpoint
from asyncfl.runs.checkpoint import Checkpointer
from asyncfl.runs.runner import build

STEPS, EVERY = 40, 4
SCENARIO = {**TINY, "stop": {"server_steps": STEPS}, "eval": {"every_steps": 10}}


class _Crash(Exception):
    """Stands for a SIGKILL: the run stops between checkpoints, without one of its own."""


def _crash_at(step: int, start: int = 0) -> Callable[[float, dict[str, Any]], None]:
    """A progress hook that kills the run in its ``step``-th server step (counted from ``start``)."""
    count = [start]

    def hook(fraction: float, info: dict[str, Any]) -> None:
        count[0] += 1
        if count[0] >= step:
            raise _Crash(f"crash at step {count[0]}")

    return hook


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``ref``: an uninterrupted run. ``crashed``: the same run killed at step 14 with a
    checkpoint every 4 steps (generation 3 committed). ``later``: ``crashed`` resumed and killed
    again at step 22 (generation 5). ``gen3``: a copy of ``crashed``'s checkpoint directory."""
    root = tmp_path_factory.mktemp("ckpt")
    scen = write_scenario(root / "s.yaml", SCENARIO)
    asyncfl.run(scen, root / "ref")
    crashed = root / "crashed"
    with pytest.raises(_Crash):
        asyncfl.run(scen, crashed, checkpoint_every=EVERY, progress=_crash_at(14))
    assert json.loads((crashed / "checkpoint" / "latest.json").read_text()) == {"generation": 3}
    shutil.copytree(crashed / "checkpoint", root / "gen3")
    later = root / "later"
    shutil.copytree(crashed, later)
    with pytest.raises(_Crash):
        asyncfl.resume(later, progress=_crash_at(22, start=12))
    assert json.loads((later / "checkpoint" / "latest.json").read_text()) == {"generation": 5}
    return {"ref": root / "ref", "crashed": crashed, "later": later, "gen3": root / "gen3"}


def _copy(runs: dict[str, Path], tmp_path: Path, name: str = "crashed") -> Path:
    out = tmp_path / "run"
    shutil.copytree(runs[name], out)
    return out


def _files(d: Path) -> dict[str, bytes | None]:
    """Every path under ``d`` with its bytes (None for folders); the lock's content is the pid."""
    return {
        str(p.relative_to(d)): (p.read_bytes() if p.is_file() and p.name != ".lock" else None)
        for p in sorted(d.rglob("*"))
    }


def _resume(d: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["resume", str(d), "--quiet"])
    return code, capsys.readouterr().err


def _same_as_ref(runs: dict[str, Path], d: Path) -> None:
    for name in ("metrics.csv", "events.csv"):
        assert (d / name).read_bytes() == (runs["ref"] / name).read_bytes(), name
    assert asyncfl.load_run(d).status == "completed"
    assert not (d / "checkpoint").exists() and not (d / "events.partial.csv").exists()


def _rehash(d: Path, g: int) -> None:
    """Record the current tensors-<g>.pt's hash in state-<g>.json (to damage the content only)."""
    ck = d / "checkpoint"
    state = json.loads((ck / f"state-{g}.json").read_text())
    state["tensors_sha256"] = hashlib.sha256((ck / f"tensors-{g}.pt").read_bytes()).hexdigest()
    (ck / f"state-{g}.json").write_text(json.dumps(state))


def _edit_state(g: int, edit: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        p = d / "checkpoint" / f"state-{g}.json"
        state = json.loads(p.read_text())
        p.write_text(json.dumps(edit(state)))

    return damage


def _write(rel: str, data: bytes) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        (d / rel).write_bytes(data)

    return damage


def _truncate(rel: str, keep: float) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        p = d / rel
        p.write_bytes(p.read_bytes()[: int(len(p.read_bytes()) * keep)])

    return damage


def _flip_byte(rel: str) -> Callable[[Path], None]:
    """One flipped bit in the middle: torch.load alone would read most such files without error."""

    def damage(d: Path) -> None:
        p = d / rel
        b = bytearray(p.read_bytes())
        b[len(b) // 2] ^= 0x10
        p.write_bytes(bytes(b))

    return damage


def _remove(rel: str) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        (d / rel).unlink()

    return damage


def _replace_by_dir(rel: str) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        p = d / rel
        p.unlink()
        p.mkdir()

    return damage


def _list_tensors(d: Path) -> None:
    torch.save([torch.zeros(3)], d / "checkpoint" / "tensors-3.pt")
    _rehash(d, 3)


def _other_generation_tensors(d: Path) -> None:
    """tensors-3.pt replaced by a complete tensors file of another generation."""
    buf = io.BytesIO()
    torch.save({"w0": torch.zeros(3)}, buf)
    (d / "checkpoint" / "tensors-3.pt").write_bytes(buf.getvalue())


def _checkpoint_is_a_file(d: Path) -> None:
    shutil.rmtree(d / "checkpoint")
    (d / "checkpoint").write_text("not a directory\n")


def _long_number(rel: str) -> Callable[[Path], None]:
    """The file's first integer replaced by one of 5,000 digits (past Python's int conversion limit)."""

    def damage(d: Path) -> None:
        p = d / rel
        p.write_bytes(re.sub(rb"[0-9]+", b"9" * 5000, p.read_bytes(), count=1))

    return damage


def _replace_bytes(rel: str, old: bytes, new: bytes) -> Callable[[Path], None]:
    """Every ``old`` in the file replaced by ``new`` (a long float in place of an integer, ...)."""

    def damage(d: Path) -> None:
        p = d / rel
        p.write_bytes(p.read_bytes().replace(old, new))

    return damage


def _fifo(rel: str) -> Callable[[Path], None]:
    """A named pipe in the file's place: reading it would block forever."""

    def damage(d: Path) -> None:
        p = d / rel
        p.unlink()
        os.mkfifo(p)

    return damage


def _drop(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda s: {k: v for k, v in s.items() if k != key}


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda s: {**s, key: value}


T, S, L = "checkpoint/tensors-3.pt", "checkpoint/state-3.json", "checkpoint/latest.json"

# (damage, the file the message must name)
DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    # 1. tensors
    "tensors-garbage": (_write(T, b"garbage\n"), T),
    "tensors-empty": (_write(T, b""), T),
    "tensors-truncated": (_truncate(T, 0.5), T),
    "tensors-bit-flipped": (_flip_byte(T), T),
    "tensors-missing": (_remove(T), T),
    "tensors-a-folder": (_replace_by_dir(T), T),
    "tensors-not-a-mapping": (_list_tensors, T),
    "tensors-of-another-generation": (_other_generation_tensors, T),
    # 2. latest.json
    "latest-list": (_write(L, b"[]"), L),
    "latest-empty-object": (_write(L, b"{}"), L),
    "latest-string-generation": (_write(L, b'{"generation": "x"}'), L),
    "latest-bool-generation": (_write(L, b'{"generation": true}'), L),
    "latest-zero-generation": (_write(L, b'{"generation": 0}'), L),
    "latest-garbage": (_write(L, b"\xff\xfegarbage"), L),
    "latest-empty-file": (_write(L, b""), L),
    "latest-a-folder": (_replace_by_dir(L), L),
    "latest-long-number": (_long_number(L), L),
    "latest-a-fifo": (_fifo(L), L),
    "latest-names-missing-generation": (_write(L, b'{"generation": 99}'), "checkpoint/state-99.json"),
    # 2. state-<g>.json
    "state-list": (_write(S, b"[]"), S),
    "state-empty-object": (_write(S, b"{}"), S),
    "state-garbage": (_write(S, b"garbage"), S),
    "state-empty-file": (_write(S, b""), S),
    "state-truncated": (_truncate(S, 0.5), S),
    "state-deeply-nested": (_write(S, b"[" * 100000 + b"]" * 100000), S),
    "state-deep-inside-an-object": (_write(S, b'{"format": 2, "engine": ' + b"[" * 100000 + b"]" * 100000 + b"}"), S),
    "state-long-number": (_long_number(S), S),
    "state-long-float": (_replace_bytes(S, b'"format": 2', b'"format": 2.' + b"5" * 5000), S),
    "state-binary": (_write(S, b"\x89PNG\r\n\x1a\n\xff\xfe\x00"), S),
    "state-a-fifo": (_fifo(S), S),
    "state-missing": (_remove(S), S),
    "state-no-partial-sizes": (_edit_state(3, _drop("partial_sizes")), S),
    "state-no-engine": (_edit_state(3, _drop("engine")), S),
    "state-no-backend": (_edit_state(3, _drop("backend")), S),
    "state-no-format": (_edit_state(3, _drop("format")), S),
    "state-old-format": (_edit_state(3, _set("format", 1)), S),
    "state-engine-a-list": (_edit_state(3, _set("engine", [])), S),
    "state-info-a-string": (_edit_state(3, _set("info", "x")), S),
    "state-partial-sizes-a-list": (_edit_state(3, _set("partial_sizes", [1, 2])), S),
    "state-partial-size-a-string": (_edit_state(3, _set("partial_sizes", {"events": "x", "metrics": 5})), S),
    "state-partial-size-negative": (_edit_state(3, _set("partial_sizes", {"events": -1, "metrics": 5})), S),
    "state-wrong-generation": (_edit_state(3, _set("generation", 2)), S),
    "state-hash-a-number": (_edit_state(3, _set("tensors_sha256", 5)), S),
    "state-partial-hashes-not-hex": (_edit_state(3, _set("partial_sha256", {"events": "x", "metrics": "y"})), S),
    "state-partial-hashes-a-list": (_edit_state(3, _set("partial_sha256", ["a" * 64, "b" * 64])), S),
    "state-scenario-hash-a-number": (_edit_state(3, _set("scenario_sha256", 5)), S),
    # the run's scenario changed since the checkpoint (even by a comment: the bytes are checked)
    "scenario-edited": (_replace_bytes("scenario.yaml", b"\n", b" # edited\n"), "scenario.yaml"),
    # partial record files and the checkpoint folder
    "events-partial-missing": (_remove("events.partial.csv"), "events.partial.csv"),
    "metrics-partial-missing": (_remove("metrics.partial.csv"), "metrics.partial.csv"),
    "events-partial-shorter": (_truncate("events.partial.csv", 0.3), "events.partial.csv"),
    "metrics-partial-empty": (_write("metrics.partial.csv", b""), "metrics.partial.csv"),
    "events-partial-a-folder": (_replace_by_dir("events.partial.csv"), "events.partial.csv"),
    # records already written edited or damaged (the same length: only their hash tells)
    "events-partial-bit-flipped": (_flip_byte("events.partial.csv"), "events.partial.csv"),
    "metrics-partial-bit-flipped": (_flip_byte("metrics.partial.csv"), "metrics.partial.csv"),
    "checkpoint-a-file": (_checkpoint_is_a_file, "checkpoint"),
}


def _assert_one_line_error(code: int, err: str, names: str) -> None:
    assert code == 2, err
    assert err.startswith("asyncfl: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert names in err, err


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_checkpoint_exits_2_with_one_line_and_deletes_nothing(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    d = _copy(runs, tmp_path)
    damage, names = DAMAGE[case]
    damage(d)
    before = _files(d)
    code, err = _resume(d, capsys)
    _assert_one_line_error(code, err, str(d / names))
    assert _files(d) == before  # nothing deleted, nothing cut back
    assert len(err) < 600, err


def _restore_cases() -> dict[str, Callable[[Path], None]]:
    """State and tensors of valid structure whose content does not fit: checkpoint.load_checkpoint
    cannot see it; restoring the engine and backend raises."""

    def no_w0(d: Path) -> None:
        p = d / "checkpoint" / "tensors-3.pt"
        tensors = torch.load(p, weights_only=True)
        del tensors["w0"]
        torch.save(tensors, p)
        _rehash(d, 3)

    return {
        "engine-empty": _edit_state(3, _set("engine", {})),
        "engine-other-format": _edit_state(3, lambda s: {**s, "engine": {**s["engine"], "format": 999}}),
        "engine-no-now": _edit_state(
            3, lambda s: {**s, "engine": {k: v for k, v in s["engine"].items() if k != "now"}}
        ),
        "engine-bad-inflight": _edit_state(3, lambda s: {**s, "engine": {**s["engine"], "inflight": [[1, 2]]}}),
        "engine-other-client-count": _edit_state(3, lambda s: {**s, "engine": {**s["engine"], "num_clients": 7}}),
        "backend-empty": _edit_state(3, _set("backend", {})),
        "tensors-without-w0": no_w0,
    }


RESTORE = _restore_cases()


@pytest.mark.parametrize("case", list(RESTORE))
def test_restoring_a_checkpoint_that_does_not_fit_is_a_run_dir_error(
    runs: dict[str, Path], tmp_path: Path, case: str
) -> None:
    """checkpoint.restoring turns what Engine.restore / Backend.load_state raise on such content
    into a RunDirError naming the state file (what runner.resume should wrap its restore in)."""
    d = _copy(runs, tmp_path)
    RESTORE[case](d)
    before = _files(d)
    ckpt = checkpoint.load_checkpoint(d, cut=False)
    with pytest.raises(RunDirError, match=r"state-3\.json: does not fit") as info:
        with checkpoint.restoring(ckpt):
            built = build(load_scenario(d / "scenario.yaml"), d, snapshot=ckpt.engine)
            built.backend.load_state(ckpt.backend, ckpt.tensors)
    assert "\n" not in info.value.one_line()
    assert _files(d) == before  # cut=False: the partial files are untouched


@pytest.mark.parametrize("case", list(RESTORE))
def test_resume_of_a_checkpoint_that_does_not_fit_exits_2(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    d = _copy(runs, tmp_path)
    RESTORE[case](d)
    before = _files(d)
    code, err = _resume(d, capsys)
    _assert_one_line_error(code, err, str(d / S))
    assert _files(d) == before


# ---- 3. a checkpoint without latest.json, and stale newer generations ---------------------------


def test_resume_without_latest_uses_the_newest_complete_generation(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _copy(runs, tmp_path)
    (d / L).unlink()
    assert checkpoint.has_checkpoint(d)
    ckpt = checkpoint.load_checkpoint(d, cut=False)
    assert ckpt.generation == 3
    assert (d / "events.partial.csv").stat().st_size >= ckpt.partial_sizes["events"]
    code, err = _resume(d, capsys)
    assert code == 0, err
    _same_as_ref(runs, d)


def _rewind_to_gen3(runs: dict[str, Path], tmp_path: Path) -> Path:
    """What a crash between the rename of state-5.json and the commit of latest.json leaves:
    generation 3 committed and its files in place, generation 5's files beside them, the partial
    files already holding generation 5's records. Built from ``later`` with generation 3's files
    put back and latest.json rewound to 3."""
    d = _copy(runs, tmp_path, "later")
    for f in runs["gen3"].iterdir():
        if f.name != "latest.json":
            shutil.copy2(f, d / "checkpoint" / f.name)
    (d / L).write_text(json.dumps({"generation": 3}))
    return d


def test_a_newer_generation_without_its_commit_is_ignored(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _rewind_to_gen3(runs, tmp_path)
    assert checkpoint.load_checkpoint(d, cut=False).generation == 3
    code, err = _resume(d, capsys)
    assert code == 0, err
    _same_as_ref(runs, d)


def test_a_garbage_newer_generation_without_its_commit_is_ignored_and_replaced(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _copy(runs, tmp_path)
    (d / "checkpoint" / "state-4.json").write_text("garbage")
    (d / "checkpoint" / "tensors-4.pt").write_text("garbage")
    code, err = _resume(d, capsys)
    assert code == 0, err
    _same_as_ref(runs, d)


def test_without_latest_a_damaged_newest_generation_falls_back_to_an_older_complete_one(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _rewind_to_gen3(runs, tmp_path)
    (d / L).unlink()
    (d / "checkpoint" / "tensors-5.pt").write_bytes(b"garbage\n")
    assert checkpoint.load_checkpoint(d, cut=False).generation == 3
    code, err = _resume(d, capsys)
    assert code == 0, err
    _same_as_ref(runs, d)


def test_without_latest_the_newest_generation_wins(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _rewind_to_gen3(runs, tmp_path)
    (d / L).unlink()
    assert checkpoint.load_checkpoint(d, cut=False).generation == 5
    code, err = _resume(d, capsys)
    assert code == 0, err
    _same_as_ref(runs, d)


def test_without_latest_and_no_complete_generation_exits_2(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _copy(runs, tmp_path)
    (d / L).unlink()
    (d / T).write_bytes(b"garbage\n")
    before = _files(d)
    code, err = _resume(d, capsys)
    _assert_one_line_error(code, err, str(d / L))
    assert "tensors-3.pt" in err
    assert _files(d) == before


def test_tensors_without_any_state_are_no_checkpoint(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A crash while the first generation was written (its tensors renamed, no state yet): the
    run starts over, as before."""
    d = _copy(runs, tmp_path)
    for f in (d / "checkpoint").iterdir():
        if not f.name.startswith("tensors-"):
            f.unlink()
    assert not checkpoint.has_checkpoint(d)
    code, err = _resume(d, capsys)
    assert code == 0, err
    _same_as_ref(runs, d)


def test_save_removes_a_stale_state_before_writing_the_tensors_of_its_generation(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resumed from generation 3 with an uncommitted state-4.json of an earlier attempt lying
    there: a crash after the new tensors-4.pt and before the new state-4.json must not leave the
    old state beside the new tensors."""
    d = _copy(runs, tmp_path)
    shutil.copy2(d / S, d / "checkpoint" / "state-4.json")
    ckpt = checkpoint.load_checkpoint(d, cut=False)

    def crash_on_state(path: Path, data: bytes) -> None:
        if Path(path).name.startswith("state-"):
            raise _Crash("killed before the state was written")
        real_write(path, data)

    real_write = checkpoint.write_atomic
    monkeypatch.setattr(checkpoint, "write_atomic", crash_on_state)
    with pytest.raises(_Crash):
        Checkpointer(d, ckpt).save(ckpt.engine, ckpt.backend, {"w0": torch.zeros(2)}, ckpt.partial_sizes, {})
    assert (d / "checkpoint" / "tensors-4.pt").is_file()
    assert not (d / "checkpoint" / "state-4.json").exists()
    monkeypatch.undo()
    assert checkpoint.load_checkpoint(d, cut=False).generation == 3
    (d / L).unlink()
    assert checkpoint.load_checkpoint(d, cut=False).generation == 3


def test_state_records_the_hash_of_its_tensors(runs: dict[str, Path]) -> None:
    ck = runs["crashed"] / "checkpoint"
    state = json.loads((ck / "state-3.json").read_text())
    assert state["tensors_sha256"] == hashlib.sha256((ck / "tensors-3.pt").read_bytes()).hexdigest()


def test_state_records_the_hashes_of_the_partial_records_and_the_scenario(runs: dict[str, Path]) -> None:
    """Generation 3 of the crashed run and generation 5 of the resumed one (whose running hashes
    continued from the verified prefix) both record exactly their files' hashes."""
    for name, g in (("crashed", 3), ("later", 5)):
        d = runs[name]
        state = json.loads((d / "checkpoint" / f"state-{g}.json").read_text())
        for key, rel in (("events", "events.partial.csv"), ("metrics", "metrics.partial.csv")):
            prefix = (d / rel).read_bytes()[: state["partial_sizes"][key]]
            assert state["partial_sha256"][key] == hashlib.sha256(prefix).hexdigest(), (name, key)
        assert state["scenario_sha256"] == hashlib.sha256((d / "scenario.yaml").read_bytes()).hexdigest()


def test_resume_refuses_a_changed_scenario_and_resumes_once_it_is_put_back(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An edited scenario.yaml used to be resumed silently: the run's first half under one seed,
    the rest under another, in one events.csv."""
    d = _copy(runs, tmp_path)
    original = (d / "scenario.yaml").read_bytes()
    edited = re.sub(rb"(?m)^seed: [0-9]+$", b"seed: 12345", original, count=1)
    assert edited != original
    (d / "scenario.yaml").write_bytes(edited)
    before = _files(d)
    code, err = _resume(d, capsys)
    _assert_one_line_error(code, err, str(d / "scenario.yaml"))
    assert "put the original back" in err and "generation 3" in err, err
    assert _files(d) == before
    (d / "scenario.yaml").write_bytes(original)
    code, err = _resume(d, capsys)
    assert code == 0, err
    _same_as_ref(runs, d)


def test_rows_after_the_checkpoint_may_be_anything(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the recorded prefix is checked: what a killed run appended after its last checkpoint
    (here garbage) is cut off and written again."""
    d = _copy(runs, tmp_path)
    with (d / "events.partial.csv").open("ab") as f:
        f.write(b"half a row,\xff\xfe")
    code, err = _resume(d, capsys)
    assert code == 0, err
    _same_as_ref(runs, d)


def test_a_state_without_partial_or_scenario_hashes_is_resumed_without_those_checks(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checkpoints written before the hashes existed still resume (their prefix unchecked)."""
    d = _copy(runs, tmp_path)
    _edit_state(3, lambda s: _drop("scenario_sha256")(_drop("partial_sha256")(s)))(d)
    code, err = _resume(d, capsys)
    assert code == 0, err
    _same_as_ref(runs, d)


def test_a_state_without_a_hash_is_still_read(runs: dict[str, Path], tmp_path: Path) -> None:
    """Checkpoints written before tensors_sha256 existed still resume."""
    d = _copy(runs, tmp_path)
    _edit_state(3, _drop("tensors_sha256"))(d)
    assert checkpoint.load_checkpoint(d, cut=False).generation == 3


def _outside(tmp_path: Path, data: bytes = b"not yours\n") -> Path:
    p = tmp_path / "outside.txt"
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("rel", ["events.partial.csv", "metrics.partial.csv", "checkpoint/latest.json", S, T])
def test_resume_never_reads_or_writes_through_a_symlink(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], rel: str
) -> None:
    """An events.partial.csv symlinked outside the run directory used to be appended to by resume."""
    d = _copy(runs, tmp_path)
    outside = _outside(tmp_path, (d / rel).read_bytes())
    (d / rel).unlink()
    (d / rel).symlink_to(outside)
    code, err = _resume(d, capsys)
    assert code == 2 and err.count("\n") == 1 and "symbolic link" in err and str(d / rel) in err, err
    assert outside.read_bytes() == (runs["crashed"] / rel).read_bytes()


def test_resume_refuses_a_checkpoint_folder_that_is_a_symlink(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _copy(runs, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(d / "checkpoint", elsewhere)
    (d / "checkpoint").symlink_to(elsewhere)
    before = _files(elsewhere)
    code, err = _resume(d, capsys)
    assert code == 2 and err.count("\n") == 1 and "symbolic link" in err, err
    assert _files(elsewhere) == before


def test_resume_removes_temporary_files_a_killed_writer_left(runs: dict[str, Path], tmp_path: Path) -> None:
    """They used to stay even after a successful resume."""
    d = _copy(runs, tmp_path)
    for rel in (
        ".events.csv.tmp-99999",
        ".manifest.json.tmp-1",
        "checkpoint/.tensors-4.pt.tmp-42",
        "checkpoint/.state-4.json.tmp-42",
    ):
        (d / rel).write_bytes(b"half")
    (d / "mine.tmp-1").write_bytes(b"a user's file: not ours to remove")
    asyncfl.resume(d)
    _same_as_ref(runs, d)
    assert sorted(p.name for p in d.rglob("*") if "tmp" in p.name) == ["mine.tmp-1"]


def test_run_force_replaces_a_file_in_the_checkpoint_folder_place(tmp_path: Path) -> None:
    d = tmp_path / "run"
    d.mkdir()
    (d / "checkpoint").write_text("x")
    checkpoint.clear(d)
    assert not (d / "checkpoint").exists()
