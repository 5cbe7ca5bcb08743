"""Aggregation and the written outputs of an experiment: results.json, results.csv, report.md and the plots."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..._io import atomic_write, json_default
from ._cells import FeatureStore
from ._config import ExperimentConfig

__all__ = ["aggregate", "experiment_provenance", "write_outputs"]


def _params_label(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))


def aggregate(records: list[dict], cfg: ExperimentConfig) -> list[dict]:
    """Mean ± std per (task, pair, method, params[, n_known]) and measure, over seeds (and splits for matching);
    each row also carries ``label``, the method with its parameters as the report and plots show it."""
    from ..report import mean_std

    groups: dict[tuple, list[dict]] = {}
    for r in records:
        x = r["x"] + (f"[{r['layer_x']}]" if r.get("layer_x") is not None else "")
        y = r["y"] + (f"[{r['layer_y']}]" if r.get("layer_y") is not None else "")
        key = (r["task"], x, y, r["method"], json.dumps(r["params"], sort_keys=True, default=str), r.get("n_known"))
        groups.setdefault(key, []).append(r)
    rows = []
    for (task, x, y, method, params_json, n_known), rs in groups.items():
        params = rs[0]["params"]
        label = method + (f" ({_params_label(params)})" if params else "")
        base = {"task": task, "x": x, "y": y, "method": method, "params": params_json, "n_known": n_known,
                "label": label}
        measures: dict[str, list[float]] = {}
        if task == "similarity":
            for r in rs:
                for k in ("value", "null_mean", "null_std", "p_value", "sweep_best"):
                    if r["result"].get(k) is not None:
                        measures.setdefault(k, []).append(float(r["result"][k]))
        elif task == "matching":
            for r in rs:
                measures.setdefault("accuracy", []).extend(r["result"]["accuracies"])
                # Recall@k per split where the cell kept them (base/query protocol), else the cell's mean
                for rec in r["result"].get("recall_splits") or [r["result"].get("recall") or {}]:
                    for k, v in rec.items():
                        measures.setdefault(f"R@{k}", []).append(float(v))
                # blind matching: share of splits its confidence report trusts (1 = every split confident)
                for conf in r["result"].get("confidence_splits") or []:
                    measures.setdefault("confident", []).append(float(bool(conf.get("confident"))))
        else:
            for r in rs:
                for direction in ("query_to_gallery", "gallery_to_query"):
                    short = "x2y" if direction == "query_to_gallery" else "y2x"
                    for k, v in r["result"]["retrieval"][direction].items():
                        if k.startswith("R@") or k in ("mAP", "median_rank"):
                            measures.setdefault(f"{short} {k}", []).append(float(v))
        for measure, values in measures.items():
            m, s = mean_std(values)
            rows.append({**base, "measure": measure, "mean": m, "std": s, "n": len(values)})
    return rows


def experiment_provenance(cfg: ExperimentConfig, store: FeatureStore, used: Sequence[str]) -> dict:
    """What produced the results: versions (:func:`align._provenance.provenance`), every feature set (file + sha256,
    or encoder and dataset specs with the feature-cache key) and the seeds."""
    from ..._provenance import provenance

    features = {}
    for name in used:
        spec = cfg.features[name]
        if spec.file is not None:
            features[name] = {"file": spec.file, "key": spec.key, "sha256": store.fingerprint(name).split(":")[1],
                              "shape": list(store.X(name).shape)}
        else:
            features[name] = {"encoder": spec.encoder, "encoder_options": spec.encoder_options,
                              "dataset": spec.dataset, "dataset_options": spec.dataset_options, "field": spec.field,
                              "layers": list(spec.layers), "cache_key": store.fingerprint(name).split(":", 1)[1],
                              "shape": list(store.X(name).shape)}
    return provenance(command="unialign run", experiment=cfg.name, features=features, seeds=list(cfg.seeds))


def write_outputs(cfg: ExperimentConfig, records: list[dict], aggregates: list[dict], out: Path,
                   provenance: dict | None = None) -> dict:
    files: dict[str, Path] = {}
    with atomic_write(out / "results.json", "w") as f:
        json.dump({"name": cfg.name, "provenance": provenance, "config": cfg.source, "aggregates": aggregates,
                   "cells": records}, f, indent=1, default=json_default)
    files["results.json"] = out / "results.json"
    buf = io.StringIO()
    fields = ["task", "x", "y", "method", "params", "n_known", "measure", "mean", "std", "n"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for row in aggregates:
        writer.writerow({k: row.get(k) for k in fields})
    with atomic_write(out / "results.csv", "w") as f:
        f.write(buf.getvalue())
    files["results.csv"] = out / "results.csv"
    files.update(_plots(cfg, records, aggregates, out))
    with atomic_write(out / "report.md", "w") as f:
        f.write(_markdown(cfg, records, aggregates, files))
    files["report.md"] = out / "report.md"
    return files


def _plots(cfg: ExperimentConfig, records: list[dict], aggregates: list[dict], out: Path) -> dict:
    from ..report import plot_curves, plot_heatmap

    files: dict[str, Path] = {}
    sims = [a for a in aggregates if a["task"] == "similarity" and a["measure"] == "value"]
    if sims:
        xs = list(dict.fromkeys(a["x"] for a in sims))
        ys = list(dict.fromkeys(a["y"] for a in sims))
        matrices = {}
        for a in sims:
            title = a["label"]
            M = matrices.setdefault(title, np.full((len(xs), len(ys)), np.nan))
            M[xs.index(a["x"]), ys.index(a["y"])] = a["mean"]
        files["similarity.png"] = plot_heatmap(matrices, xs, ys, out / "similarity.png", vmin=None, vmax=None,
                                               xlabel="Y", ylabel="X")
        sweeps = {}
        for r in records:
            if r["task"] == "similarity" and "sweep" in r["result"] and (r["x"], r["y"], r["method"]) not in sweeps:
                sweeps[(r["x"], r["y"], r["method"])] = r["result"]["sweep"]
        for i, ((x, y, metric), sw) in enumerate(sweeps.items()):
            name = f"layers_{i}.png"
            files[name] = plot_heatmap({f"{metric}: {x} × {y}": np.asarray(sw["matrix"])}, sw["layers_x"],
                                       sw["layers_y"], out / name, vmin=None, vmax=None, xlabel=y, ylabel=x)
    match = [a for a in aggregates if a["task"] == "matching" and a["measure"] == "accuracy"]
    if match:
        panels: dict[str, dict] = {}
        for a in sorted(match, key=lambda a: a["n_known"]):
            series = panels.setdefault(f"{a['x']} -> {a['y']}", {}).setdefault(a["label"], ([], [], []))
            series[0].append(a["n_known"])
            series[1].append(a["mean"])
            series[2].append(a["std"])
        counts = cfg.matching.n_known
        logx = min(counts) > 0 and max(counts) / min(counts) >= 10
        files["matching.png"] = plot_curves(panels, out / "matching.png", xlabel="known pairs",
                                            ylabel=f"accuracy on {cfg.matching.n_query} hidden items",
                                            logx=logx, ylim=(0, 1), reference={"chance": 1 / cfg.matching.n_query})
    proj = [a for a in aggregates if a["task"] == "projectors" and " R@" in a["measure"]]
    if proj:
        panels = {}
        for a in proj:
            direction, k = a["measure"].split(" R@")
            series = panels.setdefault(f"{a['x']} -> {a['y']} ({direction})", {}).setdefault(a["label"], ([], [], []))
            series[0].append(int(k))
            series[1].append(a["mean"])
            series[2].append(a["std"])
        for series in panels.values():
            for label, (ks, means, stds) in list(series.items()):
                order = np.argsort(ks)
                series[label] = ([ks[i] for i in order], [means[i] for i in order], [stds[i] for i in order])
        files["recall.png"] = plot_curves(panels, out / "recall.png", xlabel="k", ylabel="Recall@k (held-out)",
                                          ylim=(0, 1))
        curves: dict[str, dict] = {}
        for r in records:
            hist = r["result"].get("history") if r["task"] == "projectors" else None
            if hist:
                label = f"{r['method']} seed {r['seed']}" + (f" ({_params_label(r['params'])})" if r["params"] else "")
                epochs = [h["epoch"] for h in hist]
                curves.setdefault(f"{r['x']} -> {r['y']}: training loss", {})[label] = (
                    epochs, [h.get("loss", np.nan) for h in hist], None)
                if any("val_R@1" in h for h in hist):
                    curves.setdefault(f"{r['x']} -> {r['y']}: validation R@1", {})[label] = (
                        epochs, [h.get("val_R@1", np.nan) for h in hist], None)
        if curves:
            files["training.png"] = plot_curves(curves, out / "training.png", xlabel="epoch", ylabel="value")
    return files


def _markdown(cfg: ExperimentConfig, records: list[dict], aggregates: list[dict], files: dict) -> str:
    from ..report import fmt_mean_std, markdown_table

    L = [f"# {cfg.name}\n"]
    L.append(f"{len(records)} cells, seeds {list(cfg.seeds)}. Every number comes from the cells in `cells/`; "
             "`results.csv` has one row per aggregate (mean ± std over seeds, and over splits for matching).\n")
    L.append("## Features\n")
    rows = []
    for name, spec in cfg.features.items():
        what = (spec.file + (f":{spec.key}" if spec.key else "")) if spec.file else f"{spec.encoder} on {spec.dataset}" + (f" ({spec.field})" if spec.field else "")
        rows.append([name, what, ", ".join(map(str, spec.layers)) or "–"])
    L.append(markdown_table(["name", "source", "layers"], rows) + "\n")
    sims = [a for a in aggregates if a["task"] == "similarity"]
    if sims:
        L.append("## Similarity\n")
        if "similarity.png" in files:
            L.append(f"![similarity]({files['similarity.png'].name})\n")
        for name in sorted(k for k in files if k.startswith("layers_")):
            L.append(f"![layer sweep]({files[name].name})\n")
        by = {}
        for a in sims:
            by.setdefault((a["x"], a["y"], a["label"]), {})[a["measure"]] = a
        rows = []
        swept = any("sweep_best" in ms for ms in by.values())
        for (x, y, label), ms in by.items():
            v = ms["value"]
            null = ms.get("null_mean")
            rows.append([x, y, label,
                         f"{v['mean']:.4f}", fmt_mean_std(null["mean"], ms["null_std"]["mean"], 4) if null else "–",
                         f"{ms['p_value']['mean']:.3f}" if "p_value" in ms else "–"]
                        + ([f"{ms['sweep_best']['mean']:.4f}" if "sweep_best" in ms else "–"] if swept else []))
        L.append(markdown_table(["X", "Y", "metric", "value", "null (mean ± std)", "p"]
                                + (["best layer pair"] if swept else []), rows) + "\n")
    match = [a for a in aggregates if a["task"] == "matching" and a["measure"] == "accuracy"]
    if match:
        m = cfg.matching
        L.append("## Matching vs number of known pairs\n")
        where = " drawn from " + ", ".join(f"{b} (queries of {a})" for a, b in m.query.items()) if m.query else ""
        L.append(f"{m.n_query} hidden query items per split{where}, {m.n_splits} splits per seed, seeds "
                 f"{list(cfg.seeds)}; mean ± std over all splits (chance {1 / m.n_query:.3f}).\n")
        L.append(f"![matching]({files['matching.png'].name})\n")
        counts = list(m.n_known)
        by = {}
        for a in match:
            by.setdefault((a["x"], a["y"], a["label"]), {})[a["n_known"]] = a
        confident = {(a["x"], a["y"], a["label"], a["n_known"]): a for a in aggregates
                     if a["task"] == "matching" and a["measure"] == "confident"}

        def cell(x, y, label, k, a):
            c = confident.get((x, y, label, k))  # blind matching: how many splits its report trusts
            return fmt_mean_std(a["mean"], a["std"]) + ("" if c is None else
                                                        f" (confident {round(c['mean'] * c['n'])}/{c['n']})")

        rows = []
        for (x, y, label), per in by.items():
            rows.append([f"{x} → {y}", label] + [cell(x, y, label, k, per[k]) if k in per else "–" for k in counts])
        recall = [a for a in aggregates if a["task"] == "matching" and a["measure"].startswith("R@")]
        if recall:
            L.append(markdown_table(["pair", "method"] + [f"{k} known" for k in counts], rows) + "\n")
            L.append("Recall@k of the true partner among the queries (methods that score pairs):\n")
            by_r: dict = {}
            for a in recall:
                by_r.setdefault((a["x"], a["y"], a["label"], a["measure"]), {})[a["n_known"]] = a
            rows = [[f"{x} → {y}", label, measure]
                    + [fmt_mean_std(per[k]["mean"], per[k]["std"]) if k in per else "–" for k in counts]
                    for (x, y, label, measure), per in by_r.items()]
            L.append(markdown_table(["pair", "method", "measure"] + [f"{k} known" for k in counts], rows) + "\n")
            rows = None
        if rows is not None:
            L.append(markdown_table(["pair", "method"] + [f"{k} known" for k in counts], rows) + "\n")
    proj = [a for a in aggregates if a["task"] == "projectors"]
    if proj:
        p = cfg.projectors
        L.append("## Projectors: retrieval on held-out pairs\n")
        if p.test:
            L.append("Each projector is fitted on every pair and tested on the test feature sets "
                     + ", ".join(f"{b} (for {a})" for a, b in p.test.items())
                     + ". x2y: projected X queries rank the Y test items; y2x the reverse.\n")
        else:
            L.append(f"Each seed draws a {p.test_fraction:.0%} test split; the projector is fitted on the rest. "
                     "x2y: projected X queries rank the Y test items; y2x the reverse.\n")
        L.append(f"![recall]({files['recall.png'].name})\n")
        if "training.png" in files:
            L.append(f"![training]({files['training.png'].name})\n")
        by = {}
        for a in proj:
            by.setdefault((a["x"], a["y"], a["label"]), {})[a["measure"]] = a
        measures = [f"{d} R@{k}" for d in ("x2y", "y2x") for k in p.ks] + ["x2y mAP"]
        rows = []
        for (x, y, label), per in by.items():
            rows.append([f"{x} → {y}", label]
                        + [fmt_mean_std(per[mm]["mean"], per[mm]["std"]) if mm in per else "–" for mm in measures])
        L.append(markdown_table(["pair", "kind"] + measures, rows) + "\n")
    return "\n".join(L)
