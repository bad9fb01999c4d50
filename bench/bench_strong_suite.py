"""The project's own strong suite at the study's strength on one plain mnist5k model, and the reference AutoAttack
beside it (benchmark, by hand; label the figures with the machine's load).

    .venv/bin/python bench/bench_strong_suite.py [--n 1000] [--threads 2] [--check-n 100] [--aa-n 100] [--amp bf16]

1. ``gccs_core.study.protocols.strong_protocol`` (PGD-margin/DLR with restarts, APGD-CE/DLR, targeted PGD toward
   the 3 nearest wrong classes, Square; the study's steps 100, restarts 5, Square 1000 queries) as its cost-ordered
   cascade on ``--n`` test digits at eps 0.05, 0.1, 0.2, 0.3: wall time and robust accuracy per eps.
2. On the first ``--check-n`` of those digits, the cascade again and every attack on every example
   (``strong_protocol_unordered``) at each eps: the per-example worst cases must be identical (exit 1 if not).
   Both runs see the same digits, since the random starts are drawn per batch position.
3. With ``--amp bf16`` (every attack's encoder passes under bfloat16 autocast, float32 verdicts), steps 1 and 2
   run in bf16, and the float32 cascade runs on the same first ``--check-n`` digits: how many examples the two
   precisions judge differently, per eps.
4. The reference standard AutoAttack (``pyautoattack``) on the first ``--aa-n`` digits at each eps: its time,
   and its time per digit scaled to ``--n`` digits (said to be a scaling, not a run).
Results go to bench/results/strong_suite.json (``strong_suite_bf16.json`` with ``--amp bf16``), atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from gccs_core.checkpoint import load_model
from gccs_core.data import load_dataset
from gccs_core.files import atomic_write_text
from gccs_core.study import protocols
from gccs_core.study.config import StudyConfig

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    cfg = StudyConfig.full()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "pretrained" / "mnist5k-ce.safetensors"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--eps", default=",".join(f"{e:g}" for e in cfg.eps))
    ap.add_argument("--steps", type=int, default=cfg.steps)
    ap.add_argument("--restarts", type=int, default=cfg.restarts)
    ap.add_argument("--square-queries", type=int, default=cfg.square_queries)
    ap.add_argument("--check-n", type=int, default=100, help="digits for the unordered check (0: skip)")
    ap.add_argument("--aa-n", type=int, default=100, help="digits for the reference AutoAttack (0: skip)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--amp", choices=["none", "bf16"], default="none")
    ap.add_argument("--label", default="", help="the machine's state, e.g. 'idle machine (study paused)'")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    a.out = a.out or str(ROOT / "bench" / "results" / ("strong_suite.json" if a.amp == "none" else f"strong_suite_{a.amp}.json"))
    torch.set_num_threads(a.threads)
    model = load_model(a.checkpoint).eval()
    ds = load_dataset("mnist5k", "test", limit=a.n)
    eps = [float(e) for e in a.eps.split(",")]
    kw = dict(steps=a.steps, restarts=a.restarts, square_queries=a.square_queries, seed=0, amp=a.amp)
    out: dict = {"checkpoint": os.path.relpath(a.checkpoint, ROOT), "n": len(ds.y), "eps": eps, **kw,
                 "threads": a.threads, "cpus": os.cpu_count(), "label": a.label, "torch": torch.__version__,
                 "load_average_before": os.getloadavg()}

    t0 = time.perf_counter()
    cascade = protocols.strong_protocol(model, ds.x, ds.y, eps, **kw)
    out["strong_s"] = time.perf_counter() - t0
    out["robust"] = {k: sum(v["robust"]) / len(ds.y) for k, v in cascade["eps"].items()}
    out["first_break"] = {k: v["first_break"] for k, v in cascade["eps"].items()}
    print(f"strong suite ({a.amp}), {len(ds.y)} digits, eps {eps}: {out['strong_s']:.1f} s; robust {out['robust']}",
          flush=True)

    identical = True
    if a.check_n:
        t0 = time.perf_counter()
        xs, ys = ds.x[:a.check_n], ds.y[:a.check_n]
        small = protocols.strong_protocol(model, xs, ys, eps, **kw)  # the cascade on exactly these digits
        diff = {}
        for e in eps:
            full = protocols.strong_protocol_unordered(model, xs, ys, e, **kw)
            diff[f"{e:g}"] = int((full != torch.tensor(small["eps"][f"{e:g}"]["robust"])).sum())
        identical = not any(diff.values())
        out["unordered_check"] = {"n": a.check_n, "differing_examples": diff, "identical": identical,
                                  "wall_s": time.perf_counter() - t0}
        print(f"unordered check on {a.check_n} digits: differing examples per eps {diff} "
              f"({out['unordered_check']['wall_s']:.1f} s)", flush=True)
        if a.amp != "none":
            t0 = time.perf_counter()
            f32 = protocols.strong_protocol(model, xs, ys, eps, **{**kw, "amp": "none"})
            f32_s = time.perf_counter() - t0
            per_eps = {}
            for e in eps:
                k = f"{e:g}"
                r32, r16 = torch.tensor(f32["eps"][k]["robust"]), torch.tensor(small["eps"][k]["robust"])
                per_eps[k] = {"float32_robust": int(r32.sum()), f"{a.amp}_robust": int(r16.sum()),
                              f"broken_only_in_{a.amp}": int((r32 & ~r16).sum()),
                              "broken_only_in_float32": int((~r32 & r16).sum())}
            out["float32_check"] = {"n": a.check_n, "float32_s": f32_s, "per_eps": per_eps}
            print(f"float32 cascade on the same {a.check_n} digits ({f32_s:.1f} s): {per_eps}", flush=True)

    if a.aa_n:
        from gccs_core.study.autoattack import autoattack

        t0 = time.perf_counter()
        aa = autoattack(model, ds.x[:a.aa_n], ds.y[:a.aa_n], eps, seed=0)
        aa_s = time.perf_counter() - t0
        out["autoattack"] = {"n": a.aa_n, "wall_s": aa_s, "scaled_to_n_s": aa_s * len(ds.y) / a.aa_n,
                             "robust": {k: sum(v["robust"]) / a.aa_n for k, v in aa["eps"].items()}}
        print(f"reference AutoAttack (standard) on {a.aa_n} digits, eps {eps}: {aa_s:.1f} s "
              f"(x{len(ds.y) / a.aa_n:g} = {out['autoattack']['scaled_to_n_s']:.0f} s scaled to {len(ds.y)} digits)")
    out["load_average_after"] = os.getloadavg()
    atomic_write_text(a.out, json.dumps(out, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
