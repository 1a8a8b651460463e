// Command crdcheck validates Prometheus Operator objects (ServiceMonitor,
// PrometheusRule) in YAML files offline: each document of those kinds is
// decoded strictly into the operator's own Go types, so a misspelt or
// misplaced field, or a value of the wrong type, is an error instead of being
// pruned silently by the API server. Rule expressions are checked separately
// with promtool. Documents of other kinds are skipped.
//
//	crdcheck FILE...    (exit status 1 on the first invalid document set)
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

func strict(doc []byte, into any) error {
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return err
	}
	return nil
}

func check(doc []byte) (string, error) {
	var tm typeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return "", err
	}
	if tm.APIVersion != "monitoring.coreos.com/v1" {
		return "", nil
	}
	switch tm.Kind {
	case "ServiceMonitor":
		var sm monitoringv1.ServiceMonitor
		if err := strict(doc, &sm); err != nil {
			return tm.Kind, err
		}
		if len(sm.Spec.Endpoints) == 0 {
			return tm.Kind, errors.New("spec.endpoints is empty")
		}
		for i, ep := range sm.Spec.Endpoints {
			if ep.Port == "" {
				return tm.Kind, fmt.Errorf("spec.endpoints[%d].port is not set", i)
			}
		}
		return tm.Kind + "/" + sm.Name, nil
	case "PrometheusRule":
		var pr monitoringv1.PrometheusRule
		if err := strict(doc, &pr); err != nil {
			return tm.Kind, err
		}
		if len(pr.Spec.Groups) == 0 {
			return tm.Kind, errors.New("spec.groups is empty")
		}
		return tm.Kind + "/" + pr.Name, nil
	default:
		return "", fmt.Errorf("unknown kind %s of %s", tm.Kind, tm.APIVersion)
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crdcheck FILE...")
		os.Exit(2)
	}
	failed := false
	for _, path := range os.Args[1:] {
		f, err := os.Open(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		dec := yamlv3.NewDecoder(f)
		for n := 0; ; n++ {
			var node yamlv3.Node
			err := dec.Decode(&node)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				fmt.Printf("FAIL %s document %d: %v\n", path, n, err)
				failed = true
				break
			}
			raw, err := yamlv3.Marshal(&node)
			if err != nil {
				fmt.Printf("FAIL %s document %d: %v\n", path, n, err)
				failed = true
				continue
			}
			what, err := check(raw)
			switch {
			case err != nil:
				fmt.Printf("FAIL %s document %d %s: %v\n", path, n, what, err)
				failed = true
			case what != "":
				fmt.Printf("ok   %s %s\n", path, what)
			}
		}
		f.Close()
	}
	if failed {
		os.Exit(1)
	}
}
