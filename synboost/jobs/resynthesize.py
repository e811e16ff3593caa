"""``synboost resynthesize``: a trained generator over a folder of train-id label maps -> redrawn images."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from synboost.data.io import IMAGE_EXTENSIONS, read_image, scan_images, write_image, write_json
from synboost.errors import DataError, ImageReadError


def synthesize_folder(generator, labels_dir, out_dir, images_dir=None, batch_size: int = 8,
                      progress: bool = True) -> dict:
    """``synboost resynthesize``: redraw every train-id label map (``*.png``, 255 = ignore) of a folder with a
    trained generator, deterministically (z = mu of the paired real image from ``images_dir`` when the generator
    has a style encoder and the image exists, else z = 0; without an encoder that is said once on stderr).
    Writes ``<out>/<name>.png`` at the label's size and ``report.json`` (done, skipped, ignored)."""
    import sys

    import torch

    from synboost.data.io import read_label
    from synboost.models.generator import resynthesize, style_encoder_missing

    listing = scan_images(labels_dir) if Path(labels_dir).is_dir() else None
    labels = listing.images if listing else []
    if not labels:
        raise DataError(f"{labels_dir}: expected a folder of train-id label maps (*.png); found none")
    why = style_encoder_missing(generator) if images_dir is not None else None
    if why:
        print(f"warning: {images_dir}: the images' style is not used: {why}", file=sys.stderr)
    out = Path(out_dir)
    report = {"done": [], "skipped": [], "ignored": [i.as_dict() for i in listing.ignored]}
    bar = tqdm(total=len(labels), desc="synthesize", unit="img", disable=not progress)
    for start in range(0, len(labels), batch_size):
        items = []
        for p in labels[start:start + batch_size]:
            try:
                lab = read_label(p)
                img = None
                if images_dir is not None and not why:
                    cand = [q for q in Path(images_dir).glob(p.stem + ".*") if q.suffix.lower() in IMAGE_EXTENSIONS]
                    img = read_image(cand[0]) if cand else None
                items.append((p, lab, img))
            except ImageReadError as e:
                report["skipped"].append({"file": str(p), "reason": str(e)})
        for p, lab, img in items:
            img_t = None if img is None else torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255)
            res = resynthesize(generator, torch.from_numpy(lab.astype(np.int64))[None], img_t)
            arr = (res[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
            arr = cv2.resize(arr, (lab.shape[1], lab.shape[0]), interpolation=cv2.INTER_LINEAR)
            write_image(out / f"{p.stem}.png", arr)
            report["done"].append(p.stem)
        bar.update(len(labels[start:start + batch_size]))
    bar.close()
    write_json(out / "report.json", report)
    return report
