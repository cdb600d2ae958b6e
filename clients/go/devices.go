package agentruns

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"time"
)

const (
	devicesPath = "/api/v1/devices"
	// A device test connects to the device: it may take this long on top of the usual timeout.
	deviceTestExtra = 30 * time.Second
)

// DevicesService is client.Devices: the tenant's sandboxes and computers. Changes (Create,
// Update, Delete, Test) are resent only when they surely did not arrive, or on 429; reads are
// resent like runs' reads.
type DevicesService struct {
	client *Client
}

// DeviceParams registers a device (POST /api/v1/devices). Kind is required; an ssh device (the
// default Driver) also needs Host, Username, PrivateKey or Password, and HostKey unless
// TrustOnFirstUse. Nil fields are left out.
type DeviceParams struct {
	ID         *string `json:"id,omitempty"`          // 1-200 of [A-Za-z0-9._:@-]
	Kind       string  `json:"kind"`                  // KindSandbox or KindComputer
	Name       *string `json:"name,omitempty"`        // a display name
	Driver     *string `json:"driver,omitempty"`      // "ssh" (the default) or "local"
	Host       *string `json:"host,omitempty"`        // ssh: where to connect
	Port       *int    `json:"port,omitempty"`        // ssh: default 22
	Username   *string `json:"username,omitempty"`    // ssh: the login
	PrivateKey *string `json:"private_key,omitempty"` // ssh: a private key (write-only)
	Password   *string `json:"password,omitempty"`    // ssh: a password (write-only)
	// HostKey pins the device's SSH host key (a known_hosts line or the key itself).
	HostKey           *string                      `json:"host_key,omitempty"`
	TrustOnFirstUse   *bool                        `json:"trust_on_first_use,omitempty"`  // ssh: pin the key seen first
	LoginShell        *bool                        `json:"login_shell,omitempty"`         // run commands in a login shell
	Labels            map[string]string            `json:"labels,omitempty"`              // yours
	MaxConcurrentRuns *int                         `json:"max_concurrent_runs,omitempty"` // default 1
	DefaultCwd        *string                      `json:"default_cwd,omitempty"`         // runs' default working directory
	Env               map[string]string            `json:"env,omitempty"`                 // variables for every run (write-only)
	Providers         map[string]*ProviderSettings `json:"providers,omitempty"`           // per-provider settings
}

// DeviceUpdateParams changes some fields of a device (PATCH): nil fields stay as they are. A
// non-nil map is sent even when empty: Labels: map[string]string{} removes every label.
type DeviceUpdateParams struct {
	Kind              *string           `json:"kind,omitempty"`                // see DeviceParams
	Name              *string           `json:"name,omitempty"`                // see DeviceParams
	Driver            *string           `json:"driver,omitempty"`              // see DeviceParams
	Host              *string           `json:"host,omitempty"`                // see DeviceParams
	Port              *int              `json:"port,omitempty"`                // see DeviceParams
	Username          *string           `json:"username,omitempty"`            // see DeviceParams
	PrivateKey        *string           `json:"private_key,omitempty"`         // see DeviceParams
	Password          *string           `json:"password,omitempty"`            // see DeviceParams
	HostKey           *string           `json:"host_key,omitempty"`            // see DeviceParams
	TrustOnFirstUse   *bool             `json:"trust_on_first_use,omitempty"`  // see DeviceParams
	LoginShell        *bool             `json:"login_shell,omitempty"`         // see DeviceParams
	Labels            map[string]string `json:"labels"`                        // replaces the labels
	MaxConcurrentRuns *int              `json:"max_concurrent_runs,omitempty"` // see DeviceParams
	DefaultCwd        *string           `json:"default_cwd,omitempty"`         // see DeviceParams
	Env               map[string]string `json:"env"`                           // replaces the variables
	// Providers replaces the settings of the providers it names; a nil value removes them.
	Providers map[string]*ProviderSettings `json:"providers"`

	// Clear names fields to send as null, which removes a secret or unsets a value: "name",
	// "host", "username", "private_key", "password", "host_key" or "default_cwd".
	Clear []string `json:"-"`
}

// ProviderSettings are a device's settings for one provider.
type ProviderSettings struct {
	Executable *string           `json:"executable,omitempty"` // the CLI's path on the device
	ExtraArgs  []string          `json:"extra_args,omitempty"` // added to the CLI's arguments
	Env        map[string]string `json:"env,omitempty"`        // variables for this provider (write-only)
}

// clearable are the fields a PATCH may set to null.
var clearable = map[string]bool{"name": true, "host": true, "username": true, "private_key": true,
	"password": true, "host_key": true, "default_cwd": true}

// body is the PATCH body: the fields given, and a null for each field in Clear.
func (p DeviceUpdateParams) body() (map[string]json.RawMessage, error) {
	encoded, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	fields := map[string]json.RawMessage{}
	if err := json.Unmarshal(encoded, &fields); err != nil {
		return nil, err
	}
	for name, value := range fields {
		if string(value) == "null" { // a nil map: not given
			delete(fields, name)
		}
	}
	for _, name := range p.Clear {
		if !clearable[name] {
			known := make([]string, 0, len(clearable))
			for k := range clearable {
				known = append(known, k)
			}
			sort.Strings(known)
			return nil, fmt.Errorf("agentruns: DeviceUpdateParams.Clear: %q cannot be cleared (only %v)", name, known)
		}
		if _, set := fields[name]; set {
			return nil, fmt.Errorf("agentruns: DeviceUpdateParams: %q is both set and cleared", name)
		}
		fields[name] = json.RawMessage("null")
	}
	return fields, nil
}

func devicePath(deviceID, tail string) string {
	return devicesPath + "/" + url.PathEscape(deviceID) + tail
}

// Create registers a device.
func (s *DevicesService) Create(ctx context.Context, params DeviceParams) (*Device, error) {
	return s.device(ctx, http.MethodPost, devicesPath, params, retrySafe)
}

// Get returns one device.
func (s *DevicesService) Get(ctx context.Context, deviceID string) (*Device, error) {
	return s.device(ctx, http.MethodGet, devicePath(deviceID, ""), nil, retryAlways)
}

// List returns all devices of the tenant.
func (s *DevicesService) List(ctx context.Context) ([]Device, error) {
	c := s.client
	cl, err := c.newCall(http.MethodGet, devicesPath, nil, nil, retryAlways)
	if err != nil {
		return nil, err
	}
	var devices []Device
	if err := c.do(ctx, cl, &devices); err != nil {
		return nil, err
	}
	return devices, nil
}

// Update changes the fields given in params (and clears those in params.Clear).
func (s *DevicesService) Update(ctx context.Context, deviceID string, params DeviceUpdateParams) (*Device, error) {
	body, err := params.body()
	if err != nil {
		return nil, err
	}
	return s.device(ctx, http.MethodPatch, devicePath(deviceID, ""), body, retrySafe)
}

// Delete deletes a device with no runs in flight (a 409, IsConflict, otherwise).
func (s *DevicesService) Delete(ctx context.Context, deviceID string) error {
	c := s.client
	cl, err := c.newCall(http.MethodDelete, devicePath(deviceID, ""), nil, nil, retrySafe)
	if err != nil {
		return err
	}
	return c.do(ctx, cl, nil)
}

// Test has the server connect to the device and run `true`: reachability, latency, host key.
// An unreachable device is a result with OK false, not an error.
func (s *DevicesService) Test(ctx context.Context, deviceID string) (*DeviceTestResult, error) {
	c := s.client
	cl, err := c.newCall(http.MethodPost, devicePath(deviceID, "/test"), nil, nil, retrySafe)
	if err != nil {
		return nil, err
	}
	cl.timeout += deviceTestExtra
	var result DeviceTestResult
	if err := c.do(ctx, cl, &result); err != nil {
		return nil, err
	}
	return &result, nil
}

func (s *DevicesService) device(ctx context.Context, method, path string, body any, policy retryPolicy) (*Device, error) {
	c := s.client
	cl, err := c.newCall(method, path, nil, body, policy)
	if err != nil {
		return nil, err
	}
	var device Device
	if err := c.do(ctx, cl, &device); err != nil {
		return nil, err
	}
	return &device, nil
}
