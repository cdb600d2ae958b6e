package agentruns

import (
	"context"
	"net/http"
	"reflect"
	"testing"
)

func TestDeviceRequests(t *testing.T) {
	device := map[string]any{"id": "pc-1", "kind": "computer", "driver": "ssh", "host": "10.0.0.5", "port": 22,
		"has_private_key": true, "env_names": []string{"TOKEN"}, "name": nil,
		"providers": map[string]any{"codex": map[string]any{"executable": "/usr/bin/codex", "env_names": []string{"K"}}}}
	api := newFakeAPI(t, reply(201, map[string]any{"data": device}), ok([]any{device}), ok(device),
		raw(http.StatusNoContent, "", ""), ok(map[string]any{"ok": true, "latency_ms": 3.5, "host_key": "ssh-ed25519 AAAA", "error": nil}))
	client, _ := api.client()
	ctx := context.Background()
	created, err := client.Devices.Create(ctx, DeviceParams{ID: String("pc-1"), Kind: KindComputer, Host: String("10.0.0.5"),
		Username: String("dev"), PrivateKey: String("KEY"), TrustOnFirstUse: Bool(false), Env: map[string]string{"TOKEN": "t"}})
	if err != nil || created.ID != "pc-1" || !created.HasPrivateKey || created.Name != "" ||
		created.Providers["codex"].Executable != "/usr/bin/codex" || !reflect.DeepEqual(created.EnvNames, []string{"TOKEN"}) {
		t.Fatalf("%+v %v", created, err)
	}
	listed, err := client.Devices.List(ctx)
	if err != nil || len(listed) != 1 || listed[0].Port != 22 {
		t.Fatalf("%+v %v", listed, err)
	}
	if _, err := client.Devices.Get(ctx, "pc-1"); err != nil {
		t.Fatal(err)
	}
	if err := client.Devices.Delete(ctx, "pc-1"); err != nil {
		t.Fatal(err)
	}
	result, err := client.Devices.Test(ctx, "pc-1")
	if err != nil || !result.OK || *result.LatencyMS != 3.5 || result.Error != nil {
		t.Fatalf("%+v %v", result, err)
	}
	var calls []string
	for _, r := range api.got() {
		calls = append(calls, r.method+" "+r.path)
	}
	want := []string{"POST /api/v1/devices", "GET /api/v1/devices", "GET /api/v1/devices/pc-1",
		"DELETE /api/v1/devices/pc-1", "POST /api/v1/devices/pc-1/test"}
	if !reflect.DeepEqual(calls, want) {
		t.Fatalf("calls %v", calls)
	}
	body := api.got()[0].jsonBody(t)
	wantBody := map[string]any{"id": "pc-1", "kind": "computer", "host": "10.0.0.5", "username": "dev",
		"private_key": "KEY", "trust_on_first_use": false, "env": map[string]any{"TOKEN": "t"}}
	if !reflect.DeepEqual(body, wantBody) {
		t.Fatalf("body %v", body)
	}
}
