package main

// soak: a bounded mixed load for the reliability soak (tests/test_soak.py).
//
// Small-object workers pick, per request, PUT (40 %), GET (40 %), LIST (10 %) or
// DELETE (10 %) on a fixed key space, so the stored data stays bounded however
// long the run; segment workers push 16 MiB bodies one after another (at most
// one per -segment-interval), as archive_command does, and delete the one pushed `-segment-keep` earlier. Every
// answer other than the expected ones (200/204, 404 for a GET or DELETE of a key
// not written yet) counts as an error. The run stops at -duration or -max-ops,
// whichever comes first. Prints one JSON object: per operation count, errors,
// p50/p99/max latency in milliseconds, and the first errors seen.

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	mrand "math/rand"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

type opStats struct {
	mu     sync.Mutex
	lat    []float64 // milliseconds
	errors int64
}

func (s *opStats) add(d time.Duration, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lat = append(s.lat, float64(d.Microseconds())/1000)
	if !ok {
		s.errors++
	}
}

func (s *opStats) summary() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := append([]float64(nil), s.lat...)
	sort.Float64s(l)
	q := func(p float64) float64 {
		if len(l) == 0 {
			return 0
		}
		return l[min(len(l)-1, int(p*float64(len(l))))]
	}
	mx := 0.0
	if len(l) > 0 {
		mx = l[len(l)-1]
	}
	return map[string]any{"count": len(l), "errors": s.errors, "p50_ms": q(0.50), "p99_ms": q(0.99), "max_ms": mx}
}

func cmdSoak(args []string) {
	fs := flag.NewFlagSet("soak", flag.ExitOnError)
	c := commonFlags(fs)
	duration := fs.Duration("duration", 30*time.Minute, "run for this long")
	maxOps := fs.Int64("max-ops", 50_000_000, "stop after this many requests")
	smallWorkers := fs.Int("small-workers", 8, "concurrent small-object workers")
	smallSize := fs.Int("small-size", 4096, "small object size (bytes)")
	keys := fs.Int("keys", 2000, "small-object key space")
	segWorkers := fs.Int("segment-workers", 1, "concurrent 16 MiB pushers")
	segSize := fs.Int("segment-size", 16<<20, "segment size (bytes)")
	segKeep := fs.Int("segment-keep", 8, "segments kept; older ones are deleted")
	segEvery := fs.Duration("segment-interval", time.Second, "each pusher starts at most one push per interval")
	seed := fs.Int64("seed", time.Now().UnixNano(), "random seed")
	_ = fs.Parse(args)
	if *duration <= 0 || *duration > 24*time.Hour {
		fail("-duration must be within (0, 24h]")
	}
	cl := c.client(*smallWorkers + *segWorkers + 2)
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()

	stats := map[string]*opStats{}
	for _, op := range []string{"put_small", "get_small", "list", "delete_small", "put_segment", "delete_segment"} {
		stats[op] = &opStats{}
	}
	var ops atomic.Int64
	var firstErrs sync.Map
	var nErrs atomic.Int64
	record := func(op string, t0 time.Time, status int, body []byte, err error, okStatus ...int) {
		if ctx.Err() != nil && err != nil {
			return // the deadline cut this request short: not the server's fault
		}
		ok := err == nil
		if ok {
			ok = false
			for _, s := range okStatus {
				if status == s {
					ok = true
				}
			}
		}
		stats[op].add(time.Since(t0), ok)
		if !ok && nErrs.Add(1) <= 20 {
			msg := fmt.Sprintf("HTTP %d: %.200s", status, body)
			if err != nil {
				msg = err.Error()
			}
			firstErrs.Store(fmt.Sprintf("%s#%d", op, nErrs.Load()), msg)
		}
	}
	more := func() bool { return ctx.Err() == nil && ops.Add(1) <= *maxOps }

	var wg sync.WaitGroup
	for w := 0; w < *smallWorkers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := mrand.New(mrand.NewSource(*seed + int64(w)))
			body := make([]byte, *smallSize)
			for more() {
				key := fmt.Sprintf("/%s/soak/small/%06d", *c.bucket, r.Intn(*keys))
				t0 := time.Now()
				switch p := r.Intn(10); {
				case p < 4:
					_, _ = rand.Read(body)
					st, b, err := cl.doBody(ctx, "PUT", key, nil, body)
					record("put_small", t0, st, b, err, 200)
				case p < 8:
					st, b, err := cl.do(ctx, "GET", key, nil)
					record("get_small", t0, st, b, err, 200, 404)
				case p < 9:
					st, b, err := cl.do(ctx, "GET", "/"+*c.bucket, [][2]string{{"list-type", "2"},
						{"prefix", "soak/small/"}, {"max-keys", "100"}, {"start-after", key[len(*c.bucket)+2:]}})
					record("list", t0, st, b, err, 200)
				default:
					st, b, err := cl.do(ctx, "DELETE", key, nil)
					record("delete_small", t0, st, b, err, 204)
				}
			}
		}(w)
	}
	var segNext atomic.Int64
	for w := 0; w < *segWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := make([]byte, *segSize)
			tick := time.NewTicker(*segEvery)
			defer tick.Stop()
			for more() {
				select {
				case <-tick.C:
				case <-ctx.Done():
					return
				}
				n := segNext.Add(1) - 1
				_, _ = rand.Read(body)
				t0 := time.Now()
				st, b, err := cl.doBody(ctx, "PUT", fmt.Sprintf("/%s/soak/segments/%08d", *c.bucket, n), nil, body)
				record("put_segment", t0, st, b, err, 200)
				if old := n - int64(*segKeep); old >= 0 && ctx.Err() == nil {
					t0 = time.Now()
					st, b, err = cl.do(ctx, "DELETE", fmt.Sprintf("/%s/soak/segments/%08d", *c.bucket, old), nil)
					record("delete_segment", t0, st, b, err, 204)
				}
			}
		}()
	}
	t0 := time.Now()
	wg.Wait()
	res := map[string]any{"seconds": time.Since(t0).Seconds(), "requests": min(ops.Load(), *maxOps),
		"errors": nErrs.Load(), "seed": *seed}
	for op, s := range stats {
		res[op] = s.summary()
	}
	var first []string
	firstErrs.Range(func(k, v any) bool {
		first = append(first, fmt.Sprintf("%v: %v", k, v))
		return true
	})
	sort.Strings(first)
	res["first_errors"] = first
	out(res)
	if nErrs.Load() > 0 {
		os.Exit(2)
	}
}
