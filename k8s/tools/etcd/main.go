// Command etcd is the upstream etcd server at the version pinned in go.mod, used as the
// storage behind fos1's development/test kube-apiserver.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
