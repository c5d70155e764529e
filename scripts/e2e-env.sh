# Sourced: starts the runner engine of the end-to-end tests (a lease for the
# sourcing script's process; scripts/runner-engine.sh says more) and builds
# the service and job images on it with the binary $DIND_SUPERVISOR_BIN,
# then exports what integration/tests/e2e.rs reads: DIND_E2E_DOCKER_HOST,
# DIND_E2E_SERVICE_IMAGE, DIND_E2E_JOB_IMAGE. The caller stops the engine
# (`bash scripts/runner-engine.sh stop`) on its way out. With E2E_TAG set,
# the images are tagged dind-supervisor:$E2E_TAG and
# dind-supervisor-job:$E2E_TAG, so a long run keeps its own binary while
# another run on the same engine builds the default tags.
bash scripts/runner-engine.sh start
DIND_E2E_DOCKER_HOST="$(eval "$(bash scripts/runner-engine.sh env)" && echo "$DOCKER_HOST")"
# Without a registry, build.sh creates the Debian base with debootstrap once
# (about 95 s) and caches it.
if [ -n "${E2E_TAG:-}" ]; then
  DIND_E2E_SERVICE_IMAGE="$(bash images/build.sh debian -t "dind-supervisor:$E2E_TAG" \
    --host "$DIND_E2E_DOCKER_HOST" --binary "$DIND_SUPERVISOR_BIN")"
  DIND_E2E_JOB_IMAGE="$(bash images/build.sh job -t "dind-supervisor-job:$E2E_TAG" \
    --host "$DIND_E2E_DOCKER_HOST")"
else
  e2e_images="$(bash images/build.sh debian job --host "$DIND_E2E_DOCKER_HOST" --binary "$DIND_SUPERVISOR_BIN")"
  DIND_E2E_SERVICE_IMAGE="$(sed -n 1p <<<"$e2e_images")"
  DIND_E2E_JOB_IMAGE="$(sed -n 2p <<<"$e2e_images")"
fi
export DIND_E2E_DOCKER_HOST DIND_E2E_SERVICE_IMAGE DIND_E2E_JOB_IMAGE
