"""The rendered Kubernetes manifests (kubectl kustomize): security, probes, GPUs, policy."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.support import OVERLAYS, SERVICES, Obj, find, pod_spec, render, workloads

PLATFORM = ("gateway", "scheduler", "models", "webhook")


def containers(obj: Obj) -> list[Obj]:
    spec = pod_spec(obj)
    return [*spec.get("initContainers", []), *spec["containers"]]


def deployment(overlay: str, name: str) -> Obj:
    (found,) = find(render(overlay), "Deployment", name)
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_restricted(overlay: str) -> None:
    for obj in workloads(render(overlay)):
        spec = pod_spec(obj)
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("seccompProfile") == {"type": "RuntimeDefault"}, obj["metadata"]
        assert spec.get("automountServiceAccountToken") is False
        assert not spec.get("hostNetwork") and not spec.get("hostPID")
        for c in containers(obj):
            sc = c["securityContext"]
            where = f"{overlay}: {obj['metadata']['name']}/{c['name']}"
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert not sc.get("privileged", False), where
            assert c["resources"]["limits"]["memory"], where


@pytest.mark.parametrize("overlay", ("base", "overlays/dev", "overlays/gpu"))
@pytest.mark.parametrize("name", SERVICES)
def test_services_have_grpc_probes_on_their_grpc_port(overlay: str, name: str) -> None:
    (c,) = containers(deployment(overlay, name))
    (port,) = [p["containerPort"] for p in c["ports"] if p["name"] == "grpc"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"] == {"port": port}, probe
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    assert env["COMFYFLEET_GRPC_ADDR"] == f"0.0.0.0:{port}"


@pytest.mark.parametrize("overlay", ("base", "overlays/gpu"))
def test_executors_request_a_gpu(overlay: str) -> None:
    (c,) = containers(deployment(overlay, "executor"))
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["COMFYFLEET_EXECUTOR_DEVICE"] == "cuda"


def test_gpu_overlay_places_executors_on_gpu_nodes_and_leaves_replicas_to_keda() -> None:
    executor = deployment("overlays/gpu", "executor")
    spec = pod_spec(executor)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert "replicas" not in executor["spec"]


def test_dev_overlay_runs_one_cpu_executor_without_a_gpu() -> None:
    (c,) = containers(deployment("overlays/dev", "executor"))
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    assert "nvidia.com/gpu" not in c["resources"]["requests"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["COMFYFLEET_EXECUTOR_DEVICE"] == "cpu"


def test_executors_advertise_their_pod_ip_and_hold_no_credentials() -> None:
    (c,) = containers(deployment("base", "executor"))
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["COMFYFLEET_EXECUTOR_ADVERTISE_ADDR"]["value"] == "$(POD_IP):50055"
    names = list(env)
    assert names.index("POD_IP") < names.index("COMFYFLEET_EXECUTOR_ADVERTISE_ADDR")
    assert "envFrom" not in c
    assert not [e for e in env.values() if "secretKeyRef" in e.get("valueFrom", {})]


def rule_targets(rule: Obj) -> list[tuple[str, tuple[int, ...]]]:
    ports = tuple(sorted(p["port"] for p in rule["ports"]))
    names = []
    for peer in rule["to"]:
        labels = peer.get("podSelector", {}).get("matchLabels", {})
        names.append(labels.get("app.kubernetes.io/name") or labels.get("k8s-app", ""))
    return [(name, ports) for name in names]


@pytest.mark.parametrize("overlay", ("base", "overlays/dev", "overlays/gpu"))
def test_executor_egress_is_the_scheduler_object_storage_and_dns_only(overlay: str) -> None:
    (policy,) = find(render(overlay), "NetworkPolicy", "executor")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "executor"}
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    allowed = sorted(t for rule in spec["egress"] for t in rule_targets(rule))
    assert allowed == [("kube-dns", (53, 53)), ("minio", (9000,)), ("scheduler", (50052,))]
    (ingress,) = spec["ingress"]
    assert ingress["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "scheduler"}}}
    ]
    assert [p["port"] for p in ingress["ports"]] == [50055]


@pytest.mark.parametrize("overlay", ("base", "overlays/dev", "overlays/gpu"))
def test_each_service_has_a_disruption_budget_matching_its_pods(overlay: str) -> None:
    objects = render(overlay)
    for name in SERVICES:
        (pdb,) = find(objects, "PodDisruptionBudget", name)
        labels = pod_spec_labels(deployment(overlay, name))
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def pod_spec_labels(obj: Obj) -> dict[str, Any]:
    return dict(obj["spec"]["template"]["metadata"]["labels"])


@pytest.mark.parametrize("overlay", ("base", "overlays/dev", "overlays/gpu"))
def test_every_service_selects_pods_and_ports_that_exist(overlay: str) -> None:
    objects = render(overlay)
    for svc in find(objects, "Service"):
        selector = svc["spec"]["selector"].items()
        pods = [w for w in workloads(objects) if selector <= pod_spec_labels(w).items()]
        assert pods, f"Service {svc['metadata']['name']} selects no pods"
        named = {p["name"] for w in pods for c in containers(w) for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in named, (svc["metadata"]["name"], port)


@pytest.mark.parametrize("overlay", ("base", "overlays/gpu", "bootstrap"))
def test_secrets_are_referenced_never_committed(overlay: str) -> None:
    objects = render(overlay)
    assert not find(objects, "Secret")
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for w in workloads(objects)
        for c in containers(w)
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {"comfyfleet-secrets"}


def test_dev_secrets_are_marked_dev_only() -> None:
    (secret,) = find(render("overlays/dev"), "Secret", "comfyfleet-secrets")
    import base64

    values = [base64.b64decode(v).decode() for v in secret["data"].values()]
    assert all("dev-only" in v or v == "comfyfleet" for v in values), values


def test_keda_scales_executors_on_queue_depth_to_zero_and_back() -> None:
    (scaled,) = find(render("overlays/gpu"), "ScaledObject", "executor")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"name": "executor"}
    assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 1
    assert spec["cooldownPeriod"] == 600
    triggers = {t["name"]: t for t in spec["triggers"]}
    depth = triggers["queue-depth"]
    assert depth["type"] == "prometheus"
    # Only the queue of the environment the Deployment's executors register as.
    (executor,) = find(render("overlays/gpu"), "Deployment", "executor")
    container = executor["spec"]["template"]["spec"]["containers"][0]
    environment = {e["name"]: e.get("value") for e in container["env"]}["COMFYFLEET_ENVIRONMENT"]
    assert depth["metadata"]["query"] == f'sum(queue_depth{{environment="{environment}"}})'
    assert depth["metadata"]["threshold"] == "5"
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["policies"] == [{"type": "Pods", "value": 2, "periodSeconds": 60}]
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}]


def test_the_namespace_enforces_the_restricted_pod_security_standard() -> None:
    (ns,) = find(render("base"), "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for overlay in OVERLAYS:
        namespaced = [o for o in render(overlay) if o["kind"] != "Namespace"]
        assert {o["metadata"].get("namespace") for o in namespaced} == {"comfyfleet"}


def test_the_admin_key_job_keeps_the_key_in_memory_and_off_the_serving_gateways() -> None:
    (job,) = find(render("bootstrap"), "Job", "comfyfleet-admin-key")
    spec = pod_spec(job)
    (c,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["COMFYFLEET_GRPC_ADDR"].startswith("127.0.0.1:")
    assert env["COMFYFLEET_REST_ADDR"].startswith("127.0.0.1:")
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["bootstrap"]["emptyDir"]["medium"] == "Memory"
    for overlay in ("base", "overlays/dev", "overlays/gpu"):
        (gw,) = containers(deployment(overlay, "gateway"))
        assert "COMFYFLEET_ADMIN_KEY_FILE" not in {e["name"] for e in gw["env"]}
