"""Every `polydiff` command shown in README.md and docs/*.md parses against the CLI as it is: the verb and
subcommand exist, every option is one the command takes, and values have the right type. Command lines in code
blocks (fenced, or indented recipe lines) are checked, so renamed options and removed verbs cannot linger in
the docs; a synopsis with placeholders (``polydiff sample MODALITY [--model NAME]``) is not a command."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

import polydiff.plugins
from polydiff.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md")) + sorted(ROOT.glob("plugins/*/polydiff_*/pretrained/README.md"))


def _commands(path: Path):
    """(line number, argument list after `polydiff`) for every polydiff command line in the file."""
    out = []
    text = path.read_text(encoding="utf-8")
    # names a tutorial in the same file defines for its example plugin (a modality or a command)
    defined = set(re.findall(r'name="(\w+)"', text)) | set(re.findall(r'@cli\.command\("(\w+)"\)', text))
    fence, shell = False, False
    for i, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("```"):
            fence = not fence
            shell = fence and line[3:].strip() in ("bash", "sh", "shell", "console")
            continue
        if fence and not shell:
            continue
        line = line[2:] if line.startswith("$ ") else line
        candidates = [line] if fence or (raw.startswith("    ") and not raw.startswith("     ")) else []
        for cand in candidates:
            cand = cand.split(" && ")[-1] if " && " in cand and "polydiff " in cand.split(" && ")[-1] else cand
            m = re.search(r"(?:^|\s|/)polydiff(?:\.cli)?\s+(.*)$", cand)
            if not m or cand.startswith(("#", "pip ", "git ")):
                continue
            try:
                args = shlex.split(m.group(1), comments=True)
            except ValueError:
                continue
            if not args or args[0].startswith(("-", "[")) and args[0] not in ("--help", "--version"):
                continue
            if any(a in ("...", "…") or a.startswith(("<", "[")) or re.fullmatch(r"[A-Z][A-Z_]+", a) for a in args):
                continue  # a synopsis (``polydiff sample MODALITY [--model NAME|PATH] ...``), not a command
            if args[0] in defined or len(args) > 1 and args[1] in defined:
                continue  # the example plugin of a tutorial, not installed
            out.append((i, args))
    return out


ALL = [(p, i, args) for p in DOCS for i, args in _commands(p)]


def test_the_docs_show_commands():
    assert len(ALL) > 50, len(ALL)


def _rest(ctx):
    """The tokens a group left for its subcommand (``protected_args`` is private from click 8.2 on)."""
    return list(getattr(ctx, "_protected_args", None) or []) + list(ctx.args)


def _parse(args):
    """Parse like the polydiff command: resolve the verb and subcommand, then the options (nothing runs)."""
    if "upscale" not in cli.commands:
        polydiff.plugins.registry().add_commands(cli)
    ctx = cli.make_context("polydiff", list(args))
    cmd, rest = cli, _rest(ctx)
    while isinstance(cmd, click.Group) and rest:
        name, sub, rest = cmd.resolve_command(ctx, rest)
        if sub is None:
            raise click.UsageError(f"no command {name!r}")
        ctx = sub.make_context(name, list(rest), parent=ctx)
        cmd, rest = sub, _rest(ctx) if isinstance(sub, click.Group) else []
    return cmd


@pytest.mark.parametrize("path,line,args", ALL, ids=[f"{p.name}:{i}" for p, i, _ in ALL])
def test_documented_command_parses(path, line, args):
    if any(w in ("--help", "-h", "--version") for w in args):
        return
    try:
        _parse(args)
    except click.exceptions.Exit:
        pass
    except click.ClickException as e:
        pytest.fail(f"{path.relative_to(ROOT)}:{line}: polydiff {' '.join(args)}\n  -> {e.format_message()}")


def test_every_built_in_verb_is_in_the_readme_and_the_plugin_guide():
    """The README shows each verb of the core CLI, and the plugin guide's list of names a plugin must not take
    is exactly the core's verbs."""
    core_cli = cli
    # the core's own verbs; the groups plugins create for their task verbs (inpaint, upscale, ...) have no callback
    builtin = {name for name, cmd in core_cli.commands.items()
               if cmd.callback is not None and cmd.callback.__module__ == "polydiff.cli"}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = sorted(v for v in builtin if not re.search(rf"polydiff {v}\b", readme))
    assert not missing, f"README.md never shows: {', '.join(missing)}"
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    listed = re.search(r"no built-in verb uses \(([^)]*)\)", guide.replace("\n", " "))
    assert listed, "docs/plugins.md lost its list of built-in verbs"
    names = set(re.findall(r"`(\w+)`", listed.group(1)))
    assert names == builtin, (sorted(names), sorted(builtin))
