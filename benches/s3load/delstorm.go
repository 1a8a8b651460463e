package main

// delstorm: the delete latency of walstore's delete guard while /metrics is scraped.
//
// Each run lays out a fresh WAL-G repository (N segments and one backup near their end,
// a policy that releases the WAL before it, set through the admin API), then deletes the
// released segments as `wal-g delete` does (DeleteObjects batches, one client, in order)
// and times every batch. With -scrape-per-sec > 0 a second goroutine GETs /metrics at that
// rate for the whole storm. Every delete goes through the guard: a decision from the
// repository's evaluation, re-evaluated after each batch (the batch changed it). A scrape
// must only read the last evaluation, never compute one, so it must not slow deletes.

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func cmdDelstorm(args []string) {
	fs := flag.NewFlagSet("delstorm", flag.ExitOnError)
	c := commonFlags(fs)
	prefix := fs.String("prefix", "storm/r1/", "repository prefix (fresh for each run)")
	segments := fs.Int("segments", 20000, "WAL segments in the repository")
	batch := fs.Int("batch", 500, "keys per DeleteObjects")
	scrape := fs.Int("scrape-per-sec", 0, "GET /metrics this often during the storm (0 = none)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	_ = fs.Parse(args)
	cl := c.client(32)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	// The repository: segments 0..N-1, a full backup starting in segment N-4.
	seedWal(ctx, cl, *c.bucket, *prefix+"wal_005/", *segments)
	start := *segments - 4
	name := fmt.Sprintf("base_00000001%08X%08X", start/256, start%256)
	lsn := int64(start)*(16<<20) + 0x28
	finish := int64(start+1)*(16<<20) + 0x100
	dir := *prefix + "basebackups_005/" + name
	mustPut(ctx, cl, *c.bucket, dir+"/tar_partitions/part_001.tar.lz4", []byte("tar"))
	mustPut(ctx, cl, *c.bucket, dir+"/metadata.json",
		[]byte(fmt.Sprintf(`{"start_lsn":%d,"finish_lsn":%d,"is_permanent":false}`, lsn, finish)))
	mustPut(ctx, cl, *c.bucket, *prefix+"basebackups_005/"+name+"_backup_stop_sentinel.json",
		[]byte(fmt.Sprintf(`{"LSN":%d,"FinishLSN":%d,"IsPermanent":false,"Version":2}`, lsn, finish)))
	policy := `{"protection":"protect-required","recovery_window":"1ms","min_backups":1,"min_object_age":"0s",` +
		`"clock_skew":"0s","archive_lag_grace":"0s","gc_delay":"0s"}`
	status, body, err := cl.doBody(ctx, "PUT", "/_walstore/policy",
		[][2]string{{"bucket", *c.bucket}, {"prefix", *prefix}}, []byte(policy))
	if err != nil || status != 200 {
		fail("delstorm: setting the policy: %v HTTP %d %.300s", err, status, body)
	}

	var scrapes, scrapeErrs atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if *scrape > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			metrics := *c.endpoint + "/metrics"
			tick := time.NewTicker(time.Second / time.Duration(*scrape))
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					resp, err := http.Get(metrics)
					if err != nil || resp.StatusCode != 200 {
						scrapeErrs.Add(1)
					} else {
						scrapes.Add(1)
					}
					if resp != nil {
						_ = resp.Body.Close()
					}
				}
			}
		}()
	}
	// The storm: everything before the backup's start, oldest first.
	var lat []float64
	deleted, refused := 0, 0
	t0 := time.Now()
	for from := 0; from < start-1 && ctx.Err() == nil; from += *batch {
		to := from + *batch
		if to > start-1 {
			to = start - 1
		}
		var sb strings.Builder
		sb.WriteString("<Delete><Quiet>false</Quiet>")
		for n := from; n < to; n++ {
			sb.WriteString("<Object><Key>" + walKey(*prefix+"wal_005/", n) + "</Key></Object>")
		}
		sb.WriteString("</Delete>")
		t := time.Now()
		status, body, err := cl.doBody(ctx, "POST", "/"+*c.bucket, [][2]string{{"delete", ""}}, []byte(sb.String()))
		lat = append(lat, time.Since(t).Seconds()*1000)
		if err != nil || status != 200 {
			fail("delstorm: DeleteObjects: %v HTTP %d %.300s", err, status, body)
		}
		deleted += strings.Count(string(body), "<Deleted>")
		refused += strings.Count(string(body), "<Error>")
	}
	secs := time.Since(t0).Seconds()
	close(stop)
	wg.Wait()
	sort.Float64s(lat)
	q := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(p*float64(len(lat)-1)+0.5)]
	}
	out(map[string]any{"batches": len(lat), "deleted": deleted, "refused": refused, "seconds": secs,
		"p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": q(1), "scrapes": scrapes.Load(),
		"scrape_errors": scrapeErrs.Load(), "scrape_per_sec": *scrape})
	if refused > 0 {
		fail("delstorm: %d keys refused; the policy should release them all", refused)
	}
}

func seedWal(ctx context.Context, cl *client, bucket, prefix string, n int) {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				status, body, err := cl.doBody(ctx, "PUT", "/"+bucket+"/"+walKey(prefix, int(i)), nil, []byte("seg"))
				if err == nil && status != 200 {
					err = fmt.Errorf("HTTP %d: %.200s", status, body)
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err.Error())
					return
				}
			}
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		fail("delstorm: seeding: %v", e)
	}
}

func mustPut(ctx context.Context, cl *client, bucket, key string, body []byte) {
	status, resp, err := cl.doBody(ctx, "PUT", "/"+bucket+"/"+key, nil, body)
	if err != nil || status != 200 {
		fail("delstorm: PUT %s: %v HTTP %d %.200s", key, err, status, resp)
	}
}
