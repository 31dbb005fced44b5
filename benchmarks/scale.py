"""Scale benchmark: `polydiff score` and `polydiff sample` in one process and on Ray, on this machine.

    python benchmarks/scale.py --json                      # 10,000,000-row table, 20,000 QM9 molecules
    python benchmarks/scale.py --rows 2000000 --molecules 2000 --runs 1

Scoring: a Parquet table of ``--rows`` rows x ``--cols`` Gaussian columns (row groups of 1,000,000 rows,
written by the script, 1 % of rows shifted as anomalies) is scored by a saved dte-np detector (fitted on
50,000 other rows) through the CLI: ``--engine local`` (one process, all cores), then ``--engine ray`` with
1 and 2 workers (a local Ray instance started by the command, counted in its time). Each configuration
runs ``--runs`` times; the table gives the median rows/s, the ratio to local, and the peak resident memory
of the command's own process and of each Ray scoring actor (VmHWM, polled from /proc). The Ray outputs
are compared byte for byte with the local one. A second, 10x smaller table checks that the actors' peak
memory does not grow with the table.

Generation: ``--molecules`` QM9 molecules with the bundled model, ``polydiff sample molecule --engine
local`` (one process) and ``--engine ray`` with 1 and 2 workers, chunks of 128 with 1 thread each: samples/s
and the byte comparison of the SMILES files (``--gen-engines`` chooses the configurations; the first is
the reference).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name, log, versions  # noqa: E402

POLYDIFF = [sys.executable, "-m", "polydiff.cli"]
TARGETS = {"ray2_over_local": 0.8}


def make_table(path: Path, rows: int, cols: int, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    names = [f"f{j}" for j in range(cols)]
    with pq.ParquetWriter(path, pa.schema([(n, pa.float64()) for n in names])) as w:
        for start in range(0, rows, 1_000_000):
            m = min(1_000_000, rows - start)
            x = rng.normal(size=(m, cols))
            x[rng.random(m) < 0.01] += 4.0
            w.write_table(pa.Table.from_arrays([pa.array(x[:, j]) for j in range(cols)], names=names),
                          row_group_size=1_000_000)


def _hwm_mb(pid: int):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None


def _actor_pids(prefix: bytes):
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if open(f"/proc/{pid}/cmdline", "rb").read().startswith(prefix):
                    out.append(int(pid))
            except OSError:
                pass
    return out


def timed(cmd, actor_prefix: bytes = b"ray::MapWorker(") -> dict:
    """Run ``cmd``; wall seconds and the peak memory of its process and of every Ray actor it started."""
    peaks, actors = {}, set()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def watch():
        while not done.is_set():
            for pid in [p.pid] + _actor_pids(actor_prefix):
                if pid != p.pid:
                    actors.add(pid)
                v = _hwm_mb(pid)
                if v is not None:
                    peaks[pid] = max(peaks.get(pid, 0.0), v)
            time.sleep(0.2)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    _, err = p.communicate()
    seconds = time.perf_counter() - t0
    done.set()
    t.join()
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed: {err.strip().splitlines()[-1] if err.strip() else ''}")
    return {"seconds": seconds, "peak_mb_main": round(peaks.get(p.pid, 0.0), 1),
            "peak_mb_actors": sorted(round(peaks[a], 1) for a in actors if a in peaks)}


def scoring(tmp: Path, rows: int, cols: int, runs: int) -> dict:
    import numpy as np
    import pandas as pd

    big = tmp / "big.parquet"
    log(f"writing a {rows:,}-row Parquet table ...")
    make_table(big, rows, cols)
    small = tmp / "small.parquet"
    make_table(small, max(rows // 10, 1), cols, seed=1)
    rng = np.random.default_rng(2)
    pd.DataFrame(rng.normal(size=(50_000, cols)), columns=[f"f{j}" for j in range(cols)]).to_csv(tmp / "train.csv",
                                                                                                  index=False)
    det = tmp / "det.safetensors"
    subprocess.run(POLYDIFF + ["score", str(tmp / "train.csv"), "--train", str(tmp / "train.csv"), "--save-model",
                               str(det), "--out", str(tmp / "train_scores.csv")], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    configs = {"local": [], "ray1": ["--engine", "ray", "--workers", "1"], "ray2": ["--engine", "ray", "--workers", "2"]}
    res = {}
    for name, extra in configs.items():
        times = []
        for r in range(runs):
            out = tmp / f"{name}.csv"
            log(f"scoring: {name} run {r + 1}/{runs}")
            times.append(timed(POLYDIFF + ["score", str(big), "--model", str(det), "--out", str(out)] + extra))
        med = statistics.median(t["seconds"] for t in times)
        res[name] = {"seconds": [round(t["seconds"], 2) for t in times], "median_s": round(med, 2),
                     "rows_per_s": round(rows / med), "peak_mb_main": max(t["peak_mb_main"] for t in times),
                     "peak_mb_actors": max((max(t["peak_mb_actors"]) for t in times if t["peak_mb_actors"]),
                                           default=None)}
        if name != "local":
            res[name]["same_bytes_as_local"] = (tmp / f"{name}.csv").read_bytes() == (tmp / "local.csv").read_bytes()
            res[name]["over_local"] = round(res[name]["rows_per_s"] / res["local"]["rows_per_s"], 3)
    log("scoring: ray2 on the 10x smaller table (actor memory)")
    t = timed(POLYDIFF + ["score", str(small), "--model", str(det), "--out", str(tmp / "small.csv"), "--engine", "ray",
                          "--workers", "2"])
    res["ray2_small_table"] = {"rows": max(rows // 10, 1), "peak_mb_actors": max(t["peak_mb_actors"], default=None)}
    for f in ("local.csv", "ray1.csv", "ray2.csv", "small.csv", "big.parquet", "small.parquet"):
        (tmp / f).unlink(missing_ok=True)
    return res


def generation(tmp: Path, n: int, engines) -> dict:
    res = {}
    every = {"local": ["--engine", "local"], "ray1": ["--engine", "ray", "--workers", "1"],
             "ray2": ["--engine", "ray", "--workers", "2"]}
    configs = {k: every[k] for k in engines}
    first = engines[0]
    for name, extra in configs.items():
        log(f"generation: {n:,} molecules, {name}")
        t = timed(POLYDIFF + ["sample", "molecule", "-n", str(n), "--seed", "0", "--out", str(tmp / f"{name}.smi")]
                  + extra)
        res[name] = {"seconds": round(t["seconds"], 2), "samples_per_s": round(n / t["seconds"], 2),
                     "peak_mb_main": t["peak_mb_main"], "peak_mb_actors": max(t["peak_mb_actors"], default=None)}
        if name != first:
            res[name][f"same_bytes_as_{first}"] = (tmp / f"{name}.smi").read_bytes() == (tmp / f"{first}.smi").read_bytes()
            res[name][f"over_{first}"] = round(res[name]["samples_per_s"] / res[first]["samples_per_s"], 3)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--cols", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3, help="runs of each scoring configuration (the median is kept)")
    ap.add_argument("--molecules", type=int, default=20_000, help="0 skips generation")
    ap.add_argument("--gen-engines", default="local,ray1,ray2",
                    help="generation configurations, the first one the reference for the byte comparison")
    ap.add_argument("--skip-scoring", action="store_true")
    ap.add_argument("--tmp", default=None, help="working folder [a temporary one]")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        tmp = Path(tmp)
        result = {"machine": {"cpu": cpu_name(), "cpus": os.cpu_count()},
                  "versions": versions(distributions=("ray", "pyarrow", "pandas")),
                  "settings": {"rows": a.rows, "cols": a.cols, "runs": a.runs, "molecules": a.molecules},
                  "targets": TARGETS}
        if not a.skip_scoring:
            result["scoring"] = scoring(tmp, a.rows, a.cols, a.runs)
        if a.molecules:
            result["generation"] = generation(tmp, a.molecules, a.gen_engines.split(","))
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        for part in ("scoring", "generation"):
            for name, r in result.get(part, {}).items():
                print(part, name, json.dumps(r))


if __name__ == "__main__":
    main()
