"""Bad-input cases: damaged, unfinished or foreign run folders."""

from __future__ import annotations

import json

from bad_inputs import (
    case,
    edit_rows,
    garbage,
    label_csv,
    put,
    train,
    truncate,
)
from dgp_pyro.run.folder import FINISHED

# --- run folders


@case("runs", "truncated-checkpoint")
def _(c):
    run = c.run()
    truncate(run / "checkpoints" / "last.pt")
    return ["predict", run, "--quiet"], ["last.pt", "corrupt"]


@case("runs", "corrupt-config")
def _(c):
    run = c.run()
    put(run / "config.json", "{ not json")
    return ["predict", run, "--quiet"], ["config.json"]


@case("runs", "config-size-big")
def _(c):
    run = c.run()
    config = json.loads((run / "config.json").read_text())
    config["size"] = "big"
    put(run / "config.json", json.dumps(config))
    return ["predict", run, "--quiet"], ["config.json", "size"]


@case("runs", "config-steps-text")
def _(c):
    run = c.run()
    config = json.loads((run / "config.json").read_text())
    config["steps"] = "many"
    put(run / "config.json", json.dumps(config))
    return ["evaluate", run], ["config.json", "steps"]


@case("runs", "checkpoints-missing")
def _(c):
    run = c.run()
    for path in (run / "checkpoints").iterdir():
        path.unlink()
    return ["predict", run, "--quiet"], ["last.pt"]


@case("runs", "resume-other-settings")
def _(c):
    run = c.run()
    return train(c.synth_source, run, "--resume", "--lr", "0.5"), ["--resume", "lr"]


@case("runs", "resume-loss-log-garbage")
def _(c):
    run = c.run()
    put(run / "loss.csv", garbage())
    return ["train", c.synth_source, "--out", run, "--resume", "--quiet"], ["loss.csv"]


@case("runs", "not-a-run")
def _(c):
    return ["predict", c.synth(), "--quiet"], ["config.json", "not a run"]


@case("runs", "evaluate-not-a-run")
def _(c):
    return ["evaluate", c.synth()], ["not a run"]


@case("runs", "split-deleted")
def _(c):
    run = c.run()
    (run / "split.json").unlink()
    return ["evaluate", run], ["split.json"]


@case("runs", "unfinished-no-calibration")
def _(c):
    run = c.run()
    for name in (FINISHED, "posterior_calibration.json"):
        (run / name).unlink(missing_ok=True)
    return ["predict", run, "--quiet"], ["unfinished", "--resume"]


@case("runs", "evaluate-unfinished")
def _(c):
    run = c.run()
    for name in (FINISHED, "posterior_calibration.json"):
        (run / name).unlink(missing_ok=True)
    return ["evaluate", run], ["unfinished", "--resume"]


@case("runs", "compare-elbo-log-cut")
def _(c):
    run = c.run()  # the ELBO log of the graphical models, its last row cut short
    put(run / "elbo.csv", "step,loss,elbo_data\n1,1523.5,-1400.25\n2,1498.25,-1380.5\n3,14")
    return ["compare", run], ["elbo.csv", "line 4"]


@case("runs", "project-moved")
def _(c):
    run, project = c.run_on_copy()
    project.rename(c.tmp / "moved")
    return ["evaluate", run], ["project"]


def _rename_snout(rows):
    return [[x.replace("snout", "nose") for x in r] for r in rows]


@case("runs", "project-keypoint-renamed")
def _(c):
    run, project = c.run_on_copy()
    for view in ("cam0", "cam1"):
        edit_rows(label_csv(project, view), _rename_snout)
    text = (project / "config.yaml").read_text().replace("snout", "nose")
    put(project / "config.yaml", text)
    return ["predict", run, "--quiet"], ["keypoints"]


