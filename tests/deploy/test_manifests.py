"""deploy/: schema-valid for every Kubernetes minor the README claims, yamllint-clean, least privilege."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent import __version__
from agent.collect.cni import DEFAULT_CONF_DIR
from agent.collect.veth_peers import NAMED_NETNS_DIRS
from tests.deploy.manifests import (
    DAEMONSET,
    DEPLOY,
    PROM,
    YAMLLINT_CONFIG,
    agent_container,
    claimed_kubernetes_minors,
    documents,
    kind,
)
from tests.testbed import REPO, require

VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
POD_SPEC = kind(DAEMONSET, "DaemonSet")["spec"]["template"]["spec"]


def test_readme_claims_at_least_the_bundled_range() -> None:
    minors = claimed_kubernetes_minors()
    assert {"1.29", "1.35"} <= set(minors)


SECURE = DEPLOY / "secure"


@pytest.mark.parametrize("minor", claimed_kubernetes_minors())
def test_manifests_validate_strictly_against_kubernetes(minor: str) -> None:
    require(VALIDATE.exists(), "needs kubernetes-validate (pip install -e '.[test]')")
    # deploy/*.yaml and the secure variant's core objects (its PodMonitor is a CRD: no schema here)
    files = sorted(str(p) for p in [*DEPLOY.glob("*.yaml"), SECURE / "rbac.yaml", SECURE / "daemonset.yaml"])
    res = subprocess.run([str(VALIDATE), "--strict", "-k", f"{minor}.0", *files],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    # every object was checked against a schema (an unknown kind only warns)
    passed = res.stdout.count(" passed for resource ")
    assert passed == sum(len(documents(Path(f))) for f in files), res.stdout + res.stderr


def test_deploy_yaml_passes_yamllint() -> None:
    require(shutil.which("yamllint") is not None, "needs yamllint")
    res = subprocess.run(["yamllint", "--strict", "-c", str(YAMLLINT_CONFIG), str(DEPLOY)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_kubectl_apply_dir_installs_namespace_rbac_and_daemonset() -> None:
    # `kubectl apply -f deploy/` reads deploy/*.yaml (not subdirectories)
    kinds = [d["kind"] for f in sorted(DEPLOY.glob("*.y*ml")) for d in documents(f)]
    assert sorted(kinds) == sorted(["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                                    "RoleBinding", "DaemonSet"])


def test_clusterrole_only_lists_and_watches_services_endpointslices_nodes_pods() -> None:
    granted = {(group, res, verb) for rule in kind(DAEMONSET, "ClusterRole")["rules"]
               for group in rule["apiGroups"] for res in rule["resources"] for verb in rule["verbs"]}
    wanted = {(g, r, v) for g, r in [("", "services"), ("", "nodes"), ("", "pods"),
                                     ("discovery.k8s.io", "endpointslices")] for v in ("list", "watch")}
    assert granted == wanted  # informers list and watch; nothing is fetched by name


def test_role_gets_only_the_kube_proxy_configmap_in_kube_system() -> None:
    from agent.collect.kubeproxy_configmap import NAME, NAMESPACE

    role, binding = kind(DAEMONSET, "Role"), kind(DAEMONSET, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [NAME],
                              "verbs": ["get"]}]
    sa = kind(DAEMONSET, "ServiceAccount")["metadata"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}]


def test_every_rbac_rule_has_a_comment_saying_why() -> None:
    for path in (DAEMONSET, SECURE / "rbac.yaml"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("kind: ") and line.split()[1] in ("ClusterRole", "Role"):
                above = lines[max(0, i - 4):i] + lines[i:i + 12]
                assert any(ln.strip().startswith("#") for ln in above), f"{path.name}:{i + 1} has no why"


def test_binding_gives_the_role_to_the_daemonsets_service_account() -> None:
    binding = kind(DAEMONSET, "ClusterRoleBinding")
    sa = kind(DAEMONSET, "ServiceAccount")["metadata"]
    assert binding["roleRef"]["name"] == kind(DAEMONSET, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}]
    assert POD_SPEC["serviceAccountName"] == sa["name"]


def test_container_is_least_privilege() -> None:
    sc = agent_container()["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sorted(sc["capabilities"]["add"]) == ["NET_ADMIN", "NET_RAW"]  # no SYS_PTRACE, no DAC_*
    assert POD_SPEC["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # the runtime's default AppArmor profile: nothing the agent reads needs more
    assert "annotations" not in kind(DAEMONSET, "DaemonSet")["spec"]["template"]["metadata"]
    assert "hostIPC" not in POD_SPEC


def test_each_added_capability_says_what_it_is_for() -> None:
    lines = DAEMONSET.read_text().splitlines()
    for cap in agent_container()["securityContext"]["capabilities"]["add"]:
        i = lines.index(f"                - {cap}")
        assert lines[i - 1].strip().startswith("#"), f"{cap} has no comment above it"


def test_host_mounts_are_all_read_only_and_narrow() -> None:
    host_volumes = {v["name"]: v["hostPath"]["path"] for v in POD_SPEC["volumes"] if "hostPath" in v}
    mounts = {m["name"]: m for m in agent_container()["volumeMounts"]}
    assert all(mounts[n].get("readOnly") for n in host_volumes)
    # the files and directories the collectors read; never /, /proc/<pid>/root, /var/lib/kubelet or /usr
    assert sorted(host_volumes.values()) == ["/etc/cni/net.d", "/lib/modules", "/run/netns",
                                             "/var/lib/kubelet/config.yaml"]
    lines = DAEMONSET.read_text().splitlines()
    for m in mounts.values():
        i = lines.index(f"            - name: {m['name']}")
        assert lines[i - 1].strip().startswith("#") or m["name"] == "tmp", f"mount {m['name']} says not why"


def test_host_paths_the_collectors_read_are_mounted_under_the_host_root() -> None:
    host_volumes = {v["name"]: v["hostPath"]["path"] for v in POD_SPEC["volumes"] if "hostPath" in v}
    mounted = {m["mountPath"].removeprefix("/host"): host_volumes[m["name"]] for m in agent_container()["volumeMounts"]
               if m["mountPath"].startswith("/host/")}
    assert all(inside == host for inside, host in mounted.items())  # /host/X is the node's X
    env = {e["name"]: e.get("value") for e in agent_container()["env"]}
    assert env["SVCDOCTOR_HOST_ROOT"] == "/host"
    needed = [DEFAULT_CONF_DIR, NAMED_NETNS_DIRS[0], "/lib/modules/6.1.0/modules.builtin",
              "/var/lib/kubelet/config.yaml"]
    for path in needed:
        assert any(path == m or path.startswith(m + "/") for m in mounted), f"{path} is not mounted"


def test_pod_shares_the_nodes_network_and_pids_and_runs_everywhere() -> None:
    assert POD_SPEC["hostNetwork"] is True
    assert POD_SPEC["hostPID"] is True
    assert POD_SPEC["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert POD_SPEC["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in POD_SPEC["tolerations"]  # no key, no effect: every taint
    strategy = kind(DAEMONSET, "DaemonSet")["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"]


def test_node_name_comes_from_the_downward_api() -> None:
    env = {e["name"]: e for e in agent_container()["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_port_is_9100_and_env_and_container_port_agree() -> None:
    container = agent_container()
    env = {e["name"]: e.get("value") for e in container["env"]}
    (port,) = container["ports"]
    assert env["SVCDOCTOR_PORT"] == str(port["containerPort"]) == "9100"
    # probes and the PodMonitor use the port's name, so the number is set in one place
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    (endpoint,) = kind(PROM / "podmonitor.yaml", "PodMonitor")["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == port["name"]


def test_memory_is_limited_and_requested() -> None:
    res = agent_container()["resources"]
    assert res["limits"]["memory"] and res["requests"]["memory"] and res["requests"]["cpu"]


def test_image_tag_is_the_package_version() -> None:
    assert agent_container()["image"].endswith(f":{__version__}")


def test_podmonitor_selects_the_daemonsets_pods_and_labels_the_node() -> None:
    pm = kind(PROM / "podmonitor.yaml", "PodMonitor")
    ds = kind(DAEMONSET, "DaemonSet")
    assert pm["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert pm["spec"]["namespaceSelector"]["matchNames"] == [ds["metadata"]["namespace"]]
    # job="svcdoctor", which the rules select
    assert ds["spec"]["template"]["metadata"]["labels"][pm["spec"]["jobLabel"]] == "svcdoctor"
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"} in endpoint["relabelings"]


def test_prometheusrule_is_generated_from_the_plain_rules() -> None:
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_deploy.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_every_env_var_the_daemonset_sets_is_read_by_the_agent() -> None:
    cli = (REPO / "agent" / "cli.py").read_text()
    for env in agent_container()["env"]:
        assert f'os.environ.get("{env["name"]}"' in cli, env["name"]


def test_secure_daemonset_is_the_daemonset_plus_tls_and_auth() -> None:
    base, secure = kind(DAEMONSET, "DaemonSet"), kind(SECURE / "daemonset.yaml", "DaemonSet")
    (container,) = secure["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    # the flags' env names (agent/serve.py: --tls-cert-file, --tls-key-file, --auth=kubernetes)
    assert env["SVCDOCTOR_AUTH"] == "kubernetes"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    assert env["SVCDOCTOR_TLS_CERT_FILE"] == mount["mountPath"] + "/tls.crt" and mount["readOnly"]
    assert env["SVCDOCTOR_TLS_KEY_FILE"] == mount["mountPath"] + "/tls.key"
    assert container["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    # take the additions away: the base DaemonSet, field for field
    container["env"] = [e for e in container["env"] if e["name"] not in
                        ("SVCDOCTOR_TLS_CERT_FILE", "SVCDOCTOR_TLS_KEY_FILE", "SVCDOCTOR_AUTH")]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "tls"]
    for probe in ("livenessProbe", "readinessProbe"):
        del container[probe]["httpGet"]["scheme"]
    spec = secure["spec"]["template"]["spec"]
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "tls"]
    assert secure == base


def test_secure_rbac_delegates_auth_and_lets_prometheus_read_two_urls() -> None:
    roles = {d["metadata"]["name"]: d for d in documents(SECURE / "rbac.yaml") if d["kind"] == "ClusterRole"}
    assert roles["svcdoctor-auth-delegator"]["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}]
    assert roles["svcdoctor-reader"]["rules"] == [{"nonResourceURLs": ["/metrics", "/findings"], "verbs": ["get"]}]
    pm = kind(SECURE / "podmonitor.yaml", "PodMonitor")
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    assert endpoint["scheme"] == "https" and endpoint["authorization"]["type"] == "Bearer"
    secret = kind(SECURE / "podmonitor.yaml", "Secret")
    assert endpoint["authorization"]["credentials"]["name"] == secret["metadata"]["name"]
    assert secret["metadata"]["namespace"] == pm["metadata"]["namespace"]
    binding = next(d for d in documents(SECURE / "rbac.yaml")
                   if d["kind"] == "ClusterRoleBinding" and d["roleRef"]["name"] == "svcdoctor-reader")
    (subject,) = binding["subjects"]
    assert (subject["name"], subject["namespace"]) == (
        secret["metadata"]["annotations"]["kubernetes.io/service-account.name"], secret["metadata"]["namespace"])
