"""Safe defaults: atomic outputs, output_dir protection, NaN handling, secrets, trust_remote_code, loopback Ray.

Fast: no Ray Train run here (the Ray runs are in test_faults.py); one test starts a bare local Ray in
a subprocess to see where its dashboard listens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from conftest import base_config
from launcher.config import secrets
from launcher import export as export_lib
from launcher import files as files_lib
from launcher.config import Config, ConfigError

# ---------------------------------------------------------------------- atomic writes


def test_atomic_write_is_complete_or_absent(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    files_lib.write_json(str(path), {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        files_lib.write_json(str(path), {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}  # the old file, whole
    assert os.listdir(tmp_path) == ["results.json"]  # no temp file left behind
    with pytest.raises(OSError):
        files_lib.write_json(str(tmp_path / "new.json"), {"b": 1})
    assert not (tmp_path / "new.json").exists()


def test_failed_export_leaves_previous_best(tmp_path, tiny_bert, sentiment_files):
    from transformers import AutoTokenizer, BertForSequenceClassification

    from launcher.tasks import get_task

    cfg = base_config(tiny_bert, sentiment_files, str(tmp_path / "out"))
    task = get_task(cfg.task)(cfg)
    model = BertForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    best = str(tmp_path / "out" / "best")
    export_lib.save_folder(cfg, task, {"num_labels": 2}, model, tok, best)
    before = sorted(os.listdir(best))

    class Broken:
        def save_pretrained(self, path):
            with open(os.path.join(path, "tokenizer.json"), "w") as f:
                f.write("{")  # half written
            raise OSError("node lost")

    with pytest.raises(OSError):
        export_lib.save_folder(cfg, task, {"num_labels": 2}, model, Broken(), best)
    assert sorted(os.listdir(best)) == before
    assert sorted(os.listdir(tmp_path / "out")) == ["best"]  # no temp folder left


# ---------------------------------------------------------------------- output_dir and run state


def test_output_dir_never_overwritten_without_a_flag(tmp_path, tiny_bert, sentiment_files):
    from launcher import storage
    from launcher.training import prepare as prepare_lib

    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")
    cfg = base_config(tiny_bert, sentiment_files, str(out))
    with pytest.raises(ConfigError, match="is not empty — pass --overwrite"):
        prepare_lib.check_output_dir(cfg, overwrite=False, resume=False)
    prepare_lib.check_output_dir(cfg, overwrite=True, resume=False)
    prepare_lib.check_output_dir(cfg, overwrite=False, resume=True)
    assert (out / "results.json").read_text() == "{}"

    # Shared storage remembers runs by output_dir: a fresh run never silently continues one.
    cfg.ray.storage_path = str(tmp_path / "shared")
    name = storage.run_name(cfg)
    with pytest.raises(ConfigError, match="no earlier run to resume"):
        storage.check_run_state(cfg, name, overwrite=False, resume=True)
    os.makedirs(tmp_path / "shared" / name / "checkpoint_2026-01-01_00-00-00.000000")
    with pytest.raises(ConfigError, match="--resume to continue it or --overwrite"):
        storage.check_run_state(cfg, name, overwrite=False, resume=False)
    storage.check_run_state(cfg, name, overwrite=False, resume=True)
    storage.check_run_state(cfg, name, overwrite=True, resume=False)


# ---------------------------------------------------------------------- NaN / inf loss


def _guarded_fit(skip: bool, bad_batches: set, accumulation: int = 2):
    import lightning.pytorch as pl

    from launcher.training.callbacks import NonFiniteGuard

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(1, 1)

        def training_step(self, batch, batch_idx):
            loss = self.lin(batch.float().unsqueeze(-1)).pow(2).mean()
            return loss * float("inf") if batch_idx in bad_batches else loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=0.01)

    warnings.filterwarnings("ignore")
    guard = NonFiniteGuard(skip)
    trainer = pl.Trainer(max_epochs=1, accumulate_grad_batches=accumulation, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[guard], accelerator="cpu")
    module = Module()
    trainer.fit(module, torch.utils.data.DataLoader(list(range(16)), batch_size=2))
    return trainer, module, guard


def test_nonfinite_loss_stops_with_the_step_and_a_fix():
    from launcher.errors import NonFiniteLoss

    with pytest.raises(NonFiniteLoss) as e:
        _guarded_fit(skip=False, bad_batches={5})
    message = str(e.value)
    assert "loss is inf at step 3 (epoch 1, batch 6)" in message
    assert "lower optim.lr" in message and "train.skip_nonfinite_batches" in message
    assert "\n" not in message


def test_nonfinite_steps_are_skipped_when_configured(capsys):
    trainer, module, guard = _guarded_fit(skip=True, bad_batches={2, 7})  # in optimizer steps 2 and 4 of 4
    assert trainer.global_step == 4  # the schedule's step count does not change
    assert guard.skipped == 2
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert "optimizer step skipped (2 so far)" in capsys.readouterr().err


def test_nonfinite_error_reaches_the_user_as_one_line(monkeypatch, capsys):
    """What the driver raises after train_loop ended the run on NonFiniteLoss (the Ray run itself,
    with no restarts, is tested in test_faults.py)."""
    from launcher.__main__ import main
    from launcher.commands import train as train_cmd
    from launcher.errors import NonFiniteLoss

    def diverged(cfg, overwrite=False, resume=False):
        raise NonFiniteLoss("loss is nan at step 7 (epoch 1, batch 14): lower optim.lr (the lr was 0.5), or set "
                            "train.skip_nonfinite_batches true to skip such steps")

    monkeypatch.setattr(train_cmd, "run", diverged)
    assert main(["train", "--model.name_or_path", "m", "--data.train_file", "x.csv"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("launcher train: failed: NonFiniteLoss: loss is nan at step 7")


# ---------------------------------------------------------------------- secrets


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


# ---------------------------------------------------------------------- trust_remote_code


@pytest.mark.parametrize("trusted", [False, True])
def test_trust_remote_code_is_passed_through_and_off_by_default(trusted, tiny_bert, sentiment_files, tmp_path, monkeypatch):
    import transformers

    from launcher.tasks import get_task

    cfg = base_config(tiny_bert, sentiment_files, str(tmp_path / "out"))
    assert Config().model.trust_remote_code is False
    cfg.model.trust_remote_code = trusted
    seen = []
    for cls in (transformers.AutoConfig, transformers.AutoTokenizer, transformers.AutoModelForSequenceClassification):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, **kwargs):
            seen.append((klass.__name__, kwargs.get("trust_remote_code")))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    task = get_task(cfg.task)(cfg)
    task.model_config()
    task.load_tokenizer()
    task.build_model({"num_labels": 2, "id2label": {0: "a", 1: "b"}, "label2id": {"a": 0, "b": 1}, "regression": False})
    assert {name for name, _ in seen} >= {"AutoConfig", "AutoTokenizer", "AutoModelForSequenceClassification"}
    assert all(value is trusted for _, value in seen), seen


# ---------------------------------------------------------------------- local Ray listens on loopback only


@pytest.mark.ray
def test_local_ray_dashboard_listens_on_loopback_only(tmp_path):
    """init_ray's local Ray: the dashboard (job API) is bound to 127.0.0.1, not to every interface."""
    script = (
        "import ray\n"
        "from launcher.distributed import cluster\n"
        "from launcher.config import Config\n"
        "cfg = Config(); cfg.ray.num_cpus = 1\n"
        "cluster.init_ray(cfg)\n"
        "url = ray.get_runtime_context().dashboard_url if hasattr(ray.get_runtime_context(), 'dashboard_url') else None\n"
        "url = url or ray._private.worker.global_worker.node.address_info['webui_url']\n"
        "port = int(url.rsplit(':', 1)[1])\n"
        "binds = set()\n"
        "for table in ('/proc/net/tcp', '/proc/net/tcp6'):\n"
        "    for line in open(table).read().splitlines()[1:]:\n"
        "        local, state = line.split()[1], line.split()[3]\n"
        "        addr, p = local.rsplit(':', 1)\n"
        "        if state == '0A' and int(p, 16) == port:\n"
        "            binds.add(addr)\n"
        "print(url, sorted(binds))\n"
        "ray.shutdown()\n"
    )
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr[-2000:]
    url, binds = proc.stdout.strip().splitlines()[-1].split(" ", 1)
    assert url.startswith("127.0.0.1:")
    assert binds == "['0100007F']", binds  # 127.0.0.1 in /proc/net/tcp notation; no 0.0.0.0 (00000000)
