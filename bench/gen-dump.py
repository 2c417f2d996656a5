#!/usr/bin/env python3
"""Writes a synthetic `kubectl get nodes,pods,pdb,deploy,rs -A -o json` dump of a large
cluster, for timing `kordon plan --from-file` (bench/plan-scale).

usage: gen-dump.py NODES PODS OUT.json
Pods belong to Deployments of 30 replicas spread round-robin over the nodes; every
tenth Deployment has a PodDisruptionBudget (maxUnavailable 1)."""
import json
import sys

nodes, pods, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
per_deploy = 30
ready = [{"type": "Ready", "status": "True"}]

with open(out, "w") as f:
    f.write('{"apiVersion":"v1","kind":"List","items":[\n')
    first = True

    def emit(obj):
        global first
        if not first:
            f.write(",\n")
        first = False
        f.write(json.dumps(obj, separators=(",", ":")))

    for n in range(nodes):
        name = f"node-{n:05d}"
        emit({"apiVersion": "v1", "kind": "Node",
              "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "zone": f"z{n % 3}"}},
              "status": {"allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                         "conditions": ready}})
    deploys = (pods + per_deploy - 1) // per_deploy
    p = 0
    for d in range(deploys):
        ns, app = f"ns-{d % 50}", f"app-{d}"
        emit({"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": app, "namespace": ns, "uid": f"d-{d}"},
              "spec": {"replicas": per_deploy, "selector": {"matchLabels": {"app": app}},
                       "template": {"spec": {"containers": []}}}})
        emit({"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": f"{app}-rs", "namespace": ns, "uid": f"rs-{d}",
                           "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": app,
                                                "uid": f"d-{d}", "controller": True}]},
              "spec": {"replicas": per_deploy, "selector": {"matchLabels": {"app": app}}}})
        if d % 10 == 0:
            emit({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                  "metadata": {"name": app, "namespace": ns},
                  "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": app}}},
                  "status": {"disruptionsAllowed": 1, "currentHealthy": per_deploy,
                             "desiredHealthy": per_deploy - 1, "expectedPods": per_deploy}})
        for r in range(per_deploy):
            if p >= pods:
                break
            emit({"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": f"{app}-{r}", "namespace": ns, "uid": f"p-{p}", "labels": {"app": app},
                               "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                    "name": f"{app}-rs", "uid": f"rs-{d}", "controller": True}]},
                  "spec": {"nodeName": f"node-{p % nodes:05d}",
                           "containers": [{"name": "c", "image": "nginx",
                                           "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
                  "status": {"phase": "Running", "conditions": ready}})
            p += 1
    f.write("\n]}\n")
