"""Finding and killing Ray actor processes by their process title (the fault tests of scoring and sampling)."""
import os
import signal
import threading
import time
from pathlib import Path


def actor_pids(prefix: bytes) -> list:
    """Processes whose command line (Ray's process title) starts with ``prefix``."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().startswith(prefix):
                        out.append(int(pid))
            except OSError:
                pass
    return out


def kill_one_actor_after_first_part(stage: Path, prefix: bytes, timeout: float = 120.0):
    """Start a thread that SIGKILLs one actor titled ``prefix`` as soon as ``stage`` holds a finished part;
    returns (thread, record): the record gets ``pid`` and ``parts_before`` (parts finished at the kill)."""
    record = {}

    def run():
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(stage.glob("part-*")):
                pids = actor_pids(prefix)
                if pids:
                    record["parts_before"] = len(list(stage.glob("part-*")))
                    os.kill(pids[0], signal.SIGKILL)
                    record["pid"] = pids[0]
                    return
            time.sleep(0.005)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, record
