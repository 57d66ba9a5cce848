"""Training: data alignment and determinism, losses, schedule, overfitting, exact resume, budget, records, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mambaesr_runtime.errors import CheckpointError, ConfigError
from mambaesr_runtime.imaging.sets import load_benchmark
from mambaesr_runtime.model.checkpoint import load_checkpoint, save_checkpoint
from mambaesr_runtime.model.config import variant
from mambaesr_runtime.model.net import build_model
from mambaesr_runtime.training.data import CropSampler, DataError, benchmark_copy, list_images, load_pairs, make_pair
from mambaesr_runtime.training.loop import TrainConfig, _param_groups, lr_at, thin_curve, train
from mambaesr_runtime.training.losses import PIXEL_LOSSES, distillation_loss, pixel_loss
from mambaesr_runtime.training.records import latest_summary


@pytest.fixture()
def small_train(shared_data):
    return (str(shared_data / "train" / "T91"),)


def tiny_cfg(train_dirs, shared_data=None, **kw):
    base = dict(kind="student", variant="tiny", train_dirs=train_dirs, patch=12, batch=4, steps=12, eval_every=6,
                max_images=4, warmup_steps=3, lr=5e-3, seed=3)
    if shared_data is not None:
        base.update(val_dirs=(str(shared_data / "benchmarks" / "Set5"),), val_max_images=2)
    base.update(kw)
    return TrainConfig(**base)


# ---------------------------------------------------------------------------------------------- data
def test_crops_stay_aligned_under_every_flip_and_rotation():
    """HR made of constant s x s blocks: any aligned crop, flipped or rotated, is the LR crop repeated."""
    rng = np.random.default_rng(0)
    lr = rng.integers(0, 256, (20, 17, 3), dtype=np.uint8)
    hr = lr.repeat(3, axis=0).repeat(3, axis=1)
    sampler = CropSampler([(lr, hr)], scale=3, patch=6, batch=64, seed=1)
    lrb, hrb = sampler.sample()
    assert lrb.shape == (64, 3, 6, 6) and hrb.shape == (64, 3, 18, 18)
    assert torch.equal(hrb, lrb.repeat_interleave(3, dim=2).repeat_interleave(3, dim=3))
    assert len({tuple(x.flatten()[:5].tolist()) for x in lrb}) > 10  # crops differ


def test_sampler_is_deterministic_and_its_state_resumes():
    lr = np.random.default_rng(0).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    pairs = [(lr, lr.repeat(2, 0).repeat(2, 1))]
    a, b = CropSampler(pairs, 2, 8, 4, seed=5), CropSampler(pairs, 2, 8, 4, seed=5)
    assert torch.equal(a.sample()[0], b.sample()[0])
    state = a.state()
    want = a.sample()[0]
    b.set_state(state)
    assert torch.equal(b.sample()[0], want)


def test_pairs_use_the_matlab_degradation_and_cache(tmp_path, small_train):
    pairs = load_pairs(small_train, 4, cache_dir=tmp_path / "cache", max_images=2)
    again = load_pairs(small_train, 4, cache_dir=tmp_path / "cache", max_images=2)
    assert len(list((tmp_path / "cache").iterdir())) == 2
    for (lr, hr), (lr2, hr2) in zip(pairs, again):
        assert hr.shape[0] == 4 * lr.shape[0] and hr.shape[1] == 4 * lr.shape[1]
        assert np.array_equal(lr, make_pair(hr, 4)[0]) and np.array_equal(lr, lr2)


def test_every_crop_position_of_the_data_set_is_equally_likely():
    """A 10x bigger image (in crop positions) gets ~10x the crops: images are drawn by their crop positions."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)  # 3 x 3 = 9 positions for patch 8
    big = np.full((37, 17, 3), 7, np.uint8)  # 30 x 10 = 300 positions, one colour
    sampler = CropSampler([(small, small.repeat(2, 0).repeat(2, 1)), (big, big.repeat(2, 0).repeat(2, 1))],
                          2, 8, 2000, seed=0)
    lr, _ = sampler.sample()
    from_big = float((lr == 7 / 255).flatten(1).all(dim=1).float().mean())
    assert abs(from_big - 300 / 309) < 0.015, from_big


def test_folder_searches_skip_test_sets_unless_named(tmp_path):
    for folder in ("T91", "Kodak", "nested/McMaster"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "a.png").write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, skip_test_sets=True)] == ["T91/a.png"]
    assert len(list_images(tmp_path / "Kodak", skip_test_sets=True)) == 1  # named on its own: asked for


def test_copies_of_benchmark_images_are_recognised(shared_data):
    """Set5 ``woman`` is BSD300 302003 scaled by 0.715: rescaled, rotated, flipped or re-encoded copies of a
    benchmark image are found; other training images are not."""
    import cv2

    bench = [("Set5", name, hr) for name, _, hr in load_benchmark(shared_data / "benchmarks" / "Set5")]
    woman = next(hr for _, name, hr in bench if name == "woman")
    rescaled = cv2.resize(woman, None, fx=1.4, fy=1.4, interpolation=cv2.INTER_CUBIC)
    _, jpeg = cv2.imencode(".jpg", rescaled[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
    recoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1]
    for copy in (woman, rescaled, np.rot90(recoded), recoded[:, ::-1]):
        assert benchmark_copy(np.ascontiguousarray(copy), bench) == "Set5/woman"
    pairs = load_pairs(shared_data / "train" / "BSD200", 4, max_images=40)
    assert all(benchmark_copy(hr, bench) is None for _, hr in pairs)


def test_training_refuses_a_benchmark_image_among_its_files(tmp_path, shared_data):
    import cv2

    (tmp_path / "train").mkdir()
    for src in sorted((shared_data / "train" / "T91").iterdir())[:2]:
        (tmp_path / "train" / src.name).write_bytes(src.read_bytes())
    baby = cv2.imread(str(shared_data / "benchmarks" / "Set5" / "HR" / "baby.png"))
    cv2.imwrite(str(tmp_path / "train" / "innocent.png"), cv2.resize(baby, None, fx=0.5, fy=0.5))
    cfg = tiny_cfg((str(tmp_path / "train"),), shared_data, steps=1)
    with pytest.raises(DataError, match="innocent.png is Set5/baby"):
        train(cfg, runs_root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made


def test_weight_decay_only_on_conv_and_linear_weights():
    from tinymodels import TINY, untrained

    model = untrained("tiny", **TINY["lines"])
    decay, no_decay = _param_groups(model, None, 1e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decayed and all(n.endswith("weight") and "norm" not in n for n in decayed), decayed
    assert {n for n in names.values() if n.endswith(("A_log", "dt_bias", ".D", "bias", "norm_weight"))} == {
        names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0


def test_sampler_refuses_images_smaller_than_the_patch():
    tiny = np.zeros((5, 5, 3), np.uint8)
    with pytest.raises(DataError, match="lower the patch size"):
        CropSampler([(tiny, tiny.repeat(2, 0).repeat(2, 1))], 2, 8, 1)


# ---------------------------------------------------------------------------------------------- losses, schedule
def test_kd_is_zero_when_student_equals_teacher():
    out = torch.rand(2, 3, 8, 8)
    hr = torch.rand(2, 3, 8, 8)
    for name in PIXEL_LOSSES:
        parts = distillation_loss(name, out, hr, teacher_out=out.clone(), alpha=0.2)
        assert parts["kd"].item() == 0.0
        assert parts["total"].item() == pytest.approx(0.8 * pixel_loss(name, out, hr).item())
    with pytest.raises(ConfigError):
        distillation_loss("l1", out, hr, out, alpha=1.5)


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(kind="x", variant="tiny", train_dirs=("d",), steps=100, warmup_steps=10, lr=1e-3,
                      min_lr_ratio=0.01)
    assert lr_at(cfg, 0) == pytest.approx(1e-4) and lr_at(cfg, 9) == pytest.approx(1e-3)
    assert lr_at(cfg, 55) < lr_at(cfg, 20) and lr_at(cfg, 100) == pytest.approx(1e-5)


def test_channels_last_trains_the_same_maths(tmp_path, small_train):
    from tinymodels import TINY

    a = train(tiny_cfg(small_train, steps=4, eval_every=100, model_overrides=TINY["lines"]), runs_root=tmp_path / "a")
    b = train(tiny_cfg(small_train, steps=4, eval_every=100, model_overrides=TINY["lines"], channels_last=True),
              runs_root=tmp_path / "b")
    la, lb = ([e["loss"] for e in json.loads((r / "metrics.json").read_text())["curves"]["train"]] for r in (a, b))
    assert np.allclose(la, lb, rtol=1e-4), (la, lb)


def test_long_records_keep_recent_steps_whole_and_thin_the_old_ones():
    entries = [{"step": i, "loss": 1 / i} for i in range(1, 3001)]
    thinned = thin_curve(entries)
    assert [e["step"] for e in thinned[:3]] == [10, 20, 30] and thinned[-2000:] == entries[-2000:]
    assert thin_curve(thinned) == thinned  # saving again changes nothing
    assert thin_curve(entries[:500]) == entries[:500]


def test_bad_training_config_lists_problems():
    with pytest.raises(ConfigError, match="variant must be one of .*loss must be one of"):
        TrainConfig(kind="x", variant="huge", train_dirs=("d",), loss="l3")


# ---------------------------------------------------------------------------------------------- the loop
def test_tiny_model_overfits_a_few_crops(tmp_path, small_train):
    # The last conv starts at zero, so training starts from the nearest-neighbour upscale (L1 ~0.04 here, where a
    # random last conv started at ~0.14) and must learn well past it.
    cfg = tiny_cfg(small_train, steps=150, eval_every=1000, max_images=1, batch=2, patch=12, warmup_steps=5)
    run = train(cfg, runs_root=tmp_path)
    losses = [e["loss"] for e in json.loads((run / "metrics.json").read_text())["curves"]["train"]]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5]), (losses[:5], losses[-10:])


def test_resume_continues_the_exact_trajectory(tmp_path, shared_data, small_train):
    cfg = tiny_cfg(small_train, shared_data)
    whole = train(cfg, runs_root=tmp_path / "a")
    half = train(cfg, runs_root=tmp_path / "b", stop_after=5)
    assert json.loads((half / "metrics.json").read_text())["steps"] == 5
    resumed = train(cfg, runs_root=tmp_path / "b", resume=half)
    assert resumed == half
    m1, _ = load_checkpoint(whole / "model_last")
    m2, _ = load_checkpoint(resumed / "model_last")
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    c1 = json.loads((whole / "metrics.json").read_text())["curves"]
    c2 = json.loads((resumed / "metrics.json").read_text())["curves"]
    assert [e["loss"] for e in c1["train"]] == [e["loss"] for e in c2["train"]]


def test_resume_refuses_another_config_and_a_torn_state(tmp_path, small_train):
    cfg = tiny_cfg(small_train, steps=4, eval_every=2)
    run = train(cfg, runs_root=tmp_path, stop_after=2)
    with pytest.raises(ConfigError, match="another training config"):
        train(tiny_cfg(small_train, steps=4, eval_every=2, lr=1e-3), runs_root=tmp_path, resume=run)
    state = json.loads((run / "train_state.json").read_text())
    state["step"] = 99
    (run / "train_state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="interrupted"):
        train(cfg, runs_root=tmp_path, resume=run)


def test_distillation_starts_at_zero_when_the_teacher_is_the_student(tmp_path, small_train):
    torch.manual_seed(3)  # the seed the run uses: the student starts from exactly these weights
    teacher = build_model(variant("tiny"))
    save_checkpoint(teacher, tmp_path / "teacher", variant="tiny")
    run = train(tiny_cfg(small_train, steps=2, teacher=str(tmp_path / "teacher"), alpha=0.4), runs_root=tmp_path)
    first = json.loads((run / "metrics.json").read_text())["curves"]["train"][0]
    assert first["kd"] < 1e-7 and first["pixel"] > 0.01


def test_time_budget_stops_cleanly_with_a_complete_record(tmp_path, shared_data, small_train):
    run = train(tiny_cfg(small_train, shared_data, steps=100_000, eval_every=50, time_budget_s=6.0),
                runs_root=tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stopped"] == "time budget" and 0 < metrics["steps"] < 100_000
    for name in ("config.json", "git.json", "train.log", "curves.png", "model_last.safetensors", "model_last.json",
                 "model_best.json", "train_state.safetensors", "train_state.json"):
        assert (run / name).is_file(), name
    assert (tmp_path / "latest").resolve() == run.resolve()
    assert "latest average PSNR" in latest_summary(tmp_path)
    _, info = load_checkpoint(run / "model_last")
    assert info["training"]["steps"] == metrics["steps"] and info["training"]["hardware"] == "cpu"


def test_perceptual_loss_needs_local_weights_and_measures_feature_distance(tmp_path):
    from safetensors.torch import save_file

    from mambaesr_runtime.training.losses import VGG_LAYER, PerceptualLoss, _vgg19_features

    with pytest.raises(ConfigError, match="nothing is downloaded"):
        PerceptualLoss(tmp_path / "vgg19.safetensors")
    torch.manual_seed(0)
    net = _vgg19_features(VGG_LAYER)
    save_file({f"features.{k}": v for k, v in net.state_dict().items()}, str(tmp_path / "vgg19.safetensors"))
    loss = PerceptualLoss(tmp_path / "vgg19.safetensors")
    a = torch.rand(1, 3, 32, 32)
    assert loss(a, a.clone()).item() == 0.0
    assert loss(a, torch.rand(1, 3, 32, 32)).item() > 0


def test_feature_distillation_trains_adapters_and_resumes_exactly(tmp_path, small_train):
    torch.manual_seed(1)
    save_checkpoint(build_model(variant("tiny")), tmp_path / "teacher", variant="tiny")
    cfg = tiny_cfg(small_train, steps=6, eval_every=3, teacher=str(tmp_path / "teacher"), feature_weight=0.5)
    whole = train(cfg, runs_root=tmp_path / "a")
    first = json.loads((whole / "metrics.json").read_text())["curves"]["train"][0]
    assert first["feature"] > 0
    half = train(cfg, runs_root=tmp_path / "b", stop_after=3)
    resumed = train(cfg, runs_root=tmp_path / "b", resume=half)
    c1 = json.loads((whole / "metrics.json").read_text())["curves"]["train"]
    c2 = json.loads((resumed / "metrics.json").read_text())["curves"]["train"]
    assert [e["loss"] for e in c1] == [e["loss"] for e in c2]
    with pytest.raises(ConfigError, match="needs a teacher"):
        tiny_cfg(small_train, feature_weight=0.5)


def test_a_run_recorded_before_a_config_field_existed_still_resumes(tmp_path, small_train):
    """Runs outlive code changes: a config.json without a newer field (here ``init`` and ``feature_weight``) means
    that field's default, so the run resumes instead of being refused as 'another config'."""
    cfg = tiny_cfg(small_train, steps=4, eval_every=2)
    run = train(cfg, runs_root=tmp_path, stop_after=2)
    stored = json.loads((run / "config.json").read_text())
    for key in ("init", "feature_weight"):
        del stored["train"][key]
    (run / "config.json").write_text(json.dumps(stored))
    assert train(cfg, runs_root=tmp_path, resume=run) == run
    assert json.loads((run / "metrics.json").read_text())["steps"] == 4


def test_init_starts_from_a_checkpoint_and_refuses_another_variant(tmp_path, small_train):
    first = train(tiny_cfg(small_train, steps=6, eval_every=100), runs_root=tmp_path / "a")
    start, _ = load_checkpoint(first / "model_last")
    # lr 0 throughout: the fine-tuned weights must be exactly the ones it started from
    tuned = train(tiny_cfg(small_train, steps=2, eval_every=100, lr=0.0, init=str(first / "model_last")),
                  runs_root=tmp_path / "b")
    end, _ = load_checkpoint(tuned / "model_last")
    for (k, a), b in zip(start.state_dict().items(), end.state_dict().values()):
        assert torch.equal(a, b), k
    other = tmp_path / "student"
    save_checkpoint(build_model(variant("student")), other, variant="student")
    with pytest.raises(ConfigError, match="same variant and scale"):
        train(tiny_cfg(small_train, steps=2, init=str(other)), runs_root=tmp_path / "c")
