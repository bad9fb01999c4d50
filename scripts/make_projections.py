"""Precompute the latent views of the pretrained models (pretrained/projections/<name>.npz).

The app loads these files at start-up, so the first latent plot needs no torch forward pass and no
UMAP compile. Run after (re)training the pretrained models:

    python -m scripts.make_projections                      # every pretrained/*.safetensors
    python -m scripts.make_projections --models digits-gccs digits-ce --no-umap
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from gccs_core.checkpoint import load_model_with_metadata
from gccs_core.data import load_dataset
from gccs_core.files import file_sha256
from gccs_core.projection import LINEAR_METHODS
from gccs_core.views import VIEW_SEED, latent_view, sample_indices, save_view, view_samples

ROOT = Path(__file__).resolve().parent.parent


def make_projection(checkpoint: Path, out_dir: Path, umap: bool = True) -> Path:
    """Compute and save the view of one checkpoint (same samples as the app: ``gccs_core.views.view_samples``)."""
    model, meta = load_model_with_metadata(checkpoint)
    dataset = meta["dataset"]
    data = load_dataset(dataset, "test")
    idx = sample_indices(data.y.numpy(), view_samples(dataset), VIEW_SEED)
    methods = LINEAR_METHODS + (("umap",) if umap else ())
    view = dict(latent_view(model, data, methods=methods, indices=idx))
    view["checkpoint_sha256"] = np.array(file_sha256(str(checkpoint)))
    view["dataset"] = np.array(dataset)
    return save_view(out_dir / f"{checkpoint.stem}.npz", view)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", type=Path, default=Path(os.environ.get("GCCS_PRETRAINED_DIR", ROOT / "pretrained")))
    parser.add_argument("--models", nargs="*", help="checkpoint stems (default: all)")
    parser.add_argument("--no-umap", action="store_true", help="skip the UMAP coordinates (slow first compile)")
    args = parser.parse_args(argv)
    files = sorted(args.pretrained.glob("*.safetensors"))
    if args.models:
        files = [f for f in files if f.stem in args.models]
    if not files:
        print(f"no checkpoints found in {args.pretrained}", file=sys.stderr)
        return 1
    for f in files:
        t0 = time.perf_counter()
        path = make_projection(f, args.pretrained / "projections", umap=not args.no_umap)
        print(f"{path}  ({path.stat().st_size / 1024:.0f} KiB, {time.perf_counter() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
