// Command lb is the testbed's external load balancer: the real service controller of
// k8s.io/cloud-provider (the one every cloud's controller manager runs) with a cloud whose
// load balancers are TCP proxies on a testbed address. The controller decides which nodes
// a LoadBalancer Service's balancer sends to, as on a cloud: a node labelled
// node.kubernetes.io/exclude-from-external-load-balancers leaves every balancer. The proxy
// does what a cloud's network load balancer does with the nodes it is given: it sends each
// new connection to a healthy node's NodePort, health-checks the nodes (a node starts
// unhealthy and takes new connections after passing checks), and lets connections to a
// node taken out finish.
//
// Every change of a balancer's nodes and of a node's health is printed with its time, so
// a test can tell when a node was deregistered.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	cloudprovider "k8s.io/cloud-provider"
	servicecontroller "k8s.io/cloud-provider/controllers/service"
	controllersmetrics "k8s.io/component-base/metrics/prometheus/controllers"
	"k8s.io/klog/v2"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster")
	address := flag.String("address", "", "IP address the balancers listen on (one port per Service port)")
	interval := flag.Duration("interval", time.Second, "health check interval")
	threshold := flag.Int("threshold", 2, "checks in a row that make a node healthy or unhealthy")
	klog.InitFlags(nil)
	flag.Parse()
	if *kubeconfig == "" || net.ParseIP(*address) == nil {
		fmt.Fprintln(os.Stderr, "usage: lb -kubeconfig FILE -address IP [-interval 1s] [-threshold 2]")
		os.Exit(2)
	}
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		klog.Fatalf("kubeconfig: %v", err)
	}
	client := kubernetes.NewForConfigOrDie(config)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cloud := &cloud{balancers: &balancers{
		address: *address, interval: *interval, threshold: *threshold, byService: map[string]*balancer{},
	}}
	factory := informers.NewSharedInformerFactory(client, 0)
	controller, err := servicecontroller.New(cloud, client, factory.Core().V1().Services(),
		factory.Core().V1().Nodes(), "kordon-testbed", nil)
	if err != nil {
		klog.Fatalf("service controller: %v", err)
	}
	factory.Start(ctx.Done())
	go controller.Run(ctx, 1, controllersmetrics.NewControllerManagerMetrics("lb"))
	say("serving LoadBalancer Services on %s", *address)
	<-ctx.Done()
	cloud.balancers.closeAll()
}

// say prints one timestamped line to stdout.
func say(format string, args ...any) {
	fmt.Printf("%s %s\n", time.Now().UTC().Format(time.RFC3339Nano), fmt.Sprintf(format, args...))
}

// cloud is a cloudprovider.Interface with load balancers only.
type cloud struct{ balancers *balancers }

func (c *cloud) Initialize(cloudprovider.ControllerClientBuilder, <-chan struct{}) {}
func (c *cloud) LoadBalancer() (cloudprovider.LoadBalancer, bool)                  { return c.balancers, true }
func (c *cloud) Instances() (cloudprovider.Instances, bool)                        { return nil, false }
func (c *cloud) InstancesV2() (cloudprovider.InstancesV2, bool)                    { return nil, false }
func (c *cloud) Zones() (cloudprovider.Zones, bool)                                { return nil, false }
func (c *cloud) Clusters() (cloudprovider.Clusters, bool)                          { return nil, false }
func (c *cloud) Routes() (cloudprovider.Routes, bool)                              { return nil, false }
func (c *cloud) ProviderName() string                                              { return "kordon-testbed" }
func (c *cloud) HasClusterID() bool                                                { return true }

// balancers is the cloud's load balancer API: one balancer per Service.
type balancers struct {
	address   string
	interval  time.Duration
	threshold int
	mu        sync.Mutex
	byService map[string]*balancer
}

func key(service *v1.Service) string { return service.Namespace + "/" + service.Name }

func (b *balancers) status() *v1.LoadBalancerStatus {
	// Proxy: the balancer proxies, so kube-proxy must not short-circuit its address to
	// the Service's endpoints.
	mode := v1.LoadBalancerIPModeProxy
	return &v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{{IP: b.address, IPMode: &mode}}}
}

func (b *balancers) GetLoadBalancer(_ context.Context, _ string, service *v1.Service) (*v1.LoadBalancerStatus, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.byService[key(service)]; !ok {
		return nil, false, nil
	}
	return b.status(), true, nil
}

func (b *balancers) GetLoadBalancerName(_ context.Context, _ string, service *v1.Service) string {
	return key(service)
}

func (b *balancers) EnsureLoadBalancer(_ context.Context, _ string, service *v1.Service, nodes []*v1.Node) (*v1.LoadBalancerStatus, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	lb, ok := b.byService[key(service)]
	if !ok {
		lb = &balancer{name: key(service), interval: b.interval, threshold: b.threshold, health: map[string]*health{}}
		b.byService[key(service)] = lb
		go lb.check()
	}
	if err := lb.listen(b.address, service.Spec.Ports); err != nil {
		return nil, err
	}
	lb.setTargets(service.Spec.Ports, nodes)
	return b.status(), nil
}

func (b *balancers) UpdateLoadBalancer(_ context.Context, _ string, service *v1.Service, nodes []*v1.Node) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	lb, ok := b.byService[key(service)]
	if !ok {
		return fmt.Errorf("no load balancer for %s", key(service))
	}
	lb.setTargets(service.Spec.Ports, nodes)
	return nil
}

func (b *balancers) EnsureLoadBalancerDeleted(_ context.Context, _ string, service *v1.Service) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if lb, ok := b.byService[key(service)]; ok {
		lb.close()
		delete(b.byService, key(service))
	}
	return nil
}

func (b *balancers) closeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, lb := range b.byService {
		lb.close()
	}
}

// target is one node's NodePort for one Service port.
type target struct {
	node, address string
}

// health is what the checks have seen of one node's address.
type health struct {
	healthy bool
	inARow  int
}

// balancer proxies each Service port's connections to the healthy nodes it was given.
type balancer struct {
	name      string
	interval  time.Duration
	threshold int

	mu        sync.Mutex
	listeners map[int32]net.Listener // by Service port
	targets   map[int32][]target     // by Service port
	health    map[string]*health     // by target address
	next      int
	closed    bool
}

func (lb *balancer) listen(address string, ports []v1.ServicePort) error {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if lb.listeners == nil {
		lb.listeners = map[int32]net.Listener{}
	}
	for _, port := range ports {
		if _, ok := lb.listeners[port.Port]; ok || port.Protocol != v1.ProtocolTCP {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(address, strconv.Itoa(int(port.Port))))
		if err != nil {
			return err
		}
		lb.listeners[port.Port] = l
		go lb.accept(l, port.Port)
	}
	return nil
}

func (lb *balancer) setTargets(ports []v1.ServicePort, nodes []*v1.Node) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	targets := map[int32][]target{}
	known := lb.health
	// A node taken out and put back starts unhealthy again, as a re-registered target
	// does on a cloud.
	lb.health = map[string]*health{}
	var names []string
	for _, node := range nodes {
		ip := internalIP(node)
		if ip == "" {
			continue
		}
		names = append(names, node.Name)
		for _, port := range ports {
			address := net.JoinHostPort(ip, strconv.Itoa(int(port.NodePort)))
			targets[port.Port] = append(targets[port.Port], target{node: node.Name, address: address})
			if h, ok := known[address]; ok {
				lb.health[address] = h
			} else {
				lb.health[address] = &health{}
			}
		}
	}
	lb.targets = targets
	sort.Strings(names)
	say("%s: nodes %s", lb.name, strings.Join(names, ","))
}

func internalIP(node *v1.Node) string {
	for _, a := range node.Status.Addresses {
		if a.Type == v1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// pick returns the next healthy target of a Service port, round robin.
func (lb *balancer) pick(port int32) (target, bool) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	targets := lb.targets[port]
	for i := range targets {
		t := targets[(lb.next+i)%len(targets)]
		if h := lb.health[t.address]; h != nil && h.healthy {
			lb.next = (lb.next + i + 1) % len(targets)
			return t, true
		}
	}
	return target{}, false
}

func (lb *balancer) accept(l net.Listener, port int32) {
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		go lb.proxy(conn, port)
	}
}

// proxy sends one connection to a healthy node. With none, or when the node does not
// answer, the client's connection is closed: the client sees the failure, as behind a
// cloud's network load balancer.
func (lb *balancer) proxy(client net.Conn, port int32) {
	defer client.Close()
	t, ok := lb.pick(port)
	if !ok {
		return
	}
	backend, err := net.DialTimeout("tcp", t.address, time.Second)
	if err != nil {
		say("%s: %s (%s) did not answer: %v", lb.name, t.node, t.address, err)
		return
	}
	defer backend.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(backend, client); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, backend); done <- struct{}{} }()
	<-done
}

// check health-checks every target (a TCP connect to its NodePort) each interval.
func (lb *balancer) check() {
	for {
		time.Sleep(lb.interval)
		lb.mu.Lock()
		if lb.closed {
			lb.mu.Unlock()
			return
		}
		nodes := map[string]string{}
		for _, targets := range lb.targets {
			for _, t := range targets {
				nodes[t.address] = t.node
			}
		}
		lb.mu.Unlock()
		var wg sync.WaitGroup
		for address, node := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn, err := net.DialTimeout("tcp", address, lb.interval)
				if err == nil {
					conn.Close()
				}
				lb.record(node, address, err == nil)
			}()
		}
		wg.Wait()
	}
}

func (lb *balancer) record(node, address string, ok bool) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	h := lb.health[address]
	if h == nil {
		return
	}
	if ok == h.healthy {
		h.inARow = 0
		return
	}
	h.inARow++
	if h.inARow >= lb.threshold {
		h.healthy, h.inARow = ok, 0
		state := "unhealthy"
		if ok {
			state = "healthy"
		}
		say("%s: %s (%s) %s", lb.name, node, address, state)
	}
}

func (lb *balancer) close() {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.closed = true
	for _, l := range lb.listeners {
		l.Close()
	}
}
