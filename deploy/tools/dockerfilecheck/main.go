// Command dockerfilecheck lints Dockerfiles offline with BuildKit's own
// Dockerfile frontend (the checks of `docker build --check`): syntax, flags
// such as RUN --mount, stage references, undefined variables and BuildKit's
// lint rules. Base images are never fetched: a stub resolver answers every
// image reference with an empty Linux image config.
//
//	dockerfilecheck FILE...    (exit status 1 on any error or lint warning)
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	digest "github.com/opencontainers/go-digest"
)

// offlineResolver stands in for a registry: no network, a minimal config.
type offlineResolver struct{}

func (offlineResolver) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	cfg := []byte(`{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},"rootfs":{"type":"layers","diff_ids":[]}}`)
	return ref, digest.FromBytes(cfg), cfg, nil
}

func lint(path string) (int, error) {
	dt, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	ctx := context.Background()
	sm := llb.NewSourceMap(nil, path, "Dockerfile", dt)
	def, err := llb.Scratch().Marshal(ctx)
	if err != nil {
		return 0, err
	}
	sm.Definition = def
	res, err := dockerfile2llb.DockerfileLint(ctx, dt, dockerfile2llb.ConvertOpt{
		SourceMap:    sm,
		MetaResolver: offlineResolver{},
	})
	if err != nil {
		return 0, err
	}
	for _, w := range res.Warnings {
		line := 0
		if w.Location != nil && len(w.Location.Ranges) > 0 {
			line = int(w.Location.Ranges[0].Start.Line)
		}
		fmt.Printf("%s:%d: %s: %s\n", path, line, w.RuleName, w.Detail)
	}
	if res.Error != nil {
		return len(res.Warnings), fmt.Errorf("%s", res.Error.Message)
	}
	return len(res.Warnings), nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dockerfilecheck FILE...")
		os.Exit(2)
	}
	failed := false
	for _, path := range os.Args[1:] {
		n, err := lint(path)
		switch {
		case err != nil:
			fmt.Printf("FAIL %s: %v\n", path, err)
			failed = true
		case n > 0:
			fmt.Printf("FAIL %s: %d lint warnings\n", path, n)
			failed = true
		default:
			fmt.Printf("ok   %s\n", path)
		}
	}
	if failed {
		os.Exit(1)
	}
}
