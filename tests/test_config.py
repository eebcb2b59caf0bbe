"""Run configuration: defaults round-trip, YAML loading, overrides, and errors that name the key."""

from __future__ import annotations

import pytest
import yaml

from prokd.config import ConfigError, DistillConfig, RunConfig, load_config, save_config


def test_defaults_round_trip_through_yaml(tmp_path):
    teachers = [str(tmp_path / "a")]
    config = RunConfig.from_dict({"distill": {"teachers": teachers, "aggregate": "adaptive"}, "label_map": {2: 1}})
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert config.preprocess.clip_percentiles == (0.5, 99.5)


def test_teacher_paths_in_a_yaml_file_are_relative_to_that_file(tmp_path):
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "kd.yaml"
    path.write_text(yaml.safe_dump({"distill": {"teachers": ["../runs/teacher", str(tmp_path / "elsewhere")]}}))
    config = load_config(path)
    assert config.distill.teachers == [str(tmp_path / "runs" / "teacher"), str(tmp_path / "elsewhere")]


def test_override_into_a_section_left_empty_in_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("distill: null\n")
    assert load_config(path, {"distill.teachers": ["/runs/t"]}).distill.teachers == ["/runs/t"]


def test_overrides_and_type_coercion(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"lr": 1, "epochs": 5}, "preprocess": {"clip_percentiles": [1, 99]}}))
    config = load_config(path, {"train.epochs": 7, "model.name": "unet-large", "preprocess.context": 1})
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.train.epochs == 7 and config.model.name == "unet-large"
    assert config.preprocess.in_channels == 3
    assert config.preprocess.clip_percentiles == (1.0, 99.0)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"train": {"lrr": 1}}, "unknown key 'train.lrr'"),
        ({"train": {"lr": "fast"}}, "'train.lr' must be float"),
        ({"train": {"epochs": True}}, "'train.epochs' must be int"),
        ({"preprocess": {"clip_percentiles": [99, 1]}}, "preprocess.clip_percentiles"),
        ({"model": {"out_channels": 3}}, "model.out_channels"),
        ({"split": {"mode": "loso"}}, "split.test_site"),
        ({"distill": {"restrict": "edges"}}, "distill.restrict"),
        ({"distill": {"cache_teachers": True, "feature": 1.0}}, "distill.cache_teachers"),
        ({"distill": {"pseudo_joint": True, "pseudo": 0.5}}, "distill.pseudo_joint"),
        ({"distill": {"infer_sites": True, "unlabeled_fraction": 0.25}}, "'distill.infer_sites' needs aggregate: site"),
        ({"distill": {"infer_sites": True, "aggregate": "site"}}, "distill.infer_sites.*unlabeled_fraction > 0"),
        ({"augment": []}, "augment: expected a mapping"),
        ({"distill": {"no_labels": True, "kl": 0.0}}, "'distill.no_labels' needs a term that teaches without labels"),
        ({"distill": {"no_labels": True, "kl": 0.0, "feature": 1.0}}, "'distill.no_labels' needs a term"),
        ({"distill": {"no_labels": True, "kl": 0.0, "consistency": 1.0}}, "'distill.no_labels' needs a term"),
        ({"distill": {"no_labels": True, "unlabeled_fraction": 0.5}}, "'distill.unlabeled_fraction' must stay 0"),
        ({"distill": {"no_labels": True, "aggregate": "learned"}}, "'distill.aggregate' learned trains its gate"),
        ({"distill": {"no_labels": True}, "max_cases": 4}, "'max_cases' keeps the labels of K training cases"),
    ],
)
def test_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        RunConfig.from_dict(data)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: top level must be a mapping"):
        load_config(listed)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("train:\n  seed: x\n")
    with pytest.raises(ConfigError, match="wrong.yaml: 'train.seed' must be int"):
        load_config(wrong)


def test_teacher_cache_allowed_with_augmentation():
    config = RunConfig.from_dict({"distill": {"cache_teachers": True}})
    assert config.augment.enabled and config.distill == DistillConfig(cache_teachers=True)


@pytest.mark.parametrize(
    "terms",
    [{"kl": 1.0}, {"kl": 0.0, "pseudo": 1.0}, {"kl": 0.0, "consistency": 1.0, "consistency_target": "teachers"}],
    ids=["kl", "pseudo", "consistency-to-teachers"],
)
def test_a_run_without_labels_draws_every_slice_unlabeled(terms):
    config = RunConfig.from_dict({"distill": {"no_labels": True, **terms}, "sites": ["SiteD"]})
    assert config.no_labels and config.distill.teaches_without_labels
    assert (config.distill.unlabeled_fraction, config.distill.unlabeled_share) == (0.0, 1.0)
    assert not RunConfig.from_dict({"distill": {"unlabeled_fraction": 0.25}}).no_labels
    assert RunConfig.from_dict({"distill": {"unlabeled_fraction": 0.25}}).distill.unlabeled_share == 0.25
    assert not RunConfig().no_labels
