// Offline checks of the kustomize tree under deploy/k8s.
//
// Every YAML document (except *.example.yaml) is decoded strictly into its typed struct, so a
// misspelled field fails here instead of being dropped silently by the API server. Strict decoding
// does not catch missing or inconsistent fields, so the cross-object invariants the etlexec
// binaries rely on are asserted explicitly, once on the source tree and, when a kustomize binary
// is available, once more on every rendered overlay.
package k8s_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// Names and values the etlexec binaries and these manifests agree on.
const (
	configMapName = "etlexec-config"
	secretName    = "etlexec-secrets"

	workerName    = "etlexec-worker"
	schedulerName = "etlexec-scheduler"
	serveName     = "etlexec-serve"
	migrateName   = "etlexec-migrate"

	// shutdownSlack is the time a pod needs after ETL_SHUTDOWN_TIMEOUT to flush and exit
	// before the kubelet sends SIGKILL.
	shutdownSlack = 5 * time.Second

	// nonRootUID is the distroless "nonroot" user the image runs as.
	nonRootUID = 65532

	exampleSecretFile = "base/secret.example.yaml"
)

// configKeys are the keys etlexec-config must carry.
var configKeys = []string{
	"ETL_QUEUES", "ETL_CONCURRENCY", "ETL_SHUTDOWN_TIMEOUT", "ETL_HTTP_ADDR",
	"OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT",
}

// ---------------------------------------------------------------------------------------------
// Minimal strict types for the CRDs and kustomize files (no Go types are served for them).

// ScaledObject is the subset of keda.sh/v1alpha1 ScaledObject we use; unknown fields fail.
type ScaledObject struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       ScaledObjectSpec  `json:"spec"`
}

type ScaledObjectSpec struct {
	ScaleTargetRef        *ScaleTarget   `json:"scaleTargetRef,omitempty"`
	PollingInterval       *int32         `json:"pollingInterval,omitempty"`
	CooldownPeriod        *int32         `json:"cooldownPeriod,omitempty"`
	InitialCooldownPeriod *int32         `json:"initialCooldownPeriod,omitempty"`
	IdleReplicaCount      *int32         `json:"idleReplicaCount,omitempty"`
	MinReplicaCount       *int32         `json:"minReplicaCount,omitempty"`
	MaxReplicaCount       *int32         `json:"maxReplicaCount,omitempty"`
	Fallback              *KedaFallback  `json:"fallback,omitempty"`
	Advanced              *KedaAdvanced  `json:"advanced,omitempty"`
	Triggers              []ScaleTrigger `json:"triggers,omitempty"`
}

type ScaleTarget struct {
	APIVersion             string `json:"apiVersion,omitempty"`
	Kind                   string `json:"kind,omitempty"`
	Name                   string `json:"name"`
	EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
}

type KedaFallback struct {
	FailureThreshold int32 `json:"failureThreshold"`
	Replicas         int32 `json:"replicas"`
}

type KedaAdvanced struct {
	RestoreToOriginalReplicaCount bool `json:"restoreToOriginalReplicaCount,omitempty"`
	HorizontalPodAutoscalerConfig *struct {
		Name     string                                         `json:"name,omitempty"`
		Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
	} `json:"horizontalPodAutoscalerConfig,omitempty"`
}

type ScaleTrigger struct {
	Type              string                         `json:"type"`
	Name              string                         `json:"name,omitempty"`
	Metadata          map[string]string              `json:"metadata"`
	AuthenticationRef *AuthenticationRef             `json:"authenticationRef,omitempty"`
	MetricType        autoscalingv2.MetricTargetType `json:"metricType,omitempty"`
	UseCachedMetrics  bool                           `json:"useCachedMetrics,omitempty"`
}

type AuthenticationRef struct {
	Name string `json:"name"`
	Kind string `json:"kind,omitempty"`
}

// TriggerAuthentication is the subset of keda.sh/v1alpha1 TriggerAuthentication we use.
type TriggerAuthentication struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		SecretTargetRef []struct {
			Parameter string `json:"parameter"`
			Name      string `json:"name"`
			Key       string `json:"key"`
		} `json:"secretTargetRef,omitempty"`
		Env []struct {
			Parameter     string `json:"parameter"`
			Name          string `json:"name"`
			ContainerName string `json:"containerName,omitempty"`
		} `json:"env,omitempty"`
	} `json:"spec"`
}

// Kustomization is the subset of kustomize's Kustomization (and Component) we use.
type Kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources,omitempty"`
	Components []string `json:"components,omitempty"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors,omitempty"`
		IncludeTemplates bool              `json:"includeTemplates,omitempty"`
	} `json:"labels,omitempty"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
	Patches []struct {
		Path   string `json:"path,omitempty"`
		Patch  string `json:"patch,omitempty"`
		Target *struct {
			Group   string `json:"group,omitempty"`
			Version string `json:"version,omitempty"`
			Kind    string `json:"kind,omitempty"`
			Name    string `json:"name,omitempty"`
		} `json:"target,omitempty"`
	} `json:"patches,omitempty"`
}

// ---------------------------------------------------------------------------------------------
// Loading.

type gvk struct{ apiVersion, kind string }

func strict[T any](b []byte) (any, error) {
	v := new(T)
	if err := yaml.UnmarshalStrict(b, v); err != nil {
		return nil, err
	}
	return v, nil
}

// decoders lists every kind allowed under deploy/k8s; anything else fails.
var decoders = map[gvk]func([]byte) (any, error){
	{"apps/v1", "Deployment"}:                            strict[appsv1.Deployment],
	{"v1", "Service"}:                                    strict[corev1.Service],
	{"v1", "ConfigMap"}:                                  strict[corev1.ConfigMap],
	{"batch/v1", "Job"}:                                  strict[batchv1.Job],
	{"policy/v1", "PodDisruptionBudget"}:                 strict[policyv1.PodDisruptionBudget],
	{"networking.k8s.io/v1", "NetworkPolicy"}:            strict[networkingv1.NetworkPolicy],
	{"autoscaling/v2", "HorizontalPodAutoscaler"}:        strict[autoscalingv2.HorizontalPodAutoscaler],
	{"keda.sh/v1alpha1", "ScaledObject"}:                 strict[ScaledObject],
	{"keda.sh/v1alpha1", "TriggerAuthentication"}:        strict[TriggerAuthentication],
	{"kustomize.config.k8s.io/v1beta1", "Kustomization"}: strict[Kustomization],
	{"kustomize.config.k8s.io/v1alpha1", "Component"}:    strict[Kustomization],
}

type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

// manifest is one decoded YAML document.
type manifest struct {
	file  string // slash path relative to deploy/k8s, or the render name
	index int    // document index within the file
	kind  string
	name  string
	obj   any
}

func (m manifest) String() string {
	return fmt.Sprintf("%s#%d %s/%s", m.file, m.index, m.kind, m.name)
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// splitDocs splits a multi-document YAML stream, dropping documents that hold only comments.
func splitDocs(b []byte) [][]byte {
	var docs [][]byte
	for _, part := range docSeparator.Split(string(b), -1) {
		for _, line := range strings.Split(part, "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				docs = append(docs, []byte(part))
				break
			}
		}
	}
	return docs
}

// decodeStream decodes every document of a YAML stream strictly by apiVersion and kind.
func decodeStream(file string, b []byte) ([]manifest, []error) {
	var out []manifest
	var errs []error
	for i, doc := range splitDocs(b) {
		var h header
		if err := yaml.Unmarshal(doc, &h); err != nil {
			errs = append(errs, fmt.Errorf("%s#%d: parse header: %w", file, i, err))
			continue
		}
		dec, ok := decoders[gvk{h.APIVersion, h.Kind}]
		if !ok {
			errs = append(errs, fmt.Errorf("%s#%d: unknown kind %q %q", file, i, h.APIVersion, h.Kind))
			continue
		}
		obj, err := dec(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s#%d %s/%s: strict decode: %w", file, i, h.Kind, h.Metadata.Name, err))
			continue
		}
		out = append(out, manifest{file: file, index: i, kind: h.Kind, name: h.Metadata.Name, obj: obj})
	}
	return out, errs
}

// tree is the decoded source tree.
type tree struct {
	files         map[string][]manifest // every YAML file except *.example.yaml
	kustomization map[string]*Kustomization
	secretKeys    map[string]bool // keys documented in secret.example.yaml
}

func loadTree(t *testing.T) *tree {
	t.Helper()
	tr := &tree{files: map[string][]manifest{}, kustomization: map[string]*Kustomization{}}
	var errs []error
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		ext := filepath.Ext(path)
		if d.IsDir() || (ext != ".yaml" && ext != ".yml") || strings.HasSuffix(path, ".example"+ext) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		file := filepath.ToSlash(path)
		ms, decErrs := decodeStream(file, b)
		errs = append(errs, decErrs...)
		tr.files[file] = ms
		for _, m := range ms {
			if k, ok := m.obj.(*Kustomization); ok {
				tr.kustomization[filepath.ToSlash(filepath.Dir(path))] = k
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk deploy/k8s: %v", err)
	}
	for _, e := range errs {
		t.Error(e)
	}
	if len(tr.files) == 0 {
		t.Fatal("no YAML files found under deploy/k8s")
	}

	b, err := os.ReadFile(exampleSecretFile)
	if err != nil {
		t.Fatalf("read %s: %v", exampleSecretFile, err)
	}
	var sec corev1.Secret
	if err := yaml.UnmarshalStrict(b, &sec); err != nil {
		t.Fatalf("%s: strict decode: %v", exampleSecretFile, err)
	}
	if sec.Name != secretName {
		t.Errorf("%s names Secret %q, want %q", exampleSecretFile, sec.Name, secretName)
	}
	tr.secretKeys = map[string]bool{}
	for k := range sec.StringData {
		tr.secretKeys[k] = true
	}
	for k := range sec.Data {
		tr.secretKeys[k] = true
	}
	if t.Failed() {
		t.FailNow()
	}
	return tr
}

// resourceFiles returns the files listed as `resources` by any kustomization in the tree (the
// complete objects, as opposed to patches), in a stable order.
func (tr *tree) resourceFiles() []string {
	var out []string
	for dir, k := range tr.kustomization {
		for _, r := range k.Resources {
			p := filepath.ToSlash(filepath.Join(dir, r))
			if _, ok := tr.files[p]; ok && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	slices.Sort(out)
	return out
}

// resources returns every object listed as a resource by the base or a component.
func (tr *tree) resources() []manifest {
	var out []manifest
	for _, f := range tr.resourceFiles() {
		out = append(out, tr.files[f]...)
	}
	return out
}

// ---------------------------------------------------------------------------------------------
// Helpers over a set of objects.

func all[T any](ms []manifest) []*T {
	var out []*T
	for _, m := range ms {
		if v, ok := m.obj.(*T); ok {
			out = append(out, v)
		}
	}
	return out
}

// workload is a pod template with its owner.
type workload struct {
	kind, name string
	labels     map[string]string
	spec       *corev1.PodSpec
}

func workloads(ms []manifest) []workload {
	var out []workload
	for _, d := range all[appsv1.Deployment](ms) {
		out = append(out, workload{"Deployment", d.Name, d.Spec.Template.Labels, &d.Spec.Template.Spec})
	}
	for _, j := range all[batchv1.Job](ms) {
		out = append(out, workload{"Job", j.Name, j.Spec.Template.Labels, &j.Spec.Template.Spec})
	}
	return out
}

func (w workload) String() string { return w.kind + "/" + w.name }

func (w workload) containers() []corev1.Container {
	return append(slices.Clone(w.spec.InitContainers), w.spec.Containers...)
}

func findDeployment(ms []manifest, name string) *appsv1.Deployment {
	for _, d := range all[appsv1.Deployment](ms) {
		if d.Name == name {
			return d
		}
	}
	return nil
}

func configData(t *testing.T, ms []manifest) map[string]string {
	t.Helper()
	var found []*corev1.ConfigMap
	for _, cm := range all[corev1.ConfigMap](ms) {
		if cm.Name == configMapName {
			found = append(found, cm)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one ConfigMap %q, found %d", configMapName, len(found))
	}
	return found[0].Data
}

func queues(t *testing.T, cm map[string]string) []string {
	t.Helper()
	var qs []string
	for _, q := range strings.Split(cm["ETL_QUEUES"], ",") {
		q = strings.TrimSpace(q)
		if q == "" || strings.ContainsAny(q, " \t{}") {
			t.Fatalf("ETL_QUEUES %q: bad queue name %q", cm["ETL_QUEUES"], q)
		}
		qs = append(qs, q)
	}
	return qs
}

func shutdownTimeout(t *testing.T, cm map[string]string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(cm["ETL_SHUTDOWN_TIMEOUT"])
	if err != nil || d <= 0 {
		t.Fatalf("ETL_SHUTDOWN_TIMEOUT %q: want a positive Go duration (%v)", cm["ETL_SHUTDOWN_TIMEOUT"], err)
	}
	return d
}

// envOf resolves the environment a container sees: envFrom ConfigMap keys first, then explicit
// env entries override them, as the kubelet does. Secret-sourced values resolve to
// "secret:<key>".
func envOf(c corev1.Container, cm map[string]string) map[string]string {
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == configMapName {
			for k, v := range cm {
				env[ef.Prefix+k] = v
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			env[e.Name] = cm[e.ValueFrom.ConfigMapKeyRef.Key]
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = "secret:" + e.ValueFrom.SecretKeyRef.Key
		default:
			env[e.Name] = ""
		}
	}
	return env
}

func portExists(c corev1.Container, p intstr.IntOrString) bool {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return true
		}
	}
	return false
}

func selects(t *testing.T, sel *metav1.LabelSelector, lbls map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Errorf("label selector %v: %v", sel, err)
		return false
	}
	return !s.Empty() && s.Matches(labels.Set(lbls))
}

func selectedWorkloads(t *testing.T, ms []manifest, sel *metav1.LabelSelector) []workload {
	t.Helper()
	var out []workload
	for _, w := range workloads(ms) {
		if selects(t, sel, w.labels) {
			out = append(out, w)
		}
	}
	return out
}

// ---------------------------------------------------------------------------------------------
// Cross-checks on a set of complete objects (source resources, or a rendered overlay).

type setKind int

const (
	sourceSet   setKind = iota // base and component resources, side by side
	renderedSet                // output of kustomize build
)

func checkSet(t *testing.T, ms []manifest, secretKeys map[string]bool, kind setKind) {
	cm := configData(t, ms)

	t.Run("configmap carries the runtime keys", func(t *testing.T) {
		for _, k := range configKeys {
			if _, ok := cm[k]; !ok {
				t.Errorf("ConfigMap %s lacks %s", configMapName, k)
			}
		}
		if n, err := strconv.Atoi(cm["ETL_CONCURRENCY"]); err != nil || n <= 0 {
			t.Errorf("ETL_CONCURRENCY %q: want a positive integer", cm["ETL_CONCURRENCY"])
		}
		shutdownTimeout(t, cm)
		queues(t, cm)
	})

	t.Run("deployment selectors match template labels", func(t *testing.T) {
		for _, d := range all[appsv1.Deployment](ms) {
			if d.Spec.Selector == nil || !selects(t, d.Spec.Selector, d.Spec.Template.Labels) {
				t.Errorf("Deployment %s: selector %v does not match template labels %v", d.Name, d.Spec.Selector, d.Spec.Template.Labels)
			}
		}
	})

	t.Run("pdb and service selectors match a deployment", func(t *testing.T) {
		match := func(what string, sel *metav1.LabelSelector) {
			for _, d := range all[appsv1.Deployment](ms) {
				if selects(t, sel, d.Spec.Template.Labels) {
					return
				}
			}
			t.Errorf("%s: selector %v matches no Deployment", what, sel)
		}
		for _, p := range all[policyv1.PodDisruptionBudget](ms) {
			if p.Spec.Selector == nil {
				t.Errorf("PodDisruptionBudget %s has no selector", p.Name)
				continue
			}
			match("PodDisruptionBudget "+p.Name, p.Spec.Selector)
		}
		for _, s := range all[corev1.Service](ms) {
			match("Service "+s.Name, &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
		}
		if findDeployment(ms, workerName) != nil {
			covered := false
			for _, p := range all[policyv1.PodDisruptionBudget](ms) {
				covered = covered || (p.Spec.Selector != nil && selects(t, p.Spec.Selector, findDeployment(ms, workerName).Spec.Template.Labels))
			}
			if !covered {
				t.Errorf("no PodDisruptionBudget covers Deployment %s", workerName)
			}
		}
	})

	t.Run("networkpolicies select workloads and their ports", func(t *testing.T) {
		for _, np := range all[networkingv1.NetworkPolicy](ms) {
			sel := selectedWorkloads(t, ms, &np.Spec.PodSelector)
			if len(sel) == 0 {
				t.Errorf("NetworkPolicy %s: podSelector matches no workload", np.Name)
			}
			for _, rule := range np.Spec.Ingress {
				for _, p := range rule.Ports {
					if p.Port == nil {
						continue
					}
					found := false
					for _, w := range sel {
						for _, c := range w.spec.Containers {
							found = found || portExists(c, *p.Port)
						}
					}
					if !found {
						t.Errorf("NetworkPolicy %s: ingress port %s is not a container port of any selected pod", np.Name, p.Port.String())
					}
				}
			}
		}
	})

	t.Run("config and secret references", func(t *testing.T) {
		for _, w := range workloads(ms) {
			for _, c := range w.containers() {
				for _, ef := range c.EnvFrom {
					if ef.ConfigMapRef != nil && ef.ConfigMapRef.Name != configMapName {
						t.Errorf("%s container %s: envFrom ConfigMap %q, want %q", w, c.Name, ef.ConfigMapRef.Name, configMapName)
					}
					if ef.SecretRef != nil && ef.SecretRef.Name != secretName {
						t.Errorf("%s container %s: envFrom Secret %q, want %q", w, c.Name, ef.SecretRef.Name, secretName)
					}
				}
				for _, e := range c.Env {
					if e.ValueFrom == nil {
						continue
					}
					if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
						if r.Name != configMapName {
							t.Errorf("%s env %s: ConfigMap %q, want %q", w, e.Name, r.Name, configMapName)
						} else if _, ok := cm[r.Key]; !ok {
							t.Errorf("%s env %s: key %q is not in ConfigMap %s", w, e.Name, r.Key, configMapName)
						}
					}
					if r := e.ValueFrom.SecretKeyRef; r != nil {
						if r.Name != secretName {
							t.Errorf("%s env %s: Secret %q, want %q", w, e.Name, r.Name, secretName)
						} else if !secretKeys[r.Key] {
							t.Errorf("%s env %s: key %q is not documented in %s", w, e.Name, r.Key, exampleSecretFile)
						}
					}
				}
			}
		}
		for _, ta := range all[TriggerAuthentication](ms) {
			for _, r := range ta.Spec.SecretTargetRef {
				if r.Name != secretName || !secretKeys[r.Key] {
					t.Errorf("TriggerAuthentication %s: secret %s key %s, want a key of %s documented in %s", ta.Metadata.Name, r.Name, r.Key, secretName, exampleSecretFile)
				}
			}
		}
	})

	t.Run("listen address matches the http container port", func(t *testing.T) {
		for _, w := range workloads(ms) {
			for _, c := range w.spec.Containers {
				addr, ok := envOf(c, cm)["ETL_HTTP_ADDR"]
				if !ok {
					continue
				}
				_, port, err := net.SplitHostPort(addr)
				n, convErr := strconv.Atoi(port)
				if err != nil || convErr != nil {
					t.Errorf("%s container %s: ETL_HTTP_ADDR %q is not host:port", w, c.Name, addr)
					continue
				}
				if !portExists(c, intstr.FromString("http")) || !portExists(c, intstr.FromInt32(int32(n))) {
					t.Errorf("%s container %s: ETL_HTTP_ADDR %q, but no container port named http on %d", w, c.Name, addr, n)
				}
			}
		}
	})

	t.Run("probe ports and service target ports exist", func(t *testing.T) {
		for _, w := range workloads(ms) {
			for _, c := range w.containers() {
				for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
					switch {
					case p == nil:
					case p.HTTPGet != nil && !portExists(c, p.HTTPGet.Port):
						t.Errorf("%s container %s: %s probe port %s is not a container port", w, c.Name, name, p.HTTPGet.Port.String())
					case p.TCPSocket != nil && !portExists(c, p.TCPSocket.Port):
						t.Errorf("%s container %s: %s probe port %s is not a container port", w, c.Name, name, p.TCPSocket.Port.String())
					case p.GRPC != nil && !portExists(c, intstr.FromInt32(p.GRPC.Port)):
						t.Errorf("%s container %s: %s probe port %d is not a container port", w, c.Name, name, p.GRPC.Port)
					}
				}
			}
		}
		for _, s := range all[corev1.Service](ms) {
			sel := selectedWorkloads(t, ms, &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
			for _, sp := range s.Spec.Ports {
				target := sp.TargetPort
				if target.Type == intstr.Int && target.IntVal == 0 {
					target = intstr.FromInt32(sp.Port)
				}
				for _, w := range sel {
					found := false
					for _, c := range w.spec.Containers {
						found = found || portExists(c, target)
					}
					if !found {
						t.Errorf("Service %s port %d: targetPort %s is not a container port of %s", s.Name, sp.Port, target.String(), w)
					}
				}
			}
		}
	})

	t.Run("termination grace exceeds shutdown timeout", func(t *testing.T) {
		timeout := shutdownTimeout(t, cm)
		for _, w := range workloads(ms) {
			grace := 30 * time.Second // Kubernetes default
			if w.spec.TerminationGracePeriodSeconds != nil {
				grace = time.Duration(*w.spec.TerminationGracePeriodSeconds) * time.Second
			}
			for _, c := range w.spec.Containers {
				_, reads := envOf(c, cm)["ETL_SHUTDOWN_TIMEOUT"]
				if !reads {
					if w.kind == "Deployment" && w.name == workerName {
						t.Errorf("%s container %s does not receive ETL_SHUTDOWN_TIMEOUT", w, c.Name)
					}
					continue
				}
				need := timeout + shutdownSlack
				if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
					need += time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
				}
				if grace <= need {
					t.Errorf("%s: terminationGracePeriodSeconds %s must exceed %s (ETL_SHUTDOWN_TIMEOUT %s + %s + preStop)", w, grace, need, timeout, shutdownSlack)
				}
			}
		}
	})

	t.Run("containers have resources and a hardened security context", func(t *testing.T) {
		for _, w := range workloads(ms) {
			pod := w.spec.SecurityContext
			if pod == nil {
				pod = &corev1.PodSecurityContext{}
			}
			for _, c := range w.containers() {
				where := fmt.Sprintf("%s container %s", w, c.Name)
				for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					req, hasReq := c.Resources.Requests[r]
					lim, hasLim := c.Resources.Limits[r]
					if !hasReq || !hasLim || req.IsZero() || lim.IsZero() {
						t.Errorf("%s: %s request and limit must both be set", where, r)
					} else if req.Cmp(lim) > 0 {
						t.Errorf("%s: %s request %s exceeds limit %s", where, r, req.String(), lim.String())
					}
				}
				sc := c.SecurityContext
				if sc == nil {
					sc = &corev1.SecurityContext{}
				}
				nonRoot := sc.RunAsNonRoot
				if nonRoot == nil {
					nonRoot = pod.RunAsNonRoot
				}
				if nonRoot == nil || !*nonRoot {
					t.Errorf("%s: runAsNonRoot must be true", where)
				}
				uid := sc.RunAsUser
				if uid == nil {
					uid = pod.RunAsUser
				}
				if uid == nil || *uid != nonRootUID {
					t.Errorf("%s: runAsUser must be %d", where, nonRootUID)
				}
				if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
					t.Errorf("%s: readOnlyRootFilesystem must be true", where)
				}
				if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
					t.Errorf("%s: allowPrivilegeEscalation must be false", where)
				}
				if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
					t.Errorf("%s: capabilities must drop ALL and add none", where)
				}
			}
		}
	})

	t.Run("keda scales the worker on every queue", func(t *testing.T) {
		sos := all[ScaledObject](ms)
		if kind == sourceSet && len(sos) != 1 {
			t.Fatalf("want exactly one ScaledObject in the base, found %d", len(sos))
		}
		want := map[string]bool{}
		for _, q := range queues(t, cm) {
			want["asynq:{"+q+"}:pending"] = true
		}
		for _, so := range sos {
			checkScaledObject(t, ms, so, cm, want)
		}
	})

	t.Run("hpa targets the worker", func(t *testing.T) {
		for _, h := range all[autoscalingv2.HorizontalPodAutoscaler](ms) {
			ref := h.Spec.ScaleTargetRef
			if ref.Kind != "Deployment" || ref.Name != workerName {
				t.Errorf("HorizontalPodAutoscaler %s targets %s/%s, want Deployment/%s", h.Name, ref.Kind, ref.Name, workerName)
			}
			if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
				t.Errorf("HorizontalPodAutoscaler %s: want 1 <= minReplicas <= maxReplicas", h.Name)
			}
		}
	})

	t.Run("workload contract", func(t *testing.T) {
		checkContract(t, ms, cm)
	})

	if kind == renderedSet {
		t.Run("exactly one autoscaler for the worker", func(t *testing.T) {
			n := len(all[ScaledObject](ms)) + len(all[autoscalingv2.HorizontalPodAutoscaler](ms))
			if n != 1 {
				t.Errorf("worker has %d autoscalers (ScaledObject + HPA), want exactly 1", n)
			}
		})
		t.Run("images are pinned", func(t *testing.T) {
			for _, w := range workloads(ms) {
				for _, c := range w.containers() {
					if !strings.Contains(c.Image, ":") || strings.HasSuffix(c.Image, ":latest") {
						t.Errorf("%s container %s: image %q must carry an explicit, non-latest tag", w, c.Name, c.Image)
					}
				}
			}
		})
	}
}

func checkScaledObject(t *testing.T, ms []manifest, so *ScaledObject, cm map[string]string, wantLists map[string]bool) {
	t.Helper()
	name := "ScaledObject " + so.Metadata.Name
	ref := so.Spec.ScaleTargetRef
	if ref == nil || (ref.Kind != "" && ref.Kind != "Deployment") || ref.Name != workerName {
		t.Fatalf("%s: scaleTargetRef %+v, want Deployment %s", name, ref, workerName)
	}
	d := findDeployment(ms, ref.Name)
	if d == nil {
		t.Fatalf("%s: scaleTargetRef names Deployment %s, which does not exist", name, ref.Name)
	}
	if len(d.Spec.Template.Spec.Containers) == 0 || !slices.Equal(d.Spec.Template.Spec.Containers[0].Command, []string{"/etlexec/worker"}) {
		t.Errorf("%s: target Deployment %s does not run /etlexec/worker", name, d.Name)
	}
	min, max := so.Spec.MinReplicaCount, so.Spec.MaxReplicaCount
	if min == nil || *min < 1 {
		t.Errorf("%s: minReplicaCount must be >= 1 (pending excludes active and retry tasks; see README.md)", name)
	}
	if max == nil || (min != nil && *max < *min) {
		t.Errorf("%s: maxReplicaCount must be set and >= minReplicaCount", name)
	}

	// KEDA resolves *FromEnv parameters from this container's environment.
	var envSource *corev1.Container
	for i, c := range d.Spec.Template.Spec.Containers {
		if (ref.EnvSourceContainerName == "" && i == 0) || c.Name == ref.EnvSourceContainerName {
			envSource = &d.Spec.Template.Spec.Containers[i]
		}
	}
	if envSource == nil {
		t.Fatalf("%s: envSourceContainerName %q is not a container of %s", name, ref.EnvSourceContainerName, d.Name)
	}
	env := envOf(*envSource, cm)

	auths := map[string]bool{}
	for _, ta := range all[TriggerAuthentication](ms) {
		auths[ta.Metadata.Name] = true
	}
	got := map[string]bool{}
	for i, tr := range so.Spec.Triggers {
		where := fmt.Sprintf("%s trigger %d", name, i)
		if tr.Type != "redis" {
			t.Errorf("%s: type %q, want redis", where, tr.Type)
		}
		list := tr.Metadata["listName"]
		if got[list] {
			t.Errorf("%s: duplicate listName %q", where, list)
		}
		got[list] = true
		if !wantLists[list] {
			t.Errorf("%s: listName %q is not asynq:{<q>}:pending for a queue in ETL_QUEUES %q", where, list, cm["ETL_QUEUES"])
		}
		if n, err := strconv.Atoi(tr.Metadata["listLength"]); err != nil || n <= 0 {
			t.Errorf("%s: listLength %q, want a positive integer", where, tr.Metadata["listLength"])
		}
		if v := tr.Metadata["addressFromEnv"]; v == "" {
			t.Errorf("%s: want addressFromEnv", where)
		} else if _, ok := env[v]; !ok {
			t.Errorf("%s: addressFromEnv %s is not in the env of container %s", where, v, envSource.Name)
		}
		if tr.AuthenticationRef == nil || !auths[tr.AuthenticationRef.Name] {
			t.Errorf("%s: authenticationRef %+v names no TriggerAuthentication", where, tr.AuthenticationRef)
		}
	}
	for list := range wantLists {
		if !got[list] {
			t.Errorf("%s: no trigger for %q (one trigger per queue in ETL_QUEUES)", name, list)
		}
	}
}

func checkContract(t *testing.T, ms []manifest, cm map[string]string) {
	t.Helper()
	deployments := []struct {
		name    string
		command []string
		port    int32
	}{
		{workerName, []string{"/etlexec/worker"}, 9090},
		{schedulerName, []string{"/etlexec/enqueuer", "schedule"}, 9091},
		{serveName, []string{"/etlexec/enqueuer", "serve"}, 8080},
	}
	for _, want := range deployments {
		d := findDeployment(ms, want.name)
		if d == nil {
			t.Errorf("Deployment %s is missing", want.name)
			continue
		}
		cs := d.Spec.Template.Spec.Containers
		if len(cs) != 1 {
			t.Errorf("Deployment %s: want one container, found %d", d.Name, len(cs))
			continue
		}
		c := cs[0]
		if !slices.Equal(c.Command, want.command) {
			t.Errorf("Deployment %s: command %q, want %q", d.Name, c.Command, want.command)
		}
		if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != want.port {
			t.Errorf("Deployment %s: ports %+v, want one port http/%d", d.Name, c.Ports, want.port)
		}
		probes := []struct {
			probe *corev1.Probe
			path  string
		}{{c.LivenessProbe, "/healthz"}, {c.ReadinessProbe, "/readyz"}}
		for _, p := range probes {
			if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port != intstr.FromString("http") {
				t.Errorf("Deployment %s: want an httpGet probe on %s port http", d.Name, p.path)
			}
		}
		env := envOf(c, cm)
		for _, k := range []string{"DATABASE_URL", "REDIS_URL"} {
			if env[k] != "secret:"+k {
				t.Errorf("Deployment %s: %s must come from Secret %s key %s", d.Name, k, secretName, k)
			}
		}
		if env["OTEL_SERVICE_NAME"] != d.Name {
			t.Errorf("Deployment %s: OTEL_SERVICE_NAME %q, want %q", d.Name, env["OTEL_SERVICE_NAME"], d.Name)
		}
	}

	if d := findDeployment(ms, schedulerName); d != nil {
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
			t.Errorf("Deployment %s: replicas must be exactly 1", d.Name)
		}
		if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("Deployment %s: strategy %q, want Recreate", d.Name, d.Spec.Strategy.Type)
		}
	}
	if d := findDeployment(ms, serveName); d != nil && len(d.Spec.Template.Spec.Containers) == 1 {
		if envOf(d.Spec.Template.Spec.Containers[0], cm)["ETL_SERVE_TOKEN"] != "secret:ETL_SERVE_TOKEN" {
			t.Errorf("Deployment %s: ETL_SERVE_TOKEN must come from Secret %s", d.Name, secretName)
		}
		found := false
		for _, s := range all[corev1.Service](ms) {
			if !selects(t, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}, d.Spec.Template.Labels) {
				continue
			}
			found = true
			if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Port != 80 || s.Spec.Ports[0].TargetPort != intstr.FromString("http") {
				t.Errorf("Service %s: ports %+v, want 80 -> http", s.Name, s.Spec.Ports)
			}
		}
		if !found {
			t.Errorf("no Service selects Deployment %s", d.Name)
		}
	}

	var job *batchv1.Job
	for _, j := range all[batchv1.Job](ms) {
		if j.Name == migrateName {
			job = j
		}
	}
	if job == nil {
		t.Errorf("Job %s is missing", migrateName)
		return
	}
	if job.Spec.BackoffLimit == nil || *job.Spec.BackoffLimit != 2 {
		t.Errorf("Job %s: backoffLimit must be 2", job.Name)
	}
	cs := job.Spec.Template.Spec.Containers
	if len(cs) != 1 || !slices.Equal(cs[0].Command, []string{"/etlexec/enqueuer", "migrate"}) {
		t.Errorf("Job %s: want one container running /etlexec/enqueuer migrate", job.Name)
	} else if envOf(cs[0], cm)["DATABASE_URL"] != "secret:DATABASE_URL" {
		t.Errorf("Job %s: DATABASE_URL must come from Secret %s", job.Name, secretName)
	}
}

// ---------------------------------------------------------------------------------------------
// Tests.

func TestManifests(t *testing.T) {
	tr := loadTree(t)

	t.Run("source", func(t *testing.T) {
		checkSet(t, tr.resources(), tr.secretKeys, sourceSet)
	})

	t.Run("kustomization references exist", func(t *testing.T) {
		for dir, k := range tr.kustomization {
			check := func(field, ref string, wantDir bool) {
				if strings.Contains(ref, "://") || filepath.IsAbs(ref) {
					t.Errorf("%s/kustomization.yaml %s %q: only relative paths inside deploy/k8s", dir, field, ref)
					return
				}
				p := filepath.Join(dir, ref)
				fi, err := os.Stat(p)
				if err != nil {
					t.Errorf("%s/kustomization.yaml %s %q: %v", dir, field, ref, err)
					return
				}
				if fi.IsDir() {
					if _, ok := tr.kustomization[filepath.ToSlash(p)]; !ok {
						t.Errorf("%s/kustomization.yaml %s %q: directory has no kustomization.yaml", dir, field, ref)
					}
				} else if wantDir {
					t.Errorf("%s/kustomization.yaml %s %q: want a directory", dir, field, ref)
				}
				if strings.Contains(ref, ".example.") {
					t.Errorf("%s/kustomization.yaml %s %q: example files must not be applied", dir, field, ref)
				}
			}
			for _, r := range k.Resources {
				check("resources", r, false)
			}
			for _, c := range k.Components {
				check("components", c, true)
				if ck := tr.kustomization[filepath.ToSlash(filepath.Join(dir, c))]; ck != nil && ck.Kind != "Component" {
					t.Errorf("%s/kustomization.yaml component %q is a %s, want Component", dir, c, ck.Kind)
				}
			}
			for _, p := range k.Patches {
				if (p.Path == "") == (p.Patch == "") {
					t.Errorf("%s/kustomization.yaml: each patch needs exactly one of path and patch", dir)
				}
				if p.Path != "" {
					check("patches", p.Path, false)
				}
			}
		}
	})

	t.Run("base is complete and does not include optional components", func(t *testing.T) {
		base := tr.kustomization["base"]
		if base == nil {
			t.Fatal("base/kustomization.yaml is missing")
		}
		for _, r := range append(slices.Clone(base.Resources), base.Components...) {
			if strings.Contains(r, "components") || strings.Contains(r, "overlays") {
				t.Errorf("base references %q; optional components belong in overlays", r)
			}
		}
		if k := tr.kustomization["components/hpa-cpu"]; k == nil || k.Kind != "Component" {
			t.Errorf("components/hpa-cpu must be a kustomize Component")
		}
	})

	t.Run("overlays reference the base", func(t *testing.T) {
		for _, o := range []string{"overlays/dev", "overlays/prod"} {
			k := tr.kustomization[o]
			if k == nil {
				t.Errorf("%s/kustomization.yaml is missing", o)
				continue
			}
			if !slices.ContainsFunc(k.Resources, func(r string) bool { return filepath.Join(o, r) == "base" }) {
				t.Errorf("%s does not list the base in resources: %q", o, k.Resources)
			}
			if len(k.Images) == 0 {
				t.Errorf("%s must set the image tag through `images`", o)
			}
		}
	})

	t.Run("every yaml file is referenced by a kustomization", func(t *testing.T) {
		used := map[string]bool{}
		for dir, k := range tr.kustomization {
			used[dir+"/kustomization.yaml"] = true
			for _, r := range k.Resources {
				used[filepath.ToSlash(filepath.Join(dir, r))] = true
			}
			for _, p := range k.Patches {
				if p.Path != "" {
					used[filepath.ToSlash(filepath.Join(dir, p.Path))] = true
				}
			}
		}
		for f := range tr.files {
			if !used[f] {
				t.Errorf("%s is not referenced by any kustomization (dead file, or name it *.example.yaml)", f)
			}
		}
	})

	t.Run("patches target base objects", func(t *testing.T) {
		targets := map[string]manifest{}
		for _, m := range tr.resources() {
			targets[m.kind+"/"+m.name] = m
		}
		for dir, k := range tr.kustomization {
			for _, p := range k.Patches {
				var docs []manifest
				if p.Path != "" {
					docs = tr.files[filepath.ToSlash(filepath.Join(dir, p.Path))]
				} else {
					// Inline patches may carry `$patch: delete`; only their header is checked.
					for i, doc := range splitDocs([]byte(p.Patch)) {
						var h header
						if err := yaml.Unmarshal(doc, &h); err != nil {
							t.Errorf("%s inline patch: %v", dir, err)
							continue
						}
						docs = append(docs, manifest{file: dir + " (inline)", index: i, kind: h.Kind, name: h.Metadata.Name})
					}
				}
				for _, m := range docs {
					target, ok := targets[m.kind+"/"+m.name]
					if !ok {
						t.Errorf("%s: patch target %s/%s does not exist in the base or components", m, m.kind, m.name)
						continue
					}
					checkPatch(t, m, target)
				}
			}
		}
	})
}

// checkPatch catches patches that kustomize would apply "successfully" but wrongly: a container
// name typo adds an image-less container, and scaler bounds must stay sane per overlay.
func checkPatch(t *testing.T, patch, target manifest) {
	t.Helper()
	switch p := patch.obj.(type) {
	case *appsv1.Deployment:
		base := target.obj.(*appsv1.Deployment)
		for _, c := range p.Spec.Template.Spec.Containers {
			if !slices.ContainsFunc(base.Spec.Template.Spec.Containers, func(b corev1.Container) bool { return b.Name == c.Name }) {
				t.Errorf("%s: container %q is not in Deployment %s", patch, c.Name, base.Name)
			}
		}
	case *ScaledObject:
		min, max := p.Spec.MinReplicaCount, p.Spec.MaxReplicaCount
		if min != nil && *min < 1 {
			t.Errorf("%s: minReplicaCount %d < 1", patch, *min)
		}
		if min != nil && max != nil && *max < *min {
			t.Errorf("%s: maxReplicaCount %d < minReplicaCount %d", patch, *max, *min)
		}
	}
}

// TestRenderedOverlays builds each overlay with kustomize (standalone or kubectl's) and runs the
// same cross-checks on the output. Skipped when neither binary is installed.
func TestRenderedOverlays(t *testing.T) {
	build := kustomizeCommand(t)
	tr := loadTree(t)

	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	// overlays/prod with the optional HPA component: built from a scratch kustomization.
	scratch := t.TempDir()
	rel := func(p string) string {
		r, err := filepath.Rel(scratch, filepath.Join(wd, p))
		if err != nil {
			t.Fatal(err)
		}
		return filepath.ToSlash(r)
	}
	withHPA := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- %s\ncomponents:\n- %s\n",
		rel("overlays/prod"), rel("components/hpa-cpu"))
	if err := os.WriteFile(filepath.Join(scratch, "kustomization.yaml"), []byte(withHPA), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ name, dir string }{
		{"dev", "overlays/dev"},
		{"prod", "overlays/prod"},
		{"prod+hpa-cpu", scratch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := build(tc.dir)
			if err != nil {
				t.Fatalf("kustomize build %s: %v", tc.name, err)
			}
			ms, errs := decodeStream(tc.name, out)
			for _, e := range errs {
				t.Error(e)
			}
			if t.Failed() {
				t.FailNow()
			}
			checkSet(t, ms, tr.secretKeys, renderedSet)
		})
	}

	t.Run("overlay values", func(t *testing.T) {
		render := func(dir string) []manifest {
			out, err := build(dir)
			if err != nil {
				t.Fatalf("kustomize build %s: %v", dir, err)
			}
			ms, errs := decodeStream(dir, out)
			if len(errs) > 0 {
				t.Fatalf("%s: %v", dir, errors.Join(errs...))
			}
			return ms
		}
		dev, prod := render("overlays/dev"), render("overlays/prod")
		so := func(ms []manifest) *ScaledObject {
			sos := all[ScaledObject](ms)
			if len(sos) != 1 {
				t.Fatalf("want one ScaledObject, found %d", len(sos))
			}
			return sos[0]
		}
		if d := findDeployment(dev, workerName); d == nil || d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || *so(dev).Spec.MaxReplicaCount != 1 {
			t.Errorf("dev: want exactly one worker replica")
		}
		if *so(prod).Spec.MinReplicaCount <= *so(dev).Spec.MinReplicaCount || *so(prod).Spec.MaxReplicaCount <= *so(dev).Spec.MaxReplicaCount {
			t.Errorf("prod: want higher worker min/max replicas than dev")
		}
		devW, prodW := findDeployment(dev, workerName), findDeployment(prod, workerName)
		devMem := devW.Spec.Template.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory]
		prodMem := prodW.Spec.Template.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory]
		if devMem.Cmp(prodMem) >= 0 {
			t.Errorf("dev worker memory limit %s should be below prod's %s", devMem.String(), prodMem.String())
		}
		if img := devW.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(img, ":dev") {
			t.Errorf("dev worker image %q, want tag dev", img)
		}
	})
}

// kustomizeCommand returns a function that renders a kustomization directory, or skips the test
// if no kustomize is installed. ETLEXEC_KUSTOMIZE may name the binary ("kustomize" or "kubectl").
func kustomizeCommand(t *testing.T) func(dir string) ([]byte, error) {
	t.Helper()
	run := func(name string, args ...string) ([]byte, error) {
		cmd := exec.Command(name, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, stderr.String())
		}
		return out, nil
	}
	candidates := []string{"kustomize", "kubectl"}
	if v := os.Getenv("ETLEXEC_KUSTOMIZE"); v != "" {
		candidates = []string{v}
	}
	for _, c := range candidates {
		path, err := exec.LookPath(c)
		if err != nil {
			continue
		}
		if filepath.Base(path) == "kubectl" || strings.HasPrefix(filepath.Base(path), "kubectl") {
			return func(dir string) ([]byte, error) { return run(path, "kustomize", dir) }
		}
		return func(dir string) ([]byte, error) { return run(path, "build", dir) }
	}
	t.Skip("neither kustomize nor kubectl is installed; rendered overlays not checked")
	return nil
}

// TestUnmarshalStrictRejectsTypo pins the property every other check relies on: a misspelled
// field is an error, not silently dropped.
func TestUnmarshalStrictRejectsTypo(t *testing.T) {
	const doc = `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: etlexec-worker
spec:
  template:
    spec:
      terminationGracePeriodSecond: 60
      containers: []
`
	var d appsv1.Deployment
	if err := yaml.Unmarshal([]byte(doc), &d); err != nil {
		t.Fatalf("lenient decode should accept the typo, got %v", err)
	}
	err := yaml.UnmarshalStrict([]byte(doc), &d)
	if err == nil || !strings.Contains(err.Error(), `unknown field "terminationGracePeriodSecond"`) {
		t.Fatalf("UnmarshalStrict: got %v, want an unknown field error naming terminationGracePeriodSecond", err)
	}

	// The same holds for our own KEDA struct and through the document dispatcher.
	_, errs := decodeStream("typo.yaml", []byte(`
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: etlexec-worker}
spec:
  minReplicaCont: 1
`))
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "minReplicaCont") {
		t.Fatalf("decodeStream: got %v, want one unknown field error for minReplicaCont", errs)
	}
	_, errs = decodeStream("kind.yaml", []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n"))
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "unknown kind") {
		t.Fatalf("decodeStream: got %v, want an unknown kind error", errs)
	}
}
