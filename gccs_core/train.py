"""Training: one loop that reads top to bottom (config -> data -> model -> epochs -> checkpoint).

``train(config, callbacks, out_dir, resume)`` trains any loss on any dataset. Determinism: the model
is initialised from ``seed``; epoch ``e`` reseeds the RNG with ``(seed, e)`` before shuffling, so a
run resumed at an epoch boundary follows exactly the same path as an uninterrupted one (on CPU).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import distributed
from .attacks import OBJECTIVES, pgd_linf
from .checkpoint import (
    MODEL_FILE,
    TRAINING_FILE,
    load_training_checkpoint,
    save_model,
    save_training_checkpoint,
    write_metadata_json,
)
from .data import DATASETS, Dataset, dataset_info, load_dataset
from .files import read_checkpoint_header
from .losses import LOSSES, build_loss, loss_parameters
from .models import ENCODERS, LatentClassifier, ModelSpec, build_model, eval_mode
from .validation import check_bool, check_choice, check_int, check_number

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda", "mps")
AMP_DTYPES: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
RANK_SEED_OFFSET = 7919
"""Under torchrun, process ``r`` draws its adversarial-training random starts from ``epoch seed + r * RANK_SEED_OFFSET``."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint (previous epoch) is kept."""


@dataclass
class TrainConfig:
    """Every training choice, with its default. Saved in every checkpoint."""

    # data
    dataset: str = "digits"  # digits | mnist5k | mnist | fashion-mnist | cifar10 | cifar100 | svhn
    data_root: str | None = None  # torchvision datasets folder (default $GCCS_DATA or ~/.cache/gccs/data)
    download: bool = False  # fetch a torchvision dataset that is not on disk (needs internet)
    limit_train: int | None = None  # use only the first N training examples (quick experiments)
    augment: bool = False  # random shifts of up to 2 px (28x28) / crop + flip (32x32)
    # model
    encoder: str | None = None  # mlp | cnn | resnet18; None = the dataset's default
    latent_dim: int = 16  # d, the latent dimension; must be >= K-1 for simplex losses
    loss: str = "gccs"  # gccs | ce | mmc | center
    loss_params: dict[str, float] = field(default_factory=dict)  # e.g. {"sigma": 1.0, "radius": 10.0}
    # optimisation
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adamw"  # adamw | adam | sgd (momentum 0.9, nesterov)
    lr: float = 3e-3  # peak learning rate
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine (linear warm-up over warmup_epochs, then cosine to 0) | constant
    warmup_epochs: float = 0.5
    grad_clip: float | None = 5.0  # max global gradient norm; None disables
    # adversarial training (Madry et al. 2018): PGD on the class scores, L-inf
    adv_train: bool = False
    adv_eps: float = 0.3
    adv_steps: int = 7
    adv_step_size: float | None = None  # default 2.5 * eps / steps
    adv_objective: str = "ce"  # ce | margin
    # system
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    amp: str = "none"  # none | bf16 | fp16: autocast of the encoder (fp16 with a gradient scaler, CUDA only)
    sync_batchnorm: bool = True  # several processes (torchrun): batch norm with the global batch's statistics

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str):  # a list or dict would otherwise fail as "unhashable", naming nothing
            check_choice("dataset", self.dataset, tuple(DATASETS))
        dataset_info(self.dataset)  # raises with the allowed names
        check_choice("loss", self.loss, tuple(LOSSES))
        if self.encoder is not None:
            check_choice("encoder", self.encoder, tuple(ENCODERS))
        for name in ("download", "augment", "adv_train", "sync_batchnorm"):
            check_bool(name, getattr(self, name))
        if self.data_root is not None and not isinstance(self.data_root, (str, os.PathLike)):
            raise ValueError(f"data_root={self.data_root!r} is invalid: it must be a folder path or None.")
        if self.data_root is not None:
            self.data_root = os.fspath(self.data_root)  # a Path must survive json.dumps into the checkpoint
        if not isinstance(self.loss_params, dict) or not all(isinstance(k, str) for k in self.loss_params):
            raise ValueError(f"loss_params={self.loss_params!r} is invalid: it must map parameter names to numbers.")
        allowed = loss_parameters(self.loss)
        bad = sorted(set(self.loss_params) - set(allowed))
        if bad:
            raise ValueError(f"loss {self.loss!r} does not take {', '.join(bad)}; allowed: {', '.join(allowed) or 'none'}.")
        check_int("latent_dim", self.latent_dim, 1, 4096)  # 4096: the largest a checkpoint may hold
        for name in ("epochs", "batch_size", "adv_steps"):
            check_int(name, getattr(self, name), 1)
        if self.limit_train is not None:
            check_int("limit_train", self.limit_train, 1)
        for name, options in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("device", DEVICES),
                              ("amp", tuple(AMP_DTYPES)), ("adv_objective", OBJECTIVES)):
            check_choice(name, getattr(self, name), options)
        check_number("lr", self.lr, 0.0, open_low=True)
        for name in ("weight_decay", "warmup_epochs", "adv_eps"):
            check_number(name, getattr(self, name), 0.0)
        for name in ("adv_step_size", "grad_clip"):
            if getattr(self, name) is not None:
                check_number(name, getattr(self, name), 0.0, open_low=True)
        check_int("seed", self.seed, 0, 2**32 - 1)
        info = dataset_info(self.dataset)
        if self.loss in ("gccs", "mmc") and self.latent_dim < info.num_classes - 1:
            raise ValueError(
                f"latent_dim={self.latent_dim} is too small for loss {self.loss!r} on {self.dataset}: "
                f"a simplex of {info.num_classes} classes needs latent_dim >= {info.num_classes - 1}."
            )
        build_loss(self.loss, info.num_classes, self.latent_dim, **self.loss_params)  # checks the parameter values

    @property
    def resolved_encoder(self) -> str:
        return self.encoder or dataset_info(self.dataset).default_encoder

    def model_spec(self) -> ModelSpec:
        info = dataset_info(self.dataset)
        return ModelSpec(
            encoder=self.resolved_encoder,
            in_shape=info.in_shape,
            num_classes=info.num_classes,
            latent_dim=self.latent_dim,
            loss=self.loss,
            loss_params=dict(self.loss_params),
            mean=info.mean,
            std=info.std,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}.")
        return cls(**values)


# -- progress reporting -----------------------------------------------------------------------


@dataclass(frozen=True)
class StepInfo:
    epoch: int  # 0-based
    step: int  # 0-based within the epoch
    steps_per_epoch: int
    global_step: int
    loss: float
    accuracy: float  # on this batch (clean inputs)
    lr: float
    elapsed_s: float


@dataclass(frozen=True)
class EpochInfo:
    epoch: int  # 0-based
    epochs: int
    train_loss: float
    train_accuracy: float
    test_accuracy: float
    elapsed_s: float


class Callback:
    """Override what you need. Returning True from a hook asks training to stop after that point."""

    def on_step(self, info: StepInfo) -> bool | None:
        return None

    def on_epoch(self, info: EpochInfo, model: LatentClassifier) -> bool | None:
        return None


class StopRequest(Callback):
    """Stop a run cleanly at the next epoch boundary when asked, from any thread.

    ``request()`` (or setting ``event``) asks; the epoch in progress finishes, its checkpoint is
    written (marked incomplete) and ``train`` returns with ``stopped_early=True``. Resume the run
    with ``train(..., resume=True)``.
    """

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event if event is not None else threading.Event()

    def request(self) -> None:
        self.event.set()

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def on_epoch(self, info: EpochInfo, model: LatentClassifier) -> bool:
        return self.event.is_set()


@dataclass
class TrainResult:
    model: LatentClassifier
    config: TrainConfig
    history: list[dict[str, float]]
    metrics: dict[str, float]
    out_dir: Path | None
    stopped_early: bool = False


# -- helpers ----------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is missing is an error."""
    check_choice("device", name, DEVICES)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA device is available; use --device cpu or auto.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device='mps' was requested but MPS is not available; use --device cpu or auto.")
    return torch.device(name)


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float, schedule: str) -> float:
    """Learning rate at ``step``: linear warm-up, then constant or cosine decay to 0."""
    if step < warmup_steps:  # warm-up: from peak/warmup to peak
        return peak * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)  # cosine: peak -> 0
    return 0.5 * peak * (1.0 + math.cos(math.pi * min(1.0, progress)))


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random integer shifts (up to 2 px for <= 28 px images, 4 px + horizontal flip for 32x32 colour)."""
    n, c, h, w = x.shape
    pad = 4 if (c == 3 and h >= 32) else 2
    padded = F.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)  # (n, h)
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)  # (n, w)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if c == 3:
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out.contiguous()


@torch.no_grad()
def accuracy(model: LatentClassifier, data: Dataset, device: torch.device, batch_size: int = 512) -> float:
    """Clean accuracy in eval mode (the model's previous mode is restored)."""
    correct = 0
    with eval_mode(model):
        for i in range(0, len(data), batch_size):
            xb, yb = data.x[i : i + batch_size].to(device), data.y[i : i + batch_size].to(device)
            correct += int((model(xb).argmax(1) == yb).sum())
    return correct / max(1, len(data))


def make_optimizer(model: LatentClassifier, config: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on biases, norm layers and the fixed/learned centres.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "centers" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.AdamW(groups, lr=config.lr)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch + 1


# -- the loop ---------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    callbacks: list[Callback] | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    epochs: int | None = None,
) -> TrainResult:
    """Train a latent classifier; checkpoint every epoch into ``out_dir`` when given.

    ``resume=True`` continues the run saved in ``out_dir`` (its stored config wins, except device).
    ``epochs`` (with ``resume`` only) continues it to that many epochs in total, e.g. a finished
    5-epoch run to 8; the learning-rate schedule is then that of a run planned for ``epochs``, so
    only ``epochs`` equal to the planned count is an exact resume.
    Raises ``TrainingDiverged`` on a NaN/inf loss, keeping the previous epoch's checkpoint.

    Launched by ``torchrun --nproc_per_node N`` (or inside an existing process group), the N processes
    train one model data-parallel on the same global batches (see distributed.py); only rank 0 runs the
    callbacks and writes files.
    """
    if epochs is not None and not resume:
        raise ValueError(f"epochs={epochs!r} is for resume=True only; set TrainConfig.epochs for a new run.")
    if epochs is not None:
        check_int("epochs", epochs, 1)
    ctx = distributed.setup(resolve_device(config.device))
    result = _train(config, list(callbacks or []), out_dir, resume, ctx, epochs)
    distributed.teardown(ctx)  # after success only: a process that failed must not wait for the others (torchrun ends them)
    return result


def resume_config(config: TrainConfig, out_dir: str | os.PathLike | None, epochs: int | None = None) -> TrainConfig:
    """The configuration a resumed run continues with: the one stored in ``out_dir``, on ``config``'s device.

    The stored configuration decides everything but the device (a run may move machines) and, when
    given, the total ``epochs``, which may not be fewer than the epochs already done. Reads the
    training checkpoint's header only.
    """
    ckpt_path = Path(out_dir) / TRAINING_FILE if out_dir is not None else None
    if ckpt_path is None or not ckpt_path.exists():
        raise FileNotFoundError(f"cannot resume: no {TRAINING_FILE} in {out_dir}. Start the run without --resume.")
    _, meta = read_checkpoint_header(ckpt_path)
    stored = {**meta["config"], "device": config.device}
    if epochs is not None:
        done = int(meta.get("epoch", 0))
        if epochs < done:
            raise ValueError(f"epochs={epochs} is fewer than the {done} epochs already done in {out_dir}; "
                             f"ask for {done} or more.")
        stored["epochs"] = epochs
    return TrainConfig.from_dict(stored)


def _optimizer_step(loss: torch.Tensor, model: LatentClassifier, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, grad_clip: float | None) -> None:
    """Backward, optional gradient clipping and the optimizer step (through the fp16 scaler when it is on)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler.is_enabled():  # amp == "fp16"
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()


def _check_finite(loss_value: float, epoch: int, step: int, lr: float, out: Path | None, config: TrainConfig) -> None:
    """Stop with TrainingDiverged, naming where and what to change, once the loss is NaN or infinite."""
    if not math.isfinite(loss_value):
        raise TrainingDiverged(
            f"loss became {loss_value} at epoch {epoch + 1}, step {step + 1} (lr={lr:.3g}); "
            f"the last good checkpoint is kept{f' in {out}' if out else ''}. Lower the learning rate "
            f"or check the loss parameters ({config.loss_params})."
        )


def _save_epoch(out: Path, model: LatentClassifier, optimizer: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    """The resumable training checkpoint and the deployable model after an epoch (each written atomically)."""
    save_training_checkpoint(out / TRAINING_FILE, model, optimizer, meta)
    save_model(model, out / MODEL_FILE, meta)


def _batch(data: Dataset, idx: torch.Tensor, config: TrainConfig, g: torch.Generator,
           ctx: distributed.DistContext) -> tuple[torch.Tensor, torch.Tensor]:
    """One training batch on the device: augmented (the whole global batch on every process, so ``g`` stays in
    step), then this process's rows of it (all of them for one process)."""
    xb, yb = data.x[idx], data.y[idx]
    if config.augment:
        xb = augment_batch(xb, g)
    return distributed.shard(xb, ctx).to(ctx.device, non_blocking=True), yb.to(ctx.device, non_blocking=True)


def _final_metrics(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's metrics: the last epoch's accuracies and time (NaN / 0 when no epoch ran)."""
    final = history[-1] if history else {}
    return {"test_accuracy": final.get("test_accuracy", float("nan")),
            "train_accuracy": final.get("train_accuracy", float("nan")),
            "train_time_s": final.get("elapsed_s", 0.0), "epochs_done": len(history)}


def _train(
    config: TrainConfig,
    callbacks: list[Callback],
    out_dir: str | os.PathLike | None,
    resume: bool,
    ctx: distributed.DistContext,
    epochs: int | None = None,
) -> TrainResult:
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / TRAINING_FILE if out else None

    start_epoch, history, elapsed_before = 0, [], 0.0
    if resume:
        config = resume_config(config, out_dir, epochs)
    elif ckpt_path is not None and ckpt_path.exists():
        raise FileExistsError(
            f"{out} already holds a run ({TRAINING_FILE}); pass resume=True / --resume or choose another folder."
        )

    device = ctx.device
    distributed.check_batch_size(config.batch_size, ctx)
    amp_dtype = AMP_DTYPES[config.amp]
    if config.amp == "fp16" and device.type != "cuda":
        raise ValueError(f"amp='fp16' needs a CUDA device (the run is on {device.type}); use --amp bf16 or none.")
    torch.manual_seed(config.seed)
    with distributed.main_first(ctx, active=config.download):  # one process downloads, the others then read
        train_data = load_dataset(config.dataset, "train", config.data_root, config.download, config.limit_train)
        test_data = load_dataset(config.dataset, "test", config.data_root, config.download)
    model = build_model(config.model_spec()).to(device)
    optimizer = make_optimizer(model, config)

    if resume and ckpt_path is not None:
        meta = load_training_checkpoint(ckpt_path, model, optimizer)
        start_epoch, history = int(meta["epoch"]), list(meta["history"])
        elapsed_before = float(meta.get("train_time_s", 0.0))
        model.to(device)
    embed, undo_wrap = distributed.wrap_for_training(model, ctx, config.sync_batchnorm)  # model.embed, or DDP around it
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    local_test = distributed.shard_dataset(test_data, ctx)

    n = len(train_data)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    base_meta = {
        "config": config.to_dict(),
        "dataset": config.dataset,
        "class_names": train_data.class_names,
        "seed": config.seed,
        "n_train": n,
        "n_test": len(test_data),
    }
    t0 = time.perf_counter()
    stopped = False

    for epoch in range(start_epoch, config.epochs):
        g = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch))
        torch.manual_seed(_epoch_seed(config.seed, epoch))
        perm = torch.randperm(n, generator=g)
        g_attack = (torch.Generator().manual_seed(_epoch_seed(config.seed, epoch) + RANK_SEED_OFFSET * ctx.rank)
                    if ctx.enabled else g)
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: no sync per step
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = 0
        for step in range(steps_per_epoch):
            global_step = epoch * steps_per_epoch + step
            lr = lr_at(global_step, total_steps, warmup_steps, config.lr, config.schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr

            xb, yb = _batch(train_data, perm[step * config.batch_size : (step + 1) * config.batch_size], config, g, ctx)
            with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext():
                if config.adv_train:
                    model.eval()  # attack the deployed model (batch-norm statistics frozen)
                    xb = pgd_linf(model, xb, distributed.shard(yb, ctx), config.adv_eps, config.adv_steps,
                                  config.adv_step_size, config.adv_objective, generator=g_attack)
                    model.train()
                z = embed(xb)
            z = distributed.gather_rows(z.float(), len(yb), ctx)  # latents of the global batch, gradients kept
            loss, scores = model.head(z, yb), model.head.scores(z)  # loss in float32 (GCCS statistics in float64)
            loss_value = float(loss.detach())  # the step's one host read: the divergence check (and callbacks)
            _check_finite(loss_value, epoch, step, lr, out, config)
            _optimizer_step(loss, model, optimizer, scaler, config.grad_clip)

            with torch.no_grad():
                batch_correct = (scores.argmax(1) == yb).sum()
                loss_sum += loss.detach().double() * len(yb)
                correct += batch_correct
            seen += len(yb)
            if callbacks or ctx.enabled:  # StepInfo (and its host reads) only for someone who reads it
                info = StepInfo(epoch, step, steps_per_epoch, global_step, loss_value, int(batch_correct) / len(yb), lr,
                                elapsed_before + time.perf_counter() - t0)
                if distributed.agree(ctx.is_main and any([bool(cb.on_step(info)) for cb in callbacks]), ctx):
                    stopped = True
                    break

        test_acc = distributed.weighted_mean(accuracy(model, local_test, device), len(local_test), ctx)
        elapsed = elapsed_before + time.perf_counter() - t0
        record = {"epoch": epoch + 1, "train_loss": float(loss_sum) / max(1, seen), "train_accuracy": int(correct) / max(1, seen),
                  "test_accuracy": test_acc, "elapsed_s": elapsed}
        history.append(record)
        if out is not None and ctx.is_main:
            _save_epoch(out, model, optimizer, {
                **base_meta, "epoch": epoch + 1, "history": history, "train_time_s": elapsed,
                "metrics": {"test_accuracy": test_acc, "train_accuracy": record["train_accuracy"]},
                "complete": epoch + 1 == config.epochs and not stopped})
        einfo = EpochInfo(epoch, config.epochs, record["train_loss"], record["train_accuracy"], test_acc, elapsed)
        if distributed.agree(ctx.is_main and any([bool(cb.on_epoch(einfo, model)) for cb in callbacks]), ctx) or stopped:
            stopped = True
            break

    undo_wrap()
    model.eval()
    metrics = _final_metrics(history)
    if out is not None and ctx.is_main:
        write_metadata_json(out, {**base_meta, "metrics": metrics, "history": history,
                                  "spec": model.spec.to_dict()})
    return TrainResult(model, config, history, metrics, out, stopped)
