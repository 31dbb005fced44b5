"""``polydiff inpaint text`` and ``polydiff evaluate text``."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List

from polydiff.errors import InputError

_MODEL_HELP = "Pretrained name or .safetensors bundle [the text modality's default model]."


def _load(model_name, device):
    from polydiff.model import load_model

    return load_model("text", model_name, device)


def _templates(arg: str) -> List[str]:
    p = Path(arg)
    if p.suffix.lower() in (".txt", ".csv") or (p.exists() and p.is_file()):
        if not p.exists():
            raise InputError(f"{p}: no such file")
        from .encoder import read_lines

        return [s.text for s in read_lines(p)]
    return [arg]


def inpaint(model_name, template: str, out, *, n: int = 1, mr=None, sampler=None, steps=None, seed: int = 0,
            strict: bool = False, device=None) -> dict:
    """Fill every ``___`` of TEMPLATE (or of each line of a file) ``n`` times; write the sentences to ``out``."""
    from .tasks import parse_template

    if n < 1:
        raise InputError(f"-n must be at least 1, got {n}")
    templates = _templates(template)
    for t in templates:
        parse_template(t)  # every template is checked before anything is generated
    model = _load(model_name, device)
    model.encoder.strict = bool(strict)
    t0 = time.perf_counter()
    items = []
    for i, t in enumerate(templates):
        items += model.generate(n, template=t, mr=mr, sampler=sampler, steps=steps, seed=seed + i)
    seconds = time.perf_counter() - t0
    files = model.encoder.write(items, out)
    return {"templates": len(templates), "n": len(items), "out": str(files[0]), "seconds": round(seconds, 3),
            "sentences": [s.text for s in items[:20]]}


def add_commands(cli) -> None:
    import click

    from polydiff.cli import verb_group

    @click.command(name="text")
    @click.argument("template", metavar="TEMPLATE|FILE")
    @click.option("--out", "out", type=click.Path(), required=True, help="Output: .txt (one sentence per line) or .csv.")
    @click.option("--model", "model_name", default=None, help=_MODEL_HELP)
    @click.option("-n", "n", type=int, default=1, show_default=True, help="Sentences per template.")
    @click.option("--mr", default=None, help="Meaning representation the sentences realise [none].")
    @click.option("--sampler", default=None, help="ancestral or confidence [the model's].")
    @click.option("--steps", type=int, default=None, help="Sampling steps [the model's].")
    @click.option("--seed", type=int, default=0, show_default=True, help="Random seed (template i uses seed + i).")
    @click.option("--strict", is_flag=True, help="Refuse words outside the vocabulary instead of writing <unk>.")
    @click.option("--device", default=None, help="cpu, cuda, ... [cuda when present, else cpu]")
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
    def inpaint_cmd(template, out, model_name, n, mr, sampler, steps, seed, strict, device, as_json):
        """Fill the gaps of a template: each ___ becomes one or more words, every given word is kept exactly.

        TEMPLATE is the text itself ("The ___ is a ___ coffee shop near ___ .") or a .txt/.csv file with one
        template per line.
        """
        s = inpaint(model_name, template, out, n=n, mr=mr, sampler=sampler, steps=steps, seed=seed, strict=strict,
                    device=device)
        click.echo(json.dumps(s, indent=2) if as_json else
                   f"filled {s['templates']} template(s), {s['n']} sentences in {s['seconds']:.2f} s; wrote {s['out']}")

    @click.command(name="text")
    @click.option("--samples", type=click.Path(), required=True,
                  help="Generated sentences: .txt, or .csv with mr and ref columns (as `polydiff sample text "
                       "--out x.csv` writes).")
    @click.option("--mrs", type=click.Path(), default=None,
                  help="References: a .csv with mr and ref columns (several refs per MR), e.g. E2E's "
                       "testset_w_refs.csv; gives BLEU.")
    @click.option("--train", "train_path", type=click.Path(), default=None,
                  help="Training sentences for the copy rate [E2E's training split when found].")
    @click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
    def evaluate_cmd(samples, mrs, train_path, as_json):
        """Metrics of generated sentences: slot recall and hallucinated values (for sentences with an MR),
        BLEU against references, diversity (distinct-2, self-BLEU, duplicates), copy rate, lengths."""
        from . import metrics
        from .encoder import read_lines

        items = read_lines(samples)
        refs = read_lines(mrs) if mrs else None
        train = None
        if train_path:
            train = [s.text for s in read_lines(train_path)]
        else:
            from . import datasets

            if datasets.e2e_dir() is not None:
                train = [s.text for s in datasets.e2e()]
        m = metrics.evaluate(items, references=refs, train=train)
        if as_json:
            click.echo(json.dumps(m, indent=2))
        else:
            for k, v in m.items():
                if not isinstance(v, (dict, list)):
                    click.echo(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")

    verb_group(cli, "inpaint", "Fill gaps: polydiff inpaint MODALITY INPUT --out OUTPUT [options].").add_command(inpaint_cmd)
    verb_group(cli, "evaluate", "Evaluate generated samples: polydiff evaluate MODALITY [options].").add_command(evaluate_cmd)
