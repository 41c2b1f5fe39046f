"""--precision: auto asks the hardware (AMX / AVX512-BF16 on a CPU), bf16 trains with channels_last and fp32
losses, the resolved precision lands in config.yaml and report.html, and bad values are one-line errors."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from tests.conftest import assert_one_line_error, run_cli
from torch import nn

from cnnkit.engine import precision as P
from cnnkit.engine.precision import Precision, cpu_flags_bf16, resolve
from cnnkit.engine.trainer import Trainer
from cnnkit.errors import CnnkitError
from cnnkit.tasks.base import Batch
from cnnkit.tasks.classification import ClassificationTask


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(P.ENV, raising=False)


@pytest.mark.parametrize("hardware, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_cpu_follows_its_bf16_hardware(monkeypatch, no_env, hardware, expected):
    monkeypatch.setattr(P, "cpu_bf16", lambda: hardware)
    assert resolve("auto", "cpu") == expected
    assert resolve("fp32", "cpu") == "fp32" and resolve("bf16", "cpu") == "bf16"
    assert resolve("auto", "cpu", amp=True) == "bf16"  # --amp: mixed precision even without the hardware


def test_the_cpu_question_agrees_with_the_kernels_flags(tmp_path):
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    assert P.cpu_bf16() == cpu_flags_bf16(str(info))
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor : 0\nflags : fpu sse avx512f amx_tile amx_bf16\n")
    assert cpu_flags_bf16(str(fake))
    fake.write_text("processor : 0\nflags : fpu sse avx2\n")
    assert not cpu_flags_bf16(str(fake)) and not cpu_flags_bf16(str(tmp_path / "missing"))


def test_the_environment_says_what_auto_means(monkeypatch):
    monkeypatch.setenv(P.ENV, "fp32")
    assert resolve("auto", "cpu") == "fp32" and resolve("bf16", "cpu") == "bf16"
    monkeypatch.setenv(P.ENV, "fp64")
    with pytest.raises(CnnkitError, match="CNNKIT_PRECISION='fp64' is not a precision"):
        resolve("auto", "cpu")


def test_bad_precisions_are_refused():
    with pytest.raises(CnnkitError, match="fp16 needs a CUDA GPU"):
        resolve("fp16", "cpu")
    with pytest.raises(CnnkitError, match="unknown --precision 'bf17'"):
        resolve("bf17", "cpu")


def test_bf16_means_autocast_and_channels_last_and_fp32_means_neither():
    bf16, fp32 = Precision("bf16", torch.device("cpu")), Precision("fp32", torch.device("cpu"))
    assert bf16.dtype == torch.bfloat16 and bf16.channels_last and not bf16.scaled
    assert fp32.dtype is None and not fp32.channels_last
    conv = nn.Conv2d(3, 4, 3)
    bf16.prepare(conv)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = bf16.input(torch.rand(2, 3, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last)
    with bf16.autocast():
        assert conv(x).dtype == torch.bfloat16
    with fp32.autocast():
        assert nn.Conv2d(3, 4, 3)(torch.rand(2, 3, 8, 8)).dtype == torch.float32


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4))


def _batches() -> list[Batch]:
    g = torch.Generator().manual_seed(1)
    return [Batch(torch.randn(16, 3, 12, 12, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(4)]


def test_a_bf16_step_trains_channels_last_with_an_fp32_loss():
    net = _net()
    task = ClassificationTask(net)
    trainer = Trainer(task, torch.optim.SGD(net.parameters(), lr=0.1), epochs=1, device="cpu", precision="bf16")
    assert trainer.precision.name == "bf16"
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    with trainer._autocast():
        out = task.training_step(trainer._to_device(_batches()[0]))
    assert out.loss.dtype == torch.float32 and net[0].weight.dtype == torch.float32  # fp32 master weights


def test_bf16_training_follows_fp32_training():
    """Same seed, same batches: the bf16 run's losses stay within bf16's rounding of the fp32 run's."""
    histories = {}
    for name in ("fp32", "bf16"):
        net = _net()
        trainer = Trainer(ClassificationTask(net), torch.optim.SGD(net.parameters(), lr=0.05), epochs=3,
                          device="cpu", precision=name)
        histories[name] = [row["train_loss"] for row in trainer.fit(_batches(), _batches())]
    for a, b in zip(histories["fp32"], histories["bf16"]):
        assert b == pytest.approx(a, rel=0.03)
    assert histories["bf16"][-1] < histories["bf16"][0]


def test_predictions_under_bf16_are_fp32_probabilities():
    net = _net().eval()
    fp32 = Trainer(ClassificationTask(copy.deepcopy(net)), None, epochs=1, device="cpu", precision="fp32")
    bf16 = Trainer(ClassificationTask(copy.deepcopy(net)), None, epochs=1, device="cpu", precision="bf16")
    a, b = fp32.predict(_batches()), bf16.predict(_batches())
    assert b.dtype == torch.float32 and torch.allclose(b.sum(1), torch.ones(len(b)), atol=1e-5)
    assert (a - b).abs().max() < 0.05 and (a.argmax(1) == b.argmax(1)).float().mean() >= 0.95


def test_the_cli_writes_the_resolved_precision(capsys, tmp_path, no_env, monkeypatch):
    monkeypatch.setattr(P, "cpu_bf16", lambda: True)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "-q", "train", "--data", "digits", "--epochs", "1", "--out", str(out))
    assert code == 0, err
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["precision"] == "bf16"
    assert "precision bf16" in (out / "report.html").read_text()
    out = tmp_path / "run32"
    code, _, err = run_cli(capsys, "-q", "train", "--data", "digits", "--epochs", "1", "--amp", "--precision",
                           "fp32", "--out", str(out))
    assert code == 0, err
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["precision"] == "fp32"


def test_bad_precision_values_are_one_line_errors(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--data", "digits", "--precision", "fp64", "--out", str(tmp_path / "r"))
    assert code == 2 and "argument --precision: invalid choice: 'fp64'" in err
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  precision: half\n")
    code, _, err = run_cli(capsys, "train", "--data", "digits", "--config", str(config), "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "unknown --precision 'half'")
    code, _, err = run_cli(capsys, "train", "--data", "digits", "--precision", "fp16", "--device", "cpu",
                           "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "fp16 needs a CUDA GPU")
    assert not (tmp_path / "r").exists()


def test_depthwise_convolutions_stay_fp32_under_cpu_bf16():
    """oneDNN's bf16 depthwise kernels are slower than its fp32 ones: prepare() runs them outside autocast."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 8, 1))
    reference = copy.deepcopy(net)
    Precision("bf16", torch.device("cpu")).prepare(net)
    assert set(net.state_dict()) == set(reference.state_dict())  # the module tree and its keys are unchanged
    x = torch.randn(2, 4, 9, 9).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        depthwise = net[0](x)
        pointwise = net[1](depthwise)
    assert depthwise.dtype == torch.float32 and pointwise.dtype == torch.bfloat16
    torch.testing.assert_close(depthwise, reference[0](x))  # exactly the fp32 convolution
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert net[0](x).dtype == torch.bfloat16  # no backward to come: the faster bf16 forward
    twice = Precision("bf16", torch.device("cpu")).prepare(copy.deepcopy(net))  # idempotent, and copies keep it
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(twice(x), net(x))
    fp32 = Precision("fp32", torch.device("cpu")).prepare(copy.deepcopy(reference))
    assert "forward" not in vars(fp32[0])


def test_a_depthwise_subclass_keeps_its_own_forward_in_fp32():
    """TF-style "same" padding lives in a Conv2d subclass's forward (EfficientNet-Lite0): fp32 must call it."""
    from cnnkit.models.efficientnet import Conv2dSame

    torch.manual_seed(0)
    conv = Conv2dSame(4, 4, 3, stride=2, groups=4)
    reference = copy.deepcopy(conv)
    Precision("bf16", torch.device("cpu")).prepare(conv)
    x = torch.randn(2, 4, 10, 10, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    assert out.shape == reference(x).shape == (2, 4, 5, 5)
    torch.testing.assert_close(out, reference(x))


class _BoxNet(nn.Module):
    """A body and a box layer; the box layer is named in fp32_modules, as a detector's box heads are."""

    fp32_modules = ("box",)

    def __init__(self):
        super().__init__()
        self.body, self.box = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return h, self.box(h)


def test_the_modules_a_model_names_run_in_fp32_under_bf16() -> None:
    torch.manual_seed(0)
    net, x = _BoxNet(), torch.randn(5, 8) * 100
    Precision.resolve("bf16", torch.device("cpu")).prepare(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, box = net(x)
    assert h.dtype == torch.bfloat16 and box.dtype == torch.float32  # the body in bf16, the box layer in fp32
    want = nn.functional.linear(h.float(), net.box.weight, net.box.bias)  # fp32 maths on the bf16 features
    assert torch.equal(box, want)
    box.sum().backward()  # gradients flow through the fp32 layer into the bf16 body
    assert net.body.weight.grad is not None and torch.isfinite(net.body.weight.grad).all()
    plain = _BoxNet()
    Precision.resolve("fp32", torch.device("cpu")).prepare(plain)
    assert "forward" not in vars(plain.box)  # fp32 leaves the modules as they are
    assert set(copy.deepcopy(net).state_dict()) == set(plain.state_dict())  # the patch is not state
