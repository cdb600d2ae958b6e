package agentruns

import (
	"encoding/json"
	"testing"
)

func TestSSEDecoder(t *testing.T) {
	var d sseDecoder
	lines := []string{": keepalive", "id: 7", "event: status", `data: {"seq": 7, "type": "status",`,
		`data:  "data": "{\"status\": \"running\"}", "at": "2024-05-01T10:00:00Z"}`, "",
		"id: 8", "event: stdout", "data: hi", "", "retry: 500", "id: 9", "", "data: a", "data: b", ""}
	var messages []sseMessage
	for _, line := range lines {
		if msg, ok := d.feed(line); ok {
			messages = append(messages, msg)
		}
	}
	if len(messages) != 3 || messages[0].id != "7" || messages[1].id != "8" || messages[2].hasID {
		t.Fatalf("messages %+v", messages)
	}
	if d.lastEventID != "9" || messages[2].data != "a\nb" || messages[2].event != "message" {
		t.Fatalf("last id %q, third %+v", d.lastEventID, messages[2])
	}
	status, ok := eventFromSSE(messages[0])
	if !ok || status.Seq != 7 || status.Type != EventStatus || status.Status != StatusRunning || status.At == nil ||
		string(status.Data) != `{"status": "running"}` {
		t.Fatalf("status event %+v", status)
	}
	// A server that sends the chunk itself as data: rebuilt from the SSE fields.
	output, ok := eventFromSSE(messages[1])
	if !ok || output.Seq != 8 || output.Type != EventStdout || output.Text != "hi" || output.At != nil {
		t.Fatalf("output event %+v", output)
	}
	if _, ok := eventFromSSE(messages[2]); ok {
		t.Fatal("a message without a run event was taken for one")
	}
}

func TestEventDataIsNormalised(t *testing.T) {
	decode := func(s string) Event {
		var e Event
		if err := json.Unmarshal([]byte(s), &e); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		return e
	}
	note := decode(`{"seq": 4, "type": "note", "data": "{\"note\": \"live output capped\"}", "at": null}`)
	if note.Note != "live output capped" || string(note.Data) != `{"note": "live output capped"}` || note.terminalStatus() != "" {
		t.Fatalf("note %+v", note)
	}
	if plain := decode(`{"seq": 4, "type": "note", "data": "plain"}`); plain.Note != "plain" || string(plain.Data) != `{"note":"plain"}` {
		t.Fatalf("plain note %+v", plain)
	}
	if quoted := decode(`{"seq": 1, "type": "status", "data": "\"running\""}`); quoted.Status != StatusRunning {
		t.Fatalf("quoted status %+v", quoted)
	}
	failed := decode(`{"seq": 9, "type": "status", "data": {"status": "failed", "error": {"code": "timeout", "message": "m"}}}`)
	if failed.terminalStatus() != StatusFailed || failed.Error == nil || failed.Error.Code != "timeout" {
		t.Fatalf("failed %+v", failed)
	}
	out := decode(`{"seq": 2, "type": "stdout", "data": "{\"not\": \"decoded\"}"}`)
	if out.Text != `{"not": "decoded"}` || out.Status != "" {
		t.Fatalf("output %+v", out)
	}
	var missing Event
	if err := json.Unmarshal([]byte(`{"type": "stdout"}`), &missing); err == nil {
		t.Fatal("an event without seq was accepted")
	}
}

func TestTheCursorDedupesAndStopsAtTheTerminalEvent(t *testing.T) {
	c := eventCursor{last: 2}
	var accepted []bool
	for _, e := range []Event{{Seq: 1}, {Seq: 2}, {Seq: 3}, {Seq: 3},
		{Seq: 4, Type: EventStatus, Status: StatusSucceeded}, {Seq: 5}} {
		e := e
		accepted = append(accepted, c.accept(&e))
	}
	want := []bool{false, false, true, false, true, false}
	for i := range want {
		if accepted[i] != want[i] {
			t.Fatalf("accepted %v", accepted)
		}
	}
	if c.last != 4 || !c.ended {
		t.Fatalf("cursor %+v", c)
	}
}
