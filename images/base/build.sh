#!/usr/bin/env bash
# images/base/build.sh [--rebuild]: builds corral/base:bookworm and imports it into the engine.
#
# A Debian bookworm rootfs made by mmdebstrap (minbase plus what an agent's tools need), with
# user `agent` 1000:1000, /workspace owned by it, /tmp 1777, and system git defaults from
# rootfs/. It goes into the engine through the Engine API (POST /images/create?fromSrc=-),
# since no registry is reachable. An existing image is reused unless REBUILD=1 or --rebuild.
#
# Environment: CORRAL_ENGINE (unix:///… or tcp://… with CORRAL_TLS_CA/CERT/KEY),
# REBUILD=1, CORRAL_DEBIAN_MIRROR (default: mmdebstrap's, deb.debian.org),
# CORRAL_IMAGE_BUILD_DIR (where the tar is kept; default .build/images, outside git).
set -euo pipefail

CORRAL_SCRIPT_NAME=images/base
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../../scripts/lib/common.sh
. "$HERE/../../scripts/lib/common.sh"

REPO=corral/base
TAG=bookworm
IMAGE=$REPO:$TAG
SUITE=bookworm
PACKAGES=bash,coreutils,git,python3,ca-certificates,procps,findutils,grep,sed
OUT_DIR=${CORRAL_IMAGE_BUILD_DIR:-$(repo_root)/.build/images}

rebuild=${REBUILD:-0}
for argument in "$@"; do
    case "$argument" in
        --rebuild) rebuild=1 ;;
        -h | --help)
            sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument $argument" "images/base/build.sh [--rebuild]" ;;
    esac
done

# The recipe: this script and the files it copies in. A tar built from another recipe is
# never reused, and the image carries the hash as a label.
recipe=$(cd "$HERE" && find build.sh rootfs -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)
TAR=$OUT_DIR/base-$TAG-$recipe.tar

urlencode() {
    local LC_ALL=C text=$1 i char out=""
    for ((i = 0; i < ${#text}; i++)); do
        char=${text:i:1}
        case "$char" in
            [A-Za-z0-9._~-]) out+=$char ;;
            *) out+=$(printf '%%%02X' "'$char") ;;
        esac
    done
    printf '%s' "$out"
}

engine_answers || die "no engine answers at $(engine_endpoint)" "make engine (or scripts/engine.sh up), then retry"

if [ "$(engine_status "/images/$IMAGE/json")" = 200 ] && [ "$rebuild" != 1 ]; then
    existing=$(engine_curl "/images/$IMAGE/json" --max-time 10)
    if ! printf '%s' "$existing" | grep -q "\"corral.recipe\":\"$recipe\""; then
        say "note: $IMAGE was built from another recipe; REBUILD=1 make image builds the current one"
    fi
    say "$IMAGE exists; reusing it (REBUILD=1 or --rebuild to rebuild)"
    exit 0
fi

# The image this build replaces, removed after the import so that rebuilds leave no
# dangling images behind.
previous_id=$(engine_curl "/images/$IMAGE/json" --max-time 10 2>/dev/null | grep -o '"Id":"[^"]*"' | cut -d'"' -f4) ||
    previous_id=""

start=$(now_seconds)
if [ -s "$TAR" ] && [ "$rebuild" != 1 ]; then
    say "reusing $TAR (same recipe)"
else
    command -v mmdebstrap >/dev/null 2>&1 || apt_install_missing mmdebstrap
    mkdir -p "$OUT_DIR"
    rm -f "$OUT_DIR"/base-"$TAG"-*.tar "$TAR.partial"
    say "building the $SUITE rootfs with mmdebstrap"
    mirror=()
    [ -n "${CORRAL_DEBIAN_MIRROR:-}" ] && mirror=("$CORRAL_DEBIAN_MIRROR")
    # Docs, man pages and translations are of no use to an agent and make up a good part
    # of the size; copyright files stay. The hooks are single-quoted on purpose: mmdebstrap
    # runs them with the rootfs directory as $1.
    # shellcheck disable=SC2016
    mmdebstrap --variant=minbase --include="$PACKAGES" --format=tar --quiet \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --customize-hook='chroot "$1" groupadd --gid 1000 agent' \
        --customize-hook='chroot "$1" useradd --uid 1000 --gid 1000 --create-home --home-dir /home/agent \
            --shell /bin/bash agent' \
        --customize-hook='install -d -m 0755 -o 1000 -g 1000 "$1/workspace"' \
        --customize-hook='chmod 1777 "$1/tmp"' \
        --customize-hook="sync-in $HERE/rootfs /" \
        --customize-hook='rm -f "$1"/var/log/*.log "$1"/var/cache/ldconfig/aux-cache' \
        "$SUITE" "$TAR.partial" "${mirror[@]}" ||
        die "mmdebstrap failed (its output is above)" \
            "check apt access to the Debian mirror (CORRAL_DEBIAN_MIRROR overrides it)"
    mv "$TAR.partial" "$TAR"
    say "rootfs built in $(elapsed_since "$start")s ($(du -h "$TAR" | cut -f1))"
fi

# Dockerfile instructions applied at import: what makes the rootfs a sandbox image.
changes=(
    "LABEL corral.image=base corral.recipe=$recipe org.opencontainers.image.title=corral-base"
    "USER 1000:1000"
    "WORKDIR /workspace"
    "ENV HOME=/home/agent"
    "ENV LANG=C.UTF-8"
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    'CMD ["/bin/bash"]'
)
query="fromSrc=-&repo=$(urlencode "$REPO")&tag=$(urlencode "$TAG")"
for change in "${changes[@]}"; do query+="&changes=$(urlencode "$change")"; done

import_start=$(now_seconds)
say "importing $IMAGE"
response=$(engine_curl "/images/create?$query" -X POST -H 'Content-Type: application/x-tar' \
    -T "$TAR" -w '\n%{http_code}') ||
    die "importing $IMAGE failed: the engine did not answer" "scripts/engine.sh status"
status=${response##*$'\n'}
body=${response%$'\n'*}
if [ "$status" != 200 ] || printf '%s' "$body" | grep -q '"error"'; then
    die "the engine refused the import of $IMAGE (HTTP $status): $(printf '%s' "$body" | tr -d '\n' | cut -c1-300)" \
        "REBUILD=1 make image, or read the engine's log"
fi
id=$(engine_curl "/images/$IMAGE/json" --max-time 10 | grep -o '"Id":"[^"]*"' | cut -d'"' -f4)
say "imported $IMAGE ($id) in $(elapsed_since "$import_start")s; total $(elapsed_since "$start")s"
if [ -n "$previous_id" ] && [ "$previous_id" != "$id" ]; then
    case "$(engine_status_of DELETE "/images/$previous_id")" in
        200) say "removed the image it replaces (${previous_id:7:12})" ;;
        409) say "the image it replaces (${previous_id:7:12}) is still used by containers; left in place" ;;
        *) say "warning: could not remove the image it replaces (${previous_id:7:12})" ;;
    esac
fi
