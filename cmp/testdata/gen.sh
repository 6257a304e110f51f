#!/bin/sh
# Regenerates the OpenSSL 3.0 `openssl cmp` fixtures in testdata/openssl (offline, with the
# built-in mock server: -use_mock_srv). Run from cmp/testdata: sh gen.sh
# Files: <name>_req<N>.der are the requests the client built (-reqout), <name>_rsp<N>.der the
# mock server's answers (-rspout). PKI: ca (root), srv (CMP signer), cli/cli384/clied/clirsa
# (client protection keys), new (the key being certified; the mock returns new.pem).
set -e
cd "$(dirname "$0")/openssl"
rm -f ./*.der ./*.pem ./*.key ./*.csr ./*.srl ./*.log
o() { openssl "$@" 2>/dev/null; }
c() { openssl cmp -config "" "$@"; }
o ecparam -name prime256v1 -genkey -noout -out ca.key
o req -config /dev/null -new -x509 -key ca.key -subj "/CN=Test Root CA" -days 7300 -out ca.pem \
  -addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign,cRLSign \
  -addext subjectKeyIdentifier=hash
printf "keyUsage=critical,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n" > ext.cnf
mk() { # name keytype subject
  case $2 in
  ec) o ecparam -name prime256v1 -genkey -noout -out "$1.key" ;;
  p384) o ecparam -name secp384r1 -genkey -noout -out "$1.key" ;;
  ed) o genpkey -algorithm ed25519 -out "$1.key" ;;
  rsa) o genpkey -algorithm rsa -pkeyopt rsa_keygen_bits:2048 -out "$1.key" ;;
  esac
  o req -config /dev/null -new -key "$1.key" -subj "$3" -out "$1.csr"
  o x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 7300 -out "$1.pem" -extfile ext.cnf 2>/dev/null
}
mk srv ec "/CN=CMP Server"
mk cli ec "/CN=Device 1"
mk new ec "/CN=Device 1"
mk cli384 p384 "/CN=Device 384"
mk clied ed "/CN=Device Ed"
mk clirsa rsa "/CN=Device RSA"
mk newed ed "/CN=Device Ed"
rm -f ext.cnf ./*.srl

PBM="-ref 1234 -secret pass:s3cret -srv_ref srv -srv_secret pass:s3cret"
SIGSRV="-srv_cert srv.pem -srv_key srv.key -srv_trusted ca.pem -trusted ca.pem"
run() { # name args... ; keeps going when the client rejects (the requests are what matter)
  n=$1; shift
  c -use_mock_srv -reqout "$n"_req1.der,"$n"_req2.der,"$n"_req3.der,"$n"_req4.der \
    -rspout "$n"_rsp1.der,"$n"_rsp2.der,"$n"_rsp3.der,"$n"_rsp4.der "$@" > "$n.log" 2>&1 || echo "$n: client exit $?" >> "$n.log"
}
run ir_pbm -cmd ir $PBM -recipient "/CN=Test Root CA" -newkey new.key -subject "/CN=Device 1" -rsp_cert new.pem -certout out.pem
run ir_pbm256 -cmd ir $PBM -mac hmacWithSHA256 -recipient "/CN=Test Root CA" -newkey new.key -subject "/CN=Device 1" -rsp_cert new.pem -certout out.pem
run ir_sig -cmd ir -cert cli.pem -key cli.key $SIGSRV -newkey new.key -subject "/CN=Device 1" -rsp_cert new.pem -rsp_capubs ca.pem -certout out.pem
run ir_sig384 -cmd ir -cert cli384.pem -key cli384.key -digest sha384 $SIGSRV -newkey new.key -subject "/CN=Device 1" -rsp_cert new.pem -certout out.pem
run ir_sigrsa -cmd ir -cert clirsa.pem -key clirsa.key $SIGSRV -newkey new.key -subject "/CN=Device 1" -rsp_cert new.pem -certout out.pem
# OpenSSL 3.0 cmp cannot protect with Ed25519 ("unsupported key type"); Ed25519 only as the new key.
run ir_edpop -cmd ir -cert cli.pem -key cli.key $SIGSRV -newkey newed.key -subject "/CN=Device Ed" -rsp_cert newed.pem -certout out.pem
run ir_implicit -cmd ir $PBM -implicit_confirm -grant_implicitconf -recipient "/CN=Test Root CA" -newkey new.key -subject "/CN=Device 1" -rsp_cert new.pem -certout out.pem
run ir_poll -cmd ir $PBM -poll_count 2 -check_after 0 -recipient "/CN=Test Root CA" -newkey new.key -subject "/CN=Device 1" -rsp_cert new.pem -certout out.pem
run ir_reject -cmd ir $PBM -pkistatus 2 -failure 9 -statusstring "bad POP" -recipient "/CN=Test Root CA" -newkey new.key -subject "/CN=Device 1" -rsp_cert new.pem -certout out.pem
run ir_error -cmd ir $PBM -send_error -recipient "/CN=Test Root CA" -newkey new.key -subject "/CN=Device 1" -rsp_cert new.pem -certout out.pem
run cr -cmd cr -cert cli.pem -key cli.key $SIGSRV -newkey new.key -subject "/CN=Device 1" -rsp_cert new.pem -certout out.pem
run p10cr -cmd p10cr -cert cli.pem -key cli.key $SIGSRV -csr new.csr -rsp_cert new.pem -certout out.pem
# the mock checks that oldCertID names -rsp_cert
run kur -cmd kur -cert cli.pem -key cli.key $SIGSRV -oldcert new.pem -newkey new.key -rsp_cert new.pem -certout out.pem
run rr -cmd rr -cert cli.pem -key cli.key $SIGSRV -oldcert new.pem -revreason 1 -rsp_cert new.pem
run genm -cmd genm -cert cli.pem -key cli.key $SIGSRV -infotype signKeyPairTypes
rm -f out.pem ./*.log
for f in ./*.der; do [ -s "$f" ] || rm -f "$f"; done
ls -l ./*.der
