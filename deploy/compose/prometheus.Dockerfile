# Prometheus for the local stack (docker-compose.yml), from Debian's package: nothing is pulled
# from a container registry. The scrape configuration and the alert rules are mounted by compose
# (deploy/compose/prometheus.yml, deploy/prometheus/), so editing them needs no rebuild.
FROM debian:bookworm-slim
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian's prometheus (2.42 in bookworm) and curl for the health check; versions follow the
# bookworm point release.
# The prometheus user is made first with a fixed system uid (the package keeps an existing
# system user), so USER can be numeric.
# hadolint ignore=DL3008
RUN groupadd -r -g 901 prometheus \
 && useradd -l -r -u 901 -g prometheus -d /var/lib/prometheus -s /usr/sbin/nologin prometheus \
 && apt-get update \
 && apt-get install -y --no-install-recommends prometheus curl \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus \
 && chown prometheus:prometheus /prometheus \
 && prometheus --version
COPY prometheus.yml /etc/prometheus/prometheus.yml
USER 901:901
WORKDIR /prometheus
EXPOSE 9090
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=5 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9090/-/ready"]
ENTRYPOINT ["prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--web.listen-address=0.0.0.0:9090"]
