"""File locks shared by workers: exclusive, named holder, released with the file, and by the OS on a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

from prokd.runs.lock import lock_holder, try_lock


def test_a_lock_is_exclusive_until_released(tmp_path):
    path = tmp_path / "stage.lock"
    lock = try_lock(path)
    assert lock is not None
    assert try_lock(path) is None  # another open of it, here or in another process
    holder = json.loads(path.read_text())
    assert holder["pid"] == os.getpid()
    assert lock_holder(path).startswith(f"pid {os.getpid()} on ")
    lock.release()
    assert not path.exists()
    with try_lock(path) as again:
        assert again is not None
    assert not path.exists()


def test_the_folders_a_lock_created_go_with_it_and_nothing_else(tmp_path):
    with try_lock(tmp_path / "runs" / "deep" / "a.lock"):
        assert (tmp_path / "runs" / "deep").is_dir()
    assert not (tmp_path / "runs").exists()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "mine.txt").write_text("kept")
    with try_lock(tmp_path / "runs" / "deep" / "a.lock"):
        pass
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["mine.txt"]


def test_waiting_for_a_lock_takes_it_once_it_is_released(tmp_path):
    path = tmp_path / "efficiency.lock"
    first = try_lock(path)
    taken = []
    waiter = threading.Thread(target=lambda: taken.append(try_lock(path, wait=True)))
    waiter.start()
    time.sleep(0.3)
    assert not taken  # still waiting
    first.release()
    waiter.join(timeout=10)
    assert taken and taken[0] is not None
    taken[0].release()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    path = tmp_path / "stage.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from prokd.runs.lock import try_lock; l = try_lock({str(path)!r}); "
                               "print(l is not None, flush=True); import time; time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "True"
    assert try_lock(path) is None
    assert lock_holder(path).startswith(f"pid {holder.pid} ")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with try_lock(path) as lock:  # the file is still there, the lock is not
        assert lock is not None


def test_an_unreadable_lock_file_names_no_holder(tmp_path):
    (tmp_path / "x.lock").write_text("not json")
    assert lock_holder(tmp_path / "x.lock") == "unknown"
    assert lock_holder(tmp_path / "missing.lock") == "unknown"
