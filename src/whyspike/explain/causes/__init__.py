"""One evidence module per cause family (DESIGN.md contract 1). Each exposes ``assess(spike, ctx) -> Cause | None``."""

from . import (
    batchnorm_statistics,
    data_pipeline,
    eval_noise,
    grokking,
    lr_schedule,
    lr_warmup,
    optimization_instability,
    plateau_escape,
    resume,
    running_average,
    stochastic,
)

# Order only breaks ties in confidence; every module is asked about every spike.
MODULES = (lr_schedule, lr_warmup, resume, data_pipeline, running_average, grokking, optimization_instability,
           batchnorm_statistics, plateau_escape, eval_noise, stochastic)

__all__ = ["MODULES"]
