"""Command line: ``python -m gccs_core {train,evaluate,attack,info,download} ...``.

Parsing only; the work is in the library, and every default and allowed value comes from it (the loss
parameter flags from ``losses.loss_parameters``, the evaluation defaults from ``evaluate``, the attack
defaults from ``AttackSpec``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

from .data import DATASETS
from .losses import LOSSES, loss_parameters
from .models import ENCODERS
from .train import AMP_DTYPES, DEVICES, OPTIMIZERS, SCHEDULES, Callback, EpochInfo, StepInfo, TrainConfig, TrainingDiverged
from .validation import check_int

LOSS_PARAM_FLAGS: tuple[str, ...] = tuple(dict.fromkeys(p for name in LOSSES for p in loss_parameters(name)))
"""Every loss hyperparameter, each a ``train`` flag (``cov_eps`` -> ``--cov-eps``), in first-seen order."""
RIDGE_PARAM = "cov_eps" if "cov_eps" in LOSS_PARAM_FLAGS else "eps"
"""The GCCS covariance ridge; ``train --eps`` is its deprecated alias (elsewhere ``--eps`` is the threat radius)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument on one line (with the allowed values) and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


class ProgressBar(Callback):
    """tqdm bar over all training steps, with loss, batch accuracy and the last test accuracy.

    The bar is sized at the first step (steps per epoch x ``epochs``, starting at the step a resumed run
    continues from), so the dataset is never loaded just to count it.
    """

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.bar: Any = None
        self.test_acc: float | None = None

    def on_step(self, info: StepInfo) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=info.steps_per_epoch * self.epochs, initial=info.global_step, unit="step",
                            dynamic_ncols=True, file=sys.stderr)
        post = {"epoch": info.epoch + 1, "loss": f"{info.loss:.4f}", "acc": f"{info.accuracy:.3f}"}
        if self.test_acc is not None:
            post["test"] = f"{self.test_acc:.4f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def on_epoch(self, info: EpochInfo, model: Any) -> None:
        self.test_acc = info.test_accuracy
        line = (f"epoch {info.epoch + 1}/{info.epochs}: loss {info.train_loss:.4f}  train acc {info.train_accuracy:.4f}  "
                f"test acc {info.test_accuracy:.4f}  ({info.elapsed_s:.1f}s)")
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model and save it to --out", description="Train a latent classifier.")
    p.set_defaults(handler=cmd_train)
    d = TrainConfig()
    p.add_argument("--dataset", choices=list(DATASETS), default=d.dataset)
    p.add_argument("--loss", choices=list(LOSSES), default=d.loss)
    p.add_argument("--encoder", choices=list(ENCODERS), default=None, help="default: the dataset's (mlp/cnn/resnet18)")
    p.add_argument("--latent-dim", type=int, default=d.latent_dim)
    p.add_argument("--epochs", type=int, default=None,
                   help=f"default {d.epochs}; with --resume: continue the run to this many epochs in total")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule)
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--augment", action="store_true",
                   help="random shifts of up to 2 px (28x28); 32x32 colour: random crop with 4 px padding + horizontal flip")
    for name in LOSS_PARAM_FLAGS:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, default=None,
                       help=f"loss parameter {name} (losses that take it)")
    if RIDGE_PARAM != "eps":
        p.add_argument("--eps", dest="deprecated_eps", metavar="COV_EPS", type=float, default=None,
                       help=f"deprecated alias of --{RIDGE_PARAM.replace('_', '-')} (the covariance ridge)")
    else:  # losses.py still calls the ridge eps: --cov-eps is already the name to use
        p.add_argument("--cov-eps", dest="eps", type=float, default=None, help="the covariance ridge (loss parameter eps)")
    p.add_argument("--adv-train", action="store_true", help="PGD adversarial training (Madry et al. 2018)")
    p.add_argument("--adv-eps", type=float, default=d.adv_eps)
    p.add_argument("--adv-steps", type=int, default=d.adv_steps)
    p.add_argument("--adv-step-size", type=float, default=None)
    p.add_argument("--adv-objective", choices=("ce", "margin"), default=d.adv_objective)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", choices=DEVICES, default=d.device, help="auto: cuda, then mps, then cpu")
    p.add_argument("--amp", choices=list(AMP_DTYPES), default=d.amp,
                   help="autocast the encoder to bf16 (cuda, cpu) or fp16 (cuda, with a gradient scaler)")
    p.add_argument("--no-sync-bn", action="store_true",
                   help="under torchrun: batch norm with each process's statistics instead of the global batch's")
    p.add_argument("--data-root", default=None, help="folder of torchvision datasets")
    p.add_argument("--download", action="store_true", help="download a torchvision dataset that is not on disk")
    p.add_argument("--limit-train", type=int, default=None, help="use only the first N training examples")
    p.add_argument("--data", default=None, help="your own dataset: an .npz file with x, y (replaces --dataset)")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="log losses, accuracy, lr and latent snapshots to DIR (needs: pip install tensorboard)")
    p.add_argument("--out", required=True, help="run folder: model.safetensors, checkpoint.safetensors, metadata.json")
    p.add_argument("--resume", action="store_true", help="finish the interrupted run saved in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def loss_params_from_args(a: argparse.Namespace) -> dict[str, float]:
    """The loss hyperparameters given on the command line (``--eps`` on ``train`` warns and means ``--cov-eps``)."""
    params = {k: getattr(a, k) for k in LOSS_PARAM_FLAGS if getattr(a, k, None) is not None}
    old = getattr(a, "deprecated_eps", None)
    if old is not None:
        flag = f"--{RIDGE_PARAM.replace('_', '-')}"
        print(f"DeprecationWarning: train --eps is deprecated and will be removed; use {flag} (the covariance ridge; "
              "--eps is the threat radius in evaluate and attack).", file=sys.stderr)
        if RIDGE_PARAM in params and params[RIDGE_PARAM] != old:
            raise ValueError(f"--eps={old:g} and {flag}={params[RIDGE_PARAM]:g} disagree; give {flag} only.")
        params[RIDGE_PARAM] = old
    return params


def train_config_from_args(a: argparse.Namespace) -> TrainConfig:
    """The ``TrainConfig`` that ``train`` arguments describe: every field of the same name, plus the loss parameters."""
    values = {f.name: getattr(a, f.name) for f in fields(TrainConfig) if hasattr(a, f.name)}
    values["dataset"] = getattr(a, "data", None) or a.dataset
    values["loss_params"] = loss_params_from_args(a)
    values["sync_batchnorm"] = not a.no_sync_bn
    if values.get("epochs") is None:
        values["epochs"] = TrainConfig().epochs
    return TrainConfig(**values)


def cmd_train(a: argparse.Namespace) -> int:
    """Train in this process, or as one of the ``torchrun`` processes (then only rank 0 shows progress and prints)."""
    from .train import resume_config, train

    config = train_config_from_args(a)
    more = a.epochs if a.resume else None  # --resume --epochs N: continue to N epochs in total
    effective = resume_config(config, a.out, more) if a.resume else config  # what the progress bar and summary describe
    main_process = os.environ.get("RANK", "0") == "0"  # torchrun sets RANK; a single process is rank 0
    bar = None
    callbacks: list[Callback] = []
    if not a.quiet and main_process:
        bar = ProgressBar(effective.epochs)
        callbacks.append(bar)
    board = None
    if a.tensorboard and main_process:
        from .tensorboard_log import callback_for_run

        board = callback_for_run(a.tensorboard, effective.dataset, effective.data_root)
        callbacks.append(board)
    try:
        result = train(config, callbacks, out_dir=a.out, resume=a.resume, epochs=more)
    finally:
        if bar is not None:
            bar.close()
        if board is not None:
            board.close()
    if not main_process:
        return 0
    m = result.metrics
    print(
        f"done: {effective.loss} on {effective.dataset}, test accuracy {m['test_accuracy']:.4f}, "
        f"train accuracy {m['train_accuracy']:.4f}, {m['train_time_s']:.1f}s; saved to {Path(a.out) / 'model.safetensors'}"
    )
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from .checkpoint import load_metadata

    meta = load_metadata(a.path)
    if a.json:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    spec, cfg = meta.get("spec", {}), meta.get("config", {})
    print(f"checkpoint: {a.path}")
    print(f"library version: {meta.get('library_version')}")
    print(f"dataset: {meta.get('dataset')} ({len(meta.get('class_names', []))} classes)")
    print(f"model: encoder={spec.get('encoder')} latent_dim={spec.get('latent_dim')} loss={spec.get('loss')} "
          f"loss_params={spec.get('loss_params')}")
    if cfg:
        keys = ("epochs", "batch_size", "optimizer", "lr", "schedule", "augment", "adv_train", "seed")
        print("training: " + " ".join(f"{k}={cfg.get(k)}" for k in keys))
    print(f"epochs done: {meta.get('epoch')}  training time: {meta.get('train_time_s', 0):.1f}s")
    for k, v in (meta.get("metrics") or {}).items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    return 0


def cmd_download(a: argparse.Namespace) -> int:
    from .data import default_data_root, load_dataset

    root = a.data_root or str(default_data_root())
    for split in ("train", "test"):
        ds = load_dataset(a.dataset, split, root, download=True)
        print(f"{a.dataset} {split}: {len(ds)} examples under {root}")
    return 0


def _add_own_model_flags(p: argparse.ArgumentParser) -> None:
    """``--checkpoint``, or a network of your own: ``--arch --weights [--latent-layer --value-range --mean --std]``."""
    p.add_argument("--checkpoint", default=None, help="a .safetensors checkpoint or a run folder")
    p.add_argument("--arch", default=None, help="instead of --checkpoint: torchvision:<model> or gccs:<encoder> ...")
    p.add_argument("--weights", default=None, help="... with its state_dict (.safetensors, or .pt read with weights_only)")
    p.add_argument("--latent-layer", default=None, help="with --arch: the layer whose output is the latent "
                   "(default: the input of the last nn.Linear)")
    p.add_argument("--value-range", default="0,1", help="with --arch: the input range the network was trained on")
    p.add_argument("--mean", default=None, help="with --arch: the per-channel mean the network's inputs were normalised "
                   "with (after --value-range), e.g. 0.485,0.456,0.406; folded into the model, attacks stay in [0, 1]")
    p.add_argument("--std", default=None, help="with --arch: the per-channel std of that normalisation (> 0)")
    p.add_argument("--data", default=None, help="your own dataset: an .npz file with x, y (replaces --dataset)")


def own_model_args(a: argparse.Namespace, dataset: str | None) -> dict[str, Any] | None:
    """The keyword arguments of ``weights.load_for_dataset`` the flags describe, or None for ``--checkpoint``.

    Checks the flag combination and parses ``--value-range``, ``--mean`` and ``--std`` (one value or one per
    channel of ``dataset``), each with one clear error.
    """
    own_only = [f"--{k.replace('_', '-')}" for k in ("latent_layer", "mean", "std") if getattr(a, k) is not None]
    if a.arch is None and a.weights is None:
        if a.checkpoint is None:
            raise ValueError("give --checkpoint, or --arch with --weights (a network of your own).")
        if own_only:
            raise ValueError(f"{', '.join(own_only)} go with --arch and --weights, not with --checkpoint.")
        return None
    if a.checkpoint is not None or a.arch is None or a.weights is None or not dataset:
        raise ValueError("--arch and --weights go together, with --dataset (or --data) and without --checkpoint.")
    from .data import dataset_info
    from .weights import parse_channels, parse_value_range

    channels = dataset_info(dataset).in_shape[0]
    return dict(arch=a.arch, weights=a.weights, dataset=dataset, latent_layer=a.latent_layer,
                value_range=parse_value_range(a.value_range), mean=parse_channels(a.mean, "--mean", channels),
                std=parse_channels(a.std, "--std", channels))


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    """``evaluate``: the robustness suite on a checkpoint (see gccs_core/evaluate.py); defaults are the library's."""
    from . import evaluate as ev

    p = sub.add_parser("evaluate", help="robustness evaluation of a checkpoint (attack suite, worst case, sanity flags)",
                       description="Evaluate a checkpoint against FGSM/PGD/APGD/Square/DeepFool at several eps.")
    p.set_defaults(handler=cmd_evaluate)
    _add_own_model_flags(p)
    eps = ",".join(f"{e:g}" for e in ev.DEFAULT_EPS)
    p.add_argument("--eps", default=eps, help=f"comma-separated threat radii (default {eps})")
    p.add_argument("--norm", default="linf", help="linf or l2")
    p.add_argument("--n", type=int, default=ev.DEFAULT_N, help="first N examples of the split")
    p.add_argument("--split", default="test", help="train or test")
    p.add_argument("--dataset", default=None, help="default: the checkpoint's dataset")
    p.add_argument("--data-root", default=None)
    p.add_argument("--steps", type=int, default=ev.DEFAULT_STEPS, help="iterations of PGD/APGD")
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--square-queries", type=int, default=ev.DEFAULT_SQUARE_QUERIES,
                   help="Square iterations (on white-box survivors)")
    p.add_argument("--square-on-all", action="store_true", help="run Square on every example and report its accuracy")
    p.add_argument("--apgd-on-survivors", action="store_true",
                   help="run APGD only on the examples our attacks did not break (much cheaper; the same worst case "
                   "up to APGD's random start, which ART draws per batch: see docs/attacks.md, Cascades)")
    p.add_argument("--attacks", default=None, help=f"comma-separated subset of the suite: {', '.join(ev.SUITE_LABELS)}")
    p.add_argument("--min-l2", default="deepfool", help=f"{', '.join(ev.MIN_L2_CHOICES)} or none")
    p.add_argument("--min-l2-n", type=int, default=ev.DEFAULT_MIN_L2_N, help="examples for the median minimal L2 perturbation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=ev.DEFAULT_BATCH_SIZE)
    p.add_argument("--json", default=None, help="write the report to this JSON file")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda, then mps, then cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_evaluate(a: argparse.Namespace) -> int:
    from .evaluate import evaluate_checkpoint, parse_eps_list, save_report

    eps = parse_eps_list(a.eps)
    if a.threads is not None:
        check_int("--threads", a.threads, 1)
        import torch

        torch.set_num_threads(a.threads)
    attacks = [s.strip() for s in a.attacks.split(",") if s.strip()] if a.attacks else None
    min_l2 = None if a.min_l2 == "none" else a.min_l2
    suite = dict(norm=a.norm, n=a.n, split=a.split, data_root=a.data_root, steps=a.steps, restarts=a.restarts,
                 square_queries=a.square_queries, square_on_all=a.square_on_all, apgd_on_all=not a.apgd_on_survivors,
                 attacks=attacks, min_l2=min_l2, min_l2_n=a.min_l2_n, seed=a.seed, device=a.device,
                 batch_size=a.batch_size, progress=not a.quiet)
    dataset = a.data or a.dataset
    own = own_model_args(a, dataset)
    if own is not None:
        from .weights import evaluate_weights

        arch, weights, data = own.pop("arch"), own.pop("weights"), own.pop("dataset")
        report = evaluate_weights(arch, weights, data, eps, **own, **suite)
    else:
        report = evaluate_checkpoint(a.checkpoint, eps, dataset=dataset, **suite)
    print(report.summary())
    if a.json:
        print(f"report written to {save_report(report, a.json)}")
    return 0


def _add_attack(sub: argparse._SubParsersAction) -> None:
    """``attack``: one attack on the first N examples; prints success and perturbation sizes."""
    from .attacks import AMP, ATTACKS, NORMS, OBJECTIVES, AttackSpec

    d = AttackSpec()
    p = sub.add_parser("attack", help="run one attack on a checkpoint (optionally save x_adv and the trajectory)",
                       description="Run one attack (ours or ART's) on the first N test examples of a checkpoint's dataset, "
                       "or of a network of your own (--arch with --weights and --dataset).")
    p.set_defaults(handler=cmd_attack)
    _add_own_model_flags(p)
    p.add_argument("--dataset", default=None, help="default: the checkpoint's dataset (required with --arch)")
    p.add_argument("--attack", default=d.attack, help=f"one of {', '.join(ATTACKS)}")
    p.add_argument("--eps", type=float, default=d.eps, help="threat radius")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--norm", default=d.norm, help=f"one of {', '.join(NORMS)}")
    p.add_argument("--objective", default=d.objective, help=f"one of {', '.join(OBJECTIVES)}")
    p.add_argument("--target", type=int, default=None, help="target class (targeted attack)")
    p.add_argument("--restarts", type=int, default=d.restarts)
    p.add_argument("--step-size", type=float, default=None)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--split", default="test")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--early-exit", action="store_true", help="native attacks: stop attacking an example once the model "
                   "confirms it is broken (same broken examples, less work; its x_adv is the first confirmed success)")
    p.add_argument("--save", default=None, help="write x_adv, pred, success (and the trajectory) to this .safetensors file")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda, then mps, then cpu")
    p.add_argument("--amp", default=d.amp, help=f"{' or '.join(AMP)}: native attacks' gradients under bfloat16 "
                   "autocast (about 2x faster on AMX CPUs and GPUs); success is always judged in float32")


def _check_fits(model: Any, dataset: str) -> None:
    """A checkpoint attacked on another dataset must take its input shape and classes."""
    from .data import dataset_info

    info = dataset_info(dataset)
    if tuple(model.spec.in_shape) != tuple(info.in_shape) or model.num_classes != info.num_classes:
        raise ValueError(f"--dataset={dataset!r} has inputs {tuple(info.in_shape)} and {info.num_classes} classes; the "
                         f"checkpoint takes {tuple(model.spec.in_shape)} and {model.num_classes}.")


def cmd_attack(a: argparse.Namespace) -> int:
    from .attacks import run_attack, save_attack
    from .checkpoint import load_model_with_metadata
    from .data import load_dataset
    from .train import resolve_device

    check_int("--n", a.n, 1)
    dataset = a.data or a.dataset
    own = own_model_args(a, dataset)
    if own is not None:
        from .weights import load_for_dataset

        model = load_for_dataset(**own)
    else:
        model, meta = load_model_with_metadata(a.checkpoint)
        dataset = dataset or meta.get("dataset") or ""
        _check_fits(model, dataset)
    device = resolve_device(a.device)
    model.to(device)
    ds = load_dataset(dataset, a.split, limit=a.n)
    res = run_attack(model, ds.x, ds.y, a.attack, eps=a.eps, steps=a.steps, norm=a.norm, objective=a.objective,
                     target=a.target, step_size=a.step_size, restarts=a.restarts, record=a.save is not None, seed=a.seed,
                     amp=a.amp, early_exit=a.early_exit)
    l2, linf = res.perturbation(ds.x)
    clean = float((model.predict(ds.x.to(device)).cpu() == ds.y).float().mean())
    kind = f"targeted to class {a.target}" if a.target is not None else "untargeted"
    print(f"{a.attack} ({kind}, {a.norm} eps={a.eps:g}, objective={a.objective}) on {len(ds)} {ds.name} {a.split} examples")
    print(f"clean accuracy {clean:.4f}  adversarial accuracy {float((res.pred == ds.y).float().mean()):.4f}  "
          f"success rate {float(res.success.float().mean()):.4f}")
    print(f"perturbation: median L2 {float(l2.median()):.4f}  max L-inf {float(linf.max()):.4f}")
    if a.save:
        print(f"saved to {save_attack(a.save, ds.x, ds.y, res)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m gccs_core", description="GCCS loss: train, inspect and attack latent classifiers.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    _add_train(sub)
    _add_evaluate(sub)
    _add_attack(sub)
    p = sub.add_parser("info", help="print a checkpoint's metadata and metrics")
    p.set_defaults(handler=cmd_info)
    p.add_argument("path", help="a .safetensors checkpoint or a run folder")
    p.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    p = sub.add_parser("download", help="download a torchvision dataset (needs internet)")
    p.set_defaults(handler=cmd_download)
    p.add_argument("--dataset", choices=[k for k, v in DATASETS.items() if not v.offline], required=True)
    p.add_argument("--data-root", default=None)
    p = sub.add_parser("study", add_help=False, help="the GCCS study: run | plan | report (see python -m gccs_core.study)")
    p.set_defaults(handler=cmd_study)
    p.add_argument("study_args", nargs=argparse.REMAINDER)
    return parser


def cmd_study(a: argparse.Namespace) -> int:
    """Delegates to ``python -m gccs_core.study`` (gccs_core/study/main.py)."""
    from .study.main import main as study_main

    return study_main(a.study_args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"{parser.prog} {args.command}: training stopped: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130
