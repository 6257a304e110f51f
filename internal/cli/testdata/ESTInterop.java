// ESTInterop drives Bouncy Castle's EST client (org.bouncycastle.est, Debian's bcpkix 1.72)
// against an EST over HTTPS server, for coapca's interop test (internal/cli/est_https_interop_test.go).
//
//   java -cp BC-JARS:. ESTInterop HOST:PORT ROOT.pem DEVICE.pem DEVICE.key POP-LABEL
//
// It prints one line per operation: CACERTS n, CSRATTRS n, ENROLL subject, POP subject,
// SERVERKEYGEN subject keyAlgorithm. Any failure is an exception and exit status 1.
import java.io.FileReader;
import java.net.Socket;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Security;
import java.security.cert.X509Certificate;
import java.security.spec.ECGenParameterSpec;

import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509TrustManager;
import javax.net.ssl.TrustManager;

import org.bouncycastle.asn1.x500.X500Name;
import org.bouncycastle.cert.X509CertificateHolder;
import org.bouncycastle.cert.jcajce.JcaX509CertificateConverter;
import org.bouncycastle.est.CACertsResponse;
import org.bouncycastle.est.CSRRequestResponse;
import org.bouncycastle.est.ESTService;
import org.bouncycastle.est.EnrollmentResponse;
import org.bouncycastle.est.jcajce.ChannelBindingProvider;
import org.bouncycastle.est.jcajce.JsseESTServiceBuilder;
import org.bouncycastle.jce.provider.BouncyCastleProvider;
import org.bouncycastle.jsse.BCSSLConnection;
import org.bouncycastle.jsse.BCSSLSocket;
import org.bouncycastle.jsse.provider.BouncyCastleJsseProvider;
import org.bouncycastle.openssl.PEMParser;
import org.bouncycastle.openssl.jcajce.JcaPEMKeyConverter;
import org.bouncycastle.asn1.pkcs.PrivateKeyInfo;
import org.bouncycastle.operator.ContentSigner;
import org.bouncycastle.operator.jcajce.JcaContentSignerBuilder;
import org.bouncycastle.pkcs.PKCS10CertificationRequest;
import org.bouncycastle.pkcs.PKCS10CertificationRequestBuilder;
import org.bouncycastle.pkcs.jcajce.JcaPKCS10CertificationRequestBuilder;

public class ESTInterop {
    static X509Certificate readCert(String path) throws Exception {
        try (PEMParser p = new PEMParser(new FileReader(path))) {
            return new JcaX509CertificateConverter().getCertificate((X509CertificateHolder) p.readObject());
        }
    }

    static PrivateKey readKey(String path) throws Exception {
        try (PEMParser p = new PEMParser(new FileReader(path))) {
            return new JcaPEMKeyConverter().getPrivateKey((PrivateKeyInfo) p.readObject());
        }
    }

    static ESTService service(String server, TrustManager[] tms, KeyManagerFactory kmf, String label, String tls) throws Exception {
        JsseESTServiceBuilder b = new JsseESTServiceBuilder(server, (X509TrustManager[]) java.util.Arrays.copyOf(tms, tms.length, X509TrustManager[].class))
            .withKeyManagers(kmf.getKeyManagers())
            .withProvider(BouncyCastleJsseProvider.PROVIDER_NAME)
            .withTLSVersion(tls)
            .withChannelBindingProvider(new ChannelBindingProvider() {
                public boolean canAccessChannelBinding(Socket sock) {
                    return sock instanceof BCSSLSocket;
                }

                public byte[] getChannelBinding(Socket sock, String binding) {
                    BCSSLConnection c = ((BCSSLSocket) sock).getConnection();
                    return c == null ? null : c.getChannelBinding(binding);
                }
            });
        if (label != null) {
            b.withLabel(label);
        }
        return b.build();
    }

    static String subject(EnrollmentResponse r) {
        if (!r.isCompleted()) {
            throw new IllegalStateException("enrollment not completed");
        }
        return ESTService.storeToArray(r.getStore())[0].getSubject().toString();
    }

    public static void main(String[] args) throws Exception {
        Security.addProvider(new BouncyCastleProvider());
        Security.addProvider(new BouncyCastleJsseProvider());
        String server = args[0];
        X509Certificate root = readCert(args[1]);
        X509Certificate device = readCert(args[2]);
        PrivateKey deviceKey = readKey(args[3]);
        String popLabel = args[4];

        KeyStore ts = KeyStore.getInstance("PKCS12");
        ts.load(null, null);
        ts.setCertificateEntry("root", root);
        // Mixing SunJSSE's trust manager with BCJSSE fails in getStatusResponses: BCJSSE's own.
        TrustManagerFactory tmf = TrustManagerFactory.getInstance("PKIX", BouncyCastleJsseProvider.PROVIDER_NAME);
        tmf.init(ts);
        KeyStore ks = KeyStore.getInstance("PKCS12");
        ks.load(null, null);
        ks.setKeyEntry("device", deviceKey, "x".toCharArray(), new X509Certificate[]{device});
        KeyManagerFactory kmf = KeyManagerFactory.getInstance("PKIX", BouncyCastleJsseProvider.PROVIDER_NAME);
        kmf.init(ks, "x".toCharArray());
        TrustManager[] tms = tmf.getTrustManagers();

        ESTService est = service(server, tms, kmf, null, "TLS");
        CACertsResponse ca = est.getCACerts();
        System.out.println("CACERTS " + ca.getCertificateStore().getMatches(null).size());

        CSRRequestResponse attrs = service(server, tms, kmf, popLabel, "TLS").getCSRAttributes();
        System.out.println("CSRATTRS " + (attrs.hasAttributesResponse() ? attrs.getAttributesResponse().getRequirements().size() : 0));

        KeyPairGenerator kpg = KeyPairGenerator.getInstance("EC", "BC");
        kpg.initialize(new ECGenParameterSpec("P-256"));

        KeyPair kp = kpg.generateKeyPair();
        ContentSigner signer = new JcaContentSignerBuilder("SHA256withECDSA").setProvider("BC").build(kp.getPrivate());
        PKCS10CertificationRequest csr = new JcaPKCS10CertificationRequestBuilder(new X500Name("CN=bc-1"), kp.getPublic()).build(signer);
        System.out.println("ENROLL " + subject(est.simpleEnroll(false, csr, null)));

        // PoP linking (RFC 7030 §3.5): BC puts tls-unique in the challengePassword; TLS 1.2 only.
        KeyPair kp2 = kpg.generateKeyPair();
        PKCS10CertificationRequestBuilder pb = new JcaPKCS10CertificationRequestBuilder(new X500Name("CN=bc-pop"), kp2.getPublic());
        ContentSigner signer2 = new JcaContentSignerBuilder("SHA256withECDSA").setProvider("BC").build(kp2.getPrivate());
        System.out.println("POP " + subject(service(server, tms, kmf, popLabel, "TLSv1.2").simpleEnrollPoP(false, pb, signer2, null)));

        KeyPair kp3 = kpg.generateKeyPair();
        PKCS10CertificationRequest csr3 = new JcaPKCS10CertificationRequestBuilder(new X500Name("CN=bc-skg"), kp3.getPublic())
            .build(new JcaContentSignerBuilder("SHA256withECDSA").setProvider("BC").build(kp3.getPrivate()));
        EnrollmentResponse skg = est.simpleEnrollWithServersideCreation(csr3, null);
        if (skg.getPrivateKeyInfo() == null) {
            throw new IllegalStateException("serverkeygen returned no private key");
        }
        System.out.println("SERVERKEYGEN " + subject(skg) + " " + skg.getPrivateKeyInfo().getPrivateKeyAlgorithm().getAlgorithm());
    }
}
