"""``dte``: diffusion-time estimation with a network (Livernoche et al. 2024, the DTE-categorical variant).

Training rows are diffused with a variance-preserving-in-time, variance-only forward process: at step t of
T, ``x_t = x_0 + sigma_t * eps`` with ``sigma_t^2 = 1 - prod_{s<=t}(1 - beta_s)`` and linear betas
(1e-4 .. 0.01, T = 400). An MLP classifies a noisy row into one of ``num_bins`` equal ranges of t. The score
of a clean row is the expected bin under the predicted distribution: how much noise the network thinks the
row already carries. One forward pass per row.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch
from torch import nn

__all__ = ["DTENet", "NeuralDTE", "dte_sigmas"]


def dte_sigmas(T: int = 400, beta_start: float = 1e-4, beta_end: float = 0.01) -> torch.Tensor:
    betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    return (1 - torch.cumprod(1 - betas, 0)).sqrt().float()


class DTENet(nn.Module):
    """MLP d -> 256 -> 512 -> 256 -> num_bins with ReLU, dropout after the inner layers."""

    def __init__(self, dim: int, hidden=(256, 512, 256), num_bins: int = 7, dropout: float = 0.5):
        super().__init__()
        layers, prev = [], dim
        for i, h in enumerate(hidden):
            layers += [nn.Linear(prev, h), nn.ReLU()]
            if dropout and i > 0:
                layers.append(nn.Dropout(dropout))
            prev = h
        layers.append(nn.Linear(prev, num_bins))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class NeuralDTE:
    """Fitted state of the ``dte`` scorer over standardized rows."""

    name = "dte"
    DEFAULTS = {"T": 400, "num_bins": 7, "hidden": [256, 512, 256], "dropout": 0.5, "steps": 3000,
                "batch_size": 256, "lr": 1e-3, "weight_decay": 5e-4}

    def __init__(self, config: dict, dim: int):
        self.config = {**self.DEFAULTS, **config}
        c = self.config
        self.net = DTENet(dim, tuple(c["hidden"]), int(c["num_bins"]), float(c["dropout"]))
        self.dim = int(dim)

    @classmethod
    def fit(cls, x, *, seed: int = 0, steps=None, device=None, **_) -> "NeuralDTE":
        X = torch.as_tensor(np.asarray(x, np.float32))
        self = cls({} if steps is None else {"steps": int(steps)}, X.shape[1])
        c = self.config
        torch.manual_seed(seed)
        self.net = DTENet(self.dim, tuple(c["hidden"]), int(c["num_bins"]), float(c["dropout"]))
        dev = torch.device(device or "cpu")
        net = self.net.to(dev).train()
        X = X.to(dev)
        sig = dte_sigmas(int(c["T"])).to(dev)
        T, bins, bs = int(c["T"]), int(c["num_bins"]), int(c["batch_size"])
        opt = torch.optim.AdamW(net.parameters(), lr=float(c["lr"]), weight_decay=float(c["weight_decay"]))
        total = int(c["steps"])
        # one-cycle schedule, warming up over 5 % of the steps (at least 2 steps; a constant rate below 8 steps)
        sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(c["lr"]), total_steps=total,
                                                     pct_start=max(0.05, 2.5 / total))
                 if total >= 8 else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0))
        g = torch.Generator(device="cpu").manual_seed(seed)
        for _step in range(total):
            idx = torch.randint(len(X), (bs,), generator=g).to(dev)
            t = torch.randint(T, (bs,), generator=g).to(dev)
            noisy = X[idx] + sig[t][:, None] * torch.randn(bs, self.dim, generator=g).to(dev)
            target = torch.clamp(t * bins // T, max=bins - 1)
            loss = nn.functional.cross_entropy(net(noisy), target)
            if not torch.isfinite(loss):
                from polydiff.training import TrainingDiverged

                raise TrainingDiverged(f"dte training diverged at step {_step} (loss {loss.item()})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        self.net = net.cpu().eval()
        return self

    @torch.no_grad()
    def score(self, x) -> np.ndarray:
        from polydiff.scoring import rowwise

        X = torch.as_tensor(np.asarray(x, np.float32)) if not isinstance(x, torch.Tensor) else x.float().cpu()
        bins = torch.arange(int(self.config["num_bins"]), dtype=torch.float32)
        return rowwise(lambda b: torch.softmax(self.net(b), -1) @ bins, X).double().numpy()

    def bundle(self) -> Tuple[Dict[str, torch.Tensor], dict]:
        return ({f"dte.{k}": v.contiguous() for k, v in self.net.state_dict().items()},
                {"config": self.config, "dim": self.dim})

    @classmethod
    def load(cls, tensors: Dict[str, torch.Tensor], meta: dict) -> "NeuralDTE":
        self = cls(meta["config"], meta["dim"])
        sd = {k[len("dte."):]: v for k, v in tensors.items() if k.startswith("dte.")}
        self.net.load_state_dict(sd)
        self.net.eval()
        return self
