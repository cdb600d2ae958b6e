package agentruns_test

import (
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	agentruns "github.com/agentruns/agentruns-go"
)

// webhookVector is one case of clients/webhook-signature-vectors.json, which was written with
// Python's hmac module alone: every SDK must give the same answers.
type webhookVector struct {
	Name      string `json:"name"`
	Secret    string `json:"secret"`
	Body      string `json:"body"`
	Header    string `json:"header"`
	Now       int64  `json:"now"`
	Tolerance int64  `json:"tolerance"`
	Expect    string `json:"expect"`
}

func loadWebhookVectors(t *testing.T) []webhookVector {
	t.Helper()
	raw, err := os.ReadFile("../webhook-signature-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vectors []webhookVector
	if err := json.Unmarshal(raw, &vectors); err != nil {
		t.Fatal(err)
	}
	if len(vectors) == 0 {
		t.Fatal("no vectors")
	}
	return vectors
}

// webhookCode names a VerifyWebhook error as the vectors (and the other SDKs) do.
func webhookCode(t *testing.T, err error) string {
	t.Helper()
	codes := map[error]string{
		agentruns.ErrWebhookMalformedHeader: "malformed_header",
		agentruns.ErrWebhookTimestamp:       "timestamp_outside_tolerance",
		agentruns.ErrWebhookSignature:       "signature_mismatch",
		agentruns.ErrWebhookMalformedBody:   "malformed_body",
	}
	if err == nil {
		return "ok"
	}
	found := ""
	for sentinel, code := range codes {
		if errors.Is(err, sentinel) {
			if found != "" {
				t.Fatalf("%v is both %s and %s", err, found, code)
			}
			found = code
		}
	}
	if found == "" {
		t.Fatalf("not a webhook verification error: %v", err)
	}
	if !strings.HasPrefix(err.Error(), "agentruns: ") || len(err.Error()) < 40 {
		t.Errorf("the error should say what went wrong: %q", err)
	}
	return found
}

const (
	webhookSecret = "whsec_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	webhookBody   = `{"id":"evt_1","type":"run.succeeded","created_at":"2023-11-14T22:13:20Z",` +
		`"data":{"id":"6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b","status":"succeeded","output":"Grüße 🚀","exit_code":0}}`
)

var webhookNow = time.Unix(1700000000, 0)

func verifyAt(t *testing.T, body, header, secret string, tolerance time.Duration, now time.Time) string {
	t.Helper()
	_, err := agentruns.VerifyWebhookAt([]byte(body), header, secret, tolerance, now)
	return webhookCode(t, err)
}

func TestWebhookSharedVectors(t *testing.T) {
	seen := map[string]bool{}
	for _, v := range loadWebhookVectors(t) {
		v := v
		seen[v.Expect] = true
		t.Run(v.Name, func(t *testing.T) {
			tolerance := time.Duration(v.Tolerance) * time.Second
			event, err := agentruns.VerifyWebhookAt([]byte(v.Body), v.Header, v.Secret, tolerance, time.Unix(v.Now, 0))
			if got := webhookCode(t, err); got != v.Expect {
				t.Fatalf("got %s, want %s (%v)", got, v.Expect, err)
			}
			if v.Expect != "ok" {
				return
			}
			var want struct {
				ID        string `json:"id"`
				Type      string `json:"type"`
				CreatedAt string `json:"created_at"`
				Data      any    `json:"data"`
			}
			if err := json.Unmarshal([]byte(v.Body), &want); err != nil {
				t.Fatal(err)
			}
			var data any
			if err := json.Unmarshal(event.Data, &data); err != nil {
				t.Fatal(err)
			}
			if event.ID != want.ID || event.Type != want.Type || event.CreatedAt != want.CreatedAt ||
				!reflect.DeepEqual(data, want.Data) {
				t.Fatalf("decoded %+v, want %+v", event, want)
			}
		})
	}
	if len(seen) != 5 {
		t.Fatalf("the vectors should cover ok and the four errors, not only %v", seen)
	}
}

func TestSignWebhookReproducesTheVectorsItCouldHaveWritten(t *testing.T) {
	canonical := regexp.MustCompile(`^t=([1-9][0-9]*),v1=[0-9a-f]{64}$`)
	n := 0
	for _, v := range loadWebhookVectors(t) {
		m := canonical.FindStringSubmatch(v.Header)
		if v.Expect != "ok" || m == nil {
			continue
		}
		seconds, _ := strconv.ParseInt(m[1], 10, 64)
		if got := agentruns.SignWebhook([]byte(v.Body), []string{v.Secret}, time.Unix(seconds, 0)); got != v.Header {
			t.Errorf("%s: signed %s, want %s", v.Name, got, v.Header)
		}
		n++
	}
	if n < 4 {
		t.Fatalf("only %d vectors to reproduce", n)
	}
}

func TestWebhookRoundTripAndTheRunItCarries(t *testing.T) {
	header := agentruns.SignWebhook([]byte(webhookBody), []string{webhookSecret}, webhookNow)
	if !regexp.MustCompile(`^t=1700000000,v1=[0-9a-f]{64}$`).MatchString(header) {
		t.Fatalf("header %q", header)
	}
	event, err := agentruns.VerifyWebhookAt([]byte(webhookBody), header, webhookSecret, 0, webhookNow)
	if err != nil {
		t.Fatal(err)
	}
	if event.ID != "evt_1" || event.Type != "run.succeeded" || event.CreatedAt != "2023-11-14T22:13:20Z" {
		t.Fatalf("event %+v", event)
	}
	run, err := event.Run()
	if err != nil {
		t.Fatal(err)
	}
	if run.ID != "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b" || run.Status != agentruns.StatusSucceeded ||
		run.Output != "Grüße 🚀" || run.ExitCode == nil || *run.ExitCode != 0 {
		t.Fatalf("run %+v", run)
	}
	if _, err := (&agentruns.WebhookEvent{ID: "evt_2", Data: json.RawMessage(`[1]`)}).Run(); err == nil {
		t.Fatal("an array is not a run")
	}

	// VerifyWebhook reads the clock.
	now := time.Now()
	fresh := agentruns.SignWebhook([]byte(webhookBody), []string{webhookSecret}, now)
	if _, err := agentruns.VerifyWebhook([]byte(webhookBody), fresh, webhookSecret, 0); err != nil {
		t.Fatal(err)
	}
	stale := agentruns.SignWebhook([]byte(webhookBody), []string{webhookSecret}, now.Add(-time.Hour))
	_, err = agentruns.VerifyWebhook([]byte(webhookBody), stale, webhookSecret, 0)
	if code := webhookCode(t, err); code != "timestamp_outside_tolerance" {
		t.Fatal(code)
	}
}

func TestWebhookRotationSignsWithEachSecretInOrder(t *testing.T) {
	header := agentruns.SignWebhook([]byte(webhookBody), []string{"whsec_new", "whsec_old"}, webhookNow)
	parts := strings.Split(header, ",")
	if len(parts) != 3 {
		t.Fatalf("header %q", header)
	}
	for i, secret := range []string{"whsec_new", "whsec_old"} {
		alone := agentruns.SignWebhook([]byte(webhookBody), []string{secret}, webhookNow)
		if alone != parts[0]+","+parts[i+1] {
			t.Errorf("v1 number %d is not %s's: %s", i+1, secret, header)
		}
		if code := verifyAt(t, webhookBody, header, secret, 0, webhookNow); code != "ok" {
			t.Errorf("%s: %s", secret, code)
		}
	}
	if code := verifyAt(t, webhookBody, header, "whsec_other", 0, webhookNow); code != "signature_mismatch" {
		t.Error(code)
	}
}

func TestWebhookTamperingAndTheTolerance(t *testing.T) {
	header := agentruns.SignWebhook([]byte(webhookBody), []string{webhookSecret}, webhookNow)
	cases := []struct {
		body, secret string
		tolerance    time.Duration
		now          time.Time
		want         string
	}{
		{strings.Replace(webhookBody, "succeeded", "failed", 1), webhookSecret, 0, webhookNow, "signature_mismatch"},
		{webhookBody + "\n", webhookSecret, 0, webhookNow, "signature_mismatch"},
		{webhookBody, webhookSecret + "x", 0, webhookNow, "signature_mismatch"},
		{webhookBody, webhookSecret, 0, webhookNow.Add(300 * time.Second), "ok"},
		{webhookBody, webhookSecret, 0, webhookNow.Add(-300 * time.Second), "ok"},
		{webhookBody, webhookSecret, 0, webhookNow.Add(301 * time.Second), "timestamp_outside_tolerance"},
		{webhookBody, webhookSecret, 0, webhookNow.Add(-301 * time.Second), "timestamp_outside_tolerance"},
		{webhookBody, webhookSecret, 0, webhookNow.Add(300500 * time.Millisecond), "timestamp_outside_tolerance"},
		{webhookBody, webhookSecret, 15 * time.Minute, webhookNow.Add(10 * time.Minute), "ok"},
		{webhookBody, webhookSecret, time.Minute, webhookNow.Add(61 * time.Second), "timestamp_outside_tolerance"},
		{webhookBody, webhookSecret, -1, webhookNow.Add(299 * time.Second), "ok"}, // <= 0: the default
	}
	for i, c := range cases {
		if got := verifyAt(t, c.body, header, c.secret, c.tolerance, c.now); got != c.want {
			t.Errorf("case %d: got %s, want %s", i, got, c.want)
		}
	}
}

func TestWebhookHeaderShapes(t *testing.T) {
	header := agentruns.SignWebhook([]byte(webhookBody), []string{webhookSecret}, webhookNow)
	ts, v1, _ := strings.Cut(header, ",")
	malformed := []string{
		"", " \t", v1, "t=now," + v1, "t=1e9," + v1, "t=1700000000.0," + v1, "t=-1700000000," + v1,
		"t=+1700000000," + v1, "t=," + v1, ts + "," + ts + "," + v1, ts, ts + ",v0=abc", "T=1700000000," + v1,
		"t=１７００００００００," + v1, // fullwidth digits
	}
	for _, h := range malformed {
		if got := verifyAt(t, webhookBody, h, webhookSecret, 0, webhookNow); got != "malformed_header" {
			t.Errorf("%q: %s", h, got)
		}
	}
	tolerated := []string{ts + ",v0=abc," + v1 + ",v2=x", " " + ts + " ,\t" + strings.Replace(v1, "=", " = ", 1) + ",,junk"}
	for _, h := range tolerated {
		if got := verifyAt(t, webhookBody, h, webhookSecret, 0, webhookNow); got != "ok" {
			t.Errorf("%q: %s", h, got)
		}
	}
	good := strings.TrimPrefix(v1, "v1=")
	for _, candidate := range []string{strings.ToUpper(good), good[:63], good + "0", "", strings.Repeat("é", 32)} {
		if got := verifyAt(t, webhookBody, ts+",v1="+candidate, webhookSecret, 0, webhookNow); got != "signature_mismatch" {
			t.Errorf("%q: %s", candidate, got)
		}
	}
}

func TestWebhookBodiesThatAreNotEvents(t *testing.T) {
	bodies := []string{
		"", "nope", "[1]", "null", `"evt_1"`, `{"id":"evt_1"}`, `{"id":1,"type":"x"}`, `{"id":null,"type":"x"}`,
		`{"ID":"evt_1","Type":"x"}`, // names are case-sensitive
		`{"id":"e","type":"x","n":NaN}`, "\ufeff" + webhookBody, `{"id":"e","type":"` + "\xff" + `"}`,
	}
	for _, body := range bodies {
		header := agentruns.SignWebhook([]byte(body), []string{webhookSecret}, webhookNow)
		if got := verifyAt(t, body, header, webhookSecret, 0, webhookNow); got != "malformed_body" {
			t.Errorf("%q: %s", body, got)
		}
	}
}

func TestAnEmptyWebhookSecretIsAProgrammingError(t *testing.T) {
	header := agentruns.SignWebhook([]byte(webhookBody), []string{webhookSecret}, webhookNow)
	_, err := agentruns.VerifyWebhookAt([]byte(webhookBody), header, "", 0, webhookNow)
	if err == nil || errors.Is(err, agentruns.ErrWebhookSignature) || errors.Is(err, agentruns.ErrWebhookMalformedHeader) {
		t.Fatalf("got %v", err)
	}
	for _, secrets := range [][]string{nil, {""}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("SignWebhook(%q) did not panic", secrets)
				}
			}()
			agentruns.SignWebhook([]byte(webhookBody), secrets, webhookNow)
		}()
	}
}

// The README shows ExampleVerifyWebhook's body verbatim, so it cannot drift from code that compiles.
func TestTheReadmeShowsTheWebhookExample(t *testing.T) {
	source, err := os.ReadFile("webhooks_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, body, found := strings.Cut(string(source), "func ExampleVerifyWebhook() {\n")
	body, _, ended := strings.Cut(body, "\n}\n")
	if !found || !ended {
		t.Fatal("no ExampleVerifyWebhook")
	}
	lines := strings.Split(body, "\n")
	for i, line := range lines {
		lines[i] = strings.TrimPrefix(line, "\t")
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if block := "```go\n" + strings.Join(lines, "\n") + "\n```"; !strings.Contains(string(readme), block) {
		t.Fatalf("README.md does not show the example verbatim; expected the block:\n%s", block)
	}
}

// handleWebhookEvent stands for the receiver's own work in the example.
func handleWebhookEvent(*agentruns.WebhookEvent) {}

func ExampleVerifyWebhook() {
	secret := os.Getenv("AGENTRUNS_WEBHOOK_SECRET") // whsec_...
	http.HandleFunc("/agentruns/events", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body) // the raw bytes: they are what was signed
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		event, err := agentruns.VerifyWebhook(body, r.Header.Get(agentruns.WebhookSignatureHeader), secret, 0)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest) // errors.Is(err, agentruns.ErrWebhookSignature)...
			return
		}
		handleWebhookEvent(event) // delivery is at least once: skip an event.ID already handled
		w.WriteHeader(http.StatusNoContent)
	})
	log.Fatal(http.ListenAndServe(":8080", nil))
}
