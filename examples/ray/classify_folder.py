#!/usr/bin/env python3
"""Batch classification of an image folder on a Ray cluster with Ray Data and the `kiln` Python package.

    python examples/ray/classify_folder.py BUNDLE.kiln IMAGE_DIR OUT_DIR [--top 5] [--workers 2]
        [--batch 16] [--address auto] [--threads 1]

Ray Data reads every JPEG/PNG file under IMAGE_DIR (read_binary_files: the bytes and the path of each);
`map_batches` hands batches to `KilnClassifier`, a callable class of which each worker (a Ray actor) makes one
instance: the bundle is opened once per worker, then every batch goes through `kiln.Model.classify`
(libkiln: decode, resize as the bundle records, one run per batch, top-k). The results are written as
Parquet files in OUT_DIR, one row per image: `file` (its path), `labels` (the top-k labels, best first) and
`scores` (their scores), and `node` (the Ray node that classified it). An image that cannot be classified gets
empty lists and its message in `error`.

Every worker node needs the bundle at the same path, the `kiln` package (pip install ./python) and libkiln
(KILN_LIBRARY, or libkiln.so beside the package). Prints one summary line: images, seconds, images/s.
"""
import argparse
import os
import sys
import time

import numpy as np
import ray


class KilnClassifier:
    """One per Ray worker: opens the bundle once; each call classifies a batch {bytes, path}."""

    def __init__(self, bundle, top, threads):
        import kiln  # imported on the worker, where libkiln is found

        if threads:
            kiln.set_threads(threads)
        self.model = kiln.Model(bundle)
        self.top = top
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch):
        data = [bytes(b) for b in batch["bytes"]]
        results = self.model.classify(data, top=self.top, batch=len(data), errors="return")
        labels, scores, errors = [], [], []
        for result in results:
            if isinstance(result, Exception):
                labels.append([])
                scores.append([])
                errors.append(str(result))
            else:
                labels.append([p.label for p in result])
                scores.append([p.score for p in result])
                errors.append("")
        return {"file": np.asarray(batch["path"], dtype=object), "labels": _column(labels), "scores": _column(scores),
                "error": np.asarray(errors, dtype=object), "node": np.asarray([self.node] * len(data), dtype=object)}


def _column(lists):
    """A 1-D object array of lists (np.asarray would make a 2-D array of equal-length lists)."""
    column = np.empty(len(lists), dtype=object)
    for i, values in enumerate(lists):
        column[i] = values
    return column


# Reading files and writing Parquet are light next to classifying: their tasks ask for a quarter CPU so that they
# still get scheduled while the workers hold a CPU each (with a whole CPU each they can starve behind the actors).
IO_CPUS = 0.25


def classify_folder(bundle, images, out, top=5, workers=2, batch=16, threads=1):
    """Classifies every image under `images` into Parquet files in `out`; returns the number of images."""
    ds = ray.data.read_binary_files(images, include_paths=True, file_extensions=["jpg", "jpeg", "png"],
                                    num_cpus=IO_CPUS)
    results = ds.map_batches(
        KilnClassifier,
        fn_constructor_kwargs={"bundle": os.path.abspath(bundle), "top": top, "threads": threads},
        batch_size=batch,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=max(threads, 1),
        # One worker per node where the cluster allows: the workers spread over the nodes.
        scheduling_strategy="SPREAD",
    )
    results.write_parquet(out, ray_remote_args={"num_cpus": IO_CPUS})
    return ray.data.read_parquet(out).count()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("images")
    parser.add_argument("out")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="Ray actors classifying (one bundle each)")
    parser.add_argument("--batch", type=int, default=16, help="images per batch (one model run each)")
    parser.add_argument("--threads", type=int, default=1, help="kernel threads per worker")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, or a local Ray)")
    args = parser.parse_args(argv)
    if os.path.exists(args.out) and os.listdir(args.out):
        parser.error(f"{args.out} exists and is not empty")
    if not os.path.isfile(args.bundle):
        parser.error(f"no bundle at {args.bundle}")
    if args.address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=args.address, log_to_driver=False)
    else:
        # A local Ray of our own: a CPU per worker thread, and one for reading and writing.
        ray.init(num_cpus=args.workers * max(args.threads, 1) + 1, log_to_driver=False, include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    start = time.perf_counter()
    count = classify_folder(args.bundle, args.images, args.out, args.top, args.workers, args.batch, args.threads)
    seconds = time.perf_counter() - start
    print(f"classify_folder: {count} images in {seconds:.2f} s ({count / seconds:.1f} images/s), "
          f"{args.workers} workers, Parquet in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
