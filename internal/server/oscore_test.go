package server

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadOSCOREContext: a context file that does not say exactly what the peer holds is
// refused with the file and the field named, rather than loaded as a context that silently
// differs from the peer's (a mistyped master_salt would mean an empty salt).
func TestLoadOSCOREContext(t *testing.T) {
	const good = "master_secret: 0102030405060708090a0b0c0d0e0f10\nmaster_salt: 9e7ca92223786340\nsender_id: \"01\"\nrecipient_id: \"\"\n"
	for _, tc := range []struct {
		name, file, wantErr string
	}{
		{"good", good, ""},
		{"mistyped field", strings.Replace(good, "master_salt", "master_slat", 1), "master_slat"},
		{"secret not hex", strings.Replace(good, "0102030405060708090a0b0c0d0e0f10", "01020304zz", 1), "master_secret is not hex"},
		{"sender id not hex", strings.Replace(good, `sender_id: "01"`, `sender_id: "0x1"`, 1), "sender_id is not hex"},
		{"no master secret", "master_salt: 9e7c\n", "master_secret is required"},
		{"not a mapping", "- 1\n- 2\n", "sensor-17.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sensor-17.yaml")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			f, p, err := LoadOSCOREContext(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The identity defaults to the file name; the IDs are the server's view.
			if f.Name != "sensor-17" || !bytes.Equal(p.SenderID, []byte{1}) || len(p.RecipientID) != 0 || len(p.MasterSalt) != 8 {
				t.Errorf("loaded %+v, %+v", f, p)
			}
		})
	}
}
