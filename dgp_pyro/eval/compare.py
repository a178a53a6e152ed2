r"""Runs (and DeepLabCut prediction files) side by side on held-out labels (``dgp-pyro compare``).

Every input is a row:

**A run folder.** Its posterior at its held-out labeled images (``split.json`` ``test``;
:func:`~dgp_pyro.posterior.posterior2d.image_posteriors`) is scored against their labels, in the
images' own pixels: ``rmse_px``, ``median_px``, ``pck_5px`` (share within 5 px),
``coverage_<level>`` (share of true coordinates inside the equal-tailed credible interval,
x and y counted separately) with a one-line ``calibration`` verdict
(:func:`~dgp_pyro.posterior.interval_fit.calibration_note`), ``elbo_per_frame`` (the mean of
``-loss`` over the last 10 % of the rows of ``elbo.csv``; null for runs without one, e.g.
supervised), and from the ArviZ export (:mod:`dgp_pyro.export.inference_data`) ``elpd_loo``,
``elpd_se`` and ``pareto_k_max`` (``az.loo``; ``pareto_k_max`` is null where infinite, i.e.
ArviZ could not fit the tail, and ``n_high_k`` counts the labels with k-hat > 0.7), and
``loo_weight`` (``az.compare``, stacking, over the runs that share the first run's held-out
images, when there are at least two). ``elpd_heldout`` / ``elpd_heldout_se`` are the held-out
log predictive density computed directly, in closed form from the Gaussian marginals
(:math:`\sum_i \log N(\ell_i \mid m_i, \Sigma_i + \sigma^2 I)`, frame pixels): the labels
were really held out, so it needs no importance sampling and no draws. Prefer it when
``pareto_k_max`` > 0.7 (see :mod:`~dgp_pyro.export.inference_data` for why PSIS k-hat is usually
high here).

**A DeepLabCut prediction file** (``.h5`` / ``.csv`` with ``x, y, likelihood``, rows indexed
by image path, as DeepLabCut writes for labeled images). Its points are scored on the first
run's held-out labels (matched by image key, or by the key's last two path parts), or on
``--labels FILE`` (a DeepLabCut label file) when given. It has no posterior, so coverage and
elpd are null, unless it is a dgp-pyro prediction file with ``x_lo<level>`` ... columns,
whose coverage is scored.

All runs must be on the same project with the same keypoints (else refused); runs whose
held-out images differ are still scored, each on its own held-out images, with a warning,
and left out of the LOO comparison. A run without held-out labels gets null metrics and a
note saying so. ``--json`` prints a list of objects (non-finite numbers as null).
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dgp_pyro.data.labels import read_labels
from dgp_pyro.data.predictions import PredictionTable, read_predictions
from dgp_pyro.errors import DGPError
from dgp_pyro.eval.metrics import keypoint_errors, summarize_errors
from dgp_pyro.export.inference_data import (
    K_HAT_LIMIT,
    gaussian_predictive_elpd,
    inference_data_from_posterior,
    loo_summary,
    run_label_sigma,
)
from dgp_pyro.posterior.calibration_file import POSTERIOR_CALIBRATION, out_of_sample_coverage
from dgp_pyro.posterior.held_out import held_out_images
from dgp_pyro.posterior.interval_fit import LOO_SE_WARNING, calibration_note, coverage_curve
from dgp_pyro.posterior.marginals import level_tag
from dgp_pyro.posterior.posterior2d import image_posteriors
from dgp_pyro.run.config import CONFIG
from dgp_pyro.run.folder import Run, load_run
from dgp_pyro.train.joint import ELBO_LOG

with warnings.catch_warnings():
    # ArviZ 0.2x warns once a day, on import, that its 1.0 refactor is coming (a FutureWarning
    # about ArviZ's own API): nothing a dgp-pyro user can act on, so it is kept off the terminal.
    warnings.filterwarnings(
        "ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning
    )
    import arviz as az

#: The PCK radius reported, pixels.
PCK_PX = 5.0
#: Levels reported by default.
DEFAULT_COMPARE_LEVELS = (0.5, 0.9, 0.95)
#: Share of the last elbo.csv rows averaged into ``elbo_per_frame``.
ELBO_TAIL = 0.1
PREDICTION_SUFFIXES = (".h5", ".hdf5", ".csv")


def _finite(value: Any) -> Any:
    """NaN and infinities as ``None`` (JSON null); numpy scalars as Python numbers."""
    if value is None:
        return None
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def elbo_per_frame(run_dir: str | Path) -> float | None:
    """Mean of ``-loss`` over the last 10 % (at least one) of the rows of ``RUN/elbo.csv``; None without."""
    path = Path(run_dir) / ELBO_LOG
    if not path.is_file():
        return None
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        for line, row in enumerate(rows, start=2):
            if None in row or None in row.values():  # a row with too few or too many cells
                cells = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None, []))
                raise DGPError(
                    f"line {line} of the ELBO log has {cells} cells, the header {len(row) - (None in row)}: "
                    "the file was cut or damaged",
                    path,
                    hint="restore it from a copy of the run, or resume the run to rewrite it",
                )
        losses = [float(row["loss"]) for row in rows if row.get("loss") not in (None, "")]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, csv.Error) as error:
        raise DGPError(f"cannot read the ELBO log ({type(error).__name__})", path) from None
    if not losses:
        return None
    tail = losses[-max(1, math.ceil(ELBO_TAIL * len(losses))) :]
    return _finite(-float(np.mean(tail)))


def _normalize_key(key: str) -> str:
    key = str(key).replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def match_image_keys(truth_keys: Sequence[str], pred_keys: Sequence[str]) -> list[int | None]:
    """For each truth key, the row of ``pred_keys`` with the same image, or ``None``.

    Same key (separators normalised); else a prediction key ending with ``/<truth key>`` (an
    absolute path); else the same last two path parts (``<video stem>/<image>``) when unique.
    """
    pred = [_normalize_key(k) for k in pred_keys]
    exact = {k: i for i, k in enumerate(pred)}
    tails: dict[str, list[int]] = {}
    for i, k in enumerate(pred):
        tails.setdefault("/".join(k.split("/")[-2:]), []).append(i)
    out: list[int | None] = []
    for key in truth_keys:
        key = _normalize_key(key)
        if key in exact:
            out.append(exact[key])
            continue
        suffix = [i for i, k in enumerate(pred) if k.endswith("/" + key)]
        if len(suffix) == 1:
            out.append(suffix[0])
            continue
        tail = tails.get("/".join(key.split("/")[-2:]), [])
        out.append(tail[0] if len(tail) == 1 else None)
    return out


def _empty_row(
    name: str, kind: str, path: Path, model: str | None, levels: Sequence[float]
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "path": str(path),
        "model": model,
        "n_images": 0,
        "n_labels": 0,
        "rmse_px": None,
        "median_px": None,
        "pck_5px": None,
    }
    row.update({f"coverage_{level_tag(lv)}": None for lv in levels})
    row.update(
        {
            "calibration": None,
            "elbo_per_frame": None,
            "elpd_loo": None,
            "elpd_se": None,
            "loo_weight": None,
            "pareto_k_max": None,
            "n_high_k": None,
            "elpd_heldout": None,
            "elpd_heldout_se": None,
            "note": None,
        }
    )
    return row


def _add_note(row: dict[str, Any], note: str) -> None:
    row["note"] = note if not row["note"] else f"{row['note']}; {note}"


def _accuracy(pred: np.ndarray, truth: np.ndarray, keypoints: list[str]) -> dict[str, Any]:
    dist = keypoint_errors(pred, truth)
    summary = summarize_errors(dist, keypoints, (PCK_PX,), truth_present=np.isfinite(truth).all(-1))
    return {
        "rmse_px": summary["rmse_px"],
        "median_px": summary["median_px"],
        "pck_5px": summary[f"pck_{PCK_PX:g}px"],
        "n_missing_pred": summary["n_missing_pred"],
    }


def _unique_names(paths: list[Path]) -> list[str]:
    names = [p.name or str(p) for p in paths]
    names = [str(p) if names.count(n) > 1 else n for p, n in zip(paths, names, strict=True)]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


# --------------------------------------------------------------------------- the comparison


def _classify(inputs: Sequence[str | Path]) -> list[tuple[str, Path]]:
    kinds = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            if not (path / CONFIG).is_file():
                raise DGPError(
                    f"not a run folder (no {CONFIG})", path, hint="give a `dgp-pyro train --out` folder"
                )
            kinds.append(("run", path))
        elif path.is_file():
            if path.suffix.lower() not in PREDICTION_SUFFIXES:
                raise DGPError(
                    "not a prediction file", path, hint="give a DeepLabCut .h5 or .csv prediction file"
                )
            kinds.append(("predictions", path))
        else:
            raise DGPError("no such run folder or prediction file", path)
    return kinds


def _check_same_project(runs: list[Run]) -> None:
    first = runs[0]
    root = Path(first.config.project).resolve()
    for other in runs[1:]:
        other_root = Path(other.config.project).resolve()
        if other_root != root:
            raise DGPError(
                f"runs are on different projects: {first.path} on {root}, {other.path} on {other_root}",
                hint="compare runs trained on the same project (held-out labels must be the same data)",
            )
        if list(other.config.keypoints) != list(first.config.keypoints):
            raise DGPError(
                f"runs have different keypoints: {first.path} has {list(first.config.keypoints)}, "
                f"{other.path} has {list(other.config.keypoints)}",
                hint="compare runs trained with the same keypoints",
            )


def _score_run(
    run: Run, name: str, path: Path, levels, num_draws: int, seed: int, device: str
) -> tuple[dict, Any, Any]:
    """One run's row, its InferenceData (None without held-out labels) and its held-out images."""

    row = _empty_row(name, "run", path, run.config.model, levels)
    row["elbo_per_frame"] = elbo_per_frame(run.path)
    held = held_out_images(run)
    row["n_images"] = len(held)
    if not len(held):
        _add_note(
            row,
            "no held-out labeled images (trained without --holdout): accuracy, coverage and elpd need them",
        )
        return row, None, held
    keypoints = list(run.config.keypoints)
    posterior = image_posteriors(run, held.paths, held.keys, tuple(levels), network=run.network(device))
    row.update({k: v for k, v in _accuracy(posterior.mean, held.labels, keypoints).items() if k in row})
    lv, coverage, n = coverage_curve(posterior, held.labels, levels)
    for level, value in zip(lv, coverage, strict=True):
        row[f"coverage_{level_tag(float(level))}"] = _finite(value)
    row["calibration"] = calibration_note(lv, coverage, n)
    if (run.path / POSTERIOR_CALIBRATION).is_file():
        row["calibration"] += (
            "; the posterior variances were scaled to fit these held-out labels after training "
            "(posterior_calibration.json), so this coverage is in-sample; judge calibration on "
            "other labels or ground truth"
        )
        loo = out_of_sample_coverage(run)
        if loo:
            shares = ", ".join(
                f"{lv * 100:g} %: {share * 100:.1f} %" + ("" if se is None else f" +/- {se * 100:.1f} %")
                for lv, (share, se) in sorted(loo.items())
            )
            row["calibration"] += f" (leaving one held-out frame out at a time, the intervals cover {shares}"
            if any(se is not None and se > LOO_SE_WARNING for _, se in loo.values()):
                row["calibration"] += "; the held-out frames are too few to pin this down: hold out more"
            row["calibration"] += ")"
    n_labels = int(np.isfinite(held.labels).all(-1).sum())
    row["n_labels"] = n_labels
    if n_labels == 0:
        _add_note(row, "the held-out images have no labeled keypoints: no elpd")
        return row, None, held
    sigma = run_label_sigma(run) * held.factor[:, None, :]
    idata = inference_data_from_posterior(
        posterior,
        keypoints,
        held.keys,
        held.labels,
        sigma,
        num_draws=num_draws,
        seed=seed,
        frame_views=held.views,
        keypoint_views=held.keypoint_views,
        attrs={"run": str(run.path), "model": run.config.model},
    )
    loo = loo_summary(idata)
    for key in ("elpd_loo", "elpd_se", "pareto_k_max"):
        row[key] = _finite(loo[key])
    exact = gaussian_predictive_elpd(posterior.mean, posterior.cov, held.labels, sigma)
    row["elpd_heldout"], row["elpd_heldout_se"] = _finite(exact["elpd"]), _finite(exact["se"])
    row["n_high_k"] = loo["n_high_k"]
    if loo["n_high_k"]:
        infinite = f", infinite for {loo['n_infinite_k']}" if loo["n_infinite_k"] else ""
        _add_note(
            row,
            f"PSIS k-hat > {K_HAT_LIMIT} for {loo['n_high_k']} of {n_labels} labels{infinite}: "
            "elpd_loo is unreliable, use elpd_heldout",
        )
    return row, idata, held


def _loo_weights(names: list[str], idatas: list[az.InferenceData]) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # pandas 3 deprecations inside az.compare
        table = az.compare(dict(zip(names, idatas, strict=True)), ic="loo")
    return {str(name): float(weight) for name, weight in table["weight"].items()}


def _score_predictions(
    table: PredictionTable,
    path: Path,
    name: str,
    levels,
    keypoints: list[str],
    truth_keys: list[str] | None,
    truth: np.ndarray | None,
    truth_source: str | None,
) -> dict[str, Any]:
    """A prediction file's row (its keypoints and image index already checked)."""

    row = _empty_row(name, "predictions", path, table.scorer, levels)
    intervals = _interval_columns(table, levels)
    if not intervals:
        _add_note(row, "no posterior: coverage and elpd are null")
    if truth is None or truth_keys is None:
        _add_note(row, "nothing to score against: no run with held-out labels and no --labels")
        return row
    order = [table.keypoints.index(k) for k in keypoints]
    match = match_image_keys(truth_keys, table.image_keys)
    found = np.array([m is not None for m in match], dtype=bool)
    rows = np.array([m if m is not None else 0 for m in match], dtype=np.int64)
    pred = np.full(truth.shape, np.nan)
    if found.any():
        pred[found] = table.xy[rows[found]][:, order]
    row["n_images"] = int(found.sum())
    row["n_labels"] = int((np.isfinite(truth).all(-1) & found[:, None]).sum())
    if not found.any():
        _add_note(row, f"none of the {len(truth_keys)} images of {truth_source} is in the file")
        return row
    if not found.all():
        _add_note(
            row,
            f"{int((~found).sum())} of {len(truth_keys)} images of {truth_source} are not in the file "
            "(counted as missing, not scored)",
        )
    row.update({k: v for k, v in _accuracy(pred, truth, keypoints).items() if k in row})
    if intervals:
        covered, measured = [], []
        present = np.isfinite(truth) & found[:, None, None]
        n = int(present.sum())
        for level in levels:
            bounds = intervals.get(level)
            if bounds is None:
                continue
            lo = np.full(truth.shape, np.nan)
            hi = np.full(truth.shape, np.nan)
            lo[found] = bounds[0][rows[found]][:, order]
            hi[found] = bounds[1][rows[found]][:, order]
            inside = (truth >= lo) & (truth <= hi)
            value = float(inside[present].mean()) if n else float("nan")
            row[f"coverage_{level_tag(level)}"] = _finite(value)
            covered.append(value)
            measured.append(level)
        if measured:
            row["calibration"] = calibration_note(measured, covered, n)
    return row


def _interval_columns(
    table: PredictionTable, levels: Sequence[float]
) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """``{level: (lower (T, K, 2), upper (T, K, 2))}`` from dgp-pyro's ``x_lo90``... columns."""

    out = {}
    for level in levels:
        tag = level_tag(level)
        names = [f"x_lo{tag}", f"y_lo{tag}", f"x_hi{tag}", f"y_hi{tag}"]
        if all(n in table.extras for n in names):
            xl, yl, xh, yh = (table.extras[n] for n in names)
            out[level] = (np.stack([xl, yl], -1), np.stack([xh, yh], -1))
    return out


def compare_inputs(
    inputs: Sequence[str | Path],
    levels: Sequence[float] = DEFAULT_COMPARE_LEVELS,
    labels: str | Path | None = None,
    num_draws: int = 200,
    seed: int = 0,
    device: str = "cpu",
    warn: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """The rows of ``dgp-pyro compare`` (see the module doc), one dict per input, in input order.

    ``warn`` receives the warnings (default: :func:`warnings.warn`).

    Raises:
        DGPError: runs on different projects or with different keypoints, a prediction file
            with other keypoints, an input that is neither a run nor a prediction file.
    """
    warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
    levels = [float(lv) for lv in levels]
    for level in levels:
        if not 0.0 < level < 1.0:
            raise DGPError(f"level {level} must lie strictly between 0 and 1")
    if num_draws < 1:
        raise DGPError(f"--draws {num_draws} must be at least 1")
    kinds = _classify(inputs)
    names = _unique_names([path for _, path in kinds])
    runs = {i: load_run(path) for i, (kind, path) in enumerate(kinds) if kind == "run"}
    if runs:
        _check_same_project(list(runs.values()))
    keypoints = list(next(iter(runs.values())).config.keypoints) if runs else None
    tables = {i: read_predictions(path) for i, (kind, path) in enumerate(kinds) if kind == "predictions"}
    for i, table in tables.items():  # refuse before the (slow) posteriors
        keypoints = keypoints or list(table.keypoints)
        if set(table.keypoints) != set(keypoints):
            raise DGPError(
                f"the prediction file has keypoints {list(table.keypoints)}, the comparison has {keypoints}",
                kinds[i][1],
                hint="compare predictions of the same keypoints",
            )
        if table.image_keys is None:
            raise DGPError(
                "the prediction file is indexed by frame numbers, not images",
                kinds[i][1],
                hint="give predictions on labeled images (DeepLabCut: analyze the labeled-data images)",
            )

    # Held-out splits: the first run with held-out images is the reference.
    reference = next((i for i, r in runs.items() if r.split["test"]), None)
    ref_set = set(runs[reference].split["test"]) if reference is not None else set()
    differing = [i for i, r in runs.items() if r.split["test"] and set(r.split["test"]) != ref_set]
    if differing:
        others = ", ".join(names[i] for i in differing)
        warn(
            f"the runs do not share the held-out split: {others} hold(s) out other images than "
            f"{names[reference]}; each run is scored on its own held-out images, and only the runs "
            f"sharing {names[reference]}'s are compared by LOO"
        )

    rows: dict[int, dict[str, Any]] = {}
    idatas: dict[int, Any] = {}
    helds: dict[int, Any] = {}
    for i, run in runs.items():
        rows[i], idatas[i], helds[i] = _score_run(run, names[i], kinds[i][1], levels, num_draws, seed, device)

    group = [i for i in runs if idatas[i] is not None and set(runs[i].split["test"]) == ref_set]
    if len(group) >= 2:
        weights = _loo_weights([names[i] for i in group], [idatas[i] for i in group])
        for i in group:
            rows[i]["loo_weight"] = _finite(weights[names[i]])
    for i in runs:
        if idatas[i] is not None and i not in group:
            _add_note(rows[i], "not in the LOO comparison: its held-out images differ from the first run's")

    # Prediction files: the truth is --labels, else the reference run's held-out labels.
    truth_keys = truth = truth_source = None
    if labels is not None:
        label_table = read_labels(labels)
        keypoints = keypoints or list(label_table.keypoints)
        missing = [k for k in keypoints if k not in label_table.keypoints]
        if missing:
            raise DGPError(
                f"the label file lacks keypoints {missing}", labels, hint=f"the comparison has {keypoints}"
            )
        truth_keys = list(label_table.image_keys)
        truth = label_table.coords[:, [label_table.keypoints.index(k) for k in keypoints]]
        truth_source = f"--labels {labels}"
    elif reference is not None:
        truth_keys, truth = helds[reference].keys, helds[reference].labels
        truth_source = f"{names[reference]}'s held-out split"
    for i, table in tables.items():
        rows[i] = _score_predictions(
            table, kinds[i][1], names[i], levels, keypoints, truth_keys, truth, truth_source
        )
    return [{k: _finite(v) for k, v in rows[i].items()} for i in range(len(kinds))]
