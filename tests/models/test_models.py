import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.models import (
    MODELS,
    count_params,
    create_model,
    default_input_size,
    summary,
)
from cnnkit.models.registry import register_model

# The big ImageNet networks run at a reduced size: the test checks wiring and gradients, not accuracy.
TEST_SIZE = {"alexnet": 64, "vgg16": 32, "resnet50": 64, "efficientnet_b0": 64, "efficientnet_lite0": 64}


@pytest.mark.parametrize("name", list(MODELS))
def test_every_registered_model_runs_forward_and_backward(name: str) -> None:
    size = TEST_SIZE.get(name, default_input_size(name))
    model = create_model(name, num_classes=5, input_size=size)
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 5)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_simple_cnn_matches_the_tutorial_parameter_count() -> None:
    model = create_model("simple-cnn", num_classes=10)
    assert count_params(model) == (122_570, 0)
    table = summary(model, input_size=32, name="simple-cnn")
    assert "Total params: 122,570 (478.79 KB)" in table
    assert "Trainable params: 122,570 (478.79 KB)" in table
    assert "Non-trainable params: 0 (0.00 KB)" in table
    assert "(None, 64, 4, 4)" in table and "(None, 1024)" in table


def test_simple_cnn_adapts_to_other_input_sizes_and_class_counts() -> None:
    model = create_model("simple-cnn", num_classes=2, input_size=64)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 2)


def test_any_timm_model_by_name() -> None:
    model = create_model("timm/resnet18", num_classes=4)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 4)
    assert default_input_size("timm/resnet18") == 224


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(CnnkitError, match="unknown model 'no-such-net'.*simple-cnn"):
        create_model("no-such-net", num_classes=10)


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("simple-cnn", input_size=32)(lambda spec: torch.nn.Identity())


def test_too_small_input_is_a_clear_error() -> None:
    with pytest.raises(CnnkitError, match="at least 18 pixels"):
        create_model("simple-cnn", num_classes=10, input_size=12)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "timm/resnet18"])
def test_drop_path_skips_residual_blocks_in_training_only(name: str) -> None:
    """Stochastic depth: a training forward differs from draw to draw; in eval (export, serving) the network is
    the one without it, weight for weight."""
    plain = create_model(name, num_classes=3, input_size=64)
    dropped = create_model(name, num_classes=3, input_size=64, drop_path=0.5)
    for module in plain.modules():  # timm starts each residual branch at zero (its last BatchNorm's scale)
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
    dropped.load_state_dict(plain.state_dict())  # no weights of its own
    assert any(type(m).__name__ == "DropPath" for m in dropped.modules())
    x = torch.randn(2, 3, 64, 64)
    plain.eval(), dropped.eval()
    assert torch.equal(plain(x), dropped(x))
    dropped.train()
    torch.manual_seed(0)
    draws = [dropped(x) for _ in range(4)]
    assert any(not torch.allclose(draws[0], other) for other in draws[1:])


def test_drop_path_is_refused_for_a_model_without_residual_blocks() -> None:
    with pytest.raises(CnnkitError, match="--drop-path: simple-cnn has no residual blocks to skip; models that do: "
                                          "efficientnet_b0, efficientnet_lite0, resnet50"):
        create_model("simple-cnn", num_classes=3, drop_path=0.1)
    with pytest.raises(CnnkitError, match="--drop-path: timm's vgg11 does not take a drop-path rate"):
        create_model("timm/vgg11", num_classes=3, drop_path=0.1)


def test_timms_name_for_packaged_weights_points_at_the_offline_model() -> None:
    from cnnkit.models.pretrained import _offline_twin
    from cnnkit.models.weights import timm_weights

    hint = _offline_twin(timm_weights("tf_efficientnet_lite0"))
    assert "--model efficientnet_lite0 --pretrained: the same weights, installed here (offline)" in hint
    assert _offline_twin(timm_weights("resnet18")) == ""
