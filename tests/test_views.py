"""Latent views, prototype projection and animation panels (gccs_core.views), on real digits."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gccs_core import load_dataset
from gccs_core.files import file_sha256
from gccs_core.projection import LatentProjection
from gccs_core.views import (
    VIEW_FORMAT_VERSION,
    VIEW_SEED,
    LatentView,
    attack_panel,
    choose_prototypes,
    distances,
    ellipse_points,
    fooled,
    latent_view,
    load_view,
    panels_table,
    preview_panel,
    project_prototypes,
    projection_for_view,
    sample_indices,
    save_view,
    snapshot_panel,
    table_csv,
    table_npz,
    view_samples,
    view_table,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def digits_test_labels() -> np.ndarray:
    return load_dataset("digits", "test").y.numpy()


def test_views_import_without_torch():
    """The app's first paint reads shipped views through this module: it must not pull in torch."""
    code = "import sys, gccs_core.views, gccs_core.projection; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_prototypes_and_distances_by_hand():
    z = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    y = np.array([0, 0, 1])
    protos, kind = choose_prototypes(None, False, z, y, 3)
    assert kind == "class means" and np.isnan(protos[2]).all()
    np.testing.assert_allclose(protos[:2], [[1.0, 0.0], [0.0, 4.0]])
    assert choose_prototypes(np.eye(2), True, z, y, 2)[1] == "simplex vertices"
    assert choose_prototypes(np.eye(2), False, z, y, 2)[1] == "learned centres"
    np.testing.assert_allclose(distances(z, np.array([[0.0, 0.0], [3.0, 4.0]])),
                               [[0.0, 5.0], [2.0, np.sqrt(17.0)], [4.0, 3.0]])


def test_ellipse_points_lie_on_the_n_sigma_contour():
    mean = np.array([1.0, -2.0])
    cov = np.array([[4.0, 1.0], [1.0, 2.0]])
    for n_std in (1.0, 2.0):
        pts = ellipse_points(mean, cov, n_std, n_points=40)
        assert pts.shape == (41, 2)
        d = pts - mean
        maha = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
        np.testing.assert_allclose(maha, n_std**2, rtol=1e-9)
        np.testing.assert_allclose(pts[0], pts[-1])
    with pytest.raises(ValueError, match="2x2"):
        ellipse_points(mean, np.eye(3))


def test_sample_indices_returns_exactly_n_stratified(digits_test_labels):
    y = digits_test_labels
    counts = np.bincount(y)
    for n in range(1, len(y) + 1):
        idx = sample_indices(y, n, seed=3)
        assert len(idx) == n and len(np.unique(idx)) == n, n
        assert (np.diff(idx) > 0).all()
        got = np.bincount(y[idx], minlength=len(counts))
        if n >= len(counts):  # every class present, each within one sample of its proportional share
            assert (got >= 1).all(), (n, got)
            assert np.abs(got - n * counts / counts.sum()).max() < 1.0 + 1e-9, (n, got)
    np.testing.assert_array_equal(sample_indices(y, 37, seed=1), sample_indices(y, 37, seed=1))
    assert not np.array_equal(sample_indices(y, 37, seed=1), sample_indices(y, 37, seed=2))
    np.testing.assert_array_equal(sample_indices(y, 10_000), np.arange(len(y)))
    # an even split stays exact
    even = np.repeat(np.arange(4), [10, 20, 30, 40])
    np.testing.assert_array_equal(np.bincount(even[sample_indices(even, 20, seed=1)]), [2, 4, 6, 8])
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=f"n={bad!r} is invalid"):
            sample_indices(y, bad)


def test_latent_view_roundtrip_and_named_fields(digits_gccs_model, tmp_path):
    model = digits_gccs_model
    data = load_dataset("digits", "test")
    view = latent_view(model, data, methods=("simplex", "pca"), n_samples=100)
    assert isinstance(view, LatentView) and len(view.idx) == 100
    assert view.images.dtype == np.uint8 and view.images.shape == (100, 8, 8, 1)
    assert view.prototype_kind == "simplex vertices" and view.methods == ["simplex", "pca"]
    np.testing.assert_allclose(view.prototypes, model.centers.numpy())
    np.testing.assert_allclose(view.dist, distances(view.z, view.prototypes), rtol=1e-5)
    with torch.no_grad():
        pred = model(data.x[torch.from_numpy(view.idx)]).argmax(1).numpy()
    np.testing.assert_array_equal(view.pred, pred)
    assert view.accuracy == pytest.approx(float((pred == view.y).mean()))
    # a GCCS model's vertices on a regular 10-gon in the simplex view
    radii = np.linalg.norm(view.proto_coords("simplex"), axis=1)
    np.testing.assert_allclose(radii, radii[0], rtol=1e-4)
    assert view.ellipses("simplex").shape[:2] == (10, 2) and view.ellipses("umap") is None
    with pytest.raises(ValueError, match="no 'lda' coordinates"):
        view.coords("lda")
    # the refitted projection (what the attack page uses) reproduces the stored coordinates
    for m in ("simplex", "pca"):
        np.testing.assert_allclose(projection_for_view(view, m).transform(view.z), view.coords(m), rtol=1e-5, atol=1e-5)
    back = load_view(save_view(tmp_path / "v.npz", view))
    assert set(back) == set(view)
    for key in view:
        np.testing.assert_array_equal(back[key], view[key])
    assert back.position(int(view.idx[7])) == 7 and back.position(-1) is None
    # a file of another format version is refused with a message naming it
    np.savez(tmp_path / "old.npz", **{k.replace("/", "__"): np.asarray(v) for k, v in view.items()
                                      if k != "format_version"}, format_version=np.array(VIEW_FORMAT_VERSION + 1))
    with pytest.raises(ValueError, match=f"format_version={VIEW_FORMAT_VERSION + 1}"):
        load_view(tmp_path / "old.npz")


def test_an_absent_class_has_no_prototype_anywhere(digits_ce_model):
    """Cross-entropy prototypes are class means: a class missing from the samples is hidden (NaN), never at the origin."""
    data = load_dataset("digits", "test")
    y = data.y.numpy()
    keep = np.flatnonzero(y != 4)[:120]
    view = latent_view(digits_ce_model, data, methods=("simplex", "pca"), indices=keep)
    assert view.prototype_kind == "class means" and np.isnan(view.prototypes[4]).all()
    for m in ("simplex", "pca"):
        pc = view.proto_coords(m)
        assert np.isnan(pc[4]).all() and np.isfinite(np.delete(pc, 4, axis=0)).all()
    proj = projection_for_view(view, "pca")
    np.testing.assert_array_equal(project_prototypes(proj, view.prototypes), view.proto_coords("pca"))
    # the epochs animation: same rule
    z = np.stack([view.z * 0.5, view.z]).astype(np.float64)
    pred = np.stack([view.pred, view.pred])
    panel = snapshot_panel(z, pred, view.y, None, False, 10, "epochs")
    assert panel.frames.shape == (2, len(keep), 2) and np.isnan(panel.protos[4]).all()
    assert np.isfinite(np.delete(panel.protos, 4, axis=0)).all() and panel.kind == "class means"


def test_attack_and_preview_panels_follow_the_view(digits_gccs_model):
    data = load_dataset("digits", "test")
    view = latent_view(digits_gccs_model, data, methods=("simplex",), n_samples=60)
    proj = projection_for_view(view, "simplex")
    chosen = view.idx[:5]
    pos = view.positions(chosen)
    # a made-up trajectory: the latents walk from each sample towards vertex 0 in 3 steps
    z0 = view.z[pos].astype(np.float64)
    steps = np.linspace(0.0, 1.0, 4)[:, None, None]
    z = (1 - steps) * z0 + steps * view.prototypes[0]
    pred = np.stack([view.pred[pos], view.pred[pos], np.zeros(5, int), np.zeros(5, int)])
    y = view.y[pos]
    panel = attack_panel(view, proj, "simplex", z, pred, y, title="m: {fooled}/{n} fooled", label="m", key="k")
    np.testing.assert_allclose(panel.frames, proj.transform(z), rtol=1e-6)
    np.testing.assert_allclose(panel.frames[0], view.coords("simplex")[pos], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(panel.background, view.coords("simplex"), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(panel.protos, view.proto_coords("simplex"), rtol=1e-5, atol=1e-5)
    assert panel.title == f"m: {int((y != 0).sum())}/5 fooled" and panel.n_frames == 4
    np.testing.assert_array_equal(fooled(pred, y, target=0)[-1], np.ones(5, bool))
    pre = preview_panel(view, "simplex", chosen, "clean")
    np.testing.assert_array_equal(pre.frames[0], view.coords("simplex")[pos])
    with pytest.raises(ValueError, match="not in this view"):
        view.positions(np.array([10_000]))


def test_umap_panels_use_the_umap_embedding_as_background(digits_gccs_model):
    data = load_dataset("digits", "test")
    view = latent_view(digits_gccs_model, data, methods=("simplex",), n_samples=80)
    proj = LatentProjection("umap", n_epochs=30).fit(view.z, view.y)
    panel = attack_panel(view, proj, "umap", view.z[None, :4], view.pred[None, :4], view.y[:4], title="u")
    np.testing.assert_array_equal(panel.background, proj.embedding_)


def test_shipped_projections_match_the_shipped_checkpoints():
    """Every pretrained model has a projection file made from exactly that checkpoint, on the samples
    ``sample_indices`` picks (else the app's first paint falls back to torch); rerun scripts/make_projections.py."""
    checkpoints = sorted((ROOT / "pretrained").glob("*.safetensors"))
    if not checkpoints:
        pytest.skip("no pretrained models in this checkout")
    for ckpt in checkpoints:
        npz = ROOT / "pretrained" / "projections" / f"{ckpt.stem}.npz"
        assert npz.exists(), f"{npz.name} missing: run scripts/make_projections.py"
        view = load_view(npz)
        assert view.checkpoint_sha256 == file_sha256(ckpt), f"{npz.name} is stale"
        dataset = str(view["dataset"])
        labels = load_dataset(dataset, "test").y.numpy()
        np.testing.assert_array_equal(view.idx, sample_indices(labels, view_samples(dataset), VIEW_SEED))
        assert {"simplex", "pca", "lda"} <= set(view.methods) and view.ellipses("simplex") is not None


def test_exported_tables_hold_the_plotted_numbers(digits_gccs_model):
    data = load_dataset("digits", "test")
    view = latent_view(digits_gccs_model, data, methods=("simplex",), n_samples=30)
    table = view_table(view, "simplex")
    rows = list(csv.reader(io.StringIO(table_csv(table))))
    assert rows[0] == ["sample", "label", "pred", "coord_0", "coord_1"] and len(rows) == 31
    got = np.array([[float(v) for v in r] for r in rows[1:]])
    np.testing.assert_array_equal(got[:, 0], view.idx)
    np.testing.assert_allclose(got[:, 3:], view.coords("simplex"), rtol=1e-5, atol=1e-5)
    proj = projection_for_view(view, "simplex")
    z = np.stack([view.z[:4], view.z[:4] * 0.9, view.z[:4] * 0.8]).astype(np.float64)
    pred = np.stack([view.pred[:4]] * 3)
    panels = [attack_panel(view, proj, "simplex", z, pred, view.y[:4], title=name, label=name) for name in ("a, 1", "b")]
    anim = panels_table(panels, view.idx[:4])
    assert len(anim["x"]) == 2 * 3 * 4 and set(anim["model"]) == {"a, 1", "b"}
    np.testing.assert_allclose(anim["x"][:4], panels[0].frames[0, :, 0])
    np.testing.assert_array_equal(anim["step"][:8], [0] * 4 + [1] * 4)
    rows = list(csv.reader(io.StringIO(table_csv(anim))))
    assert rows[1][0] == "a, 1" and len(rows) == 25  # a comma inside a name stays one cell
    with np.load(io.BytesIO(table_npz(anim)), allow_pickle=False) as back:
        np.testing.assert_array_equal(back["sample"], anim["sample"])
        assert list(back["model"][:1]) == ["a, 1"]
    with pytest.raises(ValueError, match="nothing to export"):
        panels_table(panels, np.array([], dtype=int))
    with pytest.raises(ValueError, match="has 4 points but 3 samples"):
        panels_table(panels, view.idx[:3])


def test_adversarial_images_export_holds_each_models_last_frame(digits_gccs_model, digits_ce_model):
    from gccs_core.attacks import run_attack
    from gccs_core.views import adversarial_images

    data = load_dataset("digits", "test")
    view = latent_view(digits_gccs_model, data, methods=("simplex",), n_samples=30)
    proj = projection_for_view(view, "simplex")
    pos = view.positions(view.idx[:6])
    x, y = data.x[view.idx[:6]], data.y[view.idx[:6]]
    panels = []
    for name, model in (("gccs", digits_gccs_model), ("ce", digits_ce_model)):
        res = run_attack(model, x, y, attack="pgd", eps=0.2, steps=4, objective="margin", record=True)
        t = res.trajectory
        frames_x = t.x.permute(0, 1, 3, 4, 2).numpy()  # (T, N, H, W, C) as panels hold them
        panels.append(attack_panel(view, proj, "simplex", t.z.numpy(), t.pred.numpy(), view.y[pos], title=name,
                                   label=name, x=frames_x))
    table = adversarial_images(panels, view.idx[:6])
    with np.load(io.BytesIO(table_npz(table)), allow_pickle=False) as back:
        assert back["clean"].shape == (6, 8, 8, 1) and back["clean"].dtype == np.float32
        np.testing.assert_array_equal(back["sample"], view.idx[:6])
        for i, p in enumerate(panels):
            np.testing.assert_array_equal(back[f"{i}_adversarial"], p.x[-1].astype(np.float32))
            np.testing.assert_array_equal(back[f"{i}_pred"], p.pred[-1])
            assert str(back[f"{i}_model"]) == p.label
            delta = np.abs(back[f"{i}_adversarial"] - back["clean"]).max()
            assert 0 < delta <= 0.2 + 1e-6  # the attack moved the images, inside its ball
    with pytest.raises(ValueError, match="no input images"):
        adversarial_images([snapshot_like(panels[0])], view.idx[:6])


def snapshot_like(panel):
    """The same panel without inputs, as a training animation would be."""
    from dataclasses import replace

    return replace(panel, x=None)
