package agentruns

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAPI is an httptest server that answers each request with the next handler of its script
// (the last one repeats) and records what it was sent.
type fakeAPI struct {
	*httptest.Server
	mu       sync.Mutex
	script   []http.HandlerFunc
	requests []recorded
}

// recorded is one request as the server received it.
type recorded struct {
	method string
	path   string
	uri    string // as sent, escapes and all
	query  url.Values
	header http.Header
	body   []byte
}

func (r recorded) jsonBody(t *testing.T) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("request body %q is not a JSON object: %v", r.body, err)
	}
	return out
}

func newFakeAPI(t *testing.T, script ...http.HandlerFunc) *fakeAPI {
	t.Helper()
	f := &fakeAPI{script: script}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.requests = append(f.requests, recorded{r.Method, r.URL.Path, r.RequestURI, r.URL.Query(), r.Header.Clone(), body})
		handler := f.script[0]
		if len(f.script) > 1 {
			f.script = f.script[1:]
		}
		f.mu.Unlock()
		// A fresh connection per request: net/http silently resends a replayable request whose reused
		// connection died, which would blur what these tests count.
		w.Header().Set("Connection", "close")
		handler(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeAPI) got() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.requests...)
}

// sleeps records the pauses a client took instead of taking them.
type sleeps struct {
	mu  sync.Mutex
	all []time.Duration
}

func (s *sleeps) list() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.all...)
}

// client is a client of the fake API whose backoff pauses are recorded, not slept.
func (f *fakeAPI) client(opts ...Option) (*Client, *sleeps) {
	c := NewClient(append([]Option{WithBaseURL(f.URL), WithAPIKey("ark_test")}, opts...)...)
	s := &sleeps{}
	c.sleep = func(ctx context.Context, d time.Duration) error {
		s.mu.Lock()
		s.all = append(s.all, d)
		s.mu.Unlock()
		return ctx.Err()
	}
	return c, s
}

// --- scripted answers ---------------------------------------------------------------------------------

func reply(status int, body any, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}
}

func ok(data any) http.HandlerFunc { return reply(200, map[string]any{"data": data}) }

func apiError(status int, code string, header ...string) http.HandlerFunc {
	return reply(status, map[string]any{"error": map[string]any{"code": code, "message": code + " happened",
		"details": map[string]any{}}, "request_id": "req-1"}, header...)
}

func raw(status int, contentType, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// dropConnection closes the connection without a byte of answer, after the request was read
// (so the server did get it).
func dropConnection(t *testing.T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		conn.Close()
	}
}

// sse answers an event stream of these lines and ends it cleanly.
func sse(lines ...string) http.HandlerFunc {
	return raw(200, "text/event-stream", strings.Join(lines, "\n")+"\n")
}

// sseCut starts an event stream (chunked), sends these lines and then cuts the connection
// without ending the body, as a dying proxy does.
func sseCut(t *testing.T, lines ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		data := strings.Join(lines, "\n") + "\n"
		fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
		fmt.Fprintf(buf, "%x\r\n%s\r\n", len(data), data)
		_ = buf.Flush()
	}
}

// sseLines is how the server frames events: id, event, data (the whole event as JSON), blank.
func sseLines(events ...map[string]any) []string {
	lines := []string{"retry: 1000", "", ": keepalive", ""}
	for _, e := range events {
		data, _ := json.Marshal(e)
		lines = append(lines, fmt.Sprintf("id: %v", e["seq"]), fmt.Sprintf("event: %v", e["type"]),
			"data: "+string(data), "")
	}
	return lines
}

// ev is an event as the API serves it: a status event when kind is a status, else output.
func ev(seq int, kind string) map[string]any {
	switch kind {
	case StatusQueued, StatusRunning, StatusSucceeded, StatusFailed, StatusCanceled:
		return map[string]any{"seq": seq, "type": "status", "data": map[string]any{"status": kind},
			"at": "2024-05-01T10:00:00.000000Z"}
	}
	return map[string]any{"seq": seq, "type": kind, "data": fmt.Sprintf("line %d\n", seq),
		"at": "2024-05-01T10:00:00.000000Z"}
}

func seqs(events []Event) []int64 {
	out := make([]int64, len(events))
	for i, e := range events {
		out[i] = e.Seq
	}
	return out
}

// collect reads a whole stream.
func collect(stream *EventStream) ([]Event, error) {
	defer stream.Close()
	var events []Event
	for stream.Next() {
		events = append(events, stream.Event())
	}
	return events, stream.Err()
}

const runID = "8a1d9f5e-3c1b-4c9e-9a55-0f6f3f2d6b10"

func runJSON(status string) map[string]any {
	return map[string]any{"id": runID, "status": status, "prompt": "p", "target_id": "box",
		"created_at": "2024-05-01T10:00:00.000000Z", "exit_code": nil, "error": nil}
}
