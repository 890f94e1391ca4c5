"""`explain --all-nodes`: ask every node's agent for its view of one Service, through the API server's
proxy to the agent pods (`/api/v1/namespaces/NS/pods/POD:PORT/proxy/explain?service=...`), with the
caller's own credentials. Bounded: a timeout per agent, a few agents at a time, one page of agent pods."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from agent.collect.base import CollectError

AGENT_NAMESPACE = "svcdoctor"
AGENT_SELECTOR = "app.kubernetes.io/name=svcdoctor"
PORT_NAME = "metrics"  # the DaemonSet's containerPort name (deploy/daemonset.yaml)
DEFAULT_PORT = 9100
CONCURRENCY = 8
MAX_AGENTS = 5000


@dataclass(frozen=True)
class AgentPod:
    name: str
    node: str
    port: int


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def agent_pods(api_client: Any, namespace: str, selector: str, timeout_s: float) -> list[AgentPod]:
    from kubernetes import client

    core: Any = client.CoreV1Api(api_client)  # raw JSON (_preload_content=False), not the typed models
    try:
        resp = core.list_namespaced_pod(namespace, label_selector=selector, limit=MAX_AGENTS,
                                        _preload_content=False, _request_timeout=timeout_s)
        items = json.loads(resp.data).get("items") or []
    except Exception as exc:  # ApiException, urllib3 errors, bad JSON
        raise CollectError(f"cannot list the agent pods in {namespace} ({selector}): {_first_line(exc)}") from exc
    out = []
    for pod in items:
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        if status.get("phase") != "Running" or not spec.get("nodeName"):
            continue
        ports = [p for c in spec.get("containers") or [] for p in c.get("ports") or []]
        port = next((int(p["containerPort"]) for p in ports if p.get("name") == PORT_NAME), DEFAULT_PORT)
        out.append(AgentPod(pod["metadata"]["name"], spec["nodeName"], port))
    return sorted(out, key=lambda a: a.node)


def _get(api_client: Any, path: str, query: list[tuple[str, str]], timeout_s: float) -> tuple[int, bytes]:
    """GET through the client's configuration and auth, raw: (status, body). Generated clients before v32
    and after differ in how they expose this; both are used as their own ApiClient does."""
    headers = {"Accept": "application/json"}
    if hasattr(api_client, "param_serialize"):  # kubernetes >= 32
        method, url, hdrs, _, _ = api_client.param_serialize("GET", path, query_params=query, header_params=headers,
                                                             auth_settings=["BearerToken"])
        resp = api_client.call_api(method, url, header_params=hdrs, _request_timeout=timeout_s)
        resp.read()
        return int(resp.status), bytes(resp.data)
    from kubernetes.client.exceptions import ApiException

    try:
        resp = api_client.call_api(path, "GET", query_params=query, header_params=headers,
                                   auth_settings=["BearerToken"], _preload_content=False,
                                   _request_timeout=timeout_s)
    except ApiException as exc:
        return int(exc.status or 0), (exc.body or "").encode() if isinstance(exc.body, str) else exc.body or b""
    raw = resp[0] if isinstance(resp, tuple) else resp
    return int(raw.status), bytes(raw.data)


def ask_agent(api_client: Any, namespace: str, pod: AgentPod, service: str, timeout_s: float
              ) -> tuple[dict[str, Any] | None, str | None]:
    """(the agent's explain document, None) or (None, why it could not be had)."""
    path = f"/api/v1/namespaces/{namespace}/pods/{pod.name}:{pod.port}/proxy/explain"
    try:
        status, body = _get(api_client, path, [("service", service)], timeout_s)
    except Exception as exc:  # urllib3 errors, OSError
        return None, _first_line(exc)
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if status >= 400:
        detail = (doc.get("error") or doc.get("message")) if isinstance(doc, dict) else None
        return None, f"HTTP {status}: {detail or body[:200].decode('utf-8', 'replace')}"
    if not isinstance(doc, dict) or "steps" not in doc:
        return None, "the agent's answer is not an explain document"
    return doc, None


def ask_all(api_client: Any, service: str, *, namespace: str = AGENT_NAMESPACE, selector: str = AGENT_SELECTOR,
            timeout_s: float = 30.0) -> list[dict[str, Any]]:
    pods = agent_pods(api_client, namespace, selector, timeout_s)
    if not pods:
        raise CollectError(f"no running agent pod in {namespace} matches {selector}")

    def one(pod: AgentPod) -> dict[str, Any]:
        doc, err = ask_agent(api_client, namespace, pod, service, timeout_s)
        return {"node": pod.node, "pod": pod.name, "explanation": doc, "error": err}

    with ThreadPoolExecutor(max_workers=min(CONCURRENCY, len(pods)), thread_name_prefix="ask-agent") as pool:
        return list(pool.map(one, pods))
