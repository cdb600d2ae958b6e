package agentruns

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestTheOneErrorBodyBecomesAnError(t *testing.T) {
	fields := map[string]any{"prompt": []string{"required"}, "timeout": []string{"must be at least 1"}}
	api := newFakeAPI(t, reply(422, map[string]any{"error": map[string]any{"code": "validation_error",
		"message": "prompt: required; timeout: must be at least 1", "details": map[string]any{"fields": fields}},
		"request_id": "req-422"}, "X-Request-Id", "req-422"))
	client, _ := api.client()
	_, err := client.AgentRuns.Create(context.Background(), RunParams{Prompt: "", TargetID: String("b"), Timeout: Int(0)})
	var apiErr *Error
	if !errors.As(fmt.Errorf("wrapped: %w", err), &apiErr) {
		t.Fatalf("not an *Error: %#v", err)
	}
	if apiErr.StatusCode != 422 || apiErr.Code != "validation_error" || apiErr.RequestID != "req-422" ||
		!strings.HasPrefix(apiErr.Message, "prompt: required") || !IsValidation(err) {
		t.Fatalf("%+v", apiErr)
	}
	want := map[string][]string{"prompt": {"required"}, "timeout": {"must be at least 1"}}
	if !reflect.DeepEqual(apiErr.Fields(), want) {
		t.Fatalf("fields %v", apiErr.Fields())
	}
	if msg := err.Error(); !strings.Contains(msg, "request_id=req-422") || !strings.Contains(msg, "status=422") {
		t.Fatalf("Error() = %q", msg)
	}
}

func TestStatusesMapToTheHelpers(t *testing.T) {
	helpers := map[string]func(error) bool{"IsUnauthorized": IsUnauthorized, "IsForbidden": IsForbidden,
		"IsNotFound": IsNotFound, "IsConflict": IsConflict, "IsValidation": IsValidation,
		"IsRateLimited": IsRateLimited, "IsServerError": IsServerError}
	cases := []struct {
		status int
		code   string
		helper string
	}{
		{401, "unauthorized", "IsUnauthorized"}, {403, "forbidden", "IsForbidden"}, {404, "not_found", "IsNotFound"},
		{409, "conflict", "IsConflict"}, {422, "validation_error", "IsValidation"},
		{429, "rate_limited", "IsRateLimited"}, {500, "internal_error", "IsServerError"},
	}
	for _, c := range cases {
		api := newFakeAPI(t, apiError(c.status, c.code))
		client, _ := api.client(WithMaxRetries(0))
		_, err := client.Devices.Get(context.Background(), "d")
		for name, is := range helpers {
			if is(err) != (name == c.helper) {
				t.Errorf("%d: %s(err) = %v", c.status, name, is(err))
			}
		}
		var apiErr *Error
		if !errors.As(err, &apiErr) || apiErr.Code != c.code || apiErr.RequestID != "req-1" {
			t.Errorf("%d: %#v", c.status, err)
		}
	}
}

func TestAnswersThatAreNotTheAPIsStillMakeErrors(t *testing.T) {
	api := newFakeAPI(t, raw(502, "text/html", "<html>\n  Bad Gateway\n</html>"))
	client, _ := api.client(WithMaxRetries(0))
	err := client.Devices.Delete(context.Background(), "d")
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Code != "http_502" || !strings.Contains(apiErr.Message, "Bad Gateway") ||
		len(apiErr.RequestID) != 32 { // no request id in the body: the one the SDK sent
		t.Fatalf("%#v", err)
	}
	portal := newFakeAPI(t, raw(200, "text/html", "<html/>"))
	client, _ = portal.client()
	_, err = client.Devices.Get(context.Background(), "d")
	if !errors.As(err, &apiErr) || apiErr.Code != "bad_response" || apiErr.StatusCode != 200 {
		t.Fatalf("a 200 that is not our JSON: %#v", err)
	}
}

func TestARateLimitCarriesRetryAfter(t *testing.T) {
	api := newFakeAPI(t, apiError(429, "rate_limited", "Retry-After", "7"))
	client, _ := api.client(WithMaxRetries(0))
	_, err := client.AgentRuns.Get(context.Background(), runID)
	var apiErr *Error
	if !errors.As(err, &apiErr) {
		t.Fatal(err)
	}
	if after, ok := apiErr.RetryAfter(); !ok || after != 7*time.Second {
		t.Fatalf("RetryAfter = %v, %v", after, ok)
	}
}
