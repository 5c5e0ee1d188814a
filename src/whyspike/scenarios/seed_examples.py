"""The seed article's three Keras examples, run exactly as written, and Example 1 as its author meant it.

The scripts are the article's code blocks, vendored verbatim in ``seed/`` (see its README). They run through the
machinery of ``whyspike run``: ``from tensorflow import keras`` gets Keras 3 on the torch backend, ``plt.show()``
does nothing, the recorder is injected into ``model.fit``. The only thing added from outside is the random seed
(``keras.utils.set_random_seed``), so the scripts' unseeded ``np.random`` data are the same every run.

What the article predicted and what its code does:

- Example 1 says the ``ExponentialDecay(decay_steps=10, staircase=True)`` schedule "drops by factor of 0.5 every 10
  epochs" and that "around epochs 10 and 20, noticeable spikes will likely appear". ``decay_steps`` counts
  optimizer steps: with 1000 samples and batch 32 (32 steps an epoch) the LR halves 3.2 times per epoch, reaches
  ~1e-31 by epoch 30, training stalls after ~2 epochs and nothing happens at 10 or 20. ``decay_steps=320`` is what
  "every 10 epochs" needs (``seed-ex1-intended``).
- Examples 2 and 3 train on random labels (``np.random.randint``): there is nothing to learn but memorization, and
  the article's "spike" from batch statistics (2) or momentum (3) is epoch-to-epoch noise of a running mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ._base import Scenario
from ._keras import run_keras_script

SEED_FILES = {"ex1": "ex1_lr_decay.py", "ex2": "ex2_batchnorm.py", "ex3": "ex3_sgd_momentum.py"}
INTENDED = ("decay_steps=10,", "decay_steps=320,  # 10 epochs x 32 steps per epoch (whyspike: as intended)")


def seed_source(key: str) -> str:
    """The article's code block, byte for byte (``seed/<file>``)."""
    return resources.files(__package__).joinpath("seed", SEED_FILES[key]).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Config:
    example: str = "ex1"
    seed: int = 1
    max_epochs: int | None = None  # None: the script's own epochs=30
    intended: bool = False  # Example 1 with decay_steps=320 (every 10 epochs, as the article says it means)


def train(cfg: Config, run_dir: Path) -> None:
    source = seed_source(cfg.example)
    name = SEED_FILES[cfg.example]
    if cfg.intended:
        if INTENDED[0] not in source:
            raise RuntimeError(f"{name} no longer holds {INTENDED[0]!r}: the intended version cannot be derived")
        source = source.replace(*INTENDED)
        name = name.replace(".py", "_intended.py")
    run_keras_script(source, name, run_dir, seed=cfg.seed, max_epochs=cfg.max_epochs)


EX1_ARTICLE = ("The ExponentialDecay schedule \"drops by factor of 0.5 every 10 epochs\"; \"around epochs 10 and 20, "
               "noticeable spikes will likely appear due to the sudden reduction in the learning rate\".")

SCENARIOS = (
    Scenario(
        name="seed-ex1",
        description="the article's Example 1 as written: ExponentialDecay(decay_steps=10) on random labels",
        truth="schedule_units",
        truth_is_finding=True,
        no_jump=True,
        metric="accuracy",
        framework="keras",
        train=train,
        sizes={"full": Config(), "ci": Config(max_epochs=15)},
        article=EX1_ARTICLE,
        why=("decay_steps counts optimizer steps, not epochs: 1000 samples / batch 32 = 32 steps an epoch, so the LR "
             "halves 3.2 times per epoch (0.01 -> 1.25e-3 after the first epoch, ~1e-31 after the thirtieth). "
             "Training stalls after ~2 epochs; by epochs 10 and 20 the LR is ~1e-12 and ~1e-21, and halving it "
             "moves nothing. The fix for \"every 10 epochs\" is decay_steps = 10 x 32 = 320."),
        probe_plan=("lr.decay=off",),
        tags=("seed",),
    ),
    Scenario(
        name="seed-ex1-intended",
        description="Example 1 as its author meant it: decay_steps=320, the LR halves at epochs 10 and 20",
        truth="lr_schedule",
        metric="loss",
        at=(10, 20),
        tolerance=1,
        framework="keras",
        train=train,
        sizes={"full": Config(intended=True), "ci": Config(intended=True, max_epochs=20)},
        article=EX1_ARTICLE,
        why=("With decay_steps=320 the LR halves exactly at epochs 10 and 20. On random labels there is nothing to "
             "generalize; a halved Adam step lets the network memorize a little faster, so the training loss "
             "steps down at the decay — a small step (~0.015 at epoch 10; significant for 2 of seeds 0-4), not a spike "
             "in accuracy."),
        probe_plan=("seeds", "lr.shift=+3"),
        tags=("seed",),
    ),
    Scenario(
        name="seed-ex2",
        description="the article's Example 2 as written: Dense + BatchNormalization, Adam 1e-3, random labels",
        truth="stochastic",
        jump_optional=True,
        metric="accuracy",
        framework="keras",
        train=train,
        sizes={"full": Config(example="ex2"), "ci": Config(example="ex2", max_epochs=20)},
        article=("\"Some epochs can yield higher accuracy than others due to the random sampling process when "
                 "constructing mini-batches\" with BatchNormalization, \"causing a temporary spike in accuracy\"."),
        why=("The labels are random, so accuracy can only rise by memorizing 1000 examples, slowly and steadily; "
             "the training accuracy Keras reports is a running mean over each epoch, whose epoch-to-epoch wobble "
             "is the mini-batch noise the article means — a few hundredths, nothing that stands out of it."),
        probe_plan=("seeds", "bn.recompute"),
        tags=("seed",),
    ),
    Scenario(
        name="seed-ex3",
        description="the article's Example 3 as written: SGD(0.01, momentum 0.9) on random labels",
        truth="stochastic",
        jump_optional=True,
        metric="accuracy",
        framework="keras",
        train=train,
        sizes={"full": Config(example="ex3"), "ci": Config(example="ex3", max_epochs=20)},
        article=("With SGD and momentum \"the model can exhibit jumps in accuracy due to the random nature of "
                 "gradient updates and accumulated inertia\"; \"the history plot may show a sudden increase in "
                 "performance, a clear spike\"."),
        why=("On random labels SGD with momentum memorizes slowly; the epoch-to-epoch changes of the running-mean "
             "accuracy are a few hundredths and land at different epochs for different seeds: noise, not a jump."),
        probe_plan=("seeds",),
        tags=("seed",),
    ),
)
