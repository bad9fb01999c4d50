"""Executing one job: a pure function of the job, the results of its dependencies and the work folder.

It runs in a worker process (local or Ray) and returns a JSON-able dict; the runner alone writes the
job's result file, so a job killed in flight leaves nothing that looks finished. Trained models go to
``<work>/models/<key>/`` through a temporary folder renamed at the end.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from gccs_core.checkpoint import load_model
from gccs_core.data import load_dataset
from gccs_core.train import TRAINING_FILE, TrainConfig, accuracy, train

from . import autoattack as aa
from . import protocols
from .plan import DEFAULT_LAM
from .store import StudyError, read_json, sha256_file, write_json

MODEL_FILE = "model.safetensors"


def choose_hyperparameters(selections: list[dict[str, Any]]) -> dict[str, Any]:
    """The grid point (weight decay, and lam for GCCS readings) with the best validation accuracy (clean accuracy
    only; ties go to the first in the grid). ``grid`` lists ``[weight_decay, lam, val_accuracy]`` per point."""
    best = max(selections, key=lambda r: (r["val_accuracy"], -r["grid_index"]))
    return {"weight_decay": best["weight_decay"], "lam": best.get("lam"),
            "grid": [[r["weight_decay"], r.get("lam"), r["val_accuracy"]] for r in selections]}


def _select(params: dict[str, Any]) -> dict[str, Any]:
    cfg = TrainConfig.from_dict(params["config"])
    res = train(cfg)
    a, b = params["val"]
    full = load_dataset(cfg.dataset, "train")
    val = replace(full, x=full.x[a:b], y=full.y[a:b], split="validation")
    lam = cfg.loss_params.get("lam", DEFAULT_LAM) if "sigma" in cfg.loss_params else None
    return {"weight_decay": cfg.weight_decay, "lam": lam, "val_accuracy": accuracy(res.model, val, torch.device("cpu")),
            "val_n": b - a, "train_n": a}


def _train(params: dict[str, Any], deps: dict[str, dict[str, Any]], work: Path, key: str,
           select_keys: list[str]) -> dict[str, Any]:
    sel = [dict(deps[k], grid_index=i) for i, k in enumerate(select_keys)]
    for r in sel:  # selections finished before the lam grid existed ran at the default lam
        if "lam" not in r:
            r["lam"] = DEFAULT_LAM if "sigma" in params["config"]["loss_params"] else None
    choice = choose_hyperparameters(sel)
    loss_params = dict(params["config"]["loss_params"])
    if choice["lam"] is not None and choice["lam"] != DEFAULT_LAM:
        loss_params["lam"] = choice["lam"]
    cfg = TrainConfig.from_dict({**params["config"], "weight_decay": choice["weight_decay"], "loss_params": loss_params})
    final = work / "models" / key
    if not (final / MODEL_FILE).exists():
        tmp = work / "models" / f".{key}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        train(cfg, out_dir=tmp)
        (tmp / TRAINING_FILE).unlink(missing_ok=True)  # the optimizer state of a finished run: 3x the model, never read
        os.replace(tmp, final) if not final.exists() else shutil.rmtree(tmp)
    model, meta = load_model(final / MODEL_FILE, with_metadata=True)
    return {"checkpoint": str(Path("models") / key / MODEL_FILE), "sha256": sha256_file(final / MODEL_FILE),
            "config": cfg.to_dict(), "selection": choice, "test_accuracy": meta.get("metrics", {}).get("test_accuracy"),
            "train_time_s": meta.get("train_time_s"), "losses_source_sha256": _losses_source_hash()}


def _losses_source_hash() -> str:
    """Hash of the loss code the model was trained with (the readings are young; this records which version)."""
    import gccs_core.losses as losses

    path = Path(losses.__file__)
    files = sorted(path.parent.glob("*.py")) if path.name == "__init__.py" else [path]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def _model(work: Path, train_result: dict[str, Any]) -> torch.nn.Module:
    model = load_model(work / train_result["checkpoint"])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def execute(job: dict[str, Any], deps: dict[str, dict[str, Any]], work: str, threads: int = 1) -> dict[str, Any]:
    """Run one job (a ``Job.to_dict()``) and return its result (JSON-able)."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    work_p = Path(work)
    kind, params = job["kind"], job["params"]
    if kind == "select":
        out = _select(params)
    elif kind == "train":
        out = _train(params, deps, work_p, job["key"], job["deps"])
    else:
        out = _evaluate(kind, params, deps, work_p, job.get("key"))
    out["time_s"] = time.perf_counter() - t0
    return out


PARTIAL_FORMAT = 1
"""Version of the per-radius progress files of long evaluation jobs (``work/partial/<job key>.json``)."""


def _partial_path(work: Path, key: str) -> Path:
    return work / "partial" / f"{key}.json"


def _load_partial(work: Path, key: str | None, model_sha256: str) -> dict[str, Any]:
    """The radii a killed run of this job had finished, if its progress file is this job's, for this model."""
    if key is None:
        return {}
    path = _partial_path(work, key)
    if not path.exists():
        return {}
    try:
        data = read_json(path)
    except StudyError:  # a damaged progress file only costs recomputing its radii
        return {}
    if not isinstance(data, dict) or (data.get("format"), data.get("key"), data.get("model_sha256")) != (
            PARTIAL_FORMAT, key, model_sha256):
        return {}
    return dict(data.get("eps", {}))


def _saver(work: Path, key: str | None, model_sha256: str, done: dict[str, Any]) -> Any:
    """``on_eps`` callback: add the finished radius to the job's progress file (atomically)."""
    if key is None:
        return None

    def save(eps_key: str, record: dict[str, Any]) -> None:
        done[eps_key] = record
        path = _partial_path(work, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"format": PARTIAL_FORMAT, "key": key, "model_sha256": model_sha256, "eps": done})

    return save


def _evaluate(kind: str, params: dict[str, Any], deps: dict[str, dict[str, Any]], work: Path,
              key: str | None = None) -> dict[str, Any]:
    trained = deps[params["model"]]
    model = _model(work, trained)
    test = load_dataset(trained["config"]["dataset"], "test")
    a, b = params["chunk"]
    x, y = test.x[a:b].float(), test.y[a:b].long()
    seed = 0
    if kind == "weak":
        res = protocols.weak_protocol(model, x, y, params["eps"], params["steps"], params["mim_steps"], params["cw_steps"],
                                      params["square_queries"], seed)
    elif kind == "strong":
        twin = _model(work, deps[params["twin"]]) if params.get("twin") else None
        done = _load_partial(work, key, trained["sha256"])  # radii a killed run of this job had finished
        res = protocols.strong_protocol(model, x, y, params["eps"], params["steps"], params["restarts"],
                                        params["square_queries"], twin, seed, done=dict(done),
                                        on_eps=_saver(work, key, trained["sha256"], done))
        if key is not None:  # the whole result is returned to the store now; its progress file is done with
            _partial_path(work, key).unlink(missing_ok=True)
    elif kind == "autoattack":
        res = aa.autoattack(model, x, y, params["eps"], seed)
    elif kind == "minnorm":
        res = aa.min_norm(model, x, y, params["steps"], seed)
    elif kind == "diagnostics":
        res = protocols.diagnostics(model, x, y, params["eps"], params["noise_draws"], seed)
    elif kind == "iterations":
        res = protocols.iterations_check(model, x, y, params["eps"][0], params["budgets"], seed)
    else:
        raise ValueError(f"job kind {kind!r} is unknown.")
    res["model_sha256"] = trained["sha256"]
    return res
