import numpy as np

from whyspike.run import classify, infer_eval_size, make_series


def test_roles_of_common_logger_names():
    cases = {
        "val_accuracy": ("accuracy", "val", True),
        "Valid Acc.": ("accuracy", "val", True),
        "validation/epoch_accuracy": ("accuracy", "val", True),
        "accuracy": ("accuracy", "train", True),
        "Train Loss": ("loss", "train", False),
        "eval_loss": ("loss", "val", False),
        "test_acc": ("accuracy", "val", True),
        "train_loss_step": ("loss", "train", False),
    }
    for name, (kind, split, hib) in cases.items():
        r = classify(name)
        assert (r.kind, r.split, r.higher_is_better) == (kind, split, hib), name
    for name in ["lr", "Learning Rate", "lr-SGD", "epoch_learning_rate", "train/learning_rate"]:
        assert classify(name).kind == "lr", name
    assert classify("grad_norm").kind == "grad_norm"
    assert classify("weight_norm").kind == "weight_norm"
    assert classify("epoch").kind == "meta"
    assert classify("train_time").kind == "meta"


def test_percent_detected_from_values():
    assert classify("test_acc", np.array([10.0, 85.3])).percent
    assert not classify("val_accuracy", np.array([0.1, 0.85])).percent


def test_make_series_rewind_keeps_later_values_and_records_event():
    events, warnings = [], []
    s = make_series("loss", "step", [0, 1, 2, 3, 2, 3, 4], [5, 4, 3, 2, 9, 8, 7], events=events, warnings=warnings)
    assert list(s.x) == [0, 1, 2, 3, 4]
    assert list(s.y) == [5, 4, 9, 8, 7]
    assert [e.kind for e in events] == ["step_rewind"] and events[0].at == 2


def test_eval_size_inferred_from_granularity():
    rng = np.random.default_rng(3)
    for n in (50, 200, 500, 5000):
        acc = rng.integers(int(0.2 * n), int(0.9 * n), 40) / n
        assert infer_eval_size(acc.astype(np.float32).astype(np.float64)) == n
    # two-decimal percent cannot reveal a 10 000-example set: no guess
    assert infer_eval_size(np.round(rng.integers(2000, 9000, 40) / 100, 2), percent=True) is None
    assert infer_eval_size(rng.random(40)) is None


def test_two_decimal_percent_cifar_accuracies_do_not_fake_an_eval_size(real_logs):
    # CIFAR-10 test set: 10 000 images, printed as percent with two decimals -> granularity not visible
    import whyspike

    run = whyspike.load_run(real_logs / "pytorch-classification" / "baseline_cifar10_resnet-110.log.txt")
    assert run.setup.eval_size is None


def test_momentum_logged_by_lightning_is_not_a_learning_rate():
    assert classify("lr-SGD-momentum").kind == "momentum"


def test_adam_betas_are_momentum_in_both_spellings():
    assert classify("beta1").kind == "momentum"
    assert classify("step/beta_1").kind == "momentum"
