package agentruns

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// sseOutcome is how one SSE connection went.
type sseOutcome struct {
	delivered  int
	err        *Error // a transient failure: reconnect after a backoff
	retryAfter time.Duration
	hasAfter   bool
	streaming  bool // false: the server answered JSON, so go on by polling
}

// sseConnection opens one SSE connection and delivers its new events. A transient failure
// (transport error, 429, 5xx) comes back in the outcome; the error return is fatal.
func (f *follower) sseConnection(ctx context.Context) (sseOutcome, error) {
	c := f.runs.client
	cl, err := f.sseCall()
	if err != nil {
		return sseOutcome{}, err
	}
	connCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// One watchdog guards the connection: the client's timeout until the head arrives, then the
	// idle limit between lines (the server sends a keepalive every 15 s).
	var silent int32
	watchdog := time.AfterFunc(c.cfg.timeout, func() { atomic.StoreInt32(&silent, 1); cancel() })
	defer watchdog.Stop()
	dropped := func(delivered int, err error) (sseOutcome, error) {
		if ctx.Err() != nil {
			return sseOutcome{}, f.ended(ctx)
		}
		if atomic.LoadInt32(&silent) == 1 {
			err = fmt.Errorf("the event stream was silent for too long: %w", err)
		}
		return sseOutcome{delivered: delivered, err: connectionError(err, cl.requestID()), streaming: true}, nil
	}

	req, err := c.httpRequest(connCtx, cl)
	if err != nil {
		return sseOutcome{}, connectionError(err, cl.requestID())
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return dropped(0, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		apiErr := errorFromResponse(&response{status: resp.StatusCode, header: resp.Header, body: body}, cl.requestID())
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			after, ok := parseRetryAfter(resp.Header.Get("Retry-After"))
			return sseOutcome{err: apiErr, retryAfter: after, hasAfter: ok, streaming: true}, nil
		}
		return sseOutcome{}, apiErr
	}
	if !strings.Contains(resp.Header.Get("Content-Type"), "text/event-stream") {
		return f.jsonAnswer(ctx, resp, dropped)
	}

	reader := bufio.NewReader(resp.Body)
	var decoder sseDecoder
	delivered := 0
	for {
		watchdog.Reset(c.cfg.sseIdle)
		line, err := reader.ReadString('\n')
		if errors.Is(err, io.EOF) { // the server ended the stream (an unfinished message is dropped)
			return sseOutcome{delivered: delivered, streaming: true}, nil
		}
		if err != nil {
			return dropped(delivered, err)
		}
		msg, ok := decoder.feed(strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r"))
		if !ok {
			continue
		}
		ev, ok := eventFromSSE(msg)
		if !ok || !f.cursor.accept(&ev) {
			continue
		}
		delivered++
		watchdog.Stop() // a slow reader is not a silent server
		if err := f.emit(ctx, ev); err != nil {
			return sseOutcome{}, err
		}
		if f.cursor.ended {
			return sseOutcome{delivered: delivered, streaming: true}, nil
		}
	}
}

// jsonAnswer handles a server or proxy that answered the SSE request with the JSON event list:
// its events are delivered, then the stream goes on by polling (TransportSSE refuses it).
func (f *follower) jsonAnswer(ctx context.Context, resp *http.Response,
	dropped func(int, error) (sseOutcome, error)) (sseOutcome, error) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return dropped(0, err)
	}
	if f.transport == TransportSSE {
		return sseOutcome{}, &Error{StatusCode: resp.StatusCode, Code: "sse_unsupported", Header: resp.Header,
			Message: "the server does not stream events (no text/event-stream answer)", Details: map[string]any{},
			RequestID: resp.Header.Get("X-Request-Id")}
	}
	events := jsonEvents(body)
	for _, ev := range events {
		if f.cursor.accept(&ev) {
			if err := f.emit(ctx, ev); err != nil {
				return sseOutcome{}, err
			}
		}
	}
	return sseOutcome{delivered: len(events), streaming: false}, nil
}

// jsonEvents are the events of a JSON /events answer (none if the body is not one).
func jsonEvents(body []byte) []Event {
	var page struct {
		Data []json.RawMessage `json:"data"`
	}
	if json.Unmarshal(body, &page) != nil {
		return nil
	}
	events := make([]Event, 0, len(page.Data))
	for _, raw := range page.Data {
		var ev Event
		if json.Unmarshal(raw, &ev) == nil {
			events = append(events, ev)
		}
	}
	return events
}
