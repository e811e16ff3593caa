"""Import the official SynBoost synthesis weights (CC-FPSE, ``models/image-synthesis/latest_net_G.pth`` and
``latest_net_E.pth`` of the SynBoost ``models.tar``) into one of our generator checkpoints.

The official files are bare ``state_dict``s written by ``torch.save(net.state_dict())`` (``util.save_network``);
we read them with ``weights_only=True``, strip a ``module.`` prefix if every key has one, and load them strictly:
the generator's keys as they are, the encoder's under ``encoder.``. ``ngf``, ``z_dim``, the VAE switch and the
number of up-samplings are read off the generator file (the released one: 64, 256, VAE, 6 = 'more'); the label
input is the released one (35 label ids + instance edges). ``size`` is the output (H, W): the released model was
trained at 256x512 and its ``fc`` fixes the latent grid (4x8), so other sizes only fit other checkpoints.

Without the encoder file (``e_src=None``: ``synboost weights import synboost-generator --no-encoder``, asked for
explicitly; by default the import stops when ``latest_net_E.pth`` is not found, see
:func:`synboost.hub.registry.import_weights`) the model is built without its VAE encoder and decodes z = 0 (the
prior's mode); the checkpoint's ``model.with_encoder`` says which.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch

from synboost.detectors.components import build_ccfpse, save_component
from synboost.errors import CheckpointError
from synboost.hub.checkpoint import few, key_mismatch, load_foreign, load_into

RELEASED_SIZE = (256, 512)


def _state_dict(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    obj = load_foreign(path)
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected {what} (a bare state_dict of tensors, as torch.save(net.state_dict()) "
                              f"writes it), got a {type(obj).__name__}"
                              + (f" with keys {few([str(k) for k in obj], 4)}" if isinstance(obj, Mapping) else ""))
    sd = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _check(sd: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size], path, what: str) -> None:
    """One line naming the file, what was expected and a few missing / unexpected / misshapen keys."""
    problem = key_mismatch(sd, expected)
    if not problem:
        return
    hint = ""
    if "fc_mu.weight" in sd and "fc_mu.weight" not in expected:
        hint = " (it looks like the encoder file latest_net_E.pth)"
    elif "conv_img.weight" in sd and "conv_img.weight" not in expected:
        hint = " (it looks like the generator file latest_net_G.pth)"
    raise CheckpointError(f"{path}: is not {what}{hint}: {problem}")


def ccfpse_config(g_sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The constructor arguments of :class:`~synboost.models.ccfpse.CCFPSEGenerator` a generator file was
    written by (defaults, i.e. the released model, where the file does not tell)."""
    ngf = int(g_sd["conv_img.weight"].shape[1]) if "conv_img.weight" in g_sd else 64
    fc = g_sd.get("fc.weight")
    use_vae = fc is None or fc.dim() == 2
    z_dim = int(fc.shape[1]) if fc is not None and use_vae else 256
    more = any(k.startswith("labelenc7.") for k in g_sd) or not any(k.startswith("labelenc") for k in g_sd)
    return {"num_label_ids": 35, "dontcare": False, "edge_channel": True, "ngf": ngf, "z_dim": z_dim,
            "use_vae": use_vae, "num_upsampling": 6 if more else 5}


def import_ccfpse(g_src: str | os.PathLike, e_src: str | os.PathLike | None, dst: str | os.PathLike,
                  size: tuple[int, int] = RELEASED_SIZE) -> Path:
    """Official ``latest_net_G.pth`` (+ optional ``latest_net_E.pth``) -> ``dst`` (our safetensors generator
    checkpoint, loadable with ``synboost.detectors.components.load_generator``). Returns ``dst``."""

    g_sd = _state_dict(g_src, "the CC-FPSE generator latest_net_G.pth")
    e_sd = _state_dict(e_src, "the CC-FPSE encoder latest_net_E.pth") if e_src is not None else None
    cfg = {**ccfpse_config(g_sd), "with_encoder": e_sd is not None}
    h, w = (int(s) for s in size)
    n = cfg["num_upsampling"]
    if h % 2 ** n or w % 2 ** n or h < 2 ** n or w < 2 ** n:
        raise CheckpointError(f"{g_src}: size {h}x{w} does not fit CC-FPSE with {n} up-samplings "
                              f"(H and W must be multiples of {2 ** n}; the released model is 256x512)")
    fc = g_sd.get("fc.weight")
    cells = (h // 2 ** n) * (w // 2 ** n)
    if cfg["use_vae"] and fc is not None and fc.shape[0] != 16 * cfg["ngf"] * cells:
        have = fc.shape[0] // (16 * cfg["ngf"])
        raise CheckpointError(f"{g_src}: fc.weight has {fc.shape[0]} rows = 16*ngf*{have} latent cells, but size "
                              f"{h}x{w} needs {cells} cells ({h // 2 ** n}x{w // 2 ** n}); pass the size it was "
                              f"trained at (the released model: size=(256, 512))")
    model = build_ccfpse(**cfg, out_size=(h, w))
    own = model.state_dict()
    _check(g_sd, {k: v.shape for k, v in own.items() if not k.startswith("encoder.")}, g_src,
           "the official CC-FPSE generator (latest_net_G.pth)")
    merged = dict(g_sd)
    if e_sd is not None:
        _check(e_sd, {k[len("encoder."):]: v.shape for k, v in own.items() if k.startswith("encoder.")}, e_src,
               "the official CC-FPSE VAE encoder (latest_net_E.pth)")
        merged.update({f"encoder.{k}": v for k, v in e_sd.items()})
    load_into(model, merged, str(g_src))
    sources = [Path(g_src).name] + ([Path(e_src).name] if e_src is not None else [])
    return save_component(dst, model, "generator", cfg, architecture="ccfpse", size=[h, w], imported_from=sources,
                          importer="ccfpse")
