package agentruns

import (
	"context"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// Version is this SDK's version, sent in the User-Agent header.
const Version = "0.1.0"

// DefaultBaseURL is where the client looks for the API when neither WithBaseURL nor
// AGENTRUNS_API_URL says otherwise (what `agentruns dev` serves).
const DefaultBaseURL = "http://127.0.0.1:8000"

const (
	defaultTimeout     = 30 * time.Second
	defaultMaxRetries  = 3
	defaultBackoffBase = 500 * time.Millisecond
	// However long a request may take (a long-poll adds its wait), a host that does not accept the
	// connection within this is unreachable.
	maxConnectTimeout = 10 * time.Second
	// The server sends an SSE keepalive comment every 15 s: a stream silent for longer is dead.
	sseIdleTimeout = 45 * time.Second
)

// Client talks to one agentruns API with one API key. It is safe for concurrent use.
type Client struct {
	// AgentRuns creates, waits for, lists, cancels and streams runs.
	AgentRuns *AgentRunsService
	// Devices manages the tenant's sandboxes and computers.
	Devices *DevicesService

	cfg  config
	http *http.Client
	// Seams for the tests: how the client pauses between attempts and reads the time.
	sleep func(ctx context.Context, d time.Duration) error
	now   func() time.Time
}

type config struct {
	baseURL     string
	apiKey      *string // nil: not given, so AGENTRUNS_API_KEY applies
	timeout     time.Duration
	maxRetries  int
	backoffBase time.Duration
	httpClient  *http.Client
	sseIdle     time.Duration
}

// Option configures a Client (see NewClient).
type Option func(*config)

// WithAPIKey sets the API key sent as `Authorization: Bearer KEY` (default: AGENTRUNS_API_KEY).
func WithAPIKey(key string) Option {
	return func(c *config) { c.apiKey = &key }
}

// WithBaseURL sets the API's address, with or without its /api/v1 suffix
// (default: AGENTRUNS_API_URL, else DefaultBaseURL).
func WithBaseURL(url string) Option {
	return func(c *config) { c.baseURL = url }
}

// WithHTTPClient makes the client send its requests through hc (a proxy, custom TLS, a test
// transport). Its own Timeout, if any, applies on top of the SDK's per-request timeouts.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *config) { c.httpClient = hc }
}

// WithTimeout sets how long one attempt of a request may take (default 30 s); a long-poll or a
// create that waits on the server gets its wait on top.
func WithTimeout(d time.Duration) Option {
	return func(c *config) { c.timeout = d }
}

// WithMaxRetries sets how many times a failed request may be resent (default 3; 0 disables retries).
func WithMaxRetries(n int) Option {
	return func(c *config) { c.maxRetries = n }
}

// WithBackoffBase sets the first retry's backoff ceiling (default 500 ms); each retry doubles it,
// up to 8 s. A Retry-After header from the server takes precedence.
func WithBackoffBase(d time.Duration) Option {
	return func(c *config) { c.backoffBase = d }
}

// NewClient returns a client configured by opts; what they leave out comes from the environment
// variables AGENTRUNS_API_URL and AGENTRUNS_API_KEY.
func NewClient(opts ...Option) *Client {
	cfg := config{timeout: defaultTimeout, maxRetries: defaultMaxRetries, backoffBase: defaultBackoffBase,
		sseIdle: sseIdleTimeout}
	for _, opt := range opts {
		opt(&cfg)
	}
	if cfg.baseURL == "" {
		cfg.baseURL = os.Getenv("AGENTRUNS_API_URL")
	}
	if cfg.baseURL == "" {
		cfg.baseURL = DefaultBaseURL
	}
	// Accept the URL with or without the API prefix: every path carries it.
	cfg.baseURL = strings.TrimSuffix(strings.TrimRight(cfg.baseURL, "/"), "/api/v1")
	if cfg.apiKey == nil {
		key := os.Getenv("AGENTRUNS_API_KEY")
		cfg.apiKey = &key
	}
	if cfg.maxRetries < 0 {
		cfg.maxRetries = 0
	}
	hc := cfg.httpClient
	if hc == nil {
		hc = &http.Client{Transport: defaultTransport()}
	}
	c := &Client{cfg: cfg, http: hc, sleep: sleepContext, now: time.Now}
	c.AgentRuns = &AgentRunsService{client: c}
	c.Devices = &DevicesService{client: c}
	return c
}

// BaseURL is the API address the client sends to (without the /api/v1 prefix).
func (c *Client) BaseURL() string { return c.cfg.baseURL }

// defaultTransport is Go's default transport with a short connect timeout.
func defaultTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: maxConnectTimeout, KeepAlive: 30 * time.Second}).DialContext
	return t
}

func sleepContext(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
