#!/usr/bin/env bash
# Refresh the third-party browser code the service ships (no build step, no CDN): Swagger UI
# for /docs, marked and DOMPurify for the console's markdown. Files are copied verbatim from
# the pinned npm packages, with their licence files; bump a version here and re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

SWAGGER_UI=5.35.0
MARKED=18.2.1
DOMPURIFY=3.4.18

dest=src/chatsessions/service/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

unpack() {  # unpack NAME VERSION: the package's files end up in $work/NAME
  (cd "$work" && npm pack --silent "$1@$2" >/dev/null && mkdir "$1" && tar xzf "$1-$2.tgz" -C "$1" --strip-components=1)
}
copy() {  # copy NAME TARGET FILE...: verbatim, under $dest/TARGET
  local name=$1 target=$2; shift 2
  rm -rf "${dest:?}/$target"
  mkdir -p "$dest/$target"
  for f in "$@"; do cp "$work/$name/$f" "$dest/$target/"; done
}

unpack swagger-ui-dist "$SWAGGER_UI"
copy swagger-ui-dist swagger-ui swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt \
  swagger-ui.css favicon-32x32.png LICENSE NOTICE
unpack marked "$MARKED"
copy marked marked lib/marked.umd.js LICENSE
unpack dompurify "$DOMPURIFY"
copy dompurify dompurify dist/purify.min.js LICENSE LICENSE-MPL

cat > "$dest/VERSIONS" <<VERSIONS
# Written by scripts/vendor.sh: package, version, then each file's sha256.
swagger-ui-dist $SWAGGER_UI
marked $MARKED
dompurify $DOMPURIFY

VERSIONS
(cd "$dest" && find . -type f ! -name VERSIONS | sort | xargs sha256sum) >> "$dest/VERSIONS"
echo "vendored into $dest:"
sed -n '2,4p' "$dest/VERSIONS"
