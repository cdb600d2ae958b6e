package agentruns

import (
	"encoding/json"
	"strconv"
	"strings"
)

// sseMessage is one dispatched Server-Sent Events message (the WHATWG event-stream fields).
type sseMessage struct {
	data  string
	event string
	id    string
	hasID bool
}

// sseDecoder is fed lines without their line ending; it returns a message at each blank line.
type sseDecoder struct {
	data        []string
	event       string
	id          string
	hasID       bool
	lastEventID string
}

// feed consumes one line; the message comes back on the blank line that ends it.
func (d *sseDecoder) feed(line string) (sseMessage, bool) {
	if line == "" {
		return d.dispatch()
	}
	if strings.HasPrefix(line, ":") { // a comment, e.g. the server's keepalive
		return sseMessage{}, false
	}
	name, value, _ := strings.Cut(line, ":")
	value = strings.TrimPrefix(value, " ")
	switch name { // "retry" is ignored: reconnecting follows the SDK's own backoff
	case "data":
		d.data = append(d.data, value)
	case "event":
		d.event = value
	case "id":
		if !strings.ContainsRune(value, 0) {
			d.id, d.hasID = value, true
		}
	}
	return sseMessage{}, false
}

func (d *sseDecoder) dispatch() (sseMessage, bool) {
	if d.hasID {
		d.lastEventID = d.id
	}
	defer func() { d.data, d.event, d.id, d.hasID = nil, "", "", false }()
	if len(d.data) == 0 { // the spec drops a message without data (it may still set the id)
		return sseMessage{}, false
	}
	event := d.event
	if event == "" {
		event = "message"
	}
	return sseMessage{data: strings.Join(d.data, "\n"), event: event, id: d.id, hasID: d.hasID}, true
}

// eventFromSSE is the run event an SSE message carries; false for messages that are not run events.
func eventFromSSE(msg sseMessage) (Event, bool) {
	var e Event
	if err := json.Unmarshal([]byte(msg.data), &e); err == nil {
		return e, true
	}
	// A server that sends the chunk itself as data: rebuild the event from the SSE fields.
	seq, err := strconv.ParseInt(msg.id, 10, 64)
	if !msg.hasID || err != nil || seq < 0 || !isEventType(msg.event) {
		return Event{}, false
	}
	text, _ := json.Marshal(msg.data)
	return newEvent(seq, msg.event, text), true
}

func isEventType(name string) bool {
	return name == EventStatus || name == EventStdout || name == EventStderr || name == EventNote
}
