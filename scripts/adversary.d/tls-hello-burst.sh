# Issue 18, part 2: rounds of 1,000 connections at once, each replaying a
# TLS ClientHello, so the daemon signs 1,000 handshakes at a time. Before
# handshakes were budgeted one iteration took 637-706 ms with RSA-2048.
# KEY=rsa (default: RSA-2048) or KEY=p256 picks the certificate, made with
# openssl in $OUT_DIR. MODE=rate keeps 64 handshakes in flight instead of
# bursts: the rate the loop carries, and the bystander's round trip at it.
command -v openssl >/dev/null || { echo "tls-hello-burst: needs openssl (Debian package: openssl)" >&2; exit 1; }
case "${KEY:-rsa}" in
  rsa) key=(-newkey rsa:2048) ;;
  p256) key=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
  *) echo "tls-hello-burst: KEY is rsa or p256" >&2; exit 2 ;;
esac
openssl req -x509 -nodes -days 1 -subj /CN=localhost "${key[@]}" \
  -keyout "$OUT_DIR/hello-key.pem" -out "$OUT_DIR/hello-cert.pem" 2>/dev/null
# Loopback is exempt from --tls-handshakes-per-ip: this measures the
# per-iteration budget.
daemon_args=(--tls-cert "$OUT_DIR/hello-cert.pem" --tls-key "$OUT_DIR/hello-key.pem")
attack() {
  python3 scripts/tls-hellos.py "$ADDR" "$SECS" "${MODE:-burst}" | tee "$OUT_DIR/tls-hello-burst.load" >&2
}
