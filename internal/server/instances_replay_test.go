package server

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"coapca/client"
	"coapca/internal/config"
	"coapca/oscore"
)

// captureRelay forwards UDP between one client and target and keeps every OSCORE request the
// client sends; it returns the address the client sends to.
func captureRelay(t *testing.T, target string) (string, func() [][]byte) {
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
	var reqs [][]byte
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, a, err := front.ReadFrom(buf)
			if err != nil {
				return
			}
			m := message.Message{Options: make(message.Options, 0, 32)}
			if _, err := coder.DefaultCoder.Decode(buf[:n], &m); err == nil && oscore.IsProtected(&m) && m.Code == codes.POST {
				mu.Lock()
				reqs = append(reqs, append([]byte(nil), buf[:n]...))
				mu.Unlock()
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
			mu.Lock()
			p := peer
			mu.Unlock()
			if p != nil {
				front.WriteTo(buf[:n], p)
			}
		}
	})
	return front.LocalAddr().String(), func() [][]byte {
		mu.Lock()
		defer mu.Unlock()
		return append([][]byte(nil), reqs...)
	}
}

// TestOSCOREReplayToTheOtherInstance is the attack of a replay across instances: one device's
// pre-shared context is held by two instances. The device talks to instance 1 first (its
// replay window is synchronised there), then enrolls at instance 0. An attacker on the path
// captures that enrollment request and sends it to instance 1, whose own window never saw
// that sequence number. With a replay window per instance, instance 1 accepts it and answers
// a second enrollment (RFC 8613 §7.4: a Partial IV received before must be refused, whichever
// instance received it). The accepted sequence numbers are kept in the store every instance
// shares, so instance 1 answers 4.01 "Replay detected", and the device's next request there
// still succeeds (the refused replay changed nothing).
func TestOSCOREReplayToTheOtherInstance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	srvFile, cliFile := filepath.Join(dir, "sensor-17.yaml"), filepath.Join(dir, "client.yaml")
	for f, body := range map[string]string{srvFile: sharedServerContext, cliFile: sharedClientContext} {
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	inst, _ := startInstances(t, 2, func(c *config.Config) { c.OSCOREContexts = []string{srvFile} })
	_, p, err := LoadOSCOREContext(cliFile)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := oscore.NewContext(p)
	if err != nil {
		t.Fatal(err)
	}
	cacerts := func(s *Server) error {
		conn, err := client.DialEST(ctx, s.CoAPURL(), client.ESTDialOptions{OSCORE: dev})
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = client.NewEST(conn.Client, client.ESTOptions{}).CACerts(ctx)
		return err
	}
	// The device's window at instance 1 is synchronised (Echo) at its first numbers.
	if err := cacerts(inst[1]); err != nil {
		t.Fatal(err)
	}
	// It enrolls at instance 0, through the attacker's relay.
	addr, captured := captureRelay(t, inst[0].CoAPURL()[len("coap://"):])
	conn, err := client.DialEST(ctx, "coap://"+addr, client.ESTDialOptions{OSCORE: dev})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewEST(conn.Client, client.ESTOptions{Trust: inst[0].Data().IssuingChain()}).Enroll(ctx, newCSR(t, "sensor-17")); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	reqs := captured()
	if len(reqs) == 0 {
		t.Fatal("no OSCORE request captured")
	}
	// The last one is the request instance 0 accepted (the first may have met an Echo challenge).
	replay := reqs[len(reqs)-1]

	// The attacker replays it to instance 1.
	c, err := net.Dial("udp", inst[1].CoAPURL()[len("coap://"):])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(replay); err != nil {
		t.Fatal(err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetReadDeadline(dl)
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no answer to the replayed request: %v", err)
		}
		m := message.Message{Options: make(message.Options, 0, 32)}
		if _, err := coder.DefaultCoder.Decode(buf[:n], &m); err != nil {
			t.Fatal(err)
		}
		if m.Code == codes.Empty {
			continue // a separate ACK
		}
		if oscore.IsProtected(&m) || m.Code != codes.Unauthorized {
			t.Fatalf("instance 1 answered the replayed enrollment with %v (protected %v): accepted a request instance 0 had accepted", m.Code, oscore.IsProtected(&m))
		}
		break
	}
	// The device's own next request at instance 1 still succeeds.
	if err := cacerts(inst[1]); err != nil {
		t.Fatalf("the device's next request at instance 1 after the refused replay: %v", err)
	}
}
