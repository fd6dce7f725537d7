"""Deployment files for a plan: vLLM settings, Kubernetes manifests and the gateway's routing.

A plan (docs/model.md §4) is a list of pools, each made of allocations: ``instances``
replicas of one profile, an instance being ``tp`` GPUs. Deploying it means:

- one vLLM server per instance, started with the settings the model assumed:
  ``--max-model-len`` = the pool's window ``C`` (``context_tokens``),
  ``--tensor-parallel-size`` = ``tp``, and ``--max-num-seqs`` = ``slots(C)``, the KV slots
  per instance that sized the pool (docs/model.md §2.2). Capping the batch there is what
  makes the server behave like the plan's M/G/c queue of ``instances x slots(C)`` servers;
- one Kubernetes ``apps/v1`` Deployment per allocation (``replicas`` = its instances) and one
  ``v1`` Service per pool, the upstream the Compress-and-Route gateway sends that pool's
  requests to;
- the gateway's routing config: each pool's length range, its C&R band ratio and band end
  ``floor(gamma C)`` (docs/model.md §4.2), and its upstream.

The stages are pure: :func:`deployment_set` turns a plan into typed records,
:func:`render` turns those into YAML text, :func:`write_deployment` writes the files
atomically. :func:`read_gateway_config` reads the gateway file back into the same records.
The file schemas are in docs/deploy.md. Lengths are in tokens, rates in requests/s, prices
in USD per hour for the whole fleet.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from .errors import FleetOptError
from .files import write_text_atomic
from .hardware import Catalog
from .k8s import KubeSettings, kubernetes_documents, load_kube_settings, name_slug
from .plan import Plan
from .scenario import band_end_tokens

__all__ = ["GATEWAY_SCHEMA", "VLLM_SCHEMA", "DEPLOY_FILES", "KubeSettings", "EngineDeployment",
           "PoolRoute", "PlanRecord", "GatewayConfig", "DeploymentSet", "load_kube_settings",
           "deployment_set", "render", "write_deployment", "read_gateway_config",
           "gateway_from_document", "kubernetes_documents", "summary_lines"]

GATEWAY_SCHEMA = "fleetopt-gateway/1"
VLLM_SCHEMA = "fleetopt-vllm/1"
DEPLOY_FILES = ("vllm.yaml", "gateway.yaml", "kubernetes.yaml")

#: A Service spreads a pool's requests over its ready pods about evenly, so an allocation
#: receives ``replicas / pool replicas`` of them; a warning names any allocation whose plan
#: share differs from that by more than this.
SHARE_TOLERANCE = 0.02

# ---------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineDeployment:
    """One allocation of the plan as one Deployment of ``replicas`` vLLM servers.

    ``max_model_len``: the pool's window, tokens. ``tensor_parallel_size``: GPUs per
    instance. ``max_num_seqs``: the KV slots per instance the plan assumed (docs/model.md
    §2.2). ``load_share``: the share of the pool's requests the plan sends to this
    allocation. ``model_id``: what vLLM loads; ``served_model_name``: the name it answers to.
    """

    name: str
    pool: str
    gpu: str
    profile: str
    replicas: int
    load_share: float
    model_id: str
    served_model_name: str
    tensor_parallel_size: int
    max_model_len: int
    max_num_seqs: int

    def vllm_args(self, port: int) -> list[str]:
        """Arguments of ``vllm serve`` for one instance."""
        return [self.model_id, "--served-model-name", self.served_model_name,
                "--host", "0.0.0.0", "--port", str(port),
                "--tensor-parallel-size", str(self.tensor_parallel_size),
                "--max-model-len", str(self.max_model_len),
                "--max-num-seqs", str(self.max_num_seqs)]


@dataclass(frozen=True)
class PoolRoute:
    """One pool as the gateway sees it: requests with ``lo_tokens < L <= context_tokens``
    (``L`` = input + output tokens), plus those of ``(context_tokens, band_end_tokens]``
    that it compresses down to ``context_tokens`` (``band_end_tokens = floor(gamma C)``;
    ``gamma = 1`` and ``band_end_tokens = context_tokens`` for the last pool). ``upstream``
    is the URL of the pool's Service ``service``; ``deployments`` its Deployments."""

    role: str
    lo_tokens: int
    context_tokens: int
    gamma: float
    band_end_tokens: int
    service: str
    upstream: str
    replicas: int
    deployments: tuple[str, ...]


@dataclass(frozen=True)
class PlanRecord:
    """What the plan answered, kept beside the routing for the record (not used to route)."""

    plan_file: str
    plan_sha256: str
    workload: str
    method: str
    rate_rps: float
    slo_ms: float
    percentile: float
    long_context_tokens: int
    compressible_share: float
    compression_latency_ms: float
    usd_per_hour: float


@dataclass(frozen=True)
class GatewayConfig:
    """The gateway's routing config (``gateway.yaml``, schema :data:`GATEWAY_SCHEMA`)."""

    model: str
    pools: tuple[PoolRoute, ...]
    plan: PlanRecord

    @property
    def boundaries_tokens(self) -> tuple[int, ...]:
        """Every window but the last: the pool boundaries, ascending."""
        return tuple(p.context_tokens for p in self.pools[:-1])


@dataclass(frozen=True)
class DeploymentSet:
    """Everything :func:`render` writes: the engines, the routing and the cluster settings.
    ``warnings`` name what the files cannot make true (see docs/deploy.md)."""

    engines: tuple[EngineDeployment, ...]
    gateway: GatewayConfig
    settings: KubeSettings
    warnings: tuple[str, ...]


# ---------------------------------------------------------------------------------------
# Plan -> records
# ---------------------------------------------------------------------------------------


def _model_id(plan: Plan, catalog: Catalog | None, model_id: str | None
              ) -> tuple[str, int | None]:
    """The Hugging Face id vLLM loads, and the model's window (tokens) if the catalogue
    knows the model."""
    llm = catalog.find_llm(plan.model) if catalog is not None else None
    window = llm.max_context_tokens if llm is not None else None
    if model_id is not None:
        if not model_id.strip():
            raise FleetOptError("--model-id: give a Hugging Face id such as ORG/NAME")
        return model_id, window
    ids = [a for a in (llm.aliases if llm is not None else ()) if "/" in a]
    if not ids:
        raise FleetOptError(f"model {plan.model!r}: the catalogue gives no Hugging Face id for "
                            "vLLM to load; pass --model-id ORG/NAME")
    return ids[0], window


def _check_plan(plan: Plan) -> None:
    lo = 0
    for p in plan.pools:
        if p.lo_tokens != lo or p.context_tokens <= p.lo_tokens:
            raise FleetOptError(f"plan: pool {p.role!r} covers ({p.lo_tokens}, "
                                f"{p.context_tokens}] tokens; pools must tile (0, long window] "
                                "in ascending order")
        lo = p.context_tokens
        if p.instances < 1:
            raise FleetOptError(
                f"plan: pool {p.role!r} ({p.lo_tokens}, {p.context_tokens}] tokens has no "
                "instances, so its requests would have no server; plan with --min-instances 1")
        for a in p.allocations:
            if a.model != plan.model:
                raise FleetOptError(f"plan: pool {p.role!r} serves model {a.model!r} but the "
                                    f"plan's model is {plan.model!r}; one fleet serves one model")


def deployment_set(plan: Plan, settings: KubeSettings, *, catalog: Catalog | None = None,
                   model_id: str | None = None, plan_file: str = "",
                   plan_sha256: str = "") -> DeploymentSet:
    """The records that deploy ``plan``: one :class:`EngineDeployment` per allocation with
    instances, one :class:`PoolRoute` per pool.

    ``catalog`` supplies the model's Hugging Face id (its first alias with a ``/``) unless
    ``model_id`` is given, and its context window for a warning. Raises
    :class:`FleetOptError` for a pool without instances, a second model or a GPU the
    settings cannot schedule.
    """
    _check_plan(plan)
    hf_id, window = _model_id(plan, catalog, model_id)
    prefix = settings.name_prefix
    engines: list[EngineDeployment] = []
    routes: list[PoolRoute] = []
    warnings = list(plan.warnings)
    used: set[str] = set()
    last = len(plan.pools) - 1
    for k, p in enumerate(plan.pools):
        service = f"{prefix}-{name_slug(p.role)}"[:63].rstrip("-")
        names = []
        total = p.instances
        for a in p.allocations:
            if a.instances == 0:
                continue
            settings.for_gpu(a.gpu)  # refuses a GPU it cannot schedule
            base = f"{service}-{name_slug(a.gpu)}"[:60].rstrip("-")
            name = base if base not in used else f"{base}-tp{a.tp}"
            n = 2
            while name in used:
                name, n = f"{base}-{n}", n + 1
            used.add(name)
            names.append(name)
            engines.append(EngineDeployment(
                name=name, pool=p.role, gpu=a.gpu, profile=a.profile, replicas=a.instances,
                load_share=a.load_share, model_id=hf_id, served_model_name=plan.model,
                tensor_parallel_size=a.tp, max_model_len=p.context_tokens,
                max_num_seqs=a.slots_per_instance))
            pod_share = a.instances / total
            if abs(pod_share - a.load_share) > SHARE_TOLERANCE:
                warnings.append(
                    f"pool {p.role!r}: the plan sends {a.load_share:.1%} of the pool's requests "
                    f"to {name}, but its Service spreads them over pods, which gives it about "
                    f"{pod_share:.1%}; route by weight to the Deployments to follow the plan")
        if window is not None and p.context_tokens > window:
            warnings.append(
                f"pool {p.role!r}: --max-model-len {p.context_tokens} exceeds {plan.model}'s "
                f"{window}-token window, which vLLM refuses; serve a long-context model "
                "(e.g. Llama-3.1-70B) or plan with a smaller --long-context")
        gamma = p.gamma if k < last else 1.0
        end = int(band_end_tokens(p.context_tokens, gamma)) if k < last else p.context_tokens
        routes.append(PoolRoute(
            role=p.role, lo_tokens=p.lo_tokens, context_tokens=p.context_tokens, gamma=gamma,
            band_end_tokens=end, service=service, upstream=settings.upstream(service),
            replicas=total, deployments=tuple(names)))
    record = PlanRecord(
        plan_file=plan_file, plan_sha256=plan_sha256, workload=plan.workload,
        method=plan.method, rate_rps=plan.rate_rps, slo_ms=plan.slo_ms,
        percentile=plan.percentile, long_context_tokens=plan.long_context_tokens,
        compressible_share=plan.compressible_share,
        compression_latency_ms=plan.compression_latency_ms, usd_per_hour=plan.usd_per_hour)
    return DeploymentSet(tuple(engines), GatewayConfig(plan.model, tuple(routes), record),
                         settings, tuple(warnings))


# ---------------------------------------------------------------------------------------
# Records -> YAML documents
# ---------------------------------------------------------------------------------------


def _vllm_document(ds: DeploymentSet) -> dict:
    port = ds.settings.port
    pools = []
    for route in ds.gateway.pools:
        allocs = []
        for e in ds.engines:
            if e.pool == route.role:
                d = asdict(e)
                d.pop("pool")
                d["image"] = ds.settings.for_gpu(e.gpu)["image"]
                d["args"] = e.vllm_args(port)
                allocs.append(d)
        pools.append({"role": route.role, "context_tokens": route.context_tokens,
                      "allocations": allocs})
    return {"schema": VLLM_SCHEMA, "engine": "vllm", "port": port, "pools": pools}


def _gateway_document(cfg: GatewayConfig) -> dict:
    pools = [dict(asdict(p), deployments=list(p.deployments)) for p in cfg.pools]
    return {"schema": GATEWAY_SCHEMA, "model": cfg.model,
            "boundaries_tokens": list(cfg.boundaries_tokens), "pools": pools,
            "plan": asdict(cfg.plan)}


class _Dumper(yaml.SafeDumper):
    """Safe YAML without anchors: a repeated mapping is written out again, not aliased."""

    def ignore_aliases(self, data) -> bool:
        return True


def _dump(doc) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def render(ds: DeploymentSet) -> dict[str, str]:
    """File name -> YAML text for :data:`DEPLOY_FILES`. Each file opens with comment lines
    naming the plan and the warnings."""
    rec = ds.gateway.plan
    head = [f"# Written by `fleetopt deploy` from {rec.plan_file or 'a plan'}"
            + (f" (sha256 {rec.plan_sha256})" if rec.plan_sha256 else "") + ".",
            "# Schema and meaning: docs/deploy.md.",
            *(f"# WARNING: {w}" for w in ds.warnings)]
    header = "\n".join(head) + "\n"
    k8s = "".join(("---\n" if i else "") + _dump(d)
                  for i, d in enumerate(kubernetes_documents(ds)))
    return {"vllm.yaml": header + _dump(_vllm_document(ds)),
            "gateway.yaml": header + _dump(_gateway_document(ds.gateway)),
            "kubernetes.yaml": header + k8s}


def summary_lines(ds: DeploymentSet) -> list[str]:
    """One line per pool and per Deployment, for the command line."""
    lines = []
    for route in ds.gateway.pools:
        band = (f", compresses ({route.context_tokens:,}, {route.band_end_tokens:,}] into it"
                if route.band_end_tokens > route.context_tokens else "")
        lines.append(f"pool {route.role} ({route.lo_tokens:,}, {route.context_tokens:,}] "
                     f"tokens{band} -> {route.upstream}")
        for e in ds.engines:
            if e.pool == route.role:
                lines.append(f"  {e.name}: {e.replicas} x {e.gpu} (--tensor-parallel-size "
                             f"{e.tensor_parallel_size}, --max-model-len {e.max_model_len}, "
                             f"--max-num-seqs {e.max_num_seqs}), {e.load_share:.0%} of the pool")
    return lines


def write_deployment(ds: DeploymentSet, out_dir: str | Path) -> list[Path]:
    """Write :func:`render`'s files into ``out_dir`` (created if missing), each atomically.
    Returns their paths; a folder that cannot be written gives one :class:`FleetOptError`."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise FleetOptError(f"{out}: is a file; --out takes a folder for the deployment files")
    texts = render(ds)
    paths = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            write_text_atomic(out / name, text, "deployment file")
            paths.append(out / name)
    except OSError as exc:
        where = exc.filename or out
        raise FleetOptError(f"{where}: cannot write the deployment files "
                            f"({exc.strerror or exc}); choose a folder you can write to "
                            "(--out)") from None
    return paths


# ---------------------------------------------------------------------------------------
# gateway.yaml -> records
# ---------------------------------------------------------------------------------------


def _fields(cls, raw: object, where: str) -> dict:
    """The fields of dataclass ``cls`` from mapping ``raw``, with their declared types."""
    if not isinstance(raw, dict):
        raise FleetOptError(f"{where}: must be a mapping")
    out = {}
    for f in fields(cls):
        if f.name not in raw:
            raise FleetOptError(f"{where}: missing field {f.name!r}")
        v = raw[f.name]
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        ok = {"int": isinstance(v, int) and not isinstance(v, bool),
              "float": isinstance(v, int | float) and not isinstance(v, bool)
              and math.isfinite(v),
              "str": isinstance(v, str),
              "tuple[str, ...]": isinstance(v, list) and all(isinstance(x, str) for x in v)}
        if not ok.get(kind, False):
            raise FleetOptError(f"{where}: field {f.name!r} must be {kind}, got {v!r}")
        out[f.name] = tuple(v) if kind.startswith("tuple") else v
    return out


def gateway_from_document(doc: object, source: str = "gateway config") -> GatewayConfig:
    """A :class:`GatewayConfig` from a parsed ``gateway.yaml``, checked: the schema, every
    field's type, pools tiling ``(0, long window]`` in order, ``gamma >= 1``, band ends
    ``floor(gamma C)`` inside the next pool, and http(s) upstreams."""
    if not isinstance(doc, dict) or doc.get("schema") != GATEWAY_SCHEMA:
        raise FleetOptError(f"{source}: not a fleetopt gateway config (schema "
                            f"{GATEWAY_SCHEMA!r} expected); write one with `fleetopt deploy`")
    if not isinstance(doc.get("model"), str):
        raise FleetOptError(f"{source}: field 'model' must be the served model name")
    raw_pools = doc.get("pools")
    if not isinstance(raw_pools, list) or not raw_pools:
        raise FleetOptError(f"{source}: 'pools' must be a non-empty list")
    pools = tuple(PoolRoute(**_fields(PoolRoute, p, f"{source}: pools[{i}]"))
                  for i, p in enumerate(raw_pools))
    lo = 0
    for i, p in enumerate(pools):
        where = f"{source}: pools[{i}] ({p.role})"
        if p.lo_tokens != lo or p.context_tokens <= p.lo_tokens:
            raise FleetOptError(f"{where}: covers ({p.lo_tokens}, {p.context_tokens}]; pools "
                                f"must tile the lengths in ascending order from {lo}")
        lo = p.context_tokens
        nxt = pools[i + 1].context_tokens if i + 1 < len(pools) else p.context_tokens
        if p.gamma < 1 or p.band_end_tokens != int(band_end_tokens(p.context_tokens, p.gamma)) \
                or p.band_end_tokens > nxt:
            raise FleetOptError(f"{where}: gamma {p.gamma} and band_end_tokens "
                                f"{p.band_end_tokens} must satisfy gamma >= 1, band_end_tokens "
                                f"= floor(gamma x {p.context_tokens}) <= {nxt}")
        if not re.match(r"^https?://[^/\s]+", p.upstream):
            raise FleetOptError(f"{where}: upstream {p.upstream!r} must be an http(s) URL")
    plan = PlanRecord(**_fields(PlanRecord, doc.get("plan"), f"{source}: plan"))
    return GatewayConfig(doc["model"], pools, plan)


def read_gateway_config(path: str | Path) -> GatewayConfig:
    """Read and check a ``gateway.yaml`` written by ``fleetopt deploy``."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise FleetOptError(f"{p}: cannot read the gateway config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise FleetOptError(f"{p}: {line}not valid YAML") from None
    return gateway_from_document(doc, str(p))
