"""A full disk: one line with exit 4 naming the file, no temporary file left behind, and the run
resumes to byte-identical outputs once space is freed.

Two ways to fill the disk: a real 2 MB tmpfs (needs mounting: as root, or under ``unshare -rm``
as .ci/run does; skipped with the reason elsewhere, unless ASYNCFL_REQUIRE_TMPFS=1 makes that a
failure), and ``os.write`` made to fail with ENOSPC after N writes into the run directory (runs
everywhere)."""

from __future__ import annotations

import errno
import json
import os
import pickle
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


# ------------------------------------------------------------------------------------------------
# The other user-facing writers: data describe --figure, bench --out, report (Markdown with its
# figures folder). Each writes through a temporary file in the same folder: a full disk is one
# line (exit 4) naming the file, a read-only or forbidden path one line (exit 2), and nothing
# half-written, no temporary file and no folder this command made is left behind.
# ------------------------------------------------------------------------------------------------

BENCH_ARGS = ["bench", "--workload", "null", "--clients", "10", "--in-flight", "2", "--updates", "20", "--quiet"]


def _bench(out: Path, capsys: pytest.CaptureFixture[str], *more: str) -> tuple[int, str]:
    return _cli([*BENCH_ARGS, *more, "--out", str(out)], capsys)


def _one_line(err: str, code: int, *named: str) -> None:
    assert err.startswith("asyncfl: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    assert os.strerror(code) in err, err
    for n in named:
        assert n in err, err


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to tell files apart")
@pytest.mark.parametrize("code", [errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EROFS, errno.EACCES])
def test_simulated_full_disk_in_data_describe_figure_leaves_no_figure(
    tmp_path: Path, tiny_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """It used to write the PNG in place (matplotlib's own file): a full disk or a kill left a
    truncated figure, and the error did not name it."""
    out = tmp_path / "figs"
    out.mkdir()
    with monkeypatch.context() as m:
        failed = _enospc_after(m, out, 0, code)
        exit_code, err = _cli(["data", "describe", str(tiny_file), "--figure", str(out / "f.png")], capsys)
    assert failed, "the figure was not written through os.write into its folder"
    assert exit_code == (EXIT_DISK_FULL if code != errno.EROFS and code != errno.EACCES else 2), err
    _one_line(err, code, str(out / "f.png"))
    assert list(out.iterdir()) == []


def test_data_describe_figure_looks_as_before_and_is_reproducible(
    tmp_path: Path, tiny_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Written atomically, the figure is the same picture: a PNG of 120 dpi whose pixels do not
    depend on how it was written, byte-identical when written twice."""
    from matplotlib.image import imread

    a, b = tmp_path / "a.png", tmp_path / "sub" / "b.png"
    for p in (a, b):
        code, err = _cli(["data", "describe", str(tiny_file), "--figure", str(p)], capsys)
        assert code == 0, err
    assert a.read_bytes() == b.read_bytes() and a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"matplotlib" not in a.read_bytes().lower()  # no tool version in the file
    img = imread(a)
    width_in, height_in = 6.0, 7.0  # the tiny scenario: few clients, classification (two panels)
    assert img.shape[:2] == (round(height_in * 120), round(width_in * 120))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to tell files apart")
@pytest.mark.parametrize("n", [0, 1])
def test_simulated_full_disk_in_bench_leaves_no_half_written_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    """bench.json and bench.md used to be written in place: a full disk left them truncated (or
    empty) and the one line did not say which file. n = 0: bench.json fails; 1: bench.md."""
    out = tmp_path / "bench"
    with monkeypatch.context() as m:
        failed = _enospc_after(m, out, n)
        code, err = _bench(out, capsys)
    assert failed, "bench wrote nothing through os.write into --out"
    assert code == EXIT_DISK_FULL, err
    name = ("bench.json", "bench.md")[n]
    _one_line(err, errno.ENOSPC, str(out / name))
    assert sorted(p.name for p in out.iterdir()) == (["bench.json"] if n else [])
    if n:  # what was written is whole
        assert json.loads((out / "bench.json").read_text())["workloads"]["null"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to tell files apart")
@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, getattr(errno, "EDQUOT", errno.ENOSPC)])
def test_read_only_forbidden_or_over_quota_in_bench_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    out = tmp_path / "bench"
    with monkeypatch.context() as m:
        _enospc_after(m, out, 0, code)
        exit_code, err = _bench(out, capsys)
    assert exit_code == (EXIT_DISK_FULL if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) else 2), err
    _one_line(err, code, str(out / "bench.json"))
    assert list(out.iterdir()) == []


@pytest.fixture(scope="module")
def report_source(reference: tuple[Path, dict[str, bytes]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run to write reports of."""
    scen, _ = reference
    run_dir = tmp_path_factory.mktemp("report") / "r"
    assert main(["run", str(scen), "--out", str(run_dir), "--quiet"]) == 0
    return run_dir


def _report_writes(source: Path, tmp_path: Path) -> int:
    """How many files a Markdown report of ``source`` writes (its figures and itself)."""
    assert main(["report", str(source), "--out", str(tmp_path / "count" / "r.md")]) == 0
    return len(list((tmp_path / "count" / "r_files").iterdir())) + 1


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to tell files apart")
def test_simulated_full_disk_in_markdown_report_removes_only_what_it_made(
    report_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It used to leave r_files/ (empty, or with the figures written so far) behind. Now: at
    every write that can fail, the folders and files this report made are removed, the ones that
    were there before (a folder holding other files, an older figure) are kept."""
    writes = _report_writes(report_source, tmp_path)
    assert writes >= 3
    for n in range(writes):
        for before in ("nothing", "parent", "assets"):
            out = tmp_path / f"out{n}-{before}"
            target = out / "new" / "r.md"
            if before != "nothing":
                out.mkdir()
            if before == "assets":
                (out / "new" / "r_files").mkdir(parents=True)
                (out / "new" / "r_files" / "mine.txt").write_text("keep me")
            with monkeypatch.context() as m:
                failed = _enospc_after(m, out, n)
                code, err = _cli(["report", str(report_source), "--out", str(target)], capsys)
            assert failed, (n, before)
            assert code == EXIT_DISK_FULL, err
            _one_line(err, errno.ENOSPC, str(out))
            left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob(f"out{n}-{before}*/**/*"))
            if before == "nothing":
                assert not out.exists(), left
            elif before == "parent":
                assert list(out.iterdir()) == [], left
            else:
                assert left == [f"{out.name}/new", f"{out.name}/new/r_files", f"{out.name}/new/r_files/mine.txt"]


def test_tmpfs_full_in_describe_figure_bench_and_markdown_report(
    report_source: Path, tmpfs: Path, capsys: pytest.CaptureFixture[str], tiny_file: Path
) -> None:
    """A real full disk: each command is one line with exit 4 naming the file, and leaves no file,
    no temporary file and no folder of its own."""
    for leave in (0, 8192, 65536):
        filler = _fill(tmpfs, leave)
        for args, names in (
            (["data", "describe", str(tiny_file), "--figure", str(tmpfs / "f.png")], ["f.png"]),
            ([*BENCH_ARGS, "--out", str(tmpfs / "b")], ["b"]),
            (["report", str(report_source), "--out", str(tmpfs / "md" / "r.md")], ["md"]),
        ):
            code, err = _cli(args, capsys)
            assert code == EXIT_DISK_FULL if leave == 0 else code in (0, EXIT_DISK_FULL), (args, err)
            if code == EXIT_DISK_FULL:
                _one_line(err, errno.ENOSPC, str(tmpfs))
                if names != ["b"]:
                    assert not any((tmpfs / n).exists() for n in names), (args, err)
                else:  # bench makes --out before it measures (an unwritable one fails at once)
                    js = tmpfs / "b" / "bench.json"
                    assert not js.exists() or json.loads(js.read_text())["workloads"], (args, err)
                    assert not (tmpfs / "b" / "bench.md").exists(), (args, err)
            assert _tmp_files(tmpfs) == [], args
            for n in names:
                if (tmpfs / n).is_dir():
                    shutil.rmtree(tmpfs / n)
                elif (tmpfs / n).exists():
                    (tmpfs / n).unlink()
        filler.unlink()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to tell files apart")
@pytest.mark.parametrize("code", [errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EROFS, errno.EACCES])
def test_simulated_full_disk_in_data_convert_trace_leaves_no_half_written_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """It used to write the CSV in place: a full disk left a truncated profile or trace, with
    exit 2. Now: nothing written, one line naming the file, exit 4 for a full disk or quota."""
    src = tmp_path / "client_device_capacity"
    src.write_bytes(pickle.dumps({7: {"computation": 30.0, "communication": 800.0}}))
    out = tmp_path / "out"
    out.mkdir()
    with monkeypatch.context() as m:
        failed = _enospc_after(m, out, 0, code)
        exit_code, err = _cli(["data", "convert-trace", str(src), str(out / "p.csv")], capsys)
    assert failed, "the CSV was not written through os.write into its folder"
    assert exit_code == (EXIT_DISK_FULL if code not in (errno.EROFS, errno.EACCES) else 2), err
    _one_line(err, code, str(out / "p.csv"))
    assert list(out.iterdir()) == []
    exit_code, err = _cli(["data", "convert-trace", str(src), str(out / "p.csv")], capsys)
    assert exit_code == 0, err
    assert (out / "p.csv").read_text().startswith("client,speed,")
