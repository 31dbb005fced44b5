"""Cache exact K-nearest-neighbour distances/indices (test -> train) for fast score-function iteration."""
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np
from sklearn.neighbors import NearestNeighbors

sys.path.insert(0, os.path.dirname(__file__))
import protocol as P  # noqa: E402

CACHE = "/tmp/anomaly_cache"
K = 64


def get(ds, seed, prot, k=K):
    os.makedirs(CACHE, exist_ok=True)
    f = os.path.join(CACHE, f"{prot}_{ds}_{seed}_k{k}.npz")
    if os.path.exists(f):
        z = np.load(f)
        return z["dist"], z["idx"], z["y"]
    Xtr, Xte, y = P.split(ds, seed, prot)
    kk = min(k, len(Xtr))
    nn = NearestNeighbors(n_neighbors=kk).fit(Xtr)
    dist, idx = nn.kneighbors(Xte)
    dist = dist.astype(np.float32)
    idx = idx.astype(np.int32)
    np.savez(f, dist=dist, idx=idx, y=y)
    return dist, idx, y


if __name__ == "__main__":
    prot = sys.argv[1]
    seeds = [int(s) for s in sys.argv[2].split(",")]
    for ds in P.dataset_names():
        for s in seeds:
            t0 = time.perf_counter()
            get(ds, s, prot)
            print(prot, ds, s, round(time.perf_counter() - t0, 1), flush=True)
