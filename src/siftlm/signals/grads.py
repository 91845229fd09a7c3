"""Per-example LoRA-gradient features (DPP paper, section 3.3), all examples of a batch in one backward pass.

LoRA at initialisation on every chosen linear layer W (m x n): h = Wz + BAz with B = 0 (m x r), so the model's
outputs are unchanged, and A (r x n) ~ N(0, 1/r), i.e. standard deviation 1/sqrt(r): a distance-preserving
random projection of each row of the weight gradient (eq. 4: grad_B = grad_h z^T A^T = grad_W A^T).
peft's ``init_lora_weights="gaussian"`` draws A with standard deviation 1/r (variance 1/r^2), which shrinks
every feature by 1/sqrt(r) and is not the paper's projection; and peft multiplies BA by alpha/r. We
therefore use no peft module and no scaling: since B = 0 the forward pass is the base model's, and

    grad_B(example i) = sum over that example's positions t of  g_t (A z_t)^T,

where z_t is the layer's input and g_t = dL/dh_t its output gradient. One forward records A z_t (B x T x r,
small) at every chosen layer; one backward of sum_i L_i (L_i = mean response NLL of example i; examples in a
batch do not interact, so dL/dh restricted to example i is dL_i/dh) delivers g at each layer through a tensor
hook, which immediately reduces it to the per-example (B, m*r) gradient and projects it. No weight gradient
is ever computed (parameters keep requires_grad=False) and no batch-size-1 loop is run.

The concatenated vec(grad_B) has sum(m)*r entries (1.2M for SmolLM2-135M at r=8), so a second, sparse
Johnson-Lindenstrauss projection to D dims follows (Kane & Nelson's block construction): each input
coordinate gets one nonzero +-1/sqrt(s) in each of s blocks of D/s rows, drawn from a generator seeded by
(seed, layer name) on the CPU, so the projection never exists as a matrix and is the same in every run,
process and device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch

from siftlm.config import GradConfig
from siftlm.errors import UsageError
from siftlm.models.batching import collate, plan_batches
from siftlm.models.forward import evaluating, last_hidden, parts, response_nll
from siftlm.models.template import Encoded
from siftlm.signals.embed import response_mean
from siftlm.signals.losses import batch_stats, empty_columns
from siftlm.stats import l2_normalize

GRAD_NORM_FLOOR = 1e-30       # the floor the grads pass has always normalised with: stored vectors stay the same


def target_layers(model, target_modules: str = "all-linear") -> list[tuple[str, torch.nn.Linear]]:
    """(name, module) of the decoder's linear layers to probe; the output layer is never included.

    On a PEFT model the adapters' own lora_A / lora_B layers are skipped and a wrapped layer's ``base_layer``
    is probed under the wrapper's name (its output gradient is the wrapper's: h = base(z) + lora(z)).
    """
    decoder = parts(model).decoder
    names = None if target_modules == "all-linear" else {t.strip() for t in target_modules.split(",") if t.strip()}
    layers = []
    for path, module in decoder.named_modules():
        segs = path.split(".")
        if not isinstance(module, torch.nn.Linear) or any(p.startswith("lora_") for p in segs):
            continue
        logical = ".".join(segs[:-1]) if segs[-1] == "base_layer" else path
        if names is None or logical.rsplit(".", 1)[-1] in names:
            layers.append((logical, module))
    if not layers:
        raise UsageError(f"no nn.Linear layers match target_modules={target_modules!r} in {type(decoder).__name__}")
    return layers


def _generator(seed: int, name: str, salt: str) -> torch.Generator:
    """A CPU generator seeded by (seed, salt, name): draws are the same on every device, then moved."""
    digest = hashlib.sha256(f"{seed}:{salt}:{name}".encode()).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return g


def lora_a(name: str, layer: torch.nn.Linear, rank: int, seed: int, device: torch.device) -> torch.Tensor:
    """A (r x n) ~ N(0, 1/r) for one layer, seeded by (seed, layer name)."""
    g = _generator(seed, name, "lora-A")
    return (torch.randn(rank, layer.in_features, generator=g) / rank ** 0.5).to(device)


class SparseJL:
    """Seeded sparse JL map R^P -> R^D (block construction, s nonzeros per column), applied block by block.

    ``add(name, x, out_t)`` adds the projection of x (B, P_name) to out_t (D, B): transposed, so that each
    scattered row is B contiguous values. The map of the concatenation of
    all blocks is the sum of the blocks' maps, so layers are projected as their gradients arrive.
    """

    def __init__(self, dim: int, density: int = 4, seed: int = 0, device: torch.device | str = "cpu"):
        if dim % density:
            raise UsageError(f"JL dim {dim} must be a multiple of density {density}")
        self.dim, self.density, self.seed, self.device = dim, density, seed, torch.device(device)
        self._maps: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _map(self, name: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (name, size)
        if key not in self._maps:
            g = _generator(self.seed, name, f"sjlt-{self.dim}-{self.density}")
            block = self.dim // self.density
            rows = torch.randint(0, block, (self.density, size), generator=g)
            rows += torch.arange(self.density)[:, None] * block
            signs = torch.randint(0, 2, (self.density, size), generator=g).float() * 2 - 1
            self._maps[key] = (rows.to(self.device), (signs / self.density ** 0.5).to(self.device))   # (s, P) each
        return self._maps[key]

    def add(self, name: str, x: torch.Tensor, out_t: torch.Tensor) -> None:
        rows, signs = self._map(name, x.shape[1])
        xt = x.t()                                  # (P, B)
        for k in range(self.density):
            out_t.index_add_(0, rows[k], xt * signs[k][:, None])

    def project(self, blocks: dict[str, torch.Tensor]) -> torch.Tensor:
        b = next(iter(blocks.values())).shape[0]
        out_t = torch.zeros(self.dim, b, device=self.device)      # (D, B)
        for name, x in blocks.items():
            self.add(name, x, out_t)
        return out_t.t()


class LoraGradProbe:
    """Hooks that turn one forward + backward of a batch into per-example vec(grad_B), projected."""

    def __init__(self, model, cfg: GradConfig):
        self.model, self.cfg = model, cfg
        self.device = next(model.parameters()).device
        self.layers = target_layers(model, cfg.target_modules)
        self.a = {n: lora_a(n, m, cfg.rank, cfg.seed, self.device) for n, m in self.layers}
        self.jl = SparseJL(cfg.resolved_dim(self.device), cfg.density, cfg.seed, self.device)
        self.n_params = sum(m.out_features for _, m in self.layers) * cfg.rank   # length of concatenated vec(grad_B)

    def per_example(self, batch, *, sink: Callable[[str, torch.Tensor], None],
                    hidden_sink: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
        """Run the batch; call ``sink(layer, grad_B (B, m*r))`` for each layer; return per-example losses (B,).
        ``hidden_sink(hidden)``: called with the batch's last hidden states (B, T, H), detached, after the backward
        (the fused loss and lm-embed passes use this forward's).

        A layer called more than once per forward contributes the sum over its calls (its B is one parameter).
        """
        handles, acc = [], {}
        shape = tuple(batch.input_ids.shape)
        mask = batch.attention_mask.to(self.device)[..., None].float()      # (B, T, 1): padding contributes nothing

        def forward_hook(name):
            def hook(module, inputs, output):
                z = inputs[0]                                                       # (B, T, in)
                if tuple(z.shape[:2]) != shape or z.dim() != 3:
                    raise UsageError(f"layer {name} sees input {tuple(z.shape)}, not (batch, tokens, features) "
                                     f"{shape}: per-example gradients need token-aligned layers; exclude it with "
                                     "--target-modules")
                za = (z.detach().float() @ self.a[name].t()) * mask                 # (B, T, r), this call's

                def grad_hook(g, za=za):
                    grad_b = torch.einsum("bto,btr->bor", g.float(), za).reshape(za.shape[0], -1)   # (B, m*r)
                    acc[name] = acc[name] + grad_b if name in acc else grad_b
                output.register_hook(grad_hook)
            return hook

        def leaf_hook(module, inputs, output):   # the graph starts at the embeddings; weights need no grad
            return output.detach().requires_grad_(True)

        frozen = [p for p in self.model.parameters() if p.requires_grad]    # no weight gradient is wanted
        try:
            handles.append(self.model.get_input_embeddings().register_forward_hook(leaf_hook))
            handles += [m.register_forward_hook(forward_hook(n)) for n, m in self.layers]
            for p in frozen:
                p.requires_grad_(False)
            with torch.enable_grad():
                hidden = last_hidden(self.model, batch)                             # (B, T, H)
                nll, rows = response_nll(self.model, batch, hidden)                 # (N_resp,), (N_resp,)
                n_rows = batch.input_ids.shape[0]
                counts = torch.zeros(n_rows, device=nll.device).index_add_(0, rows, torch.ones_like(nll))   # (B,)
                losses = torch.zeros(n_rows, device=nll.device).index_add_(0, rows, nll.float()) / counts   # (B,)
                losses.sum().backward()
            for name, _ in self.layers:
                if name in acc:
                    sink(name, acc.pop(name))
            if hidden_sink is not None:
                hidden_sink(hidden.detach())
        finally:
            for h in handles:
                h.remove()
            for p in frozen:
                p.requires_grad_(True)
            acc.clear()
        return losses.detach()


def grad_pass(model, encoded: list[Encoded], *, pad_id: int, cfg: GradConfig | None = None, token_budget: int = 4096,
              probe: LoraGradProbe | None = None, on_batch: Callable[[int], None] | None = None) -> dict[str, list]:
    """Per-example projected LoRA gradients of the mean response loss.

    Returns {"vector": float32 (D,) per example, "grad_norm": ||vec(grad_B)|| before projection,
    "loss": the mean response NLL} in input order; vectors are L2-normalised when ``cfg.normalize``. With
    ``cfg.keep_layers`` also "layer_grads": every layer's vec(grad_B) before projection, concatenated in layer order
    (float32; its per-layer sizes are ``layer_sizes(probe)``), for DataInf.
    """
    return grads_and(model, encoded, pad_id=pad_id, cfg=cfg, token_budget=token_budget, probe=probe,
                     on_batch=on_batch)["grads"]


def grads_and(model, encoded: list[Encoded], *, pad_id: int, also: tuple[str, ...] = (), cfg: GradConfig | None = None,
              token_budget: int = 4096, probe: LoraGradProbe | None = None,
              on_batch: Callable[[int], None] | None = None) -> dict[str, dict]:
    """The grads pass's columns (``grad_pass``) under "grads", and from the same forward the columns of the passes in
    ``also`` under their names: "loss" (``siftlm.signals.losses``' columns, from the batch's last hidden states) and
    "lm-embed" ("vector": their mean over the response tokens), as their own passes give them."""
    cfg = cfg or GradConfig()
    probe = probe or LoraGradProbe(model, cfg)
    vectors: list = [None] * len(encoded)
    norms = np.zeros(len(encoded))
    losses = np.zeros(len(encoded))
    layers: list = [None] * len(encoded)
    stats = empty_columns(len(encoded))
    means: list = [None] * len(encoded)
    with evaluating(model):
        for index in plan_batches([len(e.input_ids) for e in encoded], token_budget):
            batch = collate(encoded, index, pad_id)
            y_t = torch.zeros(probe.jl.dim, len(index), device=probe.device)   # (D, B) projected, transposed
            sq = torch.zeros(len(index), device=probe.device)                  # (B,) squared norms before projection

            kept: dict = {}

            def sink(name, g, y_t=y_t, sq=sq, kept=kept):
                probe.jl.add(name, g, y_t)
                sq.add_(g.pow(2).sum(1))
                if cfg.keep_layers:
                    kept[name] = g.detach().float().cpu()

            def hidden_sink(hidden, batch=batch, index=index):               # (B, T, H), detached
                if "loss" in also:
                    for c, v in batch_stats(model, batch, hidden).items():
                        stats[c][index] = v
                if "lm-embed" in also:
                    mean = response_mean(hidden, batch).cpu().numpy()         # (B, H)
                    for row, i in enumerate(index):
                        means[i] = mean[row].astype(np.float32)

            loss = probe.per_example(batch, sink=sink, hidden_sink=hidden_sink if also else None)   # (B,)
            y = y_t.t()                                                          # (B, D)
            if cfg.normalize:
                y = l2_normalize(y, floor=GRAD_NORM_FLOOR)
            y = y.cpu().numpy()
            for row, i in enumerate(index):
                vectors[i] = y[row].astype(np.float32)
                norms[i] = float(sq[row].sqrt())
                losses[i] = float(loss[row])
                if cfg.keep_layers:
                    layers[i] = torch.cat([kept[n][row] if n in kept else torch.zeros(m.out_features * cfg.rank)
                                           for n, m in probe.layers]).numpy()
            if on_batch:
                on_batch(len(index))
    out = {"vector": vectors, "grad_norm": norms, "loss": losses}
    if cfg.keep_layers:
        out["layer_grads"] = layers
        out["layer_sizes"] = [layer_sizes(probe)] * len(encoded)
    return {"grads": out, **({"loss": stats} if "loss" in also else {}),
            **({"lm-embed": {"vector": means}} if "lm-embed" in also else {})}


def layer_sizes(probe: LoraGradProbe) -> list[int]:
    """Length of each layer's vec(grad_B) in ``layer_grads``, in order: out_features x r."""
    return [m.out_features * probe.cfg.rank for _, m in probe.layers]


def reference_lora_grads(model, encoded: Encoded, *, pad_id: int, cfg: GradConfig | None = None) -> dict[str, torch.Tensor]:
    """Slow reference: one example, explicit zero B parameters added to each layer's output, autograd.

    Returns {layer: vec(grad_B) (m*r,)} computed by ``torch.autograd.grad``; used by the tests and the
    benchmark's batch-size-1 baselines, never by the pass itself.
    """
    cfg = cfg or GradConfig()
    device = next(model.parameters()).device
    layers = target_layers(model, cfg.target_modules)
    b_params = {n: torch.zeros(m.out_features, cfg.rank, device=device, requires_grad=True) for n, m in layers}
    a = {n: lora_a(n, m, cfg.rank, cfg.seed, device) for n, m in layers}

    def hook(name):
        return lambda module, inputs, output: output + (inputs[0].float() @ a[name].t()) @ b_params[name].t()

    handles = [m.register_forward_hook(hook(n)) for n, m in layers]
    try:
        with evaluating(model), torch.enable_grad():
            batch = collate([encoded], [0], pad_id)
            nll, _ = response_nll(model, batch)
            grads = torch.autograd.grad(nll.float().mean(), list(b_params.values()))
    finally:
        for h in handles:
            h.remove()
    return {n: g.reshape(-1) for n, g in zip(b_params, grads, strict=True)}
