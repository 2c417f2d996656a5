//go:build tools

// Package tools pins KWOK, which plays the kubelets of the fake nodes. It has its own
// module because KWOK pins newer k8s.io/* libraries than the control plane does.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
