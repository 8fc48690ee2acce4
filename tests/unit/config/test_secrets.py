"""launcher.config.secrets: secrets are masked in outputs and refused in configs."""

from __future__ import annotations

import pytest

from launcher.config import secrets
from launcher.config import Config, ConfigError


def test_redact_masks_secret_keys_and_values_but_not_tokenizer():
    cfg = {"model": {"tokenizer": "tok/", "name_or_path": "m"}, "task_options": {"hf_token": "abc", "max_tokens": 5},
           "logging": {"mlflow_tracking_uri": "https://bob:pw@mlflow.example.com"},
           "ray": {"storage_path": "s3://b/runs?endpoint_override=minio:9000&secret_key=xyz"}}
    out = secrets.redact(cfg)
    assert out["model"] == cfg["model"]
    assert out["task_options"] == {"hf_token": "***", "max_tokens": 5}
    assert out["logging"]["mlflow_tracking_uri"] == "https://***@mlflow.example.com"
    assert out["ray"]["storage_path"] == "s3://b/runs?endpoint_override=minio:9000&secret_key=***"


@pytest.mark.parametrize("section,key,value,names", [
    ("model", "tokenizer", "hf_" + "x1Y2z3" * 6, "HF_TOKEN"),
    ("logging", "mlflow_tracking_uri", "https://bob:hunter2@mlflow.example.com", "MLFLOW_TRACKING_PASSWORD"),
    ("ray", "storage_path", "s3://bucket/runs?access_key=AKIAABCDEFGHIJKLMNOP", "AWS_ACCESS_KEY_ID"),
    ("ray", "address", "ray://head:10001?token=abcdef", "environment"),
])
def test_secrets_in_configs_are_refused(section, key, value, names):
    from launcher.config import validate

    cfg = Config()
    cfg.model.name_or_path, cfg.data.train_file = "m", "x.csv"
    setattr(getattr(cfg, section), key, value)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert e.value.key == f"{section}.{key}" and names in str(e.value) and value not in str(e.value)


def test_secret_task_options_are_refused_by_name():
    from launcher.config import validate

    cfg = Config(task_options={"wandb_api_key": "0123456789abcdef"})
    cfg.model.name_or_path, cfg.data.train_file = "m", "x.csv"
    with pytest.raises(ConfigError, match="task_options.wandb_api_key: looks like a secret"):
        validate(cfg)


def test_a_hub_commit_revision_is_not_a_secret():
    from launcher.config import validate

    cfg = Config()
    cfg.model.name_or_path, cfg.data.train_file = "org/model", "x.csv"
    cfg.model.revision = "0123456789abcdef0123456789abcdef01234567"
    validate(cfg)


def test_print_config_refuses_secrets(tmp_path, capsys):
    from launcher.__main__ import main

    code = main(["train", "--model.name_or_path", "m", "--data.train_file", "x.csv",
                 "--logging.mlflow_tracking_uri", "https://bob:hunter2@h", "--print-config"])
    captured = capsys.readouterr()
    assert code == 2 and "hunter2" not in captured.out + captured.err


@pytest.mark.parametrize("name, secret", [
    ("hf_token", True), ("auth_token", True), ("access_token", True), ("WANDB_API_KEY", True), ("apiKey", True),
    ("token", True), ("pad_token_id", False), ("eos_token", False), ("bos_token_ids", False), ("token_type_ids", False),
    ("mask_token", False), ("max_tokens", False), ("tokenizer", False),
])
def test_special_token_names_are_not_secrets(name, secret):
    """A tokenizer's special tokens (launcher.json meta, task options) are data, not credentials."""
    assert secrets.is_secret_key(name) is secret
