package agentruns

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Polling stays as a fallback on purpose: some proxies buffer or cut event streams, and a server
// without SSE answers the same URL with the JSON event list (whose events are delivered, then
// polling goes on after them). Whatever the path, an event is delivered once (by seq), in order,
// and the stream stops after the run's terminal status event.

const maxPollInterval = 2 * time.Second

var errBadTransport = errors.New("agentruns: StreamOptions.Transport must be auto, sse or poll")

// EventStream delivers a run's events live, until its terminal status event:
//
//	stream := client.AgentRuns.Stream(ctx, runID, nil)
//	defer stream.Close()
//	for stream.Next() {
//		event := stream.Event()
//	}
//	if err := stream.Err(); err != nil { ... }
//
// Not safe for concurrent use; Close releases the connection when you stop early.
type EventStream struct {
	events chan Event
	cancel context.CancelFunc
	cur    Event
	err    error // written by the producer before it closes events
	closed bool
}

// Stream follows the run's events after opts.AfterSeq (nil opts: from the start, SSE with polling
// as the fallback). A dropped SSE connection is resumed with Last-Event-ID after a backoff; it
// gives up after the client's MaxRetries consecutive failures that delivered nothing.
func (s *AgentRunsService) Stream(ctx context.Context, runID string, opts *StreamOptions) *EventStream {
	f := &follower{runs: s, runID: runID, transport: TransportAuto, pollInterval: 500 * time.Millisecond}
	if opts != nil {
		f.cursor.last = opts.AfterSeq
		if opts.Transport != "" {
			f.transport = opts.Transport
		}
		if opts.PollInterval > 0 {
			f.pollInterval = opts.PollInterval
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	stream := &EventStream{events: make(chan Event), cancel: cancel}
	f.out = stream.events
	go func() {
		defer close(stream.events)
		stream.err = f.run(ctx)
	}()
	return stream
}

// Next waits for the next event; false once the terminal status event was delivered, or on an
// error (see Err).
func (st *EventStream) Next() bool {
	ev, ok := <-st.events
	if !ok {
		st.cancel()
		return false
	}
	st.cur = ev
	return true
}

// Event is the event Next advanced to.
func (st *EventStream) Event() Event { return st.cur }

// Err is the error that ended the stream early, or nil; call it after Next returned false.
func (st *EventStream) Err() error {
	if st.closed {
		return nil
	}
	return st.err
}

// Close stops the stream and releases its connection; it waits until its goroutine is done.
func (st *EventStream) Close() error {
	st.closed = true
	st.cancel()
	for range st.events { // drain: the producer may be handing over one more event
	}
	return nil
}

// follower is the producer behind an EventStream.
type follower struct {
	runs         *AgentRunsService
	runID        string
	cursor       eventCursor
	transport    Transport
	pollInterval time.Duration
	out          chan<- Event
}

func (f *follower) run(ctx context.Context) error {
	if f.transport != TransportAuto && f.transport != TransportSSE && f.transport != TransportPoll {
		return errBadTransport
	}
	c := f.runs.client
	failures := 0
	for f.transport != TransportPoll {
		conn, err := f.sseConnection(ctx)
		if err != nil {
			return err
		}
		if f.cursor.ended {
			return nil
		}
		if !conn.streaming {
			break
		}
		if conn.delivered > 0 {
			failures = 0
		}
		if conn.err == nil {
			if conn.delivered > 0 {
				continue // cut before the end (a proxy, a server restart): resume at once
			}
			// Ended without a single event: the run may be over with its terminal event behind us.
			run, err := f.runs.Get(ctx, f.runID)
			if err != nil {
				return err
			}
			if run.Terminal() {
				return f.emitRest(ctx)
			}
		}
		failures++
		if failures > c.cfg.maxRetries {
			if conn.err != nil {
				return conn.err
			}
			return &Error{Code: "stream_ended", Message: "the event stream keeps ending without events",
				Details: map[string]any{}}
		}
		if c.sleep(ctx, backoffDelay(failures-1, c.cfg.backoffBase, conn.retryAfter, conn.hasAfter)) != nil {
			return f.ended(ctx)
		}
	}
	return f.poll(ctx)
}

// emit hands ev to the reader, unless the stream is stopped first.
func (f *follower) emit(ctx context.Context, ev Event) error {
	select {
	case f.out <- ev:
		return nil
	case <-ctx.Done():
		return f.ended(ctx)
	}
}

func (f *follower) ended(ctx context.Context) error {
	return fmt.Errorf("agentruns: stream of run %s: %w", f.runID, ctx.Err())
}

// sseCall is the request of one SSE connection, resuming after the cursor.
func (f *follower) sseCall() (*call, error) {
	c := f.runs.client
	after := strconv.FormatInt(f.cursor.last, 10)
	cl, err := c.newCall(http.MethodGet, runPath(f.runID, "/events"), url.Values{"after_seq": {after}}, nil, retrySafe)
	if err != nil {
		return nil, err
	}
	cl.header.Set("Accept", "text/event-stream")
	cl.header.Set("Cache-Control", "no-cache")
	if f.cursor.last > 0 {
		cl.header.Set("Last-Event-ID", after)
	}
	return cl, nil
}

// poll reads /events until the terminal status event (or the run is terminal and no event is left).
func (f *follower) poll(ctx context.Context) error {
	c := f.runs.client
	idle := f.pollInterval
	for !f.cursor.ended {
		events, err := f.runs.EventsPage(ctx, f.runID, f.cursor.last, pollPageLimit)
		if err != nil {
			return err
		}
		fresh := 0
		for _, ev := range events {
			if f.cursor.accept(&ev) {
				fresh++
				if err := f.emit(ctx, ev); err != nil {
					return err
				}
			}
		}
		if f.cursor.ended {
			return nil
		}
		if fresh > 0 {
			idle = f.pollInterval
			continue
		}
		// Nothing new: the terminal event may have been compacted away, so ask the run itself. Its
		// events are committed with its status, so the log read after seeing it terminal is complete.
		run, err := f.runs.Get(ctx, f.runID)
		if err != nil {
			return err
		}
		if run.Terminal() {
			return f.emitRest(ctx)
		}
		if c.sleep(ctx, idle) != nil {
			return f.ended(ctx)
		}
		if idle = idle * 3 / 2; idle > maxPollInterval {
			idle = maxPollInterval
		}
	}
	return nil
}

// emitRest delivers the rest of the log of a run that is over.
func (f *follower) emitRest(ctx context.Context) error {
	events, err := f.runs.Events(ctx, f.runID, f.cursor.last)
	if err != nil {
		return err
	}
	for _, ev := range events {
		if f.cursor.accept(&ev) {
			if err := f.emit(ctx, ev); err != nil {
				return err
			}
		}
	}
	return nil
}
