"""The deployment files, checked without a container engine or a cluster (none runs here).

- docker-compose.yml: parsed; services, their order (depends_on conditions), healthchecks, the
  GPU profile, and every NAS_* variable it sets is a field of the settings classes.
- deploy/k8s: rendered from its kustomization, every core object validated by
  kubernetes-validate (the Kubernetes OpenAPI schemas it ships, strict: unknown fields fail)
  and the RayCluster by jsonschema against KubeRay's CRD schema (tests/data), made as strict
  as the API server's field validation. Broken manifests are shown to fail both.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
CRD_SCHEMA = Path(__file__).with_name("data") / "raycluster_v1_schema.json"
SHARED_CRD = ROOT.parent / "shared" / "schemas" / "ray.io_rayclusters.yaml"
# The core objects must fit both an older Kubernetes and the newest that kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", "1.37.0")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}


def nas_variables() -> set[str]:
    """Every NAS_* variable the service reads: the fields of its settings classes."""
    from api.auth import AuthSettings
    from nas_service.settings import Settings

    names = set()
    for cls in (Settings, AuthSettings):
        prefix = cls.model_config["env_prefix"]
        assert not cls.model_config.get("case_sensitive")
        for name, field in cls.model_fields.items():
            assert field.validation_alias is None, f"{cls.__name__}.{name}: alias not handled"
            names.add(f"{prefix}{field.alias or name}".upper())
    return names


# --- docker-compose.yml -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_text() -> str:
    return (ROOT / "docker-compose.yml").read_text()


@pytest.fixture(scope="module")
def compose(compose_text) -> dict[str, Any]:
    return yaml.safe_load(compose_text)  # resolves the anchors and `<<` merges


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def argv(command: str | list[str]) -> list[str]:
    """A compose command as arguments; a `bash -c` script is split as well."""
    if isinstance(command, str):
        return shlex.split(command)
    if command[:2] == ["bash", "-c"]:
        return shlex.split(command[2])
    return list(command)


def flags(args: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in args if arg.startswith("--") and "=" in arg)


def test_compose_has_every_part(services):
    assert set(services) == {
        "postgres",
        "migrate",
        "ray-head",
        "ray-worker",
        "ray-worker-gpu",
        "api",
        "runner",
    }


def test_compose_starts_each_service_after_what_it_needs(services):
    healthy, done = "service_healthy", "service_completed_successfully"
    expected = {
        "postgres": {},
        "migrate": {"postgres": healthy},
        "ray-head": {},
        "ray-worker": {"ray-head": healthy},
        "ray-worker-gpu": {"ray-head": healthy},
        "api": {"postgres": healthy, "migrate": done},
        "runner": {"postgres": healthy, "migrate": done, "ray-head": healthy},
    }
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert {dep: spec["condition"] for dep, spec in depends.items()} == expected[name], name
        for dep, spec in depends.items():
            if spec["condition"] == healthy:
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s healthcheck"
            if spec["condition"] == done:  # a restarting one-shot would never complete
                assert services[dep].get("restart") == "no", dep


def test_compose_healthchecks(services):
    assert services["postgres"]["healthcheck"]["test"] == [
        "CMD-SHELL",
        "pg_isready -U nas -d nas",
    ]
    assert services["ray-head"]["healthcheck"]["test"][-1].endswith(":8265/api/gcs_healthz")
    assert services["api"]["healthcheck"]["test"][-1].endswith(":8000/api/v1/healthz")
    for name in ("postgres", "ray-head", "api"):
        check = services[name]["healthcheck"]
        assert check["retries"] >= 3 and check["interval"] and check["timeout"], name


def test_compose_sets_only_nas_variables_that_exist(compose, compose_text, services):
    allowed = nas_variables()
    blocks = [environment(s) for s in services.values()]
    blocks += [v for k, v in compose.items() if k.startswith("x-") and "image" not in v]
    keys = {key for block in blocks for key in block}
    interpolated = set(re.findall(r"(?<!\$)\$\{(\w+)", compose_text))
    used = {name for name in keys | interpolated if name.startswith("NAS_")}
    assert used <= allowed, f"not settings: {sorted(used - allowed)}"
    assert {"NAS_DATABASE_URL", "NAS_RAY_ADDRESS", "NAS_API_TOKENS"} <= used
    other = {name for name in keys if not name.startswith("NAS_")}
    assert all(name.startswith(("POSTGRES_", "RAY_")) for name in other), other


def test_compose_refuses_to_start_without_its_secrets(compose_text, services):
    required = set(re.findall(r"\$\{(\w+):\?", compose_text))
    assert required == {"POSTGRES_PASSWORD", "NAS_API_TOKENS", "RAY_AUTH_TOKEN"}
    example = (ROOT / "deploy" / "env.example").read_text()
    assert required <= set(re.findall(r"^(\w+)=", example, re.MULTILINE))
    assert (ROOT / ".gitignore").read_text().splitlines().count(".env") == 1
    assert environment(services["api"])["NAS_API_TOKENS"].startswith("${NAS_API_TOKENS:?")


def test_compose_database_and_migrations(services):
    url = "postgresql://nas:${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}@postgres:5432/nas"
    for name in ("migrate", "api", "runner"):
        assert environment(services[name])["NAS_DATABASE_URL"] == url, name
    assert environment(services["postgres"])["POSTGRES_USER"] == "nas"
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    assert argv(services["migrate"]["command"]) == ["alembic", "upgrade", "head"]


def test_compose_ray_cluster(services):
    head = argv(services["ray-head"]["command"])
    assert head[:3] == ["ray", "start", "--head"] and "--block" in head
    head_flags = flags(head)
    assert head_flags["num-cpus"] == "0" and head_flags["num-gpus"] == "0"  # trials on workers
    address = f"ray-head:{head_flags['port']}"
    for name in ("ray-worker", "ray-worker-gpu"):
        worker = argv(services[name]["command"])
        assert worker[:2] == ["ray", "start"] and "--block" in worker, name
        assert flags(worker)["address"] == address, name
    # `--scale ray-worker=N` needs replicas without a fixed name or host port.
    assert "container_name" not in services["ray-worker"]
    assert "ports" not in services["ray-worker"]
    # Every Ray node and the driver agree on token authentication.
    for name in ("ray-head", "ray-worker", "ray-worker-gpu", "runner"):
        env = environment(services[name])
        assert env["RAY_AUTH_MODE"] == "token", name
        assert env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?"), name


def test_compose_runner_joins_ray_and_api_runs_without_runner(services):
    runner = services["runner"]
    env = environment(runner)
    script = argv(runner["command"])
    assert script[:2] == ["ray", "start"]
    start = flags(script)
    assert start["address"] == env["NAS_RAY_ADDRESS"] == "ray-head:6379"
    assert start["num-cpus"] == "0" and start["num-gpus"] == "0"
    assert script[-4:] == ["&&", "exec", "nas", "runner"]
    api = argv(services["api"]["command"])
    assert api[:2] == ["nas", "serve"] and "--no-runner" in api
    assert api[api.index("--host") + 1] == "0.0.0.0"


def test_compose_gpu_profile(services):
    gpu = services["ray-worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["dockerfile"] == "deploy/Dockerfile.cuda"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert device["count"] == "all" or isinstance(device["count"], int)
    # Only the GPU worker is optional: a plain `docker compose up` starts the rest.
    assert [name for name, s in services.items() if "profiles" in s] == ["ray-worker-gpu"]


def test_compose_shares_data_and_cache_with_the_workers(compose, services):
    assert set(compose["volumes"]) == {"pgdata", "data", "jax-cache"}
    for name in ("ray-worker", "ray-worker-gpu"):
        assert {"data:/data", "jax-cache:/var/cache/nas"} <= set(services[name]["volumes"])
    assert "data:/data" in services["api"]["volumes"]  # checksummed at submission
    assert environment(services["runner"])["NAS_JAX_CACHE_DIR"].startswith("/var/cache/nas/")


def compose_tool() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.skipif(compose_tool() is None, reason="no docker compose / docker-compose here")
def test_compose_tool_accepts_the_file(tmp_path):
    """`config` checks the file against the Compose schema and interpolates it; no engine
    needed. Without the secrets it must refuse."""
    secrets = ("POSTGRES_PASSWORD", "NAS_API_TOKENS", "RAY_AUTH_TOKEN")
    clean = {k: v for k, v in os.environ.items() if k not in secrets}

    def config(env_file: str) -> subprocess.CompletedProcess:
        command = [*compose_tool(), "-f", str(ROOT / "docker-compose.yml")]
        command += ["--env-file", env_file, "config", "-q"]  # never a developer's .env
        return subprocess.run(command, capture_output=True, text=True, env=clean)

    (tmp_path / "empty.env").write_text("")
    refused = config(str(tmp_path / "empty.env"))
    assert refused.returncode != 0 and any(name in refused.stderr for name in secrets)
    example = (ROOT / "deploy" / "env.example").read_text()
    (tmp_path / "filled.env").write_text(example.replace("CHANGE-ME", "x"))
    accepted = config(str(tmp_path / "filled.env"))
    assert accepted.returncode == 0, accepted.stderr


# --- images ----------------------------------------------------------------------------------


def dockerfile_args(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(.*)$", path.read_text(), re.MULTILINE))


def test_compose_images_are_built_from_files_that_exist(services):
    built = {}
    for name, service in services.items():
        if "build" in service:
            path = ROOT / service["build"]["context"] / service["build"]["dockerfile"]
            assert path.is_file(), f"{name}: {path}"
            built.setdefault(service["image"], set()).add(service["build"]["dockerfile"])
        else:
            assert not service["image"].startswith("nas-service"), name
    # One Dockerfile per image name, so the services that share an image share its build.
    assert built == {
        "nas-service:local": {"deploy/Dockerfile"},
        "nas-service-cuda:local": {"deploy/Dockerfile.cuda"},
    }


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_copy_what_exists_and_run_as_non_root(name):
    text = (ROOT / "deploy" / name).read_text()
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for line in re.findall(r"^COPY (.+)$", text, re.MULTILINE):
        *sources, _ = line.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert f"!{source}" in ignore or f"!{source}/" in ignore, f".dockerignore: {source}"
    assert re.search(r"^WORKDIR /app$", text, re.MULTILINE)
    assert re.search(r"^COPY .*\balembic\.ini\b.* \./$", text, re.MULTILINE)  # alembic from /app
    assert re.search(r"^USER 1000$", text, re.MULTILINE)
    assert 'pip install . "ray[default,tune]==${RAY_VERSION}"' in text


def test_every_image_has_the_same_python_ray_and_jax():
    cpu = dockerfile_args(ROOT / "deploy" / "Dockerfile")
    cuda = dockerfile_args(ROOT / "deploy" / "Dockerfile.cuda")
    for key in ("PYTHON_IMAGE", "RAY_VERSION", "JAX_VERSION"):
        assert cpu[key] == cuda[key], key
    assert cpu["PYTHON_IMAGE"].startswith("python:3.11-")
    assert 'jax[cuda12]==${JAX_VERSION}"' in (ROOT / "deploy" / "Dockerfile.cuda").read_text()
    # The pins satisfy the project's own requirements.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    assert requirements["ray"].specifier.contains(cpu["RAY_VERSION"])
    assert requirements["jax"].specifier.contains(cpu["JAX_VERSION"])
    (cluster,) = [o for o in render(K8S) if o["kind"] == "RayCluster"]
    assert cluster["spec"]["rayVersion"] == cpu["RAY_VERSION"]


# --- Kubernetes: rendering --------------------------------------------------------------------


def render(directory: Path) -> list[dict[str, Any]]:
    """The subset of `kustomize build` that deploy/k8s uses: `resources` files in order, and
    `namespace` set on every namespaced object. Anything else fails rather than be ignored."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - {"apiVersion", "kind", "namespace", "resources"}
    assert not unsupported, f"render() does not implement {sorted(unsupported)}"
    objects = []
    for entry in kustomization["resources"]:
        for doc in yaml.safe_load_all((directory / entry).read_text()):
            if doc is None:
                continue
            if "namespace" in kustomization and doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
            objects.append(doc)
    return objects


def by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    found = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    assert len(found) == len(objects), "two objects of one kind share a name"
    return found


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return render(K8S)


@pytest.fixture(scope="module")
def objects(manifests) -> dict[tuple[str, str], dict[str, Any]]:
    return by_key(manifests)


@pytest.fixture(scope="module")
def raycluster(objects) -> dict[str, Any]:
    (cluster,) = [o for (kind, _), o in objects.items() if kind == "RayCluster"]
    return cluster


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not here")
def test_render_matches_kubectl_kustomize(manifests):
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], check=True, capture_output=True, text=True
    ).stdout
    assert by_key([d for d in yaml.safe_load_all(built) if d]) == by_key(manifests)


def test_kustomization_has_every_part(objects):
    assert set(objects) == {
        ("Namespace", "nas"),
        ("ConfigMap", "nas-config"),
        ("Secret", "nas-secrets"),
        ("Secret", "nas-postgres"),
        ("Secret", "nas-ray-auth"),
        ("Service", "nas-postgres"),
        ("StatefulSet", "nas-postgres"),
        ("Job", "nas-migrate"),
        ("RayCluster", "nas-ray"),
        ("Deployment", "nas-api"),
        ("Service", "nas-api"),
    }
    assert all(
        o["metadata"].get("namespace") == "nas" for (k, _), o in objects.items() if k != "Namespace"
    )


# --- Kubernetes: schemas ----------------------------------------------------------------------


def core(manifests) -> list[dict[str, Any]]:
    return [o for o in manifests if o["apiVersion"] != "ray.io/v1"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_objects_match_the_kubernetes_schemas(manifests, version):
    for obj in core(manifests):
        kubernetes_validate.validate(obj, version, strict=True)


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD schema with unknown fields refused, as the API server's strict field
    validation (kubectl's default) refuses them; objects that allow any field stay open."""
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            schema["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            schema[key] = _strict(schema[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            schema[key] = [_strict(s) for s in schema[key]]
    return schema


def _list_type(validator, list_type, instance, schema):
    """`x-kubernetes-list-type`: no repeated item in a set, no repeated key in a map (keys
    absent from an item compare as absent, not as their defaults)."""
    if not validator.is_type(instance, "array") or list_type not in ("set", "map"):
        return
    keys = schema.get("x-kubernetes-list-map-keys", [])
    seen = set()
    for item in instance:
        key = item if list_type == "set" else [item.get(k) for k in keys]
        key = json.dumps(key, sort_keys=True)
        if key in seen:
            yield jsonschema.ValidationError(f"duplicate entry {key} in a list of type {list_type}")
        seen.add(key)


# OpenAPI 3.0's schemas are JSON Schema draft 4 with extensions: `x-kubernetes-int-or-string`
# fields come with `anyOf: [integer, string]` (plus a quantity `pattern`, which only applies
# to strings), so they need no handling; the list types are checked above. Not evaluated:
# `format` (int32 ranges...) and the CEL rules of `x-kubernetes-validations`, which
# test_raycluster_sets_no_field_with_cel_rules covers.
CRDValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"x-kubernetes-list-type": _list_type}
)


@pytest.fixture(scope="module")
def crd_schema() -> dict[str, Any]:
    return json.loads(CRD_SCHEMA.read_text())["openAPIV3Schema"]


@pytest.fixture(scope="module")
def crd_validator(crd_schema):
    CRDValidator.check_schema(crd_schema)
    return CRDValidator(_strict(crd_schema))


@pytest.mark.skipif(not SHARED_CRD.is_file(), reason="shared/schemas not beside the project")
def test_crd_schema_copy_matches_its_source(crd_schema):
    crd = yaml.load(SHARED_CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert v1["served"] and v1["storage"]
    assert v1["schema"]["openAPIV3Schema"] == crd_schema


def test_raycluster_matches_the_kuberay_crd(raycluster, crd_validator):
    assert raycluster["apiVersion"] == "ray.io/v1"
    crd_validator.validate(raycluster)


def _cel_paths(schema: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path] if "x-kubernetes-validations" in schema else []
    for name, sub in schema.get("properties", {}).items():
        found += _cel_paths(sub, (*path, name))
    if isinstance(schema.get("items"), dict):
        found += _cel_paths(schema["items"], (*path, "[]"))
    return found


def _values_at(obj: Any, path: tuple[str, ...]) -> list[Any]:
    if not path:
        return [obj]
    head, rest = path[0], path[1:]
    if head == "[]":
        return [v for item in obj or [] for v in _values_at(item, rest)]
    return _values_at(obj[head], rest) if isinstance(obj, dict) and head in obj else []


def test_raycluster_sets_no_field_with_cel_rules(raycluster, crd_schema):
    paths = _cel_paths(crd_schema)
    assert paths  # the CRD has some; jsonschema cannot evaluate them
    for path in paths:
        assert _values_at(raycluster, path) == [], ".".join(path)


def _mutated(obj: dict[str, Any], change) -> dict[str, Any]:
    broken = copy.deepcopy(obj)
    change(broken)
    return broken


def _deployment_spec(o):
    return o["spec"]


def _first_api_container(o):
    return o["spec"]["template"]["spec"]["containers"][0]


BROKEN_CORE = {  # name: (change, what the validator says)
    "Deployment without a selector": (
        lambda o: _deployment_spec(o).pop("selector"),
        "'selector' is a required property",
    ),
    "Deployment with an unknown field": (
        lambda o: _deployment_spec(o).update(replica=1),
        "'replica' was unexpected",
    ),
    "containerPort as a string": (
        lambda o: _first_api_container(o)["ports"][0].update(containerPort="8000"),
        "'8000' is not of type 'integer'",
    ),
    "probe without its port": (
        lambda o: _first_api_container(o)["readinessProbe"]["httpGet"].pop("port"),
        "'port' is a required property",
    ),
}


@pytest.mark.parametrize("name", BROKEN_CORE)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_validate_rejects_a_broken_deployment(objects, name, version):
    deployment = objects[("Deployment", "nas-api")]
    kubernetes_validate.validate(deployment, version, strict=True)
    change, message = BROKEN_CORE[name]
    with pytest.raises(kubernetes_validate.ValidationError, match=re.escape(message)):
        kubernetes_validate.validate(_mutated(deployment, change), version, strict=True)


def _group(o, name):
    (group,) = [g for g in o["spec"]["workerGroupSpecs"] if g["groupName"] == name]
    return group


def _container(group):
    return group["template"]["spec"]["containers"][0]


BROKEN_RAY = {  # name: (change, what the validator says)
    "replicas as a word": (
        lambda o: _group(o, "cpu").update(replicas="two"),
        "'two' is not of type 'integer'",
    ),
    "misspelt workerGroupSpecs": (
        lambda o: o["spec"].update(workerGroupSpec=[]),
        "'workerGroupSpec' was unexpected",
    ),
    "worker group without a name": (
        lambda o: _group(o, "cpu").pop("groupName"),
        "'groupName' is a required property",
    ),
    "GPU count that is no quantity": (
        lambda o: _container(_group(o, "gpu"))["resources"]["limits"].update(
            {"nvidia.com/gpu": "one"}
        ),
        "'one' does not match",
    ),
    "rayStartParams value not a string": (
        lambda o: o["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
        "0 is not of type 'string'",
    ),
    "unknown auth mode": (
        lambda o: o["spec"]["authOptions"].update(mode="password"),
        "'password' is not one of",
    ),
    "a container port twice": (
        lambda o: o["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"].append(
            {"name": "gcs-server", "containerPort": 6379}
        ),
        "duplicate entry [6379, null] in a list of type map",
    ),
}


@pytest.mark.parametrize("name", BROKEN_RAY)
def test_crd_schema_rejects_a_broken_raycluster(raycluster, crd_validator, name):
    change, message = BROKEN_RAY[name]
    errors = list(crd_validator.iter_errors(_mutated(raycluster, change)))
    assert [e.message for e in errors if message in e.message], errors


def test_without_strictness_a_misspelt_field_would_pass(raycluster, crd_schema):
    change, _ = BROKEN_RAY["misspelt workerGroupSpecs"]
    assert CRDValidator(crd_schema).is_valid(_mutated(raycluster, change))


# --- Kubernetes: what the objects say ---------------------------------------------------------


def pod_specs(objects) -> dict[str, dict[str, Any]]:
    specs = {}
    for (kind, name), obj in objects.items():
        if kind in ("Deployment", "StatefulSet", "Job"):
            specs[name] = obj["spec"]["template"]["spec"]
        elif kind == "RayCluster":
            specs[f"{name}/head"] = obj["spec"]["headGroupSpec"]["template"]["spec"]
            for group in obj["spec"]["workerGroupSpecs"]:
                specs[f"{name}/{group['groupName']}"] = group["template"]["spec"]
    return specs


def containers(objects) -> dict[str, dict[str, Any]]:
    return {
        f"{pod}/{c['name']}": c
        for pod, spec in pod_specs(objects).items()
        for c in spec.get("initContainers", []) + spec["containers"]
    }


def test_every_reference_resolves(objects):
    def data(kind, name):
        obj = objects.get((kind, name))
        assert obj is not None, f"no {kind} {name}"
        return {**obj.get("data", {}), **obj.get("stringData", {})}

    for where, container in containers(objects).items():
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                data("ConfigMap", source["configMapRef"]["name"])
            if "secretRef" in source:
                data("Secret", source["secretRef"]["name"])
        for env in container.get("env", []):
            ref = env.get("valueFrom", {})
            for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                if key in ref:
                    assert ref[key]["key"] in data(kind, ref[key]["name"]), f"{where} {env}"
    for (kind, name), obj in objects.items():
        if kind == "Service":
            selector = obj["spec"]["selector"]
            pods = [
                o["spec"]["template"]["metadata"]["labels"]
                for (k, _), o in objects.items()
                if k in ("Deployment", "StatefulSet")
            ]
            assert any(selector.items() <= labels.items() for labels in pods), name
        if kind in ("Deployment", "StatefulSet"):
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert obj["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
    (postgres,) = [o for (k, _), o in objects.items() if k == "StatefulSet"]
    service = objects[("Service", postgres["spec"]["serviceName"])]
    assert service["spec"]["clusterIP"] == "None"  # headless: the StatefulSet's pod names


def test_kubernetes_sets_only_nas_variables_that_exist(objects):
    allowed = nas_variables()
    names = set()
    for (kind, _), obj in objects.items():
        if kind in ("ConfigMap", "Secret"):
            names |= set(obj.get("data", {})) | set(obj.get("stringData", {}))
    for container in containers(objects).values():
        names |= {env["name"] for env in container.get("env", [])}
    used = {name for name in names if name.startswith("NAS_")}
    assert used <= allowed, f"not settings: {sorted(used - allowed)}"
    assert {"NAS_DATABASE_URL", "NAS_RAY_ADDRESS", "NAS_API_TOKENS"} <= used


def test_secrets_hold_placeholders_only(objects):
    secrets = {name: o["stringData"] for (kind, name), o in objects.items() if kind == "Secret"}
    for name, values in secrets.items():
        assert all("CHANGE-ME" in value for value in values.values()), name
    password = secrets["nas-postgres"]["POSTGRES_PASSWORD"]
    assert f"nas:{password}@nas-postgres:5432/nas" in secrets["nas-secrets"]["NAS_DATABASE_URL"]


def test_api_deployment(objects, raycluster):
    pod = objects[("Deployment", "nas-api")]["spec"]["template"]["spec"]
    api, runner = pod["containers"]
    assert api["command"][:2] == ["nas", "serve"] and "--no-runner" in api["command"]
    assert api["command"][api["command"].index("--host") + 1] == "0.0.0.0"
    port = int(api["command"][api["command"].index("--port") + 1])
    assert api["ports"] == [{"name": "http", "containerPort": port}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert api[probe]["httpGet"] == {"path": "/api/v1/healthz", "port": "http"}
    secret_env = {e["name"] for e in api["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert {"NAS_API_TOKENS", "NAS_DATABASE_URL"} <= secret_env  # never a literal value
    # The runner joins the RayCluster (through KubeRay's head Service) before it drives it.
    config = objects[("ConfigMap", "nas-config")]["data"]
    head_port = raycluster["spec"]["headGroupSpec"]["rayStartParams"].get("port", "6379")
    assert config["NAS_RAY_ADDRESS"] == f"{raycluster['metadata']['name']}-head-svc:{head_port}"
    script = shlex.split(runner["command"][2])
    assert runner["command"][:2] == ["bash", "-c"] and script[:2] == ["ray", "start"]
    start = flags(script)
    assert start["address"] == "$NAS_RAY_ADDRESS"  # expanded by bash from the ConfigMap
    assert start["num-cpus"] == "0" and start["num-gpus"] == "0"
    assert script[-4:] == ["&&", "exec", "nas", "runner"]
    assert {"configMapRef": {"name": "nas-config"}} in runner["envFrom"]
    env = {e["name"]: e for e in runner["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    token = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    auth = raycluster["spec"]["authOptions"]
    assert auth["mode"] == "token" and token == {"name": auth["secretName"], "key": "auth_token"}
    service = objects[("Service", "nas-api")]["spec"]
    assert service["ports"][0]["targetPort"] == "http"


def test_migration_job(objects):
    job = objects[("Job", "nas-migrate")]["spec"]
    (container,) = job["template"]["spec"]["containers"]
    assert container["command"] == ["alembic", "upgrade", "head"]
    assert container["workingDir"] == "/app"
    (env,) = container["env"]
    assert env["name"] == "NAS_DATABASE_URL" and "secretKeyRef" in env["valueFrom"]
    assert job["backoffLimit"] >= 3  # retries while PostgreSQL starts


def test_raycluster_groups(raycluster):
    spec = raycluster["spec"]
    head = spec["headGroupSpec"]["rayStartParams"]
    assert head["num-cpus"] == "0" and head["num-gpus"] == "0"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu", "tpu-v5e"}
    cpu, gpu, tpu = (_container(groups[name])["resources"] for name in ("cpu", "gpu", "tpu-v5e"))
    assert cpu["requests"]["cpu"] == cpu["limits"]["cpu"]  # Ray counts the limit
    assert "nvidia.com/gpu" not in cpu["limits"] and "google.com/tpu" not in cpu["limits"]
    assert int(gpu["limits"]["nvidia.com/gpu"]) >= 1
    assert int(tpu["limits"]["google.com/tpu"]) in (1, 4, 8)  # single-host TPU slices
    selector = groups["tpu-v5e"]["template"]["spec"]["nodeSelector"]
    assert set(selector) == {
        "cloud.google.com/gke-tpu-accelerator",
        "cloud.google.com/gke-tpu-topology",
    }
    assert groups["tpu-v5e"]["numOfHosts"] == 1
    for group in groups.values():
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_one_image_version_everywhere(objects):
    images = {where: c["image"] for where, c in containers(objects).items()}
    ours = {where: image for where, image in images.items() if image.startswith("nas-service")}
    assert {image.split(":")[1] for image in ours.values()} == {"0.1.0"}
    assert ours["nas-api/api"] == ours["nas-api/runner"] == ours["nas-migrate/migrate"]
    assert ours["nas-ray/head/ray-head"] == ours["nas-ray/cpu/ray-worker"] == ours["nas-api/api"]
    assert ours["nas-ray/gpu/ray-worker"].startswith("nas-service-cuda:")
    assert ours["nas-ray/tpu-v5e/ray-worker"].startswith("nas-service-tpu:")
    assert set(images.values()) - set(ours.values()) == {"postgres:17"}
