"""Static checks of the cluster configs in cluster/ (no cloud, no Kubernetes, no Ray cluster started).

* Ray cluster launcher YAMLs (aws-gpu, gcp-gpu, gcp-tpu) go through Ray's own validator
  (``prepare_config`` then ``validate_config``: schema with unknown keys rejected, integer resources).
* Every file starts with a comment giving the command that uses it, and every key carries a comment.
* Network exposure: on AWS only port 22 is open to 0.0.0.0/0 (Ray's default rules plus the config's
  IpPermissions), on GCP the documented firewall rules open only tcp:22 to the world, on KubeRay every
  Service is ClusterIP; the dashboard listens on 127.0.0.1 on the head.
* KubeRay manifests have the structure the operator expects (ray.io/v1, RayCluster / RayJob, head group,
  worker groups with groupName / replicas / minReplicas / maxReplicas / template, GPU and TPU resources).
"""

from __future__ import annotations

import ast
import copy
import itertools
import logging
import math
import re
from pathlib import Path

import pytest
import yaml
from tests.helpers.paths import REPO

CLUSTER = REPO / "cluster"

LAUNCHER_YAMLS = ["aws-gpu.yaml", "gcp-gpu.yaml", "gcp-tpu.yaml"]
KUBERAY_YAMLS = ["raycluster-gpu.yaml", "rayjob-tune.yaml", "raycluster-tpu.yaml"]
ALL_YAMLS = [CLUSTER / n for n in LAUNCHER_YAMLS] + [CLUSTER / "kuberay" / n for n in KUBERAY_YAMLS]

WORLD = {"0.0.0.0/0", "::/0"}
TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"


def _launcher_cfg(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def _kuberay_docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / "kuberay" / name).read_text()) if d is not None]


def _main_kuberay_doc(name: str) -> dict:
    docs = [d for d in _kuberay_docs(name) if d.get("apiVersion", "").startswith("ray.io/")]
    assert len(docs) == 1, f"{name}: expected exactly one ray.io object, got {len(docs)}"
    return docs[0]


def _ray_cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def _all_commands(cfg: dict) -> list[str]:
    keys = ["initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands"]
    return [c for k in keys for c in (cfg.get(k) or [])]


# --------------------------------------------------------------------------------------------- comments


def _strip_quoted(line: str) -> str:
    return re.sub(r"'[^']*'|\"[^\"]*\"", "''", line)


def _has_inline_comment(line: str) -> bool:
    return re.search(r"\s#", _strip_quoted(line)) is not None


def _uncommented_key_lines(text: str) -> list[str]:
    """Lines holding a mapping key with neither an inline comment nor a full-line comment right above."""
    lines = text.splitlines()
    key_lines = sorted({tok.start_mark.line for tok in yaml.scan(text) if isinstance(tok, yaml.KeyToken)})
    bad = []
    for i in key_lines:
        if _has_inline_comment(lines[i]):
            continue
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        if j >= 0 and lines[j].lstrip().startswith("#"):
            continue
        bad.append(f"{i + 1}: {lines[i].strip()}")
    return bad


@pytest.mark.parametrize("path", ALL_YAMLS, ids=lambda p: p.name)
def test_first_line_is_the_command_and_every_key_is_commented(path: Path):
    text = path.read_text()
    first = text.splitlines()[0]
    assert first.startswith("#"), f"{path.name}: first line must be a comment"
    rel = path.relative_to(REPO).as_posix()
    if path.parent == CLUSTER:
        assert f"ray up {rel}" in first, f"{path.name}: first line must give `ray up {rel}`"
    else:
        assert f"kubectl apply -f {rel}" in first, f"{path.name}: first line must give `kubectl apply -f {rel}`"
    assert sum(1 for ln in text.splitlines() if ln.lstrip().startswith("#")) >= 10
    bad = _uncommented_key_lines(text)
    assert not bad, f"{path.name}: keys without a comment:\n" + "\n".join(bad)


def test_comment_check_catches_an_uncommented_key():
    assert _uncommented_key_lines("# a\na: 1\nb: 2  # b\nc: 3\n") == ["4: c: 3"]


# ----------------------------------------------------------------------------- Ray's own validator


@pytest.fixture(scope="module")
def ray_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)

    def check(cfg: dict) -> dict:
        prepared = prepare_config(copy.deepcopy(cfg))
        validate_config(prepared)
        return prepared

    return check


@pytest.mark.parametrize("name", LAUNCHER_YAMLS)
def test_launcher_yaml_passes_rays_validator(name, ray_validator):
    cfg = _launcher_cfg(name)
    prepared = ray_validator(cfg)
    assert prepared["head_node_type"] in prepared["available_node_types"]
    workers = {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}
    assert workers, f"{name}: no worker node type"
    for node_type in workers.values():
        assert node_type["min_workers"] == 0 and node_type["max_workers"] >= 1  # autoscaled from zero
    assert cfg["max_workers"] >= max(t["max_workers"] for t in workers.values())
    assert cfg["idle_timeout_minutes"] > 0


def test_rays_validator_rejects_unknown_keys_and_fractional_resources(ray_validator):
    import jsonschema

    cfg = _launcher_cfg("aws-gpu.yaml")
    unknown = copy.deepcopy(cfg)
    unknown["available_node_types"]["ray.worker.gpu"]["gpus_per_node"] = 1
    with pytest.raises(jsonschema.ValidationError):
        ray_validator(unknown)
    fractional = copy.deepcopy(cfg)
    fractional["available_node_types"]["ray.worker.gpu"]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        ray_validator(fractional)


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "gcp-gpu.yaml"])
def test_gpu_workers_advertise_gpus(name):
    cfg = _launcher_cfg(name)
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert "GPU" not in head["resources"]
    gpu_types = [t for k, t in cfg["available_node_types"].items() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_types, f"{name}: no GPU worker type"
    if name == "aws-gpu.yaml":
        assert any(t["node_config"]["InstanceType"].startswith(("g5.", "g6.", "p")) for t in gpu_types)
    else:
        accels = {a["acceleratorType"] for t in gpu_types for a in t["node_config"].get("guestAccelerators", [])}
        machines = {t["node_config"]["machineType"] for t in gpu_types}
        assert "nvidia-tesla-t4" in accels and any(m.startswith("g2-") for m in machines)  # T4 and L4
        for t in gpu_types:
            assert t["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"


def test_tpu_yaml_matches_rays_tpu_node_rules():
    from ray._private.accelerators import TPUAcceleratorManager

    cfg = _launcher_cfg("gcp-tpu.yaml")
    assert cfg["provider"]["type"] == "gcp" and cfg["provider"]["availability_zone"]
    head = cfg["available_node_types"][cfg["head_node_type"]]["node_config"]
    assert "machineType" in head  # a TPU cannot be the head
    tpu_types = [t for t in cfg["available_node_types"].values() if "acceleratorType" in t["node_config"]]
    assert tpu_types
    for t in tpu_types:
        nc = t["node_config"]
        # Ray's GCP provider makes a TPU VM from acceleratorType (or acceleratorConfig) without machineType.
        assert "machineType" not in nc and "acceleratorConfig" not in nc
        assert TPUAcceleratorManager.is_valid_tpu_accelerator_type(nc["acceleratorType"])
        assert nc["acceleratorType"] == "v4-8" and nc["runtimeVersion"]
        assert t["resources"]["TPU"] == 4  # v4-8: 8 cores = 4 chips, one host
    setup = " ".join(cfg["worker_setup_commands"])
    assert '"torch==2.9.0"' in setup and '"torch_xla[tpu]==2.9.0"' in setup
    assert re.search(r"\[tpu[,\]]", setup), "TPU workers must install the launcher with the tpu extra"


# ------------------------------------------------------------------------- install / env / storage


@pytest.mark.parametrize("name", LAUNCHER_YAMLS)
def test_launcher_yaml_installs_package_sets_env_and_storage(name):
    cfg = _launcher_cfg(name)
    every_node = " ".join(cfg["setup_commands"])
    assert f"{TIMEOUT_ENV}=120" in every_node
    assert '"ray[default,train,tune]==' in every_node
    installs = [c for c in _all_commands(cfg) if "launcher-dist/launcher-" in c and "pip install" in c]
    assert installs, f"{name}: the launcher wheel is never installed"
    assert all(re.search(r"\}\[[a-z0-9,]+\]", c) for c in installs), "install the launcher with extras"
    assert cfg["file_mounts"]["~/launcher-dist"] == "./dist"
    head = " ".join(cfg["head_setup_commands"])
    scheme = "s3://" if cfg["provider"]["type"] == "aws" else "gs://"
    assert re.search(rf"export LAUNCHER_STORAGE={scheme}\S+", head), "head must export LAUNCHER_STORAGE"


@pytest.mark.parametrize("name", LAUNCHER_YAMLS)
def test_dashboard_only_on_head_localhost(name):
    cfg = _launcher_cfg(name)
    start = " ".join(cfg["head_start_ray_commands"])
    hosts = re.findall(r"--dashboard-host[= ](\S+)", start)
    assert hosts == ["127.0.0.1"], f"{name}: dashboard host must be 127.0.0.1, got {hosts}"
    assert "--dashboard-host" not in " ".join(cfg["worker_start_ray_commands"])


# ----------------------------------------------------------------------------------------- network


def _ray_default_aws_inbound_rules(group_ids, extended):
    """Ray's own default inbound rules, taken from its source (ray.autoscaler._private.aws.config).

    Imported by source rather than by module because that module needs boto3, which the tests don't need.
    """
    import ray.autoscaler._private.aws as aws_pkg

    src = (Path(aws_pkg.__file__).parent / "config.py").read_text()
    wanted = {"_create_default_inbound_rules", "_create_default_intracluster_inbound_rules",
              "_create_default_ssh_inbound_rules"}
    funcs = [n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    assert {f.name for f in funcs} == wanted, "Ray's AWS default-rule helpers changed; update this test"
    namespace = {"itertools": itertools}
    exec(compile(ast.Module(body=funcs, type_ignores=[]), "ray_aws_rules", "exec"), namespace)
    return namespace["_create_default_inbound_rules"](group_ids, extended)


def _world_open_ports(rules: list[dict]) -> list[tuple]:
    opened = []
    for r in rules:
        cidrs = {x.get("CidrIp") for x in r.get("IpRanges", [])} | {x.get("CidrIpv6") for x in r.get("Ipv6Ranges", [])}
        if cidrs & WORLD:
            opened.append((r.get("IpProtocol"), r.get("FromPort"), r.get("ToPort")))
    return opened


def test_aws_security_group_opens_only_ssh_to_the_world():
    cfg = _launcher_cfg("aws-gpu.yaml")
    sg = cfg["provider"]["security_group"]
    assert sg["GroupName"], "use an explicit, named security group"
    extra = sg["IpPermissions"]
    assert _world_open_ports(extra) == [] or set(_world_open_ports(extra)) == {("tcp", 22, 22)}
    effective = _ray_default_aws_inbound_rules(["sg-cluster"], extra)
    assert set(_world_open_ports(effective)) == {("tcp", 22, 22)}, effective
    # AWS rejects the whole request if a rule repeats one of Ray's defaults.
    defaults = _ray_default_aws_inbound_rules(["sg-cluster"], [])
    assert not [r for r in extra if r in defaults]
    for node_type in cfg["available_node_types"].values():
        assert "SecurityGroupIds" not in node_type["node_config"], "all nodes use the group above"


def test_world_open_port_check_catches_a_dashboard_rule():
    rule = {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    effective = _ray_default_aws_inbound_rules(["sg-cluster"], [rule])
    assert ("tcp", 8265, 8265) in _world_open_ports(effective)


@pytest.mark.parametrize("name", ["gcp-gpu.yaml", "gcp-tpu.yaml"])
def test_gcp_firewall_opens_only_ssh_to_the_world_and_nodes_use_that_network(name):
    text = (CLUSTER / name).read_text()
    rules = [ln for ln in text.splitlines() if ln.lstrip().startswith("#") and "firewall-rules create" in ln]
    assert rules, f"{name}: document the firewall rules"
    for rule in rules:
        sources = set(re.search(r"--source-ranges=(\S+)", rule).group(1).split(","))
        allow = re.search(r"--allow=(\S+)", rule).group(1)
        if sources & WORLD:
            assert allow == "tcp:22", f"{name}: only SSH may be open to the world: {rule.strip()}"
    assert any("--allow=tcp:22" in r and "0.0.0.0/0" in r for r in rules)
    networks = set(re.findall(r"firewall-rules create \S+ --network=(\S+)", text))
    assert len(networks) == 1
    (network,) = networks
    cfg = yaml.safe_load(text)
    for node_type in cfg["available_node_types"].values():
        nc = node_type["node_config"]
        if "networkInterfaces" in nc:
            subnets = [i["subnetwork"] for i in nc["networkInterfaces"]]
        else:
            assert nc["networkConfig"]["network"].endswith(f"/networks/{network}")
            subnets = [nc["networkConfig"]["subnetwork"]]
        for subnet in subnets:
            assert "/subnetworks/" in subnet and not subnet.endswith("/default"), subnet
        assert "tags" not in nc  # no network tags that could match other (wider) firewall rules


# ----------------------------------------------------------------------------------------- KubeRay


def _containers(template: dict) -> list[dict]:
    return template["spec"]["containers"]


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


@pytest.mark.parametrize("name", KUBERAY_YAMLS)
def test_kuberay_structure(name):
    doc = _main_kuberay_doc(name)
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == ("RayJob" if name.startswith("rayjob") else "RayCluster")
    assert doc["metadata"]["name"]
    spec = _ray_cluster_spec(doc)
    assert spec["rayVersion"] == "2.60.0"
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert _containers(head["template"])[0]["image"].startswith("rayproject/ray:2.60.0")
    groups = spec["workerGroupSpecs"]
    assert groups
    for g in groups:
        for key in ("groupName", "replicas", "minReplicas", "maxReplicas", "template"):
            assert key in g, f"{name}: worker group lacks {key}"
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] and g["maxReplicas"] >= 1
        assert _containers(g["template"])
    if doc["kind"] == "RayJob":
        assert doc["spec"]["shutdownAfterJobFinishes"] is True
        assert doc["spec"]["entrypoint"]


@pytest.mark.parametrize("name", KUBERAY_YAMLS)
def test_kuberay_services_are_cluster_internal(name):
    docs = _kuberay_docs(name)
    spec = _ray_cluster_spec(_main_kuberay_doc(name))
    assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    assert spec["headGroupSpec"].get("enableIngress") is not True
    assert "headService" not in spec["headGroupSpec"] or spec["headGroupSpec"]["headService"]["spec"].get(
        "type", "ClusterIP") == "ClusterIP"
    for d in docs:
        assert d["kind"] not in ("Ingress", "Gateway", "HTTPRoute")
        if d["kind"] == "Service":
            assert d["spec"].get("type", "ClusterIP") == "ClusterIP"
    text = (CLUSTER / "kuberay" / name).read_text()
    assert not re.search(r"^\s*(type|serviceType):\s*(LoadBalancer|NodePort)\b", text, re.M)
    for c in _containers(spec["headGroupSpec"]["template"]):
        assert not any("hostPort" in p for p in c.get("ports", []))


@pytest.mark.parametrize("name", KUBERAY_YAMLS)
def test_kuberay_install_env_storage_and_dashboard(name):
    doc = _main_kuberay_doc(name)
    spec = _ray_cluster_spec(doc)
    head_params = spec["headGroupSpec"]["rayStartParams"]
    if doc["kind"] == "RayCluster":
        assert head_params["dashboard-host"] == "127.0.0.1"
    else:
        # The operator polls job status through the (ClusterIP) head Service, so it must bind the pod IP.
        assert head_params["dashboard-host"] == "0.0.0.0"
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    uses_generated_cmd = False
    for t in templates:
        c = _containers(t)[0]
        env = _env(c)
        assert env.get(TIMEOUT_ENV) == "120"
        assert env["LAUNCHER_PIP_SPEC"].startswith("launcher[")
        args = " ".join(c.get("args", []))
        assert 'pip install -q' in args and '"$LAUNCHER_PIP_SPEC"' in args
        uses_generated_cmd |= "$KUBERAY_GEN_RAY_START_CMD" in args
    if uses_generated_cmd:
        assert doc["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    head_env = _env(_containers(spec["headGroupSpec"]["template"])[0])
    assert re.match(r"(s3|gs)://\S+", head_env["LAUNCHER_STORAGE"])


def test_rayjob_runs_tune_from_configmap_with_storage_from_env():
    doc = _main_kuberay_doc("rayjob-tune.yaml")
    entry = doc["spec"]["entrypoint"]
    assert "launcher tune /config/tune.yaml" in entry
    # bash -c '...' so that $LAUNCHER_STORAGE is expanded on the head, not by the submitter's shell.
    assert re.fullmatch(r"bash -c '[^']*--ray\.storage_path \"\$LAUNCHER_STORAGE\"[^']*'", entry)
    head = _ray_cluster_spec(doc)["headGroupSpec"]["template"]
    mounts = {m["name"]: m["mountPath"] for m in _containers(head)[0]["volumeMounts"]}
    volumes = {v["name"]: v for v in head["spec"]["volumes"]}
    (vol_name,) = [n for n, p in mounts.items() if p == "/config"]
    items = volumes[vol_name]["configMap"]["items"]
    assert {"key": "tune.yaml", "path": "tune.yaml"} in items
    configmap = volumes[vol_name]["configMap"]["name"]
    first_line = (CLUSTER / "kuberay" / "rayjob-tune.yaml").read_text().splitlines()[0]
    assert f"kubectl create configmap {configmap} --from-file=tune.yaml=" in first_line


@pytest.mark.parametrize("name", ["raycluster-gpu.yaml", "rayjob-tune.yaml"])
def test_kuberay_gpu_workers_request_nvidia_gpus(name):
    spec = _ray_cluster_spec(_main_kuberay_doc(name))
    head_res = _containers(spec["headGroupSpec"]["template"])[0]["resources"]
    assert "nvidia.com/gpu" not in head_res.get("limits", {})
    for g in spec["workerGroupSpecs"]:
        res = _containers(g["template"])[0]["resources"]
        assert int(res["limits"]["nvidia.com/gpu"]) >= 1
        assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"]


def test_kuberay_tpu_group_matches_gke_tpu_topology():
    spec = _ray_cluster_spec(_main_kuberay_doc("raycluster-tpu.yaml"))
    (g,) = spec["workerGroupSpecs"]
    selector = g["template"]["spec"]["nodeSelector"]
    assert selector["cloud.google.com/gke-tpu-accelerator"].startswith("tpu-")
    topology = selector["cloud.google.com/gke-tpu-topology"]
    assert re.fullmatch(r"\d+x\d+(x\d+)?", topology)
    c = _containers(g["template"])[0]
    chips_per_host = int(c["resources"]["limits"]["google.com/tpu"])
    assert c["resources"]["requests"]["google.com/tpu"] == c["resources"]["limits"]["google.com/tpu"]
    chips = math.prod(int(x) for x in topology.split("x"))
    assert g["numOfHosts"] * chips_per_host == chips, "numOfHosts x chips per host must cover the topology"
    args = " ".join(c["args"])
    assert '"torch==2.9.0"' in args and '"torch_xla[tpu]==2.9.0"' in args
    assert _env(c)["LAUNCHER_PIP_SPEC"].startswith("launcher[tpu")
