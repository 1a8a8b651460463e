package main

// Large single objects: `mpput` uploads one object by multipart upload (as WAL-G uploads a
// backup's tar partition), `get` measures the GET throughput of one object, as a single
// GET or as ranged GETs several at a time (as the AWS CLI and SDK transfer managers read).

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// cmdMpput uploads -size random bytes to -key in parts of -part-size, -concurrency parts
// at once: CreateMultipartUpload, UploadPart × N, CompleteMultipartUpload (aborted on a
// failure). Every part's bytes are fresh random bytes, so nothing is shared (no dedup).
func cmdMpput(args []string) {
	fs := flag.NewFlagSet("mpput", flag.ExitOnError)
	c := commonFlags(fs)
	key := fs.String("key", "", "object key")
	sizeS := fs.String("size", "1GiB", "object size")
	partS := fs.String("part-size", "20MiB", "part size (WAL-G's default S3 part size is 20 MiB)")
	conc := fs.Int("concurrency", 4, "parts uploaded at once")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	_ = fs.Parse(args)
	size, err := parseSize(*sizeS)
	if err != nil || size <= 0 {
		fail("size: %q", *sizeS)
	}
	partSize, err := parseSize(*partS)
	if err != nil || partSize < 5<<20 || partSize > 256<<20 {
		fail("part-size: %q (5MiB to 256MiB)", *partS)
	}
	if *key == "" || *conc < 1 || *conc > 64 {
		fail("mpput needs -key and -concurrency 1..64")
	}
	cl := c.client(*conc)
	cl.http.Timeout = *timeout
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	path := "/" + *c.bucket + "/" + *key
	t0 := time.Now()
	status, body, err := cl.doBody(ctx, "POST", path, [][2]string{{"uploads", ""}}, nil)
	uploadID := between(body, "<UploadId>", "</UploadId>")
	if err != nil || status != 200 || uploadID == "" {
		fail("CreateMultipartUpload: %v HTTP %d: %.300s", err, status, body)
	}
	abort := func(format string, args ...any) {
		actx, acancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer acancel()
		_, _, _ = cl.doBody(actx, "DELETE", path, [][2]string{{"uploadId", uploadID}}, nil)
		fail(format, args...)
	}
	nparts := int((size + partSize - 1) / partSize)
	if nparts > 10000 {
		abort("%d parts: more than 10,000", nparts)
	}
	etags := make([]string, nparts)
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, partSize)
			for ctx.Err() == nil && firstErr.Load() == nil {
				i := int(next.Add(1) - 1)
				if i >= nparts {
					return
				}
				n := partSize
				if rest := size - int64(i)*partSize; rest < n {
					n = rest
				}
				part := buf[:n]
				if _, err := rand.Read(part); err != nil {
					firstErr.CompareAndSwap(nil, fmt.Sprintf("rand: %v", err))
					return
				}
				q := [][2]string{{"partNumber", strconv.Itoa(i + 1)}, {"uploadId", uploadID}}
				req, err := cl.newRequest(ctx, "PUT", path, q, part)
				if err != nil {
					firstErr.CompareAndSwap(nil, err.Error())
					return
				}
				resp, err := cl.http.Do(req)
				if err != nil {
					firstErr.CompareAndSwap(nil, fmt.Sprintf("part %d: %v", i+1, err))
					return
				}
				rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
				resp.Body.Close()
				if resp.StatusCode != 200 || resp.Header.Get("ETag") == "" {
					firstErr.CompareAndSwap(nil, fmt.Sprintf("part %d: HTTP %d: %.300s", i+1, resp.StatusCode, rb))
					return
				}
				etags[i] = resp.Header.Get("ETag")
			}
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		abort("UploadPart: %v", e)
	}
	if ctx.Err() != nil {
		abort("timed out after %s", *timeout)
	}
	var sb strings.Builder
	sb.WriteString("<CompleteMultipartUpload>")
	for i, et := range etags {
		fmt.Fprintf(&sb, "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>", i+1, et)
	}
	sb.WriteString("</CompleteMultipartUpload>")
	status, body, err = cl.doBody(ctx, "POST", path, [][2]string{{"uploadId", uploadID}}, []byte(sb.String()))
	// S3 may answer 200 and report an error in the body.
	if err != nil || status != 200 || strings.Contains(string(body), "<Error>") {
		abort("CompleteMultipartUpload: %v HTTP %d: %.300s", err, status, body)
	}
	secs := time.Since(t0).Seconds()
	out(map[string]any{"key": *key, "bytes": size, "parts": nparts, "part_size": partSize, "seconds": secs,
		"mib_per_sec": float64(size) / secs / (1 << 20), "etag": xmlUnescape(between(body, "<ETag>", "</ETag>"))})
}

// cmdGet reads one object and throws its bytes away (or hashes them, -sha256, single
// stream only). -streams 1: one GET of the whole object. -streams N: the object in ranges
// of -range-size, N ranged GETs at a time (each worker takes the next range). The size
// comes from a HEAD first (not timed). Every byte count and status is checked; any
// failure ends the command with an error.
func cmdGet(args []string) {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	c := commonFlags(fs)
	key := fs.String("key", "", "object key")
	streams := fs.Int("streams", 1, "1: one GET; N: ranged GETs, N at a time")
	rangeS := fs.String("range-size", "8MiB", "bytes per ranged GET (-streams > 1)")
	hash := fs.Bool("sha256", false, "hash the bytes read and print the SHA-256 (-streams 1 only)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	_ = fs.Parse(args)
	rangeSize, err := parseSize(*rangeS)
	if err != nil || rangeSize < 1<<20 {
		fail("range-size: %q (at least 1MiB)", *rangeS)
	}
	if *key == "" || *streams < 1 || *streams > 64 || (*hash && *streams != 1) {
		fail("get needs -key, -streams 1..64, and -sha256 only with -streams 1")
	}
	cl := c.client(*streams)
	cl.http.Timeout = *timeout
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	path := "/" + *c.bucket + "/" + *key

	req, err := cl.newRequest(ctx, "HEAD", path, nil, nil)
	if err != nil {
		fail("%v", err)
	}
	resp, err := cl.http.Do(req)
	if err != nil {
		fail("HEAD: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength < 0 {
		fail("HEAD: HTTP %d, Content-Length %d", resp.StatusCode, resp.ContentLength)
	}
	size := resp.ContentLength

	// fetch GETs [from, to) (the whole object when to < 0) and returns the bytes read and
	// the time to the response headers.
	fetch := func(buf []byte, from, to int64, sum io.Writer) (int64, time.Duration, error) {
		req, err := cl.newRequest(ctx, "GET", path, nil, nil)
		if err != nil {
			return 0, 0, err
		}
		want, wantStatus := size, 200
		if to >= 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", from, to-1))
			want, wantStatus = to-from, 206
		}
		ts := time.Now()
		resp, err := cl.http.Do(req)
		if err != nil {
			return 0, 0, err
		}
		defer resp.Body.Close()
		ttfb := time.Since(ts)
		if resp.StatusCode != wantStatus {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			return 0, ttfb, fmt.Errorf("GET %d-%d: HTTP %d: %.300s", from, to, resp.StatusCode, b)
		}
		var got int64
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				got += int64(n)
				if sum != nil {
					_, _ = sum.Write(buf[:n])
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return got, ttfb, fmt.Errorf("GET %d-%d after %d bytes: %v", from, to, got, err)
			}
		}
		if got != want {
			return got, ttfb, fmt.Errorf("GET %d-%d: %d bytes, expected %d", from, to, got, want)
		}
		return got, ttfb, nil
	}

	res := map[string]any{"key": *key, "size": size, "streams": *streams}
	t0 := time.Now()
	var total atomic.Int64
	var requests int64
	var ttfbFirst time.Duration
	if *streams == 1 {
		h := sha256.New()
		var sum io.Writer
		if *hash {
			sum = h
		}
		n, ttfb, err := fetch(make([]byte, 1<<20), 0, -1, sum)
		if err != nil {
			fail("%v", err)
		}
		total.Add(n)
		requests, ttfbFirst = 1, ttfb
		if *hash {
			res["sha256"] = hex.EncodeToString(h.Sum(nil))
		}
	} else {
		nranges := (size + rangeSize - 1) / rangeSize
		var next, done atomic.Int64
		var firstErr atomic.Value
		var firstTTFB atomic.Int64
		var wg sync.WaitGroup
		for w := 0; w < *streams; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 1<<20)
				for ctx.Err() == nil && firstErr.Load() == nil {
					i := next.Add(1) - 1
					if i >= nranges {
						return
					}
					from := i * rangeSize
					to := min(from+rangeSize, size)
					n, ttfb, err := fetch(buf, from, to, nil)
					if err != nil {
						firstErr.CompareAndSwap(nil, err.Error())
						return
					}
					firstTTFB.CompareAndSwap(0, int64(ttfb))
					total.Add(n)
					done.Add(1)
				}
			}()
		}
		wg.Wait()
		if e := firstErr.Load(); e != nil {
			fail("%v", e)
		}
		if done.Load() != nranges {
			fail("%d of %d ranges read (timed out after %s?)", done.Load(), nranges, *timeout)
		}
		requests, ttfbFirst = nranges, time.Duration(firstTTFB.Load())
		res["range_size"] = rangeSize
	}
	secs := time.Since(t0).Seconds()
	res["bytes"] = total.Load()
	res["requests"] = requests
	res["seconds"] = secs
	res["mib_per_sec"] = float64(total.Load()) / secs / (1 << 20)
	res["ttfb_ms"] = float64(ttfbFirst.Microseconds()) / 1000
	out(res)
}
