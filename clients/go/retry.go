package agentruns

import (
	"context"
	"errors"
	"io"
	"math"
	"math/rand"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// retryPolicy says when an attempt may be sent again (as agentruns/_sdk_protocol.py's Retry).
type retryPolicy int

const (
	// retrySafe: writes without an Idempotency-Key (cancel, device changes). Resent after a 429
	// (refused before any work) or when the request surely never reached the server; a resent
	// cancel of a run that finished meanwhile would turn into a confusing 409.
	retrySafe retryPolicy = iota
	// retryAlways: reads, and creates, which carry an Idempotency-Key. Also resent after any
	// transport failure, a 5xx and idempotency_key_in_use.
	retryAlways
)

const (
	maxBackoff    = 8 * time.Second
	maxRetryAfter = 60 * time.Second
	// A Retry-After is followed by up to this much jitter, so clients told the same do not return in lockstep.
	retryAfterJitter = 100 * time.Millisecond
)

// verdict is what one attempt came to: its error (nil on success), may it be resent, and after how long.
type verdict struct {
	err        *Error
	retryable  bool
	retryAfter time.Duration
	hasAfter   bool
}

// judgeResponse: 429 may always be resent; 5xx and idempotency_key_in_use only for retryAlways calls.
func judgeResponse(policy retryPolicy, resp *response, requestID string) verdict {
	if resp.status < 400 {
		return verdict{}
	}
	err := errorFromResponse(resp, requestID)
	retryable := resp.status == http.StatusTooManyRequests ||
		(policy == retryAlways && (resp.status >= 500 || err.Code == "idempotency_key_in_use"))
	after, ok := parseRetryAfter(resp.header.Get("Retry-After"))
	return verdict{err: err, retryable: retryable, retryAfter: after, hasAfter: ok}
}

// judgeFailure: a transport failure may be resent by retryAlways calls when it is a network
// failure, and by retrySafe calls only when the request never left.
func judgeFailure(policy retryPolicy, err error, requestID string) verdict {
	retryable := neverSent(err)
	if policy == retryAlways {
		retryable = retryable || networkFailure(err)
	}
	return verdict{err: connectionError(err, requestID), retryable: retryable}
}

// neverSent: the connection could not be opened (refused, unreachable, no such host, connect
// timeout), so the server cannot have seen the request.
func neverSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// networkFailure: the request may or may not have arrived (reset, cut, timeout, garbled answer).
// A URL the client cannot send to at all (no such scheme) is not one: resending would not help.
func networkFailure(err error) bool {
	inner := err
	var ue *url.Error // *url.Error is a net.Error itself: look inside it
	if errors.As(err, &ue) {
		inner = ue.Err
	}
	var ne net.Error
	switch {
	case errors.As(inner, &ne), errors.Is(inner, context.DeadlineExceeded),
		errors.Is(inner, io.EOF), errors.Is(inner, io.ErrUnexpectedEOF):
		return true
	}
	// net/http has no exported type for a garbled response.
	msg := inner.Error()
	return strings.Contains(msg, "malformed HTTP") || strings.Contains(msg, "connection broken")
}

var (
	jitterMu  sync.Mutex
	jitterSrc = rand.New(rand.NewSource(time.Now().UnixNano()))
)

// jitter is a random duration in [0, max].
func jitter(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	jitterMu.Lock()
	defer jitterMu.Unlock()
	return time.Duration(jitterSrc.Int63n(int64(max) + 1))
}

// backoffDelay is the pause before retry number attempt (0-based): the server's Retry-After if it
// gave one (capped at a minute), else capped exponential backoff with "equal jitter" so a fleet of
// clients does not retry in lockstep.
func backoffDelay(attempt int, base time.Duration, retryAfter time.Duration, hasRetryAfter bool) time.Duration {
	if hasRetryAfter {
		if retryAfter > maxRetryAfter {
			retryAfter = maxRetryAfter
		}
		return retryAfter + jitter(retryAfterJitter)
	}
	ceiling := maxBackoff
	if attempt < 30 { // beyond that the doubling overflows; the cap has long applied anyway
		if d := base * time.Duration(1<<uint(attempt)); d < ceiling {
			ceiling = d
		}
	}
	return ceiling/2 + jitter(ceiling/2)
}

// parseRetryAfter reads Retry-After as delta-seconds or an HTTP date (a past date means now).
func parseRetryAfter(value string) (time.Duration, bool) {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0, false
	}
	if seconds, err := strconv.ParseFloat(value, 64); err == nil && !math.IsNaN(seconds) {
		// Clamped before converting: a silly value must not overflow a Duration.
		return time.Duration(math.Max(0, math.Min(seconds, 86400)) * float64(time.Second)), true
	}
	if when, err := http.ParseTime(value); err == nil {
		if d := time.Until(when); d > 0 {
			return d, true
		}
		return 0, true
	}
	return 0, false
}
