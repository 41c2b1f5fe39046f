"""GoogLeNet (Szegedy et al. 2014): Inception modules with dimension reduction, optional auxiliary classifiers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.layers import make_activation
from cnnkit.models.registry import register_model

# Table 1: #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj; output maps = #1×1 + #3×3 + #5×5 + pool proj
INCEPTION: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),  # 256
    "3b": (128, 128, 192, 32, 96, 64),  # 480
    "4a": (192, 96, 208, 16, 48, 64),  # 512
    "4b": (160, 112, 224, 24, 64, 64),  # 512
    "4c": (128, 128, 256, 24, 64, 64),  # 512
    "4d": (112, 144, 288, 32, 64, 64),  # 528
    "4e": (256, 160, 320, 32, 128, 128),  # 832
    "5a": (256, 160, 320, 32, 128, 128),  # 832
    "5b": (384, 192, 384, 48, 128, 128),  # 1024
}


def googlenet_lrn() -> nn.LocalResponseNorm:
    """The stem's LocalRespNorm (Figure 3). The paper gives no constants: these are BVLC's Caffe reproduction
    (n=5, α=1e-4, β=0.75, k=1), whose α is already divided by n, as torch's is."""
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)


class ConvUnit(nn.Module):
    """k×k convolution ('same' padding) and activation (ReLU by default); with `batch_norm`, BN (eps 1e-3) in
    between and no bias."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, batch_norm: bool = False,
                 act: str | dict = "relu"):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3) if batch_norm else nn.Identity()
        self.act = make_activation(act, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Inception(nn.Module):
    """Inception module with dimension reductions (Figure 2b): 1×1 | 1×1→3×3 | 1×1→5×5 | 3×3 pool→1×1, stacked.

    `k5` is the kernel of the "5×5" branch: 5 in the paper, 3 in torchvision (its known bug, kept there so
    that its weight files still load).
    """

    def __init__(self, c_in: int, n1x1: int, n3x3red: int, n3x3: int, n5x5red: int, n5x5: int, pool_proj: int,
                 k5: int = 5, batch_norm: bool = False, act: str | dict = "relu"):
        super().__init__()
        bn = batch_norm
        self.branch1 = ConvUnit(c_in, n1x1, 1, batch_norm=bn, act=act)
        self.branch2 = nn.Sequential(ConvUnit(c_in, n3x3red, 1, batch_norm=bn, act=act),
                                     ConvUnit(n3x3red, n3x3, 3, batch_norm=bn, act=act))
        self.branch3 = nn.Sequential(ConvUnit(c_in, n5x5red, 1, batch_norm=bn, act=act),
                                     ConvUnit(n5x5red, n5x5, k5, batch_norm=bn, act=act))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, padding=1),
                                     ConvUnit(c_in, pool_proj, 1, batch_norm=bn, act=act))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, c_in, H, W)
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([b(x) for b in branches], dim=1)  # (N, n1x1 + n3x3 + n5x5 + pool_proj, H, W)


class InceptionAux(nn.Module):
    """Auxiliary classifier (§5): 5×5/3 average pool, 1×1 conv 128, FC 1024, dropout 0.7, linear.

    torchvision pools adaptively to 4×4 instead; so does the paper's pool at 14×14, with other windows.
    With `paper_pool` the 5×5/3 pool is used where the map allows it, then an adaptive pool makes any
    size 4×4.
    """

    def __init__(self, c_in: int, num_classes: int, batch_norm: bool = False, dropout: float = 0.7,
                 paper_pool: bool = True, act: str | dict = "relu"):
        super().__init__()
        self.conv = ConvUnit(c_in, 128, 1, batch_norm=batch_norm, act=act)
        self.fc1, self.fc2 = nn.Linear(128 * 4 * 4, 1024), nn.Linear(1024, num_classes)
        self.act, self.dropout = make_activation(act, 1024), nn.Dropout(dropout)
        self.paper_pool = paper_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 512 or 528, 14, 14)
        if self.paper_pool and min(x.shape[-2:]) >= 5:
            x = F.avg_pool2d(x, 5, 3)  # (N, c_in, 4, 4) at 14×14
        x = F.adaptive_avg_pool2d(x, 4)  # (N, c_in, 4, 4)
        x = self.conv(x).flatten(1)  # (N, 2048)
        x = self.dropout(self.act(self.fc1(x)))  # (N, 1024)
        return self.fc2(x)  # (N, num_classes)


class GoogLeNet(nn.Module):
    """GoogLeNet, Table 1 / Figure 3: stem, nine Inception modules, global average pool, dropout 0.4, linear.

    By default it is the paper's network: 5×5 convolutions in the third branch, convolutions with biases
    and ReLU, LocalRespNorm in the stem, 3×3/2 max pools. `tv_compatible=True` is torchvision's module
    instead, whose weight files load strictly: 3×3 in the "5×5" branch, BN after every convolution
    (from Ioffe & Szegedy 2015, not in this paper) in place of LRN, a 2×2/2 fourth max pool, adaptive
    pooling in the auxiliary heads; 6,624,904 parameters without the auxiliary heads. `batch_norm=True`
    alone puts BN into the paper's topology. `activation` (a name of cnnkit.models.layers) replaces every
    ReLU; a parameter-free one keeps torchvision's keys, PReLU and Maxout add theirs.

    Whatever the mode, `forward` returns the main logits (N, num_classes). With `aux_logits` on and the
    module training, the two auxiliary heads' logits (after 4a and 4d) are left in `self.aux_outputs`
    (a list, empty otherwise) for the task to add 0.3× their losses.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, aux_logits: bool = False,
                 tv_compatible: bool = False, batch_norm: bool | None = None, dropout: float = 0.4,
                 aux_dropout: float = 0.7, activation: str | dict = "relu"):
        super().__init__()
        bn, act = (tv_compatible if batch_norm is None else batch_norm), activation
        if tv_compatible and not bn:
            raise CnnkitError("GoogLeNet tv_compatible=True has batch norm everywhere; drop batch_norm=False")
        self.conv1 = ConvUnit(in_channels, 64, 7, stride=2, batch_norm=bn, act=act)  # (N, 64, 112, 112)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)  # (N, 64, 56, 56)
        self.norm1 = nn.Identity() if bn else googlenet_lrn()
        self.conv2 = ConvUnit(64, 64, 1, batch_norm=bn, act=act)  # the 3×3 reduce: (N, 64, 56, 56)
        self.conv3 = ConvUnit(64, 192, 3, batch_norm=bn, act=act)  # (N, 192, 56, 56)
        self.norm2 = nn.Identity() if bn else googlenet_lrn()
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)  # (N, 192, 28, 28)
        k5 = 3 if tv_compatible else 5
        self._add_inceptions(("3a", "3b"), 192, k5, bn, act)  # (N, 480, 28, 28)
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)  # (N, 480, 14, 14)
        self._add_inceptions(("4a", "4b", "4c", "4d", "4e"), 480, k5, bn, act)  # (N, 832, 14, 14)
        self.maxpool4 = nn.MaxPool2d(2 if tv_compatible else 3, 2, ceil_mode=True)  # (N, 832, 7, 7)
        self._add_inceptions(("5a", "5b"), 832, k5, bn, act)  # (N, 1024, 7, 7)
        paper_pool = not tv_compatible
        self.aux1 = InceptionAux(512, num_classes, bn, aux_dropout, paper_pool, act) if aux_logits else None  # 4a
        self.aux2 = InceptionAux(528, num_classes, bn, aux_dropout, paper_pool, act) if aux_logits else None  # 4d
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # the paper's 7×7 average pool at 224
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1024, num_classes)
        self.aux_outputs: list[torch.Tensor] = []
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)  # Glorot, as BVLC's reproduction
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _add_inceptions(self, names: tuple[str, ...], c_in: int, k5: int, batch_norm: bool,
                        act: str | dict = "relu") -> None:
        for name in names:  # each module's output maps are the next one's input
            n1x1, _, n3x3, _, n5x5, pool_proj = INCEPTION[name]
            module = Inception(c_in, *INCEPTION[name], k5=k5, batch_norm=batch_norm, act=act)
            setattr(self, f"inception{name}", module)
            c_in = n1x1 + n3x3 + n5x5 + pool_proj

    def _aux(self, head: InceptionAux | None, x: torch.Tensor) -> None:
        if head is not None and self.training:
            self.aux_outputs.append(head(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, 224, 224)
        self.aux_outputs = []
        x = self.norm1(self.maxpool1(self.conv1(x)))  # (N, 64, 56, 56)
        x = self.maxpool2(self.norm2(self.conv3(self.conv2(x))))  # (N, 192, 28, 28)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))  # (N, 480, 14, 14)
        x = self.inception4a(x)  # (N, 512, 14, 14)
        self._aux(self.aux1, x)
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # (N, 528, 14, 14)
        self._aux(self.aux2, x)
        x = self.maxpool4(self.inception4e(x))  # (N, 832, 7, 7)
        x = self.inception5b(self.inception5a(x))  # (N, 1024, 7, 7)
        x = self.dropout(self.avgpool(x).flatten(1))  # (N, 1024)
        return self.fc(x)  # (N, num_classes)


@register_model("googlenet", paper="Szegedy et al. 2014", head=("fc", "aux1.fc2", "aux2.fc2"))
def googlenet(*, num_classes: int = 1000, in_channels: int = 3, aux_logits: bool = False,
              tv_compatible: bool = False, batch_norm: bool | None = None, dropout: float = 0.4,
              aux_dropout: float = 0.7, activation: str | dict = "relu") -> nn.Module:
    """GoogLeNet as in the paper; `tv_compatible=True` for torchvision's module and weight files."""
    return GoogLeNet(num_classes, in_channels, aux_logits, tv_compatible, batch_norm, dropout, aux_dropout,
                     activation)
