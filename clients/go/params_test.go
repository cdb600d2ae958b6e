package agentruns

import (
	"context"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestZeroValuesAreNotSentButExplicitOnesAre(t *testing.T) {
	api := newFakeAPI(t, reply(201, map[string]any{"data": runJSON("queued")}))
	client, _ := api.client()
	ctx := context.Background()
	if _, err := client.AgentRuns.Create(ctx, RunParams{Prompt: "p", SandboxID: String("box")}); err != nil {
		t.Fatal(err)
	}
	if got := string(api.got()[0].body); got != `{"prompt":"p","sandbox_id":"box"}` {
		t.Fatalf("body %s", got)
	}
	// Asked for explicitly, a zero is sent (and the server says what it thinks of it).
	if _, err := client.AgentRuns.Create(ctx, RunParams{Prompt: "p", SandboxID: String("box"), Timeout: Int(0),
		Cwd: String(""), Wait: Int(0), Metadata: map[string]any{"n": 0}}); err != nil {
		t.Fatal(err)
	}
	body := api.got()[1].jsonBody(t)
	want := map[string]any{"prompt": "p", "sandbox_id": "box", "timeout": 0.0, "cwd": "", "wait": 0.0,
		"metadata": map[string]any{"n": 0.0}}
	if !reflect.DeepEqual(body, want) {
		t.Fatalf("body %v", body)
	}
}

func TestListParamsBecomeTheQuery(t *testing.T) {
	after := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	p := ListParams{Status: String(StatusFailed), Provider: String("custom"), SandboxID: String("box"),
		CreatedAfter: Time(after), Limit: Int(2), Metadata: map[string]string{"ticket": "T-42", "env": ""}}
	want := url.Values{"status": {"failed"}, "provider": {"custom"}, "sandbox_id": {"box"},
		"created_after": {"2024-05-01T10:00:00Z"}, "limit": {"2"}, "metadata[ticket]": {"T-42"}, "metadata[env]": {""},
		"cursor": {"c1"}}
	if got := p.query(String("c1")); !reflect.DeepEqual(got, want) {
		t.Fatalf("query %v", got)
	}
	if got := (&ListParams{}).query(nil); len(got) != 0 {
		t.Fatalf("empty params sent %v", got)
	}
}

func TestADeviceUpdateSendsOnlyWhatIsGivenAndClearsWithNull(t *testing.T) {
	api := newFakeAPI(t, ok(map[string]any{"id": "d"}))
	client, _ := api.client()
	_, err := client.Devices.Update(context.Background(), "pc 1", DeviceUpdateParams{Name: String("second"),
		Port: Int(2222), Clear: []string{"password"}, Labels: map[string]string{},
		Providers: map[string]*ProviderSettings{"codex": nil, "pi": {Executable: String("/opt/pi")}}})
	if err != nil {
		t.Fatal(err)
	}
	got := api.got()[0]
	if got.method != "PATCH" || got.path != "/api/v1/devices/pc 1" {
		t.Fatalf("%s %s", got.method, got.path)
	}
	want := map[string]any{"name": "second", "port": 2222.0, "password": nil, "labels": map[string]any{},
		"providers": map[string]any{"codex": nil, "pi": map[string]any{"executable": "/opt/pi"}}}
	if body := got.jsonBody(t); !reflect.DeepEqual(body, want) {
		t.Fatalf("body %v", body)
	}
	for _, bad := range []DeviceUpdateParams{{Clear: []string{"port"}}, {Name: String("x"), Clear: []string{"name"}}} {
		if _, err := client.Devices.Update(context.Background(), "d", bad); err == nil {
			t.Fatalf("%+v was accepted", bad)
		}
	}
	if len(api.got()) != 1 {
		t.Fatal("a refused update was sent")
	}
}

func TestRequestsCarryTheKeyTheAgentAndTheRightURL(t *testing.T) {
	api := newFakeAPI(t, ok(runJSON("running")))
	t.Setenv("AGENTRUNS_API_URL", api.URL+"/api/v1/")
	t.Setenv("AGENTRUNS_API_KEY", "ark_from_env")
	client := NewClient()
	if client.BaseURL() != api.URL {
		t.Fatalf("base URL %q", client.BaseURL())
	}
	if _, err := client.AgentRuns.Get(context.Background(), runID); err != nil {
		t.Fatal(err)
	}
	got := api.got()[0]
	if got.path != "/api/v1/agent-runs/"+runID || got.header.Get("Authorization") != "Bearer ark_from_env" ||
		got.header.Get("Accept") != "application/json" || !strings.HasPrefix(got.header.Get("User-Agent"), "agentruns-go/") {
		t.Fatalf("%s %v", got.path, got.header)
	}
	explicit := NewClient(WithBaseURL(api.URL), WithAPIKey("ark_given"))
	if _, err := explicit.AgentRuns.Get(context.Background(), runID); err != nil {
		t.Fatal(err)
	}
	if auth := api.got()[1].header.Get("Authorization"); auth != "Bearer ark_given" {
		t.Fatalf("Authorization %q", auth)
	}
}
