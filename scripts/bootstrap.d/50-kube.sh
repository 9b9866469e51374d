# shellcheck shell=bash
# Sourced by scripts/bootstrap.sh (helpers: say, as_root, apt_install; $CACHE_DIR).
# Builds kube-apiserver, etcd and kubectl from the Go module proxy at pinned versions, for the
# real Kubernetes API used in development and tests (the envtest approach, no downloads).
# Wrapper modules live in k8s/tools/*; binaries go to $CACHE_DIR/<tool>-<version>/ via a temp
# dir and a rename, so a half-built binary is never at the final path. Fast when present.
# Keep the versions in step with k8s/paths.ts and the wrapper go.mod files.
KUBE_VERSION=v1.35.4
ETCD_VERSION=v3.6.5

fos1_build_go_tool() { # fos1_build_go_tool NAME VERSION MODULE_DIR [EXTRA_LDFLAGS]
  local name=$1 version=$2 module_dir=$3 extra_ldflags=${4:-}
  local final_dir="$CACHE_DIR/$name-$version"
  [ -x "$final_dir/$name" ] && return 0
  command -v go >/dev/null || { say "Go is needed to build $name"; return 1; }
  say "building $name $version from the Go module proxy (first time only, several minutes)"
  mkdir -p "$CACHE_DIR"
  local tmp_dir
  tmp_dir=$(mktemp -d "$CACHE_DIR/.build-$name.XXXXXX")
  (cd "$module_dir" && nice -n 10 go build -trimpath -ldflags="-s -w $extra_ldflags" -o "$tmp_dir/$name" .) || { rm -rf "$tmp_dir"; return 1; }
  chmod 755 "$tmp_dir"   # mktemp made it private; the binaries are for every user
  rm -rf "$final_dir"
  mv "$tmp_dir" "$final_dir"
}

fos1_build_go_tool etcd "$ETCD_VERSION" k8s/tools/etcd
# Stamp the version (upstream's build does the same), so /version answers v1.35.4, not v0.0.0-master.
kube_minor=${KUBE_VERSION#v1.}; kube_minor=${kube_minor%%.*}
fos1_build_go_tool kube-apiserver "$KUBE_VERSION" k8s/tools/kube-apiserver \
  "-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$kube_minor -X k8s.io/component-base/version.gitTreeState=clean"
# kubectl at the same version, for `kubectl apply -f` against the apiserver of `npm start -- --kube`.
fos1_build_go_tool kubectl "$KUBE_VERSION" k8s/tools/kubectl \
  "-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$kube_minor -X k8s.io/component-base/version.gitTreeState=clean"
unset kube_minor
unset -f fos1_build_go_tool
