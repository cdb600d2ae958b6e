package agentruns

import (
	"encoding/json"
	"errors"
	"time"
)

// Event is one entry of a run's ordered event log: a status change, a chunk of output, or a note
// from the service (e.g. "live output capped").
type Event struct {
	// Seq orders a run's events; Stream delivers each seq once, in order.
	Seq int64
	// Type is EventStatus, EventStdout, EventStderr or EventNote.
	Type string
	// Text is the chunk of an output event.
	Text string
	// Status is a status event's new status.
	Status string
	// Error comes with the status event of a failed or canceled run.
	Error *Failure
	// Note is a note event's message.
	Note string
	// At is when the event was recorded (nil if the server did not say).
	At *time.Time
	// Data is the event's data as JSON: an object for status and note events ({"status": ...},
	// {"note": ...}), a string for output.
	Data json.RawMessage
}

var errNotAnEvent = errors.New("agentruns: not a run event")

// UnmarshalJSON reads an event of the API: {"seq", "type", "data", "at"}.
func (e *Event) UnmarshalJSON(b []byte) error {
	var raw struct {
		Seq  *int64          `json:"seq"`
		Type *string         `json:"type"`
		Data json.RawMessage `json:"data"`
		At   *string         `json:"at"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	if raw.Seq == nil || raw.Type == nil {
		return errNotAnEvent
	}
	*e = newEvent(*raw.Seq, *raw.Type, raw.Data)
	if raw.At != nil {
		if at, err := time.Parse(time.RFC3339Nano, *raw.At); err == nil {
			e.At = &at
		}
	}
	return nil
}

// newEvent builds an event with its data normalised: status and note data always become an
// object, also when a server sent it as a JSON-encoded string or as bare text.
func newEvent(seq int64, typ string, data json.RawMessage) Event {
	e := Event{Seq: seq, Type: typ, Data: data}
	var text string
	isText := json.Unmarshal(data, &text) == nil
	if typ != EventStatus && typ != EventNote {
		if isText {
			e.Text = text
		}
		return e
	}
	var fields struct {
		Status *string  `json:"status"`
		Error  *Failure `json:"error"`
		Note   *string  `json:"note"`
	}
	object := data
	if isText {
		object = textToObject(typ, text)
	}
	if json.Unmarshal(object, &fields) != nil {
		return e
	}
	e.Data = object
	if fields.Status != nil {
		e.Status = *fields.Status
	}
	if fields.Note != nil {
		e.Note = *fields.Note
	}
	e.Error = fields.Error
	return e
}

// textToObject is the object of status or note data that came as a string: a JSON-encoded object
// inside it, else the string (JSON-decoded if it is a JSON string) as the status or the note.
func textToObject(typ, text string) json.RawMessage {
	if isObject(json.RawMessage(text)) {
		return json.RawMessage(text)
	}
	value := text
	var inner string
	if json.Unmarshal([]byte(text), &inner) == nil {
		value = inner
	}
	object, _ := json.Marshal(map[string]string{dataKey(typ): value})
	return object
}

func dataKey(typ string) string {
	if typ == EventNote {
		return "note"
	}
	return "status"
}

func isObject(b json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(b, &m) == nil && m != nil
}

// terminalStatus is the terminal status an event announces, or "".
func (e *Event) terminalStatus() string {
	if e.Type == EventStatus && IsTerminal(e.Status) {
		return e.Status
	}
	return ""
}

// eventCursor is where a stream stands: the last seq delivered (dedupe, Last-Event-ID) and
// whether the terminal status event has been delivered.
type eventCursor struct {
	last  int64
	ended bool
}

// accept says whether to deliver e: not one already delivered (a server that replays on resume),
// nor anything after the terminal status event.
func (c *eventCursor) accept(e *Event) bool {
	if c.ended || e.Seq <= c.last {
		return false
	}
	c.last = e.Seq
	c.ended = e.terminalStatus() != ""
	return true
}
