package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// Report is the machine-readable output of a benchmark run (`--json FILE`), read by
// `coapca bench plot`: the floors measured in the same run and every result with its ratio to
// one of them, so that the published figures come straight from the run.
type Report struct {
	Kind        string    `json:"kind"` // "est", "compare"
	Time        time.Time `json:"time"`
	Machine     Machine   `json:"machine"`
	Devices     int       `json:"devices,omitempty"`
	Concurrency int       `json:"concurrency"`
	Server      string    `json:"server,omitempty"` // where the server ran
	// Floors: name → operations per second, measured in this run.
	Floors  map[string]float64 `json:"floors"`
	Results []Result           `json:"results"`
	// CPU: name → CPU milliseconds per operation of one side (bench est: the bench process's
	// "…_client" and the server's "…_server"; the raw floor's both ends together).
	CPU map[string]float64 `json:"cpu_ms,omitempty"`
	// CPUBusy: name → the share of the machine's CPUs (0–1) both processes kept busy during
	// that phase (rate × CPU per operation ÷ CPUs), for the phases whose CPU is known on both
	// sides. Below 1 the phase was bound by latency, not CPU.
	CPUBusy map[string]float64 `json:"cpu_busy,omitempty"`
}

// RateIfNeverIdle is the rate of phase op ("enroll", "reenroll") that its CPU per operation on
// both sides would allow with the machine's CPUs always busy; 0 when the server's CPU is
// unknown (a server in the bench process).
func (r Report) RateIfNeverIdle(op string) float64 {
	server := r.CPU[op+"_server"]
	if server <= 0 {
		return 0
	}
	perOp := time.Duration((r.CPU[op+"_client"] + server) * float64(time.Millisecond))
	return cpuUseAt(0, perOp, r.Machine.NumCPU).ceiling
}

// Result is one measured operation.
type Result struct {
	Name      string  `json:"name"`
	PerSecond float64 `json:"per_second"`
	// Floor names the entry of Report.Floors that Ratio divides by ("" = none).
	Floor string  `json:"floor,omitempty"`
	Ratio float64 `json:"ratio,omitempty"`
	// Latency percentiles in milliseconds (0 when not measured).
	P50    float64 `json:"p50_ms,omitempty"`
	P90    float64 `json:"p90_ms,omitempty"`
	P99    float64 `json:"p99_ms,omitempty"`
	Errors int64   `json:"errors"`
	// Wire: UDP payload bytes and datagrams per operation, both directions (0 = not counted).
	Bytes     float64 `json:"bytes,omitempty"`
	Datagrams float64 `json:"datagrams,omitempty"`
	// ServerCPU per operation in milliseconds, when the server ran in its own process.
	ServerCPU float64 `json:"server_cpu_ms,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPU    string `json:"cpu"`
	NumCPU int    `json:"num_cpu"`
	OS     string `json:"os"`
	Go     string `json:"go"`
}

func thisMachine() Machine {
	m := Machine{NumCPU: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func ratio(v, floor float64) float64 {
	if floor == 0 {
		return 0
	}
	return v / floor
}

func (r *benchResult) report(o ESTOptions) Report {
	rep := Report{
		Kind: "est", Time: time.Now().UTC(), Machine: thisMachine(), Devices: r.devices, Concurrency: o.Concurrency, Server: r.mode,
		// The floors are means of a measurement before and one after the phases (_after).
		Floors: map[string]float64{"ecdsa_p256_sign": r.signs, "ecdsa_p256_verify": r.verifies, "pion_dtls_handshake": r.rawHS,
			"ecdsa_p256_sign_after": r.signsAfter, "pion_dtls_handshake_after": r.rawHSAfter,
			// Not a floor: handshakes only, against the server under test (where it runs).
			"server_dtls_handshake": r.srvHS, "server_dtls_handshake_after": r.srvHSAfter},
		CPU: map[string]float64{"pion_dtls_handshake": ms(r.rawHSCPU),
			"server_dtls_handshake_client": ms(r.srvHSClientCPU), "server_dtls_handshake_server": ms(r.srvHSServerCPU),
			"enroll_client": ms(r.enrollClientCPU), "enroll_server": ms(r.enrollServerCPU),
			"reenroll_client": ms(r.reenrollClientCPU), "reenroll_server": ms(r.reenrollServerCPU)},
		Results: []Result{
			{Name: "enroll", PerSecond: r.enrolls, Floor: "pion_dtls_handshake", Ratio: ratio(r.enrolls, r.rawHS),
				P50: ms(r.enrollLat.pct(.5)), P90: ms(r.enrollLat.pct(.9)), P99: ms(r.enrollLat.pct(.99)), Errors: r.enrollErrs, ServerCPU: ms(r.enrollServerCPU)},
			{Name: "reenroll", PerSecond: r.reenrolls, Floor: "ecdsa_p256_sign", Ratio: ratio(r.reenrolls, r.signs),
				P50: ms(r.reenrollLat.pct(.5)), P90: ms(r.reenrollLat.pct(.9)), P99: ms(r.reenrollLat.pct(.99)), Errors: r.reenrollErrs, ServerCPU: ms(r.reenrollServerCPU)},
		},
	}
	rep.CPUBusy = map[string]float64{}
	for name, u := range r.cpuUses(rep.Machine.NumCPU) {
		rep.CPUBusy[name] = u.busy
	}
	if r.childHS > 0 {
		rep.Floors["pion_dtls_handshake_child"], rep.Floors["pion_dtls_handshake_child_after"] = r.childHS, r.childHSAfter
		rep.CPU["pion_dtls_handshake_child_client"], rep.CPU["pion_dtls_handshake_child_server"] = ms(r.childHSClientCPU), ms(r.childHSServerCPU)
		rep.Results = append(rep.Results, Result{Name: "enroll_vs_child_floor", PerSecond: r.enrolls, Floor: "pion_dtls_handshake_child", Ratio: ratio(r.enrolls, r.childHS),
			P50: ms(r.enrollLat.pct(.5)), P90: ms(r.enrollLat.pct(.9)), P99: ms(r.enrollLat.pct(.99)), Errors: r.enrollErrs, ServerCPU: ms(r.enrollServerCPU)})
	}
	if r.ilHS > 0 {
		// The raw handshake floor measured in slices between phase 1's slices of enrollments,
		// in the placement of the server under test.
		rep.Floors["pion_dtls_handshake_interleaved"] = r.ilHS
		rep.CPU["pion_dtls_handshake_interleaved_client"], rep.CPU["pion_dtls_handshake_interleaved_server"] = ms(r.ilHSClientCPU), ms(r.ilHSServerCPU)
		rep.Results = append(rep.Results, Result{Name: "enroll_vs_interleaved_floor", PerSecond: r.enrolls, Floor: "pion_dtls_handshake_interleaved", Ratio: ratio(r.enrolls, r.ilHS),
			P50: ms(r.enrollLat.pct(.5)), P90: ms(r.enrollLat.pct(.9)), P99: ms(r.enrollLat.pct(.99)), Errors: r.enrollErrs, ServerCPU: ms(r.enrollServerCPU)})
	}
	if r.ilSigns > 0 {
		// The ECDSA sign floor measured in slices between phase 2's slices of re-enrollments.
		rep.Floors["ecdsa_p256_sign_interleaved"] = r.ilSigns
		rep.Results = append(rep.Results, Result{Name: "reenroll_vs_interleaved_floor", PerSecond: r.reenrolls, Floor: "ecdsa_p256_sign_interleaved", Ratio: ratio(r.reenrolls, r.ilSigns),
			P50: ms(r.reenrollLat.pct(.5)), P90: ms(r.reenrollLat.pct(.9)), P99: ms(r.reenrollLat.pct(.99)), Errors: r.reenrollErrs, ServerCPU: ms(r.reenrollServerCPU)})
	}
	return rep
}

func writeJSON(path string, r Report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("bench: writing %s: %w", path, err)
	}
	return nil
}

// ReadReport reads a file written by --json.
func ReadReport(path string) (Report, error) {
	var r Report
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("bench: %s: %w", path, err)
	}
	return r, nil
}
