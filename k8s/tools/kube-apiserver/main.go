// Command kube-apiserver is the upstream kube-apiserver, built from k8s.io/kubernetes at the
// version pinned in go.mod. fos1 uses it (with etcd) as a real Kubernetes API for development
// and tests, the controller-runtime "envtest" way, without downloading release binaries.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	command := app.NewAPIServerCommand()
	os.Exit(cli.Run(command))
}
