"""The right text/JSON importer wins, from the name and the first 64 KB only."""

import json

import pytest

from whyspike.importers._registry import sniff

CASES = {
    # name: (file name, content, expected format)
    "keras csv": ("training.log", "epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\n0,0.5,0.1,1.2,0.5,1.1\n",
                  "keras-csv"),
    "keras csv unsorted": ("log.csv", "epoch,loss,val_loss\n0,1.2,1.1\n1,1.0,0.9\n", "keras-csv"),
    "lightning": ("metrics.csv", "epoch,step,train_loss_step,val_acc\n0,9,1.0,\n0,9,,0.5\n", "lightning-csv"),
    "lightning renamed": ("m.csv", "epoch,lr-SGD,step,val_loss\n0,0.1,0,\n0,,9,1.0\n", "lightning-csv"),
    "wandb history": ("history.csv", ",_runtime,_step,_timestamp,epoch,train/loss\n0,1,0,1.7e9,0,2.0\n", "wandb-csv"),
    "wandb with step and epoch": ("h.csv", "_step,epoch,step,loss\n0,0,0,1\n", "wandb-csv"),
    "generic csv": ("log.csv", "Epoch,Train Loss,Valid Acc\n0,1.0,50\n1,0.8,60\n", "table"),
    "generic tsv": ("log.txt", "Learning Rate\tTrain Loss\tValid Acc.\t\n0.1\t1.0\t50.0\t\n", "table"),
    "iteration table": ("log.txt", "iteration loss\n100 1.5\n200 1.2\n", "table"),
    "history json": ("history.json", json.dumps({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}), "keras-history"),
    "history json indented": ("h.json", json.dumps({"accuracy": [0.1], "loss": [1.0]}, indent=4), "keras-history"),
    "trainer state": ("trainer_state.json",
                      json.dumps({"epoch": 1.0, "log_history": [{"loss": 1.0, "step": 5, "epoch": 0.5}]},
                                 indent=2, sort_keys=True), "hf-trainer-state"),
    "trainer state renamed": ("state.json", json.dumps({"best_metric": None, "log_history": []}), "hf-trainer-state"),
    "json lines": ("log.txt", '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.9}\n', "jsonl"),
    "prefixed json lines": ("out.log", 'epoch 1\njson_stats: {"epoch": 1, "acc": 50}\n'
                            'json_stats: {"epoch": 2, "acc": 60}\n', "jsonl"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sniff_picks_the_right_reader(tmp_path, case):
    name, content, expected = CASES[case]
    p = tmp_path / name
    p.write_text(content)
    assert sniff(p).format == expected


def test_sniff_directories(tmp_path):
    lightning = tmp_path / "version_0"
    lightning.mkdir()
    (lightning / "metrics.csv").write_text("epoch,step,loss\n0,1,1.0\n")
    (lightning / "hparams.yaml").write_text("lr: 0.1\n")
    assert sniff(lightning).format == "lightning-csv"
    ckpt = tmp_path / "checkpoint-500"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text(json.dumps({"log_history": []}))
    assert sniff(ckpt).format == "hf-trainer-state"


def test_sniff_real_logs(real_logs):
    for path in sorted(real_logs.glob("*/*.log.txt")):
        expected = "jsonl" if path.parent.name == "wide-residual-networks" else "table"
        assert sniff(path).format == expected, path.name
