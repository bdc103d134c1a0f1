"""A study for --seeds auto's end-to-end test: beside the baseline, an arm that differs only in its random init
(a null arm with the noise of seeds: its init_seed is offset from the seed) and arms at a thirtieth of the learning
rate (a large effect). Sequential seeding must stop the slow arms after the first round and go on with the null arm.
"""

from study import StudySpec


def resolve(config: dict) -> dict:
    # the init_seed axis is an offset: each seed still draws its own init, the null arm's differ from the baseline's
    return {**config, "init_seed": config["init_seed"] + config["seed"]}


def variant(config: dict) -> str:
    return f"lr={config['lr']:g}" + (" reinit" if config["init_seed"] != config["seed"] else "")


STUDY = StudySpec(
    name="seq_check",
    hypothesis="a thirtieth of the learning rate hurts; another random init does not",
    base={"n_layer": 2, "n_embd": 64, "n_head": 2},
    axes={"init_seed": [0, 1000], "lr": [3e-3, 1e-4]},
    baseline="lr=0.003",
    resolve=resolve,
    variant=variant,
)
