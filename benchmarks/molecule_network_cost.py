"""Cost of one evaluation of a categorical molecule network, and of its structural features.

    python benchmarks/molecule_network_cost.py --model qm9_discrete --batch 500 --repeats 7 --json

Times the network's forward pass on a batch of half-revealed graphs (every token masked with probability
0.5, the middle of a sampling run), with and without its structural features: the "without" pass runs the
same network with ``_structure`` returning zeros of the same shape, so the difference is the features' cost
alone (the quality without them needs a network trained without them). Medians of ``--repeats`` timed
passes after two warm-up passes, ``torch.set_num_threads(--threads)``; molecule evaluations per second =
batch / median seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qm9_discrete", help="a categorical molecule bundle [qm9_discrete]")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--int8", action="store_true",
                    help="also time the network with its linear layers quantized to int8 (torch's dynamic "
                         "quantization: int8 weights, activations quantized per call), alternating with fp32")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from polydiff import discrete
    from polydiff.model import Model

    torch.set_num_threads(args.threads)
    model = Model.load(args.model, modality="molecule")
    if not model.categorical:
        sys.exit("error: the network cost is measured for categorical molecule models")
    net, proc = model.net, model.denoiser.process
    gen = torch.Generator().manual_seed(args.seed)
    cond, _ = model.conditions(args.batch, generator=gen)
    x0 = model.encoder.padding_tokens(args.batch)
    keep = cond["mask"] == 0
    x = torch.where(keep, x0, discrete.corrupt(proc, x0, torch.full((args.batch,), 0.5), gen))
    level = torch.full((args.batch,), 0.5)

    def timed():
        out = []
        with torch.no_grad():
            for i in range(args.repeats + 2):
                t0 = time.perf_counter()
                model.denoiser(x, level, **cond)
                if i >= 2:
                    out.append(time.perf_counter() - t0)
        return statistics.median(out)

    with_features = timed()
    real = net._structure
    net._structure = lambda edges, nm: torch.zeros_like(real(edges[:1], nm[:1])).expand(edges.shape[0], -1, -1)
    without = timed()
    net._structure = real
    params = sum(p.numel() for p in net.parameters())
    int8 = None
    if args.int8:
        import copy

        with torch.no_grad():
            ref = model.denoiser(x, level, **cond)
        fp32_net = model.denoiser.net
        # every linear layer but the input ones, whose weights' dtype the network reads for its one-hot inputs
        linear = {name for name, m in fp32_net.named_modules() if isinstance(m, torch.nn.Linear)
                  and name.rsplit(".", 1)[-1] not in ("node_in", "edge_in")}
        q_net = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32_net), linear, dtype=torch.qint8)
        rounds = {"fp32": [], "int8": []}
        for _ in range(3):  # alternating, so that both share the machine's state
            for name, n in (("fp32", fp32_net), ("int8", q_net)):
                model.denoiser.net = n
                rounds[name].append(timed())
        with torch.no_grad():
            got = model.denoiser(x, level, **cond)
        model.denoiser.net = fp32_net
        masked = ~keep
        p_ref, p_got = ref.exp(), got.exp()
        tv = 0.5 * (p_ref - p_got).abs().sum(-1)[masked]
        int8 = {"fp32_s": statistics.median(rounds["fp32"]), "int8_s": statistics.median(rounds["int8"]),
                "speedup": statistics.median(rounds["fp32"]) / statistics.median(rounds["int8"]),
                "tv_mean": float(tv.mean()), "tv_max": float(tv.max()),
                "argmax_agreement": float((ref.argmax(-1) == got.argmax(-1))[masked].float().mean())}
    doc = {"benchmark": "molecule_network_cost", "model": args.model, "parameters": params, "batch": args.batch,
           "threads": args.threads, "repeats": args.repeats, "machine": {"platform": platform.platform(),
                                                                         "cpus": os.cpu_count()},
           "with_features_s": with_features, "without_features_s": without,
           "features_share": (with_features - without) / with_features,
           "evaluations_per_s": args.batch / with_features,
           "structure": bool(net.cfg.structure), "max_atoms": net.cfg.max_atoms, "int8": int8}
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(f"{args.model}: {params:,} parameters, batch {args.batch}, {args.threads} thread(s)")
        print(f"  forward with structural features: {1000 * with_features:.1f} ms "
              f"({doc['evaluations_per_s']:.0f} molecule evaluations/s)")
        print(f"  the same without them:            {1000 * without:.1f} ms "
              f"(features: {100 * doc['features_share']:.1f} % of the pass)")
        if int8:
            print(f"  int8 linear layers: {1000 * int8['int8_s']:.1f} ms against {1000 * int8['fp32_s']:.1f} ms "
                  f"({int8['speedup']:.2f}x); predictions at the masked positions: total variation "
                  f"{int8['tv_mean']:.4f} (max {int8['tv_max']:.3f}), same most likely category "
                  f"{100 * int8['argmax_agreement']:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
