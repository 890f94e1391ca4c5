# svcdoctor's node agent image (deploy/daemonset.yaml runs it). Build: scripts/build-image.
#
# Debian bookworm, pinned: its iptables is 1.8.9, the version kube-proxy's own image ships. The agent
# reads the rules kube-proxy wrote, and an iptables-nft older or newer than the writer can mis-read
# them (match revisions and rule encodings it does not know), so reader and writer must agree.
# BASE is overridable only so an offline build can use a debootstrap'ed bookworm (same release).
ARG BASE=docker.io/library/debian:bookworm-20250317-slim

# --- build stage: pip and the venv tooling stay here --------------------------------------------------
FROM ${BASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv=3.11.2-1+b1 \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /src/
COPY agent /src/agent
# Set only when pip must trust a TLS-intercepting proxy's CA (scripts/build-image mounts the host's).
ARG PIP_CERT
RUN python3 -m venv /opt/svcdoctor \
 && /opt/svcdoctor/bin/pip install --no-cache-dir --disable-pip-version-check /src \
 && /opt/svcdoctor/bin/pip uninstall --yes --disable-pip-version-check pip setuptools

# --- final stage: Python, the read-only netfilter tools, the installed agent; no compiler, no pip ------
FROM ${BASE}
LABEL org.opencontainers.image.title="svcdoctor" \
      org.opencontainers.image.description="Node agent that tells, per node and per Service, why a Kubernetes Service does not answer"
# The commands the collectors run, read-only: ip(6)tables-legacy-save and ip(6)tables-nft-save
# (iptables 1.8.9), `nft -j list` (nftables) and `ipset save`. Links, conntrack and IPVS are read
# over netlink and /proc, so conntrack-tools and ipvsadm are not needed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3=3.11.2-1+b1 \
      iptables=1.8.9-2 \
      nftables=1.0.6-2+deb12u2 \
      ipset=7.17-1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/svcdoctor /opt/svcdoctor
ENV PATH=/opt/svcdoctor/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SVCDOCTOR_HOST_ROOT=/host
# No USER: the agent runs as root, on purpose, measured (tests/deploy/test_capabilities.py): reading
# netfilter needs CAP_NET_ADMIN (and CAP_NET_RAW for iptables-legacy-save), and Kubernetes gives
# capabilities to a root process only (a non-root one would need ambient capabilities, which a Pod
# cannot request; under no_new_privs file capabilities are ignored). The DaemonSet drops every other
# capability (no SYS_PTRACE, no DAC_*), forbids privilege escalation and mounts / read-only.
EXPOSE 9100
ENTRYPOINT ["svcdoctor", "serve"]
