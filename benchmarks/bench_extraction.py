"""Feature extraction: end-to-end throughput of ``align.features.embed`` vs the bare encoder forward.

The bare forward runs the encoder on batches that were decoded and preprocessed beforehand (in memory), so it is
the ceiling. The end-to-end run is what a user gets: decode JPEGs in DataLoader workers, preprocess, forward, write
atomic shards, merge, checksum. The ratio end-to-end / bare is the fraction of the model's throughput that the
pipeline keeps (goal: >= 0.9 on a model whose forward dominates).

    python benchmarks/bench_extraction.py --quick                       # seconds; CI runs this
    python benchmarks/bench_extraction.py --n 1000 --repeats 3          # the figure in benchmarks/README.md

Images: ``$UNIALIGN_DATA/imagenet-sample`` when present, else sample photos rendered from scikit-learn's images.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _images_dataset(n: int, tmp: Path):
    from align.data import load_dataset

    root = os.environ.get("UNIALIGN_DATA")
    if root and (Path(root) / "imagenet-sample").is_dir():
        ds = load_dataset(f"imagefolder:{Path(root) / 'imagenet-sample'}")
        if n >= len(ds):
            return ds
        # a prefix of the real photos, as its own folder of links, so the dataset has exactly n items
        sub = tmp / "photos"
        sub.mkdir()
        for name in sorted(os.listdir(Path(root) / "imagenet-sample"))[:n]:
            (sub / name).symlink_to(Path(root) / "imagenet-sample" / name)
        return load_dataset(f"imagefolder:{sub}")
    from PIL import Image
    from sklearn.datasets import load_sample_images

    sub = tmp / "photos"
    sub.mkdir()
    photos = load_sample_images().images
    for i in range(n):
        img = Image.fromarray(photos[i % len(photos)]).rotate(7 * i, expand=False)
        img.save(sub / f"{i:05d}.jpg", quality=90)
    return load_dataset(f"imagefolder:{sub}", label_from="none")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="efficientnet-lite0")
    p.add_argument("--n", type=int, default=256, help="images")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads for the forward")
    p.add_argument("--workers", type=int, default=1, help="DataLoader decoding workers for the end-to-end run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="n=64, 1 repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.repeats = 64, 1

    import torch

    torch.set_num_threads(args.threads)
    from align.encoders import load_encoder
    from align.features import embed

    encoder = load_encoder(args.encoder)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = _images_dataset(args.n, tmp)
        field = dataset.default_field
        n = len(dataset)
        starts = range(0, n, args.batch_size)
        batches = [encoder.preprocess(dataset.get_many(range(s, min(s + args.batch_size, n)), field)) for s in starts]
        encoder.forward(batches[0])  # warm-up (allocator, kernels)

        bare, e2e = [], []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            for b in batches:
                encoder.forward(b)
            bare.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            feats = embed(encoder, dataset, cache_dir=tmp / f"cache{r}", batch_size=args.batch_size,
                          num_workers=args.workers)
            e2e.append(time.perf_counter() - t0)
            assert feats.X.shape == (n, encoder.dim) and not feats.from_cache
        t_bare, t_e2e = statistics.median(bare), statistics.median(e2e)
        result = {
            "benchmark": "extraction",
            "encoder": args.encoder,
            "n": n,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "workers": args.workers,
            "repeats": args.repeats,
            "bare_forward_s": round(t_bare, 3),
            "end_to_end_s": round(t_e2e, 3),
            "bare_items_per_s": round(n / t_bare, 2),
            "end_to_end_items_per_s": round(n / t_e2e, 2),
            "throughput_ratio": round(t_bare / t_e2e, 3),
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
