package agentruns

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// randomUUID is a version 4 UUID in its canonical form.
func randomUUID() string {
	b := randomBytes()
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// newRequestID is the X-Request-Id of one logical request: 32 hex digits, as the Python SDK sends.
func newRequestID() string {
	b := randomBytes()
	return hex.EncodeToString(b[:])
}

// newIdempotencyKey is the Idempotency-Key of a create that was given none ("sdk-" and a UUID,
// 40 characters, as the Python SDK sends).
func newIdempotencyKey() string {
	return "sdk-" + randomUUID()
}

func randomBytes() [16]byte {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on the platforms Go supports; a predictable id would be worse.
		panic("agentruns: no randomness: " + err.Error())
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return b
}
