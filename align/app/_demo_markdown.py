"""report.md of ``unialign demo``: the numbers of report.json as tables and prose (moved out of demo.py)."""
from __future__ import annotations


def markdown(report: dict, cfg, files: dict) -> str:
    """report.md of ``unialign demo`` from its report.json record, the config and the files written."""
    from ._demo_summary import _headlines
    from .report import fmt_mean_std, markdown_table

    n = report["n_classes"]
    sim = report["similarity"]
    mat = report["matching"]
    zs = report["zero_shot"]
    env = report["environment"]
    L: list[str] = []
    L.append("# unialign demo: three frozen encoders on the ImageNet-1k concepts\n")
    L.append(f"Run on {env['date']}, {report['seconds']:.0f} s on {env['cpu_count']} CPU core(s) "
             f"(torch threads: {env['torch_threads']}), `--seed {report['rng']}`"
             + (" — `--quick`: a subset of the concepts, fewer permutations, seeds and epochs." if cfg.n_classes
                else ".") + " Every number below was computed in this run.\n")
    L.append("**Data.** "
             f"{n} ImageNet-1k classes, with names from timm's bundled WordNet tables. Image side: the classifier row "
             "of each class in EfficientNet-Lite0 (1280-d; the head computes `logits = features @ W.T + b`, so the row "
             "is the image model's own vector for the class, in the space of its pooled image features). Text side: "
             "all-MiniLM-L6-v2 and multilingual-e5-small (4-bit, `passage:` prefix) embeddings of the prompt "
             "\"a photo of a {class}.\". Row c of every matrix is class c.\n")

    L.append("**In short.** Each number with what it is a share of and what chance scores:\n")
    L.extend(f"- {line}" for line in _headlines(report["summary"]))
    L.append("")

    # 1
    L.append("## 1. How similar are the three encoders?\n")
    L.append(f"![similarity]({files['similarity.png'].name})\n")
    L.append("Each bar is a pair's similarity. Its grey part is what the same two encoders score when the rows of one "
             "are re-paired at random (the permutation null: its mean, with a ±2 std whisker); the blue part is what "
             "the real pairing adds. The blue part, not the bar's length, is the evidence of shared structure: with "
             "fewer concepts than feature dimensions linear CKA of unrelated rows is far from 0.\n")
    rows = []
    for metric, v in sim["metrics"].items():
        for p in v["pairs"]:
            rows.append([metric + (f" (k={v['params']['k']})" if "k" in v["params"] else ""), p["a"], p["b"],
                         f"{p['value']:.3f}", fmt_mean_std(p["null_mean"], p["null_std"]), f"{p['z']:.1f}",
                         f"{p['p_value']:.3f}"])
    L.append(markdown_table(["metric", "encoder A", "encoder B", "value", "null (mean ± std)", "z", "p"], rows))
    nperm = cfg.n_permutations
    L.append(f"\nThe null re-pairs the rows at random ({nperm} permutations per pair); with {nperm} permutations the "
             f"smallest possible p-value is 1/{nperm + 1} = {1 / (nperm + 1):.3f}, so z = (value − null mean) / null "
             "std says more about how far above chance a pair is. Linear CKA compares the centred Gram "
             "matrices (Kornblith et al., 2019); mutual kNN is the overlap of each item's k nearest neighbours in "
             "the two spaces (Huh et al., 2024).\n")

    # 2
    L.append("## 2. Matching the concepts without training\n")
    L.append(f"Each point: {mat['n_splits']} splits; in each, some concepts are known pairs (seeds) and "
             f"{mat['n_query']} others are shuffled on one side; a method must recover the hidden one-to-one "
             f"correspondence from the geometry alone (chance = 1/{mat['n_query']} = {mat['chance']:.2f}). "
             "`faq`: seeded graph matching (Fishkind et al., 2019); `local_cka`: local CKA assignment "
             "(Maniparambil et al., 2024); `procrustes`: an orthogonal map fitted on the seeds, then a linear "
             "assignment.\n")
    L.append(f"![matching]({files['matching.png'].name})\n")
    L.append(f"The y-axis is the share of the {mat['n_query']} hidden concepts matched to their own partner (mean ± "
             f"std over the splits); the dotted line is chance, 1/{mat['n_query']}.\n")
    counts = mat["seed_counts"]
    rows = []
    for c in mat["curves"]:
        by_k = {p["n_seeds"]: p for p in c["points"]}
        rows.append([f"{c['x']} → {c['y']}", c["method"]]
                    + [fmt_mean_std(by_k[k]["accuracy"], by_k[k]["accuracy_std"], 2) if k in by_k else "–"
                       for k in counts])
    L.append(markdown_table(["pair", "method"] + [f"{k} seeds" for k in counts], rows))
    L.append("")

    # 3
    n_unseen = len(report["unseen_classes"])
    L.append("## 3. Stitching: image rows → MiniLM prompt space, zero-shot on unseen classes\n")
    L.append(f"Projectors are fitted on the {len(report['seen_classes'])} seen classes (image row → prompt "
             f"embedding) and evaluated on the {n_unseen} classes they never saw: an unseen class's image row is "
             "projected and classified by its nearest prompt (cosine). The split is a seeded random half, except that "
             "the classes the head predicts for the photos below are swapped into the unseen half, so the photo "
             f"test is zero-shot too. Chance: top-1 {zs['chance']['top1']:.4f}, top-5 {zs['chance']['top5']:.4f} "
             "among unseen classes.\n")
    L.append(f"![zero-shot]({files['zeroshot.png'].name})\n")
    L.append(f"Dotted segments: chance for each group (k / {n_unseen} among the unseen classes, k / {n} among all).\n")
    rows = []
    for label, r in zs["projectors"].items():
        rows.append([label, r["kind"], f"{r['unseen']['accuracy']['top1']:.3f}", f"{r['unseen']['accuracy']['top5']:.3f}",
                     f"{r['unseen_among_all']['accuracy']['top1']:.3f}",
                     f"{r['unseen_among_all']['accuracy']['top5']:.3f}",
                     f"{r['seen_train']['accuracy']['top1']:.3f}", f"{r['fit_seconds']:.1f}"])
    L.append(markdown_table(["projector", "kind", f"top-1 ({n_unseen} unseen)", "top-5", f"top-1 (among all {n})",
                             "top-5 (all)", "top-1 on seen (train)", "fit s"], rows))
    L.append("\n\"Among all\" ranks each unseen class's prompt against every prompt, seen ones included (the "
             "generalised zero-shot setting); projectors favour the classes they were trained on, so it is harder.\n")

    if report["photos"]:
        L.append("### Real photos (they ship with scikit-learn and matplotlib)\n")
        L.append(f"Each photo goes through EfficientNet-Lite0 (pooled 1280-d features) → the `{zs['best']}` projector "
                 f"(the best on unseen classes above) → nearest of the {n} class prompts in MiniLM space. Next to it, "
                 "the model's own 1000-way classifier head. ✱ marks a class the projector never saw in training.\n")
        L.append(f"![photos]({files['photos.png'].name})\n")
        rows = []
        for r in report["photos"]:
            head = ", ".join(f"{h['lemma']} ({h['prob']:.2f})" for h in r["head_top5"][:3])
            zs5 = ", ".join(("✱ " if z["unseen"] else "") + z["lemma"] for z in r["zero_shot_top5"])
            rank, rank_u = r["head_top1_rank_in_zero_shot"], r["head_top1_rank_among_unseen"]
            rows.append([r["photo"], head, zs5, "–" if rank is None else f"{rank} / {n}",
                         "–" if rank_u is None else f"{rank_u} / {n_unseen}"])
        L.append(markdown_table(["photo", "classifier head top-3 (prob.)", "stitched zero-shot top-5",
                                 "head's top-1 ranked (all classes)", "(unseen classes only)"], rows))
        L.append("\nThe classifier head was trained on every ImageNet class with real photos; the stitched path never saw "
                 "these photos' classes, neither their image rows nor their prompts, and was fitted on classifier "
                 "rows, not on photo features: read its top-5 as what the geometry alone transfers.\n")

    if "projector.pt" in files:
        L.append(f"The `{zs['best']}` projector is saved as `projector.pt` with the names of the encoders it connects, "
                 "so the stitched encoder can be rebuilt from it alone: `unialign zeroshot --projector "
                 "projector.pt --images DIR --classes concepts:imagenet-1k`.\n")
    L.append("## Run details\n")
    L.append(markdown_table(["step", "seconds"], [[k, f"{v:.1f}"] for k, v in report["timings_s"].items()]))
    L.append("\nPackages: " + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v) + f"; Python "
             f"{env['python']} on {env['platform']}. Full numbers: `report.json`; what produced them (versions, "
             "command line, encoders, seed, the photos by sha256): its `provenance`.\n")
    if report.get("warnings"):
        L.append("Warnings the library raised during the run (collected here rather than printed between the step "
                 "lines; linear CKA with fewer concepts than feature dimensions is biased upward, which is why every "
                 "similarity above is shown against its permutation null):\n")
        L.extend(f"- {w['category']} ×{w['count']}: {w['message']}" for w in report["warnings"])
        L.append("")
    prov = report.get("provenance") or {}
    if prov.get("command"):
        L.append(f"Command: `{prov['command']}` (unialign {prov.get('unialign')}, created {prov.get('created')}).\n")
    return "\n".join(L)
