"""Checks of the Kubernetes manifests in k8s/, without a cluster.

Every YAML document under k8s/ is validated against the schema the API server would use:

- KubeRay kinds (RayCluster, RayJob) against the ``v1`` OpenAPI schema of KubeRay's CRDs, stored in
  tests/data/kuberay-crds/ (see the README there). The API server silently *drops* unknown fields
  of a custom resource, so a misspelled key would go unnoticed on a real cluster; the schema is
  made strict here (``additionalProperties: false`` on every object schema that lists its
  properties) so that a misspelling fails.
- Built-in kinds (Namespace, PersistentVolumeClaim, Deployment, Service) with
  ``kubernetes-validate`` in strict mode (its schemas ship with the package; nothing is fetched).

Then the pieces are checked against each other: the kustomization lists every manifest, the
RayJob runs a config that exists in jobs/ and validates, Ray pods use one image whose Ray version
matches k8s/Dockerfile, mount the shared volume, and reach MLflow at an address the MLflow server
accepts. CEL rules (``x-kubernetes-validations``) in the CRDs are not evaluated; none of them
concerns fields these manifests set.
"""
from __future__ import annotations

import copy
import fnmatch
import json
import re
import shlex
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
CRD_DIR = Path(__file__).resolve().parent / "data" / "kuberay-crds"
KUSTOMIZATION = K8S / "kustomization.yaml"
DOCKERFILE = K8S / "Dockerfile"

# Oldest Kubernetes minor the manifests are meant for (only long-stable APIs are used).
KUBERNETES_VERSION = "1.31"
# KubeRay kinds -> their stored v1 schema.
CRD_SCHEMA_FILES = {
    "RayCluster": "ray.io_rayclusters.v1.json",
    "RayJob": "ray.io_rayjobs.v1.json",
}
SHARED_MOUNT = "/mnt/frugalnas"  # where every Ray pod sees the shared outputs volume


# ---------------------------------------------------------------------------------------------
# Loading


def manifest_files() -> list[Path]:
    """Every YAML file in k8s/ except the kustomization itself."""
    return sorted(p for p in K8S.glob("*.y*ml") if p.name != KUSTOMIZATION.name)


def load_documents(path: Path) -> list[dict]:
    """The non-empty YAML documents of one file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def all_documents() -> list[tuple[str, dict]]:
    """(label, document) for every document of every manifest file."""
    found = []
    for path in manifest_files():
        for index, doc in enumerate(load_documents(path)):
            kind = doc.get("kind", "?") if isinstance(doc, dict) else "?"
            name = (doc.get("metadata") or {}).get("name", "?") if isinstance(doc, dict) else "?"
            found.append((f"{path.name}#{index}:{kind}/{name}", doc))
    return found


def documents_of_kind(kind: str) -> list[dict]:
    return [doc for _, doc in all_documents() if doc.get("kind") == kind]


def one(kind: str, name: str | None = None) -> dict:
    """The single document of ``kind`` (and ``name``), failing clearly when there is not one."""
    docs = [d for d in documents_of_kind(kind) if name is None or d["metadata"]["name"] == name]
    assert len(docs) == 1, f"expected one {kind}{f' named {name}' if name else ''} in k8s/, found {len(docs)}"
    return docs[0]


def kustomization() -> dict:
    return yaml.safe_load(KUSTOMIZATION.read_text())


# ---------------------------------------------------------------------------------------------
# Schema validation


def strict_schema(schema: dict) -> dict:
    """A copy of an OpenAPI schema in which objects that list their properties allow no others.

    Added wherever an object schema has ``properties`` but neither ``additionalProperties`` nor
    ``x-kubernetes-preserve-unknown-fields`` (those deliberately accept any key).
    """
    schema = copy.deepcopy(schema)

    def walk(node: dict) -> None:
        if not isinstance(node, dict):
            return
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        for sub in (node.get("properties") or {}).values():
            walk(sub)
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), dict):
                walk(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in node.get(key) or []:
                walk(sub)

    walk(schema)
    return schema


def crd_schema(kind: str, strict: bool = True) -> dict:
    stored = json.loads((CRD_DIR / CRD_SCHEMA_FILES[kind]).read_text())
    assert stored["kind"] == kind and stored["version"] == "v1", f"{CRD_SCHEMA_FILES[kind]} is not the v1 {kind} schema"
    schema = stored["openAPIV3Schema"]
    return strict_schema(schema) if strict else schema


def schema_errors(doc: dict, strict_crds: bool = True) -> list[str]:
    """Why ``doc`` would be refused (or silently changed) by the API server; empty if valid."""
    if not isinstance(doc, dict) or not {"apiVersion", "kind", "metadata"} <= doc.keys():
        return ["a Kubernetes object needs apiVersion, kind and metadata"]
    if not doc["metadata"].get("name"):
        return ["metadata.name is missing"]
    kind, api_version = doc["kind"], doc["apiVersion"]
    if api_version.startswith("ray.io/"):
        if kind not in CRD_SCHEMA_FILES or api_version != "ray.io/v1":
            return [f"no stored KubeRay schema for {api_version} {kind}: use ray.io/v1 "
                    f"({', '.join(CRD_SCHEMA_FILES)}) or add its CRD schema to {CRD_DIR}"]
        # OpenAPI 3.0 schemas are a draft-4 dialect of JSON Schema.
        validator = jsonschema.Draft4Validator(crd_schema(kind, strict=strict_crds))
        return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.path)) or '<root>'}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [error.message]
    return []


@pytest.mark.parametrize("label,doc", all_documents(), ids=[label for label, _ in all_documents()])
def test_manifest_matches_its_schema(label, doc):
    errors = schema_errors(doc)
    assert not errors, f"k8s/{label} does not validate:\n  " + "\n  ".join(errors)


def test_k8s_folder_has_the_expected_resources():
    kinds = {doc["kind"] for _, doc in all_documents()}
    assert {"Namespace", "PersistentVolumeClaim", "Deployment", "Service", "RayCluster", "RayJob"} <= kinds


# Misspell one key in a copy of each manifest: the copy must fail validation, naming the typo.
MISSPELLINGS = [
    ("raycluster.yaml", "enableInTreeAutoscaling"),   # top level of a RayCluster spec
    ("raycluster.yaml", "mountPath"),                 # deep inside the pod template
    ("rayjob-quickstart.yaml", "shutdownAfterJobFinishes"),
    ("rayjob-quickstart.yaml", "rayStartParams"),
    ("raycluster.yaml", "authOptions"),
    ("mlflow.yaml", "readinessProbe"),
    ("storage.yaml", "accessModes"),
    ("namespace.yaml", "labels"),
]


@pytest.mark.parametrize("filename,key", MISSPELLINGS)
def test_misspelled_key_fails_validation(tmp_path, filename, key):
    typo = key[:-1]  # e.g. accessModes -> accessMode
    text = (K8S / filename).read_text()
    assert re.search(rf"^\s*(- )?{key}:", text, re.M), f"k8s/{filename} has no key {key!r} to misspell"
    copy_path = tmp_path / filename
    copy_path.write_text(re.sub(rf"^(\s*(?:- )?){key}:", rf"\g<1>{typo}:", text, count=1, flags=re.M))
    errors = [e for doc in load_documents(copy_path) for e in schema_errors(doc)]
    assert any(typo in e for e in errors), f"misspelling {key!r} as {typo!r} in {filename} passed: {errors}"


def test_crd_schema_is_only_strict_because_we_make_it_so():
    """The CRD as published accepts unknown keys (the API server prunes them): the strict copy is what catches them."""
    doc = copy.deepcopy(one("RayCluster"))
    doc["spec"]["enableInTreeAutoscalin"] = doc["spec"].pop("enableInTreeAutoscaling")
    assert schema_errors(doc, strict_crds=False) == []
    assert any("enableInTreeAutoscalin" in e for e in schema_errors(doc, strict_crds=True))


def test_every_ray_cluster_requires_a_token():
    """Token authentication on through KubeRay's authOptions (it creates the Secret and injects
    RAY_AUTH_MODE / RAY_AUTH_TOKEN), on the standing cluster and on each RayJob's own cluster, and no
    container overrides what KubeRay injects (an env var of the same name would win)."""
    for label, spec in ray_cluster_specs():
        assert spec.get("authOptions") == {"mode": "token"}, f"{label}: authOptions is {spec.get('authOptions')}"
        major, minor = (int(part) for part in spec["rayVersion"].split(".")[:2])
        assert (major, minor) >= (2, 52), f"{label}: Ray {spec['rayVersion']} has no token authentication"
    for label, pod in ray_pod_specs():
        for container in pod["containers"]:
            names = {e["name"] for e in container.get("env", [])}
            assert not names & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"}, \
                f"{label} container {container['name']} sets Ray's auth variables itself"
    doc = copy.deepcopy(one("RayCluster"))
    doc["spec"]["authOptions"]["mode"] = "tokens"
    assert any("authOptions.mode" in e and "tokens" in e for e in schema_errors(doc))
    doc["spec"]["authOptions"] = {"mod": "token"}
    assert any("mod" in e for e in schema_errors(doc))


def test_readme_says_how_to_reach_the_dashboard_with_the_token():
    readme = (REPO / "README.md").read_text()
    cluster = one("RayCluster")["metadata"]["name"]
    namespace = kustomization()["namespace"]
    assert (f"kubectl -n {namespace} get secret {cluster} -o jsonpath='{{.data.auth_token}}' | base64 -d"
            in readme), "README does not show how to read the token KubeRay creates"
    assert f"kubectl -n {namespace} port-forward svc/{cluster}-head-svc 8265" in readme
    assert "RAY_AUTH_MODE=token" in readme


def test_wrong_type_fails_validation():
    doc = copy.deepcopy(one("RayCluster"))
    doc["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "eight"
    assert any("maxReplicas" in e and "integer" in e for e in schema_errors(doc))


# ---------------------------------------------------------------------------------------------
# The kustomization


def test_kustomization_lists_every_manifest_and_only_existing_files():
    listed = kustomization()["resources"]
    missing = [name for name in listed if not (K8S / name).is_file()]
    assert not missing, f"k8s/kustomization.yaml lists files that do not exist: {missing}"
    unlisted = sorted({p.name for p in manifest_files()} - set(listed))
    assert not unlisted, f"k8s/kustomization.yaml does not list: {unlisted}"
    assert len(listed) == len(set(listed)), "k8s/kustomization.yaml lists a file twice"


def test_everything_goes_to_the_kustomization_namespace():
    namespace = kustomization()["namespace"]
    assert one("Namespace")["metadata"]["name"] == namespace
    elsewhere = [label for label, doc in all_documents()
                 if doc["metadata"].get("namespace") not in (None, namespace)]
    assert not elsewhere, f"resources that set another namespace than {namespace!r}: {elsewhere}"


# ---------------------------------------------------------------------------------------------
# Consistency between the pieces


def ray_cluster_specs() -> list[tuple[str, dict]]:
    """(label, RayCluster spec) of the RayCluster and of each RayJob's own cluster."""
    specs = [(f"RayCluster/{d['metadata']['name']}", d["spec"]) for d in documents_of_kind("RayCluster")]
    specs += [(f"RayJob/{d['metadata']['name']}", d["spec"]["rayClusterSpec"])
              for d in documents_of_kind("RayJob") if "rayClusterSpec" in d["spec"]]
    assert specs, "k8s/ defines no Ray cluster"
    return specs


def ray_pod_specs() -> list[tuple[str, dict]]:
    """(label, pod spec) of every Ray head and worker group."""
    pods = []
    for label, spec in ray_cluster_specs():
        pods.append((f"{label} head", spec["headGroupSpec"]["template"]["spec"]))
        for group in spec.get("workerGroupSpecs", []):
            pods.append((f"{label} workers {group['groupName']}", group["template"]["spec"]))
    return pods


def dockerfile_arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)", DOCKERFILE.read_text(), re.M)
    assert match, f"k8s/Dockerfile has no `ARG {name}=...`"
    return match.group(1)


def image_repo_dir() -> str:
    """Where the Dockerfile puts the repository (its WORKDIR)."""
    match = re.search(r"^WORKDIR (\S+)", DOCKERFILE.read_text(), re.M)
    assert match, "k8s/Dockerfile sets no WORKDIR"
    return match.group(1).rstrip("/")


def test_ray_version_matches_the_image():
    ray_version = dockerfile_arg("RAY_VERSION")
    wrong = {label: spec.get("rayVersion") for label, spec in ray_cluster_specs() if spec.get("rayVersion") != ray_version}
    assert not wrong, f"rayVersion must equal RAY_VERSION={ray_version} of k8s/Dockerfile: {wrong}"


def test_every_pod_runs_the_one_frugalnas_image():
    pods = ray_pod_specs() + [(f"Deployment/{d['metadata']['name']}", d["spec"]["template"]["spec"])
                              for d in documents_of_kind("Deployment")]
    images = {(label, c["name"]): c["image"] for label, pod in pods for c in pod["containers"]}
    assert len(set(images.values())) == 1, f"containers run different images: {images}"
    image_name = next(iter(images.values())).split(":")[0]
    named = [entry["name"] for entry in kustomization().get("images", [])]
    assert image_name in named, f"k8s/kustomization.yaml images: names {named}, not the image {image_name!r}"


def test_dockerfile_pins_the_torch_the_makefile_installs():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M), "k8s/Dockerfile must build FROM python:3.11-slim"
    makefile = (REPO / "Makefile").read_text()
    pins = re.search(r"^else\nTORCH_PINS := (.+)$", makefile, re.M)  # the x86_64 branch
    assert pins, "Makefile has no x86_64 TORCH_PINS"
    assert f"pip install {pins.group(1).strip()}" in text, f"k8s/Dockerfile does not install {pins.group(1)}"


def test_ray_pods_mount_the_shared_read_write_many_volume():
    claims = {d["metadata"]["name"]: d for d in documents_of_kind("PersistentVolumeClaim")}
    for label, pod in ray_pod_specs():
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == SHARED_MOUNT]
            assert mounts, f"{label} container {container['name']} does not mount {SHARED_MOUNT}"
            claim = volumes[mounts[0]["name"]]["persistentVolumeClaim"]["claimName"]
            assert claim in claims, f"{label} mounts claim {claim!r}, which k8s/ does not define"
            assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"], \
                f"claim {claim!r} is shared by every Ray node, so it must be ReadWriteMany"


def mlflow_allowed_hosts() -> list[str]:
    command = one("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--allowed-hosts" in command, "the mlflow server would refuse the in-cluster Host header"
    return command[command.index("--allowed-hosts") + 1].split(",")


def test_ray_pods_reach_mlflow_at_an_address_the_server_accepts():
    namespace = kustomization()["namespace"]
    service = one("Service", "mlflow")
    port = service["spec"]["ports"][0]["port"]
    expected = f"http://{service['metadata']['name']}.{namespace}.svc:{port}"
    allowed = mlflow_allowed_hosts()
    for label, pod in ray_pod_specs():
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("MLFLOW_TRACKING_URI") == expected, f"{label}: MLFLOW_TRACKING_URI is not {expected}"
            assert env.get("RAY_USAGE_STATS_ENABLED") == "0", f"{label}: RAY_USAGE_STATS_ENABLED is not '0'"
    # The same matching as mlflow.server.security_utils.is_allowed_host_header.
    host = expected.removeprefix("http://")
    for header in (host, "localhost:5000"):  # in-cluster clients; kubectl port-forward
        assert any(fnmatch.fnmatch(header, a) if "*" in a else header == a for a in allowed), \
            f"mlflow --allowed-hosts {allowed} refuses Host: {header}"


def test_rayjob_runs_a_valid_config_from_jobs():
    from frugalnas.config import load_config

    repo_in_image = image_repo_dir()
    for job in documents_of_kind("RayJob"):
        name = job["metadata"]["name"]
        argv = shlex.split(job["spec"]["entrypoint"])
        assert argv[:2] == ["frugalnas", "run"], f"RayJob {name} entrypoint does not start with `frugalnas run`"
        config = Path(argv[2])
        local = REPO / config.relative_to(repo_in_image) if config.is_absolute() else REPO / config
        assert local.is_relative_to(REPO / "jobs") and local.is_file(), \
            f"RayJob {name} runs {config}, which is not a file in jobs/ (the repo is at {repo_in_image} in the image)"
        options = argv[3:]
        overrides = [options[i + 1] for i, opt in enumerate(options) if opt == "--set"]
        load_config(local, overrides)  # raises ConfigError naming the bad key
        assert "--out" in options, f"RayJob {name} gives no --out, so outputs would stay on the head pod"
        out = options[options.index("--out") + 1]
        assert out.startswith(SHARED_MOUNT + "/"), f"RayJob {name} writes to {out}, not to the shared {SHARED_MOUNT}"
        assert job["spec"].get("shutdownAfterJobFinishes") is True, f"RayJob {name} would leave its cluster running"
