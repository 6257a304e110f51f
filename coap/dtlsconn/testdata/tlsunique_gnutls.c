/* DTLS 1.2 GnuTLS test peer for dtlsconn's tls-unique test (RFC 5929).
 * usage: tlsunique_gnutls HOST PORT CERT KEY CA PRIORITY
 * Prints "finished HEX" (gnutls_session_channel_binding TLS_UNIQUE) and
 * "exporter HEX" (RFC 9266, gnutls_prf_rfc5705). */
#include <arpa/inet.h>
#include <gnutls/dtls.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void hex(const char *label, const unsigned char *b, size_t n) {
	printf("%s ", label);
	for (size_t i = 0; i < n; i++) printf("%02x", b[i]);
	printf("\n");
}

static int fail(const char *what, int ret) {
	fprintf(stderr, "%s: %s\n", what, gnutls_strerror(ret));
	return 1;
}

int main(int argc, char **argv) {
	if (argc != 7) { fprintf(stderr, "usage\n"); return 2; }
	int ret;
	gnutls_global_init();
	gnutls_certificate_credentials_t cred;
	gnutls_certificate_allocate_credentials(&cred);
	if ((ret = gnutls_certificate_set_x509_trust_file(cred, argv[5], GNUTLS_X509_FMT_PEM)) < 0) return fail("ca", ret);
	if ((ret = gnutls_certificate_set_x509_key_file(cred, argv[3], argv[4], GNUTLS_X509_FMT_PEM)) < 0) return fail("cert", ret);
	gnutls_session_t s;
	gnutls_init(&s, GNUTLS_CLIENT | GNUTLS_DATAGRAM);
	const char *err;
	if ((ret = gnutls_priority_set_direct(s, argv[6], &err)) < 0) { fprintf(stderr, "priority at %s\n", err); return fail("priority", ret); }
	gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred);
	gnutls_server_name_set(s, GNUTLS_NAME_DNS, "localhost", 9);
	gnutls_session_set_verify_cert(s, "localhost", 0);

	struct sockaddr_in sa;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((unsigned short)atoi(argv[2]));
	inet_pton(AF_INET, argv[1], &sa.sin_addr);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) { perror("socket"); return 1; }
	gnutls_transport_set_int(s, fd);
	gnutls_dtls_set_timeouts(s, 1000, 10000);
	do {
		ret = gnutls_handshake(s);
	} while (ret < 0 && gnutls_error_is_fatal(ret) == 0);
	if (ret < 0) return fail("handshake", ret);

	gnutls_datum_t cb;
	if ((ret = gnutls_session_channel_binding(s, GNUTLS_CB_TLS_UNIQUE, &cb)) < 0) return fail("tls-unique", ret);
	hex("finished", cb.data, cb.size);
	gnutls_free(cb.data);
	unsigned char ekm[32];
	const char *label = "EXPORTER-Channel-Binding";
	if ((ret = gnutls_prf_rfc5705(s, strlen(label), label, 0, NULL, sizeof ekm, (char *)ekm)) < 0) return fail("exporter", ret);
	hex("exporter", ekm, sizeof ekm);
	char *desc = gnutls_session_get_desc(s);
	printf("cipher %s\n", desc);
	gnutls_free(desc);

	unsigned char buf[2048];
	if ((ret = gnutls_record_send(s, "ping", 4)) != 4) return fail("send", ret);
	do {
		ret = gnutls_record_recv(s, buf, sizeof buf);
	} while (ret == GNUTLS_E_AGAIN || ret == GNUTLS_E_INTERRUPTED);
	if (ret <= 0) return fail("recv", ret);
	printf("echo %d\n", ret);
	gnutls_bye(s, GNUTLS_SHUT_WR);
	gnutls_deinit(s);
	gnutls_certificate_free_credentials(cred);
	close(fd);
	return 0;
}
