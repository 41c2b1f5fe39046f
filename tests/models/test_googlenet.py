"""GoogLeNet: Table 1's Inception modules, torchvision's weight files, the auxiliary classifiers."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model
from cnnkit.models.googlenet import INCEPTION
from cnnkit.tasks import Batch, ClassificationTask


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(**options) -> nn.Module:
    with torch.device("meta"):
        return create_model("googlenet", **options)


@pytest.fixture(scope="module")
def torchvision_pair() -> tuple[nn.Module, nn.Module]:
    """torchvision's GoogLeNet with auxiliary heads, and ours in its configuration holding its weights."""
    torch.manual_seed(0)
    theirs = torchvision.models.GoogLeNet(aux_logits=True, init_weights=False)  # torch's default init: quicker
    for key, value in theirs.state_dict().items():  # make the running statistics matter
        if key.endswith(("running_mean", "running_var")):
            value.uniform_(0.5, 1.5)
    ours = create_model("googlenet", tv_compatible=True, aux_logits=True, dropout=0.2)  # torchvision's dropout
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def test_torchvision_compatible_parameter_counts() -> None:
    assert count(on_meta(tv_compatible=True)) == 6_624_904
    with torch.device("meta"):
        theirs = torchvision.models.GoogLeNet(aux_logits=True, init_weights=False)
    assert count(on_meta(tv_compatible=True, aux_logits=True)) == count(theirs) == 13_004_888


def test_paper_uses_5x5_where_torchvision_uses_3x3() -> None:
    paper, tv = on_meta(batch_norm=True), on_meta(tv_compatible=True)
    names = [f"inception{n}" for n in INCEPTION]
    assert {getattr(paper, n).branch3[1].conv.kernel_size for n in names} == {(5, 5)}
    assert {getattr(tv, n).branch3[1].conv.kernel_size for n in names} == {(3, 3)}
    extra = sum(red5 * n5 * (25 - 9) for _, _, _, red5, n5, _ in INCEPTION.values())
    assert count(paper) - count(tv) == extra == 380_928


def test_paper_configuration_has_lrn_and_biases_and_no_batch_norm() -> None:
    model = on_meta()
    kinds = {type(m) for m in model.modules()}
    assert nn.LocalResponseNorm in kinds and nn.BatchNorm2d not in kinds
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert model.maxpool4.kernel_size == 3
    with pytest.raises(CnnkitError, match="batch norm"):
        on_meta(tv_compatible=True, batch_norm=False)


def test_output_widths_follow_table_1() -> None:
    model = create_model("googlenet").eval()
    widths = {}
    for name, c_in in (("3a", 192), ("3b", 256), ("4a", 480), ("4e", 528), ("5b", 832)):
        widths[name] = getattr(model, f"inception{name}")(torch.randn(1, c_in, 7, 7)).shape[1]
    assert widths == {"3a": 256, "3b": 480, "4a": 512, "4e": 832, "5b": 1024}


@pytest.mark.parametrize("aux_logits", [False, True])
def test_torchvision_weights_load_strictly_and_outputs_agree(torchvision_pair, aux_logits: bool) -> None:
    ours, theirs = torchvision_pair
    if not aux_logits:  # the same weights without the auxiliary heads
        state = {k: v for k, v in theirs.state_dict().items() if not k.startswith("aux")}
        ours = create_model("googlenet", tv_compatible=True)
        ours.load_state_dict(state, strict=True)
    ours.eval(), theirs.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() < 1e-5


def test_aux_outputs_match_torchvision_in_training(torchvision_pair) -> None:
    ours, theirs = torchvision_pair
    ours.train(), theirs.train()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.manual_seed(1)
        logits, aux2, aux1 = theirs(x)
        torch.manual_seed(1)  # same dropout masks: both draw them in the order aux1, aux2, main
        ours_logits = ours(x)
    for a, b in zip([ours_logits, *ours.aux_outputs], [logits, aux1, aux2]):
        assert (a - b).abs().max().item() < 1e-5


def test_aux_outputs_appear_only_in_training_with_aux_on() -> None:
    x = torch.randn(2, 3, 32, 32)  # the smallest size that reaches 1×1 before the global pool
    with_aux = create_model("googlenet", num_classes=5, aux_logits=True)
    out = with_aux.train()(x)
    assert out.shape == (2, 5)
    assert [a.shape for a in with_aux.aux_outputs] == [(2, 5), (2, 5)]
    with torch.no_grad():
        assert with_aux.eval()(x).shape == (2, 5) and with_aux.aux_outputs == []
    without = create_model("googlenet", num_classes=5)
    assert without.train()(x).shape == (2, 5) and without.aux_outputs == []
    assert without.aux1 is None and without.aux2 is None


def test_the_task_adds_the_aux_losses() -> None:
    model = create_model("googlenet", num_classes=3, in_channels=1, aux_logits=True, dropout=0.0, aux_dropout=0.0)
    task = ClassificationTask(model)
    batch = Batch(torch.randn(2, 1, 32, 32), torch.tensor([0, 2]))
    model.train()
    torch.manual_seed(0)
    loss = task.training_step(batch).loss
    main = nn.functional.cross_entropy(model(batch.images), batch.targets)
    aux = sum(nn.functional.cross_entropy(a, batch.targets) for a in model.aux_outputs)
    torch.testing.assert_close(loss, main + 0.3 * aux)
    loss.backward()
    assert model.aux1.fc2.weight.grad is not None
