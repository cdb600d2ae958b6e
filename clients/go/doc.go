// Package agentruns is the Go SDK of the agentruns REST API: dispatch AI coding-agent runs to
// devices over SSH, wait for them, follow their live output and manage the devices.
//
//	client := agentruns.NewClient() // AGENTRUNS_API_URL / AGENTRUNS_API_KEY
//	run, err := client.AgentRuns.Run(ctx, agentruns.RunParams{
//		Prompt:    "Fix the failing test",
//		SandboxID: agentruns.String("box-1"),
//		Provider:  agentruns.String(agentruns.ProviderCodex),
//	})
//
// It mirrors the Python SDK (agentruns.client): the same retry policy (creates and reads are
// resent after connection errors, 429 and 5xx under one Idempotency-Key and one X-Request-Id;
// other writes only when they surely never arrived, or on 429), the same event stream (SSE with
// Last-Event-ID resume, polling as the fallback) and one error type, *Error, for every failure
// the API reports. It uses the standard library only.
package agentruns
