"""The real public logs in ../shared/real-logs: their documented LR-drop jumps, found and explained."""

import json

import pytest

import whyspike
from whyspike.diagnosis import diagnose

# file -> metric -> epochs (0-based rows for the TSVs, 1-based json_stats epochs for WRN) where the LR drops
PYTORCH_CLASSIFICATION = {
    "baseline_cifar10_resnet-110.log.txt": [81, 122],
    "baseline_cifar10_vgg19_bn.log.txt": [81, 122],
    "baseline_cifar100_resnet-110.log.txt": [81, 122],
    "baseline_cifar100_densenet-bc-100-12.log.txt": [150, 225],
    "baseline_cifar100_WRN-28-10-drop.log.txt": [60, 120, 160],
    "baseline_imagenet_resnet18.log.txt": [31, 61],
}
WRN = ["wide-resnet_1121914561.log.txt", "nin_1875527964.log.txt", "resnet-pre-act_17934627.log.txt",
       "vgg_24208029.log.txt"]


def _val_spikes(d, metric):
    return [s for s in d.spikes if s.metric == metric]


@pytest.mark.parametrize("name", sorted(PYTORCH_CLASSIFICATION))
def test_pytorch_classification_first_lr_drop_is_found_and_attributed(real_logs, name):
    run = whyspike.load_run(real_logs / "pytorch-classification" / name)
    d = diagnose(run)
    first_drop = PYTORCH_CLASSIFICATION[name][0]
    lr = run.series["Learning Rate"]
    assert lr.value_at(first_drop) < lr.value_at(first_drop - 1)  # the schedule really drops there
    jumps = [s for s in _val_spikes(d, "Valid Acc.") if abs(s.at - first_drop) <= 1]
    assert jumps, [(s.metric, s.at) for s in d.spikes]
    j = jumps[0]
    assert j.direction == "up" and j.shape == "step"
    assert j.causes[0].id == "lr_schedule"
    assert j.causes[0].confidence >= 0.7
    assert any(f"{first_drop}" in e for e in j.causes[0].evidence)


def test_resnet110_cifar10_jump_numbers(real_logs):
    d = diagnose(whyspike.load_run(real_logs / "pytorch-classification" / "baseline_cifar10_resnet-110.log.txt"))
    j = [s for s in _val_spikes(d, "Valid Acc.") if s.at == 81][0]
    # documented: 88.56 -> 92.70 at the drop; the trend lines on each side agree to within a point
    assert 3.5 <= j.size <= 6.0
    assert 86.5 <= j.before <= 89.0 and 92.0 <= j.after <= 93.5
    assert j.significance > 6


def test_lower_initial_lr_gives_a_smaller_jump(real_logs):
    base = real_logs / "pytorch-classification"
    big = [s for s in diagnose(whyspike.load_run(base / "baseline_cifar10_resnet-110.log.txt")).spikes
           if s.metric == "Valid Acc." and abs(s.at - 81) <= 1][0]
    small = [s for s in diagnose(whyspike.load_run(base / "baseline_lr0.005_cifar10_resnet-110.log.txt")).spikes
             if s.metric == "Valid Acc." and abs(s.at - 81) <= 1][0]
    assert small.size < 0.6 * big.size


@pytest.mark.parametrize("name", WRN)
def test_wide_residual_networks_drops_at_60_and_120(real_logs, name):
    run = whyspike.load_run(real_logs / "wide-residual-networks" / name)
    assert run.setup.lr_milestones == [60, 120, 160] and run.setup.lr_decay_factor == 0.2
    d = diagnose(run)
    acc = {s.at: s for s in _val_spikes(d, "test_acc")}
    for epoch in (60, 120):
        assert epoch in acc, sorted(acc)
        assert acc[epoch].direction == "up"
        assert acc[epoch].causes[0].id == "lr_schedule"
    # the high-LR phase swings +-5-12 points: those swings must not be reported as jumps
    assert all(s.at >= 60 for s in acc.values()), sorted(acc)


def test_wrn_40_4_documented_jump(real_logs):
    d = diagnose(whyspike.load_run(real_logs / "wide-residual-networks" / "wide-resnet_1121914561.log.txt"))
    j = [s for s in _val_spikes(d, "test_acc") if s.at == 60][0]
    assert 6 <= j.size <= 10  # documented 85.3 -> 93.2
    assert "0.1 -> 0.02" in j.causes[0].evidence[0]


def test_every_real_log_reads_and_diagnoses_to_valid_json(real_logs):
    from whyspike.outputs import to_json

    for path in sorted(real_logs.glob("*/*.log.txt")):
        d = diagnose(whyspike.load_run(path))
        doc = json.loads(to_json(d))
        assert doc["schema"] == "whyspike/diagnosis-v1"
        sig = [s["significance"] for s in doc["spikes"]]
        assert sig == sorted(sig, reverse=True)
        for s in doc["spikes"]:
            assert s["causes"] and s["causes"][0]["evidence"]
            conf = [c["confidence"] for c in s["causes"]]
            assert conf == sorted(conf, reverse=True)
