#!/bin/sh
# Writes a test CA and one PEM keystore (key + certificate chain) per broker into
# ./certs, for the SSL and SASL_SSL listeners. Certificates name localhost and the
# broker's container name. Run once before `docker compose up`.
set -eu
cd "$(dirname "$0")"
mkdir -p certs
cd certs
openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=klife compose CA" \
  -keyout ca.key -out ca.pem
for n in 1 2 3; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kafka-$n" -keyout kafka-$n.key -out kafka-$n.csr
  printf "subjectAltName=DNS:localhost,DNS:kafka-%s,IP:127.0.0.1\n" "$n" > kafka-$n.ext
  openssl x509 -req -in kafka-$n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
    -extfile kafka-$n.ext -out kafka-$n.crt
  # Kafka's PEM keystore: the private key (PKCS#8) followed by the certificate chain.
  openssl pkcs8 -topk8 -nocrypt -in kafka-$n.key > kafka-$n.pem
  cat kafka-$n.crt ca.pem >> kafka-$n.pem
  rm kafka-$n.csr kafka-$n.ext
done
chmod 644 ./*.pem
echo "certs written to $(pwd); clients trust ca.pem"
