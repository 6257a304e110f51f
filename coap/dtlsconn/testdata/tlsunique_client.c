/* DTLS 1.2 test peer for dtlsconn's tls-unique test (RFC 5929).
 * usage: tlsunique_client HOST PORT CERT KEY CA CIPHERS
 * Prints "finished HEX" (SSL_get_finished: the client's Finished verify_data,
 * tls-unique on a full handshake) and "exporter HEX" (RFC 9266). */
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
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

int main(int argc, char **argv) {
	if (argc != 7) { fprintf(stderr, "usage\n"); return 2; }
	SSL_CTX *ctx = SSL_CTX_new(DTLS_client_method());
	SSL_CTX_set_min_proto_version(ctx, DTLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, DTLS1_2_VERSION);
	if (SSL_CTX_set_cipher_list(ctx, argv[6]) != 1 ||
	    SSL_CTX_set1_groups_list(ctx, "P-256") != 1 ||
	    SSL_CTX_use_certificate_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, argv[4], SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_load_verify_locations(ctx, argv[5], NULL) != 1) {
		ERR_print_errors_fp(stderr);
		return 1;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);

	struct sockaddr_in sa;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((unsigned short)atoi(argv[2]));
	inet_pton(AF_INET, argv[1], &sa.sin_addr);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) { perror("socket"); return 1; }
	BIO *bio = BIO_new_dgram(fd, BIO_NOCLOSE);
	BIO_ctrl(bio, BIO_CTRL_DGRAM_SET_CONNECTED, 0, &sa);
	struct timeval tv = {5, 0};
	BIO_ctrl(bio, BIO_CTRL_DGRAM_SET_RECV_TIMEOUT, 0, &tv);
	SSL *ssl = SSL_new(ctx);
	SSL_set_bio(ssl, bio, bio);
	if (SSL_connect(ssl) != 1) { ERR_print_errors_fp(stderr); return 1; }

	unsigned char fin[EVP_MAX_MD_SIZE];
	size_t n = SSL_get_finished(ssl, fin, sizeof fin);
	hex("finished", fin, n);
	n = SSL_get_peer_finished(ssl, fin, sizeof fin);
	hex("peer_finished", fin, n);
	unsigned char ekm[32];
	const char *label = "EXPORTER-Channel-Binding";
	if (SSL_export_keying_material(ssl, ekm, sizeof ekm, label, strlen(label), NULL, 0, 0) != 1) {
		ERR_print_errors_fp(stderr);
		return 1;
	}
	hex("exporter", ekm, sizeof ekm);
	printf("cipher %s\n", SSL_get_cipher_name(ssl));

	/* One application record and its echo: the session works. */
	unsigned char buf[2048];
	if (SSL_write(ssl, "ping", 4) != 4) { ERR_print_errors_fp(stderr); return 1; }
	int r = SSL_read(ssl, buf, sizeof buf);
	if (r <= 0) { ERR_print_errors_fp(stderr); return 1; }
	printf("echo %d\n", r);
	SSL_shutdown(ssl);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fd);
	return 0;
}
