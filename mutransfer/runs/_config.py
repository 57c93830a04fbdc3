"""Experiment configs: TOML files in ``sweeps/`` mapped one to one onto frozen dataclasses.

Each TOML table is a dataclass below and each key is a field of the same name, so
``sweeps/quickstart.toml``'s ``[train] steps = 80`` is ``cfg.train.steps``. Optional keys
(``= None`` below) are simply left out of the file. :func:`load_config` checks every key and
type and names the file, the key and the expected form in its error.

    >>> cfg = load_config("sweeps/quickstart.toml", overrides={"sweep.trials": 4})
    >>> cfg.sweep.width, cfg.train.steps
"""
from __future__ import annotations

import dataclasses
import numbers
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mutransfer.optim import DECAY_KINDS
from mutransfer.core import WD_POLICIES
from mutransfer.core import CONSTANT_NAMES, Constants
from mutransfer.core import MUON_SCALES, OPTIMIZER_RULES, OPTIMIZERS, READOUTS, SCHEMES
from mutransfer.training import LOGS, PARALLEL

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DATA_SOURCES = ("pycorpus", "textfile", "synthetic", "tokens", "hf")
TOKEN_DTYPES = ("uint16", "uint32")  # flat token-id files: uint16 below 65536 ids (nanoGPT, llm.c)
SYNTHETIC_KINDS = ("classification", "regression")
SAMPLERS = ("tpe", "random", "grid", "qmc")
PRUNERS = ("median", "hyperband", "none")
RECIPES = ("single", "staged")
# The knobs the objective knows how to apply; anything else in [sweep.space] is a typo.
SPACE_KEYS = ("lr", "batch_size", "adam_lr", "weight_decay", "warmup", "init_scale",
              "momentum", "qk_clip", "decay", "tokens") + CONSTANT_NAMES  # constants: mutransfer.Constants
INT_SPACE_KEYS = ("batch_size", "tokens")
# The values a knob can train with (muP's constants: mutransfer.Constants checks each value);
# a range or choice outside them is refused at load, not when a trial samples it.
KNOB_DOMAINS = {"lr": ("> 0", lambda v: v > 0), "adam_lr": ("> 0", lambda v: v > 0),
                "batch_size": (">= 1", lambda v: v >= 1), "tokens": (">= 1", lambda v: v >= 1),
                "init_scale": ("> 0", lambda v: v > 0), "qk_clip": ("> 0", lambda v: v > 0),
                "weight_decay": (">= 0", lambda v: v >= 0), "warmup": (">= 0", lambda v: v >= 0),
                "momentum": ("in [0, 1)", lambda v: 0 <= v < 1)}
CHOICE_SPACE_KEYS = {"decay": DECAY_KINDS}  # knobs whose values are names, not numbers


@dataclass(frozen=True)
class ModelConfig:
    factory: str = "mutransfer.zoo:gpt"  # "module:function" or "path/to/file.py:function"
    width: int = 256  # the target width: the one transfer plans for, not the proxy's
    base_width: int = 32  # muP multipliers are 1 here; the proxy/target are multiples of it
    # The target's residual blocks, passed to the factory as depth=; None leaves depth to the
    # factory (or kwargs) and transfers across width only.
    depth: int | None = None
    base_depth: int | None = None  # the base's (and by default the proxy's) blocks; None = depth
    kwargs: dict[str, Any] = field(default_factory=dict)  # fixed factory arguments (n_heads, ...)


@dataclass(frozen=True)
class DataConfig:
    # "textfile" is implied by `path` to a file; pycorpus (the stdlib's .py files) needs no download.
    source: str = "pycorpus"
    # relative to the config file; stored resolved (absolute). textfile: the file; tokens: a folder
    # from `mutransfer data prepare` (train.bin, val.bin, meta.json)
    path: str | None = None
    # tokens: files of token ids instead of a prepared folder: .bin (flat, `dtype`) or .npy, and the
    # vocabulary they index (the model factory receives it as vocab=)
    train_file: str | None = None
    val_file: str | None = None
    dtype: str | None = None  # "uint16" | "uint32" for .bin files
    vocab_size: int | None = None
    # hf: datasets.load_dataset(dataset, data_files=data_files, split=split) (local files, or a
    # dataset already in the cache), its `text_field` tokenized once by `tokenizer` (a
    # tokenizer.json path, or a transformers name or folder) into tokens under `cache_dir`
    dataset: str | None = None
    data_files: str | None = None  # a file or glob, relative to the config file
    split: str = "train"
    val_fraction: float = 0.05  # hf: the share of documents held out as "val"
    text_field: str = "text"
    tokenizer: str | None = None
    cache_dir: str | None = None  # None: ~/.cache/mutransfer/tokens
    # your own data: "module:function" or "path/to/file.py:function" returning an object with
    # batch(split, batch_size, seq_len, generator, device), loss(outputs, y) and describe()
    factory: str | None = None

    @property
    def synthetic(self) -> bool:
        """Whether the data is the synthetic vector task (no seq_len, no vocabulary)."""
        return self.source == "synthetic" and self.factory is None

    @property
    def byte_corpus(self) -> bool:
        """Whether the data is a byte corpus (vocabulary 256, nothing to scan)."""
        return self.source in ("pycorpus", "textfile") and self.factory is None
    kind: str = "classification"  # synthetic only
    in_dim: int = 32  # synthetic only
    out_dim: int = 10  # synthetic only
    seed: int = 0  # synthetic only: the data's own seed, fixed across trials


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 100  # used when tokens is None
    # A training budget instead of a step count: steps = tokens / (batch_size * seq_len), so runs
    # at different batch sizes see the same data and the schedule stretches with the steps. For
    # synthetic data an example counts as one token (the budget is in examples). None = steps.
    tokens: int | None = None
    batch_size: int = 16  # used when [sweep.space] does not sweep batch_size
    seq_len: int = 64  # ignored for synthetic data
    schedule: str = "cosine"
    warmup: float = 0.05  # a fraction of steps (< 1) or a number of steps (>= 1)
    clip: float = 1.0  # global grad-norm clip; 0 disables it
    lr: float = 1e-3  # used when [sweep.space] does not sweep lr
    adam_lr: float | None = None  # Muon's AdamW groups; None = lr
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    momentum: float | None = None  # None = the optimizer's default (SGD 0, Muon 0.95)
    wd_policy: str = "fixed_product"  # decay per step lr*wd is the same at every width
    decay: str = "decoupled"  # or "spectral": decay only the top singular direction (adamw, muon)
    qk_clip: float | None = None  # QK-Clip's tau (K2: 100); None = off
    log_max_logit: bool = False  # log the max attention logit (history column) without clipping
    grad_accum: int = 1
    eval_every: int | None = None  # None = steps // 10, so a pruner sees ten reports
    eval_batches: int = 4
    measure_noise: bool = False  # gradient-noise scale (b_simple) for the batch-size law
    dtype: str = "auto"  # bf16 autocast on CUDA, fp32 on CPU
    # How `mutransfer train` runs the target (sweep trials always run in one process, eager and
    # without checkpoints): "ddp" or "fsdp" (FSDP2) under torchrun, each rank on its slice of
    # every global batch; torch.compile the model; a resumable checkpoint every K steps.
    parallel: str = "none"
    compile: bool = False
    checkpoint_every: int | None = None
    log: str = "none"  # "tensorboard": live scalars of the target run (mutransfer train) beside its report


@dataclass(frozen=True)
class ParamConfig:
    scheme: str = "spectral"  # the default by measurement: reports/gpt-cpu-300, reports/mlp-synthetic
    optimizer: str = "adamw"
    muon_scale: str = "spectral"
    readout: str = "init"
    output_mult: float = 1.0  # used when [sweep.space] does not sweep output_mult
    # residual branches scaled by m_L^-alpha with the depth rules of scaling.md section 9 when
    # the model has more blocks than the base. None (the default, by measurement: reports/depth-auto)
    # and "auto": for a target deeper than the proxy the sweep probes alpha 0, 1/2 and 1 at 4x the
    # proxy's depth and transfer picks the rule; a run at a depth without a plan uses alpha 1/2
    # (mutransfer.core DEFAULT_DEPTH_ALPHA, the probe's prior) under None and is refused under "auto"
    depth_alpha: float | str | None = None
    # muP's free constants (mutransfer.Constants: init_<role>, lr_<role>, readout_exponent,
    # attention_mult); each is used when [sweep.space] does not sweep it. output_mult is above.
    constants: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepConfig:
    width: int = 64  # the proxy width the trials train at
    trials: int = 20  # total COMPLETE + PRUNED (+ rejected FAIL) trials; a rerun resumes up to this count
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0  # sampler seed; trial k trains with seed + k
    depth: int | None = None  # the proxy's blocks; None = [model] base_depth (else depth)
    # "single": one study over [sweep.space]; "staged": lr grid, then the constants, then the
    # lr grid again at the best constants (mutransfer/recipe.py)
    recipe: str = "single"
    storage: str | None = None  # None = SQLite file reports/<name>/study.db
    heartbeat_interval: int = 30  # seconds between a running trial's heartbeats
    grace_period: int = 120  # a RUNNING trial this long without a heartbeat is failed and retried
    space: dict[str, Any] = field(default_factory=dict)  # name -> {low, high, log} or [choices]
    # A trial that gives no finite loss, or whose sampled point the trial refuses, is recorded as
    # FAIL and the sweep goes on; only when its first N trials all fail so is the model or the
    # space taken as broken, and the sweep stops with their reasons.
    stop_if_first_fail: int = 5


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    parametrization: ParamConfig
    sweep: SweepConfig

    def to_dict(self) -> dict:
        """A plain nested dict (JSON-able): what the sweeper stores in each trial's user_attrs."""
        out = dataclasses.asdict(self)
        out["train"]["betas"] = list(self.train.betas)
        return out

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<dict>", root: Path | None = None) -> "ExperimentConfig":
        """Validate a nested dict (a parsed TOML file or :meth:`to_dict`'s output).

            >>> cfg2 = ExperimentConfig.from_dict(cfg.to_dict())
            >>> cfg2 == cfg
        """
        return _build(raw, source, root or Path.cwd())

    def proxy_depth(self) -> int | None:
        """The proxy's blocks: ``[sweep] depth``, else ``[model] base_depth``, else ``depth``
        (None: the factory's own depth, width-only transfer).

            >>> cfg.override({"model.depth": 8, "model.base_depth": 2}).proxy_depth()
            2
        """
        return self.sweep.depth or self.model.base_depth or self.model.depth

    def probes_depth(self, target_depth: int | None = None) -> bool:
        """Whether the sweep runs the depth probe: depth_alpha unset or "auto", and the target
        (``target_depth``, default ``[model] depth``) deeper than the proxy.

            >>> cfg.override({"model.depth": 8, "model.base_depth": 2}).probes_depth()
            True
        """
        base, depth = self.proxy_depth(), target_depth or self.model.depth
        return self.parametrization.depth_alpha in (None, DEPTH_AUTO) and None not in (base, depth) and depth > base

    def tokens_per_example(self) -> int:
        """Tokens one example holds: ``train.seq_len`` for byte corpora, 1 for synthetic data."""
        return 1 if self.data.source == "synthetic" else self.train.seq_len

    def steps_for(self, batch_size: int, tokens: int | None = None) -> int:
        """Optimizer steps of one run: ``[train] steps`` without a budget, else
        :func:`budget_steps` of ``tokens`` (default ``[train] tokens``).

            >>> cfg.override({"train.tokens": 65536}).steps_for(16)   # seq_len 64
            64
        """
        tokens = self.train.tokens if tokens is None else tokens
        if tokens is None:
            return self.train.steps
        return budget_steps(tokens, batch_size, self.tokens_per_example())

    def override(self, overrides: dict[str, Any]) -> "ExperimentConfig":
        """A copy with dotted keys replaced, validated like a file (CLI flags use this).

            >>> small = cfg.override({"sweep.width": 32, "sweep.trials": 4})
            >>> small.sweep.width
        """
        return ExperimentConfig.from_dict(_merge(self.to_dict(), overrides, "overrides"), "overrides")


def budget_steps(tokens: int, batch_size: int, tokens_per_example: int = 1) -> int:
    """Steps that spend a budget: ``round(tokens / (batch_size * tokens_per_example))``.

        >>> budget_steps(65536, 16, 64)
        64
    """
    for name, value in (("tokens", tokens), ("batch_size", batch_size),
                        ("tokens_per_example", tokens_per_example)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    per_step = batch_size * tokens_per_example
    if tokens < per_step:
        raise ValueError(f"a budget of {tokens} tokens is less than one step of batch {batch_size} x "
                         f"{tokens_per_example} tokens ({per_step}); raise [train] tokens to at least "
                         f"{per_step} or lower the batch size")
    return max(1, round(tokens / per_step))


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig,
            "parametrization": ParamConfig, "sweep": SweepConfig}


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read a TOML experiment file; ``overrides`` maps dotted keys (``"sweep.width"``) to values.

    A data ``path`` is resolved relative to the file. Errors name the file, the key and the
    expected form, e.g. ``sweeps/x.toml: [train] steps must be an int, got 'ten'``.

        >>> cfg = load_config("sweeps/quickstart.toml")
        >>> cfg = load_config("sweeps/quickstart.toml", {"sweep.width": 32})
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} not found; try sweeps/quickstart.toml")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    raw = _merge(raw, overrides or {}, str(path))
    return _build(raw, str(path), path.resolve().parent)


def _merge(raw: dict, overrides: dict[str, Any], source: str) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for dotted, value in overrides.items():
        *tables, key = dotted.split(".")
        node = out
        for t in tables:
            if not isinstance(node.get(t, {}), dict):
                raise ValueError(f"{source}: override {dotted!r}: {t!r} is not a table")
            node[t] = dict(node.get(t, {}))
            node = node[t]
        node[key] = value
    return out


def _build(raw: dict, source: str, root: Path) -> ExperimentConfig:
    _check_keys(raw, ("name", *SECTIONS), source, "the top level")
    if not isinstance(raw.get("name"), str) or not raw["name"]:
        raise ValueError(f"{source}: name must be a non-empty string (used for reports/<name>/), "
                         f"got {raw.get('name')!r}")
    sections = {}
    for key, cls in SECTIONS.items():
        raw.setdefault(key, {})  # every field has a default: a section may be left out
        if not isinstance(raw[key], dict):
            raise ValueError(f"{source}: [{key}] must be a table, got {raw[key]!r}")
    raw["sweep"] = _ladder_into_space(raw["sweep"], source)
    for key, cls in SECTIONS.items():
        sections[key] = _section(cls, raw[key], key, source)
    sections["data"] = _check_data(sections["data"], source, root)
    cfg = ExperimentConfig(name=raw["name"], **sections)
    _check_choices(cfg, source)
    _check_space(cfg.sweep, source)
    if cfg.sweep.recipe == "staged":
        check_staged(cfg, config_constants(cfg), source)
    return cfg


LADDER_RUNGS, LADDER_SPAN = 3, 4  # a budget ladder: >= 3 token budgets spanning >= 4x


def _ladder_into_space(sweep: dict, source: str) -> dict:
    """``[sweep] budgets = [D, 2D, 4D]`` (the budget ladder) as the swept ``tokens`` knob of
    ``[sweep.space]`` (a new table; ``sweep`` is not changed): every budget runs over the space's
    lr x batch. Refused: fewer than 3 budgets, a span under 4x, a non-increasing list, or a space
    that sweeps tokens too."""
    if "budgets" not in sweep:
        return sweep
    budgets, where = sweep["budgets"], f"{source}: [sweep] budgets"
    ok = (isinstance(budgets, list) and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in budgets)
          and all(a < b for a, b in zip(budgets, budgets[1:])))
    if not ok:
        raise ValueError(f"{where} must be increasing positive token counts, e.g. [49152, 98304, 196608]; "
                         f"got {budgets!r}")
    if len(budgets) < LADDER_RUNGS or budgets[-1] < LADDER_SPAN * budgets[0]:
        raise ValueError(f"{where} = {budgets}: a ladder needs >= {LADDER_RUNGS} budgets spanning >= "
                         f"{LADDER_SPAN}x (the laws in D are fitted across them), e.g. [D, 2 * D, 4 * D]; for "
                         f"other budgets sweep [sweep.space] tokens instead")
    space = sweep.get("space", {})
    if not isinstance(space, dict) or "tokens" in space:
        raise ValueError(f"{where} and [sweep.space] tokens both set the budgets; keep one")
    rest = {k: v for k, v in sweep.items() if k != "budgets"}
    return {**rest, "space": {**space, "tokens": list(budgets)}}


def _check_keys(table: dict, allowed, source: str, where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r} in {where}; "
                         f"allowed keys: {', '.join(allowed)}")


def _section(cls, table: dict, section: str, source: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(table, fields, source, f"[{section}]")
    hints = typing.get_type_hints(cls)
    values = {k: _coerce(v, hints[k], f"{source}: [{section}] {k}") for k, v in table.items()}
    return cls(**values)


def _coerce(value, hint, where: str):
    """``value`` checked against the annotation ``hint`` (int, float, str, bool, tuple, dict,
    or ``X | None``); ints are accepted for floats, bools never for numbers."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        for kind in inner[1:]:  # X | Y: the first that takes the value; X's message otherwise
            try:
                return _coerce(value, kind, where)
            except ValueError:
                pass
        return _coerce(value, inner[0], where)
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return _ok(ok, value, value, where, "an int")
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return _ok(ok, value, float(value) if ok else value, where, "a number")
    if hint is str or hint is bool:
        return _ok(isinstance(value, hint), value, value, where, f"a {hint.__name__}")
    if typing.get_origin(hint) is tuple:
        ok = isinstance(value, (list, tuple)) and len(value) == len(args)
        _ok(ok, value, value, where, f"a list of {len(args)} numbers, e.g. [0.9, 0.95]")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    return _ok(isinstance(value, dict), value, dict(value) if isinstance(value, dict) else value,
               where, "a table, e.g. {depth = 2}")


def _ok(ok: bool, value, result, where: str, expected: str):
    if not ok:
        raise ValueError(f"{where} must be {expected}, got {value!r}")
    return result


# the [data] fields each source reads (besides source itself)
SOURCE_FIELDS = {"pycorpus": (), "textfile": ("path",), "synthetic": ("kind", "in_dim", "out_dim", "seed"),
                 "tokens": ("path", "train_file", "val_file", "dtype", "vocab_size"),
                 "hf": ("dataset", "data_files", "split", "val_fraction", "text_field", "tokenizer",
                        "cache_dir")}


def _check_data(data: DataConfig, source: str, root: Path) -> DataConfig:
    """Resolve the data's paths against the config's folder and refuse fields of another source."""
    if data.factory is not None:
        return data  # a factory (resolved when the dataset is built) takes the data's place
    if data.path is not None and data.source == "pycorpus":  # pycorpus is only the default
        data = dataclasses.replace(data, source="tokens" if (root / data.path).is_dir() else "textfile")
    if data.source not in SOURCE_FIELDS:
        return data  # _check_choices names the allowed sources
    _check_source_fields(data, source)
    resolve = lambda value: None if value is None else str((root / value).resolve())  # noqa: E731
    if data.source == "textfile":
        if data.path is None:
            raise ValueError(f"{source}: [data] source = 'textfile' needs path = \"file.txt\"")
        _must_exist(data.path, resolve(data.path), "path", source, Path.is_file)
        return dataclasses.replace(data, path=resolve(data.path))
    if data.source == "tokens":
        return _check_tokens(data, source, resolve)
    if data.source == "hf":
        return _check_hf(data, source, root, resolve)
    return data


def _check_source_fields(data: DataConfig, source: str) -> None:
    defaults = DataConfig()
    foreign = [f.name for f in dataclasses.fields(DataConfig)
               if f.name not in ("source", "factory", *SOURCE_FIELDS[data.source])
               and getattr(data, f.name) != getattr(defaults, f.name)]
    if foreign:
        raise ValueError(f"{source}: [data] {foreign[0]} is not read by source = {data.source!r} "
                         f"(it reads {', '.join(SOURCE_FIELDS[data.source]) or 'no other field'}); "
                         f"remove it or set the source that uses it")


def _must_exist(given: str, resolved: str, key: str, source: str, test) -> None:
    if not test(Path(resolved)):
        raise ValueError(f"{source}: [data] {key} {given!r} not found (looked at {resolved}); "
                         f"paths are relative to the config file")


def _check_tokens(data: DataConfig, source: str, resolve) -> DataConfig:
    if data.path is not None:
        if data.train_file or data.val_file:
            raise ValueError(f"{source}: [data] give path (a prepared folder) or train_file/val_file, not both")
        _must_exist(data.path, resolve(data.path), "path", source, Path.is_dir)
        return dataclasses.replace(data, path=resolve(data.path))
    if data.train_file is None or data.val_file is None:
        raise ValueError(f"{source}: [data] source = 'tokens' needs path = \"folder\" (from `mutransfer "
                         f"data prepare`) or train_file and val_file (.bin or .npy) with vocab_size")
    for key in ("train_file", "val_file"):
        _must_exist(getattr(data, key), resolve(getattr(data, key)), key, source, Path.is_file)
    if data.vocab_size is None or data.vocab_size < 1:
        raise ValueError(f"{source}: [data] token files need vocab_size = <ids the model embeds>, e.g. "
                         f"vocab_size = 50257; got {data.vocab_size!r}")
    binary = [k for k in ("train_file", "val_file") if not getattr(data, k).endswith(".npy")]
    if binary and data.dtype not in TOKEN_DTYPES:
        raise ValueError(f"{source}: [data] {binary[0]} is a flat .bin file: give dtype = \"uint16\" "
                         f"(vocabularies under 65536) or \"uint32\"; got {data.dtype!r}")
    return dataclasses.replace(data, train_file=resolve(data.train_file), val_file=resolve(data.val_file))


def _check_hf(data: DataConfig, source: str, root: Path, resolve) -> DataConfig:
    if data.dataset is None and data.data_files is None:
        raise ValueError(f"{source}: [data] source = 'hf' needs dataset = \"json\" (a builder or a "
                         f"local folder) with data_files = \"docs/*.jsonl\", or a dataset name in the cache")
    if data.tokenizer is None:
        raise ValueError(f"{source}: [data] source = 'hf' needs tokenizer = \"tokenizer.json\" (a file, "
                         f"e.g. from `mutransfer data prepare --train-tokenizer 512`) or a transformers name")
    if not 0 < data.val_fraction < 1:
        raise ValueError(f"{source}: [data] val_fraction must lie in (0, 1), e.g. 0.05; got {data.val_fraction!r}")
    local = lambda value: value if value is None or not (root / value).exists() else resolve(value)  # noqa: E731
    dataset = local(data.dataset)
    files = resolve(data.data_files) if data.data_files is not None else None
    return dataclasses.replace(data, dataset=dataset, data_files=files, tokenizer=local(data.tokenizer),
                               cache_dir=resolve(data.cache_dir) if data.cache_dir else None)


def _check_choices(cfg: ExperimentConfig, source: str) -> None:
    checks = [("data", "source", cfg.data.source, DATA_SOURCES),
              ("data", "kind", cfg.data.kind, SYNTHETIC_KINDS),
              ("train", "wd_policy", cfg.train.wd_policy, WD_POLICIES),
              ("train", "decay", cfg.train.decay, DECAY_KINDS),
              ("train", "parallel", cfg.train.parallel, PARALLEL),
              ("train", "log", cfg.train.log, LOGS),
              ("parametrization", "scheme", cfg.parametrization.scheme, SCHEMES),
              ("parametrization", "optimizer", cfg.parametrization.optimizer, OPTIMIZERS),
              ("parametrization", "muon_scale", cfg.parametrization.muon_scale, MUON_SCALES),
              ("parametrization", "readout", cfg.parametrization.readout, READOUTS),
              ("sweep", "sampler", cfg.sweep.sampler, SAMPLERS),
              ("sweep", "pruner", cfg.sweep.pruner, PRUNERS),
              ("sweep", "recipe", cfg.sweep.recipe, RECIPES)]
    try:
        Constants.coerce(cfg.parametrization.constants)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: [parametrization] constants: {e}") from None
    if "output_mult" in cfg.parametrization.constants:
        raise ValueError(f"{source}: [parametrization] constants: give output_mult as "
                         f"[parametrization] output_mult, not inside constants")
    for section, key, value, choices in checks:
        if value not in choices:
            raise ValueError(f"{source}: [{section}] {key} must be one of {', '.join(choices)}, "
                             f"got {value!r}")
    positive = [("model", "width", cfg.model.width), ("model", "base_width", cfg.model.base_width),
                ("train", "steps", cfg.train.steps), ("train", "batch_size", cfg.train.batch_size),
                ("train", "seq_len", cfg.train.seq_len), ("train", "grad_accum", cfg.train.grad_accum),
                ("sweep", "width", cfg.sweep.width), ("sweep", "trials", cfg.sweep.trials),
                ("sweep", "heartbeat_interval", cfg.sweep.heartbeat_interval),
                ("sweep", "grace_period", cfg.sweep.grace_period)]
    if cfg.train.tokens is not None:
        positive.append(("train", "tokens", cfg.train.tokens))
    if cfg.train.checkpoint_every is not None:
        positive.append(("train", "checkpoint_every", cfg.train.checkpoint_every))
    positive += [(s, k, v) for s, k, v in (("model", "depth", cfg.model.depth),
                                            ("model", "base_depth", cfg.model.base_depth),
                                            ("sweep", "depth", cfg.sweep.depth)) if v is not None]
    _check_depth(cfg, source)
    for section, key, value in positive:
        if value < 1:
            raise ValueError(f"{source}: [{section}] {key} must be >= 1, got {value!r}")
    if cfg.sweep.stop_if_first_fail < 0:
        raise ValueError(f"{source}: [sweep] stop_if_first_fail must be >= 0 (0: never stop on failed "
                         f"trials), got {cfg.sweep.stop_if_first_fail!r}")
    if cfg.train.qk_clip is not None and not cfg.train.qk_clip > 0:
        raise ValueError(f"{source}: [train] qk_clip must be a logit bound tau > 0 (K2 used 100), "
                         f"or left out to turn QK-Clip off; got {cfg.train.qk_clip!r}")
    spectral = [n for n, r in OPTIMIZER_RULES.items() if r.spectral_decay]  # decoupled decays only
    if cfg.train.decay == "spectral" and cfg.parametrization.optimizer not in spectral:
        raise ValueError(f"{source}: [train] decay = 'spectral' needs [parametrization] optimizer "
                         f"{' or '.join(map(repr, spectral))}, got {cfg.parametrization.optimizer!r}")
    if cfg.sweep.grace_period <= cfg.sweep.heartbeat_interval:
        raise ValueError(f"{source}: [sweep] grace_period ({cfg.sweep.grace_period}) must exceed "
                         f"heartbeat_interval ({cfg.sweep.heartbeat_interval}), e.g. twice it")


def _check_depth(cfg: ExperimentConfig, source: str) -> None:
    m, alpha = cfg.model, cfg.parametrization.depth_alpha
    if (m.base_depth is not None or cfg.sweep.depth is not None) and m.depth is None:
        raise ValueError(f"{source}: [model] base_depth and [sweep] depth need [model] depth (the "
                         f"target's blocks, passed to the factory as depth=)")
    if m.depth is not None and "depth" in m.kwargs:
        raise ValueError(f"{source}: [model] depth = {m.depth} and kwargs depth = {m.kwargs['depth']}: "
                         f"give depth in one place, [model] depth")
    if isinstance(alpha, str) and alpha != DEPTH_AUTO:
        raise ValueError(f"{source}: [parametrization] depth_alpha must be a number in [0, 1] or "
                         f"\"{DEPTH_AUTO}\" (the sweep measures which rule transfers), got {alpha!r}")
    if alpha is not None and alpha != DEPTH_AUTO and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{source}: [parametrization] depth_alpha must lie in [0, 1] (0: width-only, "
                         f"0.5: depth-muP, 1: CompleteP) or be \"{DEPTH_AUTO}\", got {alpha!r}")


DEPTH_AUTO = "auto"  # [parametrization] depth_alpha: chosen by the depth probe (mutransfer.tuning.probe_depth)


def _check_space(sweep: SweepConfig, source: str) -> None:
    if not sweep.space:
        raise ValueError(f"{source}: [sweep.space] is empty; add e.g. lr = {{low = 1e-4, high = 1e-1, log = true}}")
    for name, spec in sweep.space.items():
        where = f"{source}: [sweep.space] {name}"
        if name not in SPACE_KEYS:
            raise ValueError(f"{where}: unknown knob; sweepable: {', '.join(SPACE_KEYS)}")
        if isinstance(spec, list):
            _check_choices_list(spec, name, where)
        elif isinstance(spec, dict):
            _check_range(spec, name, where)
        else:
            raise ValueError(f"{where} must be {{low = ..., high = ..., log = true}} or a list of "
                             f"choices, got {spec!r}")
    if sweep.sampler == "grid":
        _check_grid(sweep, source)


def _check_choices_list(spec: list, name: str, where: str) -> None:
    if name in CHOICE_SPACE_KEYS:
        choices = CHOICE_SPACE_KEYS[name]
        if not spec or not all(isinstance(v, str) and v in choices for v in spec):
            raise ValueError(f"{where} must be a non-empty list of {', '.join(map(repr, choices))}, "
                             f"got {spec!r}")
        return
    if name == "qk_clip" and not all(isinstance(v, (int, float)) and v > 0 for v in spec):
        raise ValueError(f"{where}: every tau must be > 0, got {spec!r}")
    number = (int,) if name in INT_SPACE_KEYS else (int, float)
    if not spec or not all(isinstance(v, number) and not isinstance(v, bool) for v in spec):
        kind = "ints" if name in INT_SPACE_KEYS else "numbers"
        raise ValueError(f"{where} must be a non-empty list of {kind}, got {spec!r}")
    for value in spec:
        _check_domain(name, value, where)


def _check_range(spec: dict, name: str, where: str) -> None:
    if name in CHOICE_SPACE_KEYS:
        raise ValueError(f"{where} must be a list of choices such as "
                         f"{list(CHOICE_SPACE_KEYS[name])}, got {spec!r}")
    _check_keys(spec, ("low", "high", "log"), where.split(": ")[0], f"[sweep.space] {name}")
    low, high, log = spec.get("low"), spec.get("high"), spec.get("log", False)
    nums = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if not nums or not isinstance(log, bool):
        raise ValueError(f"{where} must be {{low = <number>, high = <number>, log = true|false}}, got {spec!r}")
    if not low < high or (log and low <= 0):
        raise ValueError(f"{where}: need 0 < low < high for log = true (low < high otherwise; "
                         f"low = high is an empty range: give one value as a list), "
                         f"got low={low!r} high={high!r}")
    for value in (low, high):
        _check_domain(name, value, where)
    if name in INT_SPACE_KEYS and not all(isinstance(v, int) for v in (low, high)):
        raise ValueError(f"{where}: {name} is an int; give int bounds or a list, got {spec!r}")


def _check_domain(name: str, value, where: str) -> None:
    """Refuse a value no trial could run with: the message names the knob, the value and its
    allowed form."""
    if name in CONSTANT_NAMES:
        try:
            Constants.coerce({name: value})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {value!r} cannot be trained with: {err}") from None
        return
    if name in KNOB_DOMAINS:
        form, ok = KNOB_DOMAINS[name]
        if not ok(value):
            raise ValueError(f"{where}: every value must be {form}, got {value!r}; "
                             f"e.g. {name} = {_EXAMPLES.get(name, '[...]')}")


_EXAMPLES = {"lr": "{low = 1e-4, high = 1e-1, log = true}", "adam_lr": "{low = 1e-4, high = 1e-2, log = true}",
             "batch_size": "[8, 16, 32]", "tokens": "[65536, 131072]", "init_scale": "{low = 0.5, high = 2.0, log = true}",
             "qk_clip": "[50, 100]", "weight_decay": "{low = 0.0, high = 0.1}", "warmup": "[0.0, 0.05]",
             "momentum": "[0.9, 0.95]"}


def _check_grid(sweep: SweepConfig, source: str) -> None:
    ranges = [k for k, v in sweep.space.items() if not isinstance(v, list)]
    if ranges:
        raise ValueError(f"{source}: [sweep] sampler = 'grid' needs every [sweep.space] entry to be a "
                         f"list of values; {ranges[0]!r} is a range")
    size = math.prod(len(v) for v in sweep.space.values())
    if sweep.trials > size:
        raise ValueError(f"{source}: [sweep] trials = {sweep.trials} exceeds the grid's {size} points; "
                         f"set trials <= {size}")


def config_constants(cfg: ExperimentConfig) -> dict[str, float]:
    """Every constant's value in ``cfg`` (``[parametrization] constants`` and output_mult over
    the defaults).

        >>> config_constants(cfg)["lr_hidden"]
        1.0
    """
    return Constants.of_parametrization(dataclasses.asdict(cfg.parametrization)).as_dict()


def swept_constants(cfg: ExperimentConfig) -> list[str]:
    """The constants that ``[sweep.space]`` sweeps."""
    return [k for k in cfg.sweep.space if k in CONSTANT_NAMES]


def check_staged(cfg: ExperimentConfig, constants: dict[str, float], source: str) -> None:
    """The staged recipe's needs: an lr grid, >= 1 swept constant whose range holds the
    config's value, no other swept knob, a sampler other than grid, and room for phase 2."""
    space, where = cfg.sweep.space, f"{source}: [sweep] recipe = \"staged\""
    if not isinstance(space.get("lr"), list) or len(space["lr"]) < 3:
        raise ValueError(f"{where} needs [sweep.space] lr as a list of >= 3 values (the lr grid)")
    names = swept_constants(cfg)
    if not names:
        raise ValueError(f"{where} needs >= 1 constant in [sweep.space] (one of {', '.join(CONSTANT_NAMES)})")
    others = sorted(set(space) - {"lr", *names})
    if others:
        raise ValueError(f"{where} tunes lr and the constants only; fix {others[0]!r} in [train] "
                         f"or use recipe = \"single\"")
    if cfg.sweep.sampler == "grid":
        raise ValueError(f"{where} samples the constants: use sampler = \"tpe\" (or random/qmc)")
    for name in names:
        spec, value = space[name], constants[name]
        inside = value in spec if isinstance(spec, list) else spec["low"] <= value <= spec["high"]
        if not inside:
            raise ValueError(f"{where}: [sweep.space] {name} must include the config's value "
                             f"{value:g} (phase 1 runs there); widen it")
    if cfg.sweep.trials < 2 * len(space["lr"]) + 1:
        raise ValueError(f"{where} needs trials >= 2 x {len(space['lr'])} lr points + 1; "
                         f"got {cfg.sweep.trials}")
