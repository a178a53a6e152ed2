"""Seconds per training image of the supervised trainer, resnet18 and resnet50, 128 x 128, batch 8.

One step is exactly what :func:`dgp_pyro.train.supervised.train_supervised` does per step:
draw a batch from the in-memory labeled images, augment it (affine warp + photometric),
normalise, forward, heatmap loss, backward, gradient clipping, AdamW step, scheduler step.
Images come from a synthetic project (one view, 128 x 128, 20 labeled frames). Reported per
backbone: the median and the best seconds per step over ``--steps`` timed steps after
``--warmup`` untimed ones, divided by the batch size. CPU, ``torch.set_num_threads(2)``.

    python benchmarks/bench_train_step.py [--quick] [--backbones resnet18 resnet50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "bench_train_step"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per backbone")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 timed steps after 1 warm-up")
    parser.add_argument("--out", type=Path, default=RESULTS / f"{NAME}.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 3, 1
    torch.set_num_threads(args.threads)

    from dgp_pyro.data.augment import AugmentConfig
    from dgp_pyro.data.dataset import LabeledImages
    from dgp_pyro.data.project import load_project
    from dgp_pyro.data.synthetic.project import write_synthetic_project
    from dgp_pyro.run import RunConfig, build_network
    from dgp_pyro.train.supervised import make_optimizer, make_scheduler, seed_everything, supervised_loss

    size = (args.size, args.size)
    result: dict = {
        "name": NAME,
        "size": list(size),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "steps": args.steps,
        "quick": args.quick,
        "torch": torch.__version__,
        "device": "cpu",
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_project(Path(tmp) / "p", views=1, frames=100, labeled=20, seed=0, size=size)
        project = load_project(root)
        samples = project.network_samples()
        dataset = LabeledImages(samples.image_paths, samples.labels, size, keys=samples.image_keys)
        for backbone in args.backbones:
            config = RunConfig(
                project=str(root),
                backbone=backbone,
                size=list(size),
                batch_size=args.batch_size,
                steps=1000,
                warmup_steps=50,
                sigma=8.0,
                keypoints=project.network_keypoints(),
            )
            generator = seed_everything(0)
            network = build_network(config, pretrained=False, seed=0).train()
            optimizer = make_optimizer(network.parameters(), config)
            scheduler = make_scheduler(optimizer, config)
            augment = AugmentConfig.from_dict(config.augment)
            times = []
            for step in range(args.warmup + args.steps):
                start = time.perf_counter()
                images, points = dataset.sample_batch(config.batch_size, generator, augment)
                loss = supervised_loss(network, images, points, config)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(network.parameters(), config.clip_grad_norm)
                optimizer.step()
                scheduler.step()
                float(loss.detach())
                if step >= args.warmup:
                    times.append(time.perf_counter() - start)
            per_step = statistics.median(times)
            result[backbone] = {
                "seconds_per_image": round(per_step / args.batch_size, 4),
                "seconds_per_step": round(per_step, 4),
                "best_seconds_per_image": round(min(times) / args.batch_size, 4),
                "images_per_second": round(args.batch_size / per_step, 2),
            }
    line = json.dumps(result)
    print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(line + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
