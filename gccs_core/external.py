"""Any ``nn.Module`` that returns logits, seen as a ``LatentClassifier`` (``LatentClassifier.from_module``).

The network is cut in two at the latent layer, so the native attacks, ART, ``evaluate_robustness``,
projections and the app use it unchanged:

* ``embed(x)`` runs the network up to the latent layer and returns its output flattened to (N, d);
* ``scores_from_latent(z)`` reshapes z back and runs *the rest of the network* to the logits, so
  ``scores_from_latent(embed(x)) == module(x)`` for any latent layer, not only the head's input;
* ``model(x)`` is the module's logits (the scores).

The cut is made with ``torch.fx``: ``latent_layer`` names a submodule (``avgpool``, ``layer3``,
``features.4``); its output is the latent. The default (``None``) is the *input* of the last
``nn.Linear`` the network calls, its classification head. A layer is refused with a clear error when
the rest of the network also reads something computed before it (a skip connection around it),
because then the logits are not a function of the latent alone. A module that ``torch.fx`` cannot
trace (data-dependent Python control flow) is still accepted with the default latent: a forward
hook reads the head's input and ``scores_from_latent`` applies the head, after checking on a probe
batch that the head's output is the module's output.

Prototypes: none by default (like a cross-entropy model; projections then use the class means of
the points they show). ``fit_prototypes(x, y)`` sets the class means of the latent as centres (and
their pooled within-class std as sigma), which enables the latent attack; ``prototypes="linear"``
uses the head's weight rows (the class directions) when the latent is the head's input.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from difflib import get_close_matches
from typing import Any

import torch
from torch import fx, nn

from .models import LatentClassifier, Normalize

PROBE_BATCH = 2
PROBE_TOL = 1e-4
PROTOTYPE_CHOICES = (None, "linear")


class ExternalModelError(ValueError):
    """A module (or its arguments) cannot be wrapped as a latent classifier."""


@dataclass
class ExternalSpec:
    """What describes a wrapped model; the fields the library reads from a native ``ModelSpec`` are all here."""

    encoder: str  # "external:<arch>" (the architecture name or the module's class)
    in_shape: tuple[int, int, int]
    num_classes: int
    latent_dim: int
    latent_layer: str  # the module whose output is the latent, or "<name>:input" for the head's input
    latent_shape: tuple[int, ...]
    loss: str = "external"
    loss_params: dict[str, float] = field(default_factory=dict)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    value_range: tuple[float, float] = (0.0, 1.0)
    mode: str = "fx"  # fx (the network is cut in two) or hook (the head's input is read by a hook)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("in_shape", "latent_shape", "mean", "std", "value_range"):
            d[k] = list(d[k])
        return d


class _HeadInput(nn.Module):
    """Runs the whole module and returns the input of its head (hook mode, for untraceable modules)."""

    def __init__(self, module: nn.Module, head_name: str) -> None:
        super().__init__()
        self.module = module
        self.head_name = head_name

    def head(self) -> nn.Module:
        return self.module.get_submodule(self.head_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen: list[torch.Tensor] = []

        def grab(_m: nn.Module, args: tuple[Any, ...]) -> None:
            seen.append(args[0])

        handle = self.head().register_forward_pre_hook(grab)  # per call, so copies of this module stay independent
        try:
            self.module(x)
        finally:
            handle.remove()
        return seen[-1]


class ExternalClassifier(LatentClassifier):
    """A wrapped module: ``normalize -> body (to the latent) -> rest (to the logits)``."""

    def __init__(self, spec: ExternalSpec, normalize: Normalize, encoder: nn.Module, rest: nn.Module | None) -> None:
        nn.Module.__init__(self)  # not LatentClassifier.__init__: the parts come ready-made
        self.spec = spec  # type: ignore[assignment]
        self.normalize = normalize
        self.body = encoder
        self.rest = rest
        self.register_buffer("prototypes", None)
        self._sigma: float | None = None

    @property
    def encoder(self) -> nn.Module:  # type: ignore[override]
        """An empty module: ``attack_copy`` folds batch norm into the layer *named* before it, which is
        only certain for the library's own encoders, so wrapped networks are attacked unfolded
        (the same function, somewhat slower). The layers up to the latent are ``self.body``."""
        return nn.Module()

    @property
    def centers(self) -> torch.Tensor | None:
        return self.prototypes

    @property
    def sigma(self) -> float | None:
        return self._sigma

    @property
    def is_prototype(self) -> bool:
        return False  # the decision is the module's own logits, never a nearest vertex

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.body(self.normalize(x)).flatten(1)

    def scores_from_latent(self, z: torch.Tensor) -> torch.Tensor:
        z = z.reshape(z.shape[0], *self.spec.latent_shape)
        if self.rest is None:
            assert isinstance(self.body, _HeadInput)
            return self.body.head()(z)
        return self.rest(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores_from_latent(self.embed(x))

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy on the module's logits, and the logits."""
        scores = self(x)
        return nn.functional.cross_entropy(scores, y), scores

    @torch.no_grad()
    def fit_prototypes(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Set the centres to the class means of the latent on (x, y) (eval mode); returns them (K, d).

        sigma becomes the pooled within-class standard deviation per latent dimension. Every class
        must occur in ``y``.
        """
        from .models import embed_batched

        y = torch.as_tensor(y).long().cpu()
        k = self.num_classes
        if y.dim() != 1 or len(y) != len(x) or len(y) == 0:
            raise ExternalModelError(
                f"fit_prototypes needs x (N, ...) and labels y (N,); got {tuple(x.shape)} and {tuple(y.shape)}.")
        if int(y.min()) < 0 or int(y.max()) >= k:
            raise ExternalModelError(f"labels must lie in 0..{k - 1}; got values in [{int(y.min())}, {int(y.max())}].")
        counts = torch.bincount(y, minlength=k)
        if bool((counts == 0).any()):
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise ExternalModelError(f"fit_prototypes: class(es) {missing} have no example in y; every class needs one.")
        z, _ = embed_batched(self, x, batch_size)
        z = z.double()
        means = torch.zeros(k, z.shape[1], dtype=torch.float64).index_add_(0, y, z) / counts[:, None]
        within = (z - means[y]).pow(2).sum() / max(1, (len(y) - k) * z.shape[1])
        dev = next(self.parameters()).device
        self.prototypes = means.float().to(dev)
        self._sigma = float(math.sqrt(float(within))) or 1.0
        return self.prototypes

    def set_linear_prototypes(self) -> torch.Tensor:
        """Centres = the head's weight rows (K, d): valid only when the latent is the head's input."""
        head = self._head_linear()
        w = head.weight.detach().clone()
        if tuple(w.shape) != (self.num_classes, self.latent_dim):
            raise ExternalModelError(
                f"prototypes='linear' needs the latent to be the head's input: the head's weight is {tuple(w.shape)}, "
                f"the latent has {self.latent_dim} dimensions and there are {self.num_classes} classes."
            )
        self.prototypes = w
        self._sigma = float(w.norm(dim=1).mean()) / 4.0 or 1.0  # a scale for the latent objective only
        return w

    def _head_linear(self) -> nn.Linear:
        if isinstance(self.body, _HeadInput):
            return self.body.head()  # type: ignore[return-value]
        if isinstance(self.rest, fx.GraphModule):
            mods = [m for n in self.rest.graph.nodes if n.op == "call_module"
                    for m in [self.rest.get_submodule(n.target)]]  # type: ignore[arg-type]
            if len(mods) == 1 and isinstance(mods[0], nn.Linear):
                return mods[0]
        raise ExternalModelError(
            f"prototypes='linear' needs the latent to be the input of the final nn.Linear; latent_layer="
            f"{self.spec.latent_layer!r} is followed by more than one layer. Use fit_prototypes(x, y) instead."
        )


# -- the cut --------------------------------------------------------------------------------------


def _ancestors(node: fx.Node) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = list(node.all_input_nodes)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(n.all_input_nodes)
    return seen


def _trace(module: nn.Module, leaf: str | None) -> fx.Graph:
    class Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return qualname == leaf or super().is_leaf_module(m, qualname)

    return Tracer().trace(module)


def _latent_node(graph: fx.Graph, module: nn.Module, latent_layer: str | None) -> tuple[fx.Node, str]:
    calls = [n for n in graph.nodes if n.op == "call_module"]
    if latent_layer is None:
        heads = [n for n in calls if isinstance(module.get_submodule(n.target), nn.Linear)]  # type: ignore[arg-type]
        if not heads:
            raise ExternalModelError(
                f"{type(module).__name__} calls no nn.Linear, so there is no default latent (the head's input); "
                "name the latent layer with latent_layer='...'."
            )
        head = heads[-1]
        if not isinstance(head.args[0], fx.Node):
            raise ExternalModelError(f"the head {head.target!r} is not fed by a tensor; name latent_layer='...'.")
        return head.args[0], f"{head.target}:input"
    hits = [n for n in calls if n.target == latent_layer]
    if not hits:
        raise ExternalModelError(f"latent_layer={latent_layer!r} exists but is never called in the forward pass.")
    if len(hits) > 1:
        raise ExternalModelError(f"latent_layer={latent_layer!r} is called {len(hits)} times in the forward pass; "
                                 "the latent must be one layer's single output.")
    return hits[0], latent_layer


def _split(module: nn.Module, latent_layer: str | None) -> tuple[fx.GraphModule, fx.GraphModule, str]:
    """(encoder: x -> latent, rest: latent -> logits, the latent's name) by cutting the traced graph."""
    graph = _trace(module, latent_layer)
    cut, name = _latent_node(graph, module, latent_layer)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    required = [p for p in placeholders if not p.args]
    if len(required) != 1:
        raise ExternalModelError(f"{type(module).__name__}.forward takes {len(required)} required inputs; one (x) is needed.")
    output = next(n for n in graph.nodes if n.op == "output")
    encoder_part = _ancestors(cut) | {cut}
    from_input = {n for n in graph.nodes if placeholders[0] in _ancestors(n)} | {placeholders[0]}
    needed = _ancestors(output)
    encoder_part |= set(placeholders)  # the encoder keeps the module's signature
    rest_part = needed - encoder_part
    constants: list[fx.Node] = []
    for node in rest_part:
        for src in node.all_input_nodes:
            if src in encoder_part and src is not cut and src not in from_input:
                constants.append(src)
            elif src in encoder_part and src is not cut:
                raise ExternalModelError(
                    f"latent_layer={name!r} does not cut the network in two: the layers after it also read "
                    f"{src.name!r}, computed before it (a skip connection around it). Choose a layer whose output "
                    "alone determines the logits (for example a whole residual stage or the pooling layer)."
                )
    # constants the rest needs (get_attr nodes and what is computed from them) are recomputed in the rest
    rest_part |= set(constants) | {a for n in constants for a in _ancestors(n)}

    enc_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        if node in encoder_part:
            env[node] = enc_graph.node_copy(node, lambda n: env[n])
    enc_graph.output(env[cut])

    rest_graph = fx.Graph()
    env = {cut: rest_graph.placeholder("z")}
    for node in graph.nodes:
        if node in rest_part and node is not cut:
            env[node] = rest_graph.node_copy(node, lambda n: env[n])
    rest_graph.output(fx.map_arg(output.args[0], lambda n: env[n]))
    return fx.GraphModule(module, enc_graph), fx.GraphModule(module, rest_graph), name


def _last_linear_name(module: nn.Module) -> str:
    names = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ExternalModelError(
            f"{type(module).__name__} has no nn.Linear head, and torch.fx cannot trace it to find a latent layer.")
    return names[-1]


# -- argument checks --------------------------------------------------------------------------------


def _check_shape(input_shape: Any) -> tuple[int, int, int]:
    ok = isinstance(input_shape, (tuple, list)) and len(input_shape) == 3 and all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in input_shape)
    if not ok:
        raise ExternalModelError(f"input_shape={input_shape!r} is invalid: give (C, H, W) with sizes from 1 to 4096.")
    return tuple(input_shape)  # type: ignore[return-value]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_range(value_range: Any) -> tuple[float, float]:
    ok = isinstance(value_range, (tuple, list)) and len(value_range) == 2 and all(_finite(v) for v in value_range)
    if not ok or not value_range[0] < value_range[1]:
        raise ExternalModelError(f"value_range={value_range!r} is invalid: give (low, high) finite numbers with low < high.")
    return float(value_range[0]), float(value_range[1])


def _per_channel(name: str, value: Any, channels: int, default: float) -> tuple[float, ...]:
    if value is None:
        return (default,) * channels
    vals = (value,) if _finite(value) else tuple(value) if isinstance(value, (tuple, list)) else None
    if vals is None or not all(_finite(v) for v in vals) or len(vals) not in (1, channels):
        raise ExternalModelError(f"{name}={value!r} is invalid: give one finite number or one per channel ({channels}).")
    if name == "std" and min(vals) <= 0:
        raise ExternalModelError(f"std={value!r} is invalid: every value must be > 0.")
    return tuple(float(v) for v in vals) * (channels if len(vals) == 1 else 1)


def _check_layer(module: nn.Module, latent_layer: Any) -> None:
    if latent_layer is None:
        return
    names = [n for n, _ in module.named_modules() if n]
    if not isinstance(latent_layer, str) or latent_layer not in names:
        close = get_close_matches(str(latent_layer), names, n=5) or names[:8]
        raise ExternalModelError(
            f"latent_layer={latent_layer!r} is not a submodule of {type(module).__name__}; e.g. {', '.join(close)}"
            f"{' ...' if len(names) > len(close) else ''} (or None for the head's input)."
        )


# -- the wrapper ----------------------------------------------------------------------------------


def wrap_module(
    module: nn.Module,
    latent_layer: str | None = None,
    num_classes: int | None = None,
    input_shape: tuple[int, int, int] | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    mean: float | tuple[float, ...] | None = None,
    std: float | tuple[float, ...] | None = None,
    prototypes: str | None = None,
    arch: str | None = None,
) -> ExternalClassifier:
    """Wrap ``module`` (inputs -> logits) as a ``LatentClassifier``; see the module docstring.

    Args:
        module: any ``nn.Module`` whose ``forward(x)`` returns logits (N, K). Its parameters are
            shared, not copied; the wrapper is returned in eval mode.
        latent_layer: submodule whose output is the latent; None: the input of the last ``nn.Linear``.
        num_classes: K; checked against the module's output (inferred from it when None).
        input_shape: (C, H, W) of the inputs the library feeds (required).
        value_range: the input range the module was trained on; library inputs in [0, 1] are mapped
            to it linearly before ``mean``/``std`` normalisation (per channel, optional).
        prototypes: None, or ``"linear"`` (the head's weight rows; latent must be the head's input).
        arch: the architecture's name, recorded in ``spec.encoder``.
    """
    if not isinstance(module, nn.Module):
        raise ExternalModelError(f"module={type(module).__name__} is not a torch.nn.Module.")
    shape = _check_shape(input_shape)
    lo, hi = _check_range(value_range)
    c = shape[0]
    m = _per_channel("mean", mean, c, 0.0)
    s = _per_channel("std", std, c, 1.0)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2):
        raise ExternalModelError(f"num_classes={num_classes!r} is invalid: it must be an integer >= 2 (or None to infer it).")
    if prototypes not in PROTOTYPE_CHOICES:
        raise ExternalModelError(f"prototypes={prototypes!r} is unknown; allowed: None, 'linear' (or call fit_prototypes).")
    _check_layer(module, latent_layer)
    # x in [0, 1] -> lo + (hi - lo) x -> (. - m) / s, folded into one per-channel Normalize
    normalize = Normalize(tuple((mi - lo) / (hi - lo) for mi in m), tuple(si / (hi - lo) for si in s))
    try:
        encoder, rest, layer_name = _split(module, latent_layer)
        mode = "fx"
    except ExternalModelError:
        raise
    except Exception as err:  # torch.fx raises many types for untraceable Python (control flow on tensors ...)
        if latent_layer is not None:
            raise ExternalModelError(
                f"torch.fx cannot trace {type(module).__name__} ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                "without a trace only the head's input can be the latent: pass latent_layer=None."
            ) from err
        head = _last_linear_name(module)
        encoder, rest, layer_name, mode = _HeadInput(module, head), None, f"{head}:input", "hook"
    module.eval()  # its layers are shared with the wrapper, which is returned in eval mode
    spec = ExternalSpec(encoder=f"external:{arch or type(module).__name__}", in_shape=shape, num_classes=num_classes or 0,
                        latent_dim=1, latent_layer=layer_name, latent_shape=(1,), mean=normalize_values(normalize, "mean"),
                        std=normalize_values(normalize, "std"), value_range=(lo, hi), mode=mode)
    wrapped = ExternalClassifier(spec, normalize, encoder, rest)
    try:
        dev = next(module.parameters()).device
    except StopIteration:
        dev = torch.device("cpu")
    wrapped.to(dev).eval()
    _probe(module, wrapped, num_classes, dev)
    if prototypes == "linear":
        wrapped.set_linear_prototypes()
    return wrapped


def normalize_values(norm: Normalize, which: str) -> tuple[float, ...]:
    return tuple(float(v) for v in getattr(norm, which).flatten())


@torch.no_grad()
def _probe(module: nn.Module, wrapped: ExternalClassifier, num_classes: int | None, dev: torch.device) -> None:
    """Run a probe batch: fixes the latent's shape and K, and checks the cut reproduces the module's logits."""
    spec = wrapped.spec
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((PROBE_BATCH, *spec.in_shape), generator=gen).to(dev)
    xin = wrapped.normalize(x)
    try:
        direct = module(xin)
        z = wrapped.body(xin)
    except Exception as err:  # a wrong input_shape shows up as any of torch's shape errors
        raise ExternalModelError(
            f"{type(module).__name__} fails on inputs of shape (N, {', '.join(map(str, spec.in_shape))}): "
            f"{type(err).__name__}: {str(err).splitlines()[0][:200]}. Check input_shape."
        ) from err
    if not torch.is_tensor(direct) or direct.dim() != 2:
        got = tuple(direct.shape) if torch.is_tensor(direct) else type(direct).__name__
        raise ExternalModelError(f"{type(module).__name__} returns {got}; expected logits of shape (N, num_classes).")
    k = int(direct.shape[1])
    if num_classes is not None and k != num_classes:
        raise ExternalModelError(f"num_classes={num_classes} but {type(module).__name__} returns {k} logits per input.")
    if k < 2:
        raise ExternalModelError(f"{type(module).__name__} returns {k} logit per input; a classifier needs >= 2.")
    if not torch.is_tensor(z) or z.dim() < 2 or z.shape[0] != PROBE_BATCH:
        raise ExternalModelError(f"latent layer {spec.latent_layer!r} does not output a batch of tensors (N, ...).")
    spec.num_classes, spec.latent_shape, spec.latent_dim = k, tuple(int(v) for v in z.shape[1:]), int(z[0].numel())
    again = wrapped.scores_from_latent(z.flatten(1))
    if again.shape != direct.shape or not torch.allclose(again, direct, rtol=PROBE_TOL, atol=PROBE_TOL):
        raise ExternalModelError(
            f"the network cut at {spec.latent_layer!r} does not reproduce {type(module).__name__}'s logits "
            f"(max difference {float((again - direct).abs().max()) if again.shape == direct.shape else 'shape'}); "
            "the forward pass probably depends on more than the latent. Choose another latent_layer."
        )
