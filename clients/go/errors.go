package agentruns

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Error is every failure the API reports (its one error body, `{"error": {"code", "message",
// "details"}, "request_id"}`), and a request that got no usable answer (Code
// "connection_failed", StatusCode 0). Use errors.As to get at it, or the Is... helpers.
type Error struct {
	// StatusCode is the HTTP status; 0 when there was no answer.
	StatusCode int
	// Code is machine-readable: "validation_error", "not_found", "unauthorized",
	// "idempotency_key_reused", "rate_limited", "connection_failed", "http_502" for an answer that
	// was not the API's (a proxy's page), "bad_response" for a success without the API's JSON...
	Code string
	// Message is for people, e.g. "prompt: required".
	Message string
	// Details holds structured extras; a validation error has {"fields": {name: [messages]}}.
	Details map[string]any
	// RequestID is the X-Request-Id of the request: quote it to whoever runs the server.
	RequestID string
	// Header is the response's header (nil without a response).
	Header http.Header
	// Err is the transport error behind a connection_failed error.
	Err error
}

// Error formats the error as "agentruns: MESSAGE (code=..., status=..., request_id=...)".
func (e *Error) Error() string {
	extra := []string{"code=" + e.Code}
	if e.StatusCode != 0 {
		extra = append(extra, fmt.Sprintf("status=%d", e.StatusCode))
	}
	if e.RequestID != "" {
		extra = append(extra, "request_id="+e.RequestID)
	}
	return fmt.Sprintf("agentruns: %s (%s)", e.Message, strings.Join(extra, ", "))
}

// Unwrap gives the transport error behind a connection failure (nil otherwise).
func (e *Error) Unwrap() error { return e.Err }

// Fields are a validation error's per-field messages, e.g. {"prompt": ["required"]}.
func (e *Error) Fields() map[string][]string {
	out := map[string][]string{}
	fields, _ := e.Details["fields"].(map[string]any)
	for name, msgs := range fields {
		list, _ := msgs.([]any)
		for _, m := range list {
			if s, ok := m.(string); ok {
				out[name] = append(out[name], s)
			}
		}
	}
	return out
}

// RetryAfter is the server's Retry-After (a 429, a 503), and whether it gave one.
func (e *Error) RetryAfter() (time.Duration, bool) {
	if e.Header == nil {
		return 0, false
	}
	return parseRetryAfter(e.Header.Get("Retry-After"))
}

// WaitTimeoutError is returned by Wait and Run when the wait ended before the run did: the
// WaitOptions.Timeout (or RunParams.WaitTimeout) passed, or the context ended (then Unwrap gives
// the context's error). Run is the run's last known state: its ID is still good to wait on.
type WaitTimeoutError struct {
	Run    *Run          // the run as last seen
	Waited time.Duration // how long the wait went on
	cause  error
}

// Error says which run is still going.
func (e *WaitTimeoutError) Error() string {
	msg := fmt.Sprintf("agentruns: run %s still %s after %s", e.Run.ID, e.Run.Status, e.Waited.Round(time.Millisecond))
	if e.cause != nil {
		msg += ": " + e.cause.Error()
	}
	return msg
}

// Unwrap gives the context's error when the context ended the wait.
func (e *WaitTimeoutError) Unwrap() error { return e.cause }

// StatusCode is the HTTP status of err when it is (or wraps) an *Error, else 0.
func StatusCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.StatusCode
	}
	return 0
}

// IsNotFound: 404, no such run or device in the caller's tenant.
func IsNotFound(err error) bool { return StatusCode(err) == http.StatusNotFound }

// IsUnauthorized: 401, a missing, wrong or revoked API key.
func IsUnauthorized(err error) bool { return StatusCode(err) == http.StatusUnauthorized }

// IsForbidden: 403.
func IsForbidden(err error) bool { return StatusCode(err) == http.StatusForbidden }

// IsConflict: 409, e.g. cancelling a finished run or deleting a device with runs in flight.
func IsConflict(err error) bool { return StatusCode(err) == http.StatusConflict }

// IsValidation: 422, the request was understood but refused; see (*Error).Fields.
func IsValidation(err error) bool { return StatusCode(err) == http.StatusUnprocessableEntity }

// IsRateLimited: 429 (after the SDK's own retries).
func IsRateLimited(err error) bool { return StatusCode(err) == http.StatusTooManyRequests }

// IsServerError: a 5xx from the server or a proxy in front of it.
func IsServerError(err error) bool { return StatusCode(err) >= 500 }

// IsConnectionFailed: no usable HTTP answer (refused, dropped, timed out) after the SDK's retries.
func IsConnectionFailed(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == "connection_failed"
}

// IsWaitTimeout: Wait or Run gave up before the run ended (see WaitTimeoutError).
func IsWaitTimeout(err error) bool {
	var e *WaitTimeoutError
	return errors.As(err, &e)
}

// errorFromResponse builds the *Error of a >= 400 answer, coping with bodies that are not the
// API's (a proxy's HTML page).
func errorFromResponse(resp *response, requestID string) *Error {
	var body struct {
		Error *struct {
			Code    string         `json:"code"`
			Message string         `json:"message"`
			Details map[string]any `json:"details"`
		} `json:"error"`
		RequestID string `json:"request_id"`
	}
	_ = json.Unmarshal(resp.body, &body) // not ours: handled below
	e := &Error{StatusCode: resp.status, Header: resp.header, RequestID: firstNonEmpty(body.RequestID,
		resp.header.Get("X-Request-Id"), requestID)}
	if body.Error != nil {
		e.Code, e.Message, e.Details = firstNonEmpty(body.Error.Code, "error"), body.Error.Message, body.Error.Details
	} else {
		e.Code = fmt.Sprintf("http_%d", resp.status)
		e.Message = fmt.Sprintf("HTTP %d %s", resp.status, http.StatusText(resp.status))
		if snippet := strings.Join(strings.Fields(string(resp.body)), " "); snippet != "" {
			if len(snippet) > 200 {
				snippet = snippet[:200]
			}
			e.Message += ": " + snippet
		}
	}
	if e.Details == nil {
		e.Details = map[string]any{}
	}
	return e
}

// badResponse: a success whose body is not the API's JSON (a captive portal, a misrouted proxy).
func badResponse(c *call, resp *response) *Error {
	return &Error{StatusCode: resp.status, Code: "bad_response", Header: resp.header, Details: map[string]any{},
		Message:   fmt.Sprintf("unexpected response body from %s %s", c.method, c.path),
		RequestID: firstNonEmpty(resp.header.Get("X-Request-Id"), c.requestID())}
}

// connectionError wraps a transport failure.
func connectionError(err error, requestID string) *Error {
	return &Error{Code: "connection_failed", Message: err.Error(), RequestID: requestID, Err: err,
		Details: map[string]any{}}
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
