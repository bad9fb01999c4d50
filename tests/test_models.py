import pytest
import torch

from gccs_core.models import ENCODERS, ModelSpec, build_model, embed_batched


def _spec(encoder="mlp", loss="gccs", in_shape=(1, 8, 8), d=16, **kw):
    return ModelSpec(encoder=encoder, in_shape=in_shape, num_classes=10, latent_dim=d, loss=loss,
                     mean=(0.5,) * in_shape[0], std=(0.25,) * in_shape[0], **kw)


@pytest.mark.parametrize("encoder,in_shape", [("mlp", (1, 8, 8)), ("cnn", (1, 28, 28)), ("resnet18", (3, 32, 32))])
@pytest.mark.parametrize("loss", ["gccs", "ce", "mmc", "center"])
def test_forward_gives_scores_and_embed_gives_latents(encoder, in_shape, loss):
    model = build_model(_spec(encoder, loss, in_shape)).eval()
    x = torch.rand(3, *in_shape)
    assert model(x).shape == (3, 10)
    assert model.embed(x).shape == (3, 16)
    assert model.predict(x).shape == (3,)
    if loss in ("gccs", "mmc"):
        assert model.is_prototype and model.centers.shape == (10, 16) and model.sigma == 1.0
    elif loss == "center":
        assert model.centers.shape == (10, 16) and model.sigma is None
    else:
        assert model.centers is None and model.sigma is None


def test_prototype_scores_are_negative_scaled_squared_distances():
    model = build_model(_spec(loss_params={"sigma": 0.5})).eval()
    x = torch.rand(5, 1, 8, 8)
    z = model.embed(x)
    expected = -torch.cdist(z, model.centers).pow(2) / (2 * 0.25)
    assert torch.allclose(model(x), expected, atol=1e-3)
    assert torch.equal(model(x).argmax(1), torch.cdist(z, model.centers).argmin(1))


def test_normalisation_lives_inside_the_model():
    model = build_model(_spec())
    x = torch.full((1, 1, 8, 8), 0.75)
    assert torch.allclose(model.normalize(x), torch.ones_like(x))


def test_embed_batched_restores_training_mode():
    model = build_model(_spec()).train()
    z, s = embed_batched(model, torch.rand(7, 1, 8, 8), batch_size=3)
    assert z.shape == (7, 16) and s.shape == (7, 10) and model.training


def test_bad_specs_and_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="encoder='vit' is unknown; allowed: " + ", ".join(ENCODERS)):
        _spec(encoder="vit")
    with pytest.raises(ValueError, match="dim=4 is too small"):
        build_model(_spec(d=4))
    model = build_model(_spec())
    with pytest.raises(ValueError, match=r"expected \(N, 1, 8, 8\)"):
        model(torch.rand(2, 1, 28, 28))


@pytest.mark.parametrize("encoder,shape", [("mlp", (1, 8, 8)), ("cnn", (1, 28, 28)), ("resnet18", (3, 32, 32))])
def test_attack_copy_computes_the_same_function_without_batch_norm(encoder, shape):
    from gccs_core.models import attack_copy

    torch.manual_seed(0)
    spec = ModelSpec(encoder, shape, 10, 16, "gccs", mean=(0.5,) * shape[0], std=(0.25,) * shape[0])
    model = build_model(spec).train()
    for _ in range(3):  # move the running statistics away from their initial values
        model(torch.rand(16, *shape))
    model.eval()
    fast = attack_copy(model)
    x = torch.rand(8, *shape)
    with torch.no_grad():
        ref, out = model(x), fast(x)
    assert torch.allclose(ref, out, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fast.modules())
    assert not any(p.requires_grad for p in fast.parameters()) and not fast.training
    # the original is untouched: still has its batch norms and trainable weights
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    xa = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fast(xa).sum(), xa)
    assert g.abs().sum() > 0
