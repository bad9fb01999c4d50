"""The job graph of a study, in the order that makes partial results most informative.

Order (lowest tier first; inside a tier, configuration by configuration):

0. seed 0 of every plain configuration: weight-decay (and lam) selection, training, then the weak and strong
   protocols on the first chunk of test examples;
1. the other seeds of every plain configuration on the same chunk (so every difference gets its
   interval over seeds early), and the seed-0 diagnostics;
2. the AT arm, seed 0: training and the strong protocol on the first ``first_n`` examples;
3. the AT arm's other seeds, the other chunks up to ``first_n``, the other seeds' diagnostics;
4. the Carlini checks (accuracy against iterations) and the minimum-norm attack (FAB), seed 0 first;
5. the remaining chunks up to ``n_eval`` examples;
6. standard AutoAttack on the first ``n_autoattack`` examples, seed 0 first.
"""

from __future__ import annotations

from typing import Any

from .config import Arm, Job, StudyConfig, at_arms, check_readings, plain_arms

STAGES = {"select": 0, "train": 1, "weak": 2, "strong": 3, "diagnostics": 4, "iterations": 5, "minnorm": 6,
          "autoattack": 7}


DEFAULT_LAM = 1.0
"""Every GCCS reading's default pull weight: left out of the job parameters (the keys of runs made before the
lam grid stay valid)."""


def train_config(cfg: StudyConfig, arm: Arm, seed: int, limit_train: int | None = None,
                 weight_decay: float | None = None, lam: float | None = None) -> dict[str, Any]:
    """The TrainConfig fields of one model (``weight_decay``/``lam`` None: chosen later by the selection jobs)."""
    out: dict[str, Any] = {
        "dataset": cfg.dataset, "loss": arm.loss, "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
        "augment": cfg.augment, "latent_dim": cfg.latent_dim, "seed": seed, "device": "cpu",
        "loss_params": {} if arm.sigma is None else {"sigma": arm.sigma, "radius": cfg.radius},
    }
    if lam is not None and lam != DEFAULT_LAM:
        out["loss_params"]["lam"] = lam
    if limit_train is not None:
        out["limit_train"] = limit_train
    if weight_decay is not None:
        out["weight_decay"] = weight_decay
    if arm.adv_train:
        out.update(adv_train=True, adv_eps=cfg.at_eps, adv_steps=cfg.at_steps, adv_objective=arm.adv_train)
    return out


def _chunks(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, stop)) for a in range(start, stop, size)]


def build_jobs(cfg: StudyConfig, available_losses: tuple[str, ...], n_train: int, n_test: int) -> list[Job]:
    """Every job of the study with its dependencies and priority (see the module docstring)."""
    readings = check_readings(cfg.readings, available_losses)
    if not readings:
        raise ValueError(f"none of the readings {', '.join(cfg.readings)} exists in LOSSES ({', '.join(available_losses)}).")
    n_eval = min(cfg.n_eval, n_test)
    first_n = min(cfg.first_n, n_eval)
    n_val = max(1, int(round(cfg.val_fraction * n_train)))
    plain, at = plain_arms(cfg, readings), (at_arms(cfg, readings) if cfg.at_arm else [])
    jobs: list[Job] = []
    select_keys: dict[tuple[str, float | None], list[str]] = {}
    for ai, arm in enumerate(plain):
        keys = []
        grid = [(wd, lam) for wd in cfg.wd_grid for lam in (cfg.lam_grid if arm.prototype else (None,))]
        for wd, lam in grid:
            j = Job("select", {"config": train_config(cfg, arm, cfg.seeds[0], n_train - n_val, wd, lam),
                               "val": [n_train - n_val, n_train], "arm": arm.name},
                    (0, 0, ai, STAGES["select"], wd, lam or 0.0),
                    label=f"select {arm.name} wd={wd:g}" + (f" lam={lam:g}" if lam is not None else ""))
            jobs.append(j)
            keys.append(j.key)
        select_keys[(arm.loss, arm.sigma)] = keys

    train_keys: dict[tuple[str, int], str] = {}
    arm_index = {arm.name: i for i, arm in enumerate(plain + at)}
    for si, seed in enumerate(cfg.seeds):
        for arm in plain + at:
            is_at = bool(arm.adv_train)
            tier = (2 if si == 0 else 3) if is_at else (0 if si == 0 else 1)
            j = Job("train", {"config": train_config(cfg, arm, seed), "arm": arm.name,
                              "reading": arm.loss, "sigma": arm.sigma, "adv_train": arm.adv_train, "seed": seed},
                    (tier, si, arm_index[arm.name], STAGES["train"], 0), deps=select_keys[(arm.loss, arm.sigma)],
                    label=f"train {arm.name} seed {seed}")
            jobs.append(j)
            train_keys[(arm.name, seed)] = j.key

    def twin_of(arm: Arm) -> str | None:
        if arm.loss == "ce":
            return None
        return "ce-at-ce" if arm.adv_train else "ce"

    for si, seed in enumerate(cfg.seeds):
        for arm in plain + at:
            model = train_keys[(arm.name, seed)]
            ai = arm_index[arm.name]
            is_at = bool(arm.adv_train)
            eps = list(cfg.eps) + (list(cfg.at_extra_eps) if is_at else [])
            twin = twin_of(arm)
            twin_key = train_keys[(twin, seed)] if twin else None
            base = {"model": model, "arm": arm.name, "seed": seed}
            protocols = ["strong"] if is_at else ["weak", "strong"]
            for a, b in _chunks(0, n_eval, cfg.chunk):
                early = b <= first_n
                if early and a == 0:
                    tier = (2 if si == 0 else 3) if is_at else (0 if si == 0 else 1)
                elif early:
                    tier = 3
                else:
                    tier = 5
                for proto in protocols:
                    params: dict[str, Any] = {**base, "protocol": proto, "chunk": [a, b], "eps": eps}
                    deps = [model]
                    if proto == "weak":
                        params.update(steps=40, mim_steps=10, cw_steps=cfg.cw_steps, square_queries=cfg.weak_square_queries)
                    else:
                        params.update(steps=cfg.steps, restarts=cfg.restarts, square_queries=cfg.square_queries,
                                      twin=twin_key)
                        if twin_key:
                            deps.append(twin_key)
                    jobs.append(Job(proto, params, (tier, si, ai, STAGES[proto], a), deps=deps,
                                    label=f"{proto} {arm.name} seed {seed} examples {a}-{b}"))
            nd = min(cfg.n_diagnostics, n_eval)
            jobs.append(Job("diagnostics", {**base, "protocol": "diagnostics", "chunk": [0, nd], "eps": eps,
                                            "noise_draws": cfg.noise_draws},
                            ((1 if not is_at else 2) if si == 0 else 3, si, ai, STAGES["diagnostics"], 0), deps=[model],
                            label=f"diagnostics {arm.name} seed {seed}"))
            jobs.append(Job("minnorm", {**base, "protocol": "minnorm", "chunk": [0, min(cfg.n_minnorm, n_eval)],
                                        "steps": cfg.fab_steps},
                            (4, si, ai, STAGES["minnorm"], 0), deps=[model], label=f"minnorm {arm.name} seed {seed}"))
            for a, b in _chunks(0, min(cfg.n_autoattack, n_eval), cfg.autoattack_chunk):
                aa_eps = [e for e in eps if cfg.autoattack_eps is None or e in cfg.autoattack_eps]
                jobs.append(Job("autoattack", {**base, "protocol": "autoattack", "chunk": [a, b], "eps": aa_eps,
                                               "version": "standard"},
                                (6, si, a, ai, STAGES["autoattack"]), deps=[model],
                                label=f"autoattack {arm.name} seed {seed} examples {a}-{b}"))
    # Carlini check: accuracy against iterations for one model per reading (seed 0, first scale) and CE
    seen: set[str] = set()
    for arm in plain:
        if arm.loss in seen:
            continue
        seen.add(arm.loss)
        model = train_keys[(arm.name, cfg.seeds[0])]
        jobs.append(Job("iterations", {"model": model, "arm": arm.name, "seed": cfg.seeds[0], "protocol": "iterations",
                                       "chunk": [0, min(cfg.iteration_n, n_eval)], "eps": [cfg.iteration_eps],
                                       "budgets": list(cfg.iteration_budgets)},
                        (4, 0, arm_index[arm.name], STAGES["iterations"], 0), deps=[model],
                        label=f"iterations {arm.name} seed {cfg.seeds[0]}"))
    jobs.sort(key=lambda j: j.priority)
    return jobs


def select_jobs(jobs: list[Job], kinds: tuple[str, ...] | None = None,
                arms: tuple[str, ...] | None = None) -> list[Job]:
    """The jobs of the given ``kinds`` (see STAGES) and ``arms`` (configuration names, e.g. ``gccs-s1-at-margin``),
    plus every job they depend on, in the plan's order: a run of a few jobs first never changes what a job computes
    (its key), only when it runs. Unknown names raise ``ValueError`` listing what exists."""
    known_arms = sorted({j.params["arm"] for j in jobs if "arm" in j.params})
    for flag, given, allowed in (("--kinds", kinds, sorted(STAGES)), ("--arms", arms, known_arms)):
        bad = [v for v in given or () if v not in allowed]
        if bad:
            raise ValueError(f"{flag} {', '.join(bad)} unknown: the plan has {', '.join(allowed)}.")
    wanted = {j.key for j in jobs if (kinds is None or j.kind in kinds)
              and (arms is None or j.params.get("arm") in arms)}
    by_key = {j.key: j for j in jobs}
    stack = list(wanted)
    while stack:
        for d in by_key[stack.pop()].deps:
            if d not in wanted and d in by_key:
                wanted.add(d)
                stack.append(d)
    return [j for j in jobs if j.key in wanted]
