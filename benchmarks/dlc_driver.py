"""DeepLabCut side of ``bench_vs_deeplabcut.py``: run by the DeepLabCut virtualenv's python, never imported.

This file only talks to DeepLabCut 3.0.2 (PyTorch engine); the benchmark script runs it as a
subprocess in the virtualenv it created, so DeepLabCut is never a dependency of dgp-pyro. Three verbs:

    python dlc_driver.py prepare --source PROJECT --dest DIR --split SPLIT.json
    python dlc_driver.py train   --config DIR/config.yaml --shuffle 1 --epochs 40 --timing OUT.json
    python dlc_driver.py predict --config DIR/config.yaml --shuffle 1 --keys KEYS.json --out PRED.json

``prepare`` copies the project into ``DIR`` as a DeepLabCut project (``config.yaml`` with
``project_path``, ``video_sets`` and ``TrainingFraction`` set; a Lightning-Pose project with one
``CollectedData.csv`` becomes one ``labeled-data/<name>/`` folder, every keypoint column a body
part), writes ``CollectedData_<scorer>.h5`` from the CSV labels (the labels the benchmark scores
against), and creates the training dataset with the split's ``trainIndices`` / ``testIndices``:
shuffle 1 is the run, shuffle 2 (same split) the short probe that measures seconds per epoch.
``DIR/key_map.json`` maps each label-file key to its image path inside ``DIR``.

``train`` trains ``resnet_50`` with DeepLabCut's default augmentation and schedule on the CPU. Without
``--pretrained`` it starts from a random initialisation: DeepLabCut 3.0.2 rewrites ``pretrained:
false`` in ``pytorch_config.yaml`` back to true and then downloads ImageNet weights, but it builds the
backbone without weights when ``train_network`` gets a ``snapshot_path``; so a snapshot of a randomly
initialised model of the same architecture (seeded with the config's seed) is written and passed.
Periodic evaluation on the held-out images is switched off (``runner.eval_interval`` past the last
epoch): it does not change training and would pick a "best" snapshot by the test labels. The
timing file holds the wall and CPU time of the process and of each epoch's end (from DeepLabCut's
``Epoch N/M`` log lines).

``predict`` runs the last epoch's snapshot (not the "best" snapshot, which DeepLabCut picks by its
score on the held-out images: choosing by test labels would flatter it) over the held-out images
and writes ``{"predictions": {key: [[x, y, score], ...]}, "seconds": ...}`` in the config's
body-part order.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

LABEL_FOLDER = "labeled-data"
PROBE_SHUFFLE = 2


# --------------------------------------------------------------------------- labels


def read_label_csv(path: Path) -> pd.DataFrame:
    """A DeepLabCut label CSV (one or three index columns) with string keys joined by '/'."""
    head = pd.read_csv(path, header=None, nrows=3, dtype=str, keep_default_na=False)
    n_index = 1
    while n_index < head.shape[1] and all(head.iloc[r, n_index] == "" for r in range(3)):
        n_index += 1
    frame = pd.read_csv(path, header=[0, 1, 2], index_col=list(range(n_index)))
    if n_index > 1:
        frame.index = ["/".join(str(p) for p in parts if isinstance(p, str) and p) for parts in frame.index]
    frame.index = [str(k).strip() for k in frame.index]
    frame.columns = frame.columns.set_names(["scorer", "bodyparts", "coords"])
    return frame.astype(float)


def label_tables(source: Path) -> list[tuple[Path, pd.DataFrame]]:
    """Each label file of a project (CSV preferred, else H5) with its table."""
    config = source / "config.yaml"
    if config.is_file():
        found = []
        for folder in sorted(p for p in (source / LABEL_FOLDER).iterdir() if p.is_dir()):
            csvs = sorted(folder.glob("CollectedData_*.csv"))
            if csvs:
                found.append((csvs[0], read_label_csv(csvs[0])))
                continue
            h5s = sorted(folder.glob("CollectedData_*.h5"))
            if h5s:
                frame = pd.read_hdf(h5s[0])
                if isinstance(frame.index, pd.MultiIndex):
                    frame.index = ["/".join(str(p) for p in parts) for parts in frame.index]
                found.append((h5s[0], frame.astype(float)))
        return found
    return [(source / "CollectedData.csv", read_label_csv(source / "CollectedData.csv"))]


def dlc_key(key: str, folder: str) -> str:
    """Where an image of a label file lives in the DeepLabCut copy: ``labeled-data/<video>/<image>``."""
    parts = key.replace("\\", "/").split("/")
    if len(parts) == 3 and parts[0] == LABEL_FOLDER:
        return "/".join(parts)
    rest = parts[1:] if parts[0] == LABEL_FOLDER else parts
    return f"{LABEL_FOLDER}/{folder}/{'_'.join(rest)}"


# --------------------------------------------------------------------------- prepare


def prepare(source: Path, dest: Path, split_path: Path) -> None:
    import deeplabcut
    from deeplabcut.core.engine import Engine
    from deeplabcut.generate_training_dataset.trainingsetmanipulation import merge_annotateddatasets
    from deeplabcut.utils import auxiliaryfunctions

    split = json.loads(split_path.read_text())
    if dest.exists():
        shutil.rmtree(dest)  # a half-prepared copy from an interrupted call
    (dest / LABEL_FOLDER).mkdir(parents=True)
    tables = label_tables(source)
    is_dlc = (source / "config.yaml").is_file()
    if is_dlc:
        cfg = auxiliaryfunctions.read_plainconfig(source / "config.yaml")
        if cfg.get("multianimalproject", False):
            raise SystemExit("multi-animal DeepLabCut projects are not supported by this benchmark")
    else:
        cfg, _ = auxiliaryfunctions.create_config_template(multianimal=False)
        cfg.update(Task=source.name.replace("-", ""), date="bench", skeleton=[], skeleton_color="black")

    key_map: dict[str, str] = {}
    frames = []
    for _, table in tables:
        scorer = str(table.columns.get_level_values("scorer")[0])
        table = table.loc[:, table.columns.get_level_values("coords").isin(["x", "y"])]
        new_keys = [dlc_key(k, source.name) for k in table.index]
        for old, new in zip(table.index, new_keys, strict=True):
            key_map[old] = new
            target = dest / new
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / old, target)
        table = table.copy()
        table.index = new_keys
        frames.append(table)
    labels = pd.concat(frames)
    scorer = str(labels.columns.get_level_values("scorer")[0])
    labels.columns = pd.MultiIndex.from_tuples(
        [(scorer, bp, c) for _, bp, c in labels.columns], names=["scorer", "bodyparts", "coords"]
    )
    bodyparts = list(dict.fromkeys(labels.columns.get_level_values("bodyparts")))

    # One labeled-data folder per "video"; DeepLabCut finds them through video_sets (the
    # videos themselves are not needed to train or to predict images).
    video_sets = {}
    for folder in sorted({k.split("/")[1] for k in labels.index}):
        rows = labels[[k.split("/")[1] == folder for k in labels.index]]
        index = pd.MultiIndex.from_tuples([tuple(k.split("/")) for k in rows.index])
        out = rows.set_axis(index, axis=0)
        out.to_hdf(
            dest / LABEL_FOLDER / folder / f"CollectedData_{scorer}.h5", key="df_with_missing", mode="w"
        )
        out.to_csv(dest / LABEL_FOLDER / folder / f"CollectedData_{scorer}.csv")
        height, width = _image_size(dest / rows.index[0])
        video_sets[str(dest / "videos" / f"{folder}.mp4")] = {"crop": f"0, {width}, 0, {height}"}

    n_train, n_test = len(split["train"]), len(split["test"])
    fraction = round(n_train / (n_train + n_test), 2)  # as create_training_dataset computes it
    cfg.update(
        scorer=scorer,
        bodyparts=bodyparts,
        project_path=str(dest),
        video_sets=video_sets,
        TrainingFraction=[fraction],
        iteration=0,
        engine="pytorch",
        default_net_type="resnet_50",
        snapshotindex=-1,
        multianimalproject=False,
    )
    cfg["skeleton"] = [pair for pair in cfg.get("skeleton") or [] if all(p in bodyparts for p in pair)]
    config = dest / "config.yaml"
    auxiliaryfunctions.write_config(config, cfg)
    (dest / "key_map.json").write_text(json.dumps(key_map, indent=1))

    cfg = auxiliaryfunctions.read_config(config)
    # The rows DeepLabCut indexes: its own merge of the label files (sorted by image path).
    merged_folder = dest / auxiliaryfunctions.get_training_set_folder(cfg)
    merged_folder.mkdir(parents=True, exist_ok=True)
    data = merge_annotateddatasets(cfg, merged_folder)
    position = {"/".join(str(p) for p in parts): i for i, parts in enumerate(data.index)}
    train = [position[key_map[k]] for k in split["train"]]
    test = [position[key_map[k]] for k in split["test"]]
    deeplabcut.create_training_dataset(
        str(config),
        Shuffles=[1, PROBE_SHUFFLE],
        trainIndices=[train, train],
        testIndices=[test, test],
        net_type="resnet_50",
        engine=Engine.PYTORCH,
        userfeedback=False,
    )
    print(f"prepared {dest}: {len(bodyparts)} body parts, {n_train} train / {n_test} test images")


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.height, image.width


# --------------------------------------------------------------------------- train


class _EpochClock(logging.Handler):
    """Records when DeepLabCut logs the start of training and the end of each epoch (wall and CPU)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.fit_start: tuple[float, float] | None = None
        self.epoch_ends: list[tuple[float, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "Starting pose model training" in message:
            self.fit_start = (time.time(), time.process_time())
        elif message.startswith("Epoch ") and "/" in message.split()[1]:
            self.epoch_ends.append((time.time(), time.process_time()))
            print(f"[dlc] {message}", flush=True)

    def install(self) -> None:
        """Attach to the root logger, again after ``train_network`` resets logging (``force=True``)."""
        from deeplabcut.pose_estimation_pytorch.apis import training

        original = training.setup_file_logging

        def setup_then_attach(filepath: Path) -> None:
            original(filepath)
            logging.getLogger().addHandler(self)

        training.setup_file_logging = setup_then_attach


def _train_folder(config: Path, shuffle: int) -> Path:
    from deeplabcut.core.engine import Engine
    from deeplabcut.utils import auxiliaryfunctions

    cfg = auxiliaryfunctions.read_config(config)
    folder = auxiliaryfunctions.get_model_folder(
        cfg["TrainingFraction"][0], shuffle, cfg, engine=Engine.PYTORCH
    )
    return Path(cfg["project_path"]) / folder / "train"


def train(config: Path, shuffle: int, epochs: int, pretrained: bool, timing: Path, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    started = time.time()
    import deeplabcut
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader
    from deeplabcut.pose_estimation_pytorch.models import PoseModel

    train_folder = _train_folder(config, shuffle)
    for old in train_folder.glob("snapshot-*.pt"):
        old.unlink()  # a previous, interrupted run of this shuffle
    snapshot = None
    if not pretrained:
        loader = DLCLoader(config=str(config), shuffle=shuffle, trainset_index=0)
        torch.manual_seed(int(loader.model_cfg["train_settings"].get("seed", 42)))
        model = PoseModel.build(loader.model_cfg["model"], pretrained_backbone=False)
        snapshot = train_folder.parent / "random-init.pt"
        torch.save({"model": model.state_dict()}, snapshot)
    clock = _EpochClock()
    clock.install()
    called = time.time()
    deeplabcut.train_network(
        str(config),
        shuffle=shuffle,
        trainingsetindex=0,
        device="cpu",
        epochs=epochs,
        snapshot_path=None if snapshot is None else str(snapshot),
        # No periodic evaluation on the held-out images: it changes nothing in training, costs
        # time, and would save a "best" snapshot chosen by the test labels.
        pytorch_cfg_updates={"runner.eval_interval": epochs + 1},
    )
    ended = time.time()
    fit_wall, fit_cpu = clock.fit_start or (called, 0.0)
    result = {
        "epochs": epochs,
        "pretrained": pretrained,
        "process_seconds": ended - started,  # from the driver's start, imports included
        "process_cpu_seconds": time.process_time(),
        "train_network_seconds": ended - called,
        "fit_start_seconds": fit_wall - started,  # imports, data and model until epoch 1 starts
        "fit_start_cpu_seconds": fit_cpu,
        "epoch_end_seconds": [wall - started for wall, _ in clock.epoch_ends],
        "epoch_end_cpu_seconds": [cpu for _, cpu in clock.epoch_ends],
        "torch_threads": threads,
        "deeplabcut_version": deeplabcut.__version__,
        "torch_version": torch.__version__,
    }
    timing.write_text(json.dumps(result, indent=1))


# --------------------------------------------------------------------------- predict


def predict(config: Path, shuffle: int, keys_path: Path, out: Path, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from deeplabcut.pose_estimation_pytorch.apis.analyze_images import analyze_image_folder
    from deeplabcut.pose_estimation_pytorch.apis.utils import get_model_snapshots
    from deeplabcut.pose_estimation_pytorch.config import read_config_as_dict
    from deeplabcut.pose_estimation_pytorch.task import Task

    dest = config.parent
    key_map = json.loads((dest / "key_map.json").read_text())
    keys = json.loads(keys_path.read_text())
    train_folder = _train_folder(config, shuffle)
    model_cfg = read_config_as_dict(train_folder / "pytorch_config.yaml")
    snapshots = [s for s in get_model_snapshots("all", train_folder, Task.BOTTOM_UP) if not s.best]
    if not snapshots:
        raise SystemExit(f"no snapshot in {train_folder}")
    last = max(snapshots, key=lambda s: s.epochs)
    images = [str(dest / key_map[k]) for k in keys]
    started = time.time()
    predictions = analyze_image_folder(
        model_cfg=model_cfg, images=images, snapshot_path=last.path, device="cpu", progress_bar=False
    )
    seconds = time.time() - started
    by_path = {str(Path(p)): v for p, v in predictions.items()}
    rows = {}
    for key, image in zip(keys, images, strict=True):
        pose = np.asarray(by_path[str(Path(image))]["bodyparts"])[0]  # (keypoints, 3): one animal
        rows[key] = pose.tolist()
    result = {
        "snapshot": last.path.name,
        "epochs": last.epochs,
        "bodyparts": list(model_cfg["metadata"]["bodyparts"]),
        "seconds": seconds,  # model build, snapshot load and inference
        "predictions": rows,
    }
    out.write_text(json.dumps(result))


# --------------------------------------------------------------------------- the verbs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("prepare")
    p.add_argument("--source", type=Path, required=True)
    p.add_argument("--dest", type=Path, required=True)
    p.add_argument("--split", type=Path, required=True)
    t = verbs.add_parser("train")
    t.add_argument("--config", type=Path, required=True)
    t.add_argument("--shuffle", type=int, default=1)
    t.add_argument("--epochs", type=int, required=True)
    t.add_argument("--pretrained", action="store_true")
    t.add_argument("--timing", type=Path, required=True)
    t.add_argument("--threads", type=int, default=2)
    r = verbs.add_parser("predict")
    r.add_argument("--config", type=Path, required=True)
    r.add_argument("--shuffle", type=int, default=1)
    r.add_argument("--keys", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.verb == "prepare":
        prepare(args.source.absolute(), args.dest.absolute(), args.split)
    elif args.verb == "train":
        train(args.config.absolute(), args.shuffle, args.epochs, args.pretrained, args.timing, args.threads)
    else:
        predict(args.config.absolute(), args.shuffle, args.keys, args.out, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
