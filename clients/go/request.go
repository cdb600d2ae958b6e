package agentruns

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// A success body larger than this is not one of ours (an event page is at most 1000 chunks).
const maxResponseBytes = 256 << 20

// call is one logical HTTP request. It is built once and resent as it is, so every attempt
// carries the same body, X-Request-Id and Idempotency-Key.
type call struct {
	method  string
	path    string
	query   url.Values
	body    []byte // JSON; nil for none
	header  http.Header
	timeout time.Duration // per attempt
	retry   retryPolicy
}

// response is an answer with its body read.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (c *Client) newCall(method, path string, query url.Values, body any, policy retryPolicy) (*call, error) {
	cl := &call{method: method, path: path, query: query, header: http.Header{}, timeout: c.cfg.timeout,
		retry: policy}
	if body != nil {
		encoded, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("agentruns: encoding the body of %s %s: %w", method, path, err)
		}
		cl.body = encoded
	}
	cl.header.Set("X-Request-Id", newRequestID())
	return cl, nil
}

func (cl *call) requestID() string { return cl.header.Get("X-Request-Id") }

// httpRequest is one attempt's request, bound to ctx.
func (c *Client) httpRequest(ctx context.Context, cl *call) (*http.Request, error) {
	target := c.cfg.baseURL + cl.path
	if len(cl.query) > 0 {
		target += "?" + cl.query.Encode()
	}
	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body) // also sets GetBody, so net/http may replay it itself
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, target, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "agentruns-go/"+Version)
	if cl.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key := *c.cfg.apiKey; key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for name, values := range cl.header {
		req.Header[name] = values
	}
	return req, nil
}

// send performs cl, resending it while the retry policy allows, and returns the first success.
// Errors are *Error, or wrap the context's error when ctx ended.
func (c *Client) send(ctx context.Context, cl *call) (*response, error) {
	for attempt := 0; ; attempt++ {
		resp, err := c.attempt(ctx, cl)
		var v verdict
		if err != nil {
			if ctx.Err() != nil {
				return nil, c.contextEnded(ctx, cl)
			}
			v = judgeFailure(cl.retry, err, cl.requestID())
		} else {
			v = judgeResponse(cl.retry, resp, cl.requestID())
			if v.err == nil {
				return resp, nil
			}
		}
		if !v.retryable || attempt >= c.cfg.maxRetries {
			return nil, v.err
		}
		if c.sleep(ctx, backoffDelay(attempt, c.cfg.backoffBase, v.retryAfter, v.hasAfter)) != nil {
			return nil, c.contextEnded(ctx, cl)
		}
	}
}

// attempt sends cl once and reads the whole answer, within cl.timeout.
func (c *Client) attempt(ctx context.Context, cl *call) (*response, error) {
	ctx, cancel := context.WithTimeout(ctx, cl.timeout)
	defer cancel()
	req, err := c.httpRequest(ctx, cl)
	if err != nil {
		return nil, err
	}
	httpResp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer httpResp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(httpResp.Body, maxResponseBytes))
	if err != nil {
		return nil, err
	}
	return &response{status: httpResp.StatusCode, header: httpResp.Header, body: body}, nil
}

func (c *Client) contextEnded(ctx context.Context, cl *call) error {
	return fmt.Errorf("agentruns: %s %s (request_id=%s): %w", cl.method, cl.path, cl.requestID(), ctx.Err())
}

// envelope is a success body: {"data": ..., "next_cursor": ...}.
type envelope struct {
	Data       json.RawMessage `json:"data"`
	NextCursor *string         `json:"next_cursor"`
}

// decodeEnvelope reads a success body; an answer that is not the API's JSON is a bad_response *Error.
func decodeEnvelope(cl *call, resp *response) (*envelope, error) {
	var env envelope
	if err := json.Unmarshal(resp.body, &env); err != nil || env.Data == nil {
		return nil, badResponse(cl, resp)
	}
	return &env, nil
}

// do sends cl and decodes the answer's data into out (nothing for a 204 or a nil out).
func (c *Client) do(ctx context.Context, cl *call, out any) error {
	resp, err := c.send(ctx, cl)
	if err != nil {
		return err
	}
	if resp.status == http.StatusNoContent || out == nil {
		return nil
	}
	env, err := decodeEnvelope(cl, resp)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		return badResponse(cl, resp)
	}
	return nil
}
