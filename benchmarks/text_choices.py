"""Sampling choices of a text model on the E2E development split (never the test split).

    python benchmarks/text_choices.py --model MODEL --grid '[{"T": 0, "steps": 32}, {"T": 0, "steps": 16}]'

For each setting of the grid (keys: ``sampler`` [the model's], ``schedule`` [the model's], ``T`` temperature
of a categorical sampler [1], ``steps``, ``cfg``
guidance scale [1], ``best`` best-of-k [1], ``prec`` precision, ``thr`` the confidence sampler's
parallel-decoding threshold [none], ``clamp`` an embedding model's clamping of each estimate to its nearest
word [the model's], ``uncond`` also unconditional and
content-control sentences): data-to-text on the first ``--mrs`` distinct development MRs (BLEU against all
their references, slot recall, hallucination rate, fluency perplexity under the Kneser-Ney 4-gram LM of the
training references, sentences per second, network evaluations), and with ``uncond`` 200 unconditional
sentences (their rate per second, copy rate, perplexity, duplicate rate) and 100 containing "Italian" (perplexity, success).
One JSON line per setting.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="e2e_masked")
    ap.add_argument("--grid", required=True, help="JSON list of settings")
    ap.add_argument("--mrs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    import polydiff
    from polydiff_text import datasets, metrics
    from polydiff_text.encoder import Sentence
    from text import _by_mr

    torch.set_num_threads(args.threads)
    model = polydiff.load(args.model, modality="text")
    by = _by_mr(datasets.e2e_dev())
    mrs = list(by)[: args.mrs]
    train_texts = [r.text for r in datasets.e2e()]
    lm = metrics.KneserNey(train_texts, order=4)
    emb = model.config.get("embedding")
    clamp0 = bool(emb.get("clamp", True)) if emb else None
    for g in json.loads(args.grid):
        sargs = {"temperature": g["T"]} if "T" in g else {}  # categorical samplers only; their default is 1
        if "thr" in g:  # the confidence sampler's parallel-decoding threshold
            sargs["threshold"] = g["thr"]
        kw = dict(sampler=g.get("sampler"), steps=g.get("steps"), sampler_args=sargs, best_of=g.get("best", 1))
        if "schedule" in g:
            kw["schedule"] = g["schedule"]
        if "prec" in g:
            kw["precision"] = g["prec"]
        if "clamp" in g and not emb:
            raise SystemExit("clamp applies to embedding models")
        if emb:
            emb["clamp"] = bool(g.get("clamp", clamp0))  # read by every sampling run of this setting
        calls = []
        kw["callback"] = lambda info: calls.append(1)
        t0 = time.perf_counter()
        hyps = [s.text for s in model.generate(len(mrs), mr=mrs, seed=1, cfg_scale=g.get("cfg", 1.0), **kw)]
        dt = time.perf_counter() - t0
        sl = metrics.slots([Sentence(h, m) for h, m in zip(hyps, mrs)])
        out = dict(g, bleu=round(metrics.bleu(hyps, [by[m] for m in mrs]), 2), slot=round(sl["slot_recall"], 3),
                   hall=sl["hallucination_rate"], ppl=round(lm.perplexity(hyps), 2), sps=round(len(mrs) / dt, 1),
                   evals=len(calls))
        if g.get("uncond"):
            t0 = time.perf_counter()
            u = [s.text for s in model.generate(200, seed=2, **kw)]
            usps = 200 / (time.perf_counter() - t0)
            out.update(usps=round(usps, 1), copy=metrics.copy_rate(u, train_texts), uppl=round(lm.perplexity(u), 2),
                       dup=metrics.diversity(u)["duplicate_rate"])
            c = [s.text for s in model.generate(100, contains="Italian", seed=3, **kw)]
            out.update(cppl=round(lm.perplexity(c), 2), csucc=sum("Italian" in t for t in c) / len(c))
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
