"""`fleetopt deploy`: vLLM settings, Kubernetes manifests and the gateway config of a plan."""

import hashlib
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from fleetopt_milp.deploy import (
    DEPLOY_FILES,
    deployment_set,
    gateway_from_document,
    kubernetes_documents,
    load_kube_settings,
    read_gateway_config,
    render,
    write_deployment,
)
from fleetopt_milp.errors import FleetOptError
from fleetopt_milp.hardware import load_catalog
from fleetopt_milp.plan import read_plan

GOLDEN = Path(__file__).parent / "golden"
PLANS = ["plan-azure-default", "solve-azure-2types", "plan-mooncake-roofline", "solve-lmsys-caps"]
K8S_VERSION = "1.37.0"  # schemas shipped with kubernetes-validate, read offline


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def _set(name, catalog, **kw):
    plan = read_plan(GOLDEN / f"{name}.json")
    return plan, deployment_set(plan, load_kube_settings(**kw), catalog=catalog,
                                plan_file=f"{name}.json")


def _args(container) -> dict:
    """``--flag value`` pairs of a vLLM command line, plus the model under ``model``."""
    args = container["args"]
    out = {"model": args[0]}
    out.update(zip(args[1::2], args[2::2], strict=True))
    return out


@pytest.mark.parametrize("name", PLANS)
def test_manifests_match_the_plan_and_pass_the_kubernetes_schema(name, catalog):
    plan, ds = _set(name, catalog, namespace="llm")
    docs = list(yaml.safe_load_all(render(ds)["kubernetes.yaml"]))
    for d in docs:  # strict: unknown fields are errors too
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    deps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    allocs = [(p, a) for p in plan.pools for a in p.allocations if a.instances > 0]
    assert len(deps) == len(allocs) and len(services) == len(plan.pools)
    for (pool, alloc), e in zip(allocs, ds.engines, strict=True):
        d = deps[e.name]
        assert d["metadata"]["namespace"] == "llm"
        assert d["spec"]["replicas"] == alloc.instances
        c = d["spec"]["template"]["spec"]["containers"][0]
        a = _args(c)
        assert a["--tensor-parallel-size"] == str(alloc.tp)
        assert a["--max-model-len"] == str(pool.context_tokens)
        assert a["--max-num-seqs"] == str(alloc.slots_per_instance)
        assert a["--served-model-name"] == plan.model and "/" in a["model"]
        assert c["resources"]["limits"] == {"nvidia.com/gpu": alloc.tp}
        assert c["readinessProbe"]["httpGet"]["path"] == "/health"
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
        # The pool's Service selects exactly the pods of the pool's Deployments.
        svc = services[ds.gateway.pools[plan.pools.index(pool)].service]
        assert svc["spec"]["selector"].items() <= labels.items()
    assert sum(d["spec"]["replicas"] for d in deps.values()) == plan.instances
    assert sum(d["spec"]["replicas"] * _gpus(d) for d in deps.values()) == plan.gpus


def _gpus(deployment) -> int:
    return deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "nvidia.com/gpu"]


def test_the_schema_check_rejects_a_broken_manifest(catalog):
    _, ds = _set("plan-azure-default", catalog)
    dep = kubernetes_documents(ds)[0]
    dep["spec"]["replicas"] = "11"  # a string where Kubernetes wants an integer
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
    dep["spec"]["replicas"] = 11
    dep["spec"]["template"]["spec"]["containers"][0]["gpus"] = 8  # no such field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_gateway_config_of_the_default_plan(catalog):
    plan, ds = _set("plan-azure-default", catalog)
    g = yaml.safe_load(render(ds)["gateway.yaml"])
    assert g["schema"] == "fleetopt-gateway/1" and g["model"] == "Llama-3-70B"
    assert g["boundaries_tokens"] == [2496]
    short, long_ = g["pools"]
    # floor(1.9 x 2,496) = 4,742: requests of (2,496, 4,742] tokens may be compressed down.
    assert (short["role"], short["lo_tokens"], short["context_tokens"], short["gamma"],
            short["band_end_tokens"]) == ("short", 0, 2496, 1.9, 4742)
    assert (long_["lo_tokens"], long_["context_tokens"], long_["gamma"],
            long_["band_end_tokens"]) == (2496, 65536, 1.0, 65536)
    assert short["upstream"] == "http://fleetopt-short:8000"
    assert short["replicas"] == 11 and long_["replicas"] == 2
    rec = g["plan"]
    assert (rec["workload"], rec["rate_rps"], rec["slo_ms"], rec["percentile"]) == \
        ("azure-2023", 1000.0, 500.0, 99.0)
    assert rec["usd_per_hour"] == pytest.approx(plan.usd_per_hour)


@pytest.mark.parametrize("name", PLANS)
def test_round_trip_plan_files_parse_same_numbers(name, catalog, tmp_path):
    plan, ds = _set(name, catalog, namespace="serving")
    paths = write_deployment(ds, tmp_path / "out" / "nested")
    assert [p.name for p in paths] == list(DEPLOY_FILES)
    assert read_gateway_config(paths[1]) == ds.gateway
    v = yaml.safe_load(paths[0].read_text())
    got = [(pool["role"], a["gpu"], a["replicas"], a["tensor_parallel_size"],
            a["max_model_len"], a["max_num_seqs"], a["load_share"])
           for pool in v["pools"] for a in pool["allocations"]]
    want = [(p.role, a.gpu, a.instances, a.tp, p.context_tokens, a.slots_per_instance,
             a.load_share) for p in plan.pools for a in p.allocations if a.instances > 0]
    assert got == want
    for pool in v["pools"]:
        for a in pool["allocations"]:
            flags = _args({"args": a["args"]})
            assert int(flags["--max-num-seqs"]) == a["max_num_seqs"]
            assert int(flags["--max-model-len"]) == a["max_model_len"]
    k8s = list(yaml.safe_load_all(paths[2].read_text()))
    assert [d["spec"]["replicas"] for d in k8s if d["kind"] == "Deployment"] == \
        [w[2] for w in want]
    assert not list(tmp_path.rglob("*.tmp"))


def test_mixed_pool_gets_one_deployment_per_allocation(catalog):
    plan = read_plan(GOLDEN / "plan-azure-default.json")
    short = plan.pools[0]
    (a,) = short.allocations
    h100 = replace(a, instances=8, load_share=0.6)
    a100 = replace(a, gpu="A100-80GB", profile="paper-A100", instances=3, load_share=0.4)
    h100_tp4 = replace(a, tp=4, instances=2, load_share=0.0)
    mixed = replace(plan, pools=(replace(short, allocations=(h100, a100, h100_tp4)),
                                 plan.pools[1]))
    ds = deployment_set(mixed, load_kube_settings(), catalog=catalog)
    names = [e.name for e in ds.engines]
    assert names == ["fleetopt-short-h100-80gb", "fleetopt-short-a100-80gb",
                     "fleetopt-short-h100-80gb-tp4", "fleetopt-long-h100-80gb"]
    assert ds.gateway.pools[0].deployments == tuple(names[:3])
    assert ds.gateway.pools[0].replicas == 13
    docs = kubernetes_documents(ds)
    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    sel = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["nodeSelector"]
           for d in docs if d["kind"] == "Deployment"}
    assert sel["fleetopt-short-a100-80gb"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert sel["fleetopt-short-h100-80gb"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    # A Service spreads requests by pods (8/13 = 61.5%, 3/13 = 23.1%): the A100s (plan 40%)
    # and the tp-4 H100s (plan 0%) are off by more than 2 points, the tp-8 H100s are not.
    share = [w for w in ds.warnings if "spreads them over pods" in w]
    assert len(share) == 2
    assert "fleetopt-short-a100-80gb" in share[0] and "23.1%" in share[0]
    assert "fleetopt-short-h100-80gb-tp4" in share[1]


@pytest.mark.parametrize("change,needle", [
    (lambda p: replace(p, pools=(replace(p.pools[0], allocations=(replace(
        p.pools[0].allocations[0], instances=0),)), p.pools[1])), "has no instances"),
    (lambda p: replace(p, pools=(replace(p.pools[0], allocations=(replace(
        p.pools[0].allocations[0], gpu="MI300X-192GB"),)), p.pools[1])), "--k8s-config"),
    (lambda p: replace(p, pools=(replace(p.pools[0], allocations=(replace(
        p.pools[0].allocations[0], model="Llama-3.1-70B"),)), p.pools[1])), "one fleet serves"),
    (lambda p: replace(p, model="my-model", pools=tuple(replace(q, allocations=tuple(
        replace(a, model="my-model") for a in q.allocations)) for q in p.pools)),
     "--model-id ORG/NAME"),
    (lambda p: replace(p, pools=(replace(p.pools[0], lo_tokens=10), p.pools[1])),
     "must tile"),
])
def test_plans_that_cannot_be_deployed_are_one_line_errors(change, needle, catalog):
    plan = change(read_plan(GOLDEN / "plan-azure-default.json"))
    with pytest.raises(FleetOptError) as err:
        deployment_set(plan, load_kube_settings(), catalog=catalog)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_model_window_and_model_id(catalog):
    plan, ds = _set("plan-azure-default", catalog)
    # Llama-3-70B has an 8,192-token window; the paper's 64K pool exceeds it.
    assert any("exceeds Llama-3-70B's 8192-token window" in w for w in ds.warnings)
    assert ds.engines[0].model_id == "meta-llama/Meta-Llama-3-70B"
    ds2 = deployment_set(plan, load_kube_settings(), catalog=catalog,
                         model_id="meta-llama/Meta-Llama-3-70B-Instruct")
    assert {e.model_id for e in ds2.engines} == {"meta-llama/Meta-Llama-3-70B-Instruct"}
    _, roof = _set("plan-mooncake-roofline", catalog)  # Llama-3.1-70B holds 131,072 tokens
    assert not any("window" in w for w in roof.warnings)


def test_settings_files_override_and_are_checked(catalog, tmp_path):
    extra = tmp_path / "site.toml"
    extra.write_text('[defaults]\nport = 9000\n[gpus."H100-80GB"]\n'
                     'node_label_value = "NVIDIA-H100-PCIe"\n')
    _, ds = _set("plan-azure-default", catalog, extra_paths=[extra], image="my/vllm:1")
    dep = kubernetes_documents(ds)[0]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert dep["spec"]["template"]["spec"]["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-H100-PCIe"}
    assert c["image"] == "my/vllm:1" and c["ports"][0]["containerPort"] == 9000
    assert _args(c)["--port"] == "9000"
    assert ds.gateway.pools[0].upstream == "http://fleetopt-short:9000"
    for text, needle in [('[defaults]\nprot = 1\n', "unknown key(s) prot"),
                         ('[defaults]\nport = 0\n', "port must be an integer"),
                         ('[gpus."X"]\nimage = "a"\n', "lacks node_label_value"),
                         ('[cluster]\n', "unknown table(s) cluster"),
                         ('[defaults\n', "not valid TOML")]:
        extra.write_text(text)
        with pytest.raises(FleetOptError) as err:
            load_kube_settings([extra])
        assert needle in str(err.value)
    with pytest.raises(FleetOptError, match="--name-prefix"):
        load_kube_settings(name_prefix="Fleet_Opt")
    with pytest.raises(FleetOptError, match="--namespace"):
        load_kube_settings(namespace="bad ns")


def test_gateway_configs_are_checked_on_read(catalog, tmp_path):
    _, ds = _set("plan-azure-default", catalog)
    good = yaml.safe_load(render(ds)["gateway.yaml"])
    assert gateway_from_document(good) == ds.gateway

    def bad(edit):
        doc = yaml.safe_load(render(ds)["gateway.yaml"])
        edit(doc)
        with pytest.raises(FleetOptError) as err:
            gateway_from_document(doc, "g.yaml")
        return str(err.value)

    assert "schema" in bad(lambda d: d.update(schema="x"))
    assert "band_end_tokens" in bad(lambda d: d["pools"][0].update(band_end_tokens=5000))
    assert "http(s) URL" in bad(lambda d: d["pools"][1].update(upstream="fleetopt-long:8000"))
    assert "missing field 'gamma'" in bad(lambda d: d["pools"][0].pop("gamma"))
    assert "must be int" in bad(lambda d: d["pools"][0].update(context_tokens="2496"))
    assert "must tile" in bad(lambda d: d["pools"][1].update(lo_tokens=2000))
    assert "plan: missing field" in bad(lambda d: d["plan"].pop("slo_ms"))
    path = tmp_path / "g.yaml"
    path.write_text("pools: [\n")
    with pytest.raises(FleetOptError, match="not valid YAML"):
        read_gateway_config(path)


def test_writes_are_atomic(catalog, tmp_path, monkeypatch):
    _, ds = _set("plan-azure-default", catalog)
    out = tmp_path / "out"
    write_deployment(ds, out)
    before = {n: (out / n).read_text() for n in DEPLOY_FILES}

    def cut(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("fleetopt_milp.files.os.replace", cut)
    _, other = _set("plan-mooncake-roofline", catalog)
    with pytest.raises(FleetOptError, match="the disk is full"):
        write_deployment(other, out)
    assert {n: (out / n).read_text() for n in DEPLOY_FILES} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(DEPLOY_FILES)


def run(*args):
    return subprocess.run([sys.executable, "-m", "fleetopt_milp.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_the_files(tmp_path):
    plan_file = GOLDEN / "solve-azure-2types.json"
    r = run("deploy", str(plan_file), "--out", str(tmp_path / "k8s"), "--namespace", "llm")
    assert r.returncode == 0, r.stderr
    assert "fleetopt-medium-a100-80gb: 5 x A100-80GB" in r.stdout
    g = read_gateway_config(tmp_path / "k8s" / "gateway.yaml")
    assert g.boundaries_tokens == (896, 4032)
    assert g.plan.plan_sha256 == hashlib.sha256(plan_file.read_bytes()).hexdigest()
    assert g.pools[2].upstream == "http://fleetopt-long.llm.svc.cluster.local:8000"
    head = (tmp_path / "k8s" / "kubernetes.yaml").read_text().splitlines()[0]
    assert head.startswith("# Written by `fleetopt deploy`")


@pytest.mark.parametrize("args,needle", [
    (("missing.json", "--out", "OUT"), "plan file not found"),
    (("PLAN", "--out", "PLAN"), "is a file; --out takes a folder"),
    (("PLAN", "--out", "OUT", "--name-prefix", "X"), "--name-prefix"),
    (("PLAN", "--out", "OUT", "--k8s-config", "missing.toml"), "cannot read"),
])
def test_cli_mistakes_are_one_line_errors(args, needle, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_bytes((GOLDEN / "plan-azure-default.json").read_bytes())
    subst = {"PLAN": str(plan), "OUT": str(tmp_path / "out")}
    r = run("deploy", *(subst.get(a, a) for a in args))
    assert r.returncode == 2, r.stdout
    assert needle in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
