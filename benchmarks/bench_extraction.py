"""Feature extraction: end-to-end throughput of ``align.features.embed`` vs the bare encoder forward.

The bare forward runs the encoder on batches that were decoded and preprocessed beforehand (in memory), so it is
the ceiling. The end-to-end run is what a user gets: decode JPEGs in DataLoader workers, preprocess, forward, write
atomic shards, merge, checksum. The ratio end-to-end / bare is the fraction of the model's throughput that the
pipeline keeps (goal: >= 0.9 on a model whose forward dominates).

Both are measured by ``benchmarks._harness.measure`` in the same process and run: median of ``--repeats`` (wall
seconds: ``throughput_ratio``), CPU seconds of this process and of the decoding workers (``throughput_ratio_cpu`` =
bare CPU / (end-to-end CPU + workers' CPU): the share of all CPU spent that is the forward, which other jobs on a
shared machine disturb less than wall time), and the peak resident memory each call added to this process (the
decoding workers are separate processes, not counted), plus the peak CUDA allocation with ``--device cuda``.

    python benchmarks/bench_extraction.py --smoke                       # 16 images: `python -m benchmarks run --quick`
    python benchmarks/bench_extraction.py --quick                       # 64 images, 1 repeat
    python benchmarks/bench_extraction.py --n 512 --repeats 3           # the figure in benchmarks/README.md
    python benchmarks/bench_extraction.py --n 512 --device cuda --workers 4
    python benchmarks/bench_extraction.py --text --n 5000 --threads 1   # minilm vs sentence-transformers encode

Images: ``$UNIALIGN_DATA/imagenet-sample`` when present, else sample photos rendered from scikit-learn's images.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks._harness` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._harness import emit, measure  # noqa: E402

SUITE = "extraction"


def _images_dataset(n: int, tmp: Path):
    from align.data import load_dataset

    root = os.environ.get("UNIALIGN_DATA")
    if root and (Path(root) / "imagenet-sample").is_dir():
        root = Path(root).resolve()  # the links below must not depend on where they are
        ds = load_dataset(f"imagefolder:{Path(root) / 'imagenet-sample'}")
        if n >= len(ds):
            return ds, "imagenet-sample"
        # a prefix of the real photos, as its own folder of links, so the dataset has exactly n items
        sub = tmp / "photos"
        sub.mkdir()
        for name in sorted(os.listdir(Path(root) / "imagenet-sample"))[:n]:
            (sub / name).symlink_to(Path(root) / "imagenet-sample" / name)
        return load_dataset(f"imagefolder:{sub}"), "imagenet-sample"
    from PIL import Image
    from sklearn.datasets import load_sample_images

    sub = tmp / "photos"
    sub.mkdir()
    photos = load_sample_images().images
    for i in range(n):
        img = Image.fromarray(photos[i % len(photos)]).rotate(7 * i, expand=False)
        img.save(sub / f"{i:05d}.jpg", quality=90)
    return load_dataset(f"imagefolder:{sub}", label_from="none"), "sklearn sample photos (rotated)"


def _mb(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def text_vs_sentence_transformers(n: int, batch_size: int, threads: int, rounds: int) -> None:
    """``embed`` with minilm on the first ``n`` Multi30k train.en captions (``$UNIALIGN_DATA``) against bare
    ``SentenceTransformer.encode`` on the same texts, batch size and threads: interleaved rounds, medians of CPU
    and wall time, and the largest difference of the features."""
    import statistics
    import time

    import numpy as np
    import torch

    from align.data import load_dataset
    from align.encoders import load_encoder
    from align.features import embed

    torch.set_num_threads(threads)
    full = load_dataset("multi30k:train.en")
    texts = [str(t) for t in full.get_many(range(min(n, len(full))), full.default_field)]
    n = len(texts)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "captions.txt"
        path.write_text("\n".join(texts) + "\n")
        ds = load_dataset(f"text:{path}")
        enc = load_encoder("minilm")
        st = enc.model  # the same SentenceTransformer object
        st.encode(texts[:64], batch_size=batch_size)  # warm-up
        caches = itertools.count()
        times = {"unialign": [], "st": []}
        out = {}
        for _ in range(rounds):
            for name in ("unialign", "st"):
                c, w = time.process_time(), time.perf_counter()
                if name == "unialign":
                    feats = embed(enc, ds, cache_dir=Path(tmp) / f"c{next(caches)}", batch_size=batch_size)
                    out[name] = np.asarray(feats.X)
                else:
                    out[name] = st.encode(texts, batch_size=batch_size, convert_to_numpy=True)
                times[name].append((time.process_time() - c, time.perf_counter() - w))
    med = {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in times.items()}
    emit(SUITE, benchmark="text", encoder="minilm", texts=f"multi30k:train.en first {n}", n=n,
         batch_size=batch_size, threads=threads, rounds=rounds,
         unialign_cpu_s=round(med["unialign"][0], 3), st_cpu_s=round(med["st"][0], 3),
         unialign_wall_s=round(med["unialign"][1], 3), st_wall_s=round(med["st"][1], 3),
         throughput_ratio_cpu=round(med["st"][0] / med["unialign"][0], 3),
         throughput_ratio=round(med["st"][1] / med["unialign"][1], 3),
         max_abs_diff=float(np.abs(out["unialign"] - out["st"]).max()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="efficientnet-lite0")
    p.add_argument("--n", type=int, default=256, help="images")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads for the forward")
    p.add_argument("--workers", type=int, default=1, help="DataLoader decoding workers for the end-to-end run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default=None, help="where the encoder runs (default: cpu)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="n=64, 1 repeat")
    mode.add_argument("--smoke", action="store_true", help="n=16, batch 8, 1 repeat (the runner's --quick)")
    mode.add_argument("--text", action="store_true",
                      help="minilm on --n Multi30k train.en captions vs bare sentence-transformers encode")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds for --text")
    args = p.parse_args(argv)
    if args.text:
        text_vs_sentence_transformers(args.n, args.batch_size, args.threads, args.rounds)
        return 0
    if args.quick:
        args.n, args.repeats = 64, 1
    if args.smoke:
        args.n, args.batch_size, args.repeats = 16, 8, 1

    import torch

    torch.set_num_threads(args.threads)
    from align.encoders import load_encoder
    from align.features import embed

    encoder = load_encoder(args.encoder, **({"device": args.device} if args.device else {}))
    device = args.device or "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset, source = _images_dataset(args.n, tmp)
        field = dataset.default_field
        n = len(dataset)
        starts = range(0, n, args.batch_size)
        batches = [encoder.preprocess(dataset.get_many(range(s, min(s + args.batch_size, n)), field)) for s in starts]
        encoder.forward(batches[0])  # warm-up (allocator, kernels)

        def bare():
            for b in batches:
                encoder.forward(b)

        caches = itertools.count()

        def end_to_end():
            feats = embed(encoder, dataset, cache_dir=tmp / f"cache{next(caches)}", batch_size=args.batch_size,
                          num_workers=args.workers)
            assert feats.X.shape == (n, encoder.dim) and not feats.from_cache
            return feats.X.shape

        m_bare = measure(bare, repeats=args.repeats, warmup=0, device=device)
        m_e2e = measure(end_to_end, repeats=args.repeats, warmup=0, device=device)
    emit(SUITE, benchmark="extraction", encoder=args.encoder, images=source, n=n, batch_size=args.batch_size,
         device=device, threads=args.threads, workers=args.workers, repeats=args.repeats,
         bare_forward_s=round(m_bare.wall_s, 3), end_to_end_s=round(m_e2e.wall_s, 3),
         bare_forward_cpu_s=round(m_bare.cpu_s, 3), end_to_end_cpu_s=round(m_e2e.cpu_s, 3),
         end_to_end_workers_cpu_s=round(m_e2e.children_cpu_s, 3),
         throughput_ratio_cpu=round(m_bare.cpu_s / (m_e2e.cpu_s + m_e2e.children_cpu_s), 3),
         bare_items_per_s=round(n / m_bare.wall_s, 2), end_to_end_items_per_s=round(n / m_e2e.wall_s, 2),
         throughput_ratio=round(m_bare.wall_s / m_e2e.wall_s, 3),
         bare_peak_mb=_mb(m_bare.peak_mb), end_to_end_peak_mb=_mb(m_e2e.peak_mb),
         bare_cuda_peak_mb=_mb(m_bare.cuda_peak_mb), end_to_end_cuda_peak_mb=_mb(m_e2e.cuda_peak_mb),
         bare_wall_times=m_bare.wall_times, end_to_end_wall_times=m_e2e.wall_times, clock="wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
