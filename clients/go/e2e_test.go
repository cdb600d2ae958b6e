//go:build e2e

package agentruns_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	agentruns "github.com/agentruns/agentruns-go"
)

func e2eContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestE2ERunACustomCommandAndReadItsOutput(t *testing.T) {
	s, ctx := setup(t), e2eContext(t)
	client := s.client(nil)
	params := s.custom("hello go", `echo "got:$(cat)"; pwd; echo warn >&2`)
	params.Metadata = map[string]any{"sdk": "go", "n": 1}
	run, err := client.AgentRuns.Run(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if run.Status != agentruns.StatusSucceeded || run.Output != "got:hello go\n"+s.workdir+"\n" ||
		run.Stderr != "warn\n" || run.ExitCode == nil || *run.ExitCode != 0 || run.FinishedAt == nil {
		t.Fatalf("%+v", run)
	}
	if !reflect.DeepEqual(run.Metadata, map[string]any{"sdk": "go", "n": 1.0}) || run.TargetID != s.device {
		t.Fatalf("metadata %v, target %q", run.Metadata, run.TargetID)
	}
	failed, err := client.AgentRuns.Run(ctx, s.custom("p", "echo oops >&2; exit 4"))
	if err != nil {
		t.Fatal(err)
	}
	if failed.Status != agentruns.StatusFailed || *failed.ExitCode != 4 || failed.Error.Code != "nonzero_exit" ||
		failed.Stderr != "oops\n" {
		t.Fatalf("%+v", failed)
	}
	again, err := client.AgentRuns.Get(ctx, failed.ID)
	if err != nil || !reflect.DeepEqual(again, failed) {
		t.Fatalf("Get differs from Run's answer: %+v %v", again, err)
	}
}

func TestE2EStreamLiveOutputAndResumeAfterACut(t *testing.T) {
	s, ctx := setup(t), e2eContext(t)
	plain := s.client(nil)
	run, err := plain.AgentRuns.Create(ctx, s.custom("p", "echo a; sleep 0.3; echo b; sleep 0.3; echo c"))
	if err != nil {
		t.Fatal(err)
	}
	// The first event stream is cut in the middle of its third event.
	var cutting *cuttingBody
	rec := &recorder{}
	rec.intercept = func(req *http.Request, resp *http.Response) (*http.Response, error) {
		if cutting == nil && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			cutting = &cuttingBody{body: resp.Body, keep: 2}
			resp.Body = cutting
		}
		return resp, nil
	}
	stream := s.client(rec).AgentRuns.Stream(ctx, run.ID, &agentruns.StreamOptions{Transport: agentruns.TransportSSE})
	defer stream.Close()
	var events []agentruns.Event
	for stream.Next() {
		events = append(events, stream.Event())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if cutting == nil || !cutting.cut {
		t.Fatal("the stream was never cut")
	}
	logged, err := plain.AgentRuns.Events(ctx, run.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(seqsOf(events), seqsOf(logged)) { // no gap, no duplicate
		t.Fatalf("streamed %v, logged %v", seqsOf(events), seqsOf(logged))
	}
	var stdout strings.Builder
	for _, e := range events {
		if e.Type == agentruns.EventStdout {
			stdout.WriteString(e.Text)
		}
	}
	last := events[len(events)-1]
	if stdout.String() != "a\nb\nc\n" || last.Status != agentruns.StatusSucceeded {
		t.Fatalf("stdout %q, last %+v", stdout.String(), last)
	}
	var streams []exchange
	for _, x := range rec.all() {
		if x.req.Header.Get("Accept") == "text/event-stream" {
			streams = append(streams, x)
		}
	}
	if len(streams) < 2 || streams[0].req.Header.Get("Last-Event-ID") != "" ||
		streams[1].req.Header.Get("Last-Event-ID") != strconv.FormatInt(events[1].Seq, 10) {
		t.Fatalf("%d streams; the second resumed after %q, want %d", len(streams),
			streams[len(streams)-1].req.Header.Get("Last-Event-ID"), events[1].Seq)
	}
}

func TestE2EListWithAMetadataFilterAcrossPages(t *testing.T) {
	s, ctx := setup(t), e2eContext(t)
	client := s.client(nil)
	batch := randomHex()
	var ids []string
	for i := 0; i < 5; i++ {
		params := s.custom("n", "true")
		params.Metadata = map[string]any{"batch": batch}
		run, err := client.AgentRuns.Create(ctx, params)
		if err != nil {
			t.Fatal(err)
		}
		ids = append([]string{run.ID}, ids...) // newest first
	}
	other := s.custom("other", "true")
	other.Metadata = map[string]any{"batch": "other-" + batch}
	if _, err := client.AgentRuns.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	it := s.client(rec).AgentRuns.List(ctx, &agentruns.ListParams{Limit: agentruns.Int(2),
		Metadata: map[string]string{"batch": batch}, Provider: agentruns.String(agentruns.ProviderCustom)})
	var listed []string
	for it.Next() {
		listed = append(listed, it.Run().ID)
	}
	if it.Err() != nil || !reflect.DeepEqual(listed, ids) {
		t.Fatalf("listed %v, want %v (err %v)", listed, ids, it.Err())
	}
	if pages := len(rec.all()); pages != 3 {
		t.Fatalf("%d pages, want 3", pages)
	}
}

func TestE2ECancelARunningRun(t *testing.T) {
	s, ctx := setup(t), e2eContext(t)
	client := s.client(nil)
	run, err := client.AgentRuns.Create(ctx, s.custom("p", "echo started; sleep 30"))
	if err != nil {
		t.Fatal(err)
	}
	stream := client.AgentRuns.Stream(ctx, run.ID, nil)
	for stream.Next() && stream.Event().Type != agentruns.EventStdout { // running once it prints
	}
	stream.Close()
	asked, err := client.AgentRuns.Cancel(ctx, run.ID)
	if err != nil || asked.Status != agentruns.StatusRunning || !asked.CancelRequested {
		t.Fatalf("%+v %v", asked, err)
	}
	done, err := client.AgentRuns.Wait(ctx, run.ID, &agentruns.WaitOptions{Timeout: 20 * time.Second})
	if err != nil || done.Status != agentruns.StatusCanceled || done.Error == nil || done.Error.Code != "canceled" {
		t.Fatalf("%+v %v", done, err)
	}
	if again, err := client.AgentRuns.Cancel(ctx, run.ID); err != nil || again.Status != agentruns.StatusCanceled {
		t.Fatalf("cancelling it again changes nothing: %+v %v", again, err)
	}
	finished, err := client.AgentRuns.Run(ctx, s.custom("p", "true"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.AgentRuns.Cancel(ctx, finished.ID)
	var apiErr *agentruns.Error
	if !agentruns.IsConflict(err) || !errors.As(err, &apiErr) || apiErr.RequestID == "" {
		t.Fatalf("cancelling a finished run: %#v", err)
	}
}

func TestE2EErrorsCarryTheirTypeAndRequestID(t *testing.T) {
	s, ctx := setup(t), e2eContext(t)
	rec := &recorder{}
	client := s.client(rec)
	sentID := func() string { x := rec.all(); return x[len(x)-1].req.Header.Get("X-Request-Id") }
	check := func(err error, is func(error) bool, status int, code string) *agentruns.Error {
		t.Helper()
		var apiErr *agentruns.Error
		if !is(err) || !errors.As(err, &apiErr) || apiErr.StatusCode != status || apiErr.Code != code ||
			apiErr.RequestID == "" || apiErr.RequestID != sentID() {
			t.Fatalf("want %d %s with the request id %s; got %#v", status, code, sentID(), err)
		}
		return apiErr
	}

	invalid := s.custom("", "true")
	invalid.Timeout = agentruns.Int(0)
	_, err := client.AgentRuns.Create(ctx, invalid)
	fields := check(err, agentruns.IsValidation, 422, "validation_error").Fields()
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	if !reflect.DeepEqual(names, []string{"prompt", "timeout"}) {
		t.Fatalf("fields %v", fields)
	}

	_, err = client.AgentRuns.Get(ctx, "00000000-0000-4000-8000-000000000000")
	check(err, agentruns.IsNotFound, 404, "not_found")
	_, err = client.Devices.Get(ctx, "missing-"+randomHex())
	check(err, agentruns.IsNotFound, 404, "not_found")

	wrongKey := s.client(rec, agentruns.WithAPIKey("ark_live_wrong"))
	_, err = wrongKey.AgentRuns.Get(ctx, "00000000-0000-4000-8000-000000000000")
	check(err, agentruns.IsUnauthorized, 401, "unauthorized")
}

func TestE2EACreateRetriedAfterADroppedAnswerMakesOneRun(t *testing.T) {
	s, ctx := setup(t), e2eContext(t)
	rec := &recorder{}
	dropped := false
	rec.intercept = func(req *http.Request, resp *http.Response) (*http.Response, error) {
		if req.Method == http.MethodPost && !dropped {
			dropped = true
			return dropAnswer(resp) // the server created the run; the client never hears of it
		}
		return resp, nil
	}
	batch := randomHex()
	params := s.custom("once", "true")
	params.Metadata = map[string]any{"batch": batch}
	run, err := s.client(rec).AgentRuns.Create(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	posts := rec.all()
	if len(posts) != 2 || posts[0].resp.StatusCode != http.StatusCreated || posts[1].resp.StatusCode != http.StatusOK ||
		posts[1].resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("%d attempts", len(posts))
	}
	for _, name := range []string{"Idempotency-Key", "X-Request-Id"} {
		if a, b := posts[0].req.Header.Get(name), posts[1].req.Header.Get(name); a == "" || a != b {
			t.Fatalf("%s: %q then %q", name, a, b)
		}
	}
	it := s.client(nil).AgentRuns.List(ctx, &agentruns.ListParams{Metadata: map[string]string{"batch": batch}})
	var listed []string
	for it.Next() {
		listed = append(listed, it.Run().ID)
	}
	if it.Err() != nil || !reflect.DeepEqual(listed, []string{run.ID}) {
		t.Fatalf("runs of the batch %v, want only %s (err %v)", listed, run.ID, it.Err())
	}
}

func TestE2EDevices(t *testing.T) {
	s, ctx := setup(t), e2eContext(t)
	client := s.client(nil)
	id := "go-" + randomHex()
	created, err := client.Devices.Create(ctx, agentruns.DeviceParams{ID: agentruns.String(id),
		Kind: agentruns.KindComputer, Host: agentruns.String(s.ssh.Host), Port: agentruns.Int(s.ssh.Port),
		Username: agentruns.String(s.ssh.Username), PrivateKey: agentruns.String(s.ssh.PrivateKey),
		HostKey: agentruns.String(s.ssh.HostKey), Env: map[string]string{"TOKEN": "secret"}})
	if err != nil {
		t.Fatal(err)
	}
	if created.ID != id || !created.HasPrivateKey || !reflect.DeepEqual(created.EnvNames, []string{"TOKEN"}) {
		t.Fatalf("%+v", created)
	}
	result, err := client.Devices.Test(ctx, id)
	if err != nil || !result.OK || result.LatencyMS == nil || result.Error != nil {
		t.Fatalf("%+v %v", result, err)
	}
	updated, err := client.Devices.Update(ctx, id, agentruns.DeviceUpdateParams{Name: agentruns.String("renamed"),
		Labels: map[string]string{"team": "go"}})
	if err != nil || updated.Name != "renamed" || updated.Labels["team"] != "go" {
		t.Fatalf("%+v %v", updated, err)
	}
	cleared, err := client.Devices.Update(ctx, id, agentruns.DeviceUpdateParams{Clear: []string{"name"}})
	if err != nil || cleared.Name != "" || cleared.Labels["team"] != "go" {
		t.Fatalf("%+v %v", cleared, err)
	}
	devices, err := client.Devices.List(ctx)
	if err != nil || len(devices) != 2 {
		t.Fatalf("%d devices: %v", len(devices), err)
	}
	if err := client.Devices.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Devices.Get(ctx, id); !agentruns.IsNotFound(err) {
		t.Fatalf("a deleted device: %v", err)
	}
}

func seqsOf(events []agentruns.Event) []int64 {
	out := make([]int64, len(events))
	for i, e := range events {
		out[i] = e.Seq
	}
	return out
}
