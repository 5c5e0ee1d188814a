"""Signals a log lacks that would sharpen the verdict, and how to record them."""

from __future__ import annotations

from dataclasses import dataclass

from ..run import Run


@dataclass
class MissingSignal:
    signal: str
    why: str
    how: str

    def to_dict(self) -> dict:
        return {"signal": self.signal, "why": self.why, "how": self.how}


def missing_signals(run: Run) -> list[MissingSignal]:
    out = []
    st = run.setup
    if not run.find(kind="lr") and not st.lr_milestones:
        out.append(MissingSignal(
            "learning_rate", "without it a schedule step cannot be told from any other jump",
            "log the LR each epoch (Keras: add logs['learning_rate'] in a callback before CSVLogger; PyTorch: "
            "scheduler.get_last_lr(); Lightning: LearningRateMonitor)"))
    if not run.find(split="val"):
        out.append(MissingSignal("validation metric", "train-only curves cannot separate learning from evaluation "
                                 "artifacts", "pass validation data to fit / log a val_* metric each epoch"))
    if not run.find(split="train", kind="accuracy") and not run.find(split="train", kind="loss"):
        out.append(MissingSignal("train metric", "needed to tell optimizer events (train and val move together) from "
                                 "eval-path effects", "log the training loss each epoch or step"))
    recorded = run.source.format == "whyspike-run"
    if not run.find(kind="grad_norm"):
        out.append(MissingSignal("gradient norm", "separates instability (norm spikes before the loss) from noise",
                                 "record with --detailed (Keras on the torch backend) or the PyTorch recorder"
                                 if recorded else
                                 "log the global gradient norm before clipping each step (HF Trainer logs grad_norm), "
                                 "or record the run with a whyspike recorder"))
    if st.eval_size is None and run.find(kind="accuracy", split="val"):
        out.append(MissingSignal("eval-set size", "sets the binomial noise floor of validation accuracy",
                                 "log accuracies unrounded, or pass the size to the recorder"))
    return out
