# shellcheck shell=bash
# Sourced by scripts/bootstrap.sh (helpers: say, as_root, apt_install; $CACHE_DIR).
# Builds Helm from the Go module proxy at a pinned version, for `helm lint` / `helm template`
# of deploy/helm/fos1 in the tests (test/integration/helm-chart.privileged.test.ts). The binary
# goes to $CACHE_DIR/helm-<version>/helm via a temp dir and a rename, so a half-built binary is
# never at the final path. Fast when present. Keep the version in step with k8s/paths.ts.
HELM_VERSION=v3.22.0

fos1_build_helm() {
  local final_dir="$CACHE_DIR/helm-$HELM_VERSION"
  [ -x "$final_dir/helm" ] && return 0
  command -v go >/dev/null || { say "Go is needed to build helm"; return 1; }
  say "building helm $HELM_VERSION from the Go module proxy (first time only, a few minutes)"
  # Stamp what upstream's Makefile stamps: the version, and the default Kubernetes version
  # that `helm template` and `helm lint` assume (client-go v0.X → 1.X; unstamped it is 1.20).
  local mod client_go k8s_minor
  mod=$(GOFLAGS=-mod=mod go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  client_go=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$mod")
  k8s_minor=${client_go#v0.}; k8s_minor=${k8s_minor%%.*}
  [ -n "$k8s_minor" ] || { say "cannot read k8s.io/client-go's version from helm's go.mod"; return 1; }
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  local pkg
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags="$ldflags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
  done
  mkdir -p "$CACHE_DIR"
  local tmp_dir
  tmp_dir=$(mktemp -d "$CACHE_DIR/.build-helm.XXXXXX")
  GOBIN="$tmp_dir" GOFLAGS=-mod=mod nice -n 10 go install -trimpath -ldflags="$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" || { rm -rf "$tmp_dir"; return 1; }
  chmod 755 "$tmp_dir"   # mktemp made it private; the binary is for every user
  rm -rf "$final_dir"
  mv "$tmp_dir" "$final_dir"
}

fos1_build_helm
unset -f fos1_build_helm
