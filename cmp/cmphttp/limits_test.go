package cmphttp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"coapca/cmp/cmpserver"
)

type countSvc struct{ n atomic.Int64 }

func (c *countSvc) Handle(_ context.Context, r *cmpserver.Request) *cmpserver.Response {
	c.n.Add(1)
	return &cmpserver.Response{Body: append([]byte{0x30, 0x01}, byte(len(r.Body))), Result: "ok"}
}

func startLimited(t *testing.T, l Limits, maxBody int64) (string, *countSvc) {
	t.Helper()
	svc := &countSvc{}
	mux := http.NewServeMux()
	h := New(svc, nil)
	h.MaxBody = maxBody
	h.Register(mux)
	srv := NewServer(mux, l, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), svc
}

// trickle writes b one byte per tick until stop is closed or the write fails.
func trickle(conn net.Conn, b []byte, tick time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if _, err := conn.Write(b[i%len(b) : i%len(b)+1]); err != nil {
			return
		}
	}
}

// waitClosed reads until the server closes the connection. guard only keeps a broken server
// from hanging the test: the timeouts under test are far shorter.
func waitClosed(conn net.Conn, rd io.Reader, guard time.Duration) error {
	_ = conn.SetReadDeadline(time.Now().Add(guard))
	_, err := io.Copy(io.Discard, rd)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("the server kept the connection open for %v", guard)
	}
	return nil // EOF or reset: closed by the server
}

// TestSlowClients is the slowloris attack of issue 8 item 12: a client that sends its header,
// or its body, one byte at a time, or keeps a connection idle, is disconnected by the server
// once the configured timeout runs out, while a legitimate CMP request is served meanwhile.
func TestSlowClients(t *testing.T) {
	limits := Limits{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 600 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}
	addr, svc := startLimited(t, limits, 0)
	header := "POST /.well-known/cmp HTTP/1.1\r\nHost: ca\r\nContent-Type: " + ContentType + "\r\n"
	tests := []struct {
		name     string
		prefix   string // sent at once
		trickle  string // then one byte per tick
		answered bool   // the prefix is a whole request, answered before the wait
	}{
		{"slow header", "POST /.well-known/cmp HTTP/1.1\r\n", "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
		{"slow body", header + "Content-Length: 100000\r\n\r\n", "0123456789", false},
		{"idle keep-alive", header + "Content-Length: 2\r\n\r\n\x30\x00", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			stop := make(chan struct{})
			defer close(stop)
			if _, err := io.WriteString(conn, tc.prefix); err != nil {
				t.Fatal(err)
			}
			if tc.trickle != "" {
				go trickle(conn, []byte(tc.trickle), 50*time.Millisecond, stop)
			}
			rd := bufio.NewReader(conn)
			if tc.answered {
				resp, err := http.ReadResponse(rd, nil)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK || resp.Close {
					t.Fatalf("first request on the kept-alive connection: %s (close %v)", resp.Status, resp.Close)
				}
			}
			// A legitimate client is served while the slow one is connected.
			before := svc.n.Load()
			resp, err := http.Post("http://"+addr+DefaultRoot, ContentType, bytes.NewReader([]byte{0x30, 0x00}))
			if err != nil {
				t.Fatalf("legitimate request: %v", err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK || svc.n.Load() != before+1 {
				t.Fatalf("legitimate request: %s", resp.Status)
			}
			if err := waitClosed(conn, rd, 30*time.Second); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestBodyLimit: a body over MaxBody is refused with 413, whether announced by Content-Length
// or streamed chunked, and never reaches the CMP service.
func TestBodyLimit(t *testing.T) {
	addr, svc := startLimited(t, Limits{}, 1000)
	tests := []struct {
		name    string
		body    io.Reader
		chunked bool
		want    int
	}{
		{"within the limit", bytes.NewReader(make([]byte, 1000)), false, http.StatusOK},
		{"announced too large", bytes.NewReader(make([]byte, 1001)), false, http.StatusRequestEntityTooLarge},
		{"chunked too large", io.MultiReader(strings.NewReader(strings.Repeat("x", 600)), strings.NewReader(strings.Repeat("y", 600))), true, http.StatusRequestEntityTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := svc.n.Load()
			req, err := http.NewRequest(http.MethodPost, "http://"+addr+DefaultRoot, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", ContentType)
			if tc.chunked {
				req.ContentLength = -1
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %s, want %d", resp.Status, tc.want)
			}
			if ran := svc.n.Load() - before; (tc.want == http.StatusOK) != (ran == 1) {
				t.Fatalf("service ran %d times", ran)
			}
		})
	}
}

// TestHeaderLimit: a header over MaxHeaderBytes gets 431 and the connection is closed.
func TestHeaderLimit(t *testing.T) {
	addr, _ := startLimited(t, Limits{MaxHeaderBytes: 1024}, 0)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := "POST /.well-known/cmp HTTP/1.1\r\nHost: ca\r\nX-Big: " + strings.Repeat("a", 8192) + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %s", resp.Status)
	}
}
