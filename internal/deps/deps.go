// Package deps pins the module graph while the packages that use these dependencies are written.
// TODO: remove once every dependency is imported by real code.
package deps

import (
	_ "github.com/fxamacker/cbor/v2"
	_ "github.com/pion/dtls/v3"
	_ "github.com/pion/dtls/v3/pkg/crypto/ccm"
	_ "github.com/plgd-dev/go-coap/v3/message"
	_ "github.com/plgd-dev/go-coap/v3/message/codes"
	_ "github.com/plgd-dev/go-coap/v3/udp/coder"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "golang.org/x/crypto/cryptobyte"
	_ "gopkg.in/yaml.v3"
	_ "modernc.org/sqlite"
)
