package agentruns

import (
	"os"
	"strings"
	"testing"
)

// The README's example is ExampleAgentRunsService_Run's body, which the e2e mode runs against a
// live server: the README cannot drift from code that works.
func TestTheReadmeShowsTheTestedExample(t *testing.T) {
	source, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, body, found := strings.Cut(string(source), "func ExampleAgentRunsService_Run() {\n")
	body, _, ended := strings.Cut(body, "\t// Output:")
	if !found || !ended {
		t.Fatal("example_test.go has no ExampleAgentRunsService_Run with an Output comment")
	}
	var lines []string
	for _, line := range strings.Split(strings.TrimRight(body, "\n"), "\n") {
		lines = append(lines, strings.TrimPrefix(line, "\t"))
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := "```go\n" + strings.Join(lines, "\n") + "\n```"
	if !strings.Contains(string(readme), block) {
		t.Fatalf("README.md does not show the example verbatim; expected the block:\n%s", block)
	}
}
