"""launcher.storage: upload, download and URI helpers against a local S3 server (moto), and run names."""

from __future__ import annotations

import os

import pytest

from launcher import storage
from launcher.config import Config, ConfigError


@pytest.fixture
def aws_env(s3, monkeypatch):
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    return s3


def test_upload_download_and_uri_helpers(aws_env, tmp_path):
    src = tmp_path / "best"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "sub" / "w.bin").write_bytes(b"\0" * 1000)
    uri = f"s3://{aws_env.bucket}/unit/run-1/best"
    storage.upload_dir(str(src), uri)
    (src / "config.json").unlink()  # a second export replaces the folder, nothing stale stays
    (src / "new.txt").write_text("x")
    storage.upload_dir(str(src), uri)
    assert sorted(aws_env.keys("unit/")) == ["unit/run-1/best/new.txt", "unit/run-1/best/sub/w.bin"]
    local = storage.local_model(uri)
    assert sorted(os.listdir(local)) == ["new.txt", "sub"] and os.path.getsize(os.path.join(local, "sub", "w.bin")) == 1000
    assert storage.local_model(str(src)) == str(src)
    with pytest.raises(ConfigError, match="is nothing"):
        storage.local_model(f"s3://{aws_env.bucket}/unit/missing")
    storage.delete(f"s3://{aws_env.bucket}/unit/run-1")
    assert aws_env.keys("unit/") == []

    assert storage.join("s3://b/p?endpoint_override=h:9000", "run", "best") == "s3://b/p/run/best?endpoint_override=h:9000"
    assert storage.redact_uri("s3://b/p?access_key=AK&secret_key=SK&region=eu") == "s3://b/p?access_key=***&secret_key=***&region=eu"


def test_run_names_are_unique_in_shared_storage(tmp_path, monkeypatch):
    monkeypatch.delenv("LAUNCHER_STORAGE", raising=False)
    cfg = Config(output_dir=str(tmp_path / "a"))
    assert storage.run_name(cfg) == "train"  # <output_dir>/ray holds one run only
    cfg.ray.storage_path = "s3://bucket/runs"
    a = storage.run_name(cfg)
    cfg.output_dir = str(tmp_path / "b")
    b = storage.run_name(cfg)
    assert a.startswith("a-") and b.startswith("b-") and a != b
    cfg.output_dir = str(tmp_path / "b") + "/"
    assert storage.run_name(cfg) == b  # the same output_dir keeps its name (--resume)
    monkeypatch.setenv("LAUNCHER_STORAGE", str(tmp_path / "nfs"))
    cfg.ray.storage_path = None
    assert storage.run_name(cfg) == b


def test_storage_error_cause_finds_refused_writes():
    import errno

    from launcher.errors import StorageError

    # pyarrow's OSError names the errno in its text only; a read-only remount; a quota; wrapped twice.
    arrow = OSError("Failed to open local file '/s/run/x'. Detail: [errno 28] No space left on device")
    assert storage.storage_error_cause(RuntimeError("outer"), "/s") is None
    try:
        try:
            raise arrow
        except OSError as e:
            raise RuntimeError("upload failed") from e
    except RuntimeError as e:
        found = storage.storage_error_cause(e, "/s/run")
    assert isinstance(found, StorageError) and found.cause == "no space left on the device (ENOSPC)"
    ro = storage.storage_error_cause(OSError(errno.EROFS, "Read-only file system", "/s/run/a"), "/s/run")
    assert "read-only file system (EROFS writing /s/run/a)" in str(ro) and "--resume" in str(ro)
    assert storage.storage_error_cause(OSError(errno.ENOENT, "No such file"), "/s") is None
    assert storage.storage_error_cause(ValueError("[errno 28] in a message, but not an OSError"), "/s") is None
