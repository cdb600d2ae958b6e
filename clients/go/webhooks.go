package agentruns

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Webhook events arrive signed with Stripe's scheme, as agentruns/webhooks.py (the Python SDK)
// describes it:
//
//	Agentruns-Signature: t=1700000000,v1=5e138d...[,v1=...]
//	Agentruns-Event-Id: evt_...
//
// v1 is the lowercase hex HMAC-SHA256 of "{t}." + body, keyed with the endpoint's whole "whsec_..."
// secret. During a secret rotation there is one v1 per secret; any one matching is enough.
// clients/webhook-signature-vectors.json holds this SDK and the others to the same answers.
const (
	// WebhookSignatureHeader carries "t=<unix seconds>,v1=<hex>".
	WebhookSignatureHeader = "Agentruns-Signature"
	// WebhookEventIDHeader carries the event's ID (also the body's "id").
	WebhookEventIDHeader = "Agentruns-Event-Id"
	// DefaultWebhookTolerance is how far a signature's timestamp may be from the receiver's clock,
	// either way.
	DefaultWebhookTolerance = 300 * time.Second
)

// The errors of VerifyWebhook, in the order it checks (test with errors.Is; the error itself says
// more). Answer any of them with a 400.
var (
	// ErrWebhookMalformedHeader: the signature header is missing or empty, has no integer t= or
	// no v1= signature.
	ErrWebhookMalformedHeader = errors.New("agentruns: malformed webhook signature header")
	// ErrWebhookTimestamp: the signature's timestamp is outside the tolerance: a replayed event,
	// or a clock that is off.
	ErrWebhookTimestamp = errors.New("agentruns: webhook timestamp outside the tolerance")
	// ErrWebhookSignature: no v1 signature matches: the secret is not this endpoint's, or the body
	// was changed.
	ErrWebhookSignature = errors.New("agentruns: webhook signature mismatch")
	// ErrWebhookMalformedBody: the signature holds but the body is not an event (a JSON object with
	// string "id" and "type").
	ErrWebhookMalformedBody = errors.New("agentruns: malformed webhook body")
)

// WebhookEvent is a verified webhook event.
type WebhookEvent struct {
	// ID is "evt_...", as in the Agentruns-Event-Id header. Delivery is at least once: skip an ID
	// already handled.
	ID string `json:"id"`
	// Type is what happened, e.g. "run.succeeded".
	Type string `json:"type"`
	// CreatedAt is when it happened, RFC 3339 ("" if the body gave none).
	CreatedAt string `json:"created_at"`
	// Data is the event's object as JSON: for "run.*" events the run (see the Run method).
	Data json.RawMessage `json:"data"`
}

// Run decodes Data as the run that a "run.*" event carries.
func (e *WebhookEvent) Run() (*Run, error) {
	var run Run
	if err := json.Unmarshal(e.Data, &run); err != nil {
		return nil, fmt.Errorf("agentruns: the data of webhook event %s is not a run: %w", e.ID, err)
	}
	return &run, nil
}

// VerifyWebhook returns the event in body once signatureHeader proves that the holder of secret
// sent it within tolerance of now (0 or less: DefaultWebhookTolerance). body must be the request's
// raw body: JSON decoded and encoded again no longer has the bytes that were signed. A failure
// wraps ErrWebhookMalformedHeader, ErrWebhookTimestamp, ErrWebhookSignature or
// ErrWebhookMalformedBody; an empty secret is a configuration mistake, an error of its own.
func VerifyWebhook(body []byte, signatureHeader, secret string, tolerance time.Duration) (*WebhookEvent, error) {
	return VerifyWebhookAt(body, signatureHeader, secret, tolerance, time.Now())
}

// VerifyWebhookAt is VerifyWebhook with the current time given, for tests.
func VerifyWebhookAt(body []byte, signatureHeader, secret string, tolerance time.Duration,
	now time.Time) (*WebhookEvent, error) {
	if secret == "" {
		return nil, errors.New("agentruns: VerifyWebhook needs the endpoint's webhook secret; got an empty one")
	}
	if tolerance <= 0 {
		tolerance = DefaultWebhookTolerance
	}
	timestamp, signatures, err := parseSignatureHeader(signatureHeader)
	if err != nil {
		return nil, err
	}

	// ParseInt fails only past 64 bits (timestamp is all digits): far outside any tolerance.
	seconds, err := strconv.ParseInt(timestamp, 10, 64)
	age := now.Sub(time.Unix(seconds, 0)) // saturates rather than overflows
	if err != nil || age > tolerance || age < -tolerance {
		when := fmt.Sprintf("%s ago", age.Round(time.Second))
		if age < 0 {
			when = fmt.Sprintf("%s ahead of this clock", (-age).Round(time.Second))
		}
		return nil, fmt.Errorf("%w: signed at t=%s, %s, outside the %s tolerance "+
			"(a replayed event, or a clock that is off)", ErrWebhookTimestamp, timestamp, when, tolerance)
	}

	expected := []byte(webhookDigest(secret, timestamp, body))
	matched := false
	for _, candidate := range signatures {
		if hmac.Equal(expected, []byte(candidate)) {
			matched = true
			break
		}
	}
	if !matched {
		return nil, fmt.Errorf("%w: no v1 signature matches: the secret is not this endpoint's, or the body was "+
			"changed (verify the raw bytes as received, before any JSON decoding)", ErrWebhookSignature)
	}
	return decodeWebhookEvent(body)
}

// SignWebhook returns the Agentruns-Signature value for body sent at timestamp: one v1 per secret,
// in the order given (during a rotation, the new secret and the old). For tests of a receiver; it
// panics without a secret or with an empty one.
func SignWebhook(body []byte, secrets []string, timestamp time.Time) string {
	if len(secrets) == 0 {
		panic("agentruns: SignWebhook needs at least one secret")
	}
	t := strconv.FormatInt(timestamp.Unix(), 10)
	parts := []string{"t=" + t}
	for _, secret := range secrets {
		if secret == "" {
			panic("agentruns: SignWebhook got an empty secret")
		}
		parts = append(parts, "v1="+webhookDigest(secret, t, body))
	}
	return strings.Join(parts, ",")
}

// webhookDigest is the lowercase hex HMAC-SHA256 of "{timestamp}." + body.
func webhookDigest(secret, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(timestamp + "."))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// parseSignatureHeader returns the header's timestamp (its digits as sent: they are what was
// signed) and its v1 signatures.
func parseSignatureHeader(header string) (timestamp string, signatures []string, err error) {
	malformed := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrWebhookMalformedHeader}, args...)...)
	}
	// HTTP's optional whitespace only, as the other SDKs trim (strings.TrimSpace takes more).
	const ows = " \t"
	if strings.Trim(header, ows) == "" {
		return "", nil, malformed("the %s header is missing or empty", WebhookSignatureHeader)
	}
	for _, item := range strings.Split(header, ",") {
		key, value, ok := strings.Cut(item, "=")
		if !ok {
			continue // not a key=value item: ignored like an unknown scheme
		}
		key, value = strings.Trim(key, ows), strings.Trim(value, ows)
		switch key {
		case "t":
			if timestamp != "" {
				return "", nil, malformed("%s has more than one t=", WebhookSignatureHeader)
			}
			if !allDigits(value) {
				return "", nil, malformed("%s's t= must be unix seconds, not %q", WebhookSignatureHeader, value)
			}
			timestamp = value
		case "v1":
			signatures = append(signatures, value)
		}
		// Other schemes (v0=...) are skipped, so a sender can add one before every receiver knows it.
	}
	if timestamp == "" {
		return "", nil, malformed("%s has no t= timestamp", WebhookSignatureHeader)
	}
	if len(signatures) == 0 {
		return "", nil, malformed("%s has no v1= signature", WebhookSignatureHeader)
	}
	return timestamp, signatures, nil
}

// allDigits: ASCII digits only, and at least one (no sign, no decimal point).
func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// decodeWebhookEvent reads the event exactly as the Python and TypeScript SDKs do: strict UTF-8
// (encoding/json would replace invalid bytes) and case-sensitive names (a struct would also take
// "ID" for "id").
func decodeWebhookEvent(body []byte) (*WebhookEvent, error) {
	var fields map[string]json.RawMessage
	if !utf8.Valid(body) {
		return nil, fmt.Errorf("%w: the signed body is not UTF-8", ErrWebhookMalformedBody)
	}
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, fmt.Errorf("%w: the signed body is not a JSON object: %v", ErrWebhookMalformedBody, err)
	}
	id, idOK := jsonString(fields["id"])
	kind, typeOK := jsonString(fields["type"])
	if !idOK || !typeOK { // also a body of null, which decodes to a nil map
		return nil, fmt.Errorf("%w: the signed body is not an event (an object with id and type)",
			ErrWebhookMalformedBody)
	}
	createdAt, _ := jsonString(fields["created_at"])
	return &WebhookEvent{ID: id, Type: kind, CreatedAt: createdAt, Data: fields["data"]}, nil
}

// jsonString is raw as a string, if it is one (not null, a number...).
func jsonString(raw json.RawMessage) (string, bool) {
	var s *string
	if raw == nil || json.Unmarshal(raw, &s) != nil || s == nil {
		return "", false
	}
	return *s, true
}
