"""The torch heads of the trained projectors: a residual MLP and a SAIL-style gated MLP, each able to start as a
given affine map (``warm_start``), so training begins from the closed-form ridge solution."""
from __future__ import annotations


def _torch():
    import torch

    return torch


# ---- heads -----------------------------------------------------------------------------------------------------
def _residual_mlp(d_in: int, d_out: int, hidden_dim: int, n_blocks: int, dropout: float):
    """Linear stem into ``d_out``, then ``n_blocks`` pre-norm residual blocks ``h + W2 GELU(W1 LN(h))``."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(d_out)
            self.fc1 = nn.Linear(d_out, hidden_dim)
            self.fc2 = nn.Linear(hidden_dim, d_out)
            self.drop = nn.Dropout(dropout)

        def forward(self, h):
            return h + self.drop(self.fc2(nn.functional.gelu(self.fc1(self.norm(h)))))

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Linear(d_in, d_out)
            self.blocks = nn.Sequential(*[Block() for _ in range(n_blocks)])

        def forward(self, x):
            return self.blocks(self.stem(x))

        def warm_start(self, W, b):
            """Start as the affine map x W + b: the stem takes it, every block's output layer starts at zero."""
            _set_linear(self.stem, W, b)
            for blk in self.blocks:
                nn.init.zeros_(blk.fc2.weight)
                nn.init.zeros_(blk.fc2.bias)

    return Head()


def _gated_mlp(d_in: int, d_out: int, hidden_dim: int, dropout: float):
    """SAIL-style GLU head: ``W_skip x + W_o( SiLU(W_g LN(x)) * W_u LN(x) )``."""
    from torch import nn

    class GLUHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(d_in)
            self.gate = nn.Linear(d_in, hidden_dim)
            self.up = nn.Linear(d_in, hidden_dim)
            self.out = nn.Linear(hidden_dim, d_out)
            self.skip = nn.Linear(d_in, d_out)
            self.drop = nn.Dropout(dropout)

        def forward(self, x):
            h = self.norm(x)
            return self.skip(x) + self.out(self.drop(nn.functional.silu(self.gate(h)) * self.up(h)))

        def warm_start(self, W, b):
            """Start as the affine map x W + b: the skip takes it, the gated branch's output starts at zero."""
            _set_linear(self.skip, W, b)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    return GLUHead()


def _set_linear(layer, W, b):
    torch = _torch()
    with torch.no_grad():
        layer.weight.copy_(W.T.to(layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_(b.to(layer.bias.dtype))


def _warm_start(head, W, b):
    if hasattr(head, "warm_start"):
        head.warm_start(W, b)
    else:  # a plain nn.Linear
        _set_linear(head, W, b)
