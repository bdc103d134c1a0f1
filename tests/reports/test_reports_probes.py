"""The report reads each trial's probes.json: Toeplitz filters are drawn per variant with their receptive field."""

import json

import pandas as pd

from reports.collect import load_study
from reports.figures import build_figures
from trainables.probes import receptive_field


def test_toeplitz_filters_figure_from_probes_json(tmp_path):
    study = tmp_path / "toeplitz_flags"
    (study / "trials" / "toeplitz_mean_proj").mkdir(parents=True)
    (study / "study.json").write_text(
        json.dumps(
            {"study": "toeplitz_flags", "family": "toeplitz", "profile": "smoke", "metric": "val_bpb", "mode": "min"}
        )
    )
    pd.DataFrame(
        [
            {
                "trial": "toeplitz_mean_proj",
                "study": "toeplitz_flags",
                "variant": "mean_proj",
                "seed": 0,
                "status": "done",
                "error": None,
                "toep_mean": True,
                "toep_proj": True,
                "val_bpb": 2.0,
                "val_loss": 5.0,
                "params_total": 1000,
            }
        ]
    ).to_csv(study / "trials.csv", index=False)
    one_hot = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]  # all the mass at lag 3
    filters = [
        {
            "layer": 0,
            "head": 0,
            "filter": one_hot,
            "effective": one_hot,
            "receptive_field": receptive_field(__import__("torch").tensor(one_hot)),
        }
    ]
    (study / "trials" / "toeplitz_mean_proj" / "probes.json").write_text(json.dumps({"filters": filters}))
    s = load_study(study)
    figs = build_figures(s, {})
    fig = figs["toeplitz_filters"]
    (trace,) = fig.data
    assert "(rf 3)" in trace.name
    assert list(trace.y) == one_hot and list(trace.x) == [1, 2, 3, 4, 5, 6]  # lag + 1 on a log axis
