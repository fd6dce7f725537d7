"""Kubernetes for a plan: cluster settings (data/kubernetes.toml) and the manifests.

:func:`kubernetes_documents` turns the records of :func:`fleetopt_milp.deploy.deployment_set`
into one ``apps/v1`` Deployment per allocation (``replicas`` vLLM servers of ``tp`` GPUs each,
on nodes of the allocation's GPU type) and one ``v1`` Service per pool (the gateway's upstream
for that pool). docs/deploy.md documents the objects and the settings file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from .errors import FleetOptError

if TYPE_CHECKING:
    from .deploy import DeploymentSet, EngineDeployment, PoolRoute

__all__ = ["KubeSettings", "load_kube_settings", "kubernetes_documents"]

#: The built-in settings (not under ``$FLEETOPT_DATA_DIR``, which points at workload files).
SETTINGS_FILE = Path(__file__).resolve().parent.parent / "data" / "kubernetes.toml"

_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # RFC 1035 label: Service names
_SETTING_KEYS = ("image", "port", "gpu_resource", "node_label", "hf_token_secret", "shm_size")
_GPU_KEYS = (*(k for k in _SETTING_KEYS if k != "port"), "node_label_value")  # one port


def name_slug(text: str) -> str:
    """Lower-case ``text`` with every run of other characters replaced by one dash."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# ---------------------------------------------------------------------------------------
# Cluster settings (data/kubernetes.toml)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeSettings:
    """How the manifests run vLLM on a cluster.

    ``defaults`` holds the :data:`_SETTING_KEYS` of data/kubernetes.toml's ``[defaults]``;
    ``gpus`` the per-GPU tables (keys case-folded), each with ``node_label_value``.
    ``namespace`` (``None``: the one ``kubectl`` applies to) and ``name_prefix`` (the first
    part of every object's name) come from the command line.
    """

    defaults: Mapping[str, str | int]
    gpus: Mapping[str, Mapping[str, str | int]]
    namespace: str | None = None
    name_prefix: str = "fleetopt"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name_prefix) or len(self.name_prefix) > 30:
            raise FleetOptError(
                f"name prefix {self.name_prefix!r}: use at most 30 lower-case letters, digits "
                "and dashes, starting with a letter (--name-prefix)")
        if self.namespace is not None and (not _NAME.match(self.namespace)
                                           or len(self.namespace) > 63):
            raise FleetOptError(
                f"namespace {self.namespace!r}: use at most 63 lower-case letters, digits and "
                "dashes, starting with a letter (--namespace)")

    @property
    def port(self) -> int:
        return int(self.defaults["port"])

    def for_gpu(self, gpu: str) -> Mapping[str, str | int]:
        """The settings of one catalogue GPU: its table over the defaults."""
        table = self.gpus.get(gpu.casefold())
        if table is None:
            raise FleetOptError(
                f"GPU {gpu!r} has no Kubernetes settings: add a [gpus.\"{gpu}\"] table with "
                "node_label_value (and gpu_resource and image for a non-NVIDIA GPU) to a file "
                "passed with --k8s-config (schema: data/kubernetes.toml)")
        return {**self.defaults, **table}

    def upstream(self, service: str) -> str:
        """The URL of a Service inside the cluster."""
        host = service if self.namespace is None else \
            f"{service}.{self.namespace}.svc.cluster.local"
        return f"http://{host}:{self.port}"


def _settings_table(path: Path, where: str, raw: object, keys: Sequence[str]) -> dict:
    if not isinstance(raw, dict):
        raise FleetOptError(f"{path}: {where} must be a table")
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise FleetOptError(f"{path}: {where}: unknown key(s) {', '.join(unknown)}; "
                            f"allowed: {', '.join(keys)}")
    for key, value in raw.items():
        if key == "port":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
                raise FleetOptError(f"{path}: {where}: port must be an integer in [1, 65535], "
                                    f"got {value!r}")
        elif not isinstance(value, str) or not value.strip():
            raise FleetOptError(f"{path}: {where}: {key} must be a non-empty string")
    return dict(raw)


def load_kube_settings(extra_paths: Sequence[Path | str] = (), *, namespace: str | None = None,
                       name_prefix: str = "fleetopt", image: str | None = None) -> KubeSettings:
    """Read :data:`SETTINGS_FILE` (data/kubernetes.toml), then each of ``extra_paths``
    (same schema, overriding field by field). ``image`` replaces the serving image of every
    GPU. One-line :class:`FleetOptError` for a missing or malformed file."""
    defaults: dict = {}
    gpus: dict[str, dict] = {}
    for path in (SETTINGS_FILE, *(Path(p).expanduser() for p in extra_paths)):
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise FleetOptError(f"{path}: cannot read the Kubernetes settings "
                                f"({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise FleetOptError(f"{path}: not valid TOML ({exc})") from None
        unknown = sorted(set(data) - {"defaults", "gpus"})
        if unknown:
            raise FleetOptError(f"{path}: unknown table(s) {', '.join(unknown)}; a settings "
                                "file holds [defaults] and [gpus.NAME] tables")
        defaults.update(_settings_table(path, "[defaults]", data.get("defaults", {}),
                                        _SETTING_KEYS))
        gpu_tables = data.get("gpus", {})
        if not isinstance(gpu_tables, dict):
            raise FleetOptError(f"{path}: gpus must be tables like [gpus.NAME]")
        for name, raw in gpu_tables.items():
            table = _settings_table(path, f"[gpus.{name!r}]", raw, _GPU_KEYS)
            gpus.setdefault(name.casefold(), {}).update(table)
    if image is not None:
        if not image.strip():
            raise FleetOptError("--image: give a container image such as vllm/vllm-openai:TAG")
        defaults["image"] = image
        for table in gpus.values():
            table.pop("image", None)
    missing = [k for k in _SETTING_KEYS if k not in defaults]
    if missing:
        raise FleetOptError(f"Kubernetes settings: [defaults] lacks {', '.join(missing)}")
    for name, table in gpus.items():
        if "node_label_value" not in table:
            raise FleetOptError(f"Kubernetes settings: [gpus.{name!r}] lacks node_label_value")
    return KubeSettings(MappingProxyType(defaults),
                        MappingProxyType({k: MappingProxyType(v) for k, v in gpus.items()}),
                        namespace, name_prefix)


# ---------------------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------------------


def _labels(ds: DeploymentSet, **extra: str) -> dict:
    return {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/part-of": "fleetopt",
            "app.kubernetes.io/instance": ds.settings.name_prefix, **extra}


def _meta(ds: DeploymentSet, name: str, labels: dict, annotations: dict | None = None) -> dict:
    meta: dict = {"name": name}
    if ds.settings.namespace is not None:
        meta["namespace"] = ds.settings.namespace
    meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    return meta


def _deployment(ds: DeploymentSet, e: EngineDeployment) -> dict:
    s = ds.settings.for_gpu(e.gpu)
    port = ds.settings.port
    select = _labels(ds, **{"fleetopt.io/pool": name_slug(e.pool),
                            "fleetopt.io/deployment": e.name})
    labels = {**select, "fleetopt.io/gpu": name_slug(e.gpu)}
    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10}
    gpus = {str(s["gpu_resource"]): e.tensor_parallel_size}
    container = {
        "name": "vllm", "image": s["image"], "command": ["vllm", "serve"],
        "args": e.vllm_args(port),
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": s["hf_token_secret"], "key": "token", "optional": True}}}],
        "resources": {"limits": gpus, "requests": gpus},
        # Loading 100+ GB of weights takes minutes: the startup probe allows 30 of them.
        "startupProbe": {**probe, "failureThreshold": 180},
        "readinessProbe": {**probe, "failureThreshold": 3},
        "livenessProbe": {**probe, "failureThreshold": 6},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    annotations = {"fleetopt.io/profile": e.profile,
                   "fleetopt.io/load-share": f"{e.load_share:g}"}
    if ds.gateway.plan.plan_sha256:
        annotations["fleetopt.io/plan-sha256"] = ds.gateway.plan.plan_sha256
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(ds, e.name, labels, annotations),
        "spec": {
            "replicas": e.replicas,
            "selector": {"matchLabels": select},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {str(s["node_label"]): str(s["node_label_value"])},
                    "containers": [container],
                    "volumes": [{"name": "dshm", "emptyDir": {
                        "medium": "Memory", "sizeLimit": str(s["shm_size"])}}],
                },
            },
        },
    }


def _service(ds: DeploymentSet, route: PoolRoute) -> dict:
    select = _labels(ds, **{"fleetopt.io/pool": name_slug(route.role)})
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(ds, route.service, select),
        "spec": {"selector": select,
                 "ports": [{"name": "http", "port": ds.settings.port, "targetPort": "http",
                            "protocol": "TCP"}]},
    }


def kubernetes_documents(ds: DeploymentSet) -> list[dict]:
    """One Deployment per engine, then one Service per pool."""
    return [*(_deployment(ds, e) for e in ds.engines),
            *(_service(ds, r) for r in ds.gateway.pools)]
