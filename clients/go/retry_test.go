package agentruns

import (
	"context"
	"errors"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestBackoffIsCappedExponentialWithJitterUnlessRetryAfter(t *testing.T) {
	base := 500 * time.Millisecond
	for attempt := 0; attempt < 40; attempt++ {
		ceiling := maxBackoff
		if attempt < 5 {
			ceiling = base << uint(attempt)
		}
		for i := 0; i < 50; i++ {
			if d := backoffDelay(attempt, base, 0, false); d < ceiling/2 || d > ceiling {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, ceiling/2, ceiling)
			}
		}
	}
	distinct := map[time.Duration]bool{}
	for i := 0; i < 20; i++ {
		distinct[backoffDelay(3, base, 0, false)] = true
	}
	if len(distinct) < 2 {
		t.Fatalf("backoff is not jittered: %v", distinct)
	}
	for i := 0; i < 20; i++ {
		if d := backoffDelay(0, base, 2*time.Second, true); d < 2*time.Second || d > 2100*time.Millisecond {
			t.Fatalf("Retry-After 2 s gave %v", d)
		}
	}
	if d := backoffDelay(0, base, time.Hour, true); d > maxRetryAfter+retryAfterJitter {
		t.Fatalf("a silly Retry-After is not capped: %v", d)
	}
}

func TestParseRetryAfter(t *testing.T) {
	cases := []struct {
		value string
		want  time.Duration
		ok    bool
	}{
		{"7", 7 * time.Second, true},
		{"1.5", 1500 * time.Millisecond, true},
		{"-3", 0, true},
		{"Wed, 21 Oct 2015 07:28:00 GMT", 0, true}, // a date in the past: go now
		{"soon", 0, false},
		{"", 0, false},
	}
	for _, c := range cases {
		got, ok := parseRetryAfter(c.value)
		if got != c.want || ok != c.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", c.value, got, ok, c.want, c.ok)
		}
	}
	future := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	if got, ok := parseRetryAfter(future); !ok || got < 80*time.Second || got > 90*time.Second {
		t.Errorf("a date 90 s ahead gave %v, %v", got, ok)
	}
}

func TestACreateIsResentUnderOneIdempotencyKeyAndRequestIDHonouringRetryAfter(t *testing.T) {
	api := newFakeAPI(t, dropConnection(t), apiError(503, "unavailable"),
		apiError(429, "rate_limited", "Retry-After", "2"), reply(201, map[string]any{"data": runJSON("queued")}))
	client, slept := api.client()
	run, err := client.AgentRuns.Create(context.Background(), RunParams{Prompt: "p", SandboxID: String("box")})
	if err != nil {
		t.Fatal(err)
	}
	if run.ID != runID || run.Status != StatusQueued {
		t.Fatalf("run = %+v", run)
	}
	got := api.got()
	if len(got) != 4 {
		t.Fatalf("%d attempts, want 4", len(got))
	}
	key, rid := got[0].header.Get("Idempotency-Key"), got[0].header.Get("X-Request-Id")
	if !regexp.MustCompile(`^sdk-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(key) {
		t.Fatalf("generated Idempotency-Key %q", key)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(rid) {
		t.Fatalf("X-Request-Id %q", rid)
	}
	for i, r := range got {
		if r.header.Get("Idempotency-Key") != key || r.header.Get("X-Request-Id") != rid || string(r.body) != string(got[0].body) {
			t.Fatalf("attempt %d differs: %v %s", i, r.header, r.body)
		}
	}
	pauses := slept.list()
	if len(pauses) != 3 || pauses[2] < 2*time.Second || pauses[2] > 2100*time.Millisecond {
		t.Fatalf("pauses %v: want 3, the last honouring Retry-After: 2", pauses)
	}

	api2 := newFakeAPI(t, reply(201, map[string]any{"data": runJSON("queued")}))
	other, _ := api2.client()
	if _, err := other.AgentRuns.Create(context.Background(), RunParams{Prompt: "p", SandboxID: String("box")}); err != nil {
		t.Fatal(err)
	}
	if next := api2.got()[0]; next.header.Get("Idempotency-Key") == key || next.header.Get("X-Request-Id") == rid {
		t.Fatal("a second create reused the first one's keys")
	}
}

func TestAGivenIdempotencyKeyIsSent(t *testing.T) {
	api := newFakeAPI(t, reply(200, map[string]any{"data": runJSON("queued")}))
	client, _ := api.client()
	if _, err := client.AgentRuns.Create(context.Background(), RunParams{Prompt: "p", TargetID: String("box"),
		IdempotencyKey: "mine"}); err != nil {
		t.Fatal(err)
	}
	if got := api.got()[0].header.Get("Idempotency-Key"); got != "mine" {
		t.Fatalf("Idempotency-Key %q", got)
	}
	if _, present := api.got()[0].jsonBody(t)["IdempotencyKey"]; present {
		t.Fatal("the key leaked into the body")
	}
}

// Which failures each kind of request resends, as the Python SDK's test_which_attempts_may_be_resent.
func TestWhichAttemptsAreResent(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		answer func(t *testing.T) http.HandlerFunc
		call   func(c *Client) error
		resent bool
	}{
		{"a read after a 503", func(*testing.T) http.HandlerFunc { return apiError(503, "unavailable") },
			func(c *Client) error { _, err := c.AgentRuns.Get(ctx, runID); return err }, true},
		{"a cancel after a 503", func(*testing.T) http.HandlerFunc { return apiError(503, "unavailable") },
			func(c *Client) error { _, err := c.AgentRuns.Cancel(ctx, runID); return err }, false},
		{"a cancel after a 429", func(*testing.T) http.HandlerFunc { return apiError(429, "rate_limited") },
			func(c *Client) error { _, err := c.AgentRuns.Cancel(ctx, runID); return err }, true},
		{"a cancel whose answer was lost", dropConnection, // it may have arrived: do not cancel twice
			func(c *Client) error { _, err := c.AgentRuns.Cancel(ctx, runID); return err }, false},
		{"a read whose answer was lost", dropConnection,
			func(c *Client) error { _, err := c.AgentRuns.Get(ctx, runID); return err }, true},
		{"a create after idempotency_key_in_use", func(*testing.T) http.HandlerFunc { return apiError(409, "idempotency_key_in_use") },
			func(c *Client) error {
				_, err := c.AgentRuns.Create(ctx, RunParams{Prompt: "p", TargetID: String("b")})
				return err
			}, true},
		{"a device create after idempotency_key_in_use", func(*testing.T) http.HandlerFunc { return apiError(409, "idempotency_key_in_use") },
			func(c *Client) error { _, err := c.Devices.Create(ctx, DeviceParams{Kind: KindSandbox}); return err }, false},
		{"a read after a 409 conflict", func(*testing.T) http.HandlerFunc { return apiError(409, "conflict") },
			func(c *Client) error { _, err := c.AgentRuns.Get(ctx, runID); return err }, false},
		{"a read after a 404", func(*testing.T) http.HandlerFunc { return apiError(404, "not_found") },
			func(c *Client) error { _, err := c.AgentRuns.Get(ctx, runID); return err }, false},
		{"a create after a 422", func(*testing.T) http.HandlerFunc { return apiError(422, "validation_error") },
			func(c *Client) error { _, err := c.AgentRuns.Create(ctx, RunParams{}); return err }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeAPI(t, tc.answer(t), ok(runJSON("canceled")))
			client, _ := api.client()
			err := tc.call(client)
			attempts := len(api.got())
			if tc.resent && (err != nil || attempts != 2) {
				t.Fatalf("want a resend that succeeds; got %d attempts, %v", attempts, err)
			}
			if !tc.resent && (err == nil || attempts != 1) {
				t.Fatalf("want one attempt and its error; got %d attempts, %v", attempts, err)
			}
		})
	}
}

func TestACancelThatNeverLeftIsResent(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	closed.Close() // nothing listens there: the connection is refused
	client := NewClient(WithBaseURL("http://"+addr), WithBackoffBase(time.Millisecond), WithMaxRetries(2))
	var pauses []time.Duration
	client.sleep = func(ctx context.Context, d time.Duration) error { pauses = append(pauses, d); return nil }
	_, err = client.AgentRuns.Cancel(context.Background(), runID)
	if !IsConnectionFailed(err) || len(pauses) != 2 {
		t.Fatalf("want 2 resends then connection_failed; got %d, %v", len(pauses), err)
	}
	var apiErr *Error
	var opErr *net.OpError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 0 || len(apiErr.RequestID) != 32 || !errors.As(err, &opErr) {
		t.Fatalf("error %#v does not carry the request id and the transport error", err)
	}
}

func TestRetriesStopAfterMaxRetries(t *testing.T) {
	api := newFakeAPI(t, apiError(502, "bad_gateway"))
	client, slept := api.client(WithMaxRetries(3))
	_, err := client.AgentRuns.Get(context.Background(), runID)
	if !IsServerError(err) || StatusCode(err) != 502 || len(api.got()) != 4 || len(slept.list()) != 3 {
		t.Fatalf("%d attempts, %d pauses, %v", len(api.got()), len(slept.list()), err)
	}
	none := newFakeAPI(t, apiError(503, "unavailable"))
	client, _ = none.client(WithMaxRetries(0))
	if _, err := client.AgentRuns.Get(context.Background(), runID); !IsServerError(err) || len(none.got()) != 1 {
		t.Fatalf("WithMaxRetries(0) resent: %d attempts", len(none.got()))
	}
}

func TestASlowAttemptTimesOutAndAReadIsResent(t *testing.T) {
	slow := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}
	api := newFakeAPI(t, slow, ok(runJSON("running")))
	client, _ := api.client(WithTimeout(100 * time.Millisecond))
	run, err := client.AgentRuns.Get(context.Background(), runID)
	if err != nil || run.Status != StatusRunning || len(api.got()) != 2 {
		t.Fatalf("%d attempts: %v", len(api.got()), err)
	}
}

func TestTheContextStopsRequestsAndRetries(t *testing.T) {
	blocked := make(chan struct{})
	t.Cleanup(func() { close(blocked) })
	hang := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-blocked:
		}
	}
	api := newFakeAPI(t, hang)
	client := NewClient(WithBaseURL(api.URL))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	started := time.Now()
	_, err := client.AgentRuns.Get(ctx, runID)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(started) > 2*time.Second || len(api.got()) != 1 {
		t.Fatalf("after %v and %d attempts: %v", time.Since(started), len(api.got()), err)
	}
	if !strings.Contains(err.Error(), "request_id=") {
		t.Fatalf("the error does not name the request: %v", err)
	}

	// A real backoff pause is cut short too.
	busy := newFakeAPI(t, apiError(503, "unavailable", "Retry-After", "30"))
	client = NewClient(WithBaseURL(busy.URL))
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	started = time.Now()
	_, err = client.AgentRuns.Get(ctx, runID)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(started) > 2*time.Second {
		t.Fatalf("the pause was not cut short: %v after %v", err, time.Since(started))
	}
}
