"""Validation: the coordinate check and its verdict, lr landscapes across widths and depths
(:func:`validate`, and the fits that judge them: :func:`eta_stars`, :func:`drift`, :func:`regret`,
:func:`summarize`), the target against SP tuned there (:func:`compare`), per-role exponents, and
the reports in ``reports/``: each a function that reads stored results and writes ``index.md``
and figures. The figures are one private module per family (``_fig_*``) over the public
:mod:`~mutransfer.validation.style`.

May import every other package of the library (it sits on top of the path; only the CLI,
the experiments and the benchmarks are above it).

    >>> df = mutransfer.validation.coord_check(lambda w: mutransfer.zoo.mlp(width=w), [64, 128, 256], batches)
"""
from mutransfer.validation import style
from mutransfer.validation._compare import compare, compare_verdict, meets_goal, read_compare, write_compare
from mutransfer.validation._coord_check import coord_check
from mutransfer.validation._coord_report import (DEFAULT_ADAM_LR, DEFAULT_LR, config_coord_check, coord_batches,
                                                 write_coord_report)
from mutransfer.validation._depth import (depth_coord_check, depth_etas, depth_markdown, depth_summary,
                                          depth_verdict, write_depth_outputs)
from mutransfer.validation._exponents import exponent_table, role_runs, write_exponents
from mutransfer.validation._fig_compare import plot_compare
from mutransfer.validation._fig_coord import plot_coord_check, plot_depth_coord
from mutransfer.validation._fig_landscape import (plot_best_loss, plot_depth_landscapes, plot_lr_landscape,
                                                  plot_role_landscapes)
from mutransfer.validation._fig_training import plot_training
from mutransfer.validation._fig_transfer import plot_transfer
from mutransfer.validation._landscape import (MUP_MAX_DRIFT, MUP_MAX_REGRET, MUP_SCHEMES, check_runs,
                                              curve_means, drift, drift_slope, eta_stars, fit_curve,
                                              loss_at, regret, summarize, survivors)
from mutransfer.validation._markdown import markdown_table, write_markdown
from mutransfer.validation._report import write_report
from mutransfer.validation._report_corpora import write_corpora_report
from mutransfer.validation._report_sweep import best_table, failed_table, write_sweep_report
from mutransfer.validation._report_bare_table import write_bare_table_report
from mutransfer.validation._report_batch_noise import write_batch_noise_report
from mutransfer.validation._report_budget import (direct_plan_of, load_trials, study_names,
                                                  write_budget_report)
from mutransfer.validation._report_budgets import write_budgets_report
from mutransfer.validation._report_depth_ablation import write_depth_ablation_report
from mutransfer.validation._report_depth_auto import write_depth_auto_report
from mutransfer.validation._report_ladder import write_ladder_report
from mutransfer.validation._report_muonclip import write_muonclip_report
from mutransfer.validation._report_regret import REGRET_COLUMNS, write_regret_report
from mutransfer.validation._target_report import summary_rows, write_training_report
from mutransfer.validation._validate import landscape_markdown, shell_path, validate
from mutransfer.validation._verdict import CoordVerdict, coord_slopes, coord_verdict

__all__ = ["CoordVerdict", "DEFAULT_ADAM_LR", "DEFAULT_LR", "MUP_MAX_DRIFT", "MUP_MAX_REGRET",
           "MUP_SCHEMES", "REGRET_COLUMNS", "best_table", "check_runs", "compare",
           "compare_verdict", "config_coord_check", "coord_batches", "coord_check", "coord_slopes",
           "coord_verdict", "curve_means", "depth_coord_check", "depth_etas", "depth_markdown",
           "depth_summary", "depth_verdict", "direct_plan_of", "drift", "drift_slope", "eta_stars",
           "exponent_table", "failed_table", "fit_curve", "landscape_markdown", "load_trials",
           "loss_at", "markdown_table", "meets_goal", "plot_best_loss", "plot_compare",
           "plot_coord_check", "plot_depth_coord", "plot_depth_landscapes", "plot_lr_landscape",
           "plot_role_landscapes", "plot_training", "plot_transfer", "read_compare", "regret",
           "role_runs", "shell_path", "study_names", "style", "summarize", "summary_rows",
           "survivors", "validate", "write_bare_table_report", "write_batch_noise_report",
           "write_budget_report", "write_budgets_report", "write_depth_ablation_report", "write_depth_auto_report", "write_ladder_report", "write_compare", "write_coord_report",
           "write_corpora_report", "write_depth_outputs", "write_exponents", "write_markdown",
           "write_muonclip_report", "write_regret_report", "write_report", "write_sweep_report",
           "write_training_report"]
