"""atomic_write: all or nothing, with the permissions a plain open() would give, through a
temporary file created exclusively, with no leftovers of killed writes piling up."""

import os
import subprocess
import sys

import pytest

from metricssl.core.atomic import atomic_write, temp_path_for


def test_writes_and_follows_umask(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    old = os.umask(0o022)
    try:
        with atomic_write(target) as f:
            f.write(b"abc")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"abc"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "log.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as f:
        f.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["log.csv"]


def test_a_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out.txt"
    temp_path_for(target).symlink_to(victim)
    with atomic_write(target, "w") as f:
        f.write("new")
    assert victim.read_text() == "precious"
    assert not target.is_symlink() and target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "victim.txt"]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_of_killed_writes_are_removed(tmp_path):
    target = tmp_path / "last.pt"
    mine = temp_path_for(target)
    # A killed earlier process that had this process's pid left the same name (reused), and
    # one with another pid left its own (removed); a live writer's file is kept.
    mine.write_bytes(b"half of an old save")
    dead = mine.with_name(mine.name.replace(f"-{os.getpid()}-", f"-{_dead_pid()}-"))
    dead.write_bytes(b"half of another")
    live = mine.with_name(mine.name.replace(f"-{os.getpid()}-", f"-{os.getppid()}-"))
    live.write_bytes(b"being written")
    for content in (b"one", b"two"):
        with atomic_write(target) as f:
            f.write(content)
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.pt", live.name])
