package agentruns

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestAStreamResumesADroppedConnectionWithLastEventID(t *testing.T) {
	first := sseLines(ev(1, StatusRunning), ev(2, "stdout"))
	first = append(first, "id: 3", "event: stdout", `data: {"seq": 3, "type": "std`) // cut mid-event
	api := newFakeAPI(t, sseCut(t, first...),
		// The resumed stream replays 2 and sends junk after the terminal event: neither is delivered.
		sse(sseLines(ev(2, "stdout"), ev(3, "stderr"), ev(4, StatusSucceeded), ev(5, "stdout"))...))
	client, slept := api.client()
	events, err := collect(client.AgentRuns.Stream(context.Background(), runID, nil))
	if err != nil || !reflect.DeepEqual(seqs(events), []int64{1, 2, 3, 4}) {
		t.Fatalf("seqs %v, err %v", seqs(events), err)
	}
	if events[2].Type != EventStderr || events[2].Text != "line 3\n" || events[3].Status != StatusSucceeded {
		t.Fatalf("events %+v", events)
	}
	got := api.got()
	if len(got) != 2 || got[0].header.Get("Last-Event-ID") != "" || got[0].header.Get("Accept") != "text/event-stream" {
		t.Fatalf("first request %+v", got[0])
	}
	if got[1].header.Get("Last-Event-ID") != "2" || got[1].query.Get("after_seq") != "2" {
		t.Fatalf("resumed with %v %v", got[1].header, got[1].query)
	}
	if len(slept.list()) != 1 { // one backoff after the failure
		t.Fatalf("pauses %v", slept.list())
	}
}

func TestAStreamThatEndsCleanlyMidRunResumesAtOnce(t *testing.T) {
	api := newFakeAPI(t, sse(sseLines(ev(1, StatusRunning), ev(2, "stdout"))...),
		sse(sseLines(ev(3, StatusCanceled))...))
	client, slept := api.client()
	events, err := collect(client.AgentRuns.Stream(context.Background(), runID, &StreamOptions{Transport: TransportSSE}))
	if err != nil || !reflect.DeepEqual(seqs(events), []int64{1, 2, 3}) || len(slept.list()) != 0 {
		t.Fatalf("seqs %v, pauses %v, err %v", seqs(events), slept.list(), err)
	}
}

func TestAStreamFallsBackToPollingKeepingTheJSONPage(t *testing.T) {
	api := newFakeAPI(t, ok([]any{ev(1, StatusRunning), ev(2, "stdout")}), ok([]any{}), ok(runJSON("running")),
		ok([]any{ev(3, "stdout"), ev(4, StatusFailed)}))
	client, slept := api.client()
	events, err := collect(client.AgentRuns.Stream(context.Background(), runID,
		&StreamOptions{PollInterval: 250 * time.Millisecond}))
	if err != nil || !reflect.DeepEqual(seqs(events), []int64{1, 2, 3, 4}) {
		t.Fatalf("seqs %v, err %v", seqs(events), err)
	}
	got := api.got()
	if got[1].query.Get("after_seq") != "2" || got[1].query.Get("limit") != "500" || got[1].header.Get("Accept") != "application/json" ||
		got[2].path != "/api/v1/agent-runs/"+runID || got[3].query.Get("after_seq") != "2" {
		t.Fatalf("requests %+v", got)
	}
	if !reflect.DeepEqual(slept.list(), []time.Duration{250 * time.Millisecond}) {
		t.Fatalf("pauses %v", slept.list())
	}

	only := newFakeAPI(t, ok([]any{ev(1, StatusRunning)}))
	client, _ = only.client()
	_, err = collect(client.AgentRuns.Stream(context.Background(), runID, &StreamOptions{Transport: TransportSSE}))
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Code != "sse_unsupported" {
		t.Fatalf("%#v", err)
	}
}

func TestAStreamReconnectsAfter5xxHonouringRetryAfterAndStopsOnOtherErrors(t *testing.T) {
	api := newFakeAPI(t, apiError(503, "unavailable", "Retry-After", "4"), sse(sseLines(ev(4, "stdout"), ev(5, StatusCanceled))...))
	client, slept := api.client()
	events, err := collect(client.AgentRuns.Stream(context.Background(), runID, &StreamOptions{AfterSeq: 3}))
	if err != nil || !reflect.DeepEqual(seqs(events), []int64{4, 5}) {
		t.Fatalf("seqs %v, err %v", seqs(events), err)
	}
	if p := slept.list(); len(p) != 1 || p[0] < 4*time.Second || p[0] > 4100*time.Millisecond {
		t.Fatalf("pauses %v", p)
	}
	if got := api.got(); got[1].header.Get("Last-Event-ID") != "3" {
		t.Fatalf("Last-Event-ID %q", got[1].header.Get("Last-Event-ID"))
	}

	missing := newFakeAPI(t, apiError(404, "not_found"))
	client, _ = missing.client()
	if _, err := collect(client.AgentRuns.Stream(context.Background(), runID, nil)); !IsNotFound(err) || len(missing.got()) != 1 {
		t.Fatalf("%d requests: %v", len(missing.got()), err)
	}

	refused := NewClient(WithBaseURL("http://127.0.0.1:1"), WithMaxRetries(2))
	refused.sleep = func(ctx context.Context, d time.Duration) error { return nil }
	if _, err := collect(refused.AgentRuns.Stream(context.Background(), runID, nil)); !IsConnectionFailed(err) {
		t.Fatalf("%#v", err)
	}
}

func TestAStreamThatEndsWithoutEventsChecksTheRun(t *testing.T) {
	api := newFakeAPI(t, sse(": keepalive", ""), ok(runJSON("succeeded")), ok([]any{ev(2, "stdout"), ev(3, StatusSucceeded)}))
	client, _ := api.client()
	events, err := collect(client.AgentRuns.Stream(context.Background(), runID, &StreamOptions{AfterSeq: 1}))
	if err != nil || !reflect.DeepEqual(seqs(events), []int64{2, 3}) {
		t.Fatalf("seqs %v, err %v", seqs(events), err)
	}
	var paths []string
	for _, r := range api.got() {
		paths = append(paths, strings.TrimPrefix(r.path, "/api/v1/agent-runs/"+runID))
	}
	if !reflect.DeepEqual(paths, []string{"/events", "", "/events"}) {
		t.Fatalf("paths %v", paths)
	}

	// A live run whose stream keeps ending empty is given up on.
	empty := func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/events") {
			sse()(w, r)
		} else {
			ok(runJSON("running"))(w, r)
		}
	}
	client, _ = newFakeAPI(t, empty).client()
	_, err = collect(client.AgentRuns.Stream(context.Background(), runID, nil))
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Code != "stream_ended" {
		t.Fatalf("%#v", err)
	}
}

func TestPollingDedupesAndBacksOffWhileIdle(t *testing.T) {
	api := newFakeAPI(t, ok([]any{ev(1, "stdout"), ev(2, "stdout")}), ok([]any{ev(2, "stdout")}), ok(runJSON("running")),
		ok([]any{}), ok(runJSON("running")), ok([]any{ev(3, StatusSucceeded), ev(4, "stdout")}))
	client, slept := api.client()
	events, err := collect(client.AgentRuns.Stream(context.Background(), runID,
		&StreamOptions{Transport: TransportPoll, PollInterval: time.Second}))
	if err != nil || !reflect.DeepEqual(seqs(events), []int64{1, 2, 3}) {
		t.Fatalf("seqs %v, err %v", seqs(events), err)
	}
	if !reflect.DeepEqual(slept.list(), []time.Duration{time.Second, 1500 * time.Millisecond}) {
		t.Fatalf("pauses %v", slept.list())
	}
}

func TestASilentStreamIsReconnected(t *testing.T) {
	silent := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}
	api := newFakeAPI(t, silent, sse(sseLines(ev(1, StatusSucceeded))...))
	client, _ := api.client()
	client.cfg.sseIdle = 100 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // far below the 30 s request timeout
	defer cancel()
	events, err := collect(client.AgentRuns.Stream(ctx, runID, nil))
	if err != nil || !reflect.DeepEqual(seqs(events), []int64{1}) || len(api.got()) != 2 {
		t.Fatalf("seqs %v, %d requests, err %v", seqs(events), len(api.got()), err)
	}
}

func TestASlowReaderIsNotTakenForASilentServer(t *testing.T) {
	prompt := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, e := range []map[string]any{ev(1, StatusRunning), ev(2, "stdout"), ev(3, StatusSucceeded)} {
			_, _ = w.Write([]byte(strings.Join(sseLines(e), "\n") + "\n"))
			w.(http.Flusher).Flush()
			time.Sleep(20 * time.Millisecond)
		}
	}
	api := newFakeAPI(t, prompt)
	client, _ := api.client()
	client.cfg.sseIdle = 100 * time.Millisecond
	stream := client.AgentRuns.Stream(context.Background(), runID, nil)
	defer stream.Close()
	var got []int64
	for stream.Next() {
		got = append(got, stream.Event().Seq)
		time.Sleep(300 * time.Millisecond) // the reader dawdles; the server has long sent the rest
	}
	if stream.Err() != nil || !reflect.DeepEqual(got, []int64{1, 2, 3}) || len(api.got()) != 1 {
		t.Fatalf("seqs %v, %d requests, err %v", got, len(api.got()), stream.Err())
	}
}

func TestClosingAStreamEarlyReleasesIt(t *testing.T) {
	released := make(chan struct{})
	endless := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write([]byte(strings.Join(sseLines(ev(1, StatusRunning), ev(2, "stdout")), "\n") + "\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(released)
	}
	client, _ := newFakeAPI(t, endless).client()
	stream := client.AgentRuns.Stream(context.Background(), runID, nil)
	if !stream.Next() || stream.Event().Seq != 1 {
		t.Fatalf("first event %+v, err %v", stream.Event(), stream.Err())
	}
	if err := stream.Close(); err != nil || stream.Err() != nil {
		t.Fatalf("close %v, err %v", err, stream.Err())
	}
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection stayed open after Close")
	}
	if stream.Next() {
		t.Fatal("Next after Close")
	}
}

func TestTheCallersContextEndsAStream(t *testing.T) {
	hang := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}
	client, _ := newFakeAPI(t, hang).client()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := collect(client.AgentRuns.Stream(ctx, runID, nil)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%#v", err)
	}
	if _, err := collect(client.AgentRuns.Stream(context.Background(), runID, &StreamOptions{Transport: "websocket"})); err != errBadTransport {
		t.Fatalf("%v", err)
	}
}
