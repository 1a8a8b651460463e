// s3load: the small S3 client and machine probes of walstore's comparison benchmark
// (benches/run.sh → benches/compare.py). Standard library only, so it builds offline.
//
// Subcommands (each prints one JSON object on stdout; every loop is bounded in count and time):
//
//	mkbucket  -endpoint URL -bucket B                      create a bucket (200 or "already owned")
//	seed      -endpoint URL -bucket B -count N ...         PUT N objects (empty, or -size random bytes each),
//	                                                       concurrently
//	list      -endpoint URL -bucket B -prefix P ...        full ListObjectsV2 scan, 1000 per page
//	probe     -endpoint URL -bucket B -timeout T           retry a signed ListObjectsV2 until 200
//	disk      -dir D -size 1GiB -sync-every 16MiB          sequential write + fdatasync throughput
//	soak      -endpoint URL -bucket B -duration 30m ...    mixed small PUT/GET/LIST/DELETE plus 16 MiB
//	                                                       segment pushes for a fixed time (soak.go)
//	delstorm  -endpoint URL -bucket B -prefix P ...        DeleteObjects latency through the delete guard,
//	                                                       with /metrics scraped or not (delstorm.go)
//	mpput     -endpoint URL -bucket B -key K -size 1GiB    one object by multipart upload of random bytes
//	                                                       (bigobj.go)
//	get       -endpoint URL -bucket B -key K -streams N    GET throughput of one object: a single GET, or
//	                                                       ranged GETs N at a time (bigobj.go)
//
// Requests are signed with AWS Signature Version 4 (header form, path-style), payload hash
// of the empty body. Keys are WAL-G shaped: <prefix><24 hex segment name>.lz4.
package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

type client struct {
	endpoint  *url.URL
	accessKey string
	secretKey string
	region    string
	http      *http.Client
}

func newClient(endpoint, accessKey, secretKey, region string, conns int) (*client, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, err
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("refusing non-loopback endpoint %q", endpoint)
	}
	tr := &http.Transport{
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}
	return &client{endpoint: u, accessKey: accessKey, secretKey: secretKey, region: region,
		http: &http.Client{Transport: tr, Timeout: 60 * time.Second}}, nil
}

// uriEncode is SigV4's UriEncode: everything but A-Za-z0-9-._~ (and '/' when path).
func uriEncode(s string, path bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			c == '-' || c == '.' || c == '_' || c == '~' || (path && c == '/') {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

// do sends a signed request with an empty body; path is unencoded ("/bucket/key").
func (c *client) do(ctx context.Context, method, path string, query [][2]string) (int, []byte, error) {
	return c.doBody(ctx, method, path, query, nil)
}

// doBody sends a signed request with `body` (its SHA-256 signed as the payload hash).
func (c *client) doBody(ctx context.Context, method, path string, query [][2]string, body []byte) (int, []byte, error) {
	req, err := c.newRequest(ctx, method, path, query, body)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, respBody, err
}

// newRequest builds a signed request with `body`; headers added to it afterwards (Range)
// are sent unsigned, which SigV4 allows.
func (c *client) newRequest(ctx context.Context, method, path string, query [][2]string, body []byte) (*http.Request, error) {
	payloadHash := emptySHA256
	if len(body) > 0 {
		ph := sha256.Sum256(body)
		payloadHash = hex.EncodeToString(ph[:])
	}
	sort.Slice(query, func(i, j int) bool {
		if query[i][0] != query[j][0] {
			return query[i][0] < query[j][0]
		}
		return query[i][1] < query[j][1]
	})
	var qs []string
	for _, kv := range query {
		qs = append(qs, uriEncode(kv[0], false)+"="+uriEncode(kv[1], false))
	}
	rawQuery := strings.Join(qs, "&")
	encPath := uriEncode(path, true)
	now := time.Now().UTC()
	amzDate := now.Format("20060102T150405Z")
	day := now.Format("20060102")
	host := c.endpoint.Host
	canonical := strings.Join([]string{method, encPath, rawQuery,
		"host:" + host + "\nx-amz-content-sha256:" + payloadHash + "\nx-amz-date:" + amzDate + "\n",
		"host;x-amz-content-sha256;x-amz-date", payloadHash}, "\n")
	sum := sha256.Sum256([]byte(canonical))
	scope := day + "/" + c.region + "/s3/aws4_request"
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	key := hmacSHA256([]byte("AWS4"+c.secretKey), day)
	key = hmacSHA256(key, c.region)
	key = hmacSHA256(key, "s3")
	key = hmacSHA256(key, "aws4_request")
	sig := hex.EncodeToString(hmacSHA256(key, toSign))

	u := *c.endpoint
	u.Opaque = "//" + host + encPath
	u.RawQuery = rawQuery
	var reader io.Reader = http.NoBody
	if len(body) > 0 {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), reader)
	if err != nil {
		return nil, err
	}
	req.URL.Opaque = encPath
	req.ContentLength = int64(len(body))
	req.Header.Set("x-amz-date", amzDate)
	req.Header.Set("x-amz-content-sha256", payloadHash)
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+c.accessKey+"/"+scope+
		", SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature="+sig)
	return req, nil
}

// walKey is a WAL-G archive key: timeline 1, 256 segments per log id (16 MiB segments).
func walKey(prefix string, n int) string {
	return fmt.Sprintf("%s00000001%08X%08X.lz4", prefix, n/256, n%256)
}

func out(v any) {
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(v); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "s3load: "+format+"\n", args...)
	os.Exit(1)
}

type common struct {
	endpoint, bucket, accessKey, secretKey, region *string
}

func commonFlags(fs *flag.FlagSet) common {
	return common{
		endpoint:  fs.String("endpoint", "", "http://127.0.0.1:PORT"),
		bucket:    fs.String("bucket", "bench", "bucket"),
		accessKey: fs.String("access-key", os.Getenv("S3LOAD_ACCESS_KEY"), "access key (env S3LOAD_ACCESS_KEY)"),
		secretKey: fs.String("secret-key", os.Getenv("S3LOAD_SECRET_KEY"), "secret key (env S3LOAD_SECRET_KEY)"),
		region:    fs.String("region", "us-east-1", "region"),
	}
}

func (c common) client(conns int) *client {
	cl, err := newClient(*c.endpoint, *c.accessKey, *c.secretKey, *c.region, conns)
	if err != nil {
		fail("%v", err)
	}
	return cl
}

func cmdMkbucket(args []string) {
	fs := flag.NewFlagSet("mkbucket", flag.ExitOnError)
	c := commonFlags(fs)
	timeout := fs.Duration("timeout", 60*time.Second, "retry 503s (a server still initialising) this long")
	_ = fs.Parse(args)
	cl := c.client(1)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	for tries := 1; ; tries++ {
		status, body, err := cl.do(ctx, "PUT", "/"+*c.bucket, nil)
		if err == nil && (status == 200 || bytes.Contains(body, []byte("BucketAlreadyOwnedByYou"))) {
			out(map[string]any{"bucket": *c.bucket, "status": status, "tries": tries})
			return
		}
		if err == nil && status != 503 {
			fail("mkbucket: HTTP %d: %s", status, body)
		}
		if ctx.Err() != nil {
			fail("mkbucket: gave up after %d tries: %v %d %.200s", tries, err, status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func cmdSeed(args []string) {
	fs := flag.NewFlagSet("seed", flag.ExitOnError)
	c := commonFlags(fs)
	prefix := fs.String("prefix", "wal_005/", "key prefix")
	count := fs.Int("count", 1000, "objects to PUT")
	start := fs.Int("start", 0, "first segment number")
	conc := fs.Int("concurrency", 32, "concurrent PUTs")
	sizeS := fs.String("size", "0", "bytes per object: random, different in every object (no dedup)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	_ = fs.Parse(args)
	size, err := parseSize(*sizeS)
	if err != nil || size < 0 || size > 64<<20 {
		fail("size: %q (0 to 64MiB)", *sizeS)
	}
	cl := c.client(*conc)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var next, done, errs atomic.Int64
	next.Store(int64(*start))
	end := int64(*start + *count)
	var firstErr atomic.Value
	t0 := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := make([]byte, size)
			if _, err := rand.Read(payload); err != nil {
				fail("rand: %v", err)
			}
			for ctx.Err() == nil && errs.Load() < 100 {
				n := next.Add(1) - 1
				if n >= end {
					return
				}
				if size >= 8 { // the object number makes every body (and its SHA-256) unique
					binary.LittleEndian.PutUint64(payload, uint64(n))
				}
				status, body, err := cl.doBody(ctx, "PUT", "/"+*c.bucket+"/"+walKey(*prefix, int(n)), nil, payload)
				if err == nil && status != 200 {
					err = fmt.Errorf("HTTP %d: %.200s", status, body)
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	secs := time.Since(t0).Seconds()
	res := map[string]any{"requested": *count, "stored": done.Load(), "errors": errs.Load(),
		"seconds": secs, "per_sec": float64(done.Load()) / secs, "timed_out": ctx.Err() != nil}
	if e := firstErr.Load(); e != nil {
		res["first_error"] = e
	}
	out(res)
	if done.Load() != int64(*count) {
		os.Exit(2)
	}
}

// between returns the text between the first `open` and the following `close` tag.
func between(b []byte, open, close string) string {
	i := bytes.Index(b, []byte(open))
	if i < 0 {
		return ""
	}
	rest := b[i+len(open):]
	j := bytes.Index(rest, []byte(close))
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

func xmlUnescape(s string) string {
	r := strings.NewReplacer("&amp;", "&", "&lt;", "<", "&gt;", ">", "&quot;", "\"", "&apos;", "'", "&#34;", "\"", "&#39;", "'")
	return r.Replace(s)
}

func cmdList(args []string) {
	fs := flag.NewFlagSet("list", flag.ExitOnError)
	c := commonFlags(fs)
	prefix := fs.String("prefix", "wal_005/", "prefix to list")
	maxKeys := fs.Int("max-keys", 1000, "keys per page")
	maxPages := fs.Int("max-pages", 2000, "stop after this many pages")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	_ = fs.Parse(args)
	cl := c.client(1)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	keys, pages := 0, 0
	token := ""
	var pageSecs []float64
	t0 := time.Now()
	truncated := true
	for truncated && pages < *maxPages {
		q := [][2]string{{"list-type", "2"}, {"prefix", *prefix}, {"max-keys", strconv.Itoa(*maxKeys)}}
		if token != "" {
			q = append(q, [2]string{"continuation-token", token})
		}
		tp := time.Now()
		status, body, err := cl.do(ctx, "GET", "/"+*c.bucket, q)
		if err != nil {
			fail("list page %d: %v", pages, err)
		}
		if status != 200 {
			fail("list page %d: HTTP %d: %.300s", pages, status, body)
		}
		pageSecs = append(pageSecs, time.Since(tp).Seconds())
		pages++
		keys += bytes.Count(body, []byte("<Key>"))
		truncated = between(body, "<IsTruncated>", "</IsTruncated>") == "true"
		token = xmlUnescape(between(body, "<NextContinuationToken>", "</NextContinuationToken>"))
		if truncated && token == "" {
			fail("list page %d: truncated without NextContinuationToken", pages)
		}
	}
	secs := time.Since(t0).Seconds()
	sort.Float64s(pageSecs)
	p := func(q float64) float64 {
		if len(pageSecs) == 0 {
			return 0
		}
		return pageSecs[int(q*float64(len(pageSecs)-1))] * 1000
	}
	out(map[string]any{"keys": keys, "pages": pages, "seconds": secs, "keys_per_sec": float64(keys) / secs,
		"complete": !truncated, "page_ms_p50": p(0.5), "page_ms_p99": p(0.99), "page_ms_max": p(1)})
}

func cmdProbe(args []string) {
	fs := flag.NewFlagSet("probe", flag.ExitOnError)
	c := commonFlags(fs)
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	interval := fs.Duration("interval", 5*time.Millisecond, "retry interval")
	_ = fs.Parse(args)
	cl := c.client(1)
	cl.http.Timeout = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	t0 := time.Now()
	tries := 0
	var last string
	for ctx.Err() == nil {
		tries++
		status, body, err := cl.do(ctx, "GET", "/"+*c.bucket, [][2]string{{"list-type", "2"}, {"max-keys", "1"}})
		if err == nil && status == 200 {
			out(map[string]any{"ok": true, "tries": tries, "seconds": time.Since(t0).Seconds()})
			return
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("HTTP %d: %.200s", status, body)
		}
		time.Sleep(*interval)
	}
	out(map[string]any{"ok": false, "tries": tries, "last": last})
	os.Exit(2)
}

func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"", 1}}
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			n, err := strconv.ParseInt(strings.TrimSuffix(s, u.suffix), 10, 64)
			return n * u.mult, err
		}
	}
	return 0, errors.New("bad size")
}

// cmdDisk writes `size` bytes of random data sequentially in 1 MiB writes into a new file
// in `dir`, calling fdatasync after every `sync-every` bytes (and at the end), like a
// stream of durable 16 MiB PUTs. The page cache is not dropped: every byte is synced.
func cmdDisk(args []string) {
	fs := flag.NewFlagSet("disk", flag.ExitOnError)
	dir := fs.String("dir", "", "directory on the data filesystem")
	sizeS := fs.String("size", "1GiB", "bytes to write")
	everyS := fs.String("sync-every", "16MiB", "fdatasync after this many bytes (0: only at the end)")
	_ = fs.Parse(args)
	size, err := parseSize(*sizeS)
	if err != nil {
		fail("size: %v", err)
	}
	every, err := parseSize(*everyS)
	if err != nil {
		fail("sync-every: %v", err)
	}
	buf := make([]byte, 16<<20)
	if _, err := rand.Read(buf); err != nil {
		fail("rand: %v", err)
	}
	path := filepath.Join(*dir, fmt.Sprintf("s3load-disk-%d", os.Getpid()))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		fail("%v", err)
	}
	defer os.Remove(path)
	t0 := time.Now()
	var written, sinceSync int64
	for written < size {
		n := int64(1 << 20)
		if size-written < n {
			n = size - written
		}
		off := written % int64(len(buf))
		if off+n > int64(len(buf)) {
			n = int64(len(buf)) - off
		}
		if _, err := f.Write(buf[off : off+n]); err != nil {
			fail("write: %v", err)
		}
		written += n
		sinceSync += n
		if every > 0 && sinceSync >= every {
			if err := fdatasync(f); err != nil {
				fail("fdatasync: %v", err)
			}
			sinceSync = 0
		}
	}
	if err := fdatasync(f); err != nil {
		fail("fdatasync: %v", err)
	}
	secs := time.Since(t0).Seconds()
	_ = f.Close()
	out(map[string]any{"bytes": written, "seconds": secs, "mib_per_sec": float64(written) / secs / (1 << 20),
		"sync_every": every})
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: s3load mkbucket|seed|list|probe|disk|soak|delstorm|mpput|get [flags]")
	}
	switch os.Args[1] {
	case "mkbucket":
		cmdMkbucket(os.Args[2:])
	case "seed":
		cmdSeed(os.Args[2:])
	case "list":
		cmdList(os.Args[2:])
	case "probe":
		cmdProbe(os.Args[2:])
	case "disk":
		cmdDisk(os.Args[2:])
	case "soak":
		cmdSoak(os.Args[2:])
	case "delstorm":
		cmdDelstorm(os.Args[2:])
	case "mpput":
		cmdMpput(os.Args[2:])
	case "get":
		cmdGet(os.Args[2:])
	default:
		fail("unknown subcommand %q", os.Args[1])
	}
}
