package agentruns

// The words the API speaks, as in the Python package's agentruns/vocabulary.py (a test in
// tests/test_sdk_go.py holds the two to the same values).

// Run statuses: queued -> running -> succeeded | failed | canceled, and queued -> canceled.
const (
	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusCanceled  = "canceled"
)

// Event types of a run's event log: status changes, output chunks and notes from the service.
const (
	EventStatus = "status"
	EventStdout = "stdout"
	EventStderr = "stderr"
	EventNote   = "note"
)

// Providers: the agent CLI a run uses. ProviderClaude is an alias of ProviderClaudeCode;
// ProviderCustom runs the run's Command with the prompt on its standard input.
const (
	ProviderClaudeCode = "claude-code"
	ProviderClaude     = "claude"
	ProviderCodex      = "codex"
	ProviderOSA        = "osa"
	ProviderPi         = "pi"
	ProviderHermes     = "hermes"
	ProviderCustom     = "custom"
)

// Device kinds.
const (
	KindSandbox  = "sandbox"
	KindComputer = "computer"
)

// IsTerminal reports whether a run with this status has ended (succeeded, failed or canceled).
func IsTerminal(status string) bool {
	return status == StatusSucceeded || status == StatusFailed || status == StatusCanceled
}
