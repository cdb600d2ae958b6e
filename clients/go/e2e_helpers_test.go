//go:build e2e

package agentruns_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	agentruns "github.com/agentruns/agentruns-go"
)

// The end-to-end tests run against a live API, worker and beat (tests/test_sdk_go.py starts them
// and sets these variables): AGENTRUNS_API_URL and AGENTRUNS_API_KEY (a fresh tenant),
// AGENTRUNS_E2E_DEVICE (a sandbox on the test sshd whose default cwd is AGENTRUNS_E2E_WORKDIR)
// and AGENTRUNS_E2E_SSH (how to reach that sshd, to register devices of our own).

type e2eSetup struct {
	url, key, device, workdir string
	ssh                       sshTarget
}

type sshTarget struct {
	Host       string `json:"host"`
	Port       int    `json:"port"`
	Username   string `json:"username"`
	PrivateKey string `json:"private_key"`
	HostKey    string `json:"host_key"`
}

func setup(t *testing.T) e2eSetup {
	t.Helper()
	s := e2eSetup{url: os.Getenv("AGENTRUNS_API_URL"), key: os.Getenv("AGENTRUNS_API_KEY"),
		device: os.Getenv("AGENTRUNS_E2E_DEVICE"), workdir: os.Getenv("AGENTRUNS_E2E_WORKDIR")}
	if s.url == "" || s.key == "" || s.device == "" || s.workdir == "" {
		t.Fatal("the e2e tests need a live server: run them through tests/test_sdk_go.py")
	}
	if err := json.Unmarshal([]byte(os.Getenv("AGENTRUNS_E2E_SSH")), &s.ssh); err != nil {
		t.Fatalf("AGENTRUNS_E2E_SSH: %v", err)
	}
	return s
}

// client is a client of the live server; a transport, if given, sits between it and the network.
func (s e2eSetup) client(transport http.RoundTripper, opts ...agentruns.Option) *agentruns.Client {
	base := []agentruns.Option{agentruns.WithBaseURL(s.url), agentruns.WithAPIKey(s.key),
		agentruns.WithBackoffBase(50 * time.Millisecond)}
	if transport != nil {
		base = append(base, agentruns.WithHTTPClient(&http.Client{Transport: transport}))
	}
	return agentruns.NewClient(append(base, opts...)...)
}

// custom is a run of a shell command on the e2e sandbox.
func (s e2eSetup) custom(prompt, command string) agentruns.RunParams {
	return agentruns.RunParams{Prompt: prompt, SandboxID: agentruns.String(s.device),
		Provider: agentruns.String(agentruns.ProviderCustom), Command: agentruns.String(command)}
}

func randomHex() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// exchange is one request that went through a recorder, and its answer (nil on a transport error).
type exchange struct {
	req  *http.Request
	resp *http.Response
}

// recorder is a transport that records every exchange; intercept, if set, may replace one.
type recorder struct {
	mu        sync.Mutex
	exchanges []exchange
	intercept func(req *http.Request, resp *http.Response) (*http.Response, error)
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exchanges = append(r.exchanges, exchange{req, resp})
	if err == nil && r.intercept != nil {
		return r.intercept(req, resp)
	}
	return resp, err
}

func (r *recorder) all() []exchange {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]exchange(nil), r.exchanges...)
}

// dropAnswer throws the answer away after the server has processed the request, and reports a
// connection reset, as a network that fails at the worst moment does.
func dropAnswer(resp *http.Response) (*http.Response, error) {
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
}

// cuttingBody passes an SSE body through until `keep` complete events and a few bytes of what
// follows, then fails as a connection cut mid-stream does.
type cuttingBody struct {
	body   io.ReadCloser
	keep   int
	seen   []byte
	passed int
	cut    bool
}

const bytesPastTheCut = 5

func (b *cuttingBody) Read(p []byte) (int, error) {
	if b.cut {
		return 0, io.ErrUnexpectedEOF
	}
	n, err := b.body.Read(p)
	b.seen = append(b.seen, p[:n]...)
	release := len(b.seen)
	if end := endOfEvent(b.seen, b.keep); end >= 0 && len(b.seen) >= end+bytesPastTheCut {
		release, b.cut = end+bytesPastTheCut, true
	}
	allowed := release - b.passed
	b.passed = release
	if b.cut {
		return allowed, nil
	}
	return allowed, err
}

func (b *cuttingBody) Close() error { return b.body.Close() }

// endOfEvent is the offset just past the k-th event ("id: ..." block) in an SSE body, or -1.
func endOfEvent(data []byte, k int) int {
	count, start := 0, 0
	for {
		i := bytes.Index(data[start:], []byte("\n\n"))
		if i < 0 {
			return -1
		}
		block := data[start : start+i]
		start += i + 2
		if bytes.HasPrefix(block, []byte("id:")) {
			if count++; count == k {
				return start
			}
		}
	}
}
