"""Networks from a spec: `--model "spec:conv6k5-tanh-avgpool2-conv16k5-tanh-avgpool2-fc120-tanh-fc84-tanh-fc10"`
or `--model spec:net.yaml`. The layers run in the order written, as an nn.Sequential (SpecNet) whose modules are
named by kind (conv1, tanh1, avgpool1, ..., fc3), so `inspect` shows the notes' layers and formulas.

Tokens are joined by '-'; `[A-B-C]xN` repeats A-B-C N times (nested groups too):

    conv<F>[k<K>][s<S>][p<P>|psame][d<D>]  F filters, K×K (default 3), stride S (1), padding P (default 0, as in
                                           the notes' O = (I - K + 2P)/S + 1; psame: (K-1)·D/2), dilation D (1)
    pool<K>[s<S>][p<P>], maxpool..., avgpool...   K×K max (pool, maxpool) or average pooling, stride S (K)
    bn | lrn[<size>] | flatten | gap | gmp  batch norm (2d on maps, 1d on vectors), local response norm (5),
                                           flatten, global average / max pooling (then flatten)
    dropout[<p>] | sdropout[<p>]           dropout (0.5), spatial dropout: whole maps (Dropout2d, 0.1)
    fc[<N>]                                N units; on maps it flattens first; `fc` alone: the task's outputs
    maxout<N>[x<K>][k<K>][s<S>][p<P>][d<D>]   N maxout units of K affine pieces (default 2): a Linear (vectors)
                                           or a K×K convolution (maps, default 1×1) with N·K outputs, max over K
    <activation>                           any name of cnnkit.models.layers.ACTIVATIONS: relu, tanh, sigmoid,
                                           elu, gelu, prelu, maxout (k·C affine maps of the C inputs), ...

The output layer is the last fc: where only activations and dropout follow it, its width follows the task (a
bare `fc` silently; `fc10` for a 3-class task becomes fc3, with a warning); a spec that does not end in an fc
gets one. Input channels and size come from the data (the card); a spec names no input.
"""
from __future__ import annotations

import difflib
import re
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.layers import ACTIVATIONS, make_activation, maxout_conv, maxout_linear, paper_lrn
from cnnkit.models.registry import ModelSpec

SPEC_PREFIX = "spec:"
DEFAULT_INPUT = (3, 32, 32)  # (C, H, W) when the data says nothing: the notes' CIFAR and LeNet size
DEFAULT_OUTPUTS = 10  # the class count of a spec whose last fc has no width, when no task gives one

# kind: (leading number: "int" | "float" | None, required, option letters, how it is written)
KINDS: dict[str, tuple[str | None, bool, str, str]] = {
    "conv": ("int", True, "kspd", "conv<F>[k<K>][s<S>][p<P>|psame][d<D>], e.g. conv32k3s2"),
    "pool": ("int", True, "sp", "pool<K>[s<S>][p<P>], e.g. pool2"),
    "maxpool": ("int", True, "sp", "maxpool<K>[s<S>][p<P>], e.g. maxpool3s2"),
    "avgpool": ("int", True, "sp", "avgpool<K>[s<S>][p<P>], e.g. avgpool2"),
    "fc": ("int", False, "", "fc<N>, e.g. fc120 (fc alone: the task's outputs)"),
    "maxout": ("int", True, "xkspd", "maxout<N>[x<K>] (N units, K pieces), e.g. maxout120x4; on maps k3, s, p, d"),
    "dropout": ("float", False, "", "dropout[<p>], e.g. dropout0.5"),
    "sdropout": ("float", False, "", "sdropout[<p>], e.g. sdropout0.1"),
    "lrn": ("int", False, "", "lrn[<size>], e.g. lrn5"),
    "bn": (None, False, "", "bn"),
    "flatten": (None, False, "", "flatten"),
    "gap": (None, False, "", "gap"),
    "gmp": (None, False, "", "gmp"),
}
_TOKEN = re.compile(r"(?P<kind>" + "|".join(sorted(KINDS, key=len, reverse=True)) + r")"
                    r"(?P<n>\d+(?:\.\d*)?|\.\d+)?(?P<opts>(?:[a-z](?:\d+|same))*)")
_OPTION = re.compile(r"([a-z])(\d+|same)")
_GROUP = re.compile(r"\[([^\[\]]*)\][x×](\d+)")
_LONG_OPTIONS = {"kernel": "k", "stride": "s", "padding": "p", "dilation": "d", "pieces": "x"}


@dataclass(frozen=True)
class Layer:
    """One token: its kind ("act" for an activation), the token as written, the leading number, the options."""

    kind: str
    token: str
    n: float | None = None
    opts: dict = field(default_factory=dict)  # k, s, p (int or "same"), d, x


def is_spec(name: str | Path) -> bool:
    return str(name).startswith(SPEC_PREFIX)


def _accepted() -> str:
    layers = "conv32k3, pool2, maxpool3s2, avgpool2, bn, lrn, dropout0.5, sdropout0.1, flatten, gap, gmp, fc120, " \
             "maxout120x4"
    return f"a layer ({layers}) or an activation ({', '.join(ACTIVATIONS)})"


# ---------------------------------------------------------------- the grammar

def parse_token(token: str) -> Layer:
    """One token → Layer; a bad token is a one-line CnnkitError saying what is accepted."""
    if token in ACTIVATIONS:
        return Layer("act", token)
    m = _TOKEN.fullmatch(token)
    if m is None:
        kinds = [k for k in KINDS if token.startswith(k)]
        if kinds:
            form = KINDS[max(kinds, key=len)][3]
            raise CnnkitError(f"spec token {token!r} is not understood; write it as {form}")
        kind = re.match(r"[a-z_]*", token).group()
        close = difflib.get_close_matches(kind, [*KINDS, *ACTIVATIONS], n=2, cutoff=0.6) if kind else []
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise CnnkitError(f"unknown spec token {token!r}{hint}; a token is {_accepted()}")
    kind, number, options = m["kind"], m["n"], dict(_OPTION.findall(m["opts"]))
    numeric, required, letters, form = KINDS[kind]
    if number is None and required:
        raise CnnkitError(f"spec token {token!r} needs its number; write it as {form}")
    if number is not None and numeric is None:
        raise CnnkitError(f"spec token {token!r} takes no number; write it as {form}")
    if numeric == "int" and number is not None and not number.isdigit():
        raise CnnkitError(f"spec token {token!r} needs a whole number; write it as {form}")
    bad = [o for o in options if o not in letters] + [o for o, v in options.items() if v == "same" and o != "p"]
    if bad or len(_OPTION.findall(m["opts"])) != len(options):
        raise CnnkitError(f"spec token {token!r} has a bad option {(bad or ['repeated'])[0]!r}; write it as {form}")
    opts = {o: v if v == "same" else int(v) for o, v in options.items()}
    return Layer(kind, token, None if number is None else float(number), opts)


def expand(text: str) -> str:
    """`[A-B]xN` groups written out (innermost first): '[conv8-pool2]x2-fc' → 'conv8-pool2-conv8-pool2-fc'."""
    while (m := _GROUP.search(text)) is not None:
        n = int(m[2])
        if n < 1 or not m[1]:
            raise CnnkitError(f"spec group {m[0]!r} repeats nothing; write [A-B]xN with N ≥ 1")
        text = text[:m.start()] + "-".join([m[1]] * n) + text[m.end():]
    if "[" in text or "]" in text:
        raise CnnkitError(f"spec {text!r} has an unclosed group; write a repeated group as [A-B]xN, e.g. "
                          "[conv32k3-conv32k3-pool2]x2")
    return text


def parse(text: str) -> list[Layer]:
    """The layers of a spec string, groups expanded."""
    tokens = expand(text).split("-")
    if not text or any(not t for t in tokens):
        raise CnnkitError(f"spec {text!r} has an empty token; join tokens with single '-', e.g. flatten-fc64-relu-fc")
    return [parse_token(t) for t in tokens]


def _number(value) -> str:
    return str(int(value)) if isinstance(value, int | float) and float(value).is_integer() and value >= 1 else \
        str(value)


def _item_token(item) -> str:
    """A YAML list item → token text: a string as written, {conv: 32, kernel: 3, stride: 2} → conv32k3s2,
    {repeat: 2, layers: [...]} → [...]x2."""
    if isinstance(item, str):
        return item
    if not isinstance(item, dict):
        raise CnnkitError(f"spec layer {item!r} must be a token (conv32k3) or a mapping ({{conv: 32, kernel: 3}})")
    if "repeat" in item:
        return f"[{_joined(item.get('layers'))}]x{item['repeat']}"
    kinds = [k for k in item if k not in _LONG_OPTIONS]
    if len(kinds) != 1:
        raise CnnkitError(f"spec layer {item!r} needs exactly one kind (conv, fc, ...) besides "
                          f"{', '.join(_LONG_OPTIONS)}")
    value = item[kinds[0]]
    options = "".join(f"{_LONG_OPTIONS[k]}{v}" for k, v in item.items() if k in _LONG_OPTIONS)
    return f"{kinds[0]}{'' if value is None else _number(value)}{options}"


def _joined(items) -> str:
    if not isinstance(items, list) or not items:
        raise CnnkitError("a spec's `layers:` is a non-empty list of tokens or mappings")
    return "-".join(_item_token(i) for i in items)


def read_spec_file(path: Path) -> str:
    """A YAML spec file → the spec string: a string, a list of tokens/mappings, or a mapping with `layers:`."""
    from cnnkit.config import load_yaml  # safe_load, bad YAML and billion laughs as one-line errors

    if not path.is_file():
        raise CnnkitError(f"spec file not found: {path}")
    content = load_yaml(path)
    if isinstance(content, dict):
        content = content.get("layers")
    return _normalised(content) if isinstance(content, str) else _normalised(_joined(content))


def _normalised(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def spec_text(name: str) -> str:
    """The spec string of 'spec:TOKENS' or 'spec:FILE.yaml' (read now: the card keeps the string, not the file)."""
    body = str(name)[len(SPEC_PREFIX):].strip()
    if body.endswith((".yaml", ".yml")):
        return read_spec_file(Path(body))
    if not body:
        raise CnnkitError("empty spec; write e.g. --model spec:flatten-fc64-relu-fc or --model spec:net.yaml")
    return _normalised(body)


def canonical_name(name: str) -> str:
    """'spec:' + the spec string for a spec name (a file read), any other name as it is."""
    return SPEC_PREFIX + spec_text(name) if is_spec(name) else name


def run_label(name: str) -> str:
    """A folder-safe label of a model name: 'spec-<file stem>' or 'spec-<tokens>' (cut at 40 characters)."""
    if not is_spec(name):
        return name
    body = str(name)[len(SPEC_PREFIX):].strip()
    label = Path(body).stem if body.endswith((".yaml", ".yml")) else body
    return "spec-" + re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:40].strip("_-")


# ---------------------------------------------------------------- the network

@dataclass(frozen=True)
class Flow:
    """What flows between layers: C maps of H×W (h, w set) or a vector of C features."""

    c: int
    h: int | None = None
    w: int | None = None

    @property
    def maps(self) -> bool:
        return self.h is not None


class SpecNet(nn.Sequential):
    """A network built from a spec string: its layers in order, named by kind and count (conv1, tanh1, fc3)."""

    def __init__(self, spec: str, modules: OrderedDict[str, nn.Module]):
        super().__init__(modules)
        self.spec = spec


def _need_maps(layer: Layer, flow: Flow) -> None:
    if not flow.maps:
        raise CnnkitError(f"spec token {layer.token!r} needs feature maps, but it follows a flatten, gap or fc "
                          "(a vector); move it before them")


def _window(layer: Layer, flow: Flow, k: int, s: int, p: int, d: int = 1) -> Flow:
    """The output size of a k×k window at stride s, padding p, dilation d: floor((I + 2p - d(k-1) - 1)/s) + 1."""
    h, w = ((size + 2 * p - d * (k - 1) - 1) // s + 1 for size in (flow.h, flow.w))
    if h < 1 or w < 1:
        raise CnnkitError(f"spec token {layer.token!r} gets a {flow.h}×{flow.w} map, smaller than its {k}×{k} window "
                          f"(padding {p}); train at a larger --image-size, pad (p1, psame) or pool less")
    return Flow(flow.c, h, w)


def _geometry(layer: Layer, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """(kernel, stride, padding, dilation) of a conv, pooling or maxout token; psame: (K-1)·D // 2."""
    o = layer.opts
    k, s, d = o.get("k", kernel), o.get("s", stride), o.get("d", 1)
    if min(k, s, d) < 1:
        raise CnnkitError(f"spec token {layer.token!r}: kernel, stride and dilation must be at least 1")
    p = (k - 1) * d // 2 if o.get("p") == "same" else o.get("p", 0)
    return k, s, p, d


def _conv(layer: Layer, flow: Flow) -> tuple[list, Flow]:
    _need_maps(layer, flow)
    k, s, p, d = _geometry(layer, 3, 1)
    out = _window(layer, flow, k, s, p, d)
    return [("conv", nn.Conv2d(flow.c, int(layer.n), k, s, p, d))], replace(out, c=int(layer.n))


def _pool(layer: Layer, flow: Flow) -> tuple[list, Flow]:
    _need_maps(layer, flow)
    k, s, p, _ = _geometry(layer, int(layer.n), int(layer.n))
    if p > k // 2:
        raise CnnkitError(f"spec token {layer.token!r}: padding {p} is over half its {k}×{k} window")
    kind = "avgpool" if layer.kind == "avgpool" else "maxpool"
    module = nn.AvgPool2d(k, s, p) if kind == "avgpool" else nn.MaxPool2d(k, s, p)
    return [(kind, module)], _window(layer, flow, k, s, p)


def _fc(layer: Layer, flow: Flow) -> tuple[list, Flow]:
    flat, flow = _flattened(flow)
    units = int(layer.n)
    return [*flat, ("fc", nn.Linear(flow.c, units))], Flow(units)


def _flattened(flow: Flow) -> tuple[list, Flow]:
    if not flow.maps:
        return [], flow
    return [("flatten", nn.Flatten())], Flow(flow.c * flow.h * flow.w)


def _maxout(layer: Layer, flow: Flow) -> tuple[list, Flow]:
    units, pieces = int(layer.n), layer.opts.get("x", 2)
    if flow.maps:
        k, s, p, d = _geometry(layer, 1, 1)
        out = _window(layer, flow, k, s, p, d)
        return [("maxout", maxout_conv(flow.c, units, pieces, k, s, p, d))], replace(out, c=units)
    if set(layer.opts) - {"x"}:
        raise CnnkitError(f"spec token {layer.token!r}: a maxout over a vector is a Linear layer, without kernel, "
                          "stride, padding or dilation; write maxout<N>x<K>")
    return [("maxout", maxout_linear(flow.c, units, pieces))], Flow(units)


def _dropout(layer: Layer, flow: Flow) -> tuple[list, Flow]:
    spatial = layer.kind == "sdropout"
    rate = layer.n if layer.n is not None else (0.1 if spatial else 0.5)
    if not 0 <= rate < 1:
        raise CnnkitError(f"spec token {layer.token!r}: a dropout rate lies in [0, 1), got {rate}")
    if spatial:
        _need_maps(layer, flow)
        return [("sdropout", nn.Dropout2d(rate))], flow
    return [("dropout", nn.Dropout(rate))], flow


def _simple(layer: Layer, flow: Flow) -> tuple[list, Flow]:
    """The layers without weights to size: bn, lrn, flatten, gap, gmp, activations."""
    kind = layer.kind
    if kind == "act":
        return [(layer.token, make_activation(layer.token, flow.c))], flow
    if kind == "bn":
        return [("bn", nn.BatchNorm2d(flow.c) if flow.maps else nn.BatchNorm1d(flow.c))], flow
    if kind == "flatten":
        flat, out = _flattened(flow)
        return flat or [("flatten", nn.Flatten())], out
    _need_maps(layer, flow)
    if kind == "lrn":
        return [("lrn", paper_lrn(int(layer.n or 5)))], flow
    pool = nn.AdaptiveAvgPool2d(1) if kind == "gap" else nn.AdaptiveMaxPool2d(1)
    return [(kind, pool), ("flatten", nn.Flatten())], Flow(flow.c)


_BUILDERS = {"conv": _conv, "pool": _pool, "maxpool": _pool, "avgpool": _pool, "fc": _fc, "maxout": _maxout,
             "dropout": _dropout, "sdropout": _dropout}


def _output_index(layers: list[Layer]) -> int | None:
    """The index of the output layer: the last fc, where only activations and dropout follow it."""
    for i in range(len(layers) - 1, -1, -1):
        if layers[i].kind == "fc":
            return i
        if layers[i].kind not in ("act", "dropout"):
            return None
    return None


def with_outputs(layers: list[Layer], num_classes: int) -> list[Layer]:
    """The layers with the output fc sized to `num_classes` (added where the spec ends in no fc)."""
    i = _output_index(layers)
    if i is None:
        return [*layers, Layer("fc", "fc", float(num_classes))]
    head = layers[i]
    if head.n is not None and int(head.n) != num_classes:
        warnings.warn(f"spec: the output layer {head.token} gives {int(head.n)} outputs but the task has "
                      f"{num_classes}; it is built as fc{num_classes} (write a bare `fc` to take the task's)",
                      stacklevel=3)
    return [*layers[:i], replace(head, n=float(num_classes)), *layers[i + 1:]]


def build_layers(layers: list[Layer], in_channels: int, input_size: Sequence[int]) -> OrderedDict[str, nn.Module]:
    """Modules named kind + count (conv1, relu2, fc3), each sized by what flows into it."""
    flow, modules, counts = Flow(in_channels, *input_size[-2:]), OrderedDict(), {}
    for layer in layers:
        made, flow = _BUILDERS.get(layer.kind, _simple)(layer, flow)
        for kind, module in made:
            counts[kind] = counts.get(kind, 0) + 1
            modules[f"{kind}{counts[kind]}"] = module
    return modules


def build_spec_net(text: str, *, num_classes: int = DEFAULT_OUTPUTS, in_channels: int = DEFAULT_INPUT[0],
                   input_size: Sequence[int] = DEFAULT_INPUT[1:]) -> SpecNet:
    """The network of spec string `text` for `in_channels` maps of `input_size` (H, W) and `num_classes` outputs."""
    layers = with_outputs(parse(text), num_classes)
    return SpecNet(text, build_layers(layers, in_channels, input_size))


def _head(layers: list[Layer]) -> str:
    """The output fc's module name (fc<count>), as build_layers names it."""
    fcs = sum(layer.kind == "fc" for layer in layers)
    return f"fc{fcs if _output_index(layers) is not None else fcs + 1}"


def spec_model(name: str) -> ModelSpec:
    """The ModelSpec of a 'spec:...' name: its builder (default outputs: the output fc's width, else 10), the
    output fc as head, and the default input 3×32×32 (the data's channels and size replace it in training)."""
    text = spec_text(name)
    layers = parse(text)
    i = _output_index(layers)
    outputs = int(layers[i].n) if i is not None and layers[i].n is not None else DEFAULT_OUTPUTS
    return ModelSpec(SPEC_PREFIX + text, partial(build_spec_net, text, num_classes=outputs), paper="a spec",
                     head=_head(layers), input_size=DEFAULT_INPUT)
