// Package istiopolicy translates between Istio AuthorizationPolicy
// (security.istio.io/v1) and egress-authz rule sets, both ways, and says
// what did not translate.
//
// Import never widens access: an ALLOW rule that cannot be expressed
// exactly is narrowed or left out, a DENY rule that cannot be is widened,
// and each such choice is a Finding. Export writes the coarse ALLOW
// policy for the egress gateway that holds if the ext_authz call fails
// open: who may reach which hosts, a superset of what the rules allow.
//
// The package reads policies with its own minimal structs, decoded
// strictly (an unknown field is an error, not silence), so that the
// server's module does not depend on Istio's API modules; the deploy
// module's tests decode what Export writes with Istio's own types.
package istiopolicy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"

	"go.yaml.in/yaml/v3"

	"github.com/egress-authz/egress-authz/rules"
)

// AuthorizationPolicy is the part of security.istio.io/v1
// AuthorizationPolicy that decides requests, plus the envelope that
// "kubectl get -o yaml" adds, accepted so that such output imports.
type AuthorizationPolicy struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   Metadata `yaml:"metadata"`
	Spec       Spec     `yaml:"spec"`
	Status     any      `yaml:"status"`
}

// Metadata is a Kubernetes object's metadata; only the name and namespace
// mean anything here.
type Metadata struct {
	Name              string            `yaml:"name"`
	Namespace         string            `yaml:"namespace"`
	Labels            map[string]string `yaml:"labels"`
	Annotations       map[string]string `yaml:"annotations"`
	UID               string            `yaml:"uid"`
	ResourceVersion   string            `yaml:"resourceVersion"`
	Generation        int64             `yaml:"generation"`
	CreationTimestamp any               `yaml:"creationTimestamp"`
	ManagedFields     any               `yaml:"managedFields"`
	Finalizers        []string          `yaml:"finalizers"`
	OwnerReferences   any               `yaml:"ownerReferences"`
}

// Spec is an AuthorizationPolicy's spec.
type Spec struct {
	Selector   *Selector   `yaml:"selector"`
	TargetRef  *TargetRef  `yaml:"targetRef"`
	TargetRefs []TargetRef `yaml:"targetRefs"`
	Action     string      `yaml:"action"`
	Provider   *Provider   `yaml:"provider"`
	Rules      []Rule      `yaml:"rules"`
}

// Selector selects the workloads a policy applies to.
type Selector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

// TargetRef names a resource a policy is attached to.
type TargetRef struct {
	Group     string `yaml:"group"`
	Kind      string `yaml:"kind"`
	Name      string `yaml:"name"`
	Namespace string `yaml:"namespace"`
}

// Provider is a CUSTOM policy's extension provider.
type Provider struct {
	Name string `yaml:"name"`
}

// Rule matches when one of its sources, one of its operations and all
// of its conditions match; an absent list matches anything.
type Rule struct {
	From []From      `yaml:"from"`
	To   []To        `yaml:"to"`
	When []Condition `yaml:"when"`
}

// From holds one source.
type From struct {
	Source Source `yaml:"source"`
}

// To holds one operation.
type To struct {
	Operation Operation `yaml:"operation"`
}

// Source is who sends a request; its fields are ANDed, the entries of a
// field ORed.
type Source struct {
	Principals           []string `yaml:"principals"`
	NotPrincipals        []string `yaml:"notPrincipals"`
	RequestPrincipals    []string `yaml:"requestPrincipals"`
	NotRequestPrincipals []string `yaml:"notRequestPrincipals"`
	Namespaces           []string `yaml:"namespaces"`
	NotNamespaces        []string `yaml:"notNamespaces"`
	ServiceAccounts      []string `yaml:"serviceAccounts"`
	NotServiceAccounts   []string `yaml:"notServiceAccounts"`
	IPBlocks             []string `yaml:"ipBlocks"`
	NotIPBlocks          []string `yaml:"notIpBlocks"`
	RemoteIPBlocks       []string `yaml:"remoteIpBlocks"`
	NotRemoteIPBlocks    []string `yaml:"notRemoteIpBlocks"`
	TrustDomains         []string `yaml:"trustDomains"`
	NotTrustDomains      []string `yaml:"notTrustDomains"`
}

// Operation is what a request does; its fields are ANDed.
type Operation struct {
	Hosts      []string `yaml:"hosts"`
	NotHosts   []string `yaml:"notHosts"`
	Ports      []string `yaml:"ports"`
	NotPorts   []string `yaml:"notPorts"`
	Methods    []string `yaml:"methods"`
	NotMethods []string `yaml:"notMethods"`
	Paths      []string `yaml:"paths"`
	NotPaths   []string `yaml:"notPaths"`
}

// Condition is one more attribute a request must have.
type Condition struct {
	Key       string   `yaml:"key"`
	Values    []string `yaml:"values"`
	NotValues []string `yaml:"notValues"`
}

// Document is one AuthorizationPolicy read from a file, with its source
// node for the positions of its fields.
type Document struct {
	Policy AuthorizationPolicy
	Pos    rules.Pos
	node   *yaml.Node
}

// Name is "namespace/name", the way kubectl names the policy.
func (d *Document) Name() string {
	ns := d.Policy.Metadata.Namespace
	if ns == "" {
		ns = "default"
	}
	return ns + "/" + d.Policy.Metadata.Name
}

// at returns the position of the node at path below the document's root
// (mapping keys and sequence indexes), or of the deepest node found.
func (d *Document) at(path ...any) rules.Pos {
	pos := d.Pos
	n := d.node
	for _, step := range path {
		var next *yaml.Node
		switch s := step.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == s {
						pos.Line, pos.Col = n.Content[i].Line, n.Content[i].Column
						next = n.Content[i+1]
						break
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && s < len(n.Content) {
				next = n.Content[s]
				pos.Line, pos.Col = next.Line, next.Column
			}
		}
		if next == nil {
			return pos
		}
		n = next
	}
	return pos
}

var yamlLineRE = regexp.MustCompile(`^line (\d+): `)

// Decode reads the AuthorizationPolicies of a YAML file (one or more
// documents). Documents of other kinds are skipped and reported as
// findings; an AuthorizationPolicy with a field this package does not
// know is rejected with the field's place, the rest of the file read.
func Decode(src rules.Source) ([]Document, []Finding, error) {
	strict := yaml.NewDecoder(bytes.NewReader(src.Data))
	strict.KnownFields(true)
	nodes := yaml.NewDecoder(bytes.NewReader(src.Data))
	var docs []Document
	var findings []Finding
	for i := 0; ; i++ {
		var n yaml.Node
		err := nodes.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return docs, findings, fmt.Errorf("%s: invalid YAML: %w", src.Name, err)
		}
		var ap AuthorizationPolicy
		strictErr := strict.Decode(&ap)
		if len(n.Content) == 0 {
			continue
		}
		root := n.Content[0]
		pos := rules.Pos{File: src.Name, Line: root.Line, Col: root.Column}
		var head struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
		}
		_ = root.Decode(&head)
		if head.Kind != "AuthorizationPolicy" || (head.APIVersion != "security.istio.io/v1" && head.APIVersion != "security.istio.io/v1beta1") {
			findings = append(findings, Finding{Pos: pos, Outcome: Rejected,
				Msg: fmt.Sprintf("document %d is not a security.istio.io/v1 AuthorizationPolicy (apiVersion %q, kind %q): skipped", i+1, head.APIVersion, head.Kind)})
			continue
		}
		if strictErr != nil {
			var te *yaml.TypeError
			msg := strictErr.Error()
			if errors.As(strictErr, &te) && len(te.Errors) > 0 {
				msg = te.Errors[0]
			}
			p := pos
			if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
				p.Line, _ = strconv.Atoi(m[1])
				p.Col = 1
				msg = msg[len(m[0]):]
			}
			findings = append(findings, Finding{Pos: p, Outcome: Rejected,
				Msg: fmt.Sprintf("AuthorizationPolicy %s/%s: %s: the policy is left out", ap.Metadata.Namespace, ap.Metadata.Name, msg)})
			continue
		}
		docs = append(docs, Document{Policy: ap, Pos: pos, node: root})
	}
	return docs, findings, nil
}
