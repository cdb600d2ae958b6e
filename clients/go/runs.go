package agentruns

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

const (
	runsPath = "/api/v1/agent-runs"
	// How long each long-poll of Wait asks the server to hold the answer, and the server's limit.
	defaultPollWait = 60 * time.Second
	maxServerWait   = 600 * time.Second
	// Page sizes: Events reads the log in the largest pages the server allows; one poll asks for
	// the server's default.
	eventsPageLimit = 1000
	pollPageLimit   = 500
)

// AgentRunsService is client.AgentRuns: create, run, get, wait, list, cancel, events and stream.
type AgentRunsService struct {
	client *Client
}

func runPath(runID string, tail string) string {
	return runsPath + "/" + url.PathEscape(runID) + tail
}

// Create creates a run (status queued) and returns it at once, unless params.Wait has the server
// hold the answer. The Idempotency-Key (params.IdempotencyKey, else a generated one) goes with
// every retry, so a create retried after a dropped connection, a 429 or a 5xx makes one run.
func (s *AgentRunsService) Create(ctx context.Context, params RunParams) (*Run, error) {
	c := s.client
	cl, err := c.newCall(http.MethodPost, runsPath, nil, params, retryAlways)
	if err != nil {
		return nil, err
	}
	key := params.IdempotencyKey
	if key == "" {
		key = newIdempotencyKey()
	}
	cl.header.Set("Idempotency-Key", key)
	if params.Wait != nil && *params.Wait > 0 {
		cl.timeout += time.Duration(*params.Wait) * time.Second // the attempt outlasts the server's wait
	}
	var run Run
	if err := c.do(ctx, cl, &run); err != nil {
		return nil, err
	}
	return &run, nil
}

// Run creates a run and waits until it ends; it returns the finished run, whatever its status
// (check Status and Error). When params.WaitTimeout passes or ctx ends first, the error is a
// *WaitTimeoutError carrying the run as last seen.
func (s *AgentRunsService) Run(ctx context.Context, params RunParams) (*Run, error) {
	run, err := s.Create(ctx, params)
	if err != nil || run.Terminal() {
		return run, err
	}
	return s.wait(ctx, run, WaitOptions{Timeout: params.WaitTimeout})
}

// Get returns the run.
func (s *AgentRunsService) Get(ctx context.Context, runID string) (*Run, error) {
	return s.get(ctx, runID, 0)
}

// get asks the server to hold the answer up to wait (whole seconds) until the run is terminal.
func (s *AgentRunsService) get(ctx context.Context, runID string, wait time.Duration) (*Run, error) {
	c := s.client
	var query url.Values
	seconds := 0
	if wait > 0 {
		seconds = int((wait + time.Second - 1) / time.Second) // the API takes whole seconds
		query = url.Values{"wait": {strconv.Itoa(seconds)}}
	}
	cl, err := c.newCall(http.MethodGet, runPath(runID, ""), query, nil, retryAlways)
	if err != nil {
		return nil, err
	}
	cl.timeout += time.Duration(seconds) * time.Second
	var run Run
	if err := c.do(ctx, cl, &run); err != nil {
		return nil, err
	}
	return &run, nil
}

// Wait long-polls until the run is terminal and returns it. When opts.Timeout passes or ctx ends
// first, the error is a *WaitTimeoutError carrying the run as last seen (if it was seen).
func (s *AgentRunsService) Wait(ctx context.Context, runID string, opts *WaitOptions) (*Run, error) {
	var o WaitOptions
	if opts != nil {
		o = *opts
	}
	return s.wait(ctx, &Run{ID: runID}, o)
}

func (s *AgentRunsService) wait(ctx context.Context, last *Run, opts WaitOptions) (*Run, error) {
	now := s.client.now
	started := now()
	pollWait := opts.PollWait
	if pollWait <= 0 {
		pollWait = defaultPollWait
	}
	if pollWait > maxServerWait {
		pollWait = maxServerWait
	}
	for {
		step := pollWait
		if opts.Timeout > 0 {
			if left := opts.Timeout - now().Sub(started); left < step {
				step = left // rounded up to a second by get; none at all once the time is up
			}
		}
		run, err := s.get(ctx, last.ID, step)
		if err != nil {
			if ctx.Err() != nil && last.Status != "" { // the run was seen: hand it over
				return nil, &WaitTimeoutError{Run: last, Waited: now().Sub(started), cause: ctx.Err()}
			}
			return nil, err
		}
		last = run
		if run.Terminal() {
			return run, nil
		}
		if opts.Timeout > 0 && now().Sub(started) >= opts.Timeout {
			return nil, &WaitTimeoutError{Run: run, Waited: opts.Timeout}
		}
	}
}

// Cancel cancels the run: a queued run ends at once (status canceled); a running run comes back
// with CancelRequested and is stopped by its worker. A finished run is a 409 (IsConflict).
// A cancel is resent only when it surely did not arrive, or on 429.
func (s *AgentRunsService) Cancel(ctx context.Context, runID string) (*Run, error) {
	c := s.client
	cl, err := c.newCall(http.MethodPost, runPath(runID, "/cancel"), nil, nil, retrySafe)
	if err != nil {
		return nil, err
	}
	var run Run
	if err := c.do(ctx, cl, &run); err != nil {
		return nil, err
	}
	return &run, nil
}

// Page returns one page of runs, newest first (see List).
func (s *AgentRunsService) Page(ctx context.Context, params *ListParams) (*RunPage, error) {
	var p ListParams
	if params != nil {
		p = *params
	}
	return s.page(ctx, &p, p.Cursor)
}

func (s *AgentRunsService) page(ctx context.Context, params *ListParams, cursor *string) (*RunPage, error) {
	c := s.client
	cl, err := c.newCall(http.MethodGet, runsPath, params.query(cursor), nil, retryAlways)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(ctx, cl)
	if err != nil {
		return nil, err
	}
	env, err := decodeEnvelope(cl, resp)
	if err != nil {
		return nil, err
	}
	page := &RunPage{}
	if err := json.Unmarshal(env.Data, &page.Data); err != nil {
		return nil, badResponse(cl, resp)
	}
	if env.NextCursor != nil {
		page.NextCursor = *env.NextCursor
	}
	return page, nil
}

// List iterates over every matching run, newest first, fetching pages of params.Limit as it goes:
//
//	it := client.AgentRuns.List(ctx, &agentruns.ListParams{Status: agentruns.String("failed")})
//	for it.Next() {
//		run := it.Run()
//	}
//	if err := it.Err(); err != nil { ... }
//
// Its rows are summaries (see Run); Get returns a run's output.
func (s *AgentRunsService) List(ctx context.Context, params *ListParams) *RunIterator {
	it := &RunIterator{ctx: ctx, runs: s}
	if params != nil {
		it.params = *params
	}
	it.cursor = it.params.Cursor
	return it
}

// EventsPage returns up to limit events after afterSeq (limit 0: the server's default, 500).
func (s *AgentRunsService) EventsPage(ctx context.Context, runID string, afterSeq int64, limit int) ([]Event, error) {
	c := s.client
	query := url.Values{"after_seq": {strconv.FormatInt(afterSeq, 10)}}
	if limit > 0 {
		query.Set("limit", strconv.Itoa(limit))
	}
	cl, err := c.newCall(http.MethodGet, runPath(runID, "/events"), query, nil, retryAlways)
	if err != nil {
		return nil, err
	}
	var events []Event
	if err := c.do(ctx, cl, &events); err != nil {
		return nil, err
	}
	return events, nil
}

// Events returns the run's whole event log after afterSeq, reading every page.
func (s *AgentRunsService) Events(ctx context.Context, runID string, afterSeq int64) ([]Event, error) {
	var out []Event
	for {
		page, err := s.EventsPage(ctx, runID, afterSeq, eventsPageLimit)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if len(page) < eventsPageLimit {
			return out, nil
		}
		afterSeq = page[len(page)-1].Seq
	}
}
