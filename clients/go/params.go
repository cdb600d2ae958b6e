package agentruns

import (
	"net/url"
	"strconv"
	"time"
)

// Optional fields of the request types are pointers: nil leaves the field out (the server's
// default applies), so a zero value is never sent by accident. These helpers make the pointers.

// String returns a pointer to s, for optional string fields.
func String(s string) *string { return &s }

// Int returns a pointer to n, for optional integer fields.
func Int(n int) *int { return &n }

// Bool returns a pointer to b, for optional boolean fields.
func Bool(b bool) *bool { return &b }

// Time returns a pointer to t, for optional time fields.
func Time(t time.Time) *time.Time { return &t }

// RunParams is the body of a new run (POST /api/v1/agent-runs). Prompt and a target (TargetID,
// SandboxID or ComputerID) are required; nil fields are left out.
type RunParams struct {
	// Prompt is the task, given to the provider (ProviderCustom: on the command's standard input).
	Prompt string `json:"prompt"`
	// TargetID is the device to run on; SandboxID and ComputerID say the same and also its kind.
	TargetID   *string `json:"target_id,omitempty"`
	SandboxID  *string `json:"sandbox_id,omitempty"`  // a device of kind sandbox
	ComputerID *string `json:"computer_id,omitempty"` // a device of kind computer
	// TargetKind is KindSandbox or KindComputer.
	TargetKind *string `json:"target_kind,omitempty"`
	// Provider is the agent CLI (Provider... constants); the server's default is claude-code.
	Provider *string `json:"provider,omitempty"`
	// Command is the shell command of ProviderCustom.
	Command *string `json:"command,omitempty"`
	// Model is passed to the provider.
	Model *string `json:"model,omitempty"`
	// Cwd is the absolute working directory on the device (default: the device's default_cwd).
	Cwd *string `json:"cwd,omitempty"`
	// Timeout is the run's limit in seconds (1 to 86400).
	Timeout *int `json:"timeout,omitempty"`
	// Metadata is yours: any JSON object, filterable in List.
	Metadata map[string]any `json:"metadata,omitempty"`
	// Env adds environment variables for the run.
	Env map[string]string `json:"env,omitempty"`
	// Wait has the server hold the create's answer up to this many seconds (0 to 600) for the run
	// to finish.
	Wait *int `json:"wait,omitempty"`

	// IdempotencyKey is sent as the Idempotency-Key header; one is generated when empty. Every
	// retry of the create carries the same key, so a retried create never makes a second run.
	IdempotencyKey string `json:"-"`
	// WaitTimeout limits how long Run waits for the run to end (0: no limit but the context's);
	// then Run returns a *WaitTimeoutError carrying the run.
	WaitTimeout time.Duration `json:"-"`
}

// WaitOptions tune Wait.
type WaitOptions struct {
	// Timeout gives up after this long with a *WaitTimeoutError (0: no limit but the context's).
	Timeout time.Duration
	// PollWait is how long each long-poll asks the server to hold the answer (default 60 s, at
	// most the server's 600 s; rounded up to whole seconds).
	PollWait time.Duration
}

// ListParams filter List and Page (GET /api/v1/agent-runs). Nil fields do not filter.
type ListParams struct {
	TargetID   *string // runs on this device
	SandboxID  *string // runs on this sandbox
	ComputerID *string // runs on this computer
	TargetKind *string // KindSandbox or KindComputer
	Status     *string // a Status... constant
	Provider   *string // a Provider... constant
	// CreatedAfter and CreatedBefore bound created_at (exclusive).
	CreatedAfter  *time.Time
	CreatedBefore *time.Time // see CreatedAfter
	// Metadata matches runs whose metadata has these values (sent as metadata[KEY]=VALUE).
	Metadata map[string]string
	// Limit is the page size, 1 to 100 (server default 20).
	Limit *int
	// Cursor starts after a page that returned it as NextCursor.
	Cursor *string
}

func (p *ListParams) query(cursor *string) url.Values {
	q := url.Values{}
	put := func(name string, value *string) {
		if value != nil {
			q.Set(name, *value)
		}
	}
	put("target_id", p.TargetID)
	put("sandbox_id", p.SandboxID)
	put("computer_id", p.ComputerID)
	put("target_kind", p.TargetKind)
	put("status", p.Status)
	put("provider", p.Provider)
	put("cursor", cursor)
	if p.CreatedAfter != nil {
		q.Set("created_after", p.CreatedAfter.Format(time.RFC3339Nano))
	}
	if p.CreatedBefore != nil {
		q.Set("created_before", p.CreatedBefore.Format(time.RFC3339Nano))
	}
	if p.Limit != nil {
		q.Set("limit", strconv.Itoa(*p.Limit))
	}
	for key, value := range p.Metadata {
		q.Set("metadata["+key+"]", value)
	}
	return q
}

// Transport is how Stream receives events.
type Transport string

const (
	// TransportAuto uses Server-Sent Events, falling back to polling when the server or a proxy
	// in front of it does not stream.
	TransportAuto Transport = "auto"
	// TransportSSE uses Server-Sent Events only.
	TransportSSE Transport = "sse"
	// TransportPoll polls the event log.
	TransportPoll Transport = "poll"
)

// StreamOptions tune Stream.
type StreamOptions struct {
	// AfterSeq starts after this event (0: from the first).
	AfterSeq int64
	// Transport defaults to TransportAuto.
	Transport Transport
	// PollInterval is the first pause between polls that found nothing new (default 500 ms;
	// it grows to 2 s while the run stays quiet).
	PollInterval time.Duration
}
