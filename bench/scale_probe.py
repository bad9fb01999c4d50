"""Why does ``gccs`` at sigma 3.73 (Delta/sigma 4) under-train on mnist5k? (docs/study-scale.md)

Two probes:

* ``optimum``: no network. Class latents drawn as N(mu_k, (t sigma)^2 I) in batches of 128; the loss of
  each reading as a function of t, and the nearest-vertex accuracy of those latents. Says what spread the
  loss itself asks for, and the accuracy a perfectly trained model could then have.
* ``train``: one training run (the study's recipe, overridable) that logs, every epoch, clean train and
  test accuracy, the loss terms on the clean train set, and the latent geometry: the class means' distance
  to their vertices and the within-class spread in the simplex subspace and its complement (units of
  sigma), and the accuracy of a nearest-class-mean rule (which tells displaced means from too much spread).

* ``gradients``: norms of the class-mean, pull and covariance parts of the latent gradient, sigma 1 vs 3.73.
* ``table``: markdown tables (last epoch; per-epoch accuracy) of ``train --out`` files.

    python bench/scale_probe.py optimum
    python bench/scale_probe.py gradients
    python bench/scale_probe.py train --sigma 3.73 --epochs 10 --out /tmp/scale/base.json
    python bench/scale_probe.py table /tmp/scale/base.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import time

import torch

from gccs_core.data import load_dataset
from gccs_core.losses import build_loss
from gccs_core.models import embed_batched
from gccs_core.train import Callback, EpochInfo, TrainConfig, train


def optimum(sigma: float, radius: float, d: int, k: int, readings: list[str], batch: int, draws: int) -> list[dict]:
    """Loss and nearest-vertex accuracy of Gaussian class latents with spread t * sigma."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for t in (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2):
        row: dict = {"t": t}
        for name in readings:
            loss = build_loss(name, k, d, sigma=sigma, radius=radius)
            vals, acc = [], []
            for _ in range(draws):
                y = torch.randint(0, k, (batch,), generator=gen)
                z = loss.centers[y] + t * sigma * torch.randn(batch, d, generator=gen)
                vals.append(float(loss(z, y)))
                acc.append(float((loss.scores(z).argmax(1) == y).float().mean()))
            row[name] = sum(vals) / draws
            row["acc"] = sum(acc) / draws
        rows.append(row)
    return rows


def gradients(sigma: float, radius: float, d: int, k: int, shrinkage: float, batch: int = 128) -> list[dict]:
    """Norms of the latent gradient's parts for ``gccs``: class-mean term, per-sample pull, covariance terms.

    Two states: *early* (every class mean at the origin, spread sigma: what training reaches after its first
    epoch at sigma 3.73) and *optimum* (means on their vertices, spread 0.7 sigma).
    """
    gen = torch.Generator().manual_seed(0)
    rows = []
    for state, (at_vertex, t) in {"early": (0.0, 1.0), "optimum": (1.0, 0.7)}.items():
        loss = build_loss("gccs", k, d, sigma=sigma, radius=radius, shrinkage=shrinkage)
        y = torch.randint(0, k, (batch,), generator=gen)
        z = (at_vertex * loss.centers[y] + t * sigma * torch.randn(batch, d, generator=gen)).requires_grad_()
        grad = torch.autograd.grad(loss(z, y), z)[0]
        onehot = torch.nn.functional.one_hot(y, k).to(z.dtype)
        means = onehot.T @ z.detach() / onehot.sum(0).clamp(min=1)[:, None]
        g_mean = (means - loss.centers)[y] / (batch * sigma**2)
        g_pull = loss.lam * (z.detach() - loss.centers[y]) / (batch * sigma**2)
        g_cov = grad - g_mean - g_pull
        rows.append({"sigma": sigma, "shrinkage": shrinkage, "state": state, "mean": float(g_mean.norm()),
                     "pull": float(g_pull.norm()), "cov": float(g_cov.norm()),
                     "mean_over_cov": float(g_mean.norm() / g_cov.norm())})
    return rows


def geometry(model, data, centers: torch.Tensor, sigma: float, k: int, class_means: torch.Tensor | None = None) -> dict:
    """Latent statistics of ``data`` under ``model`` (units of sigma)."""
    z, scores = embed_batched(model, data.x)
    y = data.y
    means = torch.stack([z[y == c].mean(0) for c in range(k)])
    ref = means if class_means is None else class_means
    sub, comp = slice(0, k - 1), slice(k - 1, None)
    var_sub = torch.stack([z[y == c][:, sub].var(0).mean() for c in range(k)]).mean()
    var_comp = torch.stack([z[y == c][:, comp].var(0).mean() for c in range(k)]).mean()
    ncm = (torch.cdist(z, ref).argmin(1) == y).float().mean()
    return {"acc": float((scores.argmax(1) == y).float().mean()), "ncm_acc": float(ncm),
            "mean_offset": float((means - centers).norm(dim=1).mean() / sigma),
            "std_sub": float(var_sub.sqrt() / sigma), "std_comp": float(var_comp.sqrt() / sigma),
            "z_norm": float(z.norm(dim=1).mean()), "_means": means}


class SigmaWarmup(Callback):
    """Anneal the loss's sigma linearly from ``start`` to its target over the first ``epochs`` epochs (a curriculum)."""

    def __init__(self, start: float, target: float, epochs: float) -> None:
        self.start, self.target, self.epochs = start, target, epochs
        self.models: list = []
        train_module = importlib.import_module("gccs_core.train")
        original = train_module.build_model

        def record(spec):  # the training loop builds its own model: keep a handle on its loss head
            model = original(spec)
            self.models.append(model)
            return model

        train_module.build_model = record

    def on_step(self, info) -> None:
        frac = min(1.0, (info.global_step + 1) / max(1.0, self.epochs * info.steps_per_epoch))
        self.models[-1].head.sigma = self.start + frac * (self.target - self.start)


class Probe(Callback):
    def __init__(self, config: TrainConfig) -> None:
        self.train_data = load_dataset(config.dataset, "train", None, False, config.limit_train)
        self.test_data = load_dataset(config.dataset, "test")
        self.sigma = float(config.loss_params["sigma"])
        self.rows: list[dict] = []
        self.t0 = time.time()

    def on_epoch(self, info: EpochInfo, model) -> None:
        head = model.head
        k = model.num_classes
        sigma = self.sigma
        tr = geometry(model, self.train_data, head.centers, sigma, k)
        te = geometry(model, self.test_data, head.centers, sigma, k, class_means=tr.pop("_means"))
        te.pop("_means")
        terms: dict[str, float] = {}
        with torch.no_grad():
            z, _ = embed_batched(model, self.train_data.x)
            perm = torch.randperm(len(z), generator=torch.Generator().manual_seed(1))
            n = 0
            for i in range(0, len(z) - 127, 128):
                idx = perm[i:i + 128]
                head(z[idx], self.train_data.y[idx])
                for key, v in head.last_terms.items():
                    terms[key] = terms.get(key, 0.0) + v
                n += 1
        row = {"epoch": info.epoch + 1, "train_acc": tr["acc"], "test_acc": te["acc"], "test_ncm_acc": te["ncm_acc"],
               "batch_train_acc": info.train_accuracy, "mean_offset": tr["mean_offset"], "std_sub": tr["std_sub"],
               "std_comp": tr["std_comp"], "test_std_sub": te["std_sub"], "z_norm": tr["z_norm"],
               **{f"term_{key}": v / max(1, n) for key, v in terms.items()}, "elapsed_s": round(time.time() - self.t0, 1)}
        self.rows.append(row)
        print(json.dumps({k_: round(v, 4) if isinstance(v, float) else v for k_, v in row.items()}), flush=True)


def table(paths: list[str]) -> None:
    """A markdown table of the last epoch of each run file written by ``train --out``."""
    print("| run | epoch | train acc | test acc | test NCM acc | mean offset / sigma | spread sub / sigma | "
          "spread compl / sigma | kl | pull |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        with open(path) as fh:
            run = json.load(fh)
        r = run["rows"][-1]
        print(f"| {path.rsplit('/', 1)[-1].removesuffix('.json')} | {r['epoch']} | {r['train_acc']:.3f} | "
              f"{r['test_acc']:.3f} | {r['test_ncm_acc']:.3f} | {r['mean_offset']:.2f} | {r['std_sub']:.2f} | "
              f"{r['std_comp']:.2f} | {r.get('term_kl', float('nan')):.2f} | {r.get('term_pull', float('nan')):.2f} |")


def trajectory(paths: list[str]) -> None:
    """A markdown table, one row per epoch, of train / test accuracy of each run file."""
    runs = {}
    for path in paths:
        with open(path) as fh:
            runs[path.rsplit("/", 1)[-1].removesuffix(".json")] = {r["epoch"]: r for r in json.load(fh)["rows"]}
    print("| epoch | " + " | ".join(runs) + " |")
    print("|---|" + "---|" * len(runs))
    for epoch in range(1, max(max(r) for r in runs.values()) + 1):
        cells = [f"{r[epoch]['train_acc']:.2f} / {r[epoch]['test_acc']:.2f}" if epoch in r else "" for r in runs.values()]
        print(f"| {epoch} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("optimum")
    o.add_argument("--sigma", type=float, default=3.73)
    o.add_argument("--readings", default="gccs,gccs-subspace,gccs-moments,gccs-w2")
    sub.add_parser("gradients")
    tb = sub.add_parser("table")
    tb.add_argument("paths", nargs="+")
    t = sub.add_parser("train")
    t.add_argument("--loss", default="gccs")
    t.add_argument("--sigma", type=float, default=3.73)
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--param", action="append", default=[], help="loss parameter NAME=VALUE (e.g. shrinkage=0.5)")
    t.add_argument("--limit-train", type=int, default=None)
    t.add_argument("--dataset", default="mnist5k")
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--sigma-warmup", type=float, default=0.0, help="epochs over which sigma rises from 1 to --sigma")
    t.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.cmd == "gradients":
        for sigma in (1.0, 3.73):
            for rho in (0.1, 1.0):
                for r in gradients(sigma, 10.0, 16, 10, rho):
                    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}))
        return
    if args.cmd == "table":
        table(args.paths)
        print()
        trajectory(args.paths)
        return
    if args.cmd == "optimum":
        rows = optimum(args.sigma, 10.0, 16, 10, args.readings.split(","), 128, 20)
        for r in rows:
            print(json.dumps({k: round(v, 4) for k, v in r.items()}))
        return
    params = {"sigma": args.sigma, "radius": 10.0}
    for p in args.param:
        name, value = p.split("=")
        params[name] = float(value)
    config = TrainConfig(dataset=args.dataset, loss=args.loss, loss_params=params, latent_dim=16, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                         augment=not args.no_augment, limit_train=args.limit_train, device="cpu", seed=0)
    probe = Probe(config)
    callbacks: list[Callback] = [probe]
    if args.sigma_warmup > 0:
        callbacks.insert(0, SigmaWarmup(1.0, args.sigma, args.sigma_warmup))
    train(config, callbacks=callbacks)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"args": vars(args), "rows": probe.rows}, fh, indent=1)


if __name__ == "__main__":
    main()
