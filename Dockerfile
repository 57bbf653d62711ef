# One image for every part of the cluster: CAS nodes (`cas serve`) and the lab's helpers
# (`cas lab-tls`, `cas lab-seed`, `cas lab-dns`, `cas lab-radicale`, `cas legacy-server`).
# The entry point is `cas`; the command picks the part. No secrets are baked in: certificates,
# keys, passwords and the cluster secret come from files mounted at run time (compose volumes,
# Kubernetes Secrets). See docs/lab.md and docs/deploy-kubernetes.md.
#
#   docker build -t cas:dev .
#   docker run --rm cas:dev --help

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with the project and its `lab` extra (Radicale) -----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
# Metadata first, so that a code change does not redo the dependency layer.
COPY pyproject.toml README.md ./
RUN mkdir -p cas sitemap caslab && touch cas/__init__.py sitemap/__init__.py caslab/__init__.py \
 && /opt/venv/bin/pip install ".[lab]" \
 && /opt/venv/bin/pip uninstall -y cas-availability
COPY cas ./cas
COPY sitemap ./sitemap
COPY caslab ./caslab
RUN rm -rf ./build ./*.egg-info \
 && /opt/venv/bin/pip install --no-deps ".[lab]" \
 && /opt/venv/bin/cas --version

# --- run: the virtualenv on a clean slim base, as an unprivileged user ----------------------------
FROM ${PYTHON_IMAGE} AS run
LABEL org.opencontainers.image.title="cas" \
      org.opencontainers.image.description="Multi-site availability (free/busy) proxy node and lab parts" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# uid/gid 10001: not root, not a uid the base image uses; Kubernetes `runAsNonRoot` needs a number.
RUN groupadd --system --gid 10001 cas \
 && useradd --system --uid 10001 --gid cas --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin cas \
 && mkdir -p /etc/cas /var/lib/cas/lab /var/lib/cas/radicale /var/lib/cas/legacy \
 && chown -R cas:cas /var/lib/cas
COPY --from=build /opt/venv /opt/venv
# /var/lib/cas/* exist (owned by cas) so that named volumes mounted there start writable by uid 10001.
WORKDIR /var/lib/cas
USER 10001:10001
EXPOSE 8443
# Liveness of a node over HTTPS on loopback (the certificate is not checked: the probe only asks
# whether this process answers). Other parts override it (compose.yaml) or disable it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, ssl, urllib.request as r; c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE; r.urlopen(os.environ.get('CAS_HEALTHCHECK_URL', 'https://127.0.0.1:8443/healthz'), timeout=2, context=c)"]
ENTRYPOINT ["cas"]
CMD ["serve", "--config", "/etc/cas/sitemap.yaml", "--host", "0.0.0.0", "--port", "8443", \
     "--tls-cert", "/etc/cas/tls/tls.crt", "--tls-key", "/etc/cas/tls/tls.key"]
