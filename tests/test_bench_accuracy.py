"""``synboost bench accuracy``: each variant's AP / FPR95 / labels against fp32 on the same labelled images."""
import json

import pytest

from synboost import runtime
from synboost.bench.accuracy import run_accuracy_benchmark
from synboost.errors import ConfigError


def pipe(stages, tmp_path):
    from synboost.detectors.detector import write_pipeline_file

    return write_pipeline_file(tmp_path / "p.yaml", method="synboost", segmenter=str(stages / "seg.safetensors"),
                               generator=str(stages / "gen.safetensors"),
                               dissimilarity=str(stages / "dis.safetensors"), perceptual_vgg_pretrained=False,
                               device="cpu")


def test_fp32_is_the_reference_and_every_row_is_scored(stages, tiny_world, tmp_path):
    variants = ["fp32-frozen"] + (["bf16 + channels_last, frozen (the default)"] if runtime.cpu_bf16_supported()
                                  else [])
    rows = run_accuracy_benchmark(pipe(stages, tmp_path), f"synthetic:{tiny_world}", tmp_path / "acc.json",
                                  variants=variants, methods=["synboost", "entropy"], max_images=6)
    # the reference is run first even if not asked; short names and full labels both name a variant
    assert [r["variant"] for r in rows] == ["fp32", "fp32 + channels_last, frozen"] + variants[1:]
    ref = rows[0]
    assert ref["equal labels %"] == 100.0 and ref["spearman"] == pytest.approx(1.0) and ref["within_bound"]
    for r in rows:
        assert 0 < r["AP synboost"] <= 100 and 0 <= r["FPR95 entropy"] <= 100 and r["s_per_image"] > 0
    # channels_last is a memory layout and freezing folds BatchNorm / spectral norm into the weights: the same
    # pixels' ranking up to float rounding, within the bound
    assert rows[1]["spearman"] > 0.999 and rows[1]["within_bound"]
    saved = json.loads((tmp_path / "acc.json").read_text())
    assert saved["images"] == 6 and saved["bound"] == {"ap": 0.3, "fpr95": 1.0}
    assert [r["variant"] for r in saved["rows"]] == [r["variant"] for r in rows]


def test_an_unknown_variant_is_one_line_with_the_choices(stages, tiny_world, tmp_path):
    with pytest.raises(ConfigError,
                       match="bench accuracy: unknown variant 'fp16'; choose from: fp32, fp32-frozen, mixed"):
        run_accuracy_benchmark(pipe(stages, tmp_path), f"synthetic:{tiny_world}", variants=["fp16"])


def test_short_variant_names_pick_the_benchmark_rows():
    from synboost.bench.speed import PIPELINE_SHORT, PIPELINE_VARIANTS, pick_variants

    got = pick_variants(["fp32", "ov-bf16", "batched detector (bf16 autocast, channels_last, not frozen)"],
                        PIPELINE_VARIANTS, PIPELINE_SHORT, "pipeline")
    assert got == ("batched detector (fp32)", "OpenVINO (bf16)",
                   "batched detector (bf16 autocast, channels_last, not frozen)")
    assert PIPELINE_VARIANTS[PIPELINE_SHORT["bf16"]][4] is True and not PIPELINE_VARIANTS[PIPELINE_SHORT["fp32"]][4]
    assert PIPELINE_VARIANTS[PIPELINE_SHORT["mixed"]][0] == "mixed"
    assert PIPELINE_VARIANTS[PIPELINE_SHORT["bf16-compile"]][2] is True
    with pytest.raises(ConfigError, match="bench pipeline: unknown variant 'bf32'"):
        pick_variants(["bf32"], PIPELINE_VARIANTS, PIPELINE_SHORT, "pipeline")
