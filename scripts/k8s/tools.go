//go:build tools

// Package tools pins the three control-plane commands the test cluster runs, so that
// `go build` of their cmd/ packages resolves through this module's go.mod and go.sum.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
