"""The deployment files in docker/, checked without a Docker daemon or a cloud account.

References, not the files' own values: the Ray version comes from pyproject.toml's
`ray[...]==X` pin, the cluster launcher config is validated against the JSON schema that ships
inside the installed ray package, torch/flash-attn versions against pyproject.toml and setup.sh,
and the modules that the files tell users to run must exist in the installed project.
The one test that builds images runs only where `docker info` succeeds.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile", "gpu": DOCKER / "Dockerfile.gpu"}
CLUSTER_YAML = DOCKER / "cluster.yaml"
RAYJOB_YAML = DOCKER / "rayjob.yaml"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# --------------------------------------------------------------------------- references


def _requirement(name: str, extra: str | None = None) -> Requirement:
    deps = (
        PYPROJECT["project"]["dependencies"] if extra is None else PYPROJECT["project"]["optional-dependencies"][extra]
    )
    for line in deps:
        req = Requirement(line)
        if req.name == name:
            return req
    raise AssertionError(f"pyproject.toml lists no {name!r} requirement (extra={extra!r})")


def _pinned_ray_version() -> str:
    pins = [s.version for s in _requirement("ray").specifier if s.operator == "=="]
    assert len(pins) == 1, "pyproject.toml must pin ray exactly (ray[...]==X): the images depend on it"
    return pins[0]


RAY_VERSION = _pinned_ray_version()


def _setup_sh_torch_version() -> str:
    match = re.search(r"^TORCH_VERSION=([\w.+-]+)\s*$", (ROOT / "setup.sh").read_text(), re.M)
    assert match, "setup.sh sets no TORCH_VERSION"
    return match.group(1)


# --------------------------------------------------------------------------- parsing helpers


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, also inside a continuation
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, f"{path.name} ends inside a line continuation"
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert starts, "no FROM instruction"
    return instructions[starts[-1] :]


def from_image(instructions: list[tuple[str, str]]) -> str:
    args = final_stage(instructions)[0][1].split()
    args = [a for a in args if not a.startswith("--")]  # e.g. --platform=...
    return args[0]


def arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for keyword, args in instructions:
        if keyword == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name.strip()] = shlex.split(value)[0] if value.strip() else ""
    return defaults


def env_values(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for keyword, args in instructions:
        if keyword != "ENV":
            continue
        words = shlex.split(args)
        if words and "=" not in words[0]:  # legacy form: ENV KEY value
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, _, value = word.partition("=")
            env[key] = value
    return env


def command_words(args: str) -> list[str]:
    """CMD/ENTRYPOINT arguments in exec (JSON) or shell form, as a list of words."""
    return json.loads(args) if args.lstrip().startswith("[") else shlex.split(args)


def split_image(ref: str) -> tuple[str, str]:
    """('repository', 'tag') of an image reference; a missing tag is 'latest'."""
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repo, _, tag = ref.rpartition(":")
        return repo, tag
    return ref, "latest"


def load_yaml_documents(path: Path) -> list:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path.name} holds no YAML document"
    return docs


def rayjob() -> dict:
    docs = [d for d in load_yaml_documents(RAYJOB_YAML) if d.get("kind") == "RayJob"]
    assert len(docs) == 1, "rayjob.yaml must hold exactly one RayJob"
    return docs[0]


def rayjob_pod_templates() -> dict[str, dict]:
    spec = rayjob()["spec"]
    cluster = spec["rayClusterSpec"]
    templates = {"head": cluster["headGroupSpec"]["template"]}
    for group in cluster.get("workerGroupSpecs", []):
        templates[f"worker:{group['groupName']}"] = group["template"]
    if "submitterPodTemplate" in spec:
        templates["submitter"] = spec["submitterPodTemplate"]
    return templates


def ray_start_head_flags(commands: list[str]) -> dict[str, str]:
    """--flag=value / --flag value pairs of the `ray start --head` command among commands."""
    for command in commands:
        for part in command.split(";"):
            words = shlex.split(part)
            if words[:2] == ["ray", "start"] and "--head" in words:
                flags, i = {}, 2
                while i < len(words):
                    word = words[i]
                    if word.startswith("--") and "=" in word:
                        key, _, value = word.partition("=")
                        flags[key] = value
                    elif word.startswith("--") and i + 1 < len(words) and not words[i + 1].startswith("--"):
                        flags[word] = words[i + 1]
                        i += 1
                    elif word.startswith("--"):
                        flags[word] = ""
                    i += 1
                return flags
    raise AssertionError("no `ray start --head` command")


def all_image_refs() -> dict[str, str]:
    """Where each image reference appears -> the reference, across every deployment file."""
    refs = {f"{path.name} FROM": from_image(dockerfile_instructions(path)) for path in DOCKERFILES.values()}
    cluster = yaml.safe_load(CLUSTER_YAML.read_text())
    for key in ("image", "head_image", "worker_image"):
        if key in cluster.get("docker", {}):
            refs[f"cluster.yaml docker.{key}"] = cluster["docker"][key]
    for name, node_type in cluster.get("available_node_types", {}).items():
        if "worker_image" in node_type.get("docker", {}):
            refs[f"cluster.yaml {name}.docker.worker_image"] = node_type["docker"]["worker_image"]
    for pod, template in rayjob_pod_templates().items():
        for container in template["spec"]["containers"]:
            refs[f"rayjob.yaml {pod}/{container['name']}"] = container["image"]
    return refs


def project_image_refs() -> dict[str, str]:
    """The images built from docker/Dockerfile.gpu that the cluster files run."""
    return {where: ref for where, ref in all_image_refs().items() if "FROM" not in where}


PYTHON_M = re.compile(r"\bpython3?(?:\.\d+)?\s+-m\s+([A-Za-z_][\w.]*)")


def python_m_modules() -> list[str]:
    """Every `python -m MODULE` written in the deployment files, usage comments included."""
    modules = set()
    for path in [*DOCKERFILES.values(), CLUSTER_YAML, RAYJOB_YAML]:
        modules.update(PYTHON_M.findall(path.read_text()))
    modules.discard("pip")  # the installer, not a project entrypoint
    return sorted(modules)


SECRET_ASSIGNMENT = re.compile(
    r"""(?ix)
    \b[\w.-]*(api[_-]?key|secret|passw(or)?d|token|credential)[\w.-]*   # a secret-looking name
    \s*[:=]\s*                                                          # assigned
    (?!\s*$)(?![{\[]\s*$)["']?[^\s"'#]+                                  # a literal value
    """
)


def secret_assignments(text: str) -> list[str]:
    hits = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        if SECRET_ASSIGNMENT.search(stripped):
            hits.append(stripped)
    return hits


# --------------------------------------------------------------------------- the Ray pin


def test_ray_pin_is_an_exact_release():
    Version(RAY_VERSION)  # raises if not a version
    assert re.fullmatch(r"\d+\.\d+\.\d+", RAY_VERSION), RAY_VERSION


def test_every_image_tag_carries_the_pinned_ray_version():
    refs = all_image_refs()
    assert any("rayjob.yaml" in where for where in refs) and any("cluster.yaml" in where for where in refs)
    version = re.compile(rf"(?<![\d.]){re.escape(RAY_VERSION)}(?![\d])")
    wrong = {where: ref for where, ref in refs.items() if not version.search(split_image(ref)[1])}
    assert not wrong, f"image tags without Ray {RAY_VERSION} (pyproject.toml's pin): {wrong}"


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_builds_on_the_official_ray_image_of_the_pin(variant):
    repo, tag = split_image(from_image(dockerfile_instructions(DOCKERFILES[variant])))
    assert repo in ("rayproject/ray", "docker.io/rayproject/ray"), repo
    match = re.fullmatch(rf"{re.escape(RAY_VERSION)}-py3(\d+)-(cpu|gpu|cu\d+)", tag)
    assert match, f"{tag!r} is not {{ray version}}-py3XX-{{cpu|gpu|cuXXX}}"
    python = Version(f"3.{match.group(1)}")
    assert python in SpecifierSet(PYPROJECT["project"]["requires-python"]), python
    platform = match.group(2)
    assert (platform == "cpu") == (variant == "cpu"), f"{variant} image built on a {platform} base"


def test_cluster_files_run_the_gpu_image():
    refs = project_image_refs()
    assert refs
    assert len(set(refs.values())) == 1, f"cluster.yaml and rayjob.yaml should run one image: {refs}"
    _, gpu_base_tag = split_image(from_image(dockerfile_instructions(DOCKERFILES["gpu"])))
    platform = gpu_base_tag.rsplit("-", 1)[-1]  # e.g. cu130: the image is the one Dockerfile.gpu builds
    ref = next(iter(refs.values()))
    assert platform in split_image(ref)[1], f"{ref} does not name the {platform} build of Dockerfile.gpu"


# --------------------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_runs_as_non_root(variant):
    stage = final_stage(dockerfile_instructions(DOCKERFILES[variant]))
    users = [args.split()[0] for keyword, args in stage if keyword == "USER"]
    if not users:  # inherits the base image's user, which is `ray` for rayproject/ray
        assert split_image(from_image(stage))[0].endswith("rayproject/ray")
        return
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{variant} image ends as {users[-1]}"


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_defaults(variant):
    stage = final_stage(dockerfile_instructions(DOCKERFILES[variant]))
    assert env_values(stage).get("WANDB_MODE") == "offline"
    # The Ray cluster launcher and KubeRay run their own commands in the image: no ENTRYPOINT.
    assert not [args for keyword, args in stage if keyword == "ENTRYPOINT"]
    cmds = [command_words(args) for keyword, args in stage if keyword == "CMD"]
    assert cmds, "no default CMD"
    assert cmds[-1][:3] == ["python", "-m", "study.run"], cmds[-1]
    assert cmds[-1][3:] in (["--help"], ["--list"]), cmds[-1]


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_torch_is_setup_sh_torch(variant):
    instructions = dockerfile_instructions(DOCKERFILES[variant])
    torch = arg_defaults(instructions).get("TORCH_VERSION")
    assert torch == _setup_sh_torch_version(), "the images and setup.sh should install one torch"
    assert Version(torch) in _requirement("torch").specifier
    installs = " ".join(args for keyword, args in instructions if keyword == "RUN" and "torch==" in args)
    if variant == "cpu":
        assert "+cpu" in installs and "download.pytorch.org/whl/cpu" in installs
    else:
        assert "+cpu" not in installs and "/whl/cpu" not in installs


def test_gpu_dockerfile_installs_flash_attn_within_the_gpu_extra():
    instructions = dockerfile_instructions(DOCKERFILES["gpu"])
    version = arg_defaults(instructions).get("FLASH_ATTN_VERSION")
    assert version, "Dockerfile.gpu should pin flash-attn in ARG FLASH_ATTN_VERSION"
    assert Version(version) in _requirement("flash-attn", extra="gpu").specifier
    assert any("flash-attn==${FLASH_ATTN_VERSION}" in args for keyword, args in instructions if keyword == "RUN")


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_bakes_in_no_secret(variant):
    instructions = dockerfile_instructions(DOCKERFILES[variant])
    names = set(env_values(instructions)) | set(arg_defaults(instructions))
    names |= {args.split("=")[0].split()[0] for keyword, args in instructions if keyword == "ARG"}
    secretish = re.compile(r"(?i)api[_-]?key|secret|passw(or)?d|token|credential")
    assert not [n for n in names if secretish.search(n)], names
    sources = [args for keyword, args in instructions if keyword in ("COPY", "ADD")]
    forbidden = re.compile(r"(^|[\s/])(\.netrc|\.env\b|\.aws|\.ssh|[\w.-]*\.(key|pem))")
    assert not [s for s in sources if forbidden.search(s)], sources


def test_dockerignore_keeps_results_vcs_caches_and_secrets_out():
    entries = {
        line.strip().removeprefix("**/").rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in ("results", ".git", "wandb", "__pycache__", ".pytest_cache", ".env", "*.key"):
        assert needed in entries, f".dockerignore lacks {needed}"


# --------------------------------------------------------------------------- YAML files


@pytest.mark.parametrize("path", sorted(DOCKER.glob("*.yaml")), ids=lambda p: p.name)
def test_yaml_parses(path):
    for doc in load_yaml_documents(path):
        assert isinstance(doc, dict)


def test_yaml_files_present():
    assert CLUSTER_YAML.exists() and RAYJOB_YAML.exists()


def test_cluster_yaml_validates_against_rays_schema():
    spec = importlib.util.find_spec("ray")  # the installed ray, located without importing it
    schema_path = Path(spec.origin).parent / "autoscaler" / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    jsonschema.validate(config, schema)
    # The launcher's own check too (`ray up` runs it): fills the AWS defaults, then validates
    # the result and the cross-field rules (head_node_type among available_node_types, ...).
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def test_cluster_yaml_is_an_aws_cluster_with_gpu_workers():
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    for key in ("cluster_name", "max_workers", "provider", "auth", "available_node_types", "head_node_type"):
        assert key in config, key
    assert config["provider"]["type"] == "aws" and config["provider"]["region"]
    assert config["auth"]["ssh_user"]
    assert config["docker"]["image"] and config["docker"]["container_name"]
    node_types = config["available_node_types"]
    assert config["head_node_type"] in node_types
    workers = {name: t for name, t in node_types.items() if name != config["head_node_type"]}
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers.values())
    assert all(t.get("max_workers", 0) <= config["max_workers"] for t in workers.values())
    assert all(t["node_config"].get("InstanceType") for t in node_types.values())


def test_cluster_dashboard_listens_on_localhost_only():
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    flags = ray_start_head_flags(config["head_start_ray_commands"])
    assert flags.get("--dashboard-host") == "127.0.0.1", flags
    assert "--autoscaling-config" in flags  # the launcher's head needs it to autoscale
    commands = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert "0.0.0.0" not in commands


def test_rayjob_has_the_required_fields():
    job = rayjob()
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", job["metadata"]["name"])
    spec = job["spec"]
    assert spec["entrypoint"].strip()
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == RAY_VERSION
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert head["template"]["spec"]["containers"][0]["image"]
    groups = cluster["workerGroupSpecs"]
    assert groups
    for group in groups:
        # groupName, minReplicas, maxReplicas and template: required by KubeRay's v1 CRD.
        for key in ("groupName", "replicas", "minReplicas", "maxReplicas", "template"):
            assert key in group, f"worker group lacks {key}"
        assert isinstance(group["rayStartParams"], dict)
        assert group["template"]["spec"]["containers"][0]["image"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    # rayStartParams values reach the `ray start` command line: they must be strings.
    for params in [head["rayStartParams"], *(g["rayStartParams"] for g in groups)]:
        assert all(isinstance(v, str) for v in params.values()), params


def test_rayjob_runs_the_main_study_on_gpus_into_a_volume():
    job = rayjob()
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:4] == ["python", "-m", "study.run", "nanohead_grid"], words
    for flag, value in (("--address", "auto"), ("--profile", "gpu"), ("--output", "/results")):
        assert words[words.index(flag) + 1] == value, flag
    for group in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1
    claims = {
        d["metadata"]["name"]: d for d in load_yaml_documents(RAYJOB_YAML) if d.get("kind") == "PersistentVolumeClaim"
    }
    for pod, template in rayjob_pod_templates().items():
        if pod == "submitter":
            continue  # only submits; writes nothing
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        container = template["spec"]["containers"][0]
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        assert all(name in volumes for name in mounts.values()), f"{pod}: a mount names no volume"
        assert "/results" in mounts, f"{pod} does not mount /results"
        claim = volumes[mounts["/results"]]["persistentVolumeClaim"]["claimName"]
        assert claim in claims, f"{pod}: claim {claim} is not defined in rayjob.yaml"
        # Trials on every worker pod and the driver on the head write there at once.
        assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"]


def test_rayjob_cleans_up_after_itself():
    spec = rayjob()["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0


def test_rayjob_pods_run_as_non_root():
    for pod, template in rayjob_pod_templates().items():
        pod_context = template["spec"].get("securityContext", {})
        for container in template["spec"]["containers"]:
            context = {**pod_context, **container.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True, f"{pod}/{container['name']}"
            assert context.get("runAsUser", 1000) != 0, f"{pod}/{container['name']}"
            assert context.get("privileged", False) is False, f"{pod}/{container['name']}"


def test_rayjob_dashboard_is_reachable_in_the_cluster_only():
    head = rayjob()["spec"]["rayClusterSpec"]["headGroupSpec"]
    # KubeRay's submitter pod and operator reach the Jobs API over the pod network: inside the
    # pod the dashboard must listen on all interfaces (127.0.0.1 would break submission)...
    assert head["rayStartParams"].get("dashboard-host") == "0.0.0.0"
    # ...and it stays private: a ClusterIP Service (the default) and no Ingress.
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert not head.get("enableIngress", False)


# --------------------------------------------------------------------------- secrets


def test_secret_pattern_catches_literal_secrets():
    # The detector itself, against examples written by hand.
    assert secret_assignments("ENV WANDB_API_KEY=0123abcd")
    assert secret_assignments("    password: hunter2")
    assert secret_assignments('aws_secret_access_key = "AKIA..."')
    assert not secret_assignments("# WANDB_API_KEY=... goes in a Secret")
    assert not secret_assignments("  secretKeyRef:")
    assert not secret_assignments("*secret*")


@pytest.mark.parametrize(
    "path",
    [*DOCKERFILES.values(), CLUSTER_YAML, RAYJOB_YAML, DOCKERIGNORE],
    ids=lambda p: p.name,
)
def test_no_literal_secrets(path):
    assert not secret_assignments(path.read_text()), f"{path.name} assigns a secret-looking value"


def test_rayjob_env_secrets_come_from_secret_refs():
    secretish = re.compile(r"(?i)api[_-]?key|secret|passw(or)?d|token|credential")
    for pod, template in rayjob_pod_templates().items():
        for container in template["spec"]["containers"]:
            for var in container.get("env", []):
                if secretish.search(var["name"]):
                    assert "value" not in var, f"{pod}: {var['name']} has a literal value"


# --------------------------------------------------------------------------- entrypoints


def test_deployment_files_name_the_study_runner():
    assert "study.run" in python_m_modules()


@pytest.mark.parametrize("module", python_m_modules())
def test_python_m_modules_exist(module):
    # study.run and study.submit are the CLIs the images, the cluster and the RayJob invoke.
    assert importlib.util.find_spec(module) is not None, f"`python -m {module}`: no such module"


# --------------------------------------------------------------------------- real builds


def _docker_daemon() -> str | None:
    """None when a daemon answers, else why not."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out"
    if result.returncode != 0:
        return "no Docker daemon (`docker info` failed: " + (result.stderr.strip().splitlines() or ["?"])[-1] + ")"
    return None


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_docker_build_and_default_command(variant):
    why_not = _docker_daemon()
    if why_not:
        pytest.skip(f"docker build test needs a Docker daemon: {why_not}")
    if variant == "gpu" and os.environ.get("NANOSTUDIES_DOCKER_BUILD_GPU") != "1":
        pytest.skip("GPU image build (CUDA base image, flash-attn) is long: set NANOSTUDIES_DOCKER_BUILD_GPU=1")
    tag = f"nanostudies-test:{variant}"
    subprocess.run(["docker", "build", "-f", str(DOCKERFILES[variant]), "-t", tag, str(ROOT)], check=True)
    uid = subprocess.run(["docker", "run", "--rm", tag, "id", "-u"], check=True, capture_output=True, text=True)
    assert uid.stdout.strip() not in ("", "0")
    subprocess.run(["docker", "run", "--rm", tag], check=True, capture_output=True, timeout=300)
    version = subprocess.run(
        ["docker", "run", "--rm", tag, "python", "-c", "import ray; print(ray.__version__)"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert version.stdout.strip() == RAY_VERSION
