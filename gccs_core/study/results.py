"""From stored job results to the study's outputs: results.json, per_example.json, the seed-0 checkpoints.

Rows: one per model x protocol x norm x eps, over the contiguous prefix of test examples evaluated so
far (the first n digits). Per-example correctness goes to ``per_example.json`` so every interval and
p-value can be recomputed. The summary holds intervals (``gccs_core.stats``) computed only from the
stored results; docs/study.md is written from it by ``report.py``.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from gccs_core import stats
from gccs_core.data import dataset_info

from .config import STUDY_FORMAT, STUDY_VERSION, Job, StudyConfig, delta_over_sigma
from .store import sha256_file, write_json

ROOT = Path(__file__).resolve().parents[2]
N_BOOT = 1000
CE_TWIN = {False: "ce", "margin": "ce-at-ce", "ce": "ce-at-ce"}


def repo_relative(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p.resolve())


def train_command(config: dict[str, Any]) -> str:
    """The equivalent ``python -m gccs_core train`` command of a study model."""
    parts = ["python -m gccs_core train", f"--dataset {config['dataset']}", f"--loss {config['loss']}"]
    for k, v in sorted(config.get("loss_params", {}).items()):
        parts.append(f"--{k.replace('_', '-')} {v:g}")
    parts += [f"--latent-dim {config['latent_dim']}", f"--epochs {config['epochs']}",
              f"--batch-size {config['batch_size']}", f"--lr {config['lr']:g}", f"--weight-decay {config['weight_decay']:g}"]
    if config.get("augment"):
        parts.append("--augment")
    if config.get("adv_train"):
        parts += ["--adv-train", f"--adv-eps {config['adv_eps']:g}", f"--adv-steps {config['adv_steps']}",
                  f"--adv-objective {config['adv_objective']}"]
    parts += [f"--seed {config['seed']}", "--device cpu", "--out runs/<name>"]
    return " ".join(parts)


def _prefix(chunks: list[tuple[int, int, dict[str, Any]]]) -> list[tuple[int, int, dict[str, Any]]]:
    """The chunks that tile [0, n) without a gap, in order."""
    out, at = [], 0
    for a, b, r in sorted(chunks, key=lambda c: c[0]):
        if a != at:
            break
        out.append((a, b, r))
        at = b
    return out


def collect(cfg: StudyConfig, jobs: list[Job], results: dict[str, dict[str, Any]], work: Path,
            pretrained: Path | None) -> dict[str, Any]:
    """Models, rows, per-example vectors and the summary from the finished jobs."""
    by_key = {j.key: j for j in jobs}
    models: dict[str, dict[str, Any]] = {}  # train key -> model record
    for key, res in results.items():
        job = by_key.get(key)
        if job is None or job.kind != "train":
            continue
        p = job.params
        num_classes = dataset_info(cfg.dataset).num_classes
        rec = {"name": f"{p['arm']}-seed{p['seed']}", "arm": p["arm"], "reading": p["reading"], "loss": p["reading"],
               "sigma": p["sigma"], "radius": cfg.radius if p["sigma"] is not None else None,
               "delta_over_sigma": delta_over_sigma(num_classes, cfg.radius, p["sigma"]) if p["sigma"] else None,
               "seed": p["seed"], "adv_train": p["adv_train"], "sha256": res["sha256"],
               "checkpoint": repo_relative(work / res["checkpoint"]), "test_accuracy": res["test_accuracy"],
               "train_time_s": res["train_time_s"], "weight_decay": res["config"]["weight_decay"],
               "lam": res["config"]["loss_params"].get("lam", 1.0) if p["sigma"] is not None else None,
               "selection": res["selection"], "command": train_command(res["config"]), "config": res["config"]}
        if pretrained is not None and p["seed"] == cfg.seeds[0]:
            dst = pretrained / f"{cfg.dataset}-{p['arm']}.safetensors"
            src = work / res["checkpoint"]
            if not dst.exists() or sha256_file(dst) != res["sha256"]:
                dst.parent.mkdir(parents=True, exist_ok=True)
                tmp = dst.with_name(f".{dst.name}.tmp")
                shutil.copyfile(src, tmp)
                tmp.replace(dst)
            rec["checkpoint"] = repo_relative(dst)
        models[key] = rec

    evals: dict[tuple[str, str], list[tuple[int, int, dict[str, Any]]]] = defaultdict(list)
    extras: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for key, res in results.items():
        job = by_key.get(key)
        if job is None or job.kind in ("select", "train") or job.params["model"] not in models:
            continue
        if job.kind in ("weak", "strong", "autoattack"):
            a, b = job.params["chunk"]
            evals[(job.params["model"], job.kind)].append((a, b, {**res, "_params": job.params}))
        else:
            extras[(job.params["model"], job.kind)].append(res)

    per_example: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for (mkey, proto), chunks in sorted(evals.items(), key=lambda kv: (models[kv[0][0]]["name"], kv[0][1])):
        chunks = _prefix(chunks)
        if not chunks:
            continue
        m = models[mkey]
        clean = np.concatenate([np.asarray(r["clean"], dtype=bool) for _, _, r in chunks])
        n = len(clean)
        attacks = chunks[0][2]["attacks"]
        pe = per_example.setdefault(m["name"], {"protocols": {}})
        pe["protocols"][proto] = {"examples": [0, n], "clean": _bits(clean), "eps": {}}
        for eps_s in chunks[0][2]["eps"]:
            robust = np.concatenate([np.asarray(r["eps"][eps_s]["robust"], dtype=bool) for _, _, r in chunks])
            first = defaultdict(int)
            for _, _, r in chunks:
                for k, v in r["eps"][eps_s].get("first_break", {}).items():
                    first[k] += v
            pe["protocols"][proto]["eps"][eps_s] = _bits(robust)
            rows.append({
                "model": m["name"], "arm": m["arm"], "reading": m["reading"], "loss": m["loss"], "sigma": m["sigma"],
                "radius": m["radius"], "delta_over_sigma": m["delta_over_sigma"], "lam": m.get("lam"), "seed": m["seed"],
                "adv_train": m["adv_train"], "checkpoint": m["checkpoint"], "sha256": m["sha256"],
                "clean": float(clean.mean()), "protocol": proto, "norm": "linf", "eps": float(eps_s),
                "robust": float(robust.mean()), "n": n, "examples": [0, n], "attacks": attacks,
                "first_break": dict(first),
                "time_s": float(sum(r.get("time_s", 0.0) for _, _, r in chunks)),
            })
    diag = {m["name"]: _merge_extras(extras, mkey) for mkey, m in models.items()}
    summary = summarise(cfg, models, per_example, rows, diag)
    planned = sorted({j.params["arm"] for j in jobs if j.kind == "train"})
    readings = sorted({j.params["reading"] for j in jobs if j.kind == "train"})
    return {"models": models, "rows": rows, "per_example": per_example, "summary": summary, "diagnostics": diag,
            "planned": {"configurations": planned, "readings": readings,
                        "models": sum(1 for j in jobs if j.kind == "train")}}


def _bits(a: np.ndarray) -> str:
    return "".join("1" if v else "0" for v in a)


def _unbits(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), dtype=np.uint8) == ord("1")


def _merge_extras(extras: dict[tuple[str, str], list[dict[str, Any]]], mkey: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("diagnostics", "minnorm", "iterations"):
        res = extras.get((mkey, kind))
        if res:
            out[kind] = {k: v for k, v in res[0].items() if k not in ("sizes",)}
            if kind == "minnorm":
                out[kind] = {k: ({kk: vv for kk, vv in v.items() if kk != "sizes"} if isinstance(v, dict) else v)
                             for k, v in res[0].items()}
    return out


def _matrix(per_example: dict[str, Any], models: list[dict[str, Any]], proto: str, eps_s: str | None,
            n: int) -> np.ndarray:
    """(seeds, n) correctness of one configuration (clean when ``eps_s`` is None), first ``n`` examples."""
    rows = []
    for m in models:
        pe = per_example[m["name"]]
        bits = pe["protocols"][proto]["clean"] if eps_s is None else pe["protocols"][proto]["eps"][eps_s]
        rows.append(_unbits(bits)[:n])
    return np.stack(rows).astype(np.float64)


def _available(per_example: dict[str, Any], name: str, proto: str, eps_s: str) -> int:
    pe = per_example.get(name)
    if not pe or proto not in pe.get("protocols", {}) or eps_s not in pe["protocols"][proto]["eps"]:
        return 0
    return len(pe["protocols"][proto]["eps"][eps_s])


def summarise(cfg: StudyConfig, models: dict[str, dict[str, Any]], per_example: dict[str, Any],
              rows: list[dict[str, Any]], diag: dict[str, Any]) -> dict[str, Any]:
    """Per configuration x protocol x eps: mean with a bootstrap CI, the paired difference to the CE twin
    (same seeds, same examples) with its CI and McNemar p, the weak-minus-strong gap, and AutoAttack's
    agreement with the strong worst case on the examples both saw."""
    by_arm: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in models.values():
        by_arm[m["arm"]].append(m)
    cells: list[dict[str, Any]] = []
    eps_all = sorted({r["eps"] for r in rows})
    for arm, ms in sorted(by_arm.items()):
        ms = sorted(ms, key=lambda m: m["seed"])
        for proto in ("weak", "strong", "autoattack"):
            for eps in eps_all:
                eps_s = f"{eps:g}"
                have = [m for m in ms if _available(per_example, m["name"], proto, eps_s)]
                if not have:
                    continue
                n = min(_available(per_example, m["name"], proto, eps_s) for m in have)
                mat = _matrix(per_example, have, proto, eps_s, n)
                cell: dict[str, Any] = {"arm": arm, "reading": ms[0]["reading"], "sigma": ms[0]["sigma"],
                                        "delta_over_sigma": ms[0]["delta_over_sigma"], "adv_train": ms[0]["adv_train"],
                                        "protocol": proto, "eps": eps, "seeds": [m["seed"] for m in have], "n": n,
                                        "robust": stats.bootstrap_mean(mat, N_BOOT).to_dict(),
                                        "clean": stats.bootstrap_mean(_matrix(per_example, have, proto, None, n),
                                                                      N_BOOT).to_dict()}
                twin = CE_TWIN[ms[0]["adv_train"]]
                if arm != twin and twin in by_arm:
                    cell["vs_ce"] = _paired(per_example, have, by_arm[twin], proto, eps_s, twin)
                if proto == "weak":
                    cell["weak_minus_strong"] = _paired_same(per_example, have, "weak", "strong", eps_s)
                if proto == "autoattack":
                    cell["strong_minus_autoattack"] = _paired_same(per_example, have, "strong", "autoattack", eps_s)
                cells.append(cell)
    return {"cells": cells, "eps": eps_all}


def _paired(per_example: dict[str, Any], a_models: list[dict[str, Any]], b_models: list[dict[str, Any]], proto: str,
            eps_s: str, twin: str) -> dict[str, Any] | None:
    b_by_seed = {m["seed"]: m for m in b_models if _available(per_example, m["name"], proto, eps_s)}
    pairs = [(m, b_by_seed[m["seed"]]) for m in a_models if m["seed"] in b_by_seed]
    if not pairs:
        return None
    n = min(min(_available(per_example, a["name"], proto, eps_s), _available(per_example, b["name"], proto, eps_s))
            for a, b in pairs)
    ma = _matrix(per_example, [a for a, _ in pairs], proto, eps_s, n)
    mb = _matrix(per_example, [b for _, b in pairs], proto, eps_s, n)
    return {"twin": twin, "seeds": [a["seed"] for a, _ in pairs], "n": n,
            "diff": stats.paired_bootstrap_diff(ma, mb, N_BOOT).to_dict(), "mcnemar": stats.mcnemar_exact(ma, mb)}


def _paired_same(per_example: dict[str, Any], models: list[dict[str, Any]], p1: str, p2: str,
                 eps_s: str) -> dict[str, Any] | None:
    have = [m for m in models if _available(per_example, m["name"], p1, eps_s) and _available(per_example, m["name"], p2, eps_s)]
    if not have:
        return None
    n = min(min(_available(per_example, m["name"], p1, eps_s), _available(per_example, m["name"], p2, eps_s)) for m in have)
    m1, m2 = _matrix(per_example, have, p1, eps_s, n), _matrix(per_example, have, p2, eps_s, n)
    return {"seeds": [m["seed"] for m in have], "n": n, "diff": stats.paired_bootstrap_diff(m1, m2, N_BOOT).to_dict(),
            "mcnemar": stats.mcnemar_exact(m1, m2), "first": float(m1.mean()), "second": float(m2.mean())}


def write_outputs(cfg: StudyConfig, jobs: list[Job], stored: dict[str, dict[str, Any]], work: Path, out: Path,
                  pretrained: Path | None, command: str, readme: Path | None = None) -> dict[str, Any]:
    """Write results.json, per_example.json, the pretrained manifest and ``<out>.md`` (all atomically), and the
    study block of ``readme`` when given (the default run's README.md)."""
    from .report import render

    results = {k: v["result"] for k, v in stored.items()}
    data = collect(cfg, jobs, results, work, pretrained)
    progress = progress_summary(jobs, stored)
    header = {"format": STUDY_FORMAT, "version": STUDY_VERSION, "command": command, "settings": cfg.to_dict()}
    write_json(out / "per_example.json", {**header, "models": data["per_example"]})
    summary = {**data["summary"], "progress": progress, "diagnostics": data["diagnostics"],
               "models": [{k: v for k, v in m.items() if k != "config"} for m in data["models"].values()]}
    write_json(out / "results.json", {**header, "rows": data["rows"], "summary": summary})
    if pretrained is not None and data["models"]:
        seed0 = [m for m in data["models"].values() if m["seed"] == cfg.seeds[0]]
        write_json(pretrained / "manifest.json", {**header, "models": [
            {"file": Path(m["checkpoint"]).name, "arm": m["arm"], "sha256": m["sha256"], "test_accuracy": m["test_accuracy"],
             "weight_decay": m["weight_decay"], "lam": m.get("lam"), "train_time_s": m["train_time_s"], "command": m["command"],
             "study_command": command, "config": m["config"]} for m in sorted(seed0, key=lambda m: m["arm"])]})
    from .store import atomic_write_text

    atomic_write_text(doc_path(out), render(cfg, data, progress, command))
    if readme is not None and readme.exists():
        from .report import readme_block, replace_readme_block

        atomic_write_text(readme, replace_readme_block(readme.read_text(), readme_block(data, progress)))
    return data


def doc_path(out: Path) -> Path:
    """The generated page sits next to its results folder: docs/study -> docs/study.md."""
    return out.parent / f"{out.name}.md"


def progress_summary(jobs: list[Job], stored: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Jobs done and left per kind, measured wall times, and an estimate of the time left."""
    kinds: dict[str, dict[str, Any]] = {}
    for j in jobs:
        kind = j.kind + ("-at" if j.kind == "train" and j.params.get("adv_train") else "")
        k = kinds.setdefault(kind, {"done": 0, "left": 0, "wall_s": []})
        if j.key in stored:
            k["done"] += 1
            k["wall_s"].append(float(stored[j.key].get("wall_s", 0.0)))
        else:
            k["left"] += 1
    left_s, unknown = 0.0, []
    for kind, k in kinds.items():
        walls = k.pop("wall_s")
        k["wall_s_total"] = round(sum(walls), 1)
        k["wall_s_mean"] = round(sum(walls) / len(walls), 1) if walls else None
        if k["left"]:
            if walls:
                left_s += k["left"] * k["wall_s_mean"]
            else:
                unknown.append(kind)
    return {"jobs": len(jobs), "done": sum(k["done"] for k in kinds.values()), "by_kind": kinds,
            "estimated_left_s": round(left_s), "no_estimate_for": unknown}
