//go:build tools

// Package tools pins etcd's server command. etcd's own go.mod replaces its sibling
// modules with ../api etc.; requiring the published versions here does the same job.
package tools

import _ "go.etcd.io/etcd/server/v3"
