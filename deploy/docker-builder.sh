# shellcheck shell=bash
# Sourced by deploy/images.sh and deploy/airgap-infra.sh: picks the Docker client and the
# builder. BuildKit is used when the client has it (buildx, or a client ≤ 22 with BuildKit
# built in, such as Debian's docker.io 20.10). A client ≥ 23 without buildx refuses
# DOCKER_BUILDKIT=1 ("the buildx component is missing"): then Debian's /usr/bin/docker is
# used when it is an older client, and otherwise the classic builder. The Dockerfiles need
# neither heredocs nor a frontend pull, so both builders work.
# In: DOCKER (a client on PATH or a path), say(). Out: DOCKER, DOCKER_BUILDKIT (exported).
docker_major() { "$1" version -f '{{.Client.Version}}' 2>/dev/null | sed 's/[^0-9].*//'; }
DOCKER_BUILDKIT=1
if ! "$DOCKER" buildx version >/dev/null 2>&1 && [ "$(docker_major "$DOCKER")" -ge 23 ] 2>/dev/null; then
  if [ -x /usr/bin/docker ] && [ "$(command -v "$DOCKER")" != /usr/bin/docker ] \
    && [ "$(docker_major /usr/bin/docker)" -lt 23 ] 2>/dev/null; then
    DOCKER=/usr/bin/docker
    say "client without buildx; using $DOCKER (BuildKit built in)"
  else
    DOCKER_BUILDKIT=0
    say "client without buildx: classic builder"
  fi
fi
export DOCKER DOCKER_BUILDKIT
