"""Losses: pixel (L1, Charbonnier or MSE) against HR, plus output distillation from a frozen teacher.

``total = (1 - alpha) * pixel(student, hr) + alpha * pixel(student, teacher)`` when a teacher is given (alpha = 0.2
is the seed paper's best), else ``pixel(student, hr)``. So alpha = 0 is plain training, and the distillation term is
exactly zero when the student reproduces the teacher.
"""

from __future__ import annotations

from ..errors import ConfigError, require_torch

#: ``mse`` is for a final fine-tune stage (the peers' recipe: L1 first, then a short L2 stage at a low learning rate,
#: which PSNR, an MSE measure, rewards).
PIXEL_LOSSES = ("l1", "charbonnier", "mse")


def pixel_loss(name: str, pred, target, eps: float = 1e-3):
    torch = require_torch()
    if name == "l1":
        return (pred - target).abs().mean()
    if name == "charbonnier":
        return torch.sqrt((pred - target) ** 2 + eps * eps).mean() - eps  # 0 at a perfect match
    if name == "mse":
        return ((pred - target) ** 2).mean()
    raise ConfigError(f"unknown pixel loss {name!r}; valid losses are {PIXEL_LOSSES}")


def distillation_loss(name: str, student_out, hr, teacher_out=None, alpha: float = 0.0) -> dict:
    """``{'total', 'pixel', 'kd'}``: the weighted sum and its two parts (``kd`` is 0 without a teacher)."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"distillation weight alpha must be in [0, 1], got {alpha}")
    pixel = pixel_loss(name, student_out, hr)
    if teacher_out is None or alpha == 0.0:
        return {"total": pixel, "pixel": pixel, "kd": pixel.detach() * 0}
    kd = pixel_loss(name, student_out, teacher_out.detach())
    return {"total": (1 - alpha) * pixel + alpha * kd, "pixel": pixel, "kd": kd}


# VGG19 'E' configuration (torchvision's layer indices): conv channels, "M" = max-pool.
_VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)
#: conv5_4 before its ReLU (index 34 in torchvision's ``features``), the ESRGAN choice.
VGG_LAYER = 34


def _vgg19_features(upto: int):
    torch = require_torch()
    layers, channels = [], 3
    for v in _VGG19:
        if v == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            layers += [torch.nn.Conv2d(channels, v, 3, padding=1), torch.nn.ReLU(inplace=False)]
            channels = v
    return torch.nn.Sequential(*layers[:upto + 1])


class PerceptualLoss:
    """L1 between VGG19 conv5_4 features (pre-activation) of prediction and target, ImageNet-normalised.

    The weights are read from a local safetensors file with torchvision's ``features.N.weight/bias`` keys; nothing
    is ever downloaded.
    """

    def __init__(self, weights_path, device: str = "cpu"):
        torch = require_torch()
        from pathlib import Path

        from safetensors.torch import load_file

        path = Path(weights_path) if weights_path else None
        if path is None or not path.is_file():
            raise ConfigError(
                f"the perceptual loss needs VGG19 weights as a local safetensors file (got {weights_path!r}); "
                "save torchvision's vgg19 IMAGENET1K_V1 'features' state dict with safetensors on a machine that "
                "has it, pass the file as vgg_weights=FILE, or set the perceptual weight to 0 (nothing is downloaded)")
        net = _vgg19_features(VGG_LAYER)
        state = {k[len("features."):]: v for k, v in load_file(str(path)).items() if k.startswith("features.")}
        wanted = net.state_dict().keys()
        missing = sorted(set(wanted) - set(state))
        if missing:
            raise ConfigError(f"{path} lacks VGG19 feature weights {missing[:3]} (keys must be features.N.weight)")
        net.load_state_dict({k: state[k] for k in wanted})
        self.net = net.to(device).eval().requires_grad_(False)
        self.mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

    def __call__(self, pred, target):
        a = self.net((pred - self.mean) / self.std)
        b = self.net((target - self.mean) / self.std)
        return (a - b.detach()).abs().mean()


class FeatureDistiller:
    """Feature distillation: the output of student block ``i`` is mapped by a 1x1 conv to the teacher's width and
    matched (L1) to the output of the teacher block at the same relative depth. The adapters train with the student
    and are dropped afterwards."""

    def __init__(self, student, teacher, device: str = "cpu"):
        torch = require_torch()
        ns, nt = len(student.blocks), len(teacher.blocks)
        self.pairs = [(i, round((i + 1) * nt / ns) - 1) for i in range(ns)]
        self.adapters = torch.nn.ModuleList(
            torch.nn.Conv2d(student.cfg.embed_dim, teacher.cfg.embed_dim, 1) for _ in self.pairs).to(device)
        self._feats = {"s": {}, "t": {}}
        for i, j in self.pairs:
            student.blocks[i].register_forward_hook(self._keep("s", i))
            teacher.blocks[j].register_forward_hook(self._keep("t", j))

    def _keep(self, side, index):
        def hook(module, inputs, output):
            self._feats[side][index] = output
        return hook

    def loss(self):
        """L1 over the pairs captured by the last student and teacher forward passes."""
        terms = [(adapter(self._feats["s"][i]) - self._feats["t"][j].detach()).abs().mean()
                 for adapter, (i, j) in zip(self.adapters, self.pairs)]
        return sum(terms) / len(terms)
