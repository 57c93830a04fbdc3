"""The experiment report: ``reports/<name>/index.md``, one section per step of the path.

It gathers what the steps already wrote into ``reports/<name>/`` (it runs nothing): the coord
check (coord.csv/png/md), the proxy sweep(s) (``<study>/trials.csv`` and Optuna's PNGs), the
transfer plan (plan.json), the target runs trained with it (train-w<W>/) and the validation
(validate.csv/png/md). Every section names the command that regenerates it; a step not run yet
says so with the command to run. Image links are relative, so the file renders on GitHub and in
any markdown viewer.

    >>> path = write_report("sweeps/quickstart.toml")
    >>> path
    PosixPath('reports/quickstart/index.md')
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import pandas as pd

from mutransfer.runs import ExperimentConfig, load_config
from mutransfer.validation._markdown import markdown_table
from mutransfer.validation._validate import shell_path

BEST_ROWS = 8  # rows of each sweep's best-trials table


def write_report(config: ExperimentConfig | str | Path, reports_dir: str | Path = "reports") -> Path:
    """Write ``<reports_dir>/<name>/index.md`` from the files the other commands left there.

    Args:
        config: the experiment's TOML path (its text is quoted in the report) or config.
        reports_dir: the folder the other commands wrote into.

    Returns the path of index.md.

        >>> write_report("sweeps/quickstart.toml", reports_dir="reports")
        PosixPath('reports/quickstart/index.md')
    """
    source = None if isinstance(config, ExperimentConfig) else Path(config)
    cfg = config if source is None else load_config(source)
    folder = Path(reports_dir) / cfg.name
    folder.mkdir(parents=True, exist_ok=True)
    arg = shell_path(source) if source else "CONFIG"
    out = f" --reports {shell_path(Path(reports_dir))}" if Path(reports_dir) != Path("reports") else ""
    sections = [
        [f"# mutransfer report: {cfg.name}", "",
         f"Written {time.strftime('%Y-%m-%d %H:%M')} by `mutransfer report {arg}{out}` from the "
         f"files in this folder; each section names the command that regenerates it."],
        run_section(cfg, source),
        coord_section(folder, arg, out),
        sweep_section(folder, cfg, arg, out),
        transfer_section(folder, arg, out),
        target_section(folder, arg, out),
        validate_section(folder, arg, out),
        *compare_section(folder, cfg, arg, out),
        *exponent_sections(folder),
    ]
    path = folder / "index.md"
    path.write_text("\n\n".join("\n".join(s) for s in sections) + "\n")
    return path


def run_section(cfg: ExperimentConfig, source: Path | None) -> list[str]:
    """What was run: the config, the versions, the machine and the data's hash."""
    import numpy
    import optuna
    import torch

    from mutransfer._version import __version__

    text = source.read_text() if source else json.dumps(cfg.to_dict(), indent=2)
    shown = shell_path(source) if source else f"{cfg.name} (passed as an object; shown as JSON)"
    versions = {"mutransfer": __version__, "python": platform.python_version(),
                "torch": torch.__version__, "optuna": optuna.__version__,
                "numpy": numpy.__version__, "pandas": pd.__version__}
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    machine = {"platform": platform.platform(), "cpu cores": os.cpu_count(), "gpu": gpu}
    lines = ["## What was run", "",
             f"Config `{shown}`:", "",
             "```toml" if source else "```json", text.rstrip(), "```", "",
             "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in {**versions, **machine}.items()]
    lines += [f"| data | {_describe_data(cfg)} |"]
    return lines


def _describe_data(cfg: ExperimentConfig) -> str:
    """The dataset's own description: for a corpus its sha256, bytes and files; for a synthetic
    task its seed and sizes."""
    from mutransfer.runs import make_dataset

    info = make_dataset(cfg.data).describe()
    return ", ".join(f"{k} `{v}`" for k, v in info.items() if len(str(v)) <= 80)


def _not_run(command: str) -> list[str]:
    return [f"Not run yet: run `{command}`."]


def coord_section(folder: Path, arg: str, out: str) -> list[str]:
    """The coordinate check's figure and verdict (coord.png, coord.md)."""
    command = f"mutransfer coord-check {arg} --out {shell_path(folder)}"
    lines = ["## Coordinate check", ""]
    png, md = folder / "coord.png", folder / "coord.md"
    if md.is_file():  # coord-check writes its verdict, its figure link and its exact command
        text = md.read_text()
        head = [] if png.name in text or not png.is_file() else [f"![coordinate check]({png.name})", ""]
        return lines + head + [_demote(text)]
    return lines + _not_run(command)


def sweep_section(folder: Path, cfg: ExperimentConfig, arg: str, out: str) -> list[str]:
    """Each proxy study's best trials and Optuna's plots (``<study>/trials.csv``, ``*.png``)."""
    command = f"mutransfer sweep {arg}{out}"
    lines = ["## Proxy sweep"]
    _sweep_reports_from_storage(folder, cfg)
    studies = sorted((p.parent for p in folder.glob(f"{cfg.name}-w*/trials.csv")), key=_study_order)
    if not studies:
        return lines + [""] + _not_run(command)
    for study in studies:
        again = command + _sweep_flags(study.name, cfg)
        trials = pd.read_csv(study / "trials.csv")
        lines += ["", f"### {study.name}", "", f"Regenerate: `{again}` (resumes the stored study)",
                  "", f"{len(trials)} trials ({_states(trials)}); the best, best first:", ""]
        lines += markdown_table(best_trials(trials))
        for png in sorted(study.glob("*.png")):
            lines += ["", f"![{png.stem}]({study.name}/{png.name})"]
    return lines


def _sweep_reports_from_storage(folder: Path, cfg: ExperimentConfig) -> None:
    """(Re)write each proxy study's trials.csv and figures from the default storage
    (``<folder>/study.db``), so the report reads the studies as they are stored now."""
    import optuna

    from mutransfer.tuning import STUDY_NAME, open_storage
    from mutransfer.validation._report_sweep import write_sweep_report

    db = folder / "study.db"
    if not db.is_file():
        return
    storage = open_storage(f"sqlite:///{db.resolve()}", heartbeat_interval=cfg.sweep.heartbeat_interval,
                           grace_period=cfg.sweep.grace_period)
    for name in optuna.get_all_study_names(storage=storage):
        m = STUDY_NAME.match(name)
        if m and m["name"] == cfg.name:
            study = optuna.load_study(study_name=name, storage=storage)
            states = [t.state.name for t in study.get_trials(deepcopy=False)]
            if not _current(folder / name / "trials.csv", states):
                write_sweep_report(study, folder / name)


def _current(csv: Path, states: list[str]) -> bool:
    """Whether a sweep's trials.csv already holds its trials in these states (then its figures
    are current too, and rewriting them is wasted work)."""
    return csv.is_file() and pd.read_csv(csv, usecols=["state"])["state"].tolist() == states


def _study_order(folder: Path) -> tuple:
    """Studies by width, then seed (w64 before w128), unknown names last."""
    from mutransfer.tuning import STUDY_NAME

    m = STUDY_NAME.match(folder.name)
    return (0, int(m["width"]), int(m["seed"] or -1), "") if m else (1, 0, 0, folder.name)


def _sweep_flags(study: str, cfg: ExperimentConfig) -> str:
    """The ``--width``/``--seed`` flags that recreate study ``<name>-w<W>[-s<S>]``."""
    from mutransfer.tuning import STUDY_NAME

    m = STUDY_NAME.match(study)
    if m is None or m["name"] != cfg.name:
        return f" --study {study}"
    width = "" if int(m["width"]) == cfg.sweep.width else f" --width {m['width']}"
    return width + (f" --seed {m['seed']}" if m["seed"] else "")


def _states(trials: pd.DataFrame) -> str:
    if "state" not in trials:
        return "states unknown"
    return ", ".join(f"{n} {s.lower()}" for s, n in trials["state"].value_counts().items())


def best_trials(trials: pd.DataFrame, rows: int = BEST_ROWS) -> pd.DataFrame:
    """The best COMPLETE trials of a trials.csv (Optuna's ``trials_dataframe`` columns)."""
    done = trials[trials["state"] == "COMPLETE"] if "state" in trials else trials
    keep = ["number", "value"] + [c for c in done.columns if c.startswith("params_")]
    keep += [c for c in ("user_attrs_diverged", "user_attrs_seconds") if c in done.columns]
    best = done.sort_values("value").head(rows)[keep]
    best = best.rename(columns=lambda c: c.removeprefix("params_").removeprefix("user_attrs_"))
    return best.map(lambda v: f"{v:.4g}" if isinstance(v, float) else v)


def transfer_section(folder: Path, arg: str, out: str) -> list[str]:
    """Each transfer plan's summary and warnings: plan.json first, then any other plan*.json
    (e.g. a plan fitted on a sweep at the target itself, to compare with)."""
    command = f"mutransfer transfer {arg}{out} --out {shell_path(folder / 'plan.json')}"
    lines = ["## Transfer plan", ""]
    paths = sorted(folder.glob("plan*.json"), key=lambda p: (p.name != "plan.json", p.name))
    if not paths or paths[0].name != "plan.json":
        return lines + _not_run(command)
    from mutransfer.projection import TransferPlan

    for path in paths:
        plan = TransferPlan.from_json(path.read_text())
        summary = plan.summary().rstrip()
        again = plan.diagnostics.get("command", command if path.name == "plan.json" else None)
        head = [f"### {path.name}", ""] if len(paths) > 1 else []
        png = path.with_suffix(".png")
        figure = [f"![{png.stem}]({png.name})", ""] if png.is_file() else []
        lines += head + ([f"Regenerate: `{again}`", ""] if again else []) + figure + ["```", summary, "```", ""]
        missing = [w for w in plan.warnings if w not in summary]  # the summary lists its warnings
        lines += [f"- {w}" for w in missing] + ([""] if missing else [])
    return lines[:-1]


def target_section(folder: Path, arg: str, out: str) -> list[str]:
    """Each target run trained with the plan (``train-w<W>/train.md`` and ``loss.png``)."""
    lines = ["## Target trained with the plan", ""]
    runs = [md for md in folder.glob("train-w*/train.md") if md.parent.name[7:].isdigit()]
    if not runs:
        return lines + _not_run(f"mutransfer train {arg}{out}")
    for md in sorted(runs, key=lambda md: int(md.parent.name[7:])):
        body = md.read_text().split("\n", 1)[1].strip()  # below its own "# Target training"
        lines += [f"### {md.parent.name}", "", body.replace("](loss.png)", f"]({md.parent.name}/loss.png)"), ""]
    return lines[:-1]


def validate_section(folder: Path, arg: str, out: str) -> list[str]:
    """The lr landscapes across widths (validate.png, validate.md)."""
    command = f"mutransfer validate {arg}{out}"
    lines = ["## Validation: lr landscapes across widths", ""]
    png, md = folder / "validate.png", folder / "validate.md"
    if not md.is_file():
        return lines + _not_run(command)
    if png.is_file():
        lines += [f"![lr landscapes]({png.name})", ""]
    return lines + [_demote(md.read_text())]


def compare_section(folder: Path, cfg: ExperimentConfig, arg: str, out: str) -> list[list[str]]:
    """Transfer against direct tuning at the target (compare*.md, which link their PNGs);
    for a config without the staged recipe (which compare needs) and no compare.md, nothing."""
    title = "## Transfer against direct tuning at the target"
    found = sorted(folder.glob("compare*.md"))
    if found:
        return [[title + ("" if md.stem == "compare" else f" ({md.stem.split('-', 1)[1]})"), "",
                 _demote(md.read_text()).split("\n", 1)[1].lstrip()] for md in found]
    return [[title, ""] + _not_run(f"mutransfer compare {arg}{out}")] if cfg.sweep.recipe == "staged" else []


def exponent_sections(folder: Path) -> list[list[str]]:
    """One section per exponents-<kind>.md that `mutransfer exponents` wrote (none: nothing)."""
    return [["## Measured exponents per role: " + md.stem.split("-", 1)[1] + " multipliers", "",
             _demote(md.read_text()).split("\n", 1)[1].lstrip()]
            for md in sorted(folder.glob("exponents-*.md"))]


def _demote(markdown: str) -> str:
    """Push a sub-report's headings below this report's ``##`` sections."""
    return "\n".join("##" + line if line.startswith("#") else line
                     for line in markdown.strip().splitlines())
