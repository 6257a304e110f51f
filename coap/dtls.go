package coap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"coapca/coap/dtlsconn"
)

// DTLSClientConfig is the DTLS configuration of a coaps:// client.
type DTLSClientConfig = dtlsconn.ClientConfig

func dialDTLS(ctx context.Context, host string, cfg *DTLSClientConfig) (io.ReadWriteCloser, Peer, error) {
	if cfg == nil {
		return nil, Peer{}, errors.New("coap: coaps:// needs ClientOptions.DTLS")
	}
	conn, err := dtlsconn.Dial(ctx, "udp", host, *cfg)
	if err != nil {
		return nil, Peer{}, fmt.Errorf("coap: dtls dial %s: %w", host, err)
	}
	return conn, peerOf(conn), nil
}

func peerOf(c *dtlsconn.Conn) Peer {
	return Peer{Addr: c.RemoteAddr(), Secure: true, Certificates: c.PeerCertificates(),
		TLS: c, AddressVerified: true} // the DTLS handshake (with its cookie) proved the address
}

// ServeDTLS serves coaps:// on l until Close. A record that does not parse as
// CoAP is dropped; it never ends the session.
func (s *Server) ServeDTLS(l *dtlsconn.Listener) error {
	if err := s.addCloser(l); err != nil {
		return err
	}
	for {
		conn, err := l.Accept()
		if err != nil {
			if s.isClosed() || errors.Is(err, net.ErrClosed) || errors.Is(err, dtlsconn.ErrClosed) {
				return nil
			}
			return fmt.Errorf("coap: dtls accept: %w", err)
		}
		sess := s.ep.newSession(peerOf(conn), func(b []byte) error { _, err := conn.Write(b); return err })
		sess.conn = conn
		sess.verified.Store(true) // the handshake proved the address (HelloVerifyRequest cookie)
		if !s.addSecure(sess) {
			_ = conn.Close()
			continue
		}
		go s.readDTLS(conn, sess)
	}
}

// readDTLS reads the session's records until it ends, or until it has been quiet for the
// listener's ParkAfter and the CoAP session holds nothing in progress: the DTLS session is
// then parked (dtlsconn.Conn.Park) and this reader returns; the session's next record calls
// it again.
func (s *Server) readDTLS(conn *dtlsconn.Conn, sess *session) {
	parkAfter := conn.ParkAfter()
	bp := s.readBufs.Get().(*[]byte)
	buf := *bp
	defer s.readBufs.Put(bp)
	for {
		if parkAfter > 0 {
			_ = conn.SetReadDeadline(time.Now().Add(parkAfter))
		}
		n, err := conn.Read(buf)
		if errors.Is(err, io.ErrShortBuffer) {
			s.ep.stats.malformed.Add(1)
			continue
		}
		var ne net.Error
		if err != nil && parkAfter > 0 && errors.As(err, &ne) && ne.Timeout() {
			if sess.quiet() && conn.Park(func() { s.readDTLS(conn, sess) }) == nil {
				return // the session lives on, parked
			}
			continue
		}
		if err != nil {
			_ = conn.Close()
			s.removeSecure(sess)
			return
		}
		b := make([]byte, n)
		copy(b, buf[:n])
		sess.handle(b)
	}
}
