"""The ``polydiff`` command. Plugins add commands through the ``register_commands`` hook; ``train`` and
``sample`` get one subcommand per registered modality, with the modality's own extra options."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional

import click

from . import __version__
from .errors import PolydiffError


def article(word: str) -> str:
    """'an' before a vowel sound as written ('an audio model', 'an elbo detector'), else 'a'."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return msg[0] if msg else type(e).__name__


class _Group(click.Group):
    """A click group that turns user errors (PolydiffError, OSError) into one line and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except PolydiffError as e:
            raise click.ClickException(_one_line(e)) from None
        except OSError as e:
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            raise click.ClickException(f"{where}{e.strerror or _one_line(e)}") from None


class _ModalityGroup(_Group):
    """``polydiff train|sample MODALITY``: one subcommand per registered modality, built on demand."""

    def __init__(self, *a, make_command=None, **kw):
        super().__init__(*a, **kw)
        self._make_command = make_command

    def list_commands(self, ctx):
        from .plugins import registry

        return sorted(registry().modalities)

    def get_command(self, ctx, name):
        from .plugins import registry

        reg = registry()
        if name not in reg.modalities:
            return None
        return self._make_command(reg.modalities[name])

    def resolve_command(self, ctx, args):
        from .plugins import registry

        if args and not args[0].startswith("-") and self.get_command(ctx, args[0]) is None:
            try:
                registry().modality(args[0])
            except PolydiffError as e:  # one line, like every other user error (no usage block)
                raise click.ClickException(_one_line(e)) from None
        return super().resolve_command(ctx, args)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="polydiff")
def cli():
    """polydiff: diffusion models for points, tables, molecules, audio and images.

    Modalities come from plugins (see `polydiff plugins`). Every verb has --help.
    """


def verb_group(cli_group, name: str, doc: str):
    """The ``name`` verb group of ``cli_group`` (``polydiff inpaint``, ``polydiff evaluate``, ...), created
    unless another plugin added it already, so several plugins can put their modality under one verb."""
    group = cli_group.commands.get(name) if hasattr(cli_group, "commands") else None
    if not isinstance(group, click.Group):
        group = click.Group(name, help=doc)
        cli_group.add_command(group)
    return group


def report_task(summary: dict, as_json: bool, line: str) -> None:
    """What a task verb (``polydiff inpaint|denoise|upscale MODALITY``) prints: its summary as JSON, or its
    line followed by the name of the model that did the work (``summary["model"]``, a bundle path)."""
    if not as_json and summary.get("model"):
        line += f" [model {Path(str(summary['model'])).stem}]"
    click.echo(json.dumps(summary, indent=2) if as_json else line)


# --------------------------------------------------------------------------------------- plugins
@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def plugins_cmd(as_json):
    """List plugins: distribution, version, status and what each registers."""
    from .plugins import registry

    recs = registry().records()
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in recs], indent=2))
        return
    for r in recs:
        dist = f"{r.distribution or '?'} {r.version or ''}".strip()
        click.echo(f"{r.name:<12} {r.status:<10} {dist}")
        for kind in ("modalities", "samplers", "schedules", "scorers", "commands"):
            items = getattr(r, kind)
            if items:
                click.echo(f"    {kind}: {', '.join(items)}")
        if r.error:
            click.echo(f"    error: {r.error}")
        if r.hint:
            click.echo(f"    fix: {r.hint}")


# --------------------------------------------------------------------------------------- train
def _train_command(modality):
    @click.command(name=modality.name, help=f"Train {article(modality.name)} {modality.name} model. {modality.description}")
    @click.option("--data", type=click.Path(), help="Training data (file or folder) in a format the modality reads.")
    @click.option("--recipe", help=f"A named recipe: {', '.join(sorted(modality.recipes)) or 'none'}.")
    @click.option("--steps", type=int, help="Training steps (overrides the recipe).")
    @click.option("--out", "out", type=click.Path(), default=None, help="Run folder [runs/MODALITY].")
    @click.option("--resume", is_flag=True, help="Continue from RUN_DIR/checkpoint.safetensors.")
    @click.option("--init", "init", metavar="MODEL",
                  help="Fine-tune a trained model (a pretrained name or a .safetensors bundle): start from its "
                       "weights and keep its encoder, network and sampling defaults. With --resume, give it again.")
    @click.option("--batch-size", type=int, help="Batch size (overrides the recipe).")
    @click.option("--seed", type=int, help="Training seed (overrides the recipe).")
    @click.option("--lr", type=float, help="Learning rate after warm-up (overrides the recipe; with --resume it "
                                           "holds from the checkpoint's step on).")
    @click.option("--device", help="cpu, cuda, cuda:1 ... [cuda when present, else cpu]")
    @click.option("--strict", is_flag=True,
                  help="Fail on the first unusable record of --data instead of skipping it with a count.")
    @click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
    def cmd(data, recipe, steps, out, resume, init, batch_size, seed, lr, device, strict, as_json):
        from .model import train_modality

        if steps is not None and steps < 0:
            raise PolydiffError(f"--steps must be 0 or more, got {steps}")
        if batch_size is not None and batch_size < 1:
            raise PolydiffError(f"--batch-size must be at least 1, got {batch_size}")
        if seed is not None and seed < 0:
            raise PolydiffError(f"--seed must be 0 or more, got {seed}")
        if lr is not None and not (lr > 0 and math.isfinite(lr)):
            raise PolydiffError(f"--lr must be a positive number, got {lr}")
        train = {}
        if batch_size is not None:
            train["batch_size"] = batch_size
        if seed is not None:
            train["seed"] = seed
        if lr is not None:
            train["lr"] = lr
        summary = train_modality(modality, data=data, recipe=recipe, steps=steps, out=out or f"runs/{modality.name}",
                                 resume=resume, overrides={"train": train} if train else None, device=device,
                                 progress=not as_json, strict=strict, init=init)
        if int(os.environ.get("RANK", "0")) != 0:
            return  # under torchrun only rank 0 reports
        if as_json:
            click.echo(json.dumps(summary, indent=2, default=str))
        else:
            click.echo(f"trained {modality.name} to step {summary['step']} (loss {summary['loss']:.4g}); "
                       f"model: {summary['model_path']}")
            if summary.get("init"):
                new = summary["init"]["new_layers"]
                click.echo(f"fine-tuned from {summary['init']['model']}"
                           + (f"; new layers started from their initialization: {', '.join(new)}" if new else ""))

    return cmd


@cli.group("train", cls=_ModalityGroup, make_command=_train_command)
def train_group():
    """Train a model: polydiff train MODALITY [--data PATH] [--recipe NAME] [--steps N] [--out RUN_DIR] [--resume]
    [--init MODEL]."""


# --------------------------------------------------------------------------------------- sample
def _json_object(text: Optional[str], option: str) -> Optional[dict]:
    """A JSON object given on the command line (None when not given); anything else is a one-line error."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise PolydiffError(f"{option} is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise PolydiffError(f"{option} must be a JSON object, e.g. '{{\"temperature\": 0.5}}'")
    return value


def _sample_command(modality):
    @click.command(name=modality.name, help=f"Generate {modality.name} samples. {modality.description}")
    @click.option("--model", "model_name", default=None,
                  help=f"Pretrained name ({', '.join(modality.pretrained) or 'none'}) or a .safetensors bundle.")
    @click.option("-n", "n", type=int, default=16, show_default=True, help="Number of samples.")
    @click.option("--sampler", help="euler, heun, ddim, ddpm, dpmpp_2m, unipc, ... [the model's default]")
    @click.option("--steps", type=int, help="Sampling steps [the model's default].")
    @click.option("--schedule", help="Noise-level ladder: karras, exponential, vp_linear, cosine, ddpm_discrete, ... "
                                     "[the model's default].")
    @click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
    @click.option("--cfg-scale", type=float, help="Classifier-free guidance scale (1 = off) [the model's default].")
    @click.option("--cfg-interval", metavar="LO,HI",
                  help="Guide only at noise levels in (LO, HI]; 'none' for every level [the model's default].")
    @click.option("--sampler-args", "sampler_args", default=None, metavar="JSON",
                  help='Sampler arguments, e.g. \'{"temperature": 0.7}\' [the model\'s for its own sampler].')
    @click.option("--best-of", "best_of", type=int, default=None, metavar="K",
                  help="Draw up to K times and keep each sample the modality ranks best (modalities with a "
                       "ranking of their samples) [the model's default, else 1].")
    @click.option("--out", "out", type=click.Path(), required=True, help="Output file or folder.")
    @click.option("--trajectory", type=click.Path(), help="Save the x0 estimate of every step as a strip of frames (PNG).")
    @click.option("--device", help="cpu, cuda, ... [cuda when present, else cpu]")
    @click.option("--precision", metavar="fp32|bf16|auto",
                  help="Network arithmetic: fp32, bf16 (bfloat16 autocast; the sampler stays float32) or auto "
                       "(bf16 where the device computes it natively) [the model's default, else fp32].")
    @click.option("--engine", type=click.Choice(["local", "ray", "torchrun"]), default=None,
                  help="Draw the samples in fixed chunks, seeded by (seed, chunk), in this process, on Ray workers "
                       "or under torchrun: the same bytes for any number of workers [one batch, here].")
    @click.option("--workers", type=int, default=None,
                  help="Chunks drawn at once: Ray actors, or threads with --engine local [every CPU].")
    @click.option("--address", default=None, help="Ray cluster to join (auto, or HOST:6379) [a new local Ray].")
    @click.option("--chunk", type=int, default=None, help="Samples per chunk with --engine [128].")
    @click.option("--threads", type=int, default=None, help="CPU threads per chunk with --engine [1].")
    @click.option("--resume", is_flag=True, help="Finish an interrupted --engine run from its finished chunks.")
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
    def cmd(model_name, n, sampler, steps, schedule, seed, cfg_scale, cfg_interval, sampler_args, best_of, out,
            trajectory, device, precision, engine, workers, address, chunk, threads, resume, as_json, **options):
        from .model import Model, default_device, resolve_precision

        if n < 1:
            raise PolydiffError(f"-n must be at least 1, got {n}")
        if steps is not None and steps < 1:
            raise PolydiffError(f"--steps must be at least 1, got {steps}")
        if cfg_scale is not None and not cfg_scale >= 0:
            raise PolydiffError(f"--cfg-scale must be 0 or more (1 = no guidance), got {cfg_scale}")
        if seed < 0:
            raise PolydiffError(f"--seed must be 0 or more, got {seed}")
        sampler_args = _json_object(sampler_args, "--sampler-args")
        if best_of is not None and best_of < 1:
            raise PolydiffError(f"--best-of must be at least 1, got {best_of}")
        if best_of is not None and best_of > 1 and modality.rank is None:
            raise PolydiffError(f"modality {modality.name!r} has no ranking of its samples; --best-of does not apply")
        if precision is not None:
            resolve_precision(precision, default_device(device))  # a misspelt precision fails before loading
        if schedule is not None:
            from .schedules import get_ladder

            get_ladder(schedule)  # an unknown ladder is a one-line error before loading
        if trajectory and modality.draw is None:
            raise PolydiffError(f"modality {modality.name!r} cannot draw trajectories")
        if model_name is None:
            if not modality.pretrained:
                raise PolydiffError(f"modality {modality.name!r} has no pretrained model; give --model PATH")
            model_name = next(iter(modality.pretrained))
        interval = _parse_interval(cfg_interval) if cfg_interval is not None else None
        if engine is None and any(v is not None and v is not False for v in (workers, address, chunk, threads, resume)):
            raise PolydiffError("--workers, --address, --chunk, --threads and --resume apply with --engine")
        if engine is not None:
            from .generation import CHUNK, generate
            from .modality import split_output_options

            if trajectory:
                raise PolydiffError("--trajectory draws one batch; it does not apply with --engine")
            if device not in (None, "cpu"):
                raise PolydiffError("--engine draws on the workers' CPUs; --device does not apply")
            kw = {"sampler": sampler, "steps": steps, "schedule": schedule, "cfg_scale": cfg_scale,
                  "precision": precision, "best_of": best_of, "sampler_args": sampler_args,
                  "cfg_interval": None if cfg_interval is None else (interval if interval is not None else (0.0, 1e30))}
            cond_opts, output = split_output_options(modality, options)
            summary = generate(model_name, modality, n, out, seed=seed, engine=engine, workers=workers,
                               address=address, resume=resume, chunk=CHUNK if chunk is None else chunk, threads=1 if threads is None else threads,
                               sample_kw={k: v for k, v in kw.items() if v is not None}, options=cond_opts,
                               output=output, progress=not as_json)
            if summary is None:  # a torchrun rank other than 0
                return
            if as_json:
                click.echo(json.dumps(summary, indent=2))
            else:
                bad = f"; {summary['invalid']} invalid" if summary["invalid"] else ""
                click.echo(f"wrote {n - summary['invalid']} of {n} {modality.name} samples to "
                           f"{', '.join(summary['files'][:3])}{' ...' if len(summary['files']) > 3 else ''} "
                           f"({summary['chunks']} chunks on {engine}{bad})")
            return
        model = Model.load(model_name, modality=modality.name, device=device)
        if cfg_interval is not None and interval is None:  # 'none': guidance at every level
            model.config = {**model.config, "sample": {k: v for k, v in model.config.get("sample", {}).items()
                                                      if k != "cfg_interval"}}
        frames, titles = [], []
        total = int(steps or model.config.get("sample", {}).get("steps", 20))
        from tqdm.auto import tqdm

        # no bar with --json or when stderr is not a terminal (disable=None), so errors stay one line in logs
        bar = tqdm(total=total, desc=f"sampling {n} {modality.name}", disable=True if as_json else None, leave=False)

        def callback(info):
            bar.update(1)
            if trajectory:
                frames.append(info["denoised"].detach().cpu())
                titles.append(f"sigma={info['sigma']:.3g}")

        from .modality import split_output_options

        options, output = split_output_options(modality, options)
        t0 = time.perf_counter()
        try:
            x, cond = model.sample(n, sampler=sampler, steps=steps, schedule=schedule, seed=seed, cfg_scale=cfg_scale,
                                   cfg_interval=interval, callback=callback, precision=precision, best_of=best_of,
                                   sampler_args=sampler_args, **options)
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
        cond = {k: (v.cpu() if hasattr(v, "cpu") else v) for k, v in cond.items()}
        items = model.encoder.decode(x.cpu(), cond, **output)
        files = model.encoder.write(items, out, **output)
        invalid = sum(1 for it in items if it is None) if isinstance(items, (list, tuple)) else 0
        summary = {"modality": modality.name, "model": str(model.path), "n": n, "invalid": invalid,
                   "sampler": sampler or model.config.get("sample", {}).get("sampler"),
                   "steps": total, "schedule": schedule or model.config.get("sample", {}).get("schedule", "karras"),
                   "seed": seed,
                   "cfg_scale": float(cfg_scale if cfg_scale is not None else model.config.get("sample", {}).get("cfg_scale", 1.0)),
                   "cfg_interval": interval if interval is not None else model.config.get("sample", {}).get("cfg_interval"),
                   "precision": model.precision(precision),
                   "best_of": int(best_of if best_of is not None else model.config.get("sample", {}).get("best_of", 1)),
                   "seconds": round(seconds, 4), "files": [str(f) for f in files]}
        if trajectory:
            frames.append(x.cpu())
            titles.append("final")
            modality.draw(model.encoder, frames, cond, trajectory, titles=titles)
            summary["trajectory"] = str(trajectory)
        if as_json:
            click.echo(json.dumps(summary, indent=2))
        else:
            bad = f"; {invalid} invalid" if invalid else ""
            click.echo(f"wrote {n - invalid} of {n} {modality.name} samples to {', '.join(summary['files'][:3])}"
                       f"{' ...' if len(files) > 3 else ''} ({seconds:.2f} s{bad})")
            if trajectory:
                click.echo(f"trajectory: {trajectory}")

    for opt in modality.sample_options:
        cmd.params.append(opt)
    return cmd


@cli.group("sample", cls=_ModalityGroup, make_command=_sample_command)
def sample_group():
    """Generate samples: polydiff sample MODALITY [--model NAME|PATH] -n N [--sampler S] [--steps K] --out PATH."""


@cli.command("merge")
@click.argument("parts", type=click.Path())
@click.option("--out", "out", type=click.Path(), required=True, help="Output file or folder, as polydiff sample writes.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def merge_cmd(parts, out, as_json):
    """Write the samples of a sampling job's parts folder (OUT.partial, left by `polydiff sample --engine`
    when its output could not be written) to OUT, in order. The folder is kept."""
    from .generation import merge

    summary = merge(parts, out)
    click.echo(json.dumps(summary, indent=2) if as_json else
               f"wrote {summary['n'] - summary['invalid']} of {summary['n']} {summary['modality']} samples from "
               f"{summary['chunks']} chunks to {', '.join(summary['files'][:3])}")


# --------------------------------------------------------------------------------------- score
class _ScoreCommand(click.Command):
    """``polydiff score``: the core's options, then each modality's ``score_options`` (read on demand, so that
    the registry is built only when the command runs)."""

    def get_params(self, ctx):
        from .plugins import registry

        params = super().get_params(ctx)
        names = {p.name for p in params}
        extra = []
        for mod in sorted(registry().modalities.values(), key=lambda m: m.name):
            for opt in mod.score_options:
                if opt.name not in names:
                    names.add(opt.name)
                    extra.append(opt)
        return params[:-1] + extra + params[-1:] if params and params[-1].name == "help" else params + extra


def _option_owners(mods) -> dict:
    """Option name -> the modality whose ``score_options`` declares it."""
    return {opt.name: m for m in mods for opt in m.score_options}


@cli.command("score", cls=_ScoreCommand)
@click.argument("args", nargs=-1, required=True, metavar="[MODALITY] DATA")
@click.option("--model", "model_name", help="Pretrained name or .safetensors bundle (a model or a saved detector).")
@click.option("--train", "train_data", type=click.Path(), help="Fit a detector on these clean rows first.")
@click.option("--modality", default=None, help="Modality of a new detector [the installed modality that has one].")
@click.option("--method", default=None,
              help="Scoring method (see `polydiff plugins`) [a new detector: its modality's default; --model: elbo].")
@click.option("--contamination", type=float, default=None,
              help="Expected anomaly fraction; adds an is_anomaly column [0.05 for a new detector].")
@click.option("--out", "out", type=click.Path(), required=True,
              help="One score per input item, in order: a CSV file, or Parquet for a .parquet name.")
@click.option("--plot", type=click.Path(), help="Write a histogram of the scores (PNG).")
@click.option("--save-model", type=click.Path(), help="Save the fitted detector (.safetensors).")
@click.option("--steps", type=int, help="Training steps of a new detector (its methods that train).")
@click.option("--batch-size", type=int, default=None,
              help="Items per scoring batch [the detector's default; 4096 with --model].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", help="cpu, cuda, ...")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where scoring runs: this process, or Ray workers (pip install 'polydiff[ray]'); fitting stays here.")
@click.option("--address", default=None, help="Ray cluster to join (e.g. auto, or HOST:6379) [a new local Ray].")
@click.option("--workers", type=int, default=None, help="Ray actors scoring at once [every CPU of the cluster].")
@click.option("--resume", is_flag=True, help="Finish an interrupted --engine ray run from its finished parts.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def score_cmd(args, model_name, train_data, modality, method, contamination, out, plot, save_model, steps,
              batch_size, seed, device, engine, address, workers, resume, as_json, **options):
    """Score how anomalous each item of DATA is (higher = more anomalous).

    With --model, score with a trained model or a saved detector. Without it, fit a new detector on
    --train (or on DATA itself, unsupervised) and score DATA in chunks. The output has one row per item,
    in input order: a score column (and is_anomaly where a detector sets a threshold).

    `polydiff score MODALITY DATA` names the modality first (as --modality does); for a modality without a
    detector of its own (text, say) it scores with that modality's default pretrained model.

    --engine ray scores on Ray workers (DATA: a CSV/Parquet file or a folder of them; OUT: a CSV or
    Parquet file, or a folder given with a trailing slash), with the same bytes as local scoring.
    """
    from .checkpoint import atomic_write_text, read_meta
    from .errors import InputError
    from .model import Model, resolve_model_path
    from .plugins import registry

    if len(args) > 2:
        raise PolydiffError(f"polydiff score takes [MODALITY] DATA, got {len(args)} arguments")
    data = args[-1]
    if len(args) == 2:
        if modality is not None and modality != args[0]:
            raise PolydiffError(f"the modality is given twice: {args[0]!r} and --modality {modality!r}")
        modality = args[0]
        from .plugins import registry as _registry

        named = _registry().modality(modality)
        if model_name is None and named.score is None:
            if not named.pretrained:
                raise PolydiffError(f"modality {modality!r} has no detector and no pretrained model; pass --model")
            model_name = str(next(iter(named.pretrained.values())))
    if batch_size is not None and batch_size < 1:
        raise PolydiffError(f"--batch-size must be at least 1, got {batch_size}")
    if contamination is not None and not 0 < contamination <= 0.5:
        raise PolydiffError(f"--contamination must be in (0, 0.5], got {contamination}")
    from .engines import check_engine_options, require_ray

    check_engine_options(engine, address, workers)
    if engine == "ray":
        require_ray()  # missing Ray is one line before anything is read
    reg = registry()
    owners = _option_owners(reg.modalities.values())
    given = {k: v for k, v in options.items() if v is not None}
    mod, detector_bundle = None, False
    if model_name is not None:
        path, _ = resolve_model_path(model_name, modality)
        meta = read_meta(path)
        mod = reg.modality(meta.get("modality") or modality)
        detector_bundle = meta.get("kind") == "detector"
    else:
        scorers = sorted((m for m in reg.modalities.values() if m.score is not None), key=lambda m: m.name)
        if modality is not None:
            mod = reg.modality(modality)
            if mod.score is None:
                raise PolydiffError(f"modality {mod.name!r} cannot fit a detector here; train a model and pass --model")
        elif len(scorers) == 1:
            mod = scorers[0]
        elif not scorers:
            raise PolydiffError("no installed modality fits a detector; train a model and pass --model")
        else:
            raise PolydiffError(f"several modalities fit detectors ({', '.join(m.name for m in scorers)}); "
                                f"choose one with --modality")
    for name in given:  # an option another modality declares does nothing here: say so
        if owners.get(name) is not mod or not (detector_bundle or model_name is None):
            flag = "--" + name.replace("_", "-")
            raise PolydiffError(f"{flag} is an option of the {owners[name].name} detector; it does not apply here")
    if model_name is None or detector_bundle:
        echo = None if as_json else (lambda line: click.echo(line, err=True))
        engine_kw = ({} if engine == "local" and not resume else
                     {"engine": engine, "address": address, "workers": workers, "resume": resume})
        summary = mod.score(data, out, model=path if detector_bundle else None, train=train_data, method=method,
                            contamination=contamination, steps=steps, batch_size=batch_size, seed=seed,
                            device=device, save_model=save_model, plot=plot, progress=not as_json, echo=echo,
                            **engine_kw, **given)
        if as_json:
            click.echo(json.dumps(summary, indent=2))
        else:
            flagged = (f"{summary['flagged']} flagged above threshold {summary['threshold']:.4g}; "
                       if summary.get("flagged") is not None else "")
            click.echo(f"scored {summary['rows']} rows with {summary['method']}: {flagged}scores in {summary['out']}")
        return
    if engine != "local" or resume:
        raise PolydiffError(f"--engine ray scores with a detector; {model_name} is a trained {mod.name} model "
                            f"(score it with --engine local)")
    if train_data or save_model or contamination is not None:
        raise PolydiffError("--train, --contamination and --save-model need a detector; "
                            f"{model_name} is a trained {mod.name} model")
    if steps is not None:
        raise PolydiffError("--steps trains a new detector; it does not apply to a trained model")
    if Path(str(out)).suffix.lower() in (".parquet", ".pq"):
        raise PolydiffError(f"{out}: a trained model's scores are written as CSV; give a .csv name "
                            f"(Parquet output is a detector's)")
    method = method or "elbo"
    model = Model.load(model_name, device=device)
    try:
        items = model.encoder.read(data)
    except PolydiffError:
        raise
    except ValueError as e:  # the Encoder protocol: bad input raises ValueError naming the problem
        msg = _one_line(e)
        raise InputError(msg if str(data) in msg else f"{data}: {msg}") from None
    if len(items) == 0:
        raise InputError(f"{data}: no items to score")
    scores = model.score(items, method=method, batch_size=batch_size or 4096).tolist()
    lines = ["score"] + [f"{s:.8g}" for s in scores]
    atomic_write_text(out, "\n".join(lines) + "\n")
    summary = {"rows": len(scores), "method": method, "out": str(out),
               "min": min(scores), "max": max(scores), "mean": sum(scores) / len(scores), "model": str(model_name)}
    if plot:
        from .viz import plot_histogram

        plot_histogram(scores, None, plot, title=f"{method} scores of {Path(str(data)).name}")
    click.echo(json.dumps(summary, indent=2) if as_json else
               f"scored {len(scores)} items with {method}: {out} (mean {summary['mean']:.4g})")


# --------------------------------------------------------------------------------------- models
def pretrained_models() -> list:
    """Every bundled pretrained model: name, modality, whether it is the modality's default, file size,
    parameter count, training step, what it is (the plugin's words) and its stored sampling defaults."""
    from .checkpoint import read_meta, tensor_shapes
    from .plugins import registry

    rows = []
    for mod in sorted(registry().modalities.values(), key=lambda m: m.name):
        for i, (name, path) in enumerate(mod.pretrained.items()):
            path = Path(path)
            meta = read_meta(path)
            sc = dict(meta.get("config", {}).get("sample", {}))
            shapes = tensor_shapes(path)
            weights = {k: v for k, v in shapes.items() if k.startswith("ema.")} or shapes  # the weights sampled with
            params = sum(math.prod(v) for v in weights.values())
            rows.append({"name": name, "modality": mod.name, "default": i == 0, "path": str(path),
                         "mb": round(path.stat().st_size / 1e6, 2), "parameters": params, "step": meta.get("step"),
                         "about": mod.model_info.get(name, ""),
                         "sampling": {k: sc[k] for k in ("sampler", "steps", "schedule", "cfg_scale", "cfg_interval",
                                                         "precision") if sc.get(k) is not None}})
    return rows


@cli.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def models_cmd(as_json):
    """List the bundled pretrained models: modality, size, what they were trained on, sampling defaults.

    Use a name wherever a model is asked for: polydiff sample MODALITY --model NAME, polydiff inspect NAME."""
    rows = pretrained_models()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no pretrained models installed (see `polydiff plugins`)")
        return
    for r in rows:
        s = r["sampling"]
        how = ", ".join(filter(None, [s.get("sampler"), f"{s['steps']} steps" if s.get("steps") else None,
                                      "a ladder fitted to it" if s.get("schedule") == "fitted" else None,
                                      f"guidance {s['cfg_scale']:g}" if s.get("cfg_scale", 1) != 1 else None]))
        size = f"{r['parameters'] / 1e6:.2f} M parameters, " if r["parameters"] else ""
        click.echo(f"{r['modality']}:{r['name']}{'  (default)' if r['default'] else ''}\n"
                   f"    {r['about'] or '(no description)'}\n"
                   f"    {size}{r['mb']:.1f} MB; samples with {how or 'the modality defaults'}")


# --------------------------------------------------------------------------------------- inspect
@cli.command("inspect")
@click.argument("bundle")
def inspect_cmd(bundle):
    """Print the JSON document of a bundle (modality, config, encoder, step): a .safetensors file or a
    pretrained name, as --model accepts."""
    from .checkpoint import read_meta
    from .model import resolve_model_path

    path, _ = resolve_model_path(bundle)
    click.echo(json.dumps(read_meta(path), indent=2))


@cli.command("export")
@click.argument("run", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--full-precision", is_flag=True, help="Keep float32 weights (default: float16, half the size).")
@click.option("--sampler", default=None, help="Store this default sampler in the bundle.")
@click.option("--steps", type=int, default=None, help="Store this default number of sampling steps.")
@click.option("--schedule", default=None, help="Store this default noise-level ladder (its default arguments).")
@click.option("--schedule-args", "schedule_args", default=None, metavar="JSON",
              help='Store these arguments of the ladder, e.g. \'{"power": 1.5}\' for power_levels (replacing the stored ones).')
@click.option("--cfg-scale", type=float, default=None, help="Store this default guidance scale.")
@click.option("--cfg-interval", default=None, metavar="LO,HI",
              help="Store this guidance interval: guide only at noise levels in (LO, HI]; 'none' for every level.")
@click.option("--sampler-args", default=None, metavar="JSON",
              help='Store these sampler arguments, e.g. \'{"temperature": 0.5}\' (replacing the stored ones).')
@click.option("--best-of", "best_of", type=int, default=None, metavar="K",
              help="Store this best-of-k default (modalities with a ranking of their samples).")
@click.option("--precision", default=None, metavar="fp32|bf16|auto", help="Store this sampling precision.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def export_cmd(run, out, full_precision, sampler, steps, schedule, schedule_args, cfg_scale, cfg_interval,
               sampler_args, best_of, precision, as_json):
    """Export the EMA weights of a training run (RUN_DIR or its model.safetensors) as a bundle to ship.

    The bundle keeps the run's config and encoder; --sampler/--steps/--schedule/--schedule-args/--cfg-scale/
    --sampler-args/--best-of/--precision set the sampling defaults that `polydiff sample` uses with it."""
    from .checkpoint import export_bundle

    if steps is not None and steps < 1:
        raise PolydiffError(f"--steps must be at least 1, got {steps}")
    if sampler is not None:
        from . import get_sampler

        get_sampler(sampler)  # an unknown name is a one-line error before anything is written
    if schedule is not None:
        from .schedules import get_ladder

        get_ladder(schedule)
        if schedule == "fitted":
            raise PolydiffError("--schedule fitted needs the fitted levels: export, then run "
                                "`polydiff ladder BUNDLE --out BUNDLE`")
    if best_of is not None and best_of < 1:
        raise PolydiffError(f"--best-of must be at least 1, got {best_of}")
    args = _json_object(sampler_args, "--sampler-args")
    ladder_args = _json_object(schedule_args, "--schedule-args")
    if ladder_args is not None and schedule is not None:
        from .schedules import get_ladder

        try:
            get_ladder(schedule)(2, **ladder_args)
        except (TypeError, ValueError) as e:
            raise PolydiffError(f"--schedule-args for {schedule}: {e}") from None
    if precision is not None:
        import torch

        from .model import resolve_precision

        resolve_precision(precision, torch.device("cpu"))  # an unknown name is a one-line error; "auto" is stored
        precision = precision.lower()
    sample = {"sampler": sampler, "steps": steps, "cfg_scale": cfg_scale, "schedule": schedule,
              "sampler_args": args, "best_of": best_of, "precision": precision}
    interval = _parse_interval(cfg_interval) if cfg_interval is not None else None
    if interval is not None:
        sample["cfg_interval"] = interval
    if ladder_args is not None:
        sample["schedule_args"] = ladder_args
    clear = (("cfg_interval",) if cfg_interval is not None and interval is None else ()) + \
        (("schedule_args",) if schedule is not None and ladder_args is None else ())  # another ladder: its defaults
    path, meta = export_bundle(run, out, half=not full_precision, sample=sample, clear=clear)
    sc = meta.get("config", {}).get("sample", {})
    summary = {"out": str(path), "modality": meta.get("modality"), "step": meta.get("step"),
               "loss": meta.get("loss"), "sample": sc, "bytes": path.stat().st_size}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"exported the {meta.get('modality')} model of step {meta.get('step')} to {path} "
                   f"({summary['bytes'] / 1e6:.1f} MB; sampling: {sc.get('sampler')}, {sc.get('steps')} steps, "
                   f"guidance {sc.get('cfg_scale')})")


@cli.command("ladder")
@click.argument("model_name", metavar="MODEL")
@click.option("--out", type=click.Path(), required=True, help="The bundle to write: MODEL with the fitted ladder as its default.")
@click.option("--sampler", default=None, help="The sampler to fit the ladder for [the model's].")
@click.option("--steps", type=int, default=None, help="Number of sampling steps [the model's].")
@click.option("--samples", type=int, default=2048, show_default=True, help="Samples drawn per trial ladder.")
@click.option("--evals", type=int, default=1500, show_default=True, help="Most trial ladders to sample.")
@click.option("--reference-steps", type=int, default=200, show_default=True,
              help="Heun steps of the fine solve the trial ladders are compared with.")
@click.option("--knots", type=int, default=None,
              help="Search this many levels and stretch them to the ladder (a smaller search) [every step's].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the starting noise and the projections.")
@click.option("--device", default=None, help="cpu, cuda, cuda:N or mps [best available].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def ladder_cmd(model_name, out, sampler, steps, samples, evals, reference_steps, knots, seed, device, as_json):
    """Fit the noise levels a few-step sampler samples MODEL best with and write them into a bundle.

    Searches the ladder whose samples come closest (sliced Wasserstein-2) to a fine solve of the same
    model from the same noise; OUT is MODEL (a .safetensors bundle or a pretrained name) with
    `schedule: fitted` and that sampler and step count as its sampling defaults."""
    import time

    from .checkpoint import restamp_bundle
    from .model import Model
    from .tuning import fit_model_ladder

    for flag, value, least in (("--steps", steps, 2), ("--samples", samples, 2), ("--evals", evals, 1),
                               ("--reference-steps", reference_steps, 2), ("--knots", knots, 2)):
        if value is not None and value < least:
            raise PolydiffError(f"{flag} must be at least {least}, got {value}")
    if seed < 0:
        raise PolydiffError(f"--seed must be non-negative, got {seed}")
    if sampler is not None:
        from . import get_sampler

        get_sampler(sampler)
    model = Model.load(model_name, device=device)
    sc = model.config.get("sample", {})
    name, n_steps = sampler or sc.get("sampler", "dpmpp_2m"), int(steps or sc.get("steps", 20))
    if knots is not None and knots > n_steps:
        raise PolydiffError(f"--knots must be at most the number of steps ({n_steps}), got {knots}")
    before = model.sigmas(n_steps)
    t0 = time.perf_counter()
    levels = fit_model_ladder(model, sampler=name, steps=n_steps, samples=samples, reference_steps=reference_steps,
                              max_evals=evals, knots=knots, seed=seed, progress=not as_json)
    sample = {"sampler": name, "steps": n_steps, "schedule": "fitted", "schedule_args": {"sigmas": levels}}
    path, _ = restamp_bundle(model.path, out, sample=sample)
    summary = {"out": str(path), "model": str(model.path), "sampler": name, "steps": n_steps,
               "sigmas": levels, "previous": [float(v) for v in before[:-1]], "seconds": time.perf_counter() - t0}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"fitted a {n_steps}-step {name} ladder ({', '.join(f'{v:.3g}' for v in levels)}) "
                   f"in {summary['seconds']:.0f} s; wrote {path}")


def _parse_interval(text: str):
    """'LO,HI' -> [lo, hi] with 0 <= lo < hi; 'none' -> None (guidance at every level)."""
    if text.strip().lower() == "none":
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise PolydiffError(f"--cfg-interval must be LO,HI (two noise levels) or 'none', got {text!r}") from None
    if not 0 <= lo < hi:
        raise PolydiffError(f"--cfg-interval must have 0 <= LO < HI, got {text!r}")
    return [lo, hi]


# --------------------------------------------------------------------------------------- demo
@cli.command("demo")
@click.option("--out", "out", type=click.Path(), default="polydiff-demo", show_default=True, help="Folder for the pictures.")
@click.option("--only", help="Comma-separated modalities to show (default: all that have a demo).")
@click.option("--device", help="cpu, cuda, ...")
def demo_cmd(out, only, device):
    """Show what polydiff does with its bundled checkpoints; pictures go to --out."""
    from .plugins import registry

    reg = registry()
    out = Path(out)
    wanted = [s.strip() for s in only.split(",")] if only else None
    mods = sorted((m for m in reg.modalities.values() if m.demo is not None), key=lambda m: (m.demo_order, m.name))
    if wanted:
        missing = [w for w in wanted if w not in {m.name for m in mods}]
        if missing:
            raise PolydiffError(f"no demo for {', '.join(missing)}; available: {', '.join(m.name for m in mods)}")
        mods = [m for m in mods if m.name in wanted]
    if not mods:
        raise PolydiffError("no installed modality has a demo; install a modality plugin (see `polydiff plugins`)")
    if device is not None:
        from .model import default_device

        default_device(device)  # a wrong device name stops before anything is written
    out.mkdir(parents=True, exist_ok=True)
    for r in reg.records():
        if r.status == "error":
            click.echo(f"(plugin {r.name} not available: {r.error}{'; ' + r.hint if r.hint else ''})", err=True)
    for m in mods:
        click.echo(f"== {m.name}: {m.description}")
        sub = out / m.name
        sub.mkdir(parents=True, exist_ok=True)
        m.demo(sub, echo=click.echo, device=device)
    click.echo(f"pictures and files are in {out}/")


def main(argv: Optional[list] = None) -> None:
    """Entry point of the ``polydiff`` command."""
    import warnings

    from .plugins import registry

    # warnings (skipped records, fallbacks) read as one line on stderr, without Python's source excerpt
    warnings.formatwarning = lambda message, category, *a, **k: f"warning: {message}\n"

    try:
        registry().add_commands(cli)
    except Exception as e:  # never let plugin command registration break the CLI
        click.echo(f"warning: plugin commands not loaded: {_one_line(e)}", err=True)
    cli.main(args=argv, prog_name="polydiff")


if __name__ == "__main__":
    main(sys.argv[1:])
