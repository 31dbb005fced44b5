"""Cache PyOD baselines (KNN, IForest, ECOD, LOF; default parameters) per protocol/dataset/seed."""
import json
import os
import sys
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

sys.path.insert(0, os.path.dirname(__file__))
import protocol as P  # noqa: E402

warnings.filterwarnings("ignore")


def make(name, seed):
    from pyod.models.ecod import ECOD
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN
    from pyod.models.lof import LOF
    np.random.seed(seed)
    return {"KNN": lambda: KNN(), "IForest": lambda: IForest(random_state=seed), "ECOD": lambda: ECOD(),
            "LOF": lambda: LOF()}[name]()


def main(prot, seeds, methods, datasets=None):
    path = os.path.join(os.path.dirname(__file__), f"baselines_{prot}.json")
    res = json.load(open(path)) if os.path.exists(path) else {}
    for ds in datasets or P.dataset_names():
        for seed in seeds:
            Xtr, Xte, yte = P.split(ds, seed, prot)
            for m in methods:
                key = f"{ds}|{seed}|{m}"
                if key in res:
                    continue
                det = make(m, seed)
                t0 = time.perf_counter(); det.fit(Xtr); t1 = time.perf_counter()
                s = det.decision_function(Xte); t2 = time.perf_counter()
                s = np.nan_to_num(s)
                res[key] = {"auroc": roc_auc_score(yte, s), "auprc": average_precision_score(yte, s),
                            "fit_s": t1 - t0, "score_s": t2 - t1, "n_train": len(Xtr), "n_test": len(Xte)}
                print(prot, key, round(res[key]["auroc"], 4), round(t1 - t0, 2), round(t2 - t1, 2), flush=True)
                json.dump(res, open(path + ".tmp", "w"))
                os.replace(path + ".tmp", path)


if __name__ == "__main__":
    prot = sys.argv[1]
    seeds = [int(s) for s in sys.argv[2].split(",")]
    methods = sys.argv[3].split(",") if len(sys.argv) > 3 else ["KNN", "IForest", "ECOD", "LOF"]
    main(prot, seeds, methods)
