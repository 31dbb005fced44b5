"""`polydiff demo` for text: the bundled E2E model writes from a meaning representation, fills a template
and keeps a required word. The same sentences come from

    polydiff sample text --mr MR --seed 0 --out DIR/from_mr.txt      (then --length SHORT, --length LONG)
    polydiff inpaint text TEMPLATE --mr TEMPLATE_MR -n 2 --seed 0 --out DIR/template.txt
    polydiff sample text --contains WORD -n 2 --seed 0 --out DIR/contains.txt
"""
from __future__ import annotations

import time
from pathlib import Path

MR = "name[The Eagle], eatType[coffee shop], food[Italian], priceRange[cheap], area[riverside], near[Burger King]"
TEMPLATE = "___ is a ___ coffee shop near ___."
TEMPLATE_MR = "name[The Golden Curry], eatType[coffee shop], food[Indian], near[Café Rouge]"
WORD = "Japanese"


def run(out, echo=print, device=None, model=None, seed: int = 0) -> dict:
    from polydiff.model import load_model

    m = load_model("text", model, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # the same MR at its typical length (the default), then shorter and longer: greedy decoding writes one
    # sentence per MR and length, so the lengths show the variety
    from polydiff_text import mr as mrs

    typical = m.encoder.typical_length(len(mrs.parse(MR)))
    lengths = [typical, max(typical - 6, 8), min(typical + 8, m.encoder.max_len)]
    from_mr = m.generate(3, mr=MR, length=lengths, seed=seed)
    filled = m.generate(2, template=TEMPLATE, mr=TEMPLATE_MR, seed=seed)
    kept = m.generate(2, contains=WORD, seed=seed)
    seconds = time.perf_counter() - t0
    files = []
    for name, items in (("from_mr.csv", from_mr), ("template.txt", filled), ("contains.txt", kept)):
        files += m.encoder.write(items, out / name)
    sc = m.config.get("sample", {})
    echo(f"text: 7 sentences in {seconds:.2f} s ({sc.get('sampler')}, {sc.get('steps')} steps, seed {seed})")
    echo(f"  from {MR} ({lengths[0]} tokens, the typical length; then {lengths[1]} and {lengths[2]}):")
    for s in from_mr:
        echo(f"    {s.text}")
    echo(f"  filling '{TEMPLATE}' with {TEMPLATE_MR}:")
    for s in filled:
        echo(f"    {s.text}")
    echo(f"  containing '{WORD}':")
    for s in kept:
        echo(f"    {s.text}")
    echo(f"  written to {out}")
    return {"seconds": seconds, "files": [str(f) for f in files], "from_mr": [s.text for s in from_mr],
            "template": [s.text for s in filled], "contains": [s.text for s in kept]}
