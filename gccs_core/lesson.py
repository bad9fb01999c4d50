"""The "why it looked robust" lesson, measured: gradient masking of a nearest-vertex head.

A GCCS model's class scores are ``-||z - mu_k||^2 / (2 sigma^2)``; with well separated vertices the gap between
the true class's score and the next one is often above ``UNDERFLOW_GAP`` (about 103.3), where float32 softmax
gives every other class exactly 0. The cross-entropy input gradient is then exactly zero, so a
cross-entropy PGD run from the clean input never moves those samples, and an evaluation that only runs
cross-entropy attacks reports robustness that a margin attack does not find.

``run_lesson`` attacks the same samples of one model twice (``WEAK``: PGD on cross-entropy from the clean
input, as 2020-era evaluations ran it; ``STRONG``: PGD on the margin with a random start) through
``gccs_core.attacks.run_attack`` and returns numpy arrays only: the latent trajectories and their exact
decision-plane coordinates, the zero-gradient mask and the clean score gaps. ``protocol_readings`` reads the
weak- and strong-protocol robust accuracy of a model from its shipped robustness report and from the study's
``docs/study/results.json`` (partial results allowed: what is missing is said, never invented).

``python -m gccs_core.lesson --model pretrained/digits-gccs.safetensors`` prints the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .validation import check_int, check_number
from .views import DecisionPlane, decision_plane, perturbation_norms

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .models import LatentClassifier

UNDERFLOW_GAP = 149.0 * math.log(2.0)
"""Score gap beyond which float32 ``exp(-gap)`` is 0 (below the smallest subnormal, 2^-149): CE's gradient vanishes."""
WEAK = {"name": "ce", "label": "PGD-CE from the clean input", "objective": "ce", "random_start": False}
STRONG = {"name": "margin", "label": "PGD-margin, random start", "objective": "margin", "random_start": True}
DEFAULT_CLASS, DEFAULT_EPS, DEFAULT_STEPS, DEFAULT_N = 3, 0.2, 20, 40
REPORT_WEAK_ATTACKS = ("fgsm", "pgd-ce", "apgd-ce")
"""A report's cross-entropy attacks: its weak reading is the lowest accuracy among them (what a CE-only table prints)."""
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / "docs" / "study" / "results.json"
DEFAULT_REPORTS = ROOT / "pretrained" / "robustness"


# -- the two attacks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LessonAttack:
    """One attack of the lesson on the samples: ``z`` (T, N, d) latents, ``pred`` (T, N), ``x`` (T, N, H, W, C)
    inputs, ``linf`` (T, N) input perturbation, ``plane`` (T, N, 2) decision-plane coordinates and ``distance``
    (T, N) the signed latent distance to the y-vs-t boundary (> 0: on t's side); frame 0 is the clean input."""

    name: str
    label: str
    z: np.ndarray
    pred: np.ndarray
    x: np.ndarray
    linf: np.ndarray
    plane: np.ndarray
    distance: np.ndarray
    y: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        """(N,) still classified correctly after the last step."""
        return self.pred[-1] == self.y

    @property
    def accuracy(self) -> float:
        """Fraction of the samples still correct after the attack (robust accuracy on them)."""
        return float(self.correct.mean())


@dataclass(frozen=True)
class Lesson:
    """Both attacks on the same samples of one model, and why the weak one stalls.

    ``y`` (N,) labels, ``zero_grad`` (N,) True where the clean CE input gradient is exactly zero, ``score_gap``
    (N,) the clean ``s_y - max_{k != y} s_k``, ``plane`` the decision plane of classes ``plane.y`` and ``plane.t``.
    """

    y: np.ndarray
    eps: float
    steps: int
    zero_grad: np.ndarray
    score_gap: np.ndarray
    clean_pred: np.ndarray
    plane: DecisionPlane
    weak: LessonAttack
    strong: LessonAttack
    sigma: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def zero_grad_fraction(self) -> float:
        return float(self.zero_grad.mean())

    @property
    def clean_accuracy(self) -> float:
        return float((self.clean_pred == self.y).mean())

    def summary(self) -> dict[str, Any]:
        """The lesson's figures as plain numbers (what the CLI prints as JSON)."""
        n = len(self.y)
        return {"n": n, "eps": self.eps, "steps": self.steps, "plane": [self.plane.y, self.plane.t],
                "clean_accuracy": self.clean_accuracy, "zero_grad_fraction": self.zero_grad_fraction,
                "weak": {"attack": self.weak.label, "accuracy": self.weak.accuracy, "correct": int(self.weak.correct.sum())},
                "strong": {"attack": self.strong.label, "accuracy": self.strong.accuracy,
                           "correct": int(self.strong.correct.sum())},
                "median_boundary_distance": float(np.median(-self.weak.distance[0])),
                "sigma": self.sigma, "notes": list(self.notes)}


def zero_gradient_mask(model: LatentClassifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """(N,) True where the cross-entropy input gradient is exactly zero (``evaluate.zero_gradient_fraction`` per sample)."""
    import torch
    import torch.nn.functional as F

    from .models import eval_mode, model_device

    dev = model_device(model)
    out = []
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(dev).requires_grad_(True)
            loss = F.cross_entropy(model(xb), y[i : i + batch_size].to(dev), reduction="sum")
            (g,) = torch.autograd.grad(loss, xb)
            out.append((g.flatten(1).abs().amax(1) == 0).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=bool)


def score_gaps(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N,) ``s_y - max_{k != y} s_k`` of scores (N, K): above ``UNDERFLOW_GAP`` float32 CE has no gradient."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y).astype(np.int64)
    other = s.copy()
    other[np.arange(len(y)), y] = -np.inf
    return s[np.arange(len(y)), y] - other.max(1)


def _check_inputs(x: Any, y: Any, eps: float, steps: int) -> None:
    check_number("eps", eps, 0.0, open_low=True)
    check_int("steps", steps, 1)
    if len(x) == 0:
        raise ValueError("no samples to attack: give at least one input.")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)} labels.")


def _attack(model: LatentClassifier, x: torch.Tensor, y: torch.Tensor, how: dict[str, Any], eps: float, steps: int,
            seed: int) -> dict[str, np.ndarray]:
    from .attacks import run_attack

    res = run_attack(model, x, y, attack="pgd", eps=eps, steps=steps, objective=how["objective"],
                     random_start=how["random_start"], record=True, seed=seed)
    tr = res.trajectory
    assert tr is not None
    xs = tr.x.numpy()
    return {"z": tr.z.numpy().astype(np.float64), "pred": tr.pred.numpy(), "linf": perturbation_norms(xs, "linf"),
            "x": xs.transpose(0, 1, 3, 4, 2).astype(np.float32)}


def _pick_t(y_cls: int, strong_pred: np.ndarray, y: np.ndarray, scores: np.ndarray) -> int:
    """The plane's other class: where the strong attack sent most samples of class ``y_cls``, else their runner-up."""
    moved = strong_pred[(y == y_cls) & (strong_pred != y)]
    if len(moved):
        return int(Counter(moved.tolist()).most_common(1)[0][0])
    s = np.asarray(scores, dtype=np.float64)[y == y_cls].copy()
    s[:, y_cls] = -np.inf
    return int(Counter(s.argmax(1).tolist()).most_common(1)[0][0])


def run_lesson(model: LatentClassifier, x: torch.Tensor, y: torch.Tensor, *, eps: float = DEFAULT_EPS,
               steps: int = DEFAULT_STEPS, seed: int = 0, plane_y: int | None = None, plane_t: int | None = None,
               background_z: np.ndarray | None = None, background_y: np.ndarray | None = None) -> Lesson:
    """Attack the same samples with ``WEAK`` (PGD-CE from the clean input) and ``STRONG`` (PGD-margin) at ``eps``.

    ``plane_y`` defaults to the most common label of ``y``, ``plane_t`` to the class the strong attack sent most
    of them to. The plane's second axis is fitted on ``background_z``/``background_y`` (clean latents, e.g. a
    latent view's), else on the samples' own clean latents. Needs torch; returns numpy arrays.
    """
    import torch

    from .models import embed_batched
    from .views import latent_head

    _check_inputs(x, y, eps, steps)
    y_np = y.numpy().astype(np.int64) if torch.is_tensor(y) else np.asarray(y, dtype=np.int64)
    yt = torch.as_tensor(y_np)
    z0, s0 = embed_batched(model, x)
    scores = s0.numpy().astype(np.float64)
    weak, strong = (_attack(model, x, yt, how, float(eps), int(steps), seed) for how in (WEAK, STRONG))
    k = int(model.num_classes)
    for name, value in (("plane_y", plane_y), ("plane_t", plane_t)):
        if value is not None:
            check_int(name, value, 0, k - 1)
    if plane_y is None:
        plane_y = int(Counter(y_np.tolist()).most_common(1)[0][0])
    if plane_t is None:
        plane_t = _pick_t(plane_y, strong["pred"][-1], y_np, scores)
    notes = []
    others = int(np.sum(y_np != plane_y))
    if others:
        notes.append(f"{others} of {len(y_np)} samples are not of class {plane_y}: the plane's boundary is not theirs.")
    bz = z0.numpy().astype(np.float64) if background_z is None else np.asarray(background_z, dtype=np.float64)
    by = y_np if background_y is None else np.asarray(background_y, dtype=np.int64)
    w, b = latent_head(model)
    centers = None if model.centers is None else model.centers.detach().cpu().numpy()
    plane = decision_plane(bz, by, plane_y, plane_t, w, b, centers)
    if centers is None:
        notes.append("this model has no class centres: the plane's anchors are class means.")

    def pack(how: dict[str, Any], r: dict[str, np.ndarray]) -> LessonAttack:
        return LessonAttack(how["name"], how["label"], r["z"], r["pred"], r["x"], r["linf"], plane.transform(r["z"]),
                            plane.boundary_distance(r["z"]), y_np)

    return Lesson(y=y_np, eps=float(eps), steps=int(steps), zero_grad=zero_gradient_mask(model, x, yt),
                  score_gap=score_gaps(scores, y_np), clean_pred=scores.argmax(1), plane=plane,
                  weak=pack(WEAK, weak), strong=pack(STRONG, strong),
                  sigma=None if model.sigma is None else float(model.sigma), notes=notes)


def live_sweep(model: LatentClassifier, x: torch.Tensor, y: torch.Tensor, eps_list: Sequence[float],
               steps: int = DEFAULT_STEPS, seed: int = 0) -> ProtocolReading:
    """Weak (PGD-CE from the clean input) and strong (per sample: broken by PGD-CE or PGD-margin) accuracy on
    these samples at every eps: the lesson's two attacks as a small evaluation."""
    import torch

    from .attacks import run_attack

    if len(eps_list) == 0:
        raise ValueError("eps_list is empty: give at least one eps > 0.")
    for eps in eps_list:
        _check_inputs(x, y, eps, steps)
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64)) if not torch.is_tensor(y) else y
    weak, strong = [], []
    for eps in eps_list:
        ok = {}
        for how in (WEAK, STRONG):
            res = run_attack(model, x, yt, attack="pgd", eps=float(eps), steps=steps, objective=how["objective"],
                             random_start=how["random_start"], seed=seed)
            ok[how["name"]] = ~res.success.numpy()
        weak.append(float(ok["ce"].mean()))
        strong.append(float((ok["ce"] & ok["margin"]).mean()))
    return ProtocolReading("live", f"these {len(x)} samples", "", tuple(float(e) for e in eps_list), tuple(weak),
                           tuple(strong), len(x), WEAK["label"], "worst of PGD-CE and PGD-margin, per sample")


# -- weak vs strong from the reports and the study ------------------------------------------------------------


@dataclass(frozen=True)
class ProtocolReading:
    """Weak- and strong-protocol robust accuracy per eps from one source (``live``, ``report`` or ``study``);
    ``None`` where that source has no figure yet."""

    source: str
    label: str
    model: str
    eps: tuple[float, ...]
    weak: tuple[float | None, ...]
    strong: tuple[float | None, ...]
    n: int
    weak_means: str
    strong_means: str
    note: str = ""

    @property
    def gap(self) -> tuple[float | None, ...]:
        """Weak minus strong accuracy per eps (what the weak protocol flattered); None where either is missing."""
        return tuple(None if w is None or s is None else w - s for w, s in zip(self.weak, self.strong))

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "label": self.label, "model": self.model, "eps": list(self.eps),
                "weak": list(self.weak), "strong": list(self.strong), "gap": list(self.gap), "n": self.n,
                "weak_means": self.weak_means, "strong_means": self.strong_means, "note": self.note}


def report_reading(path: str | Path) -> ProtocolReading:
    """The weak and strong reading of a shipped robustness report: weak = the lowest accuracy among its
    cross-entropy attacks (``REPORT_WEAK_ATTACKS``), strong = its per-example worst case over every attack."""
    from .report import load_report

    rep = load_report(path)
    eps, weak, strong = [], [], []
    used: set[str] = set()
    for row in rep.results:
        ce = [float(row[a]) for a in REPORT_WEAK_ATTACKS if a in row]
        used |= {a for a in REPORT_WEAK_ATTACKS if a in row}
        eps.append(float(row["eps"]))
        weak.append(min(ce) if ce else None)
        strong.append(float(row["worst_case"]))
    n_attacks = len(rep.attacks)
    return ProtocolReading("report", f"shipped report (n={rep.n})", Path(path).stem, tuple(eps), tuple(weak),
                           tuple(strong), rep.n, f"best CE-only attack ({', '.join(sorted(used)) or 'none'})",
                           f"worst case over {n_attacks} attacks", note=str(path))


def study_readings(results: str | Path, *, dataset: str, loss: str, sigma: float | None, adv_train: bool = False,
                   sha256: str | None = None, norm: str = "linf") -> tuple[list[ProtocolReading], list[str]]:
    """The study's weak/strong rows for models like this one: the same checkpoint (``sha256``), else the same
    recipe (dataset, plain ``loss`` reading, ``sigma``, adversarial training or not). Returns the readings and
    notes saying what is missing (no file, another dataset, a protocol not finished yet)."""
    p = Path(results)
    if not p.exists():
        return [], [f"the study's results ({p}) do not exist yet."]
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return [], [f"the study's results ({p}) cannot be read: {err}."]
    settings = data.get("settings", {})
    rows = [r for r in data.get("rows", []) if r.get("norm", "linf") == norm and r.get("protocol") in ("weak", "strong")]
    if settings.get("dataset") != dataset:
        return [], [f"the study ran on {settings.get('dataset')!r}, not {dataset!r}: no study rows for this model."]

    def same_recipe(r: dict[str, Any]) -> bool:
        s = r.get("sigma")
        return (r.get("loss") == loss and r.get("reading", loss) == loss and bool(r.get("adv_train")) == adv_train
                and (sigma is None or s is None or abs(float(s) - float(sigma)) < 1e-6))

    exact = [r for r in rows if sha256 and r.get("sha256") == sha256]
    chosen, how = (exact, "this very checkpoint") if exact else ([r for r in rows if same_recipe(r)], "same recipe")
    if not chosen:
        return [], [f"the study has no {loss} rows (sigma={sigma}, adv_train={adv_train}) yet: partial results."]
    out, notes = [], []
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in chosen:
        by_model.setdefault(str(r.get("model")), []).append(r)
    for name, mrows in sorted(by_model.items()):
        eps = sorted({float(r["eps"]) for r in mrows})
        get = {(r["protocol"], float(r["eps"])): r for r in mrows}
        weak = tuple(float(get[("weak", e)]["robust"]) if ("weak", e) in get else None for e in eps)
        strong = tuple(float(get[("strong", e)]["robust"]) if ("strong", e) in get else None for e in eps)
        missing = [pr for pr, vals in (("weak", weak), ("strong", strong)) if any(v is None for v in vals)]
        note = f"{how}; " + (f"{' and '.join(missing)} protocol not finished for every eps" if missing else "complete")
        if missing:
            notes.append(f"study model {name}: {note}.")
        n = max(int(r.get("n", 0)) for r in mrows)
        out.append(ProtocolReading("study", f"study: {name} (n={n})", name, tuple(eps), weak, strong, n,
                                   "weak protocol (CE attacks, CW, softmax Square)",
                                   "strong protocol (margin/DLR/APGD/targeted/transfer/Square)", note=note))
    return out, notes


def protocol_readings(name: str, *, dataset: str, loss: str, sigma: float | None = None, adv_train: bool = False,
                      sha256: str | None = None, reports_dir: str | Path = DEFAULT_REPORTS,
                      results: str | Path = DEFAULT_RESULTS) -> tuple[list[ProtocolReading], list[str]]:
    """Every weak/strong reading of model ``name``: its shipped report (``reports_dir/<name>.json``) and the study's
    rows (``study_readings``); torch-free. Returns the readings and notes on what is missing."""
    readings, notes = [], []
    rep = Path(reports_dir) / f"{name}.json"
    if rep.exists():
        try:
            readings.append(report_reading(rep))
        except (ValueError, KeyError, TypeError) as err:
            notes.append(f"the report {rep} cannot be read: {err}.")
    else:
        notes.append(f"no shipped robustness report for {name} ({rep}).")
    study, more = study_readings(results, dataset=dataset, loss=loss, sigma=sigma, adv_train=adv_train, sha256=sha256)
    return readings + study, notes + more


# -- command line ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gccs_core.lesson --model CKPT``: the lesson's figures (JSON with ``--json``)."""
    ap = argparse.ArgumentParser(prog="python -m gccs_core.lesson", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a checkpoint (.safetensors or run folder)")
    ap.add_argument("--class", dest="cls", type=int, default=DEFAULT_CLASS, help="attack test samples of this class")
    ap.add_argument("--n", type=int, default=DEFAULT_N, help="how many samples (from the app's latent view)")
    ap.add_argument("--eps", type=float, default=DEFAULT_EPS)
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--results", default=str(DEFAULT_RESULTS), help="the study's results.json")
    ap.add_argument("--reports", default=str(DEFAULT_REPORTS), help="folder of the shipped robustness reports")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    try:
        return _run_cli(args)
    except (OSError, ValueError) as err:  # CheckpointError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run_cli(args: argparse.Namespace) -> int:
    from .checkpoint import load_model_with_metadata
    from .data import load_dataset
    from .views import VIEW_SEED, sample_indices, view_samples

    model, meta = load_model_with_metadata(args.model)
    model.eval()
    dataset = str(meta.get("config", meta).get("dataset", meta.get("dataset")))
    data = load_dataset(dataset, "test")
    labels = data.y.numpy()
    if not 0 <= args.cls < model.num_classes:
        raise ValueError(f"--class {args.cls} is invalid: allowed classes are 0..{model.num_classes - 1}.")
    check_int("n", args.n, 1)
    pool = sample_indices(labels, view_samples(dataset), VIEW_SEED)
    idx = pool[labels[pool] == args.cls][: args.n]
    lesson = run_lesson(model, data.x[idx], data.y[idx], eps=args.eps, steps=args.steps)
    from .checkpoint import resolve_checkpoint
    from .files import file_sha256

    ckpt = resolve_checkpoint(args.model)
    cfg = meta.get("config", {})
    readings, notes = protocol_readings(ckpt.stem if ckpt.name != "model.safetensors" else ckpt.parent.name,
                                        dataset=dataset, loss=str(cfg.get("loss", meta.get("spec", {}).get("loss"))),
                                        sigma=lesson.sigma, adv_train=bool(cfg.get("adv_train", False)),
                                        sha256=file_sha256(ckpt), reports_dir=args.reports, results=args.results)
    out = {"model": str(args.model), "dataset": dataset, "samples": idx.tolist(), **lesson.summary(),
           "readings": [r.to_dict() for r in readings], "reading_notes": notes}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    s = out
    print(f"{args.model}: {s['n']} test samples of class {args.cls}, eps={s['eps']:g} (L-inf), {s['steps']} steps")
    print(f"  clean accuracy                   {s['clean_accuracy']:.3f}")
    print(f"  zero CE input gradient           {s['zero_grad_fraction']:.3f} of the samples")
    print(f"  {WEAK['label']:<32} {s['weak']['accuracy']:.3f} still correct")
    print(f"  {STRONG['label']:<32} {s['strong']['accuracy']:.3f} still correct")
    print(f"  decision plane {s['plane'][0]} vs {s['plane'][1]}; median clean latent distance to it "
          f"{s['median_boundary_distance']:.2f}")
    for r in readings:
        print(f"  {r.label}: weak = {r.weak_means}; strong = {r.strong_means}")
        for e, w, st_, g in zip(r.eps, r.weak, r.strong, r.gap):
            fmt = lambda v: "  -  " if v is None else f"{v:.3f}"  # noqa: E731
            print(f"    eps {e:<5g} weak {fmt(w)}  strong {fmt(st_)}  gap {fmt(g)}")
    for note in notes + s["notes"]:
        print(f"  note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
