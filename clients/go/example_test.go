//go:build e2e

package agentruns_test

import (
	"context"
	"fmt"
	"log"

	agentruns "github.com/agentruns/agentruns-go"
)

// The README shows this function's body verbatim (readme_test.go holds it to that); the e2e mode
// runs it against a live server with a sandbox "box-1".
func ExampleAgentRunsService_Run() {
	client := agentruns.NewClient() // AGENTRUNS_API_URL, AGENTRUNS_API_KEY
	run, err := client.AgentRuns.Run(context.Background(), agentruns.RunParams{
		Prompt:    "list the files",
		SandboxID: agentruns.String("box-1"),
		Provider:  agentruns.String(agentruns.ProviderCustom),
		Command:   agentruns.String(`echo "task: $(cat)"`),
		Timeout:   agentruns.Int(300),
		Metadata:  map[string]any{"ticket": "T-42"},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(run.Status, run.Output)
	// Output: succeeded task: list the files
}
