"""A full disk: one line with exit 4 naming the file, no temporary file left behind, and the run
resumes to byte-identical outputs once space is freed.

Two ways to fill the disk: a real 2 MB tmpfs (needs mounting: as root, or under ``unshare -rm``
as .ci/run does; skipped with the reason elsewhere, unless ASYNCFL_REQUIRE_TMPFS=1 makes that a
failure), and ``os.write`` made to fail with ENOSPC after N writes into the run directory (runs
everywhere)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY, write_scenario

from asyncfl.cli import main
from asyncfl.errors import EXIT_DISK_FULL

SCENARIO = {**TINY, "stop": {"server_steps": 45}, "eval": {"every_steps": 5}}
EVERY = "3"


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _tmp_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if ".tmp-" in p.name)


def _outputs(d: Path) -> dict[str, bytes]:
    return {name: (d / name).read_bytes() for name in ("metrics.csv", "events.csv", "scenario.yaml")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("ref")
    scen = write_scenario(root / "s.yaml", SCENARIO)
    assert main(["run", str(scen), "--out", str(root / "ref"), "--quiet", "--checkpoint-every", EVERY]) == 0
    return scen, _outputs(root / "ref")


def _finish_after_full_disk(
    code: int, err: str, out: Path, scen: Path, ref: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    """``code``/``err`` of a run into a disk that filled up; space is free again now: the run
    continues as its one line says and ends byte-identical to ``ref``."""
    if code == 0:
        assert _outputs(out) == ref
        return
    assert code == EXIT_DISK_FULL, err
    assert err.startswith("asyncfl: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    assert "No space left on device" in err and str(out) in err, err
    if "asyncfl resume" in err:
        code, err2 = _cli(["resume", str(out), "--quiet"], capsys)
    else:
        assert "run the command again" in err, err
        code, err2 = _cli(["run", str(scen), "--out", str(out), "--quiet", "--checkpoint-every", EVERY], capsys)
    assert code == 0, err2
    assert _outputs(out) == ref
    assert not (out / "checkpoint").exists() and not (out / "events.partial.csv").exists()
    assert _tmp_files(out) == []


# ------------------------------------------------------------------------------------------------
# Simulated: os.write fails with ENOSPC after N writes into the run directory
# ------------------------------------------------------------------------------------------------


def _enospc_after(monkeypatch: pytest.MonkeyPatch, under: Path, n: int, code: int = errno.ENOSPC) -> list[str]:
    """Make the (n+1)-th os.write into a file under ``under`` and every later one fail with
    ``code`` (ENOSPC); returns the list of paths that failed (filled in as it happens)."""
    real_write = os.write
    count, failed = [0], []

    def write(fd: int, data: Any) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(str(under)):
            count[0] += 1
            if count[0] > n:
                failed.append(target)
                raise OSError(code, os.strerror(code))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    return failed


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to tell files apart")
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 9, 14, 20, 28])
def test_simulated_full_disk_mid_run_leaves_no_temporary_file_and_resumes_identically(
    reference: tuple[Path, dict[str, bytes]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    n: int,
) -> None:
    scen, ref = reference
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        failed = _enospc_after(m, out, n)
        code, err = _cli(["run", str(scen), "--out", str(out), "--quiet", "--checkpoint-every", EVERY], capsys)
    assert failed, "no write failed: the run is too short for this n"
    assert code == EXIT_DISK_FULL, err
    assert _tmp_files(out) == []
    _finish_after_full_disk(code, err, out, scen, ref, capsys)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to tell files apart")
@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, getattr(errno, "EDQUOT", errno.ENOSPC)])
def test_read_only_forbidden_or_over_quota_mid_run_is_one_line_and_resumable(
    reference: tuple[Path, dict[str, bytes]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    code: int,
) -> None:
    """A file system turned read-only, a permission taken away (exit 2) or a used-up quota (exit 4)
    in the middle of a run: one line naming the file, no temporary file, and the run resumes."""
    scen, ref = reference
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _enospc_after(m, out, 6, code)
        exit_code, err = _cli(["run", str(scen), "--out", str(out), "--quiet", "--checkpoint-every", EVERY], capsys)
    want = EXIT_DISK_FULL if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) else 2
    assert exit_code == want, err
    assert err.count("\n") == 1 and os.strerror(code) in err and str(out) in err and "asyncfl resume" in err, err
    assert _tmp_files(out) == []
    code2, err2 = _cli(["resume", str(out), "--quiet"], capsys)
    assert code2 == 0, err2
    assert _outputs(out) == ref


def test_simulated_full_disk_in_data_describe_csv_leaves_no_table(
    tmp_path: Path, tiny_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It used to exit 0 with a truncated CSV."""
    out = tmp_path / "tables"
    out.mkdir()
    with monkeypatch.context() as m:
        _enospc_after(m, out, 0)
        code, err = _cli(["data", "describe", str(tiny_file), "--csv", str(out / "t.csv")], capsys)
    assert code == EXIT_DISK_FULL and err.count("\n") == 1 and "t.csv" in err, err
    assert list(out.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# Real: a 2 MB tmpfs, filled up to a few kB
# ------------------------------------------------------------------------------------------------


def _no_tmpfs(reason: str) -> None:
    if os.environ.get("ASYNCFL_REQUIRE_TMPFS"):
        pytest.fail(f"ASYNCFL_REQUIRE_TMPFS is set but {reason}")
    pytest.skip(reason)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        _no_tmpfs("mounting a tmpfs needs root (.ci/run runs this file under `unshare -rm` where that works)")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        _no_tmpfs(f"cannot mount a tmpfs here: {' '.join(res.stderr.split()) or res.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(mnt: Path, leave: int) -> Path:
    """A filler file that leaves about ``leave`` bytes free on ``mnt``."""
    st = os.statvfs(mnt)
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(st.f_bavail * st.f_frsize - leave, 0))
    return filler


def test_tmpfs_full_mid_run_leaves_no_temporary_file_and_resumes_byte_identical(
    reference: tuple[Path, dict[str, bytes]], tmpfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scen, ref = reference
    stopped_at: set[str] = set()
    for leave in (0, 4096, 8192, 16384, 32768, 49152, 65536, 98304, 131072, 196608, 262144, 393216):
        out = tmpfs / f"run{leave}"
        filler = _fill(tmpfs, leave)
        code, err = _cli(["run", str(scen), "--out", str(out), "--quiet", "--checkpoint-every", EVERY], capsys)
        assert code in (0, EXIT_DISK_FULL), err
        assert _tmp_files(tmpfs) == [], err
        if code == EXIT_DISK_FULL:
            stopped_at.add(err.split(": ")[2].rsplit("/", 1)[-1])  # the file whose write failed
        filler.unlink()
        _finish_after_full_disk(code, err, out, scen, ref, capsys)
        shutil.rmtree(out)
    assert len(stopped_at) >= 3, f"the disk filled up at too few places: {stopped_at}"


def test_tmpfs_full_in_data_describe_plot_and_report(
    reference: tuple[Path, dict[str, bytes]],
    tmpfs: Path,
    tmp_path: Path,
    tiny_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scen, _ = reference
    run_dir = tmp_path / "r"
    assert main(["run", str(scen), "--out", str(run_dir), "--quiet"]) == 0
    _fill(tmpfs, 0)
    for args, name in (
        (["data", "describe", str(tiny_file), "--csv", str(tmpfs / "t.csv")], "t.csv"),
        (["plot", str(run_dir), "--kind", "convergence", "--out", str(tmpfs / "f.png")], "f.png"),
        (["report", str(run_dir), "--out", str(tmpfs / "r.md")], "r.md"),
    ):
        code, err = _cli(args, capsys)
        assert code == EXIT_DISK_FULL, (args, err)
        assert err.count("\n") == 1 and str(tmpfs) in err and "No space left on device" in err, err
        assert not (tmpfs / name).exists() and _tmp_files(tmpfs) == [], args
