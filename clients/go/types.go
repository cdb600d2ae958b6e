package agentruns

import "time"

// Run is an agent run as the API returns it. A null in the API's JSON is the zero value here,
// except where the zero value means something (ExitCode, CostUSD, Error, the times): those are
// pointers.
type Run struct {
	ID         string         `json:"id"`          // a UUID
	TargetKind string         `json:"target_kind"` // KindSandbox or KindComputer
	TargetID   string         `json:"target_id"`   // the device's ID
	Provider   string         `json:"provider"`    // a Provider... constant
	Status     string         `json:"status"`      // a Status... constant
	Prompt     string         `json:"prompt"`      // the task
	Metadata   map[string]any `json:"metadata"`    // as given at create
	CreatedAt  time.Time      `json:"created_at"`  // when it was created
	FinishedAt *time.Time     `json:"finished_at"` // when it ended; nil while it is live

	// The fields below are empty in List's rows (summaries); Get returns them all.

	Model   string `json:"model"`   // the provider's model, if one was given
	Cwd     string `json:"cwd"`     // the working directory on the device
	Timeout int    `json:"timeout"` // the run's limit in seconds
	Command string `json:"command"` // ProviderCustom's shell command
	// Output is the provider's answer (a custom command: its stdout).
	Output          string `json:"output"`
	Stdout          string `json:"stdout"`           // the command's standard output
	Stderr          string `json:"stderr"`           // the command's standard error
	StdoutTruncated bool   `json:"stdout_truncated"` // Stdout was cut at the server's limit
	StderrTruncated bool   `json:"stderr_truncated"` // Stderr was cut at the server's limit
	ExitCode        *int   `json:"exit_code"`        // nil until the command exits
	// Error says why a run failed or was canceled: Code "timeout", "nonzero_exit",
	// "device_unreachable", "canceled"...
	Error           *Failure       `json:"error"`
	Usage           map[string]any `json:"usage"`            // tokens and the like, as the provider reported them
	CostUSD         *float64       `json:"cost_usd"`         // as the provider reported it
	SessionID       string         `json:"session_id"`       // the provider's session, to resume it
	CancelRequested bool           `json:"cancel_requested"` // a cancel was asked for while it ran
	// RequestID is the X-Request-Id of the create.
	RequestID string     `json:"request_id"`
	StartedAt *time.Time `json:"started_at"` // when a worker started it; nil while queued
	UpdatedAt time.Time  `json:"updated_at"` // its last change
}

// Terminal reports whether the run has ended.
func (r *Run) Terminal() bool { return IsTerminal(r.Status) }

// Failure is a machine-readable code and a message, as on a failed run or a failed device test.
type Failure struct {
	Code    string `json:"code"`    // machine-readable
	Message string `json:"message"` // for people
}

// RunPage is one page of List: runs newest first, and the cursor of the next page ("" at the end).
type RunPage struct {
	Data       []Run  // summaries, as List's rows
	NextCursor string // ListParams.Cursor of the next page; "" on the last one
}

// Device is a sandbox or computer of the tenant. Secrets are never returned: HasPrivateKey,
// HasPassword and EnvNames say which exist.
type Device struct {
	ID                string                    `json:"id"`                  // unique in the tenant
	Kind              string                    `json:"kind"`                // KindSandbox or KindComputer
	Name              string                    `json:"name"`                // a display name
	Driver            string                    `json:"driver"`              // "ssh" or "local"
	Host              string                    `json:"host"`                // ssh: where to connect
	Port              int                       `json:"port"`                // ssh: the port, 22 by default
	Username          string                    `json:"username"`            // ssh: the login
	HostKey           string                    `json:"host_key"`            // ssh: the pinned host key
	TrustOnFirstUse   bool                      `json:"trust_on_first_use"`  // ssh: pin the key seen first
	LoginShell        bool                      `json:"login_shell"`         // commands run in a login shell
	Labels            map[string]string         `json:"labels"`              // yours
	MaxConcurrentRuns int                       `json:"max_concurrent_runs"` // runs at a time; more wait queued
	DefaultCwd        string                    `json:"default_cwd"`         // runs' working directory by default
	Providers         map[string]DeviceProvider `json:"providers"`           // per-provider settings
	HasPrivateKey     bool                      `json:"has_private_key"`     // a private key is stored
	HasPassword       bool                      `json:"has_password"`        // a password is stored
	EnvNames          []string                  `json:"env_names"`           // the stored variables' names
	CreatedAt         time.Time                 `json:"created_at"`          // when it was registered
	UpdatedAt         time.Time                 `json:"updated_at"`          // its last change
}

// DeviceProvider is a device's settings for one provider, as returned (env values withheld).
type DeviceProvider struct {
	Executable string   `json:"executable"` // the CLI's path, if not the default
	ExtraArgs  []string `json:"extra_args"` // added to the CLI's arguments
	EnvNames   []string `json:"env_names"`  // names of the variables set for it
}

// DeviceTestResult is what a connection test found.
type DeviceTestResult struct {
	OK        bool     `json:"ok"`         // connected and ran `true`
	LatencyMS *float64 `json:"latency_ms"` // how long that took; nil on failure
	HostKey   string   `json:"host_key"`   // the host key, pinned now if trust_on_first_use
	Error     *Failure `json:"error"`      // why not, e.g. Code "auth_failed"
}
