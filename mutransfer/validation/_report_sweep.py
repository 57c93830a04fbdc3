"""A sweep's report, read from its stored study: ``reports/<name>/<study>/`` gets trials.csv and
Optuna's history and slice plots, and the best (and failed) trials table is printed. The sweep
itself (:func:`mutransfer.sweep`) only fills the study; ``mutransfer sweep`` and
:func:`write_report` call this.

    >>> write_sweep_report(study, "reports/quickstart/quickstart-w64", show=True)
"""
from __future__ import annotations

from pathlib import Path

BEST_ROWS = 10  # rows of the best-trials table


def best_table(study, rows: int = BEST_ROWS):
    """DataFrame of the best COMPLETE trials (value, params, diverged, seconds), best first."""
    import pandas as pd

    from optuna.trial import TrialState

    records = [{"trial": t.number, "loss": t.value, **t.params,
                "diverged": t.user_attrs.get("diverged"), "seconds": t.user_attrs.get("seconds")}
               for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not records:
        return pd.DataFrame(columns=["trial", "loss"])
    return pd.DataFrame(records).sort_values("loss").head(rows).reset_index(drop=True)


def write_sweep_report(study, out_dir: str | Path, *, show: bool = False) -> dict[str, Path]:
    """trials.csv (one row per trial; the config column left out) and Optuna's matplotlib plots:
    history.png (optimization history) and slice.png (loss against lr and batch size).

        >>> write_sweep_report(study, "reports/quickstart/quickstart-w64")
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = study.trials_dataframe()
    df.drop(columns=[c for c in df.columns if c == "user_attrs_config"]).to_csv(out / "trials.csv", index=False)
    files = {"trials": out / "trials.csv", **_plots(study, out)}
    if show:
        table = best_table(study)
        print(f"\nbest trials of {study.study_name} ({len(df)} trials; reports in {out}):")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        failed = failed_table(study)
        if len(failed):
            print(f"\nfailed trials ({len(failed)}):")
            print(failed.to_string(index=False))
    return files


def failed_table(study):
    """DataFrame of the FAIL trials: number, params and the exception (``user_attrs["error"]``,
    "type: message"; "unknown" for trials that failed before recording one).

        >>> failed_table(study)["error"].tolist()
        ['ModuleNotFoundError: No module named models']
    """
    import pandas as pd

    from optuna.trial import TrialState

    records = [{"trial": t.number, **t.params, "error": t.user_attrs.get("error", "unknown")}
               for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))]
    return pd.DataFrame(records, columns=None if records else ["trial", "error"])


def _plots(study, out: Path) -> dict[str, Path]:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return {}
    swept = [p for p in ("lr", "batch_size") if any(p in t.params for t in complete)]
    files = {"history": out / "history.png", "slice": out / "slice.png"}
    # style.context restores rcParams on exit: Optuna's plots switch the process to ggplot
    with warnings.catch_warnings(), plt.style.context("default"):
        # the matplotlib backend is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Attempting to set identical")  # one value swept
        for key, plot in (("history", lambda: optuna.visualization.matplotlib.plot_optimization_history(study)),
                          ("slice", lambda: optuna.visualization.matplotlib.plot_slice(study, params=swept))):
            if key == "slice" and not swept:
                files.pop("slice")
                continue
            axes = plot()
            flat = list(axes.flat) if hasattr(axes, "flat") else [axes]
            for ax in flat:  # Optuna labels every minor tick of a log axis: they overlap
                if ax.get_xscale() == "log":
                    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                _short_category_labels(ax)
            fig = flat[0].figure
            fig.savefig(files[key], dpi=120, bbox_inches="tight")
            plt.close(fig)
    return files


def _short_category_labels(ax) -> None:
    """A grid's values are categories to Optuna, labelled in full (0.00048828125): show 3
    significant digits, slanted, so neighbouring labels do not run into each other."""
    labels = [t.get_text() for t in ax.get_xticklabels()]
    try:
        values = [float(v) for v in labels]
    except ValueError:
        return
    if values and any(len(v) > 5 for v in labels):
        ax.set_xticks(ax.get_xticks(), [f"{v:.3g}" for v in values], rotation=45, ha="right", fontsize=8)
