"""The embedding-density baselines of Fishyscapes (Blum et al.): how unlike the training pixels a pixel's
features are, read from a few layers of the segmenter.

* :class:`GaussianDensity` - one full-covariance Gaussian per layer, fitted from streamed sufficient statistics
  (count, sum, sum of outer products, in float64 about a fixed shift, so memory is D^2 whatever the pixel count).
  The covariance gets a ridge ``ridge x mean variance`` on its diagonal (default 1e-4: dead ReLU channels make
  the sample covariance singular; the ridge gives them a tiny but finite variance, so a pixel that activates one
  is very unlikely, as it should be). The Cholesky factor L of the covariance is computed once in float64 and
  its inverse (a triangular solve of the identity) is kept as a float32 buffer: at inference the NLL of a pixel
  is 0.5 (|L^-1 (x - mu)|^2 + log|Sigma| + D log 2 pi), one float32 matmul. This Gaussian stands in for the
  normalizing flow of the paper ("density - single-layer NLL").
* :class:`KNNBank` - a bounded bank of training-pixel embeddings (per-image quota chosen by the caller, then
  reservoir sampling into ``capacity`` rows, deterministic given the seed); the score is the mean (or k-th)
  Euclidean distance to the k nearest bank rows, by an exact faiss ``IndexFlatL2`` (any faiss index factory
  string may be given for an approximate one) or, on CUDA, an exact chunked torch search.
* :class:`DensityScorer` - the per-layer Gaussians, the bank and the per-layer NLL standardisation and logistic
  regression; from hooked features it gives the four methods of :data:`DENSITY_METHODS`:

  - ``knn``: kNN distance in the ``knn_layer`` features;
  - ``nll_single``: the NLL (nats) of the ``single_layer`` Gaussian;
  - ``nll_min``: min over layers of z_l = (NLL_l - m_l) / s_l, where m_l and s_l are the mean and standard
    deviation of layer l's NLL map (at the image size) over inlier training pixels - the non-void, non-pasted
    pixels of the AnomalyMix pass, i.e. training images - so z_l reads "training standard deviations above a
    typical training pixel" and the layers become comparable; the minimum (as the Fishyscapes baseline) flags a
    pixel only when every layer finds it unlikely;
  - ``density_logreg``: the log-odds w . z + b of a logistic regression over the standardised NLLs, fitted
    (scikit-learn) on pasted outliers against inlier pixels.

  Each layer's NLL is computed on its own, un-interpolated features at its native stride, then the maps are
  resized (bilinear) to the finest stride among the layers, combined there, and upsampled to the image size.

Pure tensor code: no files, no configs (the fitting job is :mod:`synboost.training.density`).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch
from torch import nn

from synboost.models.segmenter import upsample

DENSITY_METHODS = ("knn", "nll_single", "nll_min", "density_logreg")


# ------------------------------------------------------------------------------------------------ Gaussian


class GaussianDensity(nn.Module):
    """A full-covariance Gaussian over D-dim features: :meth:`update` with (N, D) chunks, :meth:`fit`, then
    ``forward`` / :meth:`nll`. Saved buffers: ``mean``, ``whiten`` (L^-1, lower triangular), ``log_det``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("whiten", torch.eye(dim))
        self.register_buffer("log_det", torch.zeros(()))
        # streamed statistics about a shift (the first chunk's mean): memory D^2 in float64, never saved
        self.register_buffer("_n", torch.zeros((), dtype=torch.float64), persistent=False)
        self.register_buffer("_shift", torch.zeros(dim, dtype=torch.float64), persistent=False)
        self.register_buffer("_sum", torch.zeros(dim, dtype=torch.float64), persistent=False)
        self.register_buffer("_outer", torch.zeros(dim, dim, dtype=torch.float64), persistent=False)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Add (N, D) feature vectors to the statistics."""
        if x.numel() == 0:
            return
        x = x.to(self._sum.device, torch.float64)
        if self._n == 0:
            self._shift.copy_(x.mean(0))
        x = x - self._shift
        self._n += x.shape[0]
        self._sum += x.sum(0)
        self._outer += x.T @ x

    @property
    def count(self) -> int:
        return int(self._n)

    def covariance(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, maximum-likelihood covariance) in float64 from the statistics."""
        n = self._n.clamp_min(1)
        m = self._sum / n
        cov = self._outer / n - torch.outer(m, m)
        return m + self._shift, (cov + cov.T) / 2

    @torch.no_grad()
    def fit(self, ridge: float = 1e-4) -> None:
        """Set the buffers from the statistics; the covariance gets ``ridge x mean(diag)`` on its diagonal."""
        if self._n < 2:
            raise ValueError("GaussianDensity.fit: fewer than 2 feature vectors")
        mean, cov = self.covariance()
        scale = float(cov.diagonal().mean())
        eye = torch.eye(self.dim, dtype=torch.float64, device=cov.device)
        chol = torch.linalg.cholesky(cov + ridge * (scale if scale > 0 else 1.0) * eye)
        inv = torch.linalg.solve_triangular(chol, eye, upper=False)
        self.mean.copy_(mean.float())
        self.whiten.copy_(inv.float())
        self.log_det.copy_(2 * torch.log(chol.diagonal()).sum().float())

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood (nats) of (N, D) vectors, computed in float32."""
        z = (x.float() - self.mean) @ self.whiten.T
        return 0.5 * (z.square().sum(1) + self.log_det + self.dim * math.log(2 * math.pi))

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) features -> (B, h, w) NLL map."""
        b, d, h, w = feat.shape
        return self.nll(feat.permute(0, 2, 3, 1).reshape(-1, d)).view(b, h, w)


# ------------------------------------------------------------------------------------------------ kNN


class KNNBank(nn.Module):
    """A bank of at most ``capacity`` embeddings (the ``bank`` buffer, ``size`` rows when built for loading)
    and the distance of queries to their ``k`` nearest rows (``reduce``: ``mean`` of the k distances or the
    ``kth``). ``index``: a faiss index factory string (``Flat`` = exact ``IndexFlatL2``); ``backend``: ``faiss``,
    ``torch`` (exact, chunked, on the bank's device) or ``auto`` (torch on CUDA with a Flat index, else faiss)."""

    def __init__(self, dim: int, capacity: int, k: int = 5, reduce: str = "mean", index: str = "Flat",
                 backend: str = "auto", seed: int = 0, size: int = 0):
        super().__init__()
        if reduce not in ("mean", "kth"):
            raise ValueError(f"KNNBank: reduce must be 'mean' or 'kth', got '{reduce}'")
        if backend not in ("auto", "faiss", "torch"):
            raise ValueError(f"KNNBank: backend must be auto, faiss or torch, got '{backend}'")
        self.dim, self.capacity, self.k, self.reduce = dim, capacity, k, reduce
        self.index_spec, self.backend = index, backend
        self.register_buffer("bank", torch.zeros(size, dim))
        self._rng = np.random.default_rng([seed, 104729])
        self._seen, self._fill = 0, 0
        self._buf: torch.Tensor | None = None
        self._index = None

    # -- building (reservoir sampling, algorithm R) --

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        """Offer (N, D) vectors: the first ``capacity`` are kept, then the t-th (0-based) replaces a uniform
        row with probability capacity / (t + 1); so the bank is a uniform sample of all vectors offered."""
        x = x.detach().float().cpu()
        n = x.shape[0]
        if n == 0:
            return
        if self._buf is None:
            self._buf = torch.empty(min(self.capacity, max(n, 1024)), self.dim)
        take = min(n, self.capacity - self._fill)
        if take > 0:
            need = self._fill + take
            if need > self._buf.shape[0]:  # grow by doubling, never past the capacity
                grown = torch.empty(min(self.capacity, max(need, 2 * self._buf.shape[0])), self.dim)
                grown[:self._fill] = self._buf[:self._fill]
                self._buf = grown
            self._buf[self._fill:need] = x[:take]
            self._fill = need
        if take < n:
            t = self._seen + np.arange(take, n)
            j = self._rng.integers(0, t + 1)
            for src, dst in zip(np.nonzero(j < self.capacity)[0], j[j < self.capacity]):
                self._buf[int(dst)] = x[take + int(src)]
        self._seen += n

    def finish(self) -> None:
        """Move the sampled rows into the ``bank`` buffer (the building buffer is dropped)."""
        rows = self._buf[:self._fill].clone() if self._buf is not None else torch.zeros(0, self.dim)
        self.bank = rows.to(self.bank.device)
        self._buf, self._index = None, None

    @property
    def nbytes(self) -> int:
        """Bytes held by the bank (and, while building, by its buffer)."""
        building = self._buf.numel() * 4 if self._buf is not None else 0
        return self.bank.numel() * self.bank.element_size() + building

    def _load_from_state_dict(self, *args, **kwargs):
        self._index = None
        return super()._load_from_state_dict(*args, **kwargs)

    # -- searching --

    def _faiss_index(self):
        if self._index is None:
            import faiss

            data = np.ascontiguousarray(self.bank.detach().float().cpu().numpy())
            index = faiss.index_factory(self.dim, self.index_spec, faiss.METRIC_L2)
            if not index.is_trained:
                index.train(data)
            index.add(data)
            self._index = index
        return self._index

    def squared_distances(self, q: torch.Tensor) -> torch.Tensor:
        """(N, k') squared L2 distances of (N, D) queries to their k' = min(k, bank size) nearest rows,
        ascending."""
        k = min(self.k, self.bank.shape[0])
        if k == 0:
            raise ValueError("KNNBank: the bank is empty")
        use_torch = self.backend == "torch" or (self.backend == "auto" and q.is_cuda and self.index_spec == "Flat")
        if not use_torch:
            d2, _ = self._faiss_index().search(np.ascontiguousarray(q.detach().float().cpu().numpy()), k)
            return torch.from_numpy(d2).to(q.device)
        bank = self.bank.to(q.device, torch.float32)
        bn = bank.square().sum(1)
        chunk = max(1, (1 << 26) // max(bank.shape[0], 1))
        out = []
        for s in range(0, q.shape[0], chunk):
            x = q[s:s + chunk].float()
            d2 = x.square().sum(1, keepdim=True) + bn[None] - 2 * x @ bank.T
            out.append(d2.topk(k, dim=1, largest=False).values.clamp_min_(0))
        return torch.cat(out)

    def score(self, q: torch.Tensor) -> torch.Tensor:
        """(N,) anomaly scores: mean (or k-th) Euclidean distance to the k nearest bank rows."""
        d = self.squared_distances(q).clamp_min(0).sqrt()
        return d.mean(1) if self.reduce == "mean" else d[:, -1]

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        b, d, h, w = feat.shape
        return self.score(feat.permute(0, 2, 3, 1).reshape(-1, d)).view(b, h, w)


# ------------------------------------------------------------------------------------------------ helpers


def layer_output(out):
    """The tensor a hooked layer contributes: a trunk returns (low, high) and gives its high-level features."""
    return out[-1] if isinstance(out, (tuple, list)) else out


class FeatureTap:
    """Forward hooks on named modules of a model; ``with tap.capture(): model(x)`` fills ``tap.features``
    (outputs detached and cloned, so later in-place ops cannot change them). Outside ``capture`` the hooks
    record nothing (e.g. MC-dropout passes)."""

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        self.layers, self.features, self._on = tuple(dict.fromkeys(layers)), {}, False
        names = dict(model.named_modules())
        missing = [n for n in self.layers if n not in names]
        if missing:
            top = ", ".join(n for n, _ in model.named_children())
            raise KeyError(f"no layer {', '.join(missing)} in the segmenter (its top-level modules: {top}; "
                           "nested ones as 'trunk.layer3')")
        self._handles = [names[n].register_forward_hook(self._hook(n)) for n in self.layers]

    def _hook(self, name):
        def hook(_module, _inp, out):
            if self._on:
                self.features[name] = layer_output(out).detach().clone()
        return hook

    @contextmanager
    def capture(self, enabled: bool = True):
        self.features, self._on = {}, enabled
        try:
            yield self.features
        finally:
            self._on = False

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def resize_mask(mask: torch.Tensor, size) -> torch.Tensor:
    """(B, H, W) bool -> (B, h, w) bool: set where more than half the covered area is set."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return torch.nn.functional.interpolate(mask[:, None].float(), size=tuple(size), mode="area")[:, 0] > 0.5


def pixels(feat: torch.Tensor, mask: torch.Tensor | None = None, stride: int = 1) -> torch.Tensor:
    """(B, D, h, w) features -> (N, D) rows of the pixels where ``mask`` (B, h, w) is set, every ``stride``-th
    pixel per side."""
    f = feat[:, :, ::stride, ::stride].permute(0, 2, 3, 1)
    if mask is None:
        return f.reshape(-1, f.shape[-1])
    return f[mask[:, ::stride, ::stride]]


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float = 1.0, balanced: bool = True, seed: int = 0):
    """(coef (L,), bias (1,), the scikit-learn model) of an L2 logistic regression of ``y`` (1 = outlier) on
    the (N, L) features ``x``; ``balanced`` weighs both classes equally."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=c, class_weight="balanced" if balanced else None, max_iter=1000, random_state=seed)
    lr.fit(x, y)
    return (torch.from_numpy(lr.coef_[0].astype(np.float32)), torch.from_numpy(lr.intercept_.astype(np.float32)),
            lr)


def _key(layer: str) -> str:
    return layer.replace(".", "__")  # module-dict keys may not hold dots


class DensityScorer(nn.Module):
    """The per-layer Gaussians, the kNN bank, the NLL standardisation (``nll_mean``, ``nll_std``) and the
    logistic regression (``logreg_coef``, ``logreg_bias``) of one segmenter. ``forward(features, size,
    methods)`` -> {method: (B, H, W) map at ``size``}; ``features`` maps the :attr:`tap_layers` to tensors."""

    def __init__(self, layers: Sequence[str], dims: dict[str, int], single_layer: str, knn_layer: str,
                 k: int = 5, knn_reduce: str = "mean", bank_capacity: int = 100_000, bank_size: int = 0,
                 knn_index: str = "Flat", knn_backend: str = "auto", seed: int = 0):
        super().__init__()
        self.layers = list(layers)
        if single_layer not in self.layers:
            raise ValueError(f"single layer '{single_layer}' is not one of the layers {self.layers}")
        self.single_layer, self.knn_layer = single_layer, knn_layer
        self.dims = {n: int(dims[n]) for n in dict.fromkeys(self.layers + [knn_layer])}
        self.gaussians = nn.ModuleDict({_key(n): GaussianDensity(self.dims[n]) for n in self.layers})
        self.knn = KNNBank(self.dims[knn_layer], bank_capacity, k, knn_reduce, knn_index, knn_backend, seed,
                           bank_size)
        n = len(self.layers)
        self.register_buffer("nll_mean", torch.zeros(n))
        self.register_buffer("nll_std", torch.ones(n))
        self.register_buffer("logreg_coef", torch.zeros(n))
        self.register_buffer("logreg_bias", torch.zeros(1))

    @property
    def tap_layers(self) -> tuple[str, ...]:
        return tuple(self.dims)

    def gaussian(self, layer: str) -> GaussianDensity:
        return self.gaussians[_key(layer)]

    def layer_nlls(self, features: dict[str, torch.Tensor], layers: Sequence[str] | None = None) -> torch.Tensor:
        """(B, L, h, w) raw NLL maps of ``layers`` (default all), each computed at its own stride and resized
        (bilinear) to the finest of them."""
        layers = list(layers or self.layers)
        maps = [self.gaussian(n)(features[n]) for n in layers]
        size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
        return torch.stack([m if m.shape[-2:] == size else upsample(m[:, None], size)[:, 0] for m in maps], 1)

    def standardise(self, nll: torch.Tensor) -> torch.Tensor:
        return (nll - self.nll_mean.view(1, -1, 1, 1)) / self.nll_std.view(1, -1, 1, 1)

    def forward(self, features: dict[str, torch.Tensor], size, methods: Sequence[str] = DENSITY_METHODS):
        with torch.autocast(self.nll_mean.device.type, enabled=False):  # float32 whatever the caller's autocast
            return self._maps(features, tuple(size), methods)

    def _maps(self, features, size, methods):
        out = {}
        if "nll_single" in methods:
            out["nll_single"] = self.layer_nlls(features, [self.single_layer])[:, 0]
        if "nll_min" in methods or "density_logreg" in methods:
            z = self.standardise(self.layer_nlls(features))
            if "nll_min" in methods:
                out["nll_min"] = z.min(1).values
            if "density_logreg" in methods:
                out["density_logreg"] = (z * self.logreg_coef.view(1, -1, 1, 1)).sum(1) + self.logreg_bias
        if "knn" in methods:
            out["knn"] = self.knn(features[self.knn_layer].float())
        return {m: upsample(v[:, None].float(), size)[:, 0] for m, v in out.items()}
