"""Validation: the coordinate check and its verdict, lr landscapes across widths
(:func:`validate`), the target against SP tuned there (:func:`compare`), per-role exponents,
the plots and the markdown reports in ``reports/``.

May import every other package of the library (it sits on top of the path; only the CLI,
the experiments and the benchmarks are above it).

    >>> df = mutransfer.validation.coord_check(lambda w: mutransfer.zoo.mlp(width=w), [64, 128, 256], batches)
"""
from mutransfer.validation._compare import compare
from mutransfer.validation._coord_check import coord_check
from mutransfer.validation._exponents import exponent_table
from mutransfer.validation._plots import (plot_best_loss, plot_compare, plot_coord_check,
                                          plot_lr_landscape, plot_role_landscapes, plot_training,
                                          plot_transfer)
from mutransfer.validation._report import write_report
from mutransfer.validation._validate import validate
from mutransfer.validation._verdict import CoordVerdict, coord_slopes, coord_verdict

__all__ = ["CoordVerdict", "compare", "coord_check", "coord_slopes", "coord_verdict",
           "exponent_table", "plot_best_loss", "plot_compare", "plot_coord_check",
           "plot_lr_landscape", "plot_role_landscapes", "plot_training", "plot_transfer",
           "validate", "write_report"]
