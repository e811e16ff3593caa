"""``synboost demo`` (the whole job on the embedded synthetic world), ``synboost ablate`` (the paper's ablation
variants) and ``synboost compare`` (one row per method, every dataset). All resume by default."""
from __future__ import annotations

import argparse

from synboost.cli.common import RESUMES, add_config, add_fresh, no_resume
from synboost.errors import SynboostError


def _compare_interrupt(a: argparse.Namespace) -> str:
    return RESUMES if a.config else no_resume("compare --pipelines", " (only compare --config does)")


def register(sub) -> None:
    """``demo``, ``ablate`` and ``compare``."""
    m = sub.add_parser("demo", help="the whole job on the embedded synthetic world (CPU, minutes)")
    add_config(m)
    m.add_argument("--quick", action="store_true",
                   help="a much smaller run (for smoke tests); --set keys still win over its sizes")
    m.add_argument("--full", action="store_true",
                   help="the dissimilarity network trained 3x as long, in OUT-full, on the world and stages of "
                        "OUT (reused when the default demo left them, trained there otherwise)")
    m.add_argument("--trunks", action="store_true",
                   help="the world-pretrained VGG16 / VGG19 (a backbone stage, once per world) under the "
                        "dissimilarity encoder and the perceptual difference, in OUT-trunks (OUT-full-trunks with "
                        "--full), on the world and stages of OUT")
    m.add_argument("--seed", type=int, help="the training seed of every stage (the world stays the same); default 0")
    m.add_argument("--seeds", type=int, nargs="+", metavar="K",
                   help="the whole demo once per seed (in OUT/seed-K), then mean +- std of every figure in "
                        "OUT/seeds.md")
    add_fresh(m, "ignore the results of an earlier demo run", "demo")
    m.set_defaults(run=run, interrupt=RESUMES)

    ab = sub.add_parser("ablate", help="train and score the paper's ablation variants on the synthetic world")
    add_config(ab)
    ab.add_argument("--seeds", type=int, nargs="+", metavar="K",
                    help="the ablation once per training seed on the base demo's stages of that seed "
                         "(BASE/seed-K, as demo --seeds leaves them), in OUT/seed-K; then mean +- std of every row "
                         "and its change against the full configuration in OUT/ablation_seeds.md")
    add_fresh(ab, "retrain everything", "ablate")
    ab.set_defaults(run=run, interrupt=RESUMES)

    c = sub.add_parser("compare", help="the papers' comparison table: one row per method, every dataset")
    c.add_argument("--pipelines", nargs="+", metavar="ROW",
                   help="[LABEL=]PIPELINE[:METHOD,...] per row (methods default to the pipeline's own)")
    c.add_argument("--data", nargs="+", metavar="SPEC", help="dataset specs KIND:DIR")
    c.add_argument("--out", help="folder for compare.md / compare.json / curves")
    c.add_argument("--max-images", type=int)
    add_config(c)
    add_fresh(c, "--config: retrain what an earlier run left", "compare")
    c.set_defaults(run=run, interrupt=_compare_interrupt)


def run(a: argparse.Namespace) -> None:
    """``demo``, ``ablate`` or ``compare``: the config -> one job."""
    from synboost.config import load_config

    if a.verb == "demo":
        from synboost.config import DemoConfig
        from synboost.jobs.demo import run_demo, run_demo_seeds

        cfg = load_config(DemoConfig, a.config, a.overrides)
        if a.seeds is not None and a.seed is not None:
            raise SynboostError("give --seed K (one run) or --seeds K ... (several), not both")
        if (a.full or a.trunks) and a.quick:
            raise SynboostError(f"give {'--full' if a.full else '--trunks'} (a longer run) or --quick (a smoke "
                                "test), not both")
        default_out = cfg.out == DemoConfig().out
        if a.quick:  # the smoke-test sizes, with the user's --set on top of them
            from synboost.jobs.demo import quick_config

            cfg = quick_config(cfg, a.overrides)
        if a.full or a.trunks:
            from synboost.jobs.demo import full_config, trunks_config, variant_folders

            variant_folders(cfg, a.full, a.trunks)
            if a.full:
                full_config(cfg)
            if a.trunks:
                trunks_config(cfg)
        if a.seeds:
            run_demo_seeds(cfg, a.seeds, resume=not a.fresh)
            return
        if a.seed is not None:
            from synboost.jobs.demo import seed_folder

            cfg.seed = a.seed
            if not cfg.backbone_from:  # the trunks of every seed, as demo --seeds shares them
                from pathlib import Path

                cfg.backbone_from = str(Path(cfg.stages_from or cfg.out) / "backbone")
            if default_out:  # the default folder holds the default seed's run: keep it
                cfg.out = seed_folder(cfg.out, a.seed)
                if cfg.stages_from:
                    cfg.stages_from = seed_folder(cfg.stages_from, a.seed)
        run_demo(cfg, resume=not a.fresh)
    elif a.verb == "ablate":
        from synboost.config import AblationConfig
        from synboost.jobs.ablate import run_ablation, run_ablation_seeds

        cfg = load_config(AblationConfig, a.config, a.overrides)
        if a.seeds:
            run_ablation_seeds(cfg, a.seeds, resume=not a.fresh)
        else:
            run_ablation(cfg, resume=not a.fresh)
    else:
        _compare(a)


def _compare(a: argparse.Namespace) -> None:
    from synboost.jobs.compare import compare, compare_table, parse_rows, run_compare

    if a.config:
        from synboost.config import CompareConfig, load_config

        run_compare(load_config(CompareConfig, a.config, a.overrides), resume=not a.fresh)
        return
    if not a.pipelines or not a.data:
        raise SynboostError("give --pipelines ROW... and --data SPEC... (or --config configs/compare/synthetic.yaml)")
    table = compare(parse_rows(a.pipelines), a.data, a.out, max_images=a.max_images)
    print(compare_table(table))
    if a.out:
        print(f"written to {a.out}/ (compare.md, compare.json, curves_<dataset>.png)")
