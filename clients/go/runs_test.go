package agentruns

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"
)

func TestRunCreatesThenWaitsUnlessAlreadyFinished(t *testing.T) {
	failed := runJSON("failed")
	failed["exit_code"], failed["error"] = 4, map[string]any{"code": "nonzero_exit", "message": "exit 4"}
	api := newFakeAPI(t, reply(201, map[string]any{"data": runJSON("queued")}), ok(failed))
	client, _ := api.client()
	run, err := client.AgentRuns.Run(context.Background(), RunParams{Prompt: "p", SandboxID: String("box")})
	if err != nil {
		t.Fatal(err)
	}
	if run.Status != StatusFailed || *run.ExitCode != 4 || run.Error.Code != "nonzero_exit" {
		t.Fatalf("%+v", run)
	}
	got := api.got()
	if len(got) != 2 || got[0].method != "POST" || got[1].method != "GET" || got[1].query.Get("wait") != "60" {
		t.Fatalf("requests %+v", got)
	}

	done := newFakeAPI(t, ok(runJSON("succeeded")))
	client, _ = done.client()
	run, err = client.AgentRuns.Run(context.Background(), RunParams{Prompt: "p", SandboxID: String("box"), Wait: Int(30)})
	if err != nil || run.Status != StatusSucceeded || len(done.got()) != 1 {
		t.Fatalf("%d requests: %v", len(done.got()), err)
	}
}

func TestACreateThatWaitsOnTheServerGetsTheWaitOnItsTimeout(t *testing.T) {
	slow := func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond) // the server holds the create while the run goes on
		ok(runJSON("succeeded"))(w, r)
	}
	api := newFakeAPI(t, slow)
	client, _ := api.client(WithTimeout(100*time.Millisecond), WithMaxRetries(0))
	run, err := client.AgentRuns.Create(context.Background(), RunParams{Prompt: "p", TargetID: String("b"), Wait: Int(1)})
	if err != nil || run.Status != StatusSucceeded {
		t.Fatalf("%v", err)
	}
}

func TestALongPollGetsItsWaitOnItsTimeout(t *testing.T) {
	holding := func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond) // the server holds the long-poll until the run ends
		ok(runJSON("succeeded"))(w, r)
	}
	api := newFakeAPI(t, holding)
	client, _ := api.client(WithTimeout(100 * time.Millisecond))
	run, err := client.AgentRuns.Wait(context.Background(), runID, &WaitOptions{PollWait: time.Second})
	if err != nil || run.Status != StatusSucceeded || len(api.got()) != 1 || api.got()[0].query.Get("wait") != "1" {
		t.Fatalf("%d requests: %v", len(api.got()), err)
	}
}

// fakeClock is the client's clock in tests where the server "holds" long-polls.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestWaitLongPollsInSlicesAndTimesOutWithTheRun(t *testing.T) {
	clock := &fakeClock{now: time.Unix(100, 0)}
	holding := func(w http.ResponseWriter, r *http.Request) {
		seconds, _ := strconv.Atoi(r.URL.Query().Get("wait"))
		clock.advance(time.Duration(seconds) * time.Second) // the server holds a long-poll that long
		ok(runJSON("running"))(w, r)
	}
	api := newFakeAPI(t, holding)
	client, _ := api.client()
	client.now = clock.Now
	_, err := client.AgentRuns.Wait(context.Background(), runID, &WaitOptions{Timeout: 150 * time.Second})
	var timeout *WaitTimeoutError
	if !errors.As(err, &timeout) || timeout.Run.Status != StatusRunning || timeout.Run.ID != runID || !IsWaitTimeout(err) {
		t.Fatalf("%#v", err)
	}
	var waits []string
	for _, r := range api.got() {
		waits = append(waits, r.query.Get("wait"))
	}
	if !reflect.DeepEqual(waits, []string{"60", "60", "30"}) || !clock.Now().Equal(time.Unix(250, 0)) {
		t.Fatalf("waits %v, clock %v", waits, clock.Now())
	}
}

func TestRunHandsOverTheRunWhenTheContextEndsTheWait(t *testing.T) {
	hold := func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	api := newFakeAPI(t, reply(201, map[string]any{"data": runJSON("queued")}), hold)
	client, _ := api.client()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := client.AgentRuns.Run(ctx, RunParams{Prompt: "p", SandboxID: String("box")})
	var timeout *WaitTimeoutError
	if !errors.As(err, &timeout) || timeout.Run.ID != runID || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%#v", err)
	}
}

func TestListFollowsNextCursorWithTheFilters(t *testing.T) {
	api := newFakeAPI(t,
		reply(200, map[string]any{"data": []any{map[string]any{"id": "1"}, map[string]any{"id": "2"}}, "next_cursor": "c1"}),
		reply(200, map[string]any{"data": []any{map[string]any{"id": "3"}}, "next_cursor": nil}))
	client, _ := api.client()
	it := client.AgentRuns.List(context.Background(), &ListParams{Status: String("failed"), Limit: Int(2),
		Cursor: String("c0"), Metadata: map[string]string{"batch": "b1"}})
	var ids []string
	for it.Next() {
		ids = append(ids, it.Run().ID)
	}
	if it.Err() != nil || !reflect.DeepEqual(ids, []string{"1", "2", "3"}) {
		t.Fatalf("ids %v, err %v", ids, it.Err())
	}
	var cursors []string
	for _, r := range api.got() {
		if r.query.Get("status") != "failed" || r.query.Get("limit") != "2" || r.query.Get("metadata[batch]") != "b1" {
			t.Fatalf("query %v", r.query)
		}
		cursors = append(cursors, r.query.Get("cursor"))
	}
	if !reflect.DeepEqual(cursors, []string{"c0", "c1"}) || it.Next() {
		t.Fatalf("cursors %v", cursors)
	}
}

func TestListStopsOnAnError(t *testing.T) {
	api := newFakeAPI(t, reply(200, map[string]any{"data": []any{map[string]any{"id": "1"}}, "next_cursor": "c1"}),
		apiError(422, "validation_error"))
	client, _ := api.client()
	it := client.AgentRuns.List(context.Background(), nil)
	n := 0
	for it.Next() {
		n++
	}
	if n != 1 || !IsValidation(it.Err()) || it.Run() != nil {
		t.Fatalf("%d runs, err %v", n, it.Err())
	}
}

func TestEventsReadsEveryPage(t *testing.T) {
	full := make([]any, eventsPageLimit)
	for i := range full {
		full[i] = ev(i+1, "stdout")
	}
	api := newFakeAPI(t, ok(full), ok([]any{ev(eventsPageLimit+1, StatusSucceeded)}))
	client, _ := api.client()
	events, err := client.AgentRuns.Events(context.Background(), runID, 0)
	if err != nil || len(events) != eventsPageLimit+1 || events[len(events)-1].Status != StatusSucceeded {
		t.Fatalf("%d events, %v", len(events), err)
	}
	got := api.got()
	if got[0].query.Get("after_seq") != "0" || got[1].query.Get("after_seq") != strconv.Itoa(eventsPageLimit) ||
		got[1].query.Get("limit") != strconv.Itoa(eventsPageLimit) {
		t.Fatalf("queries %v %v", got[0].query, got[1].query)
	}
}

func TestCancelAndEscapedIDs(t *testing.T) {
	api := newFakeAPI(t, ok(runJSON("canceled")))
	client, _ := api.client()
	run, err := client.AgentRuns.Cancel(context.Background(), runID)
	if err != nil || run.Status != StatusCanceled {
		t.Fatal(err)
	}
	if got := api.got()[0]; got.method != "POST" || got.path != "/api/v1/agent-runs/"+runID+"/cancel" {
		t.Fatalf("%s %s", got.method, got.path)
	}
	if _, err := client.AgentRuns.Get(context.Background(), "../devices"); err != nil {
		t.Fatal(err)
	}
	if got := api.got()[1]; got.uri != "/api/v1/agent-runs/..%2Fdevices" {
		t.Fatalf("an id left its path segment: %s", got.uri)
	}
}
