package server

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"coapca/client"
	"coapca/internal/config"
	"coapca/oscore"
)

// The pre-shared context of one device, from the server's side and from the device's.
const (
	sharedServerContext = "name: sensor-17\nmaster_secret: 0102030405060708090a0b0c0d0e0f10\nmaster_salt: 9e7ca92223786340\nsender_id: \"01\"\nrecipient_id: \"\"\n"
	sharedClientContext = "master_secret: 0102030405060708090a0b0c0d0e0f10\nmaster_salt: 9e7ca92223786340\nsender_id: \"\"\nrecipient_id: \"01\"\n"
)

// pivRecorder collects the Partial IVs of the OSCORE messages a server sends.
type pivRecorder struct {
	mu   sync.Mutex
	pivs map[uint64]string // sequence number → which server sent it first
	dups []string
}

func (r *pivRecorder) note(who string, b []byte) {
	m := message.Message{Options: make(message.Options, 0, 32)}
	if _, err := coder.DefaultCoder.Decode(b, &m); err != nil || !oscore.IsProtected(&m) {
		return
	}
	ov, err := oscore.ParseMessage(&m)
	if err != nil || len(ov.PartialIV) == 0 {
		return // a response that reuses the request's nonce uses no sequence number
	}
	var seq uint64
	for _, c := range ov.PartialIV {
		seq = seq<<8 | uint64(c)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if first, dup := r.pivs[seq]; dup {
		r.dups = append(r.dups, fmt.Sprintf("%s sent sequence number %d, sent before by %s", who, seq, first))
		return
	}
	r.pivs[seq] = who
}

// relay forwards UDP between one client and target and shows every datagram target sends to
// rec; it returns the address the client sends to.
func relay(t *testing.T, target, who string, rec *pivRecorder) string {
	t.Helper()
	front, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.Dial("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { front.Close(); back.Close(); wg.Wait() })
	var mu sync.Mutex
	var peer net.Addr
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, a, err := front.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			peer = a
			mu.Unlock()
			back.Write(buf[:n])
		}
	})
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := back.Read(buf)
			if err != nil {
				return
			}
			rec.note(who, buf[:n])
			mu.Lock()
			p := peer
			mu.Unlock()
			if p != nil {
				front.WriteTo(buf[:n], p)
			}
		}
	})
	return front.LocalAddr().String()
}

// TestTwoInstancesShareOSCOREContext: one device's pre-shared OSCORE context is loaded by two
// instances (copies of one data directory, one database). Each instance's first answer to the
// device is an Echo challenge (its replay window is not synchronised) sent with a sequence
// number of its own. Had each instance kept its limit in its own data directory, both would
// start at the same number: the same nonce under the same key from two instances
// (RFC 8613 §7.2.1). The numbers are reserved in the shared store, so none is sent twice.
func TestTwoInstancesShareOSCOREContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	srvFile, cliFile := filepath.Join(dir, "sensor-17.yaml"), filepath.Join(dir, "client.yaml")
	if err := os.WriteFile(srvFile, []byte(sharedServerContext), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cliFile, []byte(sharedClientContext), 0o600); err != nil {
		t.Fatal(err)
	}
	inst, _ := startInstances(t, 2, func(c *config.Config) { c.OSCOREContexts = []string{srvFile} })

	// The device: one context, its own sequence numbers kept in memory.
	_, p, err := LoadOSCOREContext(cliFile)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := oscore.NewContext(p)
	if err != nil {
		t.Fatal(err)
	}
	rec := &pivRecorder{pivs: map[uint64]string{}}
	for round := range 2 {
		for i, s := range inst {
			who := []string{"instance 0", "instance 1"}[i]
			addr := relay(t, s.CoAPURL()[len("coap://"):], who, rec)
			conn, err := client.DialEST(ctx, "coap://"+addr, client.ESTDialOptions{OSCORE: dev})
			if err != nil {
				t.Fatal(err)
			}
			certs, err := client.NewEST(conn.Client, client.ESTOptions{}).CACerts(ctx)
			conn.Close()
			if err != nil || len(certs) == 0 {
				t.Fatalf("round %d, %s: cacerts over EST-oscore: %v", round, who, err)
			}
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, d := range rec.dups {
		t.Error(d + ": the same nonce under the same key")
	}
	senders := map[string]bool{}
	for _, who := range rec.pivs {
		senders[who] = true
	}
	if len(senders) != 2 {
		t.Errorf("sequence numbers seen first from %v; the test needs both instances to send with their own", senders)
	}
}

// TestOSCORESequenceFloorFromFile: an earlier version kept a pre-shared context's sequence
// limit in DATA/oscore/ssn-…; numbers below it may have been sent. After the upgrade, the
// numbers come from the store, and none below that limit is sent again.
func TestOSCORESequenceFloorFromFile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	srvFile, cliFile := filepath.Join(dir, "sensor-17.yaml"), filepath.Join(dir, "client.yaml")
	os.WriteFile(srvFile, []byte(sharedServerContext), 0o600)
	os.WriteFile(cliFile, []byte(sharedClientContext), 0o600)
	cfg := config.Default()
	cfg.Data = filepath.Join(dir, "data")
	cfg.Listen = config.Listen{CoAP: "127.0.0.1:0"}
	cfg.OSCOREContexts = []string{srvFile}
	s, err := Start(ctx, cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// What the earlier version left: sender ID 01, recipient ID and ID context empty.
	const limit = 5000
	if err := os.MkdirAll(filepath.Join(cfg.Data, "oscore"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.Data, "oscore", "ssn-01__"), []byte("5000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err = Start(ctx, cfg, quiet()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, p, err := LoadOSCOREContext(cliFile)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := oscore.NewContext(p)
	if err != nil {
		t.Fatal(err)
	}
	rec := &pivRecorder{pivs: map[uint64]string{}}
	conn, err := client.DialEST(ctx, "coap://"+relay(t, s.CoAPURL()[len("coap://"):], "server", rec), client.ESTDialOptions{OSCORE: dev})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := client.NewEST(conn.Client, client.ESTOptions{}).CACerts(ctx); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.pivs) == 0 {
		t.Fatal("the server sent no message with a sequence number of its own")
	}
	for seq := range rec.pivs {
		if seq < limit {
			t.Errorf("sequence number %d sent again: below the limit %d the earlier version had reserved", seq, limit)
		}
	}
}
