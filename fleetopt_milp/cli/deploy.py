"""``fleetopt deploy``: vLLM settings, Kubernetes manifests and the gateway config of a plan."""

from __future__ import annotations

from pathlib import Path

import typer

from . import CatalogOpt, app, console


@app.command()
def deploy(
    plan_file: Path = typer.Argument(..., help="Plan file written by `fleetopt plan --json` "
                                     "or `fleetopt solve --json`"),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for vllm.yaml, gateway.yaml and "
                             "kubernetes.yaml (created if missing)"),
    namespace: str | None = typer.Option(
        None, "--namespace", help="Kubernetes namespace (default: the one kubectl applies to)"),
    name_prefix: str = typer.Option(
        "fleetopt", "--name-prefix", help="First part of every Deployment and Service name"),
    model_id: str | None = typer.Option(
        None, "--model-id", help="Hugging Face id vLLM loads (default: the catalogue's)"),
    image: str | None = typer.Option(
        None, "--image", help="Serving image (default: data/kubernetes.toml's)"),
    k8s_config: list[Path] = typer.Option(
        [], "--k8s-config", help="Extra Kubernetes settings TOML (schema: "
        "data/kubernetes.toml; repeatable)"),
    catalog: list[Path] = CatalogOpt,
):
    """Write the files that deploy a plan: vLLM settings, manifests and the gateway config."""
    import hashlib

    from ..deploy import deployment_set, load_kube_settings, summary_lines, write_deployment
    from ..hardware import load_catalog
    from ..plan import read_plan

    plan = read_plan(plan_file)
    digest = hashlib.sha256(plan_file.read_bytes()).hexdigest()
    settings = load_kube_settings(k8s_config, namespace=namespace, name_prefix=name_prefix,
                                  image=image)
    ds = deployment_set(plan, settings, catalog=load_catalog(catalog), model_id=model_id,
                        plan_file=str(plan_file.resolve()), plan_sha256=digest)
    paths = write_deployment(ds, out)
    for line in summary_lines(ds):
        console.print(line, markup=False, highlight=False)
    for w in ds.warnings:
        console.print(f"warning: {w}", markup=False, highlight=False, style="yellow")
    console.print("wrote " + ", ".join(str(p) for p in paths), markup=False, highlight=False)
