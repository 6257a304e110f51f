package bench

import (
	"bytes"
	"math"
	"net"
	"strings"
	"testing"
	"time"
)

func TestLatencyPercentiles(t *testing.T) {
	ms := func(v ...int) latencies {
		var l latencies
		for _, x := range v {
			l = append(l, time.Duration(x)*time.Millisecond)
		}
		return l
	}
	for _, tt := range []struct {
		name string
		l    latencies
		p    float64
		want time.Duration
	}{
		{"empty", nil, .5, 0},
		{"one", ms(7), .99, 7 * time.Millisecond},
		{"median of unsorted", ms(5, 1, 4, 2, 3), .5, 3 * time.Millisecond},
		{"p99 is the largest of few", ms(5, 1, 4, 2, 3), .99, 5 * time.Millisecond},
		{"p0", ms(5, 1, 4), 0, time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := append(latencies(nil), tt.l...)
			if got := tt.l.pct(tt.p); got != tt.want {
				t.Errorf("pct(%v) = %v, want %v", tt.p, got, tt.want)
			}
			for i := range before {
				if before[i] != tt.l[i] {
					t.Fatal("pct reordered the samples")
				}
			}
		})
	}
}

// TestAutoDevices: --devices 0 sizes the enrollment phase to about --duration at the measured
// handshake rate, within bounds.
func TestAutoDevices(t *testing.T) {
	for _, tt := range []struct {
		name        string
		rate        float64
		d           time.Duration
		concurrency int
		want        int
	}{
		{"rate times duration", 1000, 4 * time.Second, 8, 4000},
		{"rounded up", 333.3, time.Second, 8, 334},
		{"at least four per concurrent device", 10, time.Second, 8, 32},
		{"no rate measured", 0, time.Second, 2, 8},
		{"at most 100,000", 5000, time.Minute, 8, 100000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := autoDevices(tt.rate, tt.d, tt.concurrency); got != tt.want {
				t.Errorf("autoDevices(%v, %v, %d) = %d, want %d", tt.rate, tt.d, tt.concurrency, got, tt.want)
			}
		})
	}
}

// TestUDPRelayCounts: the relay behind `coapca bench est --oscore/--edhoc` forwards both ways
// and counts every UDP payload byte and datagram of both directions.
func TestUDPRelayCounts(t *testing.T) {
	echo, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		b := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFrom(b)
			if err != nil {
				return
			}
			_, _ = echo.WriteTo(b[:n], from)
		}
	}()
	r, err := newUDPRelay(echo.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", r.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sent := 0
	for _, size := range []int{1, 100, 1200} {
		msg := bytes.Repeat([]byte{byte(size)}, size)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		sent += size
		// A guard against a lost datagram hanging the test, not a timing assertion.
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got := make([]byte, 2048)
		n, err := c.Read(got)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:n], msg) {
			t.Fatalf("relay returned %d bytes, want the %d sent", n, size)
		}
	}
	// Each answer was counted before it was written back, so the counts are final here.
	r.close()
	if b, d := r.bytes.Load(), r.datagrams.Load(); b != int64(2*sent) || d != 6 {
		t.Errorf("counted %d bytes in %d datagrams, want %d in 6", b, d, 2*sent)
	}
}

// TestRegistrarBench runs `coapca bench registrar` small: both paths enroll every device.
func TestRegistrarBench(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts two servers")
	}
	var out, progress bytes.Buffer
	if err := Registrar(t.Context(), ESTOptions{Devices: 4, Concurrency: 2, BlockSize: 1024}, &out, &progress); err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	for _, want := range []string{"direct    (device → CA", "registrar (device → registrar → CA", "errors 0"} {
		if !bytes.Contains(out.Bytes(), []byte(want)) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if bytes.Count(out.Bytes(), []byte("errors 0")) != 2 {
		t.Errorf("enrollments failed:\n%s", out.String())
	}
}

// TestFrontDoorsACE: `coapca bench est --ace` runs token-based enrollments (in-process AS,
// /authz-info, /sen) without errors and reports their bytes on the wire, AS traffic included,
// next to pre-shared contexts.
func TestFrontDoorsACE(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a server and an AS")
	}
	var progress bytes.Buffer
	rs, _, err := frontDoors(t.Context(), ESTOptions{Devices: 4, Concurrency: 2, BlockSize: 1024, OSCORE: true, ACE: true, WireSamples: 2}, &progress)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]frontDoorResult{}
	for _, r := range rs {
		got[r.mode] = r
	}
	ace, psk := got["ace"], got["oscore"]
	if ace.errs != 0 || len(ace.lat) != 4 || ace.bytes == 0 {
		t.Fatalf("ace: %+v\n%s", ace, progress.String())
	}
	// A token enrollment costs the token request, /authz-info and /sen: more datagrams than
	// /sen alone under a pre-shared context.
	if ace.datagrams <= psk.datagrams || ace.bytes <= psk.bytes {
		t.Fatalf("ace %v bytes / %v datagrams vs pre-shared %v / %v", ace.bytes, ace.datagrams, psk.bytes, psk.datagrams)
	}
}

// TestCPUUse checks the arithmetic that says whether a phase was bound by CPU or by latency,
// and the printout that shows it next to each phase's floor.
func TestCPUUse(t *testing.T) {
	tests := []struct {
		name          string
		rate          float64
		perOp         time.Duration
		cpus          int
		busy, ceiling float64
	}{
		{"half of two CPUs", 1000, time.Millisecond, 2, 0.5, 2000},
		{"saturated", 4000, 500 * time.Microsecond, 2, 1, 4000},
		{"one CPU", 100, 2 * time.Millisecond, 1, 0.2, 500},
		{"CPU per operation unknown", 1000, 0, 2, 0, 0},
		{"no CPUs reported", 1000, time.Millisecond, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := cpuUseAt(tt.rate, tt.perOp, tt.cpus)
			if math.Abs(got.busy-tt.busy) > 1e-9 || math.Abs(got.ceiling-tt.ceiling) > 1e-6 {
				t.Errorf("cpuUseAt(%v, %v, %d) = %+v, want busy %v ceiling %v", tt.rate, tt.perOp, tt.cpus, got, tt.busy, tt.ceiling)
			}
		})
	}

	r := &benchResult{signs: 40000, rawHS: 1500, rawHSCPU: time.Millisecond, childHS: 1400,
		childHSClientCPU: 600 * time.Microsecond, childHSServerCPU: 700 * time.Microsecond,
		srvHS: 1300, srvHSClientCPU: 600 * time.Microsecond, srvHSServerCPU: 800 * time.Microsecond,
		enrolls: 1000, enrollClientCPU: 700 * time.Microsecond, enrollServerCPU: 1300 * time.Microsecond,
		reenrolls: 3000, reenrollClientCPU: 100 * time.Microsecond, reenrollServerCPU: 400 * time.Microsecond}
	var out bytes.Buffer
	r.printCPUUse(&out, Machine{NumCPU: 2, CPU: "test CPU"})
	for _, want := range []string{
		"CPUs (2 × test CPU)",
		"  enroll             100.0%       1000/s  =  71.4% of raw handshakes (child)", // 2 CPUs ÷ 2 ms
		"  reenroll            75.0%       4000/s  =  10.0% of ECDSA signs",            // 2 CPUs ÷ 0.5 ms
		"  raw pion, child     91.0%       1538/s",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("printout lacks %q:\n%s", want, out.String())
		}
	}
}
