"""The summary of ``unialign demo``: the few numbers of report.json's ``summary`` block, and the sentences the terminal
and report.md print for them (each number with what it is a share of, and its chance level)."""
from __future__ import annotations

#: Short names of the three encoders, in the order of every table and plot.
_IMAGE, _MINILM, _E5 = "efficientnet-lite0", "minilm", "e5-small"


#: What a row of each encoder's matrix is, in the summary's sentences.
_ROW = {_IMAGE: "classifier row", _MINILM: "prompt embedding", _E5: "prompt embedding"}


def _summary(similarity, match_section, zero_shot, best, photo_rows, n_classes, n_unseen) -> dict:
    cka_pairs = similarity["metrics"]["linear_cka"]["pairs"]
    cka = {f"{p['a']} / {p['b']}": round(p["value"], 3) for p in cka_pairs}
    cka_null = {f"{p['a']} / {p['b']}": {"mean": round(p["null_mean"], 3), "std": round(p["null_std"], 4)}
                for p in cka_pairs}
    n_query = match_section["n_query"]
    best_match = {}
    for c in match_section["curves"]:
        last = c["points"][-1] if c["points"] else None
        if last is None:
            continue
        key = f"{c['x']} -> {c['y']}"
        if key not in best_match or last["accuracy"] > best_match[key]["accuracy"]:
            best_match[key] = {
                "method": c["method"], "n_seeds": last["n_seeds"], "accuracy": round(last["accuracy"], 3),
                "n_hidden": n_query, "chance": round(match_section["chance"], 4),
                "of": f"share of the {n_query} hidden concepts whose {c['x']} {_ROW.get(c['x'], 'vector')} was "
                      f"matched to its own {c['y']} {_ROW.get(c['y'], 'vector')}, with {last['n_seeds']} known "
                      f"pairs, best method at that count; mean over {match_section['n_splits']} splits"}
    zs = zero_shot[best]["unseen"]["accuracy"]
    return {
        "n_classes": n_classes,
        "linear_cka": cka,
        "linear_cka_null": cka_null,
        "matching_at_most_seeds": best_match,
        "zero_shot": {"projector": best, "n_unseen_classes": n_unseen, "top1": round(zs["top1"], 3),
                      "top5": round(zs["top5"], 3), "chance_top1": round(1.0 / n_unseen, 4),
                      "chance_top5": round(min(1.0, 5.0 / n_unseen), 4),
                      "of": f"share of the {n_unseen} classes never seen in training whose projected "
                            f"{_IMAGE} classifier row is nearest (top-1) or among the 5 nearest (top-5) to its own "
                            f"{_MINILM} prompt embedding, among the {n_unseen} unseen classes' prompts"},
        "photos": {r["photo"]: {"head": r["head_top5"][0]["lemma"], "zero_shot": r["zero_shot_top5"][0]["lemma"]}
                   for r in photo_rows},
    }


def summary_lines(result) -> list[str]:
    """A few human-readable lines for the terminal: each number with what it is a share of, and its chance level."""
    s = result.summary
    lines = [f"unialign demo: {s['n_classes']} ImageNet concepts, {result.seconds:.0f} s -> {result.files['report.md']}"
             ] + ["  " + line for line in _headlines(s)]
    if s.get("n_warnings"):
        lines.append(f"  {s['n_warnings']} library warning(s) during the run: listed under 'Run details' in report.md")
    return lines


def _headlines(s: dict) -> list[str]:
    """The summary's numbers as sentences that say what each is a share of and what chance would score."""
    lines = []
    nulls = s.get("linear_cka_null", {})
    lines.append("linear CKA (permutation null in brackets): " + ", ".join(
        f"{k} {v:.2f}" + (f" (null {nulls[k]['mean']:.2f})" if k in nulls else "") for k, v in s["linear_cka"].items()))
    for pair, m in s["matching_at_most_seeds"].items():
        y = pair.split(" -> ")[-1]
        lines.append(f"matching {pair}: {m['accuracy']:.2f} = share of the {m['n_hidden']} hidden concepts matched to "
                     f"their own {y} {_ROW.get(y, 'vector')}, from {m['n_seeds']} known pairs ({m['method']}); "
                     f"chance 1/{m['n_hidden']} = {m['chance']:.3f}")
    z = s["zero_shot"]
    n_u = z["n_unseen_classes"]
    lines.append(f"zero-shot ({z['projector']}): top-1 {z['top1']:.3f} = share of the {n_u} classes unseen in training "
                 f"whose projected image row is nearest its own prompt among the {n_u} unseen prompts (chance "
                 f"{z['chance_top1']:.3f}); top-5 {z['top5']:.3f} (chance {z['chance_top5']:.3f})")
    for photo, p in s["photos"].items():
        lines.append(f"{photo}: head says {p['head']!r}, stitched zero-shot says {p['zero_shot']!r}")
    return lines
